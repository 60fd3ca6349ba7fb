"""Custom-style (optimisation) results on real photos: pictures for docs/ plus losses and time.

    python bench/custom_style_report.py --out docs/images --size 512

For each (photo, style) pair it writes `custom_<photo>_<style>.png` (photo | style | result) and
prints a markdown table of style/content losses before and after, steps and seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from stylejax.custom_style import CustomStyleConfig, measure_losses, stylize_with_image
from stylejax.imageio import decode_image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PAIRS = [
    ("chelsea", "S01_vangogh_starry_night.jpg"),
    ("astronaut", "S02_hokusai_great_wave.png"),
    ("coffee", "S04_kandinsky_composition_viii.png"),
    ("content/building_gc_explore_monuments_eiffelTower.jpg", "S06_vangogh_night_cafe.webp"),
]


def load_photo(name: str) -> np.ndarray:
    if "/" in name:
        return decode_image(SHARED / name).rgb
    import skimage.data

    return getattr(skimage.data, name)()


def panel(photo: np.ndarray, style: np.ndarray, result: np.ndarray) -> np.ndarray:
    h = result.shape[0]

    def fit(a):
        return np.asarray(Image.fromarray(a).resize((round(a.shape[1] * h / a.shape[0]), h),
                                                     Image.LANCZOS))

    gap = np.full((h, 6, 3), 255, np.uint8)
    return np.concatenate([fit(photo), gap, fit(style), gap, result], axis=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/images")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = CustomStyleConfig(size=args.size)
    rows = []
    for photo_name, style_file in PAIRS:
        photo = load_photo(photo_name)
        style = decode_image(SHARED / "style" / style_file).rgb
        res = stylize_with_image(photo, style, cfg)
        before = measure_losses(photo, style, np.asarray(
            Image.fromarray(photo).resize(res.image.shape[1::-1], Image.LANCZOS)), cfg)
        after = measure_losses(photo, style, res.image, cfg)
        tag = f"custom_{Path(photo_name).stem}_{Path(style_file).stem.split('_', 1)[1]}"
        Image.fromarray(panel(photo, style, res.image)).save(out / f"{tag}.png")
        rows.append({"photo": Path(photo_name).stem, "style": style_file, "steps": res.steps,
                     "seconds": round(res.seconds, 1), "style_before": before["style"],
                     "style_after": after["style"], "content_after": after["content"],
                     "image": f"{tag}.png"})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| photo | style | steps | seconds | style loss photo → result | content loss |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['photo']} | {r['style']} | {r['steps']} | {r['seconds']} | "
              f"{r['style_before']:.3f} → {r['style_after']:.3f} | {r['content_after']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
