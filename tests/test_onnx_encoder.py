"""The ONNX style encoder computes the same style vector and statistics as the JAX model.

The encoder's weights are perturbed away from their initialisation first (LayerNorm starts as
scale 1, bias 0, which would hide a swapped scale and bias), and the style head is made strong
enough that the style vector visibly changes the picture in the end-to-end test.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from flax import nnx

from stylejax.anystyle import (
    AnyStyleConfig,
    AnyStyleModel,
    as_generator,
    statistics_size,
    style_row,
    style_statistics,
)
from stylejax.features import load_feature_net
from stylejax.generator import GeneratorConfig
from stylejax.onnx_encoder import OnnxStyleEncoder, build_encoder_onnx, export_encoder
from stylejax.onnx_export import OnnxGenerator

SIZES = [(96, 128), (256, 192)]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(scope="module")
def feature_net():
    return load_feature_net()


@pytest.fixture(scope="module")
def model(feature_net) -> AnyStyleModel:
    cfg = AnyStyleConfig(generator=GeneratorConfig(num_styles=1, channels=(8, 16, 16),
                                                   res_blocks=1), style_dim=8, hidden=16)
    m = AnyStyleModel(cfg, statistics_size(feature_net, cfg.taps), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(7)
    for module, scale in ((m.encoder, 0.1), (m.head, 0.5)):
        for _path, param in nnx.iter_graph(module):
            if isinstance(param, nnx.Param):
                value = np.asarray(param[...])
                param[...] = jnp.asarray(value + scale * rng.standard_normal(value.shape,
                                                                             np.float32))
    return m


@pytest.fixture(scope="module")
def encoder(model, feature_net) -> OnnxStyleEncoder:
    return OnnxStyleEncoder(model, feature_net, threads=2)


def _picture(hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, *hw, 3), np.float32)


@pytest.mark.parametrize("hw", SIZES)
def test_style_vector_matches_jax(model, feature_net, encoder, hw):
    x = _picture(hw)
    z_jax = np.asarray(model.encode(feature_net, jnp.asarray(x)))
    z_onnx = encoder(x)
    assert z_onnx.shape == (1, model.config.style_dim)
    assert _rel(z_onnx, z_jax) < 1e-4


@pytest.mark.parametrize("hw", SIZES)
def test_statistics_match_jax_tap_by_tap(model, feature_net, encoder, hw):
    x = _picture(hw, seed=1)
    taps = model.config.taps
    feats = feature_net.features(jnp.asarray(x), taps)
    s_jax = np.asarray(style_statistics(feats, taps))
    s_onnx = encoder.statistics(x)
    assert s_onnx.shape == s_jax.shape == (1, model.stats_dim)
    at = 0
    for tap in taps:  # each tap's [mean, std] block on its own scale
        c = int(feats[tap].shape[-1])
        for part in ("mean", "std"):
            got, want = s_onnx[:, at:at + c], s_jax[:, at:at + c]
            assert _rel(got, want) < 1e-4, f"{tap} {part}"
            at += c
    assert at == model.stats_dim


def test_exported_file_passes_checker(model, feature_net, tmp_path):
    path = export_encoder(model, feature_net, tmp_path / "encoder.onnx")
    loaded = onnx.load(str(path))
    onnx.checker.check_model(loaded)
    assert [o.name for o in loaded.graph.output] == ["z", "stats"]
    dims = [d.dim_param or d.dim_value for d in loaded.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", "H", "W", 3]
    assert build_encoder_onnx(model, feature_net).opset_import[0].version >= 17


def test_rejects_a_wrong_layout(encoder):
    with pytest.raises(ValueError):
        encoder(np.zeros((1, 3, 64, 64), np.float32))


def test_whole_path_matches_jax(model, feature_net, encoder):
    """ONNX encoder → style_row → ONNX generator of as_generator(model) = model(photo, z)."""
    style = _picture((128, 96), seed=2)
    photo = _picture((64, 96), seed=3)
    z_jax = model.encode(feature_net, jnp.asarray(style))
    want = np.asarray(model(jnp.asarray(photo), z_jax))
    plain = np.asarray(model(jnp.asarray(photo), jnp.zeros_like(z_jax)))
    assert np.abs(want - plain).max() > 1e-2  # the style vector really matters here

    gen = OnnxGenerator.from_generator(as_generator(model), threads=2)
    got = gen(photo, style_row(encoder(style)))
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 2e-3

