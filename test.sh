#!/usr/bin/env bash
# Run every test: lint, types, the Python suite (unit, conformance with the official `pusher` SDK and the
# real pusher-js under Node, browser end-to-end). Does its own setup first. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" # Node.js from the venv when setup had to install it there
# The tests must not change the checkout (their artifacts go to the ignored test-artifacts/; the README's
# screenshots are refreshed only by scripts/refresh-docs-images.sh): compare before and after.
tree_state() { git status --porcelain=v1 --untracked-files=all 2>/dev/null; git diff --binary 2>/dev/null | sha1sum; }
before=$(tree_state)
.venv/bin/ruff check livewidget tests bench docs
.venv/bin/ruff format --check livewidget tests bench docs
.venv/bin/mypy
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
after=$(tree_state)
if [ "$before" != "$after" ]; then
  echo "test.sh: the tests changed files in the checkout:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  [ $rc -ne 0 ] || rc=1
fi
# pytest exits 5 when it collected no test: that is a failure of the suite, say so plainly.
if [ $rc -eq 5 ]; then echo "test.sh: pytest collected no tests" >&2; exit 1; fi
exit $rc
