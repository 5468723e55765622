#!/usr/bin/env bash
# Idempotent setup for a fresh machine: Debian packages, a virtual environment with livewidget
# installed in editable mode plus its test tools, and the Node packages under js/.
# Re-running is cheap: each step is skipped when its inputs have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
stamp_dir="$root/.venv/.stamps"

need_apt=()
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
# Browser tests (JupyterLab in headless Chromium) and the Redis scale-out tests need these.
[ -x /usr/bin/chromium ] || need_apt+=(chromium fonts-liberation)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "setup: installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$py" -m venv .venv
fi
mkdir -p "$stamp_dir"
pyhash=$(cat pyproject.toml | sha1sum | cut -c1-16)
if [ ! -f "$stamp_dir/pip-$pyhash" ]; then
  echo "setup: pip install -e .[test,fast]"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[test,fast]"
  rm -f "$stamp_dir"/pip-*; touch "$stamp_dir/pip-$pyhash"
fi

if [ -f js/package.json ]; then
  jshash=$(cat js/package.json js/package-lock.json 2>/dev/null | sha1sum | cut -c1-16)
  if [ ! -f "$stamp_dir/npm-$jshash" ] || [ ! -d js/node_modules ]; then
    echo "setup: npm install in js/"
    (cd js && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi) >/dev/null
    rm -f "$stamp_dir"/npm-*; touch "$stamp_dir/npm-$jshash"
  fi
fi
