"""Multi-style feed-forward generator: encoder → residual blocks → decoder.

The Johnson et al. (2016) shape, reshaped for speed on CPUs: instead of a 9×9 convolution at full
resolution (XLA's CPU backend runs it at a fraction of peak), the encoder folds 2×2 pixel blocks
into channels (space-to-depth) before each 3×3 convolution, and the decoder unfolds them
(depth-to-space, ICNR-initialised against checkerboards). Only the last 3×3 convolution to RGB
runs at full resolution.

Conditional instance norm (Dumoulin et al. 2017) holds one (γ, β) row per style, so one network
carries many styles; blending styles mixes those rows, and a new style is added by training only
its rows. Strength, colour preservation and masks are applied on top (`apply_controls`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

IN_EPS = 1e-5
SKIP_CLIP = 0.01  # photo values are clipped to [c, 1-c] before the logit skip connection


UPSAMPLE_MODES = ("shuffle", "nearest", "bilinear", "bilinear-edge")
PHOTO_SKIP_CHANNELS = 12  # the photo folded 2×2 into channels, at 1/2 res
Affine = tuple[jax.Array, jax.Array]  # a norm's (scale, shift), each (N, C)


@dataclass(frozen=True)
class GeneratorConfig:
    """Shape of the network; stored in every style pack so weights always meet their network."""

    num_styles: int = 1
    channels: tuple[int, int, int] = (16, 32, 64)  # full-res, 1/2-res, 1/4-res widths
    res_blocks: int = 5
    # Decoder upsampling: "shuffle" (conv → depth-to-space, the first packs), "nearest"
    # (nearest 2× → conv, "resize-convolution": no sub-pixel pattern for training to exploit)
    # or "bilinear" (bilinear 2× → conv: no 2×2 blocks, whose steps show along outlines).
    # "bilinear-edge" is "bilinear" with the conv after each upsampling padded by repeating the
    # edge instead of reflecting it: the same parameters and the same function inside the
    # picture, and it can be computed without upsampling (`phase_kernel`).
    upsample: str = "shuffle"
    # The first decoder convolution also reads the photo, folded to 1/2 res (2×2 pixels into
    # 12 channels), so the decoder knows where outlines are to the pixel. Tried against the
    # pale halo along outlines (run L, docs/training.md): the network used it, the halo stayed.
    # Not with "shuffle", whose first conv runs at 1/4 res.
    photo_skip: bool = False

    def __post_init__(self) -> None:
        if self.photo_skip and self.upsample not in ("nearest", "bilinear"):
            raise ValueError("photo_skip needs a resize decoder (nearest or bilinear)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GeneratorConfig:
        channels = tuple(int(c) for c in d["channels"])
        cfg = cls(num_styles=int(d["num_styles"]), channels=channels,
                  res_blocks=int(d["res_blocks"]), upsample=str(d.get("upsample", "shuffle")),
                  photo_skip=bool(d.get("photo_skip", False)))
        if (len(channels) != 3 or min(channels) < 1 or cfg.num_styles < 1
                or cfg.res_blocks < 0 or cfg.upsample not in UPSAMPLE_MODES):
            raise ValueError(f"invalid generator config {d}")
        return cfg

    @property
    def multiple(self) -> int:
        """Input sides must be a multiple of this (two 2× foldings)."""
        return 4


def space_to_depth(x: jax.Array, r: int = 2) -> jax.Array:
    n, h, w, c = x.shape
    x = x.reshape(n, h // r, r, w // r, r, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h // r, w // r, r * r * c)


def upsample_nearest(x: jax.Array, r: int = 2) -> jax.Array:
    return jnp.repeat(jnp.repeat(x, r, axis=1), r, axis=2)


def upsample_bilinear(x: jax.Array) -> jax.Array:
    """2× bilinear with half-pixel centres and edge clamping, what ONNX Resize "linear",
    "half_pixel" computes: each output pixel is ¾ of its nearest input and ¼ of the next."""
    n, h, w, c = x.shape
    return jax.image.resize(x, (n, 2 * h, 2 * w, c), "bilinear")


# A 2× upsampling followed by a 3-tap filter, along one axis: the weight that filter tap k
# (last index) gives low-res neighbour i-1, i, i+1 (middle index) for output 2i (phase 0) and
# 2i+1 (phase 1). Bilinear (half-pixel centres): upsampled pixel 2i is ¾·x[i] + ¼·x[i-1],
# pixel 2i+1 is ¾·x[i] + ¼·x[i+1]. Nearest: both are x[i].
BILINEAR_TAPS = np.array([[[0.75, 0.25, 0.0], [0.25, 0.75, 0.75], [0.0, 0.0, 0.25]],
                          [[0.25, 0.0, 0.0], [0.75, 0.75, 0.25], [0.0, 0.25, 0.75]]], np.float32)
NEAREST_TAPS = np.array([[[1, 0, 0], [0, 1, 1], [0, 0, 0]],
                         [[0, 0, 0], [1, 1, 0], [0, 0, 1]]], np.float32)


def phase_kernel(kernel, taps: np.ndarray, xp=jnp):
    """The 3×3 kernel (3, 3, Cin, Cout) that follows a 2× upsampling (`taps`), as one 3×3
    kernel (3, 3, Cin, 4·Cout) on the low-res input whose output channel (dy·2 + dx)·Cout + c
    is output pixel (2i+dy, 2j+dx, c) (`depth_to_space`'s order).

    Why: the upsampled tensor is 4× larger than its input, so on CPU the resize and the
    padding of it cost as much as the conv (docs/benchmarks.md). Same multiply-adds, a quarter
    of the memory traffic. With the low-res input padded by repeating its edge this is exactly
    upsample → edge pad → conv; for nearest upsampling edge padding at low res is also exactly
    reflection at high res. `xp` is numpy (ONNX export) or jax.numpy."""
    taps = xp.asarray(taps)
    cin, cout = kernel.shape[2], kernel.shape[3]
    k = xp.einsum("pak,qbl,klio->abipqo", taps, taps, kernel)
    return k.reshape(3, 3, cin, 4 * cout)


def depth_to_space(x: jax.Array, r: int = 2) -> jax.Array:
    n, h, w, c = x.shape
    x = x.reshape(n, h, w, r, r, c // (r * r))
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * r, w * r, c // (r * r))


class ReflectConv(nnx.Module):
    """3×3 convolution with reflection padding: no dark frame at the picture's borders."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(cin, cout, (3, 3), padding="VALID", rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect"))


class CondInstanceNorm(nnx.Module):
    """Instance norm whose scale and shift are rows of per-style tables."""

    def __init__(self, channels: int, num_styles: int):
        self.scale = nnx.Param(jnp.ones((num_styles, channels)))
        self.shift = nnx.Param(jnp.zeros((num_styles, channels)))

    def affine(self, style_w: jax.Array) -> Affine:
        """The (scale, shift) pair, each (N, C), that the weights `style_w` (N, S) mix."""
        return style_w @ self.scale[...], style_w @ self.shift[...]

    def __call__(self, x: jax.Array, style_w: jax.Array | None,
                 stats: tuple[jax.Array, jax.Array] | None = None,
                 valid: jax.Array | None = None, affine: Affine | None = None):
        """Normalise x (N,H,W,C); style_w (N,S) mixes the style rows, or `affine` gives the
        (scale, shift) directly (the any-style model predicts them from a style vector).

        With `stats` (mean, var) given, those statistics are used instead of x's own: tiles of a
        large photo then share the whole photo's statistics and join without seams.
        """
        if stats is None and valid is None:
            mean = jnp.mean(x, axis=(1, 2), keepdims=True)
            var = jnp.var(x, axis=(1, 2), keepdims=True)
        elif stats is None:
            # Statistics of the photo only, not of the padding that fills its shape bucket.
            count = jnp.sum(valid, axis=(1, 2), keepdims=True)
            mean = jnp.sum(x * valid, axis=(1, 2), keepdims=True) / count
            var = jnp.sum((x - mean) ** 2 * valid, axis=(1, 2), keepdims=True) / count
        else:
            mean, var = stats
        gamma, beta = affine if affine is not None else self.affine(style_w)
        y = ((x - mean) * jax.lax.rsqrt(var + IN_EPS) * gamma[:, None, None, :]
             + beta[:, None, None, :])
        return y, (mean, var)


def _icnr(conv: nnx.Conv, r: int, key: jax.Array) -> None:
    """Initialise a conv feeding depth_to_space so that its r² sub-pixels start identical."""
    kh, kw, cin, cout = conv.kernel.shape
    base = nnx.initializers.lecun_normal()(key, (kh, kw, cin, cout // (r * r)))
    # depth_to_space reads channels as (r, r, c): repeat each base filter over the r² positions.
    conv.kernel[...] = jnp.tile(base[..., None, :], (1, 1, 1, r * r, 1)).reshape(kh, kw, cin, cout)


class ResidualBlock(nnx.Module):
    def __init__(self, ch: int, num_styles: int, *, rngs: nnx.Rngs):
        self.conv1 = ReflectConv(ch, ch, rngs=rngs)
        self.norm1 = CondInstanceNorm(ch, num_styles)
        self.conv2 = ReflectConv(ch, ch, rngs=rngs)
        self.norm2 = CondInstanceNorm(ch, num_styles)

    def __call__(self, x, style_w, stats, out_stats, valid=None, affines=None):
        affines = affines if affines is not None else iter(())
        h, s = self.norm1(self.conv1(x), style_w, next(stats, None), valid, next(affines, None))
        out_stats.append(s)
        h, s = self.norm2(self.conv2(jax.nn.relu(h)), style_w, next(stats, None), valid,
                          next(affines, None))
        out_stats.append(s)
        return x + h


class Generator(nnx.Module):
    """Photo (N,H,W,3) in [0,1] + style weights (N,S) → stylised photo in [0,1]."""

    def __init__(self, config: GeneratorConfig, *, rngs: nnx.Rngs):
        c0, c1, c2 = config.channels
        s = config.num_styles
        self.config = config
        self.enc1 = ReflectConv(3 * 4, c1, rngs=rngs)       # on 2×2-folded pixels, 1/2 res
        self.norm_e1 = CondInstanceNorm(c1, s)
        self.enc2 = ReflectConv(c1 * 4, c2, rngs=rngs)      # 1/4 res
        self.norm_e2 = CondInstanceNorm(c2, s)
        self.res = nnx.List([ResidualBlock(c2, s, rngs=rngs) for _ in range(config.res_blocks)])
        shuffle = config.upsample == "shuffle"
        k = 4 if shuffle else 1
        skip = PHOTO_SKIP_CHANNELS if config.photo_skip else 0
        self.dec1 = ReflectConv(c2 + skip, c1 * k, rngs=rngs)  # (×2 up) → 1/2 res
        self.norm_d1 = CondInstanceNorm(c1, s)
        self.dec2 = ReflectConv(c1, c0 * k, rngs=rngs)      # (×2 up) → full res
        self.norm_d2 = CondInstanceNorm(c0, s)
        self.out = ReflectConv(c0, 3, rngs=rngs)
        self.out.conv.kernel[...] = self.out.conv.kernel[...] * 0.1  # start near the photo
        if shuffle:
            _icnr(self.dec1.conv, 2, rngs.params())
            _icnr(self.dec2.conv, 2, rngs.params())

    def _up(self, conv: ReflectConv, h: jax.Array, photo: jax.Array | None = None) -> jax.Array:
        """One 2× decoder step in the configured way; `photo` (same res as the result, before
        the conv) joins the upsampled features as extra channels."""
        if self.config.upsample == "shuffle":
            return depth_to_space(conv(h))
        if self.config.upsample == "bilinear-edge":
            return _bilinear_edge_conv(conv, h)
        h = upsample_bilinear(h) if self.config.upsample == "bilinear" else upsample_nearest(h)
        if photo is not None:
            h = jnp.concatenate([h, photo], axis=-1)
        return conv(h)

    def __call__(self, x: jax.Array, style_w: jax.Array | None,
                 stats: Sequence[tuple[jax.Array, jax.Array]] | None = None,
                 return_stats: bool = False, valid: jax.Array | None = None,
                 affines: Sequence[Affine] | None = None):
        """`valid` (N,H,W,1) marks the photo inside a padded batch (1) vs padding (0).

        `affines`, one (scale, shift) per norm in `norm_layers()` order, replace the style
        tables (then `style_w` may be None): how the any-style model drives this network.
        """
        it = iter(stats) if stats is not None else iter(())
        aff = iter(affines) if affines is not None else iter(())
        collected: list[tuple[jax.Array, jax.Array]] = []
        half = quarter = None
        if valid is not None:  # the mask at each resolution: fraction of valid pixels
            half = nnx.avg_pool(valid, (2, 2), strides=(2, 2))
            quarter = nnx.avg_pool(half, (2, 2), strides=(2, 2))

        def norm(layer, h, mask):
            y, st = layer(h, style_w, next(it, None), mask, next(aff, None))
            collected.append(st)
            return jax.nn.relu(y)

        folded = space_to_depth(x * 2.0 - 1.0)
        h = norm(self.norm_e1, self.enc1(folded), half)
        h = norm(self.norm_e2, self.enc2(space_to_depth(h)), quarter)
        for block in self.res:
            h = block(h, style_w, it, collected, quarter, aff)
        h = norm(self.norm_d1, self._up(self.dec1, h, folded if self.config.photo_skip else None),
                 half)
        h = norm(self.norm_d2, self._up(self.dec2, h), valid)
        # Skip connection in logit space: the network predicts a change to the photo, so it
        # starts as (nearly) the identity, keeps fine detail, and colour shifts are additive.
        y = jax.nn.sigmoid(self.out(h) + photo_logit(x))
        return (y, collected) if return_stats else y

    def norm_layers(self) -> list[CondInstanceNorm]:
        """All conditional norms, in call order (the per-style parameters)."""
        layers = [self.norm_e1, self.norm_e2]
        for b in self.res:
            layers += [b.norm1, b.norm2]
        return layers + [self.norm_d1, self.norm_d2]


def _bilinear_edge_conv(conv: ReflectConv, h: jax.Array) -> jax.Array:
    """Bilinear 2× → edge pad → `conv`, computed at the input's resolution."""
    kernel = phase_kernel(conv.conv.kernel[...], BILINEAR_TAPS)
    padded = jnp.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    y = jax.lax.conv_general_dilated(padded, kernel, (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return depth_to_space(y + jnp.tile(conv.conv.bias[...], 4))


def photo_logit(x: jax.Array) -> jax.Array:
    xc = jnp.clip(x, SKIP_CLIP, 1.0 - SKIP_CLIP)
    return jnp.log(xc) - jnp.log1p(-xc)


def one_hot_styles(style: int | Sequence[float], num_styles: int, batch: int) -> jax.Array:
    """Style id or blend weights → (batch, num_styles) weights summing to 1."""
    if isinstance(style, int):
        w = jax.nn.one_hot(style, num_styles)
    else:
        w = jnp.asarray(style, jnp.float32)
        w = w / jnp.maximum(jnp.sum(w), 1e-8)
    return jnp.broadcast_to(w, (batch, num_styles))


def luminance(x: jax.Array) -> jax.Array:
    return x @ jnp.array([0.299, 0.587, 0.114], x.dtype)


def preserve_colors(photo: jax.Array, styled: jax.Array) -> jax.Array:
    """Keep the photo's chroma (YCbCr Cb, Cr) and take only the styled luminance."""
    y = luminance(styled)[..., None]
    chroma = photo - luminance(photo)[..., None]  # RGB offset from grey at the same luminance
    return jnp.clip(y + chroma, 0.0, 1.0)


def apply_controls(photo: jax.Array, styled: jax.Array, strength: float | jax.Array = 1.0,
                   keep_colors: bool = False, mask: jax.Array | None = None) -> jax.Array:
    """Strength α moves along the line from the photo (α=0) to the full style (α=1).

    Linear in α, so the distance to the photo grows monotonically; a mask (N,H,W,1) in [0,1]
    scales α per pixel for local style.
    """
    if keep_colors:
        styled = preserve_colors(photo, styled)
    alpha = jnp.asarray(strength, photo.dtype)
    if mask is not None:
        alpha = alpha * mask
    return photo + alpha * (styled - photo)
