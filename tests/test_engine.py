"""Engine: shape buckets, crops, batches and seamless tiles, on the JAX and ONNX backends."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from stylejax.engine import (
    BUCKETS,
    Engine,
    Request,
    _tile_starts,
    bucket_size,
    pad_to,
)


def _onnx_available() -> bool:
    try:
        from stylejax.onnx_export import OnnxGenerator  # noqa: F401
    except Exception:
        return False
    return True


BACKENDS = [
    "jax",
    pytest.param("onnx", marks=pytest.mark.skipif(not _onnx_available(),
                                                  reason="stylejax.onnx_export not importable")),
]


@pytest.fixture(scope="module", params=BACKENDS)
def backend_name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def engine(tiny_generator, backend_name) -> Engine:
    return Engine(tiny_generator, backend=backend_name, compilation_cache=False)


@pytest.fixture(scope="module")
def tiled_engine(tiny_generator, backend_name) -> Engine:
    return Engine(tiny_generator, backend=backend_name, tile=128, overlap=32,
                  compilation_cache=False)


def _direct(gen, photo: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The generator itself on one photo (no engine)."""
    return np.asarray(gen(jnp.asarray(photo[None]), jnp.asarray(w[None])))[0]


# -- buckets -------------------------------------------------------------------------------------


def test_bucket_size():
    assert [bucket_size(n) for n in (1, 100, 128, 129, 192, 193, 1000, 1024)] == [
        128, 128, 128, 192, 192, 256, 1024, 1024]
    # Beyond the largest bucket: the next multiple.
    assert bucket_size(1025) == 1028 and bucket_size(1028) == 1028 and bucket_size(1030) == 1032
    assert bucket_size(97, (64, 96), multiple=8) == 104
    assert bucket_size(65, (64, 96)) == 96
    assert all(b % 4 == 0 for b in BUCKETS)


def test_pad_to_reflects_at_bottom_right():
    x = np.arange(2 * 5 * 6 * 1, dtype=np.float32).reshape(2, 5, 6, 1)
    p = pad_to(x, 8, 8)
    assert p.shape == (2, 8, 8, 1)
    np.testing.assert_array_equal(p[:, :5, :6], x)           # top-left is the photo
    np.testing.assert_array_equal(p[:, 5, :6], x[:, 3])       # reflection, not edge
    np.testing.assert_array_equal(p[:, :5, 6], x[:, :, 4])
    assert pad_to(x, 5, 6) is x
    small = pad_to(x[:, :2, :2], 8, 8)                        # too small to reflect: edge
    np.testing.assert_array_equal(small[:, 7, 7], x[:, 1, 1])


def test_photos_of_one_bucket_share_one_compiled_shape(engine, make_photo):
    if engine != "jax" if isinstance(engine, str) else not engine.masked:
        pytest.skip("ONNX Runtime runs every shape as it is: no buckets to share")
    sizes = [(100, 120), (120, 128), (97, 101)]
    assert {(bucket_size(h), bucket_size(w)) for h, w in sizes} == {(128, 128)}
    w = engine.style_weights(0)
    before = set(engine.shapes_seen)
    for i, (h, wd) in enumerate(sizes):
        (out,) = engine.run([Request(make_photo(h, wd, seed=i), w)])
        assert out.shape == (h, wd, 3) and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
    assert (1, 128, 128) in engine.shapes_seen
    assert engine.shapes_seen - before <= {(1, 128, 128)}


def test_brief_sizes_share_a_bucket_with_larger_buckets(tiny_generator, backend_name, make_photo):
    """100×130, 120×128 and 97×101 share one bucket only if it is ≥ 130: with the default
    buckets 130 goes to 192, so the three need two shapes; with buckets (192, 256) they need one."""
    if backend_name != "jax" if isinstance(backend_name, str) else not backend_name.masked:
        pytest.skip("ONNX Runtime runs every shape as it is: no buckets to share")
    assert bucket_size(130) == 192
    eng = Engine(tiny_generator, backend=backend_name, buckets=(192, 256),
                 compilation_cache=False)
    w = eng.style_weights(1)
    for i, (h, wd) in enumerate([(100, 130), (120, 128), (97, 101)]):
        (out,) = eng.run([Request(make_photo(h, wd, seed=i), w)])
        assert out.shape == (h, wd, 3)
    assert eng.shapes_seen == {(1, 192, 192)}


def test_unpadded_photo_equals_generator(engine, tiny_generator, make_photo):
    photo = make_photo(128, 128, seed=4, noise=0.03)
    for style in (0, 1):
        w = engine.style_weights(style)
        (out,) = engine.run([Request(photo, w)])
        np.testing.assert_allclose(out, _direct(tiny_generator, photo, w), atol=1e-5)


