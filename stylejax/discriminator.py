"""Conditional multi-scale PatchGAN discriminator (Flax NNX).

Each scale is a stack of stride-2 4x4 convolutions that scores overlapping patches of the
image; the coarser scales see the image after repeated 2x average pooling (pix2pixHD).
Every convolution is spectrally normalised (Miyato et al. 2018) to keep the discriminator
roughly 1-Lipschitz without batch norm, and the style is injected by projection (Miyato &
Koyama 2018): ``logit = conv_out(h) + <embed(style), h>`` at every patch.

Spectral norm is a small wrapper here rather than ``nnx.SpectralNorm``: in flax 0.12 that
module writes the normalised kernel back into the wrapped layer's ``Param`` on every call
(eval mode included, but not inside ``nnx.grad``), so the raw weight silently changes
depending on how the model was called.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


def _l2_normalize(x: Array, eps: float = 1e-12) -> Array:
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x)) + eps)


def _power_iteration(mat: Array, u: Array, steps: int) -> Array:
    """``steps`` rounds of u <- normalize(M^T normalize(M u)): u -> top right singular vector."""
    for _ in range(steps):
        u = _l2_normalize(mat.T @ _l2_normalize(mat @ u))
    return u


class SNConv(nnx.Module):
    """Conv whose kernel is divided by its largest singular value.

    The kernel is viewed as a (kh*kw*cin, cout) matrix. One power iteration per call refines
    the persistent right singular vector ``u`` in train mode (``use_running_average=False``,
    toggled by ``.train()``/``.eval()``/``nnx.view``); in eval mode ``u`` stays fixed, so
    outputs are deterministic. ``u`` is a ``BatchStat``: saved with the model, never trained.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int,
        *,
        strides: int = 1,
        rngs: nnx.Rngs,
    ):
        shape = (kernel_size, kernel_size, in_features, out_features)
        self.kernel = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), shape))
        self.bias = nnx.Param(jnp.zeros((out_features,)))
        # Start ``u`` close to the top singular vector (as torch's spectral_norm does), so the
        # normalisation is accurate from the first step instead of drifting during training.
        mat = self.kernel[...].reshape(-1, out_features)
        u = _l2_normalize(jax.random.normal(rngs.params(), (out_features,)))
        self.u = nnx.BatchStat(_power_iteration(mat, u, 15))
        self.strides = strides
        self.use_running_average = False

    def normalized_kernel(self) -> Array:
        w = self.kernel[...]
        mat = w.reshape(-1, w.shape[-1])
        u = self.u[...]
        if not self.use_running_average:
            u = jax.lax.stop_gradient(_power_iteration(mat, u, 1))
            self.u[...] = u
        v = jax.lax.stop_gradient(_l2_normalize(mat @ u))
        sigma = v @ mat @ u  # gradient flows through sigma, as in Miyato et al.
        return w / sigma

    def __call__(self, x: Array) -> Array:
        y = jax.lax.conv_general_dilated(
            x,
            self.normalized_kernel(),
            window_strides=(self.strides, self.strides),
            padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + self.bias[...]

    def set_view(self, use_running_average: bool | None = None) -> None:
        """Lets ``nnx.view(model, use_running_average=...)`` switch train/eval mode."""
        if use_running_average is not None:
            self.use_running_average = use_running_average


class PatchDiscriminator(nnx.Module):
    """PatchGAN with projection conditioning on the style.

    ``n_layers`` stride-2 4x4 convs (channels ``ch, 2ch, ...`` capped at ``8*ch``), LeakyReLU
    0.2, then a 3x3 conv to one logit per patch: an HxW image gives (N, H/2^n, W/2^n, 1).
    """

    def __init__(self, num_styles: int, *, ch: int = 32, n_layers: int = 3, rngs: nnx.Rngs):
        chans = [3] + [min(ch * 2**i, ch * 8) for i in range(n_layers)]
        pairs = zip(chans[:-1], chans[1:], strict=True)
        self.convs = nnx.List([SNConv(cin, cout, 4, strides=2, rngs=rngs) for cin, cout in pairs])
        self.conv_out = SNConv(chans[-1], 1, 3, rngs=rngs)
        self.embed = nnx.Embed(num_styles, chans[-1], rngs=rngs)

    def __call__(
        self, x: Array, style: Array | None = None, style_weights: Array | None = None
    ) -> Array:
        """Patch logits (N, h, w, 1) for images ``x`` (N, H, W, 3) in [0, 1].

        Give either ``style`` (N,) int ids or ``style_weights`` (N, num_styles), a soft mix
        whose embedding is ``style_weights @ table`` (for blended styles).
        """
        if (style is None) == (style_weights is None):
            raise ValueError("give exactly one of style or style_weights")
        h = 2.0 * x - 1.0  # centre [0, 1] images
        for conv in self.convs:
            h = nnx.leaky_relu(conv(h), 0.2)
        e = self.embed(style) if style is not None else style_weights @ self.embed.embedding[...]
        projection = jnp.einsum("nhwc,nc->nhw", h, e)[..., None]
        return self.conv_out(h) + projection


class MultiScaleDiscriminator(nnx.Module):
    """``num_scales`` PatchDiscriminators on the image, then 2x, 4x, ... average-pooled."""

    def __init__(
        self,
        num_styles: int,
        *,
        ch: int = 32,
        n_layers: int = 3,
        num_scales: int = 2,
        rngs: nnx.Rngs,
    ):
        self.discs = nnx.List(
            [
                PatchDiscriminator(num_styles, ch=ch, n_layers=n_layers, rngs=rngs)
                for _ in range(num_scales)
            ]
        )

    def __call__(
        self, x: Array, style: Array | None = None, style_weights: Array | None = None
    ) -> list[Array]:
        """One patch-logit map per scale, finest first."""
        outs = []
        for i, disc in enumerate(self.discs):
            if i > 0:
                x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
            outs.append(disc(x, style, style_weights))
        return outs
