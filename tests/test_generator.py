"""The multi-style generator and its controls (strength, colour preservation, masks, stats)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_CONFIG
from flax import nnx

from stylejax.generator import (
    Generator,
    GeneratorConfig,
    apply_controls,
    depth_to_space,
    luminance,
    one_hot_styles,
    preserve_colors,
    space_to_depth,
)

LUM = np.array([0.299, 0.587, 0.114], np.float32)
EYE = np.eye(2, dtype=np.float32)


@pytest.fixture(scope="module")
def photos(make_photo) -> jnp.ndarray:
    """Two different 64×64 photos (batch of 2)."""
    return jnp.asarray(np.stack([make_photo(64, 64, seed=0, noise=0.05),
                                 make_photo(64, 64, seed=3, noise=0.05)]))


@pytest.fixture(scope="module")
def styled(tiny_generator, photos) -> np.ndarray:
    """Style 0 on photo 0, style 1 on photo 1."""
    return np.asarray(tiny_generator(photos, jnp.asarray(EYE)))


def _run(gen: Generator, x, w) -> np.ndarray:
    return np.asarray(gen(jnp.asarray(x), jnp.asarray(w, jnp.float32)))


def test_output_shape_range_and_not_constant(tiny_generator, styled, make_photo):
    assert styled.shape == (2, 64, 64, 3)
    assert styled.dtype == np.float32
    assert np.all(np.isfinite(styled))
    assert styled.min() >= 0.0 and styled.max() <= 1.0
    assert styled.std() > 0.02  # an image, not a flat colour
    # Non-square input keeps its shape (H, W multiples of 4).
    y = _run(tiny_generator, make_photo(96, 128)[None], EYE[:1])
    assert y.shape == (1, 96, 128, 3)
    assert y.min() >= 0.0 and y.max() <= 1.0


def test_fresh_generator_has_identical_style_rows(photos):
    """The premise of perturbing: without it every style id gives the same picture."""
    fresh = Generator(TINY_CONFIG, rngs=nnx.Rngs(1))
    x = photos[:1]
    np.testing.assert_array_equal(_run(fresh, x, EYE[:1]), _run(fresh, x, EYE[1:]))


def test_different_style_ids_give_different_outputs(tiny_generator, photos):
    x = jnp.concatenate([photos[:1], photos[:1]])  # the same photo twice, one style each
    y = _run(tiny_generator, x, EYE)
    diff = np.abs(y[0] - y[1])
    assert diff.mean() > 0.02 and diff.max() > 0.2


def test_batch_items_are_independent(tiny_generator, photos, styled):
    """Instance norm is per sample: running one photo alone gives the same as in the batch."""
    alone = _run(tiny_generator, photos[1:], EYE[1:])
    np.testing.assert_allclose(alone[0], styled[1], atol=1e-5)


def test_blend_equals_generator_with_averaged_rows(tiny_generator, photos):
    x = photos[:1]
    blended = _run(tiny_generator, x, [[0.5, 0.5]])
    averaged = nnx.clone(tiny_generator)
    for layer in averaged.norm_layers():
        for table in (layer.scale, layer.shift):
            mean_row = jnp.mean(table[...], axis=0, keepdims=True)
            table[...] = jnp.broadcast_to(mean_row, table[...].shape)
    for onehot in (EYE[:1], EYE[1:]):
        np.testing.assert_allclose(_run(averaged, x, onehot), blended, atol=1e-5)
    # ... and the blend is really something else than either style.
    assert np.abs(blended - _run(tiny_generator, x, EYE[:1])).mean() > 0.005
    assert np.abs(blended - _run(tiny_generator, x, EYE[1:])).mean() > 0.005


def test_one_hot_styles_normalises_and_broadcasts():
    np.testing.assert_allclose(one_hot_styles(1, 3, 2), [[0, 1, 0], [0, 1, 0]])
    np.testing.assert_allclose(one_hot_styles([2.0, 2.0, 4.0], 3, 1), [[0.25, 0.25, 0.5]])


# -- controls ------------------------------------------------------------------------------------


def test_strength_zero_is_the_photo_exactly_and_one_is_the_style(photos, styled):
    p = np.asarray(photos)
    np.testing.assert_array_equal(np.asarray(apply_controls(photos, jnp.asarray(styled), 0.0)), p)
    np.testing.assert_allclose(np.asarray(apply_controls(photos, jnp.asarray(styled), 1.0)),
                               styled, atol=1e-6)


def test_distance_to_photo_strictly_increases_with_strength(photos, styled):
    p = np.asarray(photos)
    dists = [np.abs(np.asarray(apply_controls(photos, jnp.asarray(styled), s)) - p).mean()
             for s in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert dists[0] == 0.0
    assert all(a < b for a, b in zip(dists, dists[1:])), dists
    # Linear in the strength: half strength is half the way.
    np.testing.assert_allclose(dists[2], dists[4] / 2, rtol=1e-4)


def test_keep_colors_takes_photo_chroma_and_styled_luminance(photos, styled):
    p = np.asarray(photos)
    out = np.asarray(apply_controls(photos, jnp.asarray(styled), 1.0, keep_colors=True))
    # Unclipped pixels: the unclipped sum y_styled + chroma_photo stays inside [0, 1].
    raw = (styled @ LUM)[..., None] + (p - (p @ LUM)[..., None])
    ok = np.all((raw > 1e-4) & (raw < 1 - 1e-4), axis=-1)
    assert ok.mean() > 0.5, "test pictures clip too much to say anything"
    chroma_out = out - (out @ LUM)[..., None]
    chroma_photo = p - (p @ LUM)[..., None]
    np.testing.assert_allclose(chroma_out[ok], chroma_photo[ok], atol=1e-5)
    np.testing.assert_allclose((out @ LUM)[ok], (styled @ LUM)[ok], atol=1e-5)
    # Clipped pixels stay in range.
    assert out.min() >= 0.0 and out.max() <= 1.0
    # The styled picture's own colours are gone: chroma differs from the styled chroma.
    chroma_styled = styled - (styled @ LUM)[..., None]
    assert np.abs(chroma_out - chroma_styled).mean() > 0.02
    # preserve_colors is the same operation, and luminance() matches the weights used here.
    np.testing.assert_allclose(np.asarray(preserve_colors(photos, jnp.asarray(styled))), out,
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(luminance(photos)), p @ LUM, atol=1e-6)


def test_mask_selects_photo_or_style_per_pixel(photos, styled):
    p = np.asarray(photos)
    mask = np.zeros((2, 64, 64, 1), np.float32)
    mask[:, :, 32:] = 1.0
    mask[:, :8, :8] = 0.5
    out = np.asarray(apply_controls(photos, jnp.asarray(styled), 1.0, mask=jnp.asarray(mask)))
    np.testing.assert_array_equal(out[:, 8:, :32], p[:, 8:, :32])
    np.testing.assert_allclose(out[:, :, 32:], styled[:, :, 32:], atol=1e-6)
    np.testing.assert_allclose(out[:, :8, :8], (p[:, :8, :8] + styled[:, :8, :8]) / 2, atol=1e-6)
    # Mask and strength multiply.
    half = np.asarray(apply_controls(photos, jnp.asarray(styled), 0.5, mask=jnp.asarray(mask)))
    np.testing.assert_allclose(half[:, :, 32:], (p[:, :, 32:] + styled[:, :, 32:]) / 2, atol=1e-6)


# -- statistics override -------------------------------------------------------------------------


def test_returned_stats_reproduce_the_output_exactly(tiny_generator, photos):
    w = jnp.asarray(EYE)
    y, stats = tiny_generator(photos, w, return_stats=True)
    layers = tiny_generator.norm_layers()
    assert len(stats) == len(layers) == 2 + 2 * TINY_CONFIG.res_blocks + 2
    for (mean, var), layer in zip(stats, layers):
        channels = layer.scale[...].shape[1]
        assert mean.shape == var.shape == (2, 1, 1, channels)
        assert np.all(np.asarray(var) >= 0)
    y2 = tiny_generator(photos, w, stats=stats)
    np.testing.assert_array_equal(np.asarray(y2), np.asarray(y))


def test_given_stats_are_really_used(tiny_generator, photos):
    """Photo 1 normalised with photo 0's statistics differs from photo 1 on its own."""
    w = jnp.asarray(EYE[:1])
    _, stats0 = tiny_generator(photos[:1], w, return_stats=True)
    own = np.asarray(tiny_generator(photos[1:], w))
    borrowed = np.asarray(tiny_generator(photos[1:], w, stats=stats0))
    assert np.abs(own - borrowed).mean() > 0.005


