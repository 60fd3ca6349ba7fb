"""The style-palette map (stylejax.colour): it gives a picture the target's colour statistics,
is the identity at amount 0, stays calm on grey pictures, and the trainer's jax.numpy
version is the serving numpy one."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from stylejax.colour import (
    ColourStats,
    colour_stats,
    map_between,
    match_colours,
    pixel_stats,
    transfer_map,
)


def _picture(seed: int, tint=(0.3, 0.5, 0.7), spread=0.15, size=(96, 128)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(*size, 3)) @ rng.normal(size=(3, 3)) * spread / 2
    return np.clip(base + np.asarray(tint), 0.0, 1.0).astype(np.float32)


def test_the_result_takes_the_targets_mean_and_covariance():
    src, dst = _picture(0), _picture(1, tint=(0.6, 0.4, 0.3), spread=0.08)
    target = colour_stats(dst)
    out = match_colours(src, target)
    got = colour_stats(out)
    np.testing.assert_allclose(got.mean, target.mean, atol=0.01)
    np.testing.assert_allclose(got.cov, target.cov, atol=2e-3)
    # and the map is the least change: a picture matched to its own statistics is itself
    np.testing.assert_allclose(match_colours(src, colour_stats(src)), src, atol=1e-3)


def test_amount_walks_from_the_photo_to_the_full_map():
    src, target = _picture(2), colour_stats(_picture(3, tint=(0.2, 0.2, 0.6)))
    assert match_colours(src, target, 0.0) is src
    half, full = match_colours(src, target, 0.5), match_colours(src, target, 1.0)
    d_half = np.abs(half - src).mean()
    d_full = np.abs(full - src).mean()
    assert 0.35 * d_full < d_half < 0.65 * d_full
    a, b = transfer_map(colour_stats(src), target, 0.0)
    np.testing.assert_allclose(a, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(b, 0.0, atol=1e-6)


def test_uint8_in_uint8_out_and_values_stay_in_range():
    src = (_picture(4) * 255).astype(np.uint8)
    out = match_colours(src, colour_stats(_picture(5, tint=(0.9, 0.9, 0.1), spread=0.4)))
    assert out.dtype == np.uint8 and out.shape == src.shape
    f = match_colours(src.astype(np.float32) / 255, colour_stats(_picture(5)))
    assert f.dtype == np.float32 and f.min() >= 0.0 and f.max() <= 1.0


def test_a_grey_photo_is_not_stretched_into_loud_colour():
    """A grey picture with faint JPEG-like noise: the map may not blow the noise up to the
    style's full colour spread (the floor in transfer_map)."""
    rng = np.random.default_rng(6)
    grey = np.repeat(rng.uniform(0.2, 0.8, (64, 64, 1)), 3, axis=-1)
    grey = np.clip(grey + rng.normal(0, 0.002, grey.shape), 0, 1).astype(np.float32)
    out = match_colours(grey, colour_stats(_picture(7, spread=0.3)))
    chroma = out - out.mean(-1, keepdims=True)     # colour away from grey, per pixel
    assert chroma.reshape(-1, 3).std(0).max() < 0.08
    a, _ = transfer_map(colour_stats(grey), colour_stats(_picture(7, spread=0.3)))
    assert np.abs(a).max() < 12


def test_the_trainers_batched_jax_map_is_the_serving_one():
    srcs = [_picture(8), _picture(9, tint=(0.5, 0.5, 0.5))]
    dsts = [_picture(10, tint=(0.7, 0.3, 0.2)), _picture(11, spread=0.05)]
    flat = lambda xs: jnp.asarray(np.stack([x.reshape(-1, 3) for x in xs]))  # noqa: E731
    a, b = map_between(*pixel_stats(flat(srcs), jnp), *pixel_stats(flat(dsts), jnp),
                       jnp.array([1.0, 0.6]), xp=jnp)
    for i, amount in enumerate((1.0, 0.6)):
        full = lambda x: ColourStats(*pixel_stats(x.reshape(-1, 3).astype(np.float64)))  # noqa: E731
        a_np, b_np = transfer_map(full(srcs[i]), full(dsts[i]), amount)
        np.testing.assert_allclose(np.asarray(a[i]), a_np, rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(np.asarray(b[i]), b_np, atol=2e-3)
