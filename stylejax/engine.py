"""Inference engine: runs a style pack's generator on photos of any size, fast and predictably.

- Shape buckets: each side is padded (by reflection) up to one of a few sizes and cropped back,
  so arbitrary photo sizes reuse a handful of compiled programs instead of compiling per photo.
  Very thin photos (a side of a few pixels) are padded up to `min_side` the same way: the
  network's reflection padding needs at least 2 pixels at its coarsest (1/4) resolution.
- Tiles: photos larger than `tile` are cut into overlapping tiles blended with feathered
  weights. Every tile is normalised with instance-norm statistics taken from the whole photo
  (a downscaled pass), so tiles agree in colour and contrast and no seams show.
- Batches: requests that share a bucket run together (batch sizes rounded up to 1, 2, 4, 8).
- Backends: JAX/XLA (GPU/TPU, and CPU) or ONNX Runtime on CPU from the same weights, where XLA's
  CPU backend trails it (docs/benchmarks.md). Compiled XLA programs persist on disk.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from .errors import InvalidRequestError, UnknownStyleError
from .generator import Generator

BUCKETS: tuple[int, ...] = (128, 192, 256, 384, 512, 768, 1024)
BATCH_BUCKETS: tuple[int, ...] = (1, 2, 4, 8)

Stats = list[tuple[np.ndarray, np.ndarray]]


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path:
    """Keep compiled XLA programs across processes: a worker restart then skips compiling."""
    cache = Path(path or os.environ.get("STYLEJAX_JAX_CACHE")
                 or Path.home() / ".cache" / "stylejax" / "jax")
    cache.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return cache


def bucket_size(n: int, buckets: Sequence[int] = BUCKETS, multiple: int = 4) -> int:
    """Smallest bucket ≥ n; beyond the largest, the next multiple of `multiple`."""
    for b in buckets:
        if n <= b:
            return b
    return math.ceil(n / multiple) * multiple


def pad_to(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Reflect-pad an (N,H,W,C) batch at the bottom/right to h×w (edge-pad if too small)."""
    ph, pw = h - x.shape[1], w - x.shape[2]
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < x.shape[1] and pw < x.shape[2] else "edge"
    return np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=mode)


class JaxBackend:
    """The generator as two jitted pure functions (own statistics / given statistics)."""

    name = "jax"

    def __init__(self, generator: Generator):
        graphdef, state = nnx.split(generator)
        self._state = state
        # jaxlib 0.10's default YNNPACK convolution fusions run this network 2-3x slower on
        # CPU than Eigen does (docs/benchmarks.md); the option is ignored elsewhere.
        options = ({"xla_cpu_experimental_ynn_fusion_type": ""}
                   if jax.default_backend() == "cpu" else None)

        @functools.partial(jax.jit, compiler_options=options)
        def run(state, x, w, valid):
            return nnx.merge(graphdef, state)(x, w, return_stats=True, valid=valid)

        @functools.partial(jax.jit, compiler_options=options)
        def run_with_stats(state, x, w, stats):
            return nnx.merge(graphdef, state)(x, w, stats=stats)

        self._run, self._run_with_stats = run, run_with_stats

    def __call__(self, x: np.ndarray, w: np.ndarray, stats: Stats | None = None,
                 return_stats: bool = False, valid: np.ndarray | None = None):
        if stats is None:
            if valid is None:
                valid = np.ones((*x.shape[:3], 1), np.float32)
            y, st = self._run(self._state, x, w, valid)
            y = np.asarray(y)
            return (y, [(np.asarray(m), np.asarray(v)) for m, v in st]) if return_stats else y
        y = np.asarray(self._run_with_stats(self._state, x, w, stats))
        return (y, stats) if return_stats else y


