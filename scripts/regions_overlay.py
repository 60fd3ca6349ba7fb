"""Overlay the automatic region masks (stylejax/regions.py) on photos, one row per photo.

    python scripts/regions_overlay.py OUT.png PHOTO [PHOTO ...] [--side 512]

Columns: the photo; person (red tint, refined edge); face (yellow), skin (orange) and clothing
(blue); sky (cyan) and the face boxes. Prints the time per photo.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image, ImageDraw

from stylejax import regions


def tint(img: np.ndarray, mask: np.ndarray, colour) -> np.ndarray:
    c = np.array(colour, np.float32) / 255.0
    m = mask[..., None] * 0.6
    return img * (1 - m) + c * m


def row(path: str, side: int) -> tuple[np.ndarray, dict]:
    im = Image.open(path).convert("RGB")
    im.thumbnail((side, side), Image.LANCZOS)
    img = np.asarray(im, np.float32) / 255.0
    t0 = time.perf_counter()
    boxes = regions.face_boxes(img)
    m = regions.region_masks(img)
    dt = time.perf_counter() - t0
    a = tint(img, m["person"], (255, 40, 40))
    b = tint(tint(tint(img, m["clothing"], (40, 90, 255)), m["skin"], (255, 140, 0)),
             m["face"], (255, 255, 0))
    c = tint(img, m["sky"], (0, 255, 255))
    cells = [Image.fromarray((np.clip(x, 0, 1) * 255).astype(np.uint8)) for x in (img, a, b, c)]
    d = ImageDraw.Draw(cells[3])
    for f in boxes:
        d.rectangle([f.x0, f.y0, f.x1, f.y1], outline=(255, 0, 255), width=2)
    return np.concatenate([np.asarray(x) for x in cells], 1), {"s": dt, "faces": len(boxes)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("photos", nargs="+")
    ap.add_argument("--side", type=int, default=512)
    args = ap.parse_args()
    rows = []
    for p in args.photos:
        r, info = row(p, args.side)
        print(f"{p}: {r.shape[1] // 4}x{r.shape[0]}  {info['s']:.2f} s  faces={info['faces']}")
        rows.append(r)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    Image.fromarray(np.concatenate(rows, 0)).save(args.out)


if __name__ == "__main__":
    main()
