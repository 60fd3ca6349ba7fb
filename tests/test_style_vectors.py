"""The any-style serving path (stylejax.style_vectors) and the custom-style choice it makes in
`Stylizer.run_custom`, on a tiny untrained model saved here."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stylejax import style_vectors
from stylejax.anystyle import (
    ENCODER_SIDE,
    AnyStyleConfig,
    AnyStyleModel,
    save_model,
    statistics_size,
)
from stylejax.custom_style import CustomStyleConfig
from stylejax.errors import InvalidRequestError, WeightsError
from stylejax.features import DEFAULT_STYLE_TAPS, load_feature_net
from stylejax.generator import GeneratorConfig
from stylejax.imageio import resize_long_side, to_float, to_uint8
from stylejax.request import StyleRequest
from stylejax.style_vectors import AnyStyle, picture_key
from stylejax.stylizer import Stylizer

TINY_CUSTOM = CustomStyleConfig(size=48, steps=4, scales=(1.0,), scale_steps=(1.0,), jitter=0,
                                min_steps=1, time_budget_s=1e9)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    config = AnyStyleConfig(generator=GeneratorConfig(num_styles=1, channels=(8, 16, 16),
                                                      res_blocks=1), style_dim=8, hidden=16)
    model = AnyStyleModel(config, statistics_size(load_feature_net(), DEFAULT_STYLE_TAPS),
                          rngs=nnx.Rngs(0))
    return save_model(tmp_path_factory.mktemp("anystyle"), model, {"note": "untrained"})


@pytest.fixture(autouse=True)
def env(monkeypatch, model_dir, tmp_path, tmp_path_factory):
    """The model through its environment variable; caches in this test's own folder."""
    monkeypatch.setenv(style_vectors.MODEL_ENV, str(model_dir))
    monkeypatch.setenv(style_vectors.CACHE_ENV, str(tmp_path / "vectors"))
    monkeypatch.setenv("STYLEJAX_JAX_CACHE", str(tmp_path_factory.getbasetemp() / "jax"))


@pytest.fixture()
def encodings(monkeypatch) -> list[int]:
    """Counts the encoder's runs (the real encoder still runs)."""
    calls: list[int] = []
    real = style_vectors.make_encoder

    def counting(model, feature_net, backend="auto"):
        encode = real(model, feature_net, backend)
        return lambda x: (calls.append(1), encode(x))[1]

    monkeypatch.setattr(style_vectors, "make_encoder", counting)
    return calls


@pytest.fixture(scope="module")
def style() -> np.ndarray:
    yy, xx = np.mgrid[0:90, 0:120]
    stripes = np.stack([(np.sin(xx / 3.0 + yy / 4.0) > 0) * 230,
                        (np.sin(yy / 2.5) > 0) * 200, np.full_like(xx, 60)], -1)
    return stripes.astype(np.uint8)


@pytest.fixture(scope="module")
def photo(make_photo) -> np.ndarray:
    return to_uint8(make_photo(192, 256, seed=4, noise=0.03))


def _vector_files(tmp_path):
    return sorted((tmp_path / "vectors").glob("*/*.npy"))


def test_without_a_model_nothing_is_available(monkeypatch, tmp_path):
    monkeypatch.setenv(style_vectors.MODEL_ENV, str(tmp_path / "none"))
    assert not AnyStyle().available() and not style_vectors.installed()
    assert AnyStyle(tmp_path / "also-none").path == tmp_path / "also-none"
    monkeypatch.delenv(style_vectors.MODEL_ENV)
    assert AnyStyle().path == style_vectors.BUNDLED_MODEL