def test_padded_photo_is_the_top_left_crop(engine, tiny_generator, make_photo):
    """JAX: a 100×120 photo runs reflect-padded to its 128×128 bucket with the padding masked
    out of the norm statistics; ONNX Runtime takes the photo as it is (any multiple of 4)."""
    photo = make_photo(100, 120, seed=5, noise=0.03)
    w = engine.style_weights(1)
    (out,) = engine.run([Request(photo, w)])
    if engine.masked:
        padded = pad_to(photo[None], 128, 128)
        valid = np.zeros((1, 128, 128, 1), np.float32)
        valid[:, :100, :120] = 1.0
        direct = np.asarray(tiny_generator(jnp.asarray(padded), jnp.asarray(w[None]),
                                           valid=jnp.asarray(valid)))[0, :100, :120]
        np.testing.assert_allclose(out, direct, atol=1e-5)
    else:
        np.testing.assert_allclose(out, _direct(tiny_generator, photo, w), atol=1e-5)


def test_masked_statistics_ignore_the_padding(tiny_generator, make_photo):
    """The padding a bucket adds must not change the photo's instance-norm statistics."""
    photo = make_photo(64, 96, seed=8, noise=0.03)
    w = np.asarray([0.0, 1.0], np.float32)
    _, own = tiny_generator(jnp.asarray(photo[None]), jnp.asarray(w[None]), return_stats=True)
    padded = pad_to(photo[None], 128, 128)
    valid = np.zeros((1, 128, 128, 1), np.float32)
    valid[:, :64, :96] = 1.0
    _, masked = tiny_generator(jnp.asarray(padded), jnp.asarray(w[None]), return_stats=True,
                               valid=jnp.asarray(valid))
    _, naive = tiny_generator(jnp.asarray(padded), jnp.asarray(w[None]), return_stats=True)
    mean_err = [float(jnp.abs(a[0] - b[0]).mean()) for a, b in zip(own, masked)]
    naive_err = [float(jnp.abs(a[0] - b[0]).mean()) for a, b in zip(own, naive)]
    assert mean_err[0] < 0.25 * naive_err[0]   # first layer: exact up to conv borders
    assert sum(mean_err) < sum(naive_err)


def test_batch_equals_one_by_one(engine, make_photo):
    if engine != "jax" if isinstance(engine, str) else not engine.masked:
        pytest.skip("ONNX Runtime runs every shape as it is: no buckets to share")
    r1 = Request(make_photo(128, 100, seed=6), engine.style_weights(0))
    r2 = Request(make_photo(112, 128, seed=7), engine.style_weights(1))
    together = engine.run([r1, r2])
    assert (2, 128, 128) in engine.shapes_seen
    alone = [engine.run([r1])[0], engine.run([r2])[0]]
    assert [o.shape for o in together] == [(128, 100, 3), (112, 128, 3)]
    for t, a in zip(together, alone):
        np.testing.assert_allclose(t, a, atol=1e-5)
    assert np.abs(together[0][:100, :100] - together[1][:100, :100]).mean() > 0.01


def test_mixed_buckets_keep_request_order(engine, make_photo):
    """Requests are grouped by bucket (3 → batch of 4) but come back in the order given."""
    if engine != "jax" if isinstance(engine, str) else not engine.masked:
        pytest.skip("ONNX Runtime runs every shape as it is: no buckets to share")
    reqs = [Request(make_photo(120, 120, seed=8), engine.style_weights(0)),
            Request(make_photo(64, 180, seed=9), engine.style_weights(1)),
            Request(make_photo(100, 100, seed=10), engine.style_weights(1)),
            Request(make_photo(80, 96, seed=11), engine.style_weights(0))]
    outs = engine.run(reqs)
    assert [o.shape[:2] for o in outs] == [r.photo.shape[:2] for r in reqs]
    assert (4, 128, 128) in engine.shapes_seen  # three small ones, padded to a batch of four
    for r, o in zip(reqs, outs):
        np.testing.assert_allclose(o, engine.run([r])[0], atol=1e-5)


@pytest.fixture(scope="module")
def jax_engine(tiny_generator) -> Engine:
    return Engine(tiny_generator, backend="jax", compilation_cache=False)


def test_style_weights(jax_engine):
    engine = jax_engine
    np.testing.assert_array_equal(engine.style_weights(1), [0.0, 1.0])
    np.testing.assert_allclose(engine.style_weights([1, 3]), [0.25, 0.75])
    for bad in ([1.0], [-1.0, 2.0], [0.0, 0.0], [1.0, 1.0, 1.0]):
        with pytest.raises(ValueError):
            engine.style_weights(bad)


