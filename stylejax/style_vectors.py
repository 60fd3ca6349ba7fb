"""Instant custom styles: the any-style model (stylejax.anystyle) serving a user's style picture.

    any_style = AnyStyle()                    # the model from $STYLEJAX_ANYSTYLE_MODEL or bundled
    if any_style.available():
        image = any_style.stylize(request, photo_rgb, style_rgb)   # well under a second, warm

A style picture is encoded once into its style vector z and kept by the sha256 of its pixels:
in memory (an LRU) and on disk (`.npy` files under $STYLEJAX_CACHE_DIR or
~/.cache/stylejax/style_vectors, one folder per model, so a retrained model never reads the
vectors of another). Every later run (another photo, another strength or stroke size) costs
only the generator, which runs as a plain pack generator fed `style_row(z · strength)`
(`anystyle.as_generator`) through the same `Engine` as the packs: tiling, shape buckets and
the ONNX backend included. Strength is applied in z (the zero vector is trained to be the
photo); keep-colours and a mask are applied on the result, as for packs.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .anystyle import (
    ENCODER_SIDE,
    MODEL_JSON,
    MODEL_WEIGHTS,
    AnyStyleModel,
    as_generator,
    load_model,
    model_palette,
    model_work_side,
    style_row,
    style_statistics,
)
from .colour import ColourStats, colour_stats, match_colours
from .engine import Engine, Request
from .features import EfficientNetLite, load_feature_net
from .generator import apply_controls
from .imageio import resize_long_side, resize_to, to_float, to_uint8
from .request import StyleRequest
from .stroke import work_side

log = logging.getLogger(__name__)

MODEL_ENV = "STYLEJAX_ANYSTYLE_MODEL"
CACHE_ENV = "STYLEJAX_CACHE_DIR"
BUNDLED_MODEL = Path(__file__).parent / "assets" / "anystyle"
MEMORY_ENTRIES = 256

# (1, H, W, 3) float32 in [0, 1] → its style vector (1, style_dim) and statistics (1, stats_dim)
Encoder = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def model_dir(path: str | os.PathLike | None = None) -> Path:
    """Where the model is read from: `path`, else $STYLEJAX_ANYSTYLE_MODEL, else the bundled one."""
    return Path(path or os.environ.get(MODEL_ENV) or BUNDLED_MODEL)


def installed(path: str | os.PathLike | None = None) -> bool:
    """Whether an any-style model is there to load (a file check: nothing is read)."""
    return (model_dir(path) / MODEL_JSON).is_file()


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get(CACHE_ENV)
                or Path.home() / ".cache" / "stylejax" / "style_vectors")


def make_encoder(model: AnyStyleModel, feature_net: EfficientNetLite,
                 backend: str = "auto") -> Encoder:
    """The style encoder as one call: ONNX Runtime where the backend resolves to "onnx" (CPU
    hosts, as `engine.make_backend`) and its exporter is installed, jitted JAX otherwise."""
    if backend == "auto":
        backend = "onnx" if jax.default_backend() == "cpu" else "jax"
    if backend not in ("jax", "onnx"):
        raise ValueError(f"unknown backend {backend!r}; use auto, jax or onnx")
    if backend == "onnx":
        try:
            from .onnx_encoder import OnnxStyleEncoder
        except ImportError as err:
            log.info("ONNX style encoder unavailable (%s): using JAX", err)
        else:
            threads = os.environ.get("STYLEJAX_ORT_THREADS")
            return OnnxStyleEncoder(model, feature_net, threads=int(threads) if threads else None
                                    ).vector_and_statistics
    encoder_def, encoder_state = nnx.split(model)
    net_def, net_state = nnx.split(feature_net)

    @jax.jit
    def encode(encoder_state, net_state, x):
        encoder = nnx.merge(encoder_def, encoder_state)
        feats = nnx.merge(net_def, net_state).features(x, encoder.config.taps)
        stats = style_statistics(feats, encoder.config.taps)
        return encoder.vector(stats), stats

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z, stats = encode(encoder_state, net_state, jnp.asarray(x, jnp.float32))
        return np.asarray(z), np.asarray(stats)

    return run


# a photo-aware model's change of a style vector: style's and photo's stats (D,) → (style_dim,)
Correction = Callable[[np.ndarray, np.ndarray], np.ndarray]


def make_correction(model: AnyStyleModel) -> Correction:
    """The photo-aware model's correction (`anystyle.PhotoCorrection`) as one jitted call: a
    few hundred thousand multiply-adds, so XLA on any backend."""
    graph, state = nnx.split(model.photo)
    run = jax.jit(lambda state, s, p: nnx.merge(graph, state)(s, p))
    return lambda s, p: np.asarray(run(state, jnp.asarray(s[None]), jnp.asarray(p[None])))[0]


@dataclass(frozen=True)
class StyleEntry:
    """What a stylisation needs from a style picture, computed once per picture: its style
    vector, its palette's statistics (read from the picture, 1–2 ms a call otherwise) and,
    for a photo-aware model, the feature statistics its correction reads beside the photo's."""

    z: np.ndarray
    colours: ColourStats
    stats: np.ndarray | None = None


