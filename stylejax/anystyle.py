"""The any-style model: any style picture becomes a style vector in one pass (Ghiasi et al. 2017).

A style picture goes through the frozen EfficientNet-Lite0 (the same taps the style loss
reads); the channel means and standard deviations of those taps, a summary of the picture's
colours and textures, go through a small MLP (`StyleEncoder`) into a `style_dim` vector. A
linear `StyleHead` turns the vector into the scale and shift of every conditional instance norm
of the existing `Generator`, added to its one-row tables, which are therefore the style of the
zero vector. Training teaches that zero vector to be the photo itself, so a style vector scaled
by s in [0, 1] is the style at strength s, and a weighted mean of vectors is a blend.

Why this split: the encoder is the only part that sees the style picture, so a user's style is
encoded once and cached (by the picture's hash); every later run (another photo, stronger,
weaker) costs only the generator. Pack styles are stored vectors.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from .errors import WeightsError
from .features import DEFAULT_STYLE_TAPS, EfficientNetLite
from .generator import Affine, Generator, GeneratorConfig
from .pack import load_module_arrays, module_arrays
from .stroke import PACK_WORK_SIDE

ENCODER_SIDE = 256  # the style picture's long side as the encoder sees it
# Long side at which a model of the CPU recipe (128-px crops) paints medium strokes: the judge
# scored it better than the pack's 640 (docs/training.md), and it is what bench_anystyle times.
ANYSTYLE_WORK_SIDE = 512
WORK_SIDES = (64, 4096)  # the working sides a model may ask for
STATS_EPS = 1e-5


@dataclass(frozen=True)
class AnyStyleConfig:
    """Shape of the whole model; stored beside its weights."""

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    style_dim: int = 100
    hidden: int = 512
    taps: tuple[str, ...] = DEFAULT_STYLE_TAPS
    # width of the photo-aware correction's hidden layer (`PhotoCorrection`); 0: the style
    # vector depends on the style picture alone
    photo_hidden: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["generator"] = self.generator.to_dict()
        d["taps"] = list(self.taps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AnyStyleConfig:
        return cls(generator=GeneratorConfig.from_dict(d["generator"]),
                   style_dim=int(d["style_dim"]), hidden=int(d["hidden"]),
                   taps=tuple(str(t) for t in d["taps"]),
                   photo_hidden=int(d.get("photo_hidden", 0)))


def style_statistics(feats: dict[str, jax.Array], taps: Sequence[str]) -> jax.Array:
    """(N, 2·ΣC): per tap, each channel's mean and standard deviation over the picture."""
    parts = []
    for t in taps:
        f = feats[t]
        mean = jnp.mean(f, axis=(1, 2))
        std = jnp.sqrt(jnp.var(f, axis=(1, 2)) + STATS_EPS)
        parts += [mean, std]
    return jnp.concatenate(parts, axis=-1)


def statistics_size(feature_net: EfficientNetLite, taps: Sequence[str]) -> int:
    feats = feature_net.features(jnp.zeros((1, 64, 64, 3)), taps)
    return 2 * sum(int(feats[t].shape[-1]) for t in taps)


