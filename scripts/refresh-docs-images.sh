#!/usr/bin/env bash
# Refresh the README's screenshots in docs/images/ from the example notebooks (and the demo) running in
# JupyterLab in headless Chromium. ./test.sh never writes there: its screenshots go to test-artifacts/.
# Review the new pictures with `git diff --stat docs/images` and commit the ones you want.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest tests/e2e/test_notebooks_e2e.py --refresh-docs-images "$@"
