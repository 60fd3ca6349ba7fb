"""Losses for style transfer training: perceptual (content/style), smoothness and adversarial.

Everything here is a pure jax function, so it can be called inside ``jax.jit``/``nnx.jit``
and differentiated. Feature maps and images are NHWC.

Several functions accept "one array or a list of arrays": perceptual losses are taken over
several layers of the feature network, and a multi-scale discriminator returns one logit map
per scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp

Array = jax.Array
Arrays = Array | Sequence[Array]
GanKind = Literal["hinge", "lsgan", "wgan"]


def _as_list(x: Arrays) -> list[Array]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _mse(a: Array, b: Array) -> Array:
    return jnp.mean(jnp.square(a - b))


def content_loss(feats_a: Arrays, feats_b: Arrays) -> Array:
    """Mean squared error between feature maps; mean of per-layer MSEs for lists.

    Averaging (rather than summing) keeps the magnitude independent of how many content
    layers are used, so the content weight does not need retuning when layers change.
    """
    a, b = _as_list(feats_a), _as_list(feats_b)
    if len(a) != len(b):
        raise ValueError(f"content_loss: {len(a)} vs {len(b)} feature maps")
    return jnp.mean(jnp.stack([_mse(x, y) for x, y in zip(a, b, strict=True)]))


def gram_matrix(feats: Array) -> Array:
    """Channel co-activation matrix (N, H, W, C) -> (N, C, C), divided by H*W*C.

    Dividing by H*W makes it a per-position average, independent of image size. The extra
    division by C (as in pytorch/examples fast_neural_style) keeps the entries of layers with
    64 and 512 channels on a comparable scale, so per-layer style weights can stay near 1.
    """
    n, h, w, c = feats.shape
    f = feats.reshape(n, h * w, c)
    return jnp.einsum("npc,npd->ncd", f, f) / (h * w * c)


def shrink(x: Array, factor: float) -> Array:
    """NHWC images scaled by `factor` (antialiased bilinear; 1: unchanged) for a style loss
    taken at a coarser scale, where the feature net's taps see larger structures."""
    if factor == 1:
        return x
    n, h, w, c = x.shape
    size = (n, max(8, round(h * factor)), max(8, round(w * factor)), c)
    return jax.image.resize(x, size, "linear", antialias=True)


def style_loss(
    feats: Arrays, target_grams: Arrays, weights: Sequence[float] | None = None
) -> Array:
    """Sum over layers of ``weight * MSE(gram(feats_l), target_gram_l)``.

    Target Gram matrices are computed once from the style image, so they usually have batch 1;
    they are broadcast against the batch of generated images.
    """
    fs, ts = _as_list(feats), _as_list(target_grams)
    if len(fs) != len(ts):
        raise ValueError(f"style_loss: {len(fs)} feature maps vs {len(ts)} target grams")
    weights = [1.0] * len(fs) if weights is None else list(weights)
    if len(weights) != len(fs):
        raise ValueError(f"style_loss: {len(weights)} weights for {len(fs)} layers")
    return sum(w * _mse(gram_matrix(f), t) for w, f, t in zip(weights, fs, ts, strict=True))


def total_variation(x: Array, kind: Literal["l1", "l2"] = "l1") -> Array:
    """Anisotropic total variation: mean |vertical diff| + mean |horizontal diff|.

    L1 (default) penalises noise and checkerboard artefacts while letting sharp edges through;
    ``kind="l2"`` uses squared differences, which smooths more and blurs edges. Means (not
    sums) make it independent of image size and batch.
    """
    dh = x[:, 1:, :, :] - x[:, :-1, :, :]
    dw = x[:, :, 1:, :] - x[:, :, :-1, :]
    if kind == "l1":
        return jnp.mean(jnp.abs(dh)) + jnp.mean(jnp.abs(dw))
    if kind == "l2":
        return jnp.mean(jnp.square(dh)) + jnp.mean(jnp.square(dw))
    raise ValueError(f"total_variation: unknown kind {kind!r}")


def _d_loss_one(real: Array, fake: Array, kind: GanKind) -> Array:
    if kind == "hinge":
        return jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake))
    if kind == "lsgan":
        return 0.5 * jnp.mean(jnp.square(real - 1.0)) + 0.5 * jnp.mean(jnp.square(fake))
    if kind == "wgan":
        return jnp.mean(fake) - jnp.mean(real)
    raise ValueError(f"unknown GAN loss kind {kind!r}")


def _g_loss_one(fake: Array, kind: GanKind) -> Array:
    if kind in ("hinge", "wgan"):
        return -jnp.mean(fake)
    if kind == "lsgan":
        return 0.5 * jnp.mean(jnp.square(fake - 1.0))
    raise ValueError(f"unknown GAN loss kind {kind!r}")


def d_loss(real_logits: Arrays, fake_logits: Arrays, kind: GanKind = "hinge") -> Array:
    """Discriminator loss (hinge, least-squares or Wasserstein), averaged over scales.

    Averaging over scales keeps the loss magnitude independent of ``num_scales``.
    """
    reals, fakes = _as_list(real_logits), _as_list(fake_logits)
    if len(reals) != len(fakes):
        raise ValueError(f"d_loss: {len(reals)} real vs {len(fakes)} fake logit maps")
    return jnp.mean(jnp.stack([_d_loss_one(r, f, kind) for r, f in zip(reals, fakes, strict=True)]))


def g_loss(fake_logits: Arrays, kind: GanKind = "hinge") -> Array:
    """Generator (adversarial) loss for the matching ``d_loss`` kind, averaged over scales."""
    return jnp.mean(jnp.stack([_g_loss_one(f, kind) for f in _as_list(fake_logits)]))


def gradient_penalty(
    critic_fn: Callable[[Array], Arrays], real: Array, fake: Array, key: Array
) -> Array:
    """WGAN-GP penalty ``mean((||grad critic(x_hat)||_2 - 1)^2)`` (Gulrajani et al. 2017).

    ``x_hat`` mixes each real/fake pair with its own uniform ``eps``. ``critic_fn`` returns
    arrays with a leading batch axis (scores or patch logit maps); each is reduced
    to one score per sample (mean over patches, summed over scales for a list); scores are
    summed over the batch before differentiating, so each sample's gradient is exactly the
    gradient of its own score. Norms are per sample over all non-batch axes.

    ``jax.grad`` cannot write NNX state, so pass a stateful critic in eval mode, e.g.
    ``critic = nnx.view(disc, use_running_average=True)`` for the spectral-norm discriminator.
    """
    n = real.shape[0]
    eps = jax.random.uniform(key, (n,) + (1,) * (real.ndim - 1), dtype=real.dtype)
    x_hat = eps * real + (1.0 - eps) * fake

    def score_sum(x: Array) -> Array:
        outs = _as_list(critic_fn(x))
        return sum(jnp.sum(jnp.mean(o.reshape(o.shape[0], -1), axis=1)) for o in outs)

    g = jax.grad(score_sum)(x_hat)
    # The small constant keeps the gradient of sqrt finite if a gradient is exactly zero.
    norms = jnp.sqrt(jnp.sum(jnp.square(g.reshape(n, -1)), axis=1) + 1e-12)
    return jnp.mean(jnp.square(norms - 1.0))
