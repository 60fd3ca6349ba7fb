"""What the loss sees: each result turned and zoomed by a random amount before the feature net.

A feed-forward generator trained against a fixed feature net can learn pixel patterns that the
net's stride-2, axis-aligned filters read as the style's statistics: in our runs, vertical
dashes and blocky axis-aligned outlines that the custom-style optimiser (which re-draws its
views every step) never makes. The jitter option breaks the stride grid; a random rotation and
zoom also break the orientation and the frequency the pattern needs. It is the transformation
robustness of feature visualisation (Olah et al. 2017), applied to a training loss.

The result, its photo and its style picture are viewed through the same transform, so content
is still compared like with like and the Gram target turns with the strokes it asks for.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates


def draw_views(key: jax.Array, n: int, max_degrees: float, zoom: float) -> tuple[jax.Array,
                                                                                  jax.Array]:
    """n (angle in radians, scale) pairs: angles uniform in ±max_degrees, scales log-uniform
    in [1/zoom, zoom]."""
    k_angle, k_scale = jax.random.split(key)
    limit = jnp.deg2rad(max_degrees)
    angles = jax.random.uniform(k_angle, (n,), minval=-limit, maxval=limit)
    log_zoom = jnp.log(max(zoom, 1.0))
    scales = jnp.exp(jax.random.uniform(k_scale, (n,), minval=-log_zoom, maxval=log_zoom))
    return angles, scales


def _view_one(image: jax.Array, angle: jax.Array, scale: jax.Array) -> jax.Array:
    """image (H,W,C) turned by `angle` and magnified by `scale` about its centre, same size,
    bilinear, mirrored at the borders (no black corners for the feature net to read)."""
    h, w, _ = image.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=image.dtype) - cy,
                          jnp.arange(w, dtype=image.dtype) - cx, indexing="ij")
    cos, sin = jnp.cos(angle) / scale, jnp.sin(angle) / scale
    src_y = cy + cos * yy - sin * xx
    src_x = cx + sin * yy + cos * xx

    def channel(plane: jax.Array) -> jax.Array:
        return map_coordinates(plane, [src_y, src_x], order=1, mode="mirror")

    return jax.vmap(channel, in_axes=2, out_axes=2)(image)


def view(images: jax.Array, angles: jax.Array, scales: jax.Array) -> jax.Array:
    """images (N,H,W,C), each through its own (angle, scale); differentiable in the images."""
    return jax.vmap(_view_one)(images, angles, scales)
