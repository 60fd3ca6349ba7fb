"""The ONNX export computes the same function as the JAX generator, with the same weights.

Every weight is perturbed away from its initialisation first: ICNR makes the decoder's sub-pixel
filters identical and biases start at zero, which would hide a wrong channel order.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from flax import nnx

from stylejax.generator import Generator, GeneratorConfig
from stylejax.onnx_export import OnnxGenerator, export_generator_onnx

STYLE_W = np.array([[1.0, 0.0, 0.0], [0.3, 0.7, 0.0]], np.float32)


def _perturbed_generator(decoder: str = "shuffle") -> Generator:
    """`decoder`: an upsampling mode, "+skip" for the decoder's photo skip."""
    upsample, _, skip = decoder.partition("+")
    cfg = GeneratorConfig(num_styles=3, upsample=upsample, photo_skip=skip == "skip")
    gen = Generator(cfg, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(42)  # numpy: one XLA compile per distinct shape would be slow
    for _path, param in nnx.iter_graph(gen):
        if isinstance(param, nnx.Param):
            value = np.asarray(param[...])
            scale = 0.5 if value.ndim == 2 else 0.05  # CIN tables strongly, convolutions mildly
            param[...] = jnp.asarray(value + scale * rng.standard_normal(value.shape, np.float32))
    return gen


@pytest.fixture(scope="module", params=["shuffle", "nearest", "bilinear", "bilinear+skip",
                                              "bilinear-edge"])
def gen(request) -> Generator:
    """Both decoder kinds: depth-to-space (DepthToSpace) and resize-conv (Resize), the latter
    also with the photo joining the first decoder conv (Concat) and computed per output phase
    at low res (edge Pad → Conv → DepthToSpace)."""
    return _perturbed_generator(request.param)


@pytest.fixture(scope="module")
def onnx_gen(gen: Generator) -> OnnxGenerator:
    return OnnxGenerator.from_generator(gen)


def test_styles_really_differ(gen: Generator):
    x = jnp.asarray(np.random.default_rng(0).random((1, 32, 32, 3), np.float32))
    ys = [np.asarray(gen(x, jnp.asarray(np.eye(3, dtype=np.float32)[i:i + 1]))) for i in range(3)]
    assert np.abs(ys[0] - ys[1]).max() > 0.05 and np.abs(ys[1] - ys[2]).max() > 0.05


@pytest.mark.parametrize("external", [False, True])
def test_onnx_checker_and_io(gen: Generator, external: bool):
    model = onnx.load_from_string(export_generator_onnx(gen, external_stats=external))
    onnx.checker.check_model(model, full_check=True)
    n = len(gen.norm_layers())
    stat_names = [f"{k}_{i}" for i in range(n) for k in ("mean", "var")]
    inputs = [v.name for v in model.graph.input]
    outputs = [v.name for v in model.graph.output]
    assert inputs == ["photo", "style_w"] + (stat_names if external else [])
    assert outputs == ["styled"] + ([] if external else stat_names)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", "H", "W", 3]


@pytest.mark.parametrize("hw", [(64, 64), (96, 128), (36, 44)])
def test_onnx_matches_jax(gen: Generator, onnx_gen: OnnxGenerator, hw: tuple[int, int]):
    x = np.random.default_rng(hw[1]).random((2, *hw, 3), np.float32)
    y_jax, stats_jax = gen(jnp.asarray(x), jnp.asarray(STYLE_W), return_stats=True)
    y_onnx, stats_onnx = onnx_gen(x, STYLE_W, return_stats=True)

    assert y_onnx.shape == (2, *hw, 3) and y_onnx.dtype == np.float32
    np.testing.assert_allclose(y_onnx, np.asarray(y_jax), atol=1e-4, rtol=0)
    assert np.abs(y_onnx[0] - y_onnx[1]).max() > 0.05  # the two style rows gave two pictures
    assert not isinstance(onnx_gen(x, STYLE_W), tuple)

    assert len(stats_onnx) == len(stats_jax) == len(gen.norm_layers())
    for (m_o, v_o), (m_j, v_j) in zip(stats_onnx, stats_jax, strict=True):
        assert m_o.shape == m_j.shape and v_o.shape == v_j.shape
        np.testing.assert_allclose(m_o, np.asarray(m_j), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(v_o, np.asarray(v_j), atol=1e-4, rtol=1e-4)

    # External statistics (e.g. another photo's, as when tiling): both backends use them as given.
    other = np.random.default_rng(7).random((2, *hw, 3), np.float32)
    _, stats_other = gen(jnp.asarray(other), jnp.asarray(STYLE_W), return_stats=True)
    y_jax_ext = gen(jnp.asarray(x), jnp.asarray(STYLE_W), stats=stats_other)
    stats_np = [(np.asarray(m), np.asarray(v)) for m, v in stats_other]
    y_onnx_ext, returned = onnx_gen(x, STYLE_W, stats=stats_np, return_stats=True)
    np.testing.assert_allclose(y_onnx_ext, np.asarray(y_jax_ext), atol=1e-4, rtol=0)
    assert np.abs(y_onnx_ext - y_onnx).max() > 1e-3  # the given statistics were really used
    for (m_r, v_r), (m, v) in zip(returned, stats_np, strict=True):
        np.testing.assert_array_equal(m_r, m)
        np.testing.assert_array_equal(v_r, v)

    # Own statistics fed back in reproduce the plain run.
    y_roundtrip = onnx_gen(x, STYLE_W, stats=stats_onnx)
    np.testing.assert_allclose(y_roundtrip, y_onnx, atol=1e-5, rtol=0)


def test_external_stats_broadcast_over_tiles(gen: Generator, onnx_gen: OnnxGenerator):
    """One photo's statistics (batch 1) applied to a batch of tiles, as JAX broadcasting does."""
    tiles = np.random.default_rng(3).random((2, 32, 32, 3), np.float32)
    whole = np.random.default_rng(4).random((1, 64, 64, 3), np.float32)
    w = np.repeat(STYLE_W[1:], 2, axis=0)
    _, stats = gen(jnp.asarray(whole), jnp.asarray(w[:1]), return_stats=True)
    y_jax = gen(jnp.asarray(tiles), jnp.asarray(w), stats=stats)
    y_onnx = onnx_gen(tiles, w, stats=[(np.asarray(m), np.asarray(v)) for m, v in stats])
    np.testing.assert_allclose(y_onnx, np.asarray(y_jax), atol=1e-4, rtol=0)


def test_opset_18_also_matches(gen: Generator):
    """ReduceMean's axes move from attribute to input at opset 18; both spellings must agree."""
    x = np.random.default_rng(5).random((2, 32, 48, 3), np.float32)
    y = OnnxGenerator.from_generator(gen, opset=18)(x, STYLE_W)
    np.testing.assert_allclose(y, np.asarray(gen(jnp.asarray(x), jnp.asarray(STYLE_W))),
                               atol=1e-4, rtol=0)


def test_rejects_bad_shapes(onnx_gen: OnnxGenerator):
    with pytest.raises(ValueError, match="multiples of 4"):
        onnx_gen(np.zeros((1, 30, 32, 3), np.float32), STYLE_W[:1])
    with pytest.raises(ValueError, match="pairs"):
        onnx_gen(np.zeros((1, 32, 32, 3), np.float32), STYLE_W[:1], stats=[])


@pytest.mark.parametrize("decoder, resizes, unfolds", [
    ("shuffle", 0, 1), ("nearest", 0, 1), ("bilinear-edge", 0, 1), ("bilinear", 2, 0),
    ("bilinear+skip", 2, 0)])
def test_full_res_end_runs_on_phases(decoder: str, resizes: int, unfolds: int):
    """Where the decoder's stages have phases, no Resize runs and only the first stage is
    unfolded (a 0/1 ConvTranspose; no DepthToSpace at all); nothing but the output is
    full-res: the conv to RGB gives 12 channels (2×2 phases × RGB)."""
    model = onnx.load_from_string(export_generator_onnx(_perturbed_generator(decoder)))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Resize") == resizes and ops.count("ConvTranspose") == unfolds
    assert ops.count("DepthToSpace") == 0
    weights = {t.name: t.dims for t in model.graph.initializer}
    last_conv = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    assert weights[last_conv.input[1]][0] == (3 if decoder.startswith("bilinear") and
                                              decoder != "bilinear-edge" else 12)


def test_subpixel_kernel_is_the_full_res_conv_with_reflection():
    """A 3×3 conv with reflected borders on a depth-to-space'd tensor equals the 3×3 conv of
    `subpixel_kernel` on the phases with repeated edges, followed by depth-to-space."""
    import jax

    from stylejax.generator import depth_to_space
    from stylejax.onnx_export import subpixel_kernel

    rng = np.random.default_rng(3)
    phases = rng.standard_normal((1, 5, 7, 4 * 3)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 3, 2)).astype(np.float32)

    def conv(x, k, mode):
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode=mode)
        return jax.lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    full = conv(depth_to_space(jnp.asarray(phases)), jnp.asarray(kernel), "reflect")
    low = depth_to_space(conv(jnp.asarray(phases), jnp.asarray(subpixel_kernel(kernel)), "edge"))
    np.testing.assert_allclose(np.asarray(low), np.asarray(full), atol=1e-5)
