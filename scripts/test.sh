#!/usr/bin/env bash
# Set up (venv + test extras) and run the whole suite, slow tests included. Exit code 5
# ("no tests collected") counts as a failure here: a suite that runs nothing proves nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# The Redis queue tests start a real redis-server (Debian package); they fail under CI without it.
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
