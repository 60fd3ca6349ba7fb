"""One photo at the three stroke sizes, pack style and custom style: docs/images/stroke_sizes.png.

    python bench/stroke_figure.py --out docs/images/stroke_sizes.png

Rows: a pack style (the generator at its stroke's working size), then a custom style picture
(the optimiser viewing the style at stroke × the result's size). Columns: small, medium, large.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stylejax import Stylizer
from stylejax.imageio import decode_image
from stylejax.stroke import STROKES

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/images/stroke_sizes.png")
    ap.add_argument("--photo", default=str(ROOT / "stylejax/assets/sample.jpg"))
    ap.add_argument("--pack-style", default="starry-night")
    ap.add_argument("--style-image", default=str(ROOT / "stylejax/assets/styles/great_wave.jpg"))
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    stylizer = Stylizer()
    photo = decode_image(args.photo).rgb
    style = decode_image(args.style_image).rgb
    rows = []
    for label, run in [
        (f"pack: {args.pack_style}",
         lambda s: stylizer.stylize(photo, args.pack_style, stroke=s, max_size=args.size)),
        (f"custom: {Path(args.style_image).stem}",
         lambda s: stylizer.stylize_with_image(photo, style, stroke=s,
                                               max_size=args.size).image),
    ]:
        rows.append((label, [(name, run(name)) for name in STROKES]))
        print(label, "done", flush=True)
    h = rows[0][1][0][1].shape[0]
    w = rows[0][1][0][1].shape[1]
    sheet = Image.new("RGB", (3 * (w + 6), len(rows) * (h + 22)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, images) in enumerate(rows):
        for c, (name, img) in enumerate(images):
            x, y = c * (w + 6), r * (h + 22)
            sheet.paste(Image.fromarray(np.asarray(img)).resize((w, h)), (x, y + 20))
            draw.text((x + 4, y + 4), f"{label} · stroke {name}", fill="black")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
