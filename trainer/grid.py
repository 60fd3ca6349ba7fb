"""Sample grids: photos down the side, styles across — how a run is judged by eye."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def make_grid(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str] | None = None,
              pad: int = 4, label_height: int = 18) -> np.ndarray:
    """rows[r][c] are equally sized uint8 H×W×3 tiles; optional column labels on top."""
    h, w = rows[0][0].shape[:2]
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    top = label_height if labels else 0
    canvas = Image.new("RGB", (n_cols * (w + pad) + pad, top + n_rows * (h + pad) + pad),
                       (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, text in enumerate(labels or []):
        draw.text((pad + c * (w + pad) + 2, 3), text[: max(4, w // 7)], fill=(0, 0, 0))
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile), (pad + c * (w + pad), top + pad + r * (h + pad)))
    return np.asarray(canvas)


def save_grid(path: str | Path, rows, labels=None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_grid(rows, labels)).save(path)
    return path


def center_square(rgb: np.ndarray, side: int) -> np.ndarray:
    """Centre crop to a square and resize: equal tiles for grids and eval batches."""
    h, w = rgb.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return np.asarray(Image.fromarray(rgb[y : y + s, x : x + s]).resize((side, side),
                                                                         Image.LANCZOS))