def make_backend(generator: Generator, backend: str = "auto"):
    """'jax', 'onnx', or 'auto' (ONNX Runtime on CPU-only hosts, JAX on accelerators)."""
    if backend == "auto":
        backend = "onnx" if jax.default_backend() == "cpu" else "jax"
    if backend == "onnx":
        from .onnx_export import OnnxGenerator

        # On a host shared with other work, fewer threads than cores is faster
        # (docs/benchmarks.md): operators can set STYLEJAX_ORT_THREADS.
        threads = os.environ.get("STYLEJAX_ORT_THREADS")
        return OnnxGenerator.from_generator(generator, threads=int(threads) if threads else None)
    if backend == "jax":
        return JaxBackend(generator)
    raise ValueError(f"unknown backend {backend!r}; use auto, jax or onnx")


@dataclass(frozen=True)
class Request:
    """One photo (H×W×3 float32 in [0,1]) and the style weights (S,) to apply to it."""

    photo: np.ndarray
    style_w: np.ndarray


def _valid_mask(photos: Sequence[np.ndarray], nb: int, hb: int, wb: int) -> np.ndarray:
    """1 over each photo inside its padded bucket, 0 over the padding (batch filler: all 1)."""
    valid = np.ones((nb, hb, wb, 1), np.float32)
    for i, p in enumerate(photos):
        valid[i] = 0.0
        valid[i, : p.shape[0], : p.shape[1]] = 1.0
    return valid


def _feather(n: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    """1-D blend weights of a tile: linear ramps over the overlap, except at picture borders."""
    w = np.ones(n, np.float32)
    ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    if not first:
        w[:overlap] = ramp
    if not last:
        w[-overlap:] = ramp[::-1]
    return w


def _tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    if n <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, n - tile, step)) + [n - tile]
    return sorted(set(starts))


