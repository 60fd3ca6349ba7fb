"""Figures of styles per region (stylejax/compose.py) for docs/regions.md.

    python scripts/regions_compose_figure.py GRID.png EDGES.png PHOTO [PHOTO ...]

GRID: one row per photo at 512 px: the photo; its masks (person red, clothing blue, face
yellow); background only (Starry Night); person only (Great Wave); clothing only
(Kandinsky); background Starry Night + person Great Wave with the faces kept. Saved as a
256-colour PNG to stay small.

EDGES: the first photo at (at most) 1024 px with background Starry Night + person Great Wave,
crops at 1:1 around the person's outline (the photo, the result, the person style's weight).
"""

from __future__ import annotations

import sys
import time

import numpy as np
from PIL import Image, ImageDraw

from stylejax import regions
from stylejax.request import StyleRequest
from stylejax.stylizer import Stylizer

CASES = [
    ("background: Starry Night", dict(style="starry", regions=["background"])),
    ("person: Great Wave", dict(style="wave", regions=["person"])),
    ("clothing: Kandinsky", dict(style="kandinsky", regions=["clothing"])),
    ("background Starry, person Wave, faces kept",
     dict(regions=[("background", "starry"), ("person", "wave")], keep="faces")),
]


def tint(img: np.ndarray, mask: np.ndarray, colour) -> np.ndarray:
    c = np.array(colour, np.float32) / 255.0
    m = mask[..., None] * 0.6
    return img * (1 - m) + c * m


def load(path: str, side: int) -> np.ndarray:
    im = Image.open(path).convert("RGB")
    im.thumbnail((side, side), Image.LANCZOS)
    return np.asarray(im)


def label(cell: Image.Image, text: str) -> Image.Image:
    d = ImageDraw.Draw(cell)
    d.rectangle([0, 0, cell.width, 13], fill=(0, 0, 0))
    d.text((3, 1), text, fill=(255, 255, 255))
    return cell


def grid(stylizer: Stylizer, paths: list[str], out: str, side: int = 512, cell: int = 300):
    rows = []
    for path in paths:
        rgb = load(path, side)
        img = rgb.astype(np.float32) / 255
        m = regions.region_masks(img, ("person", "clothing", "face"))
        masks = tint(tint(tint(img, m["person"], (255, 40, 40)), m["clothing"], (40, 90, 255)),
                     m["face"], (255, 255, 0))
        cells = [label(Image.fromarray(rgb), path.rsplit("/", 1)[-1][:40]),
                 label(Image.fromarray((np.clip(masks, 0, 1) * 255).astype(np.uint8)),
                       "person / clothing / face")]
        for name, kw in CASES:
            t0 = time.perf_counter()
            req = StyleRequest.create(**kw).resolved(stylizer.styles)
            res = stylizer.run(req, rgb)
            print(f"{path}: {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            cells.append(label(Image.fromarray(res), name))
        r = Image.new("RGB", (len(cells) * (cell + 4) - 4, cell), "white")
        for i, c in enumerate(cells):
            c = c.copy()
            c.thumbnail((cell, cell), Image.LANCZOS)
            r.paste(c, (i * (cell + 4) + (cell - c.width) // 2, (cell - c.height) // 2))
        rows.append(r)
    g = Image.new("RGB", (max(r.width for r in rows), sum(r.height + 4 for r in rows)), "white")
    y = 0
    for r in rows:
        g.paste(r, (0, y))
        y += r.height + 4
    g.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
        out, optimize=True)


def edges(stylizer: Stylizer, path: str, out: str, side: int = 1024, crop: int = 240,
          centres: list[tuple[float, float]] | None = None):
    from stylejax import compose

    rgb = load(path, side)
    img = rgb.astype(np.float32) / 255
    req = StyleRequest.create(regions=[("background", "starry"), ("person", "wave")])
    req = req.resolved(stylizer.styles)
    res = stylizer.run(req, rgb)
    ((_, w_bg), (_, w_p)) = compose.region_weights(req.regions, img)
    h, w = w_p.shape
    if centres is None:  # points on the outline: where the person weight crosses 0.5
        ys, xs = np.nonzero((w_p > 0.3) & (w_p < 0.7))
        pick = np.linspace(0, len(ys) - 1, 5).astype(int)[1:4]
        centres = [(xs[i] / w, ys[i] / h) for i in pick]
    crops = []
    for cx, cy in centres:
        x0 = int(np.clip(cx * w - crop / 2, 0, w - crop))
        y0 = int(np.clip(cy * h - crop / 2, 0, h - crop))
        sl = (slice(y0, y0 + crop), slice(x0, x0 + crop))
        wp = (np.clip(w_p[sl], 0, 1) * 255).astype(np.uint8)
        crops += [Image.fromarray(rgb[sl]), Image.fromarray(res[sl]),
                  Image.fromarray(np.dstack([wp, wp, wp]))]
    g = Image.new("RGB", (3 * crop + 8, len(centres) * (crop + 4)), "white")
    for i, c in enumerate(crops):
        g.paste(c, ((i % 3) * (crop + 4), (i // 3) * (crop + 4)))
    g.save(out, optimize=True)


if __name__ == "__main__":
    grid_out, edges_out, *photos = sys.argv[1:]
    s = Stylizer()
    grid(s, photos, grid_out)
    # the first photo's hair against the sand (left, right, top of the head) and the knee
    edges(s, photos[0], edges_out, centres=[(0.29, 0.36), (0.63, 0.30), (0.45, 0.15)])
