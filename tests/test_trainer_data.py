"""trainer.data: photo cache, crops, deterministic prefetched stream, style pictures.

Every picture is generated here in tmp_path; nothing depends on ../shared or the network.
"""

from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.data import ContentStream, PhotoFolder, StyleImages, random_crop_batch


def _gradient(w: int, h: int, seed: int = 0) -> np.ndarray:
    """Smooth, asymmetric picture (survives JPEG; mirrored differs from the original)."""
    y, x = np.mgrid[0:h, 0:w]
    r = x * 255 // max(1, w - 1)
    g = y * 255 // max(1, h - 1)
    b = (x * 3 + y * 7 + seed * 40) % 256
    return np.stack([r, g, b], 2).astype(np.uint8)


def _write(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    root = tmp_path / "content"
    _write(root / "a.png", _gradient(120, 60, 0))
    _write(root / "b.jpg", _gradient(50, 90, 1))
    _write(root / "sub" / "c.webp", _gradient(40, 30, 2))  # smaller than cache_side: kept as is
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)  # truncated JPEG
    (root / "notes.png").write_text("this is not a picture\n")  # text behind a photo extension
    (root / "README.txt").write_text("ignored: not a photo extension\n")
    return root


@pytest.fixture
def folder(photo_dir: Path) -> PhotoFolder:
    return PhotoFolder(photo_dir, cache_side=48)


@pytest.fixture
def styles(tmp_path: Path) -> StyleImages:
    d = tmp_path / "style"
    paths = [
        _write(d / "s0.png", _gradient(120, 80, 3)),
        _write(d / "s1.jpg", _gradient(60, 90, 4)),
        _write(d / "s2.png", _gradient(20, 20, 5)),  # smaller than the patch size: upsampled
    ]
    return StyleImages(paths, side=64)


# --------------------------------------------------------------------------- PhotoFolder


def test_folder_skips_broken_and_text_files(photo_dir: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="trainer.data"):
        f = PhotoFolder(photo_dir, cache_side=48)
    assert len(f) == 3
    kept = [p.relative_to(photo_dir).as_posix() for p in f.paths]
    assert kept == ["a.png", "b.jpg", "sub/c.webp"]  # sorted, recursive
    assert sorted(p.name for p, _ in f.skipped) == ["broken.jpg", "notes.png"]
    assert all(reason for _, reason in f.skipped)
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "broken.jpg" in warned and "notes.png" in warned
    assert "README.txt" not in warned


def test_folder_downsizes_short_side_without_upscaling(folder: PhotoFolder):
    shapes = [im.shape for im in folder.images]
    assert shapes == [(48, 96, 3), (86, 48, 3), (30, 40, 3)]  # (60,120)->(48,96); c unchanged
    assert all(im.dtype == np.uint8 for im in folder.images)