# -- pixel folding -------------------------------------------------------------------------------


def test_space_to_depth_and_depth_to_space_are_inverse():
    x = jnp.asarray(np.random.default_rng(0).random((2, 8, 12, 3), np.float32))
    s = space_to_depth(x)
    assert s.shape == (2, 4, 6, 12)
    np.testing.assert_array_equal(np.asarray(depth_to_space(s)), np.asarray(x))
    y = jnp.asarray(np.random.default_rng(1).random((1, 4, 6, 20), np.float32))
    np.testing.assert_array_equal(np.asarray(space_to_depth(depth_to_space(y))), np.asarray(y))


def test_space_to_depth_channel_order():
    """Channel (dy·2 + dx)·C + c holds pixel (2i+dy, 2j+dx, c) (ONNX SpaceToDepth's order)."""
    x = np.random.default_rng(2).random((1, 4, 6, 3)).astype(np.float32)
    s = np.asarray(space_to_depth(jnp.asarray(x)))
    for dy in range(2):
        for dx in range(2):
            for c in range(3):
                np.testing.assert_array_equal(s[0, :, :, (dy * 2 + dx) * 3 + c],
                                              x[0, dy::2, dx::2, c])


def test_nearest_upsampling_decoder_starts_near_the_photo_and_round_trips_its_config():
    from stylejax.generator import upsample_nearest

    cfg = GeneratorConfig(num_styles=2, channels=(8, 16, 32), res_blocks=1, upsample="nearest")
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in cfg.to_dict().items() if k != "upsample"}
    assert GeneratorConfig.from_dict(old).upsample == "shuffle"  # packs from before the option
    with pytest.raises(ValueError):
        GeneratorConfig.from_dict({**cfg.to_dict(), "upsample": "bicubic"})
    gen = Generator(cfg, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).random((1, 32, 48, 3), np.float32))
    y = gen(x, one_hot_styles(0, 2, 1))
    assert y.shape == x.shape and float(jnp.abs(y - x).mean()) < 0.1
    z = jnp.arange(4.0).reshape(1, 2, 2, 1)
    np.testing.assert_array_equal(upsample_nearest(z)[0, :, :, 0],
                                  [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])


