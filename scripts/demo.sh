#!/usr/bin/env bash
# The main job on its embedded defaults: stylise the bundled sample photo in the style of each
# bundled style picture (no tokens, no servers), writing out/demo_*.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
assets=stylejax/assets
for style in "$assets"/styles/*.jpg; do
  name=$(basename "$style" .jpg)
  .venv/bin/stylize "$assets/sample.jpg" --style-image "$style" -o "out/demo_${name}.png"
done
if .venv/bin/stylize --list-styles >/dev/null 2>&1; then
  first=$(.venv/bin/stylize --list-styles | head -n1)
  .venv/bin/stylize "$assets/sample.jpg" --style "$first" -o "out/demo_pack_${first}.png"
fi
ls -l out/demo_*.png