def test_style_weights_refuse_non_finite(jax_engine):
    for bad in ([float("nan"), 1.0], [float("inf"), 1.0]):
        with pytest.raises(ValueError):
            jax_engine.style_weights(bad)


def test_unknown_backend(tiny_generator):
    with pytest.raises(ValueError, match="backend"):
        Engine(tiny_generator, backend="tpu-magic", compilation_cache=False)


# -- tiles ---------------------------------------------------------------------------------------


def test_tile_starts_cover_the_photo():
    assert _tile_starts(100, 128, 32) == [0]
    starts = _tile_starts(300, 128, 32)
    assert starts == [0, 96, 172]
    covered = np.zeros(300, bool)
    for s in starts:
        covered[s : s + 128] = True
    assert covered.all()


@pytest.fixture(scope="module")
def tiled_case(tiled_engine, make_photo):
    """A 96×300 photo tiled (tile 128, overlap 32) and the whole photo with the same stats."""
    eng = tiled_engine
    photo = make_photo(96, 300, seed=1)
    w = eng.style_weights(0)
    fractions: list[float] = []
    (tiled,) = eng.run([Request(photo, w)], progress=fractions.append)
    stats = eng.whole_photo_stats(photo, w)
    whole = eng.backend(photo[None], w[None], stats=stats)[0]
    return photo, w, stats, tiled, whole, fractions


def test_tiled_run_uses_one_shape_and_reports_progress(tiled_engine, tiled_case):
    if tiled_engine != "jax" if isinstance(tiled_engine, str) else not tiled_engine.masked:
        pytest.skip("ONNX Runtime runs every shape as it is: no buckets to share")
    photo, _, _, tiled, _, fractions = tiled_case
    assert tiled.shape == photo.shape
    assert fractions == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert tiled_engine.shapes_seen == {(1, 128, 128)}


def test_tiled_close_to_whole_photo_with_same_stats(tiled_case):
    _, _, _, tiled, whole, _ = tiled_case
    assert np.abs(tiled - whole).mean() < 0.02
    # Away from the bottom rows (where the tiles' bucket padding differs from the whole run's
    # border handling) the agreement is much tighter.
    assert np.abs(tiled[:64] - whole[:64]).mean() < 0.01


def _boundary_columns() -> list[int]:
    starts = _tile_starts(300, 128, 32)
    return sorted({s for s in starts if s > 0} | {s + 128 for s in starts if s + 128 < 300})


def _seam_ratio(grad: np.ndarray, cols: list[int]) -> float:
    """Mean |Δx| across the boundary columns over the mean |Δx| everywhere else."""
    idx = [c - 1 for c in cols]  # grad[j] = |x[j+1] − x[j]|: the step into column c
    return float(grad[idx].mean() / np.delete(grad, idx).mean())


def test_no_seams_between_tiles(tiled_engine, tiled_case):
    photo, w, stats, tiled, whole, _ = tiled_case
    cols = _boundary_columns()
    assert cols == [96, 128, 172, 224]
    grad = np.abs(np.diff(tiled, axis=1)).mean(axis=(0, 2))
    assert _seam_ratio(grad, cols) < 1.5
    # More sensitive: steps in the residual against the whole-photo run (image content removed).
    resid = np.abs(np.diff(tiled - whole, axis=1)).mean(axis=(0, 2))
    assert _seam_ratio(resid, cols) < 1.5
    # The residual measure does catch seams: hard-joined tiles (no feathering) fail it.
    hard = np.zeros_like(photo)
    for a, b in [(0, 96), (96, 172), (172, 300)]:
        crop = pad_to(photo[None, :, a:b], 128, 128)
        hard[:, a:b] = tiled_engine.backend(crop, w[None], stats=stats)[0][:96, : b - a]
    hard_resid = np.abs(np.diff(hard - whole, axis=1)).mean(axis=(0, 2))
    assert _seam_ratio(hard_resid, [96, 172]) > 2.0


def test_tiles_share_whole_photo_statistics(tiled_engine, tiled_case):
    """The whole-photo stats are not some tile's own: using a tile's own stats changes it."""
    if tiled_engine != "jax" if isinstance(tiled_engine, str) else not tiled_engine.masked:
        pytest.skip("ONNX Runtime runs every shape as it is: no buckets to share")
    photo, w, stats, tiled, _, _ = tiled_case
    crop = photo[:, 172:300]
    own = tiled_engine.backend(pad_to(crop[None], 128, 128), w[None])[0][:96]
    shared = tiled_engine.backend(pad_to(crop[None], 128, 128), w[None], stats=stats)[0][:96]
    assert np.abs(own - shared).mean() > 0.005
    # The last 76 columns come from that tile alone (the earlier tile ends at 224).
    np.testing.assert_allclose(tiled[:, 224:], shared[:, 52:], atol=1e-5)
