#!/usr/bin/env bash
# Set up (venv + test extras) and run the whole suite, slow tests included. Exit code 5
# ("no tests collected") counts as a failure here: a suite that runs nothing proves nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# Real parts the tests start (Debian packages): redis-server for the Redis queue tests, chromium
# for the web page tests (Playwright drives it; it cannot download a browser here).
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi
.venv/bin/ruff check .
# Two processes (pytest-xdist), each taking whole files, so a file's fixtures and servers stay
# in one process: 16 min instead of 28 on the 2-core CI machine. PYTEST_WORKERS=0 runs serially.
.venv/bin/python -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
