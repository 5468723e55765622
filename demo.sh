#!/usr/bin/env bash
# Run the demo on a fresh machine: the embedded server, live demo traffic and JupyterLab on the example
# notebooks (`livewidget demo`). Does its own setup first; arguments go to `livewidget demo`
# (--no-browser, --port N for the embedded server, --lab-port N). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/livewidget demo "$@"
