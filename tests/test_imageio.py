"""Bad-input corpus for stylejax.imageio: every kind of upload decodes or fails with a typed error.

The corpus is built here with Pillow and numpy, nothing is read from disk or the network.
"""

from __future__ import annotations

import functools
import io
import struct
import time
import warnings
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image, ImageFile

from stylejax.errors import (
    CorruptImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    NotAnImageError,
    StyleJAXError,
    UnsupportedImageError,
)
from stylejax.imageio import (
    DecodedImage,
    ImageLimits,
    decode_image,
    encode_image,
    picture_to_rgb,
    resize_max_side,
    resize_to,
    save_image,
    to_float,
    to_uint8,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _photo(w: int = 64, h: int = 48) -> np.ndarray:
    """A smooth colour gradient: compresses well and survives lossy codecs."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack(
        [x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], 2
    ).astype(np.uint8)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


@functools.cache
def _bomb_png(w: int, h: int) -> bytes:
    """A genuine 1-bit all-black PNG: w×h pixels in a few tens of KB."""
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    row = bytes(1 + (w + 7) // 8)
    co = zlib.compressobj(9)
    idat = b"".join(co.compress(row) for _ in range(h)) + co.flush()
    sig = b"\x89PNG\r\n\x1a\n"
    return sig + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _animation(fmt: str) -> bytes:
    frames = [Image.new("RGB", (32, 32), c) for c in (RED, GREEN, BLUE)]
    kw = {"lossless": True} if fmt == "WEBP" else {}
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **kw)


def _exif_rotated_jpeg() -> bytes:
    """64 wide × 32 high, red top-left corner, orientation 6 (display rotated 90° clockwise)."""
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:] = BLUE
    arr[:8, :8] = RED
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())


def _palette_png() -> bytes:
    idx = np.zeros((32, 32), np.uint8)
    idx[:, 16:] = 1  # left half index 0 (transparent), right half index 1 (red)
    im = Image.fromarray(idx, "L").convert("P")
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    return _save(im, "PNG", transparency=0)


def _rgba_png() -> bytes:
    arr = np.zeros((32, 32, 4), np.uint8)
    arr[..., :3] = RED
    arr[:, 16:, 3] = 255  # left half fully transparent, right half opaque
    return _save(Image.fromarray(arr), "PNG")


def _la_png() -> bytes:
    gray = np.full((32, 32), 100, np.uint8)
    a = np.zeros((32, 32), np.uint8)
    a[16:] = 255
    return _save(Image.merge("LA", [Image.fromarray(gray), Image.fromarray(a)]), "PNG")


def _gray16_png() -> bytes:
    arr = np.full((32, 32), 40000, np.uint16)
    arr[0, 0], arr[0, 1] = 0, 65535
    return _save(Image.fromarray(arr), "PNG")


def _float_tiff(lo: float = 0.0, hi: float = 1.0) -> bytes:
    arr = np.linspace(lo, hi, 32 * 32, dtype=np.float32).reshape(32, 32)
    return _save(Image.fromarray(arr), "TIFF")


def _one_bit_png() -> bytes:
    board = (np.indices((32, 32)).sum(0) % 2).astype(bool)
    return _save(Image.fromarray(board), "PNG")


def _bitflip(data: bytes, seed: int, n: int = 20) -> bytes:
    rng = np.random.default_rng(seed)
    buf = bytearray(data)
    for i in rng.integers(20, len(buf), n):  # keep the magic so the right parser runs
        buf[i] ^= 0xFF
    return bytes(buf)


_JPEG = encode_image(_photo(), "jpeg")
_PNG = encode_image(_photo(), "png")

CORPUS: dict[str, Callable[[], bytes]] = {
    "jpeg": lambda: _JPEG,
    "png": lambda: _PNG,
    "webp": lambda: encode_image(_photo(), "webp"),
    "bmp": lambda: _save(Image.fromarray(_photo()), "BMP"),
    "exif_rotated": _exif_rotated_jpeg,
    "cmyk_jpeg": lambda: _save(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG"),
    "cmyk_bad_icc": lambda: _save(
        Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", icc_profile=b"not a profile" * 10
    ),
    "palette_transparent": _palette_png,
    "la": _la_png,
    "rgba": _rgba_png,
    "gray16": _gray16_png,
    "float_tiff": _float_tiff,
    "float_tiff_wide": lambda: _float_tiff(-5.0, 1000.0),
    "one_bit": _one_bit_png,
    "gif": lambda: _animation("GIF"),
    "apng": lambda: _animation("PNG"),
    "webp_anim": lambda: _animation("WEBP"),
    "multipage_tiff": lambda: _save(
        Image.new("RGB", (32, 32), RED),
        "TIFF",
        save_all=True,
        append_images=[Image.new("RGB", (32, 32))],
    ),
    "truncated_jpeg": lambda: _JPEG[: len(_JPEG) // 2],
    "truncated_png": lambda: _PNG[: len(_PNG) // 2],
    "jpeg_header_only": lambda: _JPEG[:40],
    "png_signature_only": lambda: _PNG[:8],
    "bitflip_jpeg_1": lambda: _bitflip(_JPEG, 1),
    "bitflip_jpeg_2": lambda: _bitflip(_JPEG, 2),
    "bitflip_png": lambda: _bitflip(_PNG, 3),
    "text": lambda: b"Hello, please make my cat look like Van Gogh painted it.\n" * 4,
    "html": lambda: b"<!doctype html><html><body><img src=x></body></html>",
    "empty": lambda: b"",
    "random": lambda: np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    "bomb_20000": lambda: _bomb_png(20000, 20000),
    "too_small": lambda: encode_image(np.zeros((8, 8, 3), np.uint8)),
    "too_wide": lambda: _bomb_png(17000, 20),
    "eps": lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n",
}


@pytest.mark.parametrize("name", sorted(CORPUS))
@pytest.mark.parametrize("as_path", [False, True], ids=["bytes", "path"])
def test_corpus_decodes_or_raises_typed_error(name: str, as_path: bool, tmp_path) -> None:
    data = CORPUS[name]()
    src: bytes | object = data
    if as_path:
        src = tmp_path / f"upload_{name}.bin"
        src.write_bytes(data)
    try:
        out = decode_image(src)
    except StyleJAXError as err:
        msg = str(err)
        assert msg and "Traceback" not in msg and "/" not in msg and "\\" not in msg
        assert str(tmp_path) not in msg and "upload_" not in msg
        return
    assert isinstance(out, DecodedImage)
    assert out.rgb.dtype == np.uint8 and out.rgb.ndim == 3 and out.rgb.shape[2] == 3
    assert out.alpha is None  # default alpha="composite"


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_round_trip(fmt: str) -> None:
    photo = _photo()
    out = decode_image(encode_image(photo, fmt))
    assert out.format == fmt.upper() and out.rgb.shape == photo.shape and out.rgb.dtype == np.uint8
    err = np.abs(out.rgb.astype(int) - photo).mean()
    assert err == 0 if fmt == "png" else err < 3
    assert not out.animated and out.n_frames == 1 and not out.exif_rotated


def test_exif_orientation_rotates_pixels() -> None:
    out = decode_image(_exif_rotated_jpeg())
    assert out.exif_rotated and out.rgb.shape == (64, 32, 3)  # width and height swapped
    top_right, top_left = out.rgb[2, -3].astype(int), out.rgb[2, 2].astype(int)
    assert top_right[0] > 200 and top_right[2] < 60  # the red corner moved to the top right
    assert top_left[0] < 60 and top_left[2] > 200


@pytest.mark.parametrize("name", ["cmyk_jpeg", "cmyk_bad_icc"])
def test_cmyk_becomes_rgb(name: str) -> None:
    out = decode_image(CORPUS[name]())
    assert out.original_mode == "CMYK"
    r, g, b = out.rgb.reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60


def test_palette_transparency_keep_and_composite() -> None:
    kept = decode_image(_palette_png(), alpha="keep")
    assert kept.original_mode == "P" and kept.alpha is not None
    assert (kept.alpha[:, :16] == 0).all() and (kept.alpha[:, 16:] == 255).all()
    comp = decode_image(_palette_png(), background=GREEN)
    assert comp.alpha is None
    assert (comp.rgb[:, :16] == GREEN).all() and (comp.rgb[:, 16:] == RED).all()


def test_la_keep_and_composite() -> None:
    kept = decode_image(_la_png(), alpha="keep")
    assert kept.original_mode == "LA" and (kept.alpha[:16] == 0).all()
    assert (kept.rgb[16:] == 100).all()
    comp = decode_image(_la_png())
    assert (comp.rgb[:16] == 255).all() and (comp.rgb[16:] == 100).all()


def test_rgba_keep_vs_composite() -> None:
    kept = decode_image(_rgba_png(), alpha="keep")
    assert kept.alpha is not None and kept.alpha.shape == (32, 32) and kept.alpha.dtype == np.uint8
    assert (kept.alpha[:, :16] == 0).all() and (kept.rgb == RED).all()
    comp = decode_image(_rgba_png(), alpha="composite", background=(10, 20, 30))
    assert comp.alpha is None
    assert (comp.rgb[:, :16] == (10, 20, 30)).all() and (comp.rgb[:, 16:] == RED).all()


def test_opaque_alpha_channel_is_not_transparency() -> None:
    arr = np.dstack([_photo(32, 32), np.full((32, 32), 255, np.uint8)])
    out = decode_image(_save(Image.fromarray(arr), "PNG"), alpha="keep")
    assert out.alpha is None and out.original_mode == "RGBA"


def test_16bit_gray_is_scaled_not_clipped() -> None:
    out = decode_image(_gray16_png())
    assert out.original_mode.startswith("I")
    assert abs(int(out.rgb[5, 5, 0]) - 155) <= 1  # 40000 / 257 = 155.6, not 255
    assert out.rgb[0, 0, 0] == 0 and out.rgb[0, 1, 0] == 255
    assert (out.rgb[..., 0] == out.rgb[..., 2]).all()


def test_float_gray() -> None:
    unit = decode_image(_float_tiff(0.0, 1.0))
    assert unit.original_mode == "F"
    assert unit.rgb[0, 0, 0] == 0 and unit.rgb[-1, -1, 0] == 255
    assert abs(int(unit.rgb[16, 0, 0]) - 128) <= 2  # [0, 1] data keeps its absolute scale
    wide = decode_image(_float_tiff(-5.0, 1000.0))  # anything else: stretched to its range
    assert wide.rgb[0, 0, 0] == 0 and wide.rgb[-1, -1, 0] == 255


def test_one_bit() -> None:
    out = decode_image(_one_bit_png())
    assert out.original_mode == "1"
    assert set(np.unique(out.rgb)) == {0, 255} and out.rgb[0, 1, 0] == 255


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animation_first_frame_or_refused(fmt: str) -> None:
    data = _animation(fmt)
    out = decode_image(data)
    assert out.animated and out.n_frames == 3 and out.format == fmt
    r, g, b = out.rgb.reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60  # the first (red) frame
    with pytest.raises(UnsupportedImageError, match="Animated pictures are not supported"):
        decode_image(data, allow_animated=False)


def test_multipage_tiff_is_not_an_animation() -> None:
    out = decode_image(CORPUS["multipage_tiff"](), allow_animated=False)
    assert not out.animated and out.n_frames == 2 and (out.rgb == RED).all()


@pytest.mark.parametrize(
    "name", ["truncated_jpeg", "truncated_png", "jpeg_header_only", "png_signature_only"]
)
def test_truncated_is_corrupt(name: str) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(CorruptImageError, match="damaged or incomplete"):
        decode_image(CORPUS[name]())


@pytest.mark.parametrize("name", ["text", "html", "empty", "random", "eps"])
def test_not_an_image(name: str) -> None:
    with pytest.raises(NotAnImageError, match="not an image"):
        decode_image(CORPUS[name]())


@pytest.mark.parametrize(
    "side, mp", [(8000, "64"), (10000, "100"), (20000, "400")], ids=["ours", "pil-warn", "pil-err"]
)
def test_decompression_bomb_refused_before_decoding(side: int, mp: str, monkeypatch) -> None:
    data = _bomb_png(side, side)
    assert len(data) < 100_000  # a real small-file bomb
    loads: list[object] = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: loads.append(im) or real_load(im))
    filters, max_pixels = list(warnings.filters), Image.MAX_IMAGE_PIXELS
    t0 = time.perf_counter()
    with pytest.raises(ImageTooLargeError) as exc:
        decode_image(data)
    assert time.perf_counter() - t0 < 1.0 and not loads
    assert str(exc.value) == (
        f"The picture is too large: {side}×{side} ({mp} MP), the limit is 50 MP."
    )
    assert warnings.filters == filters  # nothing leaked
    assert max_pixels == Image.MAX_IMAGE_PIXELS


def test_pillow_guard_still_applies_when_our_limits_are_higher() -> None:
    generous = ImageLimits(max_pixels=500_000_000, max_side=30000)
    with pytest.raises(ImageTooLargeError, match="20000×20000, the limit is 89.5 MP"):
        decode_image(_bomb_png(20000, 20000), limits=generous)


def test_too_wide() -> None:
    with pytest.raises(ImageTooLargeError, match="17000×20, a side may be at most 16384"):
        decode_image(_bomb_png(17000, 20))


def test_too_many_bytes(tmp_path) -> None:
    limits = ImageLimits(max_bytes=100)
    with pytest.raises(ImageTooLargeError, match=r"the limit is 0\.0001 MB"):
        decode_image(_PNG, limits=limits)
    path = tmp_path / "big.png"
    path.write_bytes(_PNG)
    with pytest.raises(ImageTooLargeError, match="The file is too large"):
        decode_image(path, limits=limits)


def test_too_small() -> None:
    with pytest.raises(ImageTooSmallError, match="8×8, each side must be at least 16"):
        decode_image(CORPUS["too_small"]())
    out = decode_image(CORPUS["too_small"](), limits=ImageLimits(min_side=8))
    assert out.rgb.shape == (8, 8, 3)


def test_encode_float_and_alpha() -> None:
    x = to_float(_photo(32, 32))
    x[0, 0] = (-1.0, 2.0, 0.5)  # out of range is clipped, 0.5 rounds to 128
    png = decode_image(encode_image(x, "png")).rgb
    assert tuple(png[0, 0]) == (0, 255, 128) and (png[1:] == _photo(32, 32)[1:]).all()
    a = np.full((32, 32), 255, np.uint8)
    a[0] = 0
    for fmt in ("png", "webp"):
        assert decode_image(encode_image(x, fmt, alpha=a), alpha="keep").alpha[0].max() == 0
    assert decode_image(encode_image(x, "jpeg", alpha=a), alpha="keep").alpha is None
    with pytest.raises(ValueError):
        encode_image(x, "gif")


def test_save_image_atomic(tmp_path) -> None:
    for name, fmt in [("out.png", "PNG"), ("out.JPG", "JPEG"), ("out.webp", "WEBP")]:
        path = save_image(tmp_path / name, _photo())
        assert decode_image(path).format == fmt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.JPG", "out.png", "out.webp"]
    with pytest.raises(ValueError):
        save_image(tmp_path / "out.bmp", _photo())
    assert not (tmp_path / "out.bmp").exists()


def test_float_uint8_helpers() -> None:
    photo = _photo()
    f = to_float(photo)
    assert f.dtype == np.float32 and f.min() >= 0.0 and f.max() <= 1.0
    assert (to_uint8(f) == photo).all() and to_uint8(photo) is photo


def test_resize_max_side() -> None:
    photo = _photo(400, 200)
    small = resize_max_side(photo, 100)
    assert small.shape == (50, 100, 3) and small.dtype == np.uint8
    assert resize_max_side(photo, 1000) is photo  # never upscales
    f = resize_max_side(to_float(photo), 100)
    assert f.shape == (50, 100, 3) and f.dtype == np.float32
    assert np.abs(to_uint8(f).astype(int) - small).max() <= 2


def test_pictures_in_memory_are_normalised_like_uploads() -> None:
    """PIL images and arrays (the notebook widget's inputs) come out as the same bytes would."""
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    im = Image.fromarray(rgba)
    from_bytes = decode_image(_save(im, "PNG")).rgb
    np.testing.assert_array_equal(picture_to_rgb(im), from_bytes)
    np.testing.assert_array_equal(picture_to_rgb(rgba), from_bytes)
    np.testing.assert_array_equal(picture_to_rgb(to_float(rgba[..., :3])), rgba[..., :3])
    gray = picture_to_rgb(rgba[..., 0])
    assert gray.shape == (40, 50, 3) and (gray == rgba[..., :1]).all()
    with pytest.raises(ImageTooSmallError, match="too small"):
        picture_to_rgb(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UnsupportedImageError):
        picture_to_rgb(np.zeros((20, 20, 2), np.uint8))


@pytest.mark.parametrize("src, dst", [((720, 1280), (288, 512)), ((721, 1283), (288, 512)),
                                      ((3024, 4032), (384, 512))])
def test_resize_to_shrinks_in_two_steps_like_one_area_average(src, dst):
    """The whole-factor pre-shrink keeps what one area average gives: the picture's content
    (a smooth pattern, here under grain) as close as OpenCV's one step keeps it, and the grain
    averaged away as much, at the asked size."""
    import cv2

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: src[0], : src[1]]
    base = (120 + 80 * np.sin(xx / 37.0) * np.cos(yy / 23.0))[..., None].repeat(3, axis=2)
    rgb = np.clip(base + rng.normal(0, 20, (*src, 3)), 0, 255).astype(np.uint8)
    content = cv2.resize(base.astype(np.float32), (dst[1], dst[0]), interpolation=cv2.INTER_AREA)
    got = resize_to(rgb, dst)
    want = cv2.resize(rgb, (dst[1], dst[0]), interpolation=cv2.INTER_AREA)
    assert got.shape == (*dst, 3) and got.dtype == np.uint8
    err_got, err_want = (np.abs(a.astype(np.float32) - content).mean() for a in (got, want))
    assert err_got < 1.1 * err_want + 0.5