class StyleEncoder(nnx.Module):
    """Feature statistics → style vector: a two-layer MLP, the statistics standardised first
    by a learned per-feature scale (their magnitudes differ by tap)."""

    def __init__(self, in_dim: int, hidden: int, style_dim: int, *, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(in_dim, rngs=rngs)
        self.fc1 = nnx.Linear(in_dim, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, style_dim, rngs=rngs)

    def __call__(self, stats: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.relu(self.fc1(self.norm(stats))))


class PhotoCorrection(nnx.Module):
    """(style statistics, photo statistics) → a change of the style vector for this photo.

    One vector per style picture leaves a gap that a vector fitted to one photo closes
    (docs/training.md, "The halo is an amortisation gap"): the best vector depends on the
    photo too. Each input is standardised on its own (their spreads differ), and the output
    layer starts at zero, so a model grown from a plain one starts as it."""

    def __init__(self, stats_dim: int, hidden: int, style_dim: int, *, rngs: nnx.Rngs):
        self.style_norm = nnx.LayerNorm(stats_dim, rngs=rngs)
        self.photo_norm = nnx.LayerNorm(stats_dim, rngs=rngs)
        self.fc1 = nnx.Linear(2 * stats_dim, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, style_dim, kernel_init=nnx.initializers.zeros,
                              rngs=rngs)

    def __call__(self, style_stats: jax.Array, photo_stats: jax.Array) -> jax.Array:
        x = jnp.concatenate([self.style_norm(style_stats), self.photo_norm(photo_stats)], -1)
        return self.fc2(jax.nn.relu(self.fc1(x)))


class StyleHead(nnx.Module):
    """Style vector → a change of every norm's (scale, shift); linear, no bias, so the zero
    vector leaves the generator's own tables (the identity style) untouched."""

    def __init__(self, style_dim: int, channels: Sequence[int], *, rngs: nnx.Rngs):
        self.channels = tuple(int(c) for c in channels)
        init = nnx.initializers.normal(0.01)
        self.proj = nnx.Linear(style_dim, 2 * sum(self.channels), use_bias=False,
                               kernel_init=init, rngs=rngs)

    def __call__(self, z: jax.Array) -> list[Affine]:
        flat = self.proj(z)
        out, at = [], 0
        for c in self.channels:
            out.append((flat[:, at:at + c], flat[:, at + c:at + 2 * c]))
            at += 2 * c
        return out


class AnyStyleModel(nnx.Module):
    """Encoder + head + generator. The frozen feature net stays outside (it is shared with the
    loss and never trained)."""

    def __init__(self, config: AnyStyleConfig, stats_dim: int, *, rngs: nnx.Rngs):
        if config.generator.num_styles != 1:
            raise ValueError("the any-style generator has one table row: the identity style")
        self.config = config
        self.stats_dim = stats_dim
        self.generator = Generator(config.generator, rngs=rngs)
        norms = self.generator.norm_layers()
        self.encoder = StyleEncoder(stats_dim, config.hidden, config.style_dim, rngs=rngs)
        self.photo = (PhotoCorrection(stats_dim, config.photo_hidden, config.style_dim,
                                      rngs=rngs) if config.photo_hidden else None)
        self.head = StyleHead(config.style_dim, [int(n.scale.shape[1]) for n in norms],
                              rngs=rngs)

    @property
    def photo_aware(self) -> bool:
        """Whether a style vector also depends on the photo (`PhotoCorrection`)."""
        return self.photo is not None

    def vector(self, style_stats: jax.Array, photo_stats: jax.Array | None = None
               ) -> jax.Array:
        """Style vectors (N, style_dim) from `style_statistics` of style pictures and, for a
        photo-aware model, of the photos they will paint (without them: the plain vector)."""
        z = self.encoder(style_stats)
        if self.photo is not None and photo_stats is not None:
            z = z + self.photo(style_stats, photo_stats)
        return z

    def encode_features(self, feats: dict[str, jax.Array],
                        photo_feats: dict[str, jax.Array] | None = None) -> jax.Array:
        """Style vectors (N, style_dim) from the feature net's activations on style pictures
        (and on the photos, as `vector`)."""
        taps = self.config.taps
        photo_stats = None if photo_feats is None else style_statistics(photo_feats, taps)
        return self.vector(style_statistics(feats, taps), photo_stats)

    def encode(self, feature_net: EfficientNetLite, style: jax.Array,
               photo: jax.Array | None = None) -> jax.Array:
        """Style vectors of style pictures (N, H, W, 3) in [0, 1] (for these photos)."""
        taps = self.config.taps
        photo_feats = None if photo is None else feature_net.features(photo, taps)
        return self.encode_features(feature_net.features(style, taps), photo_feats)

    def affines(self, z: jax.Array) -> list[Affine]:
        """Every norm's (scale, shift) for style vectors z (N, style_dim)."""
        deltas = self.head(z)
        n = z.shape[0]
        out = []
        for norm, (d_scale, d_shift) in zip(self.generator.norm_layers(), deltas, strict=True):
            scale = jnp.broadcast_to(norm.scale[0], (n, norm.scale.shape[1]))
            shift = jnp.broadcast_to(norm.shift[0], (n, norm.shift.shape[1]))
            out.append((scale + d_scale, shift + d_shift))
        return out

    def __call__(self, photo: jax.Array, z: jax.Array, **generator_kwargs) -> jax.Array:
        """Photo (N, H, W, 3) in [0, 1] in the styles z (N, style_dim)."""
        return self.generator(photo, None, affines=self.affines(z), **generator_kwargs)


def as_generator(model: AnyStyleModel) -> Generator:
    """The model's generator as a plain pack generator with 1 + style_dim table rows.

    Every norm's (scale, shift) is linear in the style vector, base + W·z, which is exactly
    what a pack generator computes from the weights [1, z₁ … z_D] over the rows [base, W₁ … W_D].
    So the whole serving stack of packs (the Engine's tiling and shape buckets, the ONNX
    export) runs the any-style model unchanged: feed it `style_row(z)`.
    """
    kernel = model.head.proj.kernel[...]  # (D, 2·ΣC)
    tables, at = [], 0
    for norm in model.generator.norm_layers():
        c = int(norm.scale.shape[1])
        tables.append((jnp.concatenate([norm.scale[...][:1], kernel[:, at:at + c]]),
                       jnp.concatenate([norm.shift[...][:1], kernel[:, at + c:at + 2 * c]])))
        at += 2 * c
    return _with_tables(model.generator, tables)


def _with_tables(source: Generator, tables: list[tuple[jax.Array, jax.Array]]) -> Generator:
    """A generator with `source`'s convolutions and new (scale, shift) tables, one per norm in
    `norm_layers()` order; the number of rows is the number of styles."""
    config = replace(source.config, num_styles=int(tables[0][0].shape[0]))
    # shapes only: every parameter is set below, so a random initialisation (seconds of
    # XLA compiles on a CPU) would be thrown away
    out = nnx.eval_shape(lambda: Generator(config, rngs=nnx.Rngs(0)))
    body = nnx.state(source, nnx.Param)  # convolutions: shared as they are
    nnx.update(out, nnx.filter_state(body, lambda path, _: path[-1] not in ("scale", "shift")))
    for norm, (scale, shift) in zip(out.norm_layers(), tables, strict=True):
        norm.scale.set_value(scale)
        norm.shift.set_value(shift)
    return out


def without_blocks(model: AnyStyleModel, drop: Sequence[int]) -> AnyStyleModel:
    """The model with the residual blocks at indices `drop` removed, with their norms' columns
    of the style head: a smaller generator (each block is a tenth of the multiply-adds) that
    a fine-tune starts from. A residual block adds a change to its input, so the rest still
    computes a picture."""
    cfg = model.config.generator
    drop = sorted({int(i) for i in drop})
    if not drop or drop[0] < 0 or drop[-1] >= cfg.res_blocks:
        raise ValueError(f"blocks to drop must be among 0..{cfg.res_blocks - 1}, not {drop}")
    keep = [i for i in range(cfg.res_blocks) if i not in drop]
    config = replace(model.config, generator=replace(cfg, res_blocks=len(keep)))
    out = nnx.eval_shape(lambda: AnyStyleModel(config, model.stats_dim, rngs=nnx.Rngs(0)))
    nnx.update(out.encoder, nnx.state(model.encoder, nnx.Param))
    if model.photo is not None:
        nnx.update(out.photo, nnx.state(model.photo, nnx.Param))
    src, dst = model.generator, out.generator
    nnx.update(dst, nnx.filter_state(nnx.state(src, nnx.Param), lambda path, _: path[0] != "res"))
    for j, i in enumerate(keep):
        nnx.update(dst.res[j], nnx.state(src.res[i], nnx.Param))
    # the head's columns: (scale, shift) per norm in `norm_layers()` order, blocks hold 2 each
    kept_norms = [0, 1] + [2 + 2 * i + k for i in keep for k in (0, 1)]
    kept_norms += [len(model.head.channels) - 2, len(model.head.channels) - 1]
    starts = np.cumsum([0] + [2 * c for c in model.head.channels])
    columns = np.concatenate([np.arange(starts[n], starts[n + 1]) for n in kept_norms])
    out.head.proj.kernel.set_value(model.head.proj.kernel[...][:, columns])
    return out


def style_row(z: jax.Array | np.ndarray) -> np.ndarray:
    """Style vectors (N, D) → the weights (N, 1 + D) that `as_generator`'s tables take."""
    z = np.asarray(z, np.float32).reshape(-1, np.shape(z)[-1])
    return np.concatenate([np.ones((z.shape[0], 1), np.float32), z], axis=1)


def blend_vectors(vectors: jax.Array, weights: Sequence[float], strength: float = 1.0
                  ) -> jax.Array:
    """One style vector (1, D) from several (K, D): their weighted mean, times `strength`
    (0 = the photo unchanged, as the model was trained)."""
    w = jnp.asarray(weights, jnp.float32)
    w = w / jnp.maximum(jnp.sum(w), 1e-8)
    return (strength * (w @ vectors))[None]


# -- the model on disk ---------------------------------------------------------------------------
MODEL_JSON = "anystyle.json"
MODEL_WEIGHTS = "anystyle.safetensors"
MODEL_FORMAT = 1


def save_model(folder: str | Path, model: AnyStyleModel, record: dict | None = None,
               palette: float = 0.0, work_side: int = ANYSTYLE_WORK_SIDE) -> Path:
    """`anystyle.json` (format, config, statistics size, serving palette amount and working
    side, training record) and the weights. `palette` is how far serving moves a result's
    colours onto the style picture's (`stylejax.colour`; 0: not at all), and `work_side` the
    long side the generator paints medium strokes at (`stylejax.stroke`): both are part of the
    model, because they depend on how it was trained."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    if not 0.0 <= palette <= 1.0:
        raise ValueError(f"palette must be in [0, 1], not {palette}")
    if not WORK_SIDES[0] <= work_side <= WORK_SIDES[1]:
        raise ValueError(f"work_side must be in [{WORK_SIDES[0]}, {WORK_SIDES[1]}], "
                         f"not {work_side}")
    meta = {"format": MODEL_FORMAT, "config": model.config.to_dict(),
            "stats_dim": model.stats_dim, "palette": float(palette),
            "work_side": int(work_side), "training": record or {}}
    save_file(module_arrays(model), str(root / MODEL_WEIGHTS))
    (root / MODEL_JSON).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return root


def _serving_value(folder: str | Path, key: str, default: float, low: float,
                   high: float) -> float:
    try:
        meta = json.loads((Path(folder) / MODEL_JSON).read_text(encoding="utf-8"))
        value = float(meta.get(key, default))
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise WeightsError(f"{MODEL_JSON} is damaged ({err.__class__.__name__}).") from None
    if not low <= value <= high:  # also refuses NaN
        raise WeightsError(f"{MODEL_JSON} has {key} {value}, outside [{low:g}, {high:g}].")
    return value


def model_palette(folder: str | Path) -> float:
    """The serving palette amount `save_model` wrote (0 for models saved before it existed)."""
    return _serving_value(folder, "palette", 0.0, 0.0, 1.0)


def model_work_side(folder: str | Path) -> int:
    """The medium-stroke working side `save_model` wrote (the pack's for models saved before
    it existed, which is how they were served)."""
    return int(_serving_value(folder, "work_side", PACK_WORK_SIDE, *WORK_SIDES))


def load_model(folder: str | Path) -> AnyStyleModel:
    """The model saved by `save_model`, validated (a clear `WeightsError` when damaged)."""
    root = Path(folder)
    try:
        meta = json.loads((root / MODEL_JSON).read_text(encoding="utf-8"))
        config = AnyStyleConfig.from_dict(meta["config"])
        stats_dim = int(meta["stats_dim"])
    except FileNotFoundError:
        raise WeightsError(f"No any-style model in {root} ({MODEL_JSON} is missing).") from None
    except (ValueError, KeyError, TypeError) as err:
        raise WeightsError(f"{MODEL_JSON} is damaged ({err.__class__.__name__}).") from None
    if meta.get("format") != MODEL_FORMAT:
        raise WeightsError(f"{MODEL_JSON} has format {meta.get('format')}, "
                           f"this version reads {MODEL_FORMAT}.")
    # shapes only, as `pack.load_pack`: the weights replace every parameter
    model = nnx.eval_shape(lambda: AnyStyleModel(config, stats_dim, rngs=nnx.Rngs(0)))
    try:
        arrays = load_file(str(root / MODEL_WEIGHTS))
    except Exception as err:  # safetensors raises several types for damaged files
        raise WeightsError(f"{MODEL_WEIGHTS} is damaged ({err.__class__.__name__}).") from None
    load_module_arrays(model, arrays, MODEL_WEIGHTS)
    return model


def styles_generator(model: AnyStyleModel, vectors: jax.Array | np.ndarray) -> Generator:
    """A pack generator whose K table rows are the styles of the K vectors (K, style_dim):
    a style pack made from the any-style model, served like any trained pack."""
    wide = as_generator(model)
    rows = jnp.asarray(style_row(vectors))  # (K, 1 + D)
    return _with_tables(wide, [(rows @ n.scale[...], rows @ n.shift[...])
                               for n in wide.norm_layers()])