def test_vector_is_the_encoder_output_and_encoded_once(encodings, style, tmp_path):
    any_style = AnyStyle(backend="jax")
    assert any_style.available()
    z = any_style.vector(style)
    assert z.shape == (8,) and z.dtype == np.float32 and len(encodings) == 1
    small = to_float(resize_long_side(style, ENCODER_SIDE))[None]
    direct = any_style.model.encode(load_feature_net(), jnp.asarray(small))
    np.testing.assert_allclose(z, np.asarray(direct)[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(any_style.vector(style.copy()), z)  # same pixels: cached
    assert len(encodings) == 1
    other = any_style.vector(np.ascontiguousarray(style[:, ::-1]))
    assert len(encodings) == 2 and not np.allclose(other, z)
    # one file per picture, in a folder of this model's own
    files = _vector_files(tmp_path)
    assert {f.stem for f in files} == {picture_key(style), picture_key(style[:, ::-1])}
    assert {f.parent.name for f in files} == {any_style.model_id}


def test_the_palette_statistics_are_kept_with_the_vector(encodings, style, monkeypatch):
    """A cached style reads nothing from its picture again: the colour statistics that
    `stylize` moves the result onto come with the vector, computed once."""
    from stylejax.colour import colour_stats

    any_style = AnyStyle(backend="jax")
    entry = any_style.entry(style)
    want = colour_stats(style)
    np.testing.assert_allclose(entry.colours.mean, want.mean)
    np.testing.assert_allclose(entry.colours.cov, want.cov)
    reads = []
    monkeypatch.setattr(style_vectors, "colour_stats",
                        lambda rgb: reads.append(rgb.shape) or colour_stats(rgb))
    assert any_style.entry(style.copy()) is entry and reads == []


def test_a_fresh_instance_reads_the_disk_cache(encodings, style):
    z = AnyStyle(backend="jax").vector(style)
    again = AnyStyle(backend="jax").vector(style)
    assert len(encodings) == 1
    np.testing.assert_array_equal(again, z)


def test_a_damaged_cache_file_is_ignored_and_rewritten(encodings, style, tmp_path):
    z = AnyStyle(backend="jax").vector(style)
    (path,) = _vector_files(tmp_path)
    for damage in (b"not a numpy file", np.zeros(3, np.float32)):
        if isinstance(damage, bytes):
            path.write_bytes(damage)
        else:
            np.save(path, damage)  # a vector of another shape
        encoded = len(encodings)
        np.testing.assert_allclose(AnyStyle(backend="jax").vector(style), z, atol=1e-6)
        assert len(encodings) == encoded + 1
        np.testing.assert_allclose(np.load(path), z, atol=1e-6)  # written again, whole
    assert not list(path.parent.glob("*.tmp"))


def test_model_path_is_the_model_at_the_working_size(photo, style):
    """stroke 2 → working side 512 / 2 = 256, the photo's: no resizing, so the served result is
    the model's own output for z · strength; strength 0 is the zero vector's (identity) style."""
    any_style = AnyStyle(backend="jax")
    z = any_style.vector(style)
    x = jnp.asarray(to_float(photo))[None]
    for strength in (0.6, 0.0):
        request = StyleRequest.create(style_image="mine", strength=strength, stroke=2)
        served = any_style.stylize(request, photo, style)
        direct = to_uint8(np.asarray(any_style.model(x, jnp.asarray(z * strength)[None]))[0])
        assert served.shape == photo.shape
        assert np.abs(served.astype(int) - direct).max() <= 2, strength
    zero = any_style.model(x, jnp.zeros((1, 8)))
    np.testing.assert_allclose(served, to_uint8(np.asarray(zero)[0]), atol=2)


def test_keep_colors_and_mask_apply_on_the_result(photo, style):
    any_style = AnyStyle(backend="jax")
    request = StyleRequest.create(style_image="mine", stroke=2)
    full = any_style.stylize(request, photo, style)
    mask = np.zeros((*photo.shape[:2], 1), np.float32)
    mask[:, 128:] = 1.0
    masked = any_style.stylize(request, photo, style, mask=mask)
    assert np.abs(masked[:, :128].astype(int) - photo[:, :128]).max() <= 1
    assert np.abs(masked[:, 130:].astype(int) - full[:, 130:]).max() <= 1
    kept = any_style.stylize(dataclasses.replace(request, keep_colors=True), photo, style)
    assert np.abs(kept.astype(int) - full).mean() > 0.5


def _spy_optimiser(monkeypatch) -> list[dict]:
    import stylejax.stylizer as stylizer_module

    seen: list[dict] = []
    real = stylizer_module.stylize_with_image

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(stylizer_module, "stylize_with_image", spy)
    return seen


def test_run_custom_uses_the_model_and_refine_optimises_from_it(monkeypatch, photo, style):
    seen = _spy_optimiser(monkeypatch)
    stylizer = Stylizer(backend="jax")
    request = StyleRequest.create(style_image="mine", strength=0.8)
    fast = stylizer.run_custom(request, photo, style, config=TINY_CUSTOM)
    assert fast.steps == 0 and not fast.stopped_early and not seen
    assert fast.image.shape == (36, 48, 3)  # at most config.size, as the optimiser's
    expected = stylizer.anystyle.stylize(request, resize_long_side(photo, 48), style)
    np.testing.assert_array_equal(fast.image, expected)

    refined = stylizer.run_custom(dataclasses.replace(request, refine=True), photo, style,
                                  config=TINY_CUSTOM)
    assert refined.steps > 0 and max(refined.image.shape[:2]) == 48
    (kwargs,) = seen
    start = stylizer.anystyle.stylize(dataclasses.replace(request, strength=1.0),
                                      resize_long_side(photo, 48), style)
    np.testing.assert_array_equal(kwargs["init"], start)  # from the model's full style


def test_run_custom_without_a_model_optimises_as_before(monkeypatch, tmp_path, photo, style):
    monkeypatch.setenv(style_vectors.MODEL_ENV, str(tmp_path / "none"))
    seen = _spy_optimiser(monkeypatch)
    result = Stylizer(backend="jax").run_custom(StyleRequest.create(style_image="mine"),
                                                photo, style, config=TINY_CUSTOM)
    assert result.steps > 0 and seen[0]["init"] is None


# -- the request option ----------------------------------------------------------------------------
def test_refine_round_trips_through_the_job_payload():
    request = StyleRequest.create(style_image="ab" * 32, refine=True, strength=0.5)
    params = request.to_params()
    assert params["refine"] is True
    assert StyleRequest.from_params(params) == request
    plain = StyleRequest.create(style_image="ab" * 32)
    assert "refine" not in plain.to_params()  # default-valued: left out, as room fields
    old = {"style_sha": "ab" * 32, "strength": 1.0, "keep_colors": False, "stroke": 1.0}
    assert StyleRequest.from_params(old).refine is False  # payloads written before it
    assert request.with_changes(strength=1.0).refine is True  # "stronger" keeps it
    assert request.with_changes(style="wave").refine is False  # a pack style never refines
    assert plain.with_changes(refine=True).refine is True
    assert request.batch_key() != plain.batch_key()


def test_refine_on_a_pack_style_is_refused_clearly():
    for choice in ({"style": "wave"}, {"blend": {"wave": 1.0}}):
        with pytest.raises(InvalidRequestError, match="Refine is for your own style picture"):
            StyleRequest.create(**choice, refine=True)


def test_the_models_palette_moves_the_result_onto_the_style_colours(photo, style, tmp_path):
    """A model saved with palette 1 serves results with the style picture's mean colour;
    strength scales the amount; keep-colours leaves the palette alone; 0 is the old path."""
    from stylejax.anystyle import load_model, model_palette
    from stylejax.colour import colour_stats

    plain = AnyStyle(backend="jax")
    assert plain.palette == 0.0
    folder = save_model(tmp_path / "palette", load_model(plain.path), {}, palette=1.0)
    assert model_palette(folder) == 1.0
    painted = AnyStyle(folder, backend="jax")
    request = StyleRequest.create(style_image="mine", stroke=2)
    target = colour_stats(style).mean
    gap = lambda img: np.abs(colour_stats(img).mean - target).max()  # noqa: E731
    base = plain.stylize(request, photo, style)
    full = painted.stylize(request, photo, style)
    half = painted.stylize(dataclasses.replace(request, strength=0.5), photo, style)
    assert gap(full) < 0.03 < gap(base)
    assert gap(full) < gap(half) < gap(base)
    kept = dataclasses.replace(request, keep_colors=True)
    np.testing.assert_array_equal(painted.stylize(kept, photo, style),
                                  plain.stylize(kept, photo, style))
    # the bench's override, and a damaged amount refused clearly
    assert AnyStyle(folder, palette=0.0).stylize(request, photo, style).tolist() == base.tolist()
    meta = folder / "anystyle.json"
    meta.write_text(meta.read_text().replace('"palette": 1.0', '"palette": 7'))
    with pytest.raises(WeightsError, match="palette"):
        model_palette(folder)
    with pytest.raises(ValueError):
        save_model(tmp_path / "bad", load_model(plain.path), {}, palette=1.5)


def test_the_generator_paints_at_the_models_own_working_side(photo, style, tmp_path,
                                                              monkeypatch):
    """`work_side` (anystyle.json): medium strokes at the model's side, other strokes
    relative to it; models saved before the key existed keep the pack's side."""
    from stylejax.anystyle import ANYSTYLE_WORK_SIDE, load_model, model_work_side
    from stylejax.stroke import PACK_WORK_SIDE

    base = AnyStyle(backend="jax")
    assert model_work_side(base.path) == ANYSTYLE_WORK_SIDE
    folder = save_model(tmp_path / "side", load_model(base.path), {}, work_side=160)
    any_style = AnyStyle(folder, backend="jax")
    sides: list[int] = []
    run = any_style.engine.run
    monkeypatch.setattr(any_style.engine, "run",
                        lambda requests, *a, **k: (sides.append(max(requests[0].photo.shape[:2])),
                                                   run(requests, *a, **k))[1])
    medium = any_style.stylize(StyleRequest.create(style_image="mine"), photo, style)
    large = any_style.stylize(StyleRequest.create(style_image="mine", stroke=2), photo, style)
    assert medium.shape == large.shape == photo.shape
    assert sides == [160, 80]
    meta = folder / "anystyle.json"
    meta.write_text(meta.read_text().replace('"work_side": 160,', ""))
    assert model_work_side(folder) == PACK_WORK_SIDE
    meta.write_text(meta.read_text().replace('"palette"', '"work_side": 9, "palette"'))
    with pytest.raises(WeightsError, match="work_side"):
        model_work_side(folder)
    with pytest.raises(ValueError):
        save_model(tmp_path / "bad", load_model(base.path), {}, work_side=10)


@pytest.fixture(scope="module")
def photo_aware_dir(tmp_path_factory):
    """A photo-aware model whose correction really moves the vector (its output layer set)."""
    config = AnyStyleConfig(generator=GeneratorConfig(num_styles=1, channels=(8, 16, 16),
                                                      res_blocks=1), style_dim=8, hidden=16,
                            photo_hidden=12)
    model = AnyStyleModel(config, statistics_size(load_feature_net(), DEFAULT_STYLE_TAPS),
                          rngs=nnx.Rngs(0))
    model.photo.fc2.kernel[...] = jnp.asarray(
        np.random.default_rng(1).normal(0, 0.3, model.photo.fc2.kernel.shape), jnp.float32)
    return save_model(tmp_path_factory.mktemp("photo-aware"), model)


@pytest.mark.parametrize("backend", ["jax", "onnx"])
def test_a_photo_aware_model_caches_the_style_and_reads_each_photo(
        photo_aware_dir, encodings, style, photo, tmp_path, backend):
    """The style's part is encoded once and cached (vector and statistics, on disk too); each
    photo costs one feature-net pass, and its vector is the model's own for that pair."""
    if backend == "onnx":
        pytest.importorskip("onnx")
    any_style = AnyStyle(photo_aware_dir, backend=backend)
    entry = any_style.entry(style)
    assert entry.stats is not None and entry.stats.shape == (any_style.model.stats_dim,)
    (path,) = _vector_files(tmp_path)
    assert np.load(path).shape == (8 + any_style.model.stats_dim,)
    feat = load_feature_net()
    small_style = jnp.asarray(to_float(resize_long_side(style, ENCODER_SIDE)))[None]
    vectors = []
    for p in (photo, np.ascontiguousarray(photo[::-1, ::-1] // 2)):
        got = any_style.photo_vector(entry, p)
        small = jnp.asarray(to_float(resize_long_side(p, ENCODER_SIDE)))[None]
        want = np.asarray(any_style.model.encode(feat, small_style, small))[0]
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
        vectors.append(got)
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-3  # the photo moves the vector
    assert np.abs(vectors[0] - entry.z).max() > 1e-3
    assert len(encodings) == 3  # the style once, each photo once
    # served: the model's output for that photo's vector (stroke 2: the photo's own size)
    request = StyleRequest.create(style_image="mine", stroke=2)
    served = any_style.stylize(request, photo, style)
    direct = any_style.model(jnp.asarray(to_float(photo))[None], jnp.asarray(vectors[0])[None])
    assert np.abs(served.astype(int) - to_uint8(np.asarray(direct)[0])).max() <= 2
    # a fresh instance reads vector and statistics from disk: no encoding of the style
    again = AnyStyle(photo_aware_dir, backend=backend).entry(style)
    np.testing.assert_array_equal(again.stats, entry.stats)
    assert len(encodings) == 4  # only the served photo's pass