class Engine:
    """Stylise photos with one generator; see the module docstring for what it does for speed."""

    def __init__(self, generator: Generator, *, backend: str = "auto", tile: int = 1024,
                 overlap: int = 128, buckets: Sequence[int] = BUCKETS,
                 compilation_cache: bool = True):
        if compilation_cache:
            enable_compilation_cache()
        self.num_styles = generator.config.num_styles
        self.multiple = generator.config.multiple
        # the smallest side the network runs on: 2 pixels at its coarsest resolution
        self.min_side = 2 * self.multiple
        self.backend = make_backend(generator, backend)
        self.tile, self.overlap = tile, overlap
        # ONNX Runtime takes any shape without compiling: pad only to the network's multiple of
        # 4. XLA compiles per shape: pad up to a few buckets and mask the padding out of the
        # instance-norm statistics.
        self.masked = isinstance(self.backend, JaxBackend)
        self.buckets = tuple(buckets) if self.masked else ()
        self.shapes_seen: set[tuple[int, int, int]] = set()

    # -- batches of same-bucket photos ---------------------------------------------------------
    def _bucket(self, n: int) -> int:
        """The padded length of a side of n pixels (at least `min_side`)."""
        return max(self.min_side, bucket_size(n, self.buckets, self.multiple))

    def _run_bucketed(self, photos: list[np.ndarray], ws: np.ndarray,
                      stats: Stats | None = None) -> list[np.ndarray]:
        hb = max(self._bucket(p.shape[0]) for p in photos)
        wb = max(self._bucket(p.shape[1]) for p in photos)
        nb = bucket_size(len(photos), BATCH_BUCKETS, 1)
        batch = np.zeros((nb, hb, wb, 3), np.float32)
        for i, p in enumerate(photos):
            batch[i] = pad_to(p[None], hb, wb)[0]
        wpad = np.zeros((nb, self.num_styles), np.float32)
        wpad[: len(photos)] = ws
        wpad[len(photos):] = ws[0]
        if stats is not None and nb > 1:
            raise ValueError("shared statistics are for one photo's tiles at a time")
        self.shapes_seen.add((nb, hb, wb))
        if self.masked and stats is None:
            y = self.backend(batch, wpad, valid=_valid_mask(photos, nb, hb, wb))
        else:
            y = self.backend(batch, wpad, stats=stats)
        return [y[i, : p.shape[0], : p.shape[1]] for i, p in enumerate(photos)]

    def whole_photo_stats(self, photo: np.ndarray, w: np.ndarray) -> Stats:
        """Instance-norm statistics of the photo seen whole, at most `tile` pixels on a side."""
        h, wd = photo.shape[:2]
        scale = min(1.0, self.tile / max(h, wd))
        small = np.asarray(jax.image.resize(
            photo, (max(self.multiple, round(h * scale)), max(self.multiple, round(wd * scale)), 3),
            "linear", antialias=True))
        hb, wb = self._bucket(small.shape[0]), self._bucket(small.shape[1])
        kwargs = {"valid": _valid_mask([small], 1, hb, wb)} if self.masked else {}
        _, stats = self.backend(pad_to(small[None], hb, wb), w[None], return_stats=True,
                                **kwargs)
        return stats

    def _run_tiled(self, photo: np.ndarray, w: np.ndarray,
                   progress: Callable[[float], None] | None = None) -> np.ndarray:
        h, wd = photo.shape[:2]
        stats = self.whole_photo_stats(photo, w)
        out = np.zeros((h, wd, 3), np.float32)
        weight = np.zeros((h, wd, 1), np.float32)
        ys, xs = _tile_starts(h, self.tile, self.overlap), _tile_starts(wd, self.tile, self.overlap)
        total, done = len(ys) * len(xs), 0
        for y0 in ys:
            for x0 in xs:
                crop = photo[y0 : y0 + self.tile, x0 : x0 + self.tile]
                (res,) = self._run_bucketed([crop], w[None], stats)
                fy = _feather(crop.shape[0], self.overlap, y0 == 0, y0 + crop.shape[0] >= h)
                fx = _feather(crop.shape[1], self.overlap, x0 == 0, x0 + crop.shape[1] >= wd)
                f = (fy[:, None] * fx[None, :])[..., None]
                out[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] += res * f
                weight[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] += f
                done += 1
                if progress is not None:
                    progress(done / total)
        return out / np.maximum(weight, 1e-8)

    # -- public ---------------------------------------------------------------------------------
    def run(self, requests: Sequence[Request],
            progress: Callable[[float], None] | None = None) -> list[np.ndarray]:
        """Raw generator outputs (H×W×3 float32) for each request, in order."""
        results: list[np.ndarray | None] = [None] * len(requests)
        small: dict[tuple[int, int], list[int]] = {}
        for i, r in enumerate(requests):
            if max(r.photo.shape[:2]) > self.tile:
                results[i] = self._run_tiled(r.photo, r.style_w, progress)
            else:
                key = (self._bucket(r.photo.shape[0]), self._bucket(r.photo.shape[1]))
                small.setdefault(key, []).append(i)
        for idx in small.values():
            for k in range(0, len(idx), BATCH_BUCKETS[-1]):
                chunk = idx[k : k + BATCH_BUCKETS[-1]]
                outs = self._run_bucketed([requests[i].photo for i in chunk],
                                          np.stack([requests[i].style_w for i in chunk]))
                for i, o in zip(chunk, outs):
                    results[i] = o
        return [r for r in results if r is not None]

    def style_weights(self, style: int | Sequence[float]) -> np.ndarray:
        """Style index or blend weights → normalised (S,) float32 weights."""
        if isinstance(style, (int, np.integer)):
            if not 0 <= int(style) < self.num_styles:
                raise UnknownStyleError(f"Style number {int(style)} does not exist; the pack "
                                        f"has {self.num_styles} styles.")
            w = np.zeros(self.num_styles, np.float32)
            w[int(style)] = 1.0
            return w
        w = np.asarray(style, np.float32)
        if (w.shape != (self.num_styles,) or not np.all(np.isfinite(w)) or np.any(w < 0)
                or w.sum() <= 0):
            raise InvalidRequestError("Blend weights must be non-negative numbers with a positive "
                                "sum, one per style.")
        return w / w.sum()