def test_bilinear_decoder_is_jax_image_resize_and_shares_the_nearest_decoders_weights():
    """"bilinear": ¾/¼ half-pixel interpolation (what ONNX Resize "linear" does), and the same
    parameter shapes as "nearest", so a model can change decoder and be fine-tuned."""
    from stylejax.generator import upsample_bilinear

    z = jnp.asarray(np.random.default_rng(1).random((2, 5, 7, 3), np.float32))
    np.testing.assert_allclose(np.asarray(upsample_bilinear(z)),
                               np.asarray(jax.image.resize(z, (2, 10, 14, 3), "bilinear")),
                               atol=1e-6)
    ramp = jnp.arange(3.0).reshape(1, 1, 3, 1)
    np.testing.assert_allclose(np.asarray(upsample_bilinear(ramp))[0, 0, :, 0],
                               [0, 0.25, 0.75, 1.25, 1.75, 2])
    shapes = {}
    for mode in ("nearest", "bilinear"):
        cfg = GeneratorConfig(num_styles=2, channels=(8, 16, 32), res_blocks=1, upsample=mode)
        assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
        gen = Generator(cfg, rngs=nnx.Rngs(0))
        shapes[mode] = jax.tree.map(lambda a: a.shape, nnx.state(gen, nnx.Param))
        x = jnp.asarray(np.random.default_rng(0).random((1, 32, 48, 3), np.float32))
        assert float(jnp.abs(gen(x, one_hot_styles(0, 2, 1)) - x).mean()) < 0.1
    assert shapes["nearest"] == shapes["bilinear"]


