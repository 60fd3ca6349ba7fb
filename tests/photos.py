"""Synthetic test photos (smooth gradients + noise): deterministic, license-free, any size."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photo_png(h: int = 96, w: int = 128, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 2 % 256, yy * 2 % 256, (xx + yy) % 256], -1).astype(np.float32)
    img += rng.normal(0, 8, img.shape)
    buf = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()
