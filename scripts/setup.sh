#!/usr/bin/env bash
# Create .venv and install StyleJAX with the extras given as arguments (e.g. "test").
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip wheel setuptools
fi
spec="."
if [ -n "$extras" ]; then spec=".[${extras}]"; fi
.venv/bin/pip install -q -e "$spec"
