"""The style picture's palette, moved onto a result by one 3×3 colour map.

A feed-forward generator learns texture and palette with the same few norm parameters, and
on a small CPU-trained model the palette is what it gets least (the quality bench's colour
distance to the style: 0.69 where Magenta reaches 0.41). The palette needs no network: the
linear map that carries one Gaussian colour distribution onto another with the least change
(the Monge–Kantorovich map of Pitié and Kokaram, 2007) gives every result the style's mean
colour and colour covariance and keeps its own shading order. It is a global map computed
from statistics, so it costs a few milliseconds and works on tiled and resized results alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STATS_SIDE = 128      # colour statistics are read from a picture shrunk to this long side
EPS = 1e-5            # keeps the covariance of a flat picture invertible
FLOOR = 0.05          # of the largest eigenvalue: see transfer_map
# The amount the quality bench chose for both the any-style model and the trained pack
# (sweeps of 0.6 / 0.8 / 1 in docs/training.md and docs/quality.md): what exports write.
DEFAULT_PALETTE = 0.8


@dataclass(frozen=True)
class ColourStats:
    """Mean (3,) and covariance (3, 3) of a picture's RGB in [0, 1]."""

    mean: np.ndarray
    cov: np.ndarray


def _as_float(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8:
        return rgb.astype(np.float32) / 255.0
    return rgb.astype(np.float32, copy=False)


def colour_stats(rgb: np.ndarray) -> ColourStats:
    """Statistics of an H×W×3 picture (uint8, or float in [0, 1]), read on a shrunk copy: a
    strided subsample is exact enough for a mean and a 3×3 covariance."""
    rgb = np.asarray(rgb)
    step = max(1, max(rgb.shape[:2]) // STATS_SIDE)
    px = _as_float(rgb[::step, ::step]).reshape(-1, 3).astype(np.float64)  # subsample first
    mean, cov = pixel_stats(px, np)
    return ColourStats(mean, cov)


def pixel_stats(px, xp=np):
    """Mean (..., 3) and covariance (..., 3, 3) of pixels (..., N, 3); `xp` is numpy or
    jax.numpy, so the trainer's step and the serving path share one formula."""
    mean = xp.mean(px, axis=-2)
    centred = px - mean[..., None, :]
    n = max(1, px.shape[-2] - 1)
    # einsum, not `@`: numpy's matmul hands 2-D products to BLAS, whose worker threads then
    # spin and steal the cores from ONNX Runtime's (+40 ms a picture in bench_anystyle)
    return mean, xp.einsum("...ni,...nj->...ij", centred, centred) / n


def _sqrtm(c, xp=np):
    """Square root and inverse square root of symmetric positive semi-definite 3×3s (batched;
    the flooring is `_floored`'s, this only keeps rounding from going below zero)."""
    w, v = xp.linalg.eigh(c)
    w = xp.maximum(w, 1e-12)
    vt = xp.swapaxes(v, -1, -2)
    return (v * xp.sqrt(w)[..., None, :]) @ vt, (v / xp.sqrt(w)[..., None, :]) @ vt


def map_between(src_mean, src_cov, dst_mean, dst_cov, amount=1.0, xp=np):
    """(A, b) with x ↦ x·Aᵀ + b carrying the source colours onto the target's (batched);
    `amount` walks the straight line from the identity (0) to the full map (1).

    A nearly grey picture has almost no spread along some colour axis; stretching that axis
    to the style's spread would turn noise and JPEG blocks into loud colour. Both
    covariances are therefore floored at `FLOOR` of their largest eigenvalue (and at `EPS`):
    the gain along any axis is bounded, and a picture mapped onto its own statistics is
    still itself."""
    src_cov, dst_cov = _floored(src_cov, xp), _floored(dst_cov, xp)
    root, inv_root = _sqrtm(src_cov, xp)
    middle, _ = _sqrtm(root @ dst_cov @ root, xp)
    full = inv_root @ middle @ inv_root
    eye = xp.eye(3, dtype=full.dtype)
    amount = xp.asarray(amount, full.dtype)
    a = eye + amount[..., None, None] * (full - eye)
    b = amount[..., None] * (dst_mean - xp.einsum("...ij,...j->...i", full, src_mean))
    return a, b


def _floored(cov, xp):
    w, v = xp.linalg.eigh(cov)
    w = xp.maximum(w, xp.maximum(EPS, FLOOR * w[..., -1:]))
    return (v * w[..., None, :]) @ xp.swapaxes(v, -1, -2)


def transfer_map(source: ColourStats, target: ColourStats, amount: float = 1.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """`map_between` for one pair of pictures, as float32."""
    a, b = map_between(source.mean, source.cov, target.mean, target.cov, amount)
    return a.astype(np.float32), b.astype(np.float32)


def _apply(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """clip(x·Aᵀ + b) channel by channel, in place: 1 ms at 512×288, where numpy's matmul
    would call BLAS (see pixel_stats) and einsum takes 3 ms."""
    planes = [x[..., k] for k in range(3)]
    y = np.empty_like(x)
    for i in range(3):
        out = y[..., i]
        np.multiply(planes[0], a[i, 0], out=out)
        out += planes[1] * a[i, 1]
        out += planes[2] * a[i, 2]
        out += b[i]
    return np.clip(y, 0.0, 1.0, out=y)


def match_colours(rgb: np.ndarray, target: ColourStats, amount: float = 1.0) -> np.ndarray:
    """`rgb` (H×W×3, uint8 or float in [0, 1]) with `target`'s palette, in the input's dtype.

    `amount` = 0 returns the picture unchanged; values are clipped to the valid range."""
    if amount <= 0.0:
        return rgb
    x = _as_float(rgb)
    a, b = transfer_map(colour_stats(x), target, min(1.0, float(amount)))
    y = _apply(x, a, b)
    if np.asarray(rgb).dtype == np.uint8:
        return (y * 255.0 + 0.5).astype(np.uint8)
    return y.astype(np.asarray(rgb).dtype, copy=False)
