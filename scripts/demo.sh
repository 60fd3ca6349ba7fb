#!/usr/bin/env bash
# The main job on its embedded defaults (no tokens, nothing to start by hand):
#   1. stylise the bundled sample photo with each bundled style picture and with a pack style,
#      writing out/demo_*.png;
#   2. serve the web page and HTTP API on http://127.0.0.1:8000/ with one worker, data under
#      ./stylejax-data, until Ctrl-C (skip with DEMO_SERVE=0).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh bots
mkdir -p out
assets=stylejax/assets
for style in "$assets"/styles/*.jpg; do
  name=$(basename "$style" .jpg)
  .venv/bin/stylize "$assets/sample.jpg" --style-image "$style" -o "out/demo_${name}.png"
done
first=$(.venv/bin/stylize --list-styles | head -n1)
.venv/bin/stylize "$assets/sample.jpg" --style "$first" -o "out/demo_pack_${first}.png"
ls -l out/demo_*.png
if [ "${DEMO_SERVE:-1}" != "0" ]; then
  echo "Open http://127.0.0.1:8000/ in a browser (Ctrl-C stops the service)."
  exec .venv/bin/stylejax serve
fi
