#!/usr/bin/env bash
# Run the main job on a fresh machine. Does its own setup first; arguments go to `livewidget serve`.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/livewidget serve "$@"