def test_folder_empty_or_all_broken_raises(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no usable photo"):
        PhotoFolder(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_text("nope")
    with pytest.raises(ValueError, match="no usable photo"):
        PhotoFolder(bad)
    with pytest.raises(FileNotFoundError):
        PhotoFolder(tmp_path / "missing")


# --------------------------------------------------------------------------- crops


def test_random_crop_batch_shape_dtype_range(folder: PhotoFolder):
    out = random_crop_batch(folder.images, np.random.default_rng(0), 6, 32)
    assert out.shape == (6, 32, 32, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.std() > 0.05  # real pixels, not a constant fill


def test_random_crop_batch_flips(tmp_path: Path):
    img = _gradient(32, 32)  # square + scale 1: every crop is the whole image
    kw = {"scale": (1.0, 1.0)}
    plain = random_crop_batch([img], np.random.default_rng(7), 40, 32, flip=False, **kw)
    flipped = random_crop_batch([img], np.random.default_rng(7), 40, 32, flip=True, **kw)
    ref = img.astype(np.float32) / 255.0
    assert all(np.allclose(p, ref, atol=1e-6) for p in plain)
    same = [np.array_equal(f, p) for f, p in zip(flipped, plain)]
    mirrored = [np.array_equal(f, p[:, ::-1]) for f, p in zip(flipped, plain)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert any(mirrored) and any(same)


# --------------------------------------------------------------------------- ContentStream


def _stream(folder: PhotoFolder, seed: int = 1, **kw) -> ContentStream:
    base = {"batch": 3, "size": 24, "seed": seed, "num_styles": 3}
    return ContentStream(folder, **{**base, **kw})


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_batch_at_is_pure_function_of_seed_and_step(folder: PhotoFolder, styles: StyleImages):
    s1, s2 = _stream(folder, styles=styles), _stream(folder, styles=styles)
    b = s1.batch_at(4)
    assert set(b) == {"content", "style_ids", "style_patches"}
    assert b["content"].shape == (3, 24, 24, 3) and b["content"].dtype == np.float32
    assert b["style_ids"].shape == (3,) and b["style_ids"].dtype == np.int32
    assert b["style_patches"].shape == (3, 24, 24, 3)
    s2.batch_at(9)  # order of calls does not matter
    assert _equal(b, s2.batch_at(4))
    assert not _equal(b, s1.batch_at(5))
    assert not _equal(b, _stream(folder, seed=2, styles=styles).batch_at(4))


def test_style_ids_cover_all_styles(folder: PhotoFolder):
    s = _stream(folder, batch=8, size=8, num_styles=5)
    ids = np.concatenate([s.batch_at(i)["style_ids"] for i in range(40)])  # 320 draws
    assert set(ids.tolist()) == set(range(5))


def test_iterate_matches_batch_at_and_closes_thread(folder: PhotoFolder):
    s = _stream(folder)
    before = threading.active_count()
    it = s.iterate(start_step=5)
    step, b = next(it)
    assert step == 5 and _equal(b, s.batch_at(5))
    assert next(it)[0] == 6 and it.next_step == 7
    thread = it.thread
    assert thread is not None and thread.daemon and thread.is_alive()
    it.close()
    assert not thread.is_alive()
    assert threading.active_count() == before
    with pytest.raises(StopIteration):
        next(it)
    it.close()  # idempotent


def test_iterate_context_manager_and_stop_step(folder: PhotoFolder):
    s = _stream(folder, prefetch=1)
    with s.iterate(3) as it:
        for step, _ in it:
            if step == 4:
                break
        thread = it.thread
    assert thread is not None and not thread.is_alive()
    with s.iterate(3, stop_step=6) as it:
        assert [step for step, _ in it] == [3, 4, 5]
    assert not it.thread.is_alive()


def test_dropped_iterator_stops_its_thread(folder: PhotoFolder):
    it = _stream(folder).iterate(0)
    next(it)
    thread = it.thread
    del it
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()


def test_iterate_without_prefetch_thread(folder: PhotoFolder):
    s = _stream(folder, prefetch=0)
    with s.iterate(2, stop_step=4) as it:
        assert it.thread is None
        got = list(it)
    assert [st for st, _ in got] == [2, 3] and _equal(got[0][1], s.batch_at(2))


def test_error_in_batch_reaches_consumer(folder: PhotoFolder, monkeypatch: pytest.MonkeyPatch):
    s = _stream(folder)
    real = s.batch_at

    def failing(step: int) -> dict:
        if step == 2:
            raise RuntimeError("boom at 2")
        return real(step)

    monkeypatch.setattr(s, "batch_at", failing)
    it = s.iterate(0)
    assert [next(it)[0], next(it)[0]] == [0, 1]
    with pytest.raises(RuntimeError, match="boom at 2"):
        next(it)
    assert not it.thread.is_alive()


def test_stream_checks_num_styles_against_styles(folder: PhotoFolder, styles: StyleImages):
    with pytest.raises(ValueError, match="num_styles"):
        _stream(folder, num_styles=2, styles=styles)


# --------------------------------------------------------------------------- StyleImages


def test_style_images_targets_patches_thumbnails(styles: StyleImages):
    assert len(styles) == 3 and styles.names == ["s0", "s1", "s2"]
    t = styles.target(0)
    assert t.shape == (1, 43, 64, 3) and t.dtype == np.float32  # long side = side
    assert styles.target(1).shape == (1, 64, 43, 3)
    assert styles.target(2).shape == (1, 64, 64, 3)  # small picture enlarged to `side`
    rng = np.random.default_rng(0)
    p = styles.patches(rng, np.array([0, 1, 2, 0, 2]), 32)
    assert p.shape == (5, 32, 32, 3) and p.dtype == np.float32
    assert p.min() >= 0.0 and p.max() <= 1.0
    with pytest.raises(IndexError):
        styles.patches(rng, np.array([3]), 32)
    th = styles.thumbnail(0, side=50)
    assert th.dtype == np.uint8 and max(th.shape[:2]) == 50


def test_style_patches_are_from_the_right_style(tmp_path: Path):
    red = np.zeros((40, 60, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((50, 40, 3), np.uint8)
    blue[..., 2] = 255
    st = StyleImages([_write(tmp_path / "r.png", red), _write(tmp_path / "b.png", blue)])
    p = st.patches(np.random.default_rng(1), np.array([1, 0, 1]), 16)
    assert np.allclose(p[0], [0, 0, 1]) and np.allclose(p[1], [1, 0, 0]) and np.allclose(p[2], p[0])


def test_broken_style_file_is_an_error_naming_it(tmp_path: Path):
    good = _write(tmp_path / "good.png", _gradient(40, 40))
    bad = tmp_path / "starry_broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    with pytest.raises(ValueError, match="starry_broken.jpg"):
        StyleImages([good, bad])
    with pytest.raises(ValueError, match="missing.png"):
        StyleImages([good, tmp_path / "missing.png"])
    with pytest.raises(ValueError):
        StyleImages([])
