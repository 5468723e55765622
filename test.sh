#!/usr/bin/env bash
# Run every test: lint, types, the Python suite (unit, conformance with the official `pusher` SDK and the
# real pusher-js under Node, browser end-to-end). Does its own setup first. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
.venv/bin/ruff check livewidget tests bench docs
.venv/bin/ruff format --check livewidget tests bench docs
.venv/bin/mypy
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
# pytest exits 5 when it collected no test: that is a failure of the suite, say so plainly.
if [ $rc -eq 5 ]; then echo "test.sh: pytest collected no tests" >&2; exit 1; fi
exit $rc
