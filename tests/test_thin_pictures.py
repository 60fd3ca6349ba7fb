"""Issue 17, finding 4: very thin pictures (16000×16, 3500×16…) crashed ONNX Runtime ("Pad
reflect requires axis length >= 2"): the generator works at 1/4 resolution, where a side of a
few pixels left less than the 2 pixels a reflection pad needs. The engine now pads such sides
up to `Engine.min_side` and crops back; these tests run the real engine on every path.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from stylejax.cli import main
from stylejax.custom_style import CustomStyleConfig
from stylejax.engine import Engine, Request
from stylejax.imageio import resize_max_side, to_uint8
from stylejax.request import StyleRequest
from stylejax.stylizer import Stylizer

FUZZ = settings(deadline=None, max_examples=15, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
STROKES = (0.25, 0.6, 1.0, 4.0)  # 0.25: a 2,560-px working side, tiled: the crash's path



@pytest.fixture(scope="module")
def pack_dir(two_style_pack):
    return two_style_pack


@pytest.fixture(scope="module")
def stylizer(pack_dir) -> Stylizer:
    return Stylizer(pack_dir, backend="onnx")


@st.composite
def thin_sizes(draw, max_long: int = 4000, max_pixels: int = 24_000) -> tuple[int, int]:
    """(h, w): one side 1..4000, the other so the picture stays small, often extremely thin."""
    long = draw(st.integers(1, max_long))
    short = draw(st.integers(1, max(1, min(long, max_pixels // long))))
    return (long, short) if draw(st.booleans()) else (short, long)


def _photo(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(h * 7919 + w)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def onnx_engine(tiny_generator) -> Engine:
    return Engine(tiny_generator, backend="onnx", tile=256, overlap=32, compilation_cache=False)


@pytest.mark.parametrize("shape", [(4, 900), (1, 1)])
def test_jax_engine_runs_sides_below_its_minimum(tiny_generator, shape):
    engine = Engine(tiny_generator, backend="jax", tile=64, overlap=16, compilation_cache=False)
    photo = _photo(*shape).astype(np.float32) / 255.0
    (out,) = engine.run([Request(photo, engine.style_weights(0))])
    assert out.shape == photo.shape and np.isfinite(out).all()


@FUZZ
@given(size=thin_sizes())
def test_engine_any_size_and_aspect(onnx_engine, size):
    """The engine itself (ONNX Runtime, where it crashed), whole and tiled: every size back,
    finite."""
    photo = _photo(*size).astype(np.float32) / 255.0
    (out,) = onnx_engine.run([Request(photo, onnx_engine.style_weights(1))])
    assert out.shape == photo.shape and np.isfinite(out).all()


@settings(FUZZ, max_examples=6)
@given(size=thin_sizes(), stroke=st.sampled_from(STROKES), capped=st.booleans())
def test_pack_path_any_size_and_aspect(stylizer, size, stroke, capped):
    """Through `Stylizer.run` (what workers and the CLI call): the photo's size back (or the
    documented `max_size` scaling), finite, no exception."""
    h, w = size
    request = StyleRequest.create(style="a", stroke=stroke)
    max_size = 256 if capped else None
    out = stylizer.run(request, _photo(h, w), max_size=max_size)
    expected = resize_max_side(_photo(h, w), max_size).shape if capped else (h, w, 3)
    assert out.shape == expected and out.dtype == np.uint8


@pytest.mark.parametrize("stroke", [0.25, 1.0])
def test_pack_path_the_reported_sizes(stylizer, stroke):
    """16000×16 and 3500×16 as in the report, at the service's max_side."""
    for h, w in [(16, 16000), (3500, 16)]:
        out = stylizer.run(StyleRequest.create(style="b", stroke=stroke), _photo(h, w),
                           max_size=2048)
        assert out.shape == resize_max_side(_photo(h, w), 2048).shape


TINY_CUSTOM = CustomStyleConfig(size=48, steps=3, scales=(1.0,), scale_steps=(1.0,), jitter=0,
                                min_steps=1, time_budget_s=1e9)


def test_custom_style_path_takes_thin_photos_and_styles(stylizer):
    """The optimisation path with a thin photo and a thin style picture."""
    request = StyleRequest.create(style_image="picture")
    result = stylizer.run_custom(request, _photo(16, 3500), _photo(3000, 16), config=TINY_CUSTOM)
    assert result.image.dtype == np.uint8 and result.image.ndim == 3
    assert max(result.image.shape[:2]) <= 48 and np.isfinite(result.image).all()


def test_any_style_model_takes_thin_photos_and_styles(tmp_path, monkeypatch, pack_dir):
    """The any-style model's one pass, with a tiny untrained model."""
    from flax import nnx

    from stylejax import style_vectors
    from stylejax.anystyle import AnyStyleConfig, AnyStyleModel, save_model, statistics_size
    from stylejax.features import DEFAULT_STYLE_TAPS, load_feature_net
    from stylejax.generator import GeneratorConfig

    config = AnyStyleConfig(generator=GeneratorConfig(num_styles=1, channels=(8, 16, 16),
                                                      res_blocks=1), style_dim=8, hidden=16)
    model = AnyStyleModel(config, statistics_size(load_feature_net(), DEFAULT_STYLE_TAPS),
                          rngs=nnx.Rngs(0))
    model_dir = save_model(tmp_path / "anystyle", model, {"note": "untrained"})
    monkeypatch.setenv(style_vectors.CACHE_ENV, str(tmp_path / "vectors"))
    any_style = Stylizer(pack_dir, backend="onnx", anystyle=model_dir)
    assert any_style.anystyle.available()
    for photo_shape, style_shape in [((16, 3500), (3500, 16)), ((3000, 8), (16, 2000))]:
        for stroke in (0.25,):
            request = StyleRequest.create(style_image="picture", stroke=stroke)
            result = any_style.run_custom(request, _photo(*photo_shape), _photo(*style_shape),
                                          config=CustomStyleConfig(size=512))
            expected = resize_max_side(_photo(*photo_shape), 512).shape
            assert result.image.shape == expected and result.steps == 0


@pytest.mark.parametrize("shape, stroke", [((16, 16000), "0.25"), ((3500, 16), "large")])
def test_cli_stylizes_a_thin_picture_without_a_traceback(capsys, tmp_path, pack_dir, shape,
                                                         stroke):
    src, dst = tmp_path / "thin.png", tmp_path / "out.png"
    Image.fromarray(_photo(*shape)).save(src)
    rc = main([str(src), "--pack", str(pack_dir), "--style", "a", "--stroke", stroke,
               "--backend", "onnx", "-o", str(dst), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "Traceback" not in err
    assert Image.open(dst).size == (shape[1], shape[0])


def test_cli_unexpected_failure_is_one_line(capsys, tmp_path, pack_dir, monkeypatch):
    """Whatever goes wrong inside, the command prints one line, not a traceback."""
    src = tmp_path / "photo.png"
    Image.fromarray(to_uint8(_photo(32, 32))).save(src)

    def broken(*_args, **_kwargs):
        raise RuntimeError("INVALID_ARGUMENT : Non-zero status code returned while running Pad")

    monkeypatch.setattr(Stylizer, "run", broken)
    rc = main([str(src), "--pack", str(pack_dir), "--style", "a", "-o",
               str(tmp_path / "o.png"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stylize: error: "), err
    assert "Traceback" not in err