def test_photo_skip_feeds_the_folded_photo_to_the_first_decoder_conv():
    """The skip's 12 extra input channels read the photo: with only them changed, a change
    to the photo's pixels reaches the result through them (and the config round-trips)."""
    cfg = GeneratorConfig(num_styles=1, channels=(8, 16, 32), res_blocks=1, upsample="bilinear",
                          photo_skip=True)
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in cfg.to_dict().items() if k != "photo_skip"}
    assert GeneratorConfig.from_dict(old).photo_skip is False  # models from before the option
    with pytest.raises(ValueError):
        GeneratorConfig.from_dict({**cfg.to_dict(), "upsample": "shuffle"})
    with pytest.raises(ValueError, match="resize decoder"):
        Generator(GeneratorConfig(upsample="shuffle", photo_skip=True), rngs=nnx.Rngs(0))
    gen = Generator(cfg, rngs=nnx.Rngs(0))
    assert gen.dec1.conv.kernel.shape == (3, 3, 32 + 12, 16)
    x = jnp.asarray(np.random.default_rng(0).random((1, 32, 32, 3), np.float32))
    w = one_hot_styles(0, 1, 1)
    base = np.asarray(gen(x, w))
    kernel = np.array(gen.dec1.conv.kernel[...])
    kernel[:, :, 32:] = 0.0
    gen.dec1.conv.kernel[...] = jnp.asarray(kernel)
    without = np.asarray(gen(x, w))
    assert np.abs(base - without).max() > 1e-3  # the skip's kernels were in use


@pytest.mark.parametrize("taps, upsample, pad", [("bilinear", "bilinear", "edge"),
                                                 ("nearest", "nearest", "reflect")])
def test_phase_kernel_is_upsampling_then_conv(taps: str, upsample: str, pad: str):
    """One low-res conv per output phase (`phase_kernel`, low-res edges repeated) is exactly
    2× upsampling → padding → 3×3 conv: with repeated edges after bilinear, and, for nearest,
    with the reflection the "nearest" decoder uses."""
    from stylejax.generator import (
        BILINEAR_TAPS,
        NEAREST_TAPS,
        depth_to_space,
        phase_kernel,
        upsample_bilinear,
        upsample_nearest,
    )

    rng = np.random.default_rng(4)
    h = jnp.asarray(rng.standard_normal((2, 5, 6, 4)).astype(np.float32))
    kernel = jnp.asarray(rng.standard_normal((3, 3, 4, 3)).astype(np.float32))

    def conv(x, k, mode):
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode=mode)
        return jax.lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    up = {"bilinear": upsample_bilinear, "nearest": upsample_nearest}[upsample]
    table = {"bilinear": BILINEAR_TAPS, "nearest": NEAREST_TAPS}[taps]
    expected = conv(up(h), kernel, pad)
    got = depth_to_space(conv(h, phase_kernel(kernel, table), "edge"))
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5)


def test_bilinear_edge_decoder_is_bilinear_inside_the_picture():
    """"bilinear-edge" has "bilinear"'s parameters and its decoder steps differ from it only
    on the outermost pixels (repeated instead of reflected), so a bilinear model moves to it
    as it is; it takes no photo skip."""
    cfg = GeneratorConfig(num_styles=1, channels=(8, 16, 32), res_blocks=1,
                          upsample="bilinear-edge")
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="resize decoder"):
        GeneratorConfig(upsample="bilinear-edge", photo_skip=True)
    edge = Generator(cfg, rngs=nnx.Rngs(0))
    plain = Generator(GeneratorConfig(num_styles=1, channels=(8, 16, 32), res_blocks=1,
                                      upsample="bilinear"), rngs=nnx.Rngs(0))
    assert (jax.tree.map(lambda a: a.shape, nnx.state(edge, nnx.Param))
            == jax.tree.map(lambda a: a.shape, nnx.state(plain, nnx.Param)))
    nnx.update(edge, nnx.state(plain, nnx.Param))
    h = jnp.asarray(np.random.default_rng(5).standard_normal((1, 6, 8, 32)).astype(np.float32))
    a, b = np.asarray(edge._up(edge.dec1, h)), np.asarray(plain._up(plain.dec1, h))
    np.testing.assert_allclose(a[:, 1:-1, 1:-1], b[:, 1:-1, 1:-1], atol=1e-5)
    assert np.abs(a - b).max() > 1e-3  # the border really differs: the edge is repeated