def picture_key(rgb: np.ndarray) -> str:
    """sha256 of a picture's shape and pixels: the style vector cache's key."""
    h = hashlib.sha256(repr(rgb.shape).encode())
    h.update(np.ascontiguousarray(rgb, np.uint8).tobytes())
    return h.hexdigest()


class AnyStyle:
    """The any-style serving path: style picture → cached vector → stylised photo."""

    def __init__(self, path: str | os.PathLike | None = None, *, backend: str = "auto",
                 tile: int = 1024, cache: str | os.PathLike | None = None,
                 memory_entries: int = MEMORY_ENTRIES, palette: float | None = None):
        self.path = model_dir(path)
        if palette is not None:  # overrides the model's own amount (the quality bench's sweep)
            self.palette = float(palette)
        self.backend, self.tile = backend, tile
        self._cache_root = cache
        self._memory: OrderedDict[str, StyleEntry] = OrderedDict()
        self._memory_entries = memory_entries
        self._lock = threading.RLock()

    def available(self) -> bool:
        """True when a model is there to load (one ships; without one custom styles are
        optimised, as before)."""
        return installed(self.path)

    # -- built once, on first use -----------------------------------------------------------------
    @functools.cached_property
    def model(self) -> AnyStyleModel:
        return load_model(self.path)

    @functools.cached_property
    def palette(self) -> float:
        """How far a full-strength result's colours move onto the style picture's."""
        return model_palette(self.path)

    @functools.cached_property
    def work_side(self) -> int:
        """The long side the generator paints medium strokes at (the model's own)."""
        return model_work_side(self.path)

    @functools.cached_property
    def model_id(self) -> str:
        """The weights' sha256 (16 hex): the disk cache's folder for this model."""
        h = hashlib.sha256()
        with open(self.path / MODEL_WEIGHTS, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()[:16]

    @functools.cached_property
    def encoder(self) -> Encoder:
        return make_encoder(self.model, load_feature_net(), self.backend)

    @functools.cached_property
    def engine(self) -> Engine:
        return Engine(as_generator(self.model), backend=self.backend, tile=self.tile)

    @property
    def cache_folder(self) -> Path:
        return cache_dir(self._cache_root) / self.model_id

    @functools.cached_property
    def _correction(self) -> Correction:
        return make_correction(self.model)

    def _cached_width(self) -> int:
        """A cache file's length: the vector, and for a photo-aware model its statistics."""
        model = self.model
        return model.config.style_dim + (model.stats_dim if model.photo_aware else 0)

    # -- style vectors ----------------------------------------------------------------------------
    def vector(self, style_rgb: np.ndarray) -> np.ndarray:
        """The style vector (style_dim,) of a style picture (H×W×3 uint8), encoded once."""
        return self.entry(style_rgb).z

    def entry(self, style_rgb: np.ndarray) -> StyleEntry:
        """The picture's `StyleEntry`: from memory, else its vector from disk, else encoded
        (and written to disk; the palette statistics are cheap enough to read again)."""
        style_rgb = np.asarray(style_rgb, np.uint8)
        key = picture_key(style_rgb)
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
            cached = self._read(key)
            if cached is None:
                z, stats = self._encode(style_rgb)
                cached = np.concatenate([z, stats]) if self.model.photo_aware else z
                self._write(key, cached)
            dim = self.model.config.style_dim
            stats = cached[dim:] if self.model.photo_aware else None
            entry = self._memory[key] = StyleEntry(cached[:dim], colour_stats(style_rgb), stats)
            if len(self._memory) > self._memory_entries:
                self._memory.popitem(last=False)
            return entry

    def _encode(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(style vector, feature statistics) of a picture, seen at the encoder's side."""
        small = to_float(resize_long_side(rgb, ENCODER_SIDE))
        z, stats = self.encoder(small[None])
        return (np.asarray(z, np.float32).reshape(-1),
                np.asarray(stats, np.float32).reshape(-1))

    def photo_vector(self, style: StyleEntry, photo_rgb: np.ndarray) -> np.ndarray:
        """The style vector for this photo: the cached one, corrected by the photo's own
        statistics when the model is photo-aware (one feature-net pass on the whole photo at
        the encoder's side; the style's part stays cached)."""
        if style.stats is None:
            return style.z
        _, photo_stats = self._encode(photo_rgb)
        return style.z + self._correction(style.stats, photo_stats)

    def _read(self, key: str) -> np.ndarray | None:
        """A cached vector from disk; None when absent or damaged (it is then rewritten)."""
        path = self.cache_folder / f"{key}.npy"
        if not path.is_file():
            return None
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            z = None
        if (z is None or z.shape != (self._cached_width(),)
                or not np.all(np.isfinite(z))):
            log.warning("style vector cache file %s is damaged: encoding again", path.name)
            return None
        return z.astype(np.float32)

    def _write(self, key: str, z: np.ndarray) -> None:
        """Written to a temporary file and renamed: a reader never sees half a file."""
        folder = self.cache_folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    np.save(f, z)
                os.replace(tmp, folder / f"{key}.npy")
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as err:  # a read-only or full disk costs only the next encoding
            log.warning("cannot write the style vector cache in %s: %s", folder, err)

    # -- stylising --------------------------------------------------------------------------------
    def stylize(self, request: StyleRequest, photo_rgb: np.ndarray, style_rgb: np.ndarray,
                mask: np.ndarray | None = None) -> np.ndarray:
        """The photo (H×W×3 uint8) in the style of the picture → H×W×3 uint8, photo size.

        As the pack path (`Stylizer.run_many`): the generator runs at the stroke's working
        side (relative to the model's own `work_side`) and the result is resized to the photo;
        strength is z's scale, keep-colours and the mask (H×W×1 in [0, 1] at the photo's size)
        are applied on the result. Unless the request keeps the photo's colours, the result
        takes the style picture's palette by the model's `palette` amount × strength
        (`stylejax.colour`).
        """
        style = self.entry(style_rgb)
        photo = to_float(photo_rgb)
        work = to_float(resize_long_side(photo_rgb, work_side(request.stroke, self.work_side)))
        z = self.photo_vector(style, photo_rgb)
        (y,) = self.engine.run([Request(work, style_row(z * request.strength)[0])])
        amount = self.palette * min(1.0, request.strength)
        if amount > 0 and not request.keep_colors:
            y = match_colours(np.asarray(y), style.colours, amount)
        if y.shape[:2] != photo.shape[:2]:
            y = to_float(resize_to(to_uint8(np.asarray(y)), photo.shape[:2]))
        return to_uint8(np.asarray(apply_controls(photo, y, 1.0, request.keep_colors, mask)))
