#!/usr/bin/env bash
# One command: install everything, then run the service with the demo experiment on the
# embedded SQLite database (./data/bandit-platform.db). Extra arguments go to `demo`,
# e.g. `bash scripts/demo.sh --port 9000`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/bandit-platform demo "$@"
