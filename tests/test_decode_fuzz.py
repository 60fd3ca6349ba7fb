"""Property-based tests of `stylejax.imageio.decode_image` on hostile input (issue 17).

Whatever the bytes: random noise, real pictures of every odd colour mode cut short or with
bytes flipped, EXIF rotations, headers that declare a huge picture in a tiny file: the answer
is a picture within the limits or a `StyleJAXError` (a message a user can read), never another
exception.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from stylejax.errors import ImageTooLargeError, StyleJAXError
from stylejax.imageio import ImageLimits, decode_image

FUZZ = settings(deadline=None, max_examples=60, derandomize=True)
# Small limits keep every example fast; the checks are the same as with the defaults.
LIMITS = ImageLimits(max_bytes=2_000_000, max_pixels=2_000_000, max_side=4000, min_side=4)

# (format, mode) pairs Pillow writes: every odd mode the decoder must normalise
CASES = [("PNG", "1"), ("PNG", "P"), ("PNG", "L"), ("PNG", "LA"), ("PNG", "I;16"),
         ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "PA"), ("JPEG", "L"), ("JPEG", "RGB"),
         ("JPEG", "CMYK"), ("GIF", "P"), ("GIF", "L"), ("WEBP", "RGB"), ("WEBP", "RGBA"),
         ("TIFF", "CMYK"), ("TIFF", "I;16"), ("TIFF", "F"), ("TIFF", "1"), ("BMP", "P"),
         ("BMP", "RGB")]


def _picture(fmt: str, mode: str, w: int, h: int, seed: int, orientation: int) -> bytes:
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    elif mode == "F":
        im = Image.fromarray(rng.standard_normal((h, w)).astype(np.float32))
    elif mode == "PA":
        im = base.convert("P")
        im.info["transparency"] = 3
    else:
        im = base if mode == "RGBA" else base.convert(mode)
    buf = io.BytesIO()
    opts = {}
    if orientation != 1 and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        exif = Image.Exif()
        exif[0x0112] = orientation
        opts["exif"] = exif.tobytes()
    im.save(buf, fmt, **opts)
    return buf.getvalue()


def _check(data: bytes, max_side: int | None) -> None:
    """The property: a picture within the limits, or a StyleJAXError."""
    try:
        out = decode_image(data, limits=LIMITS, max_side=max_side)
    except StyleJAXError as err:
        assert str(err) and "\n" not in str(err)
        return
    h, w, c = out.rgb.shape
    assert c == 3 and out.rgb.dtype == np.uint8 and out.alpha is None
    if max_side is None:
        assert min(h, w) >= LIMITS.min_side and max(h, w) <= LIMITS.max_side
        assert h * w <= LIMITS.max_pixels
    else:
        assert max(h, w) <= max_side


@FUZZ
@given(data=st.binary(max_size=4096), max_side=st.sampled_from([None, 16]))
def test_random_bytes(data, max_side):
    _check(data, max_side)


@FUZZ
@given(magic=st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a",
                              b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"II*\x00", b"BM"]),
       tail=st.binary(max_size=2048))
def test_magic_then_garbage(magic, tail):
    _check(magic + tail, None)


@st.composite
def real_pictures(draw) -> bytes:
    fmt, mode = draw(st.sampled_from(CASES))
    return _picture(fmt, mode, draw(st.integers(1, 90)), draw(st.integers(1, 90)),
                    draw(st.integers(0, 99)), draw(st.sampled_from([1, 2, 3, 5, 6, 7, 8])))


@FUZZ
@given(data=real_pictures(), max_side=st.sampled_from([None, 8, 32]))
def test_real_pictures_of_every_mode(data, max_side):
    _check(data, max_side)


@FUZZ
@given(data=real_pictures(), cut=st.floats(0.0, 1.0))
def test_truncated_pictures(data, cut):
    _check(data[: int(len(data) * cut)], None)


@FUZZ
@given(data=real_pictures(), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)),
                                            min_size=1, max_size=8))
def test_damaged_pictures(data, flips):
    raw = bytearray(data)
    for where, value in flips:
        raw[min(len(raw) - 1, int(where * len(raw)))] = value
    _check(bytes(raw), None)


def _png_declaring(w: int, h: int, mode_byte: int = 2) -> bytes:
    """A valid PNG header that declares w×h, with a few bytes of image data: a bomb's shape."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, mode_byte, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _jpeg_declaring(w: int, h: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is patched to declare w×h."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buf, "JPEG")
    raw = bytearray(buf.getvalue())
    sof = raw.index(b"\xff\xc0")
    raw[sof + 5: sof + 9] = struct.pack(">HH", h, w)
    return bytes(raw)


def _gif_declaring(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("P", (16, 16)).save(buf, "GIF")
    raw = bytearray(buf.getvalue())
    raw[6:10] = struct.pack("<HH", w, h)  # logical screen
    at = raw.index(b"\x2c")  # the image descriptor
    raw[at + 5: at + 9] = struct.pack("<HH", w, h)
    return bytes(raw)


@FUZZ
@given(make=st.sampled_from([_png_declaring, _jpeg_declaring, _gif_declaring]),
       w=st.integers(1, 65535), h=st.integers(1, 65535), max_side=st.sampled_from([None, 64]))
def test_huge_declared_size_in_a_tiny_file(make, w, h, max_side):
    data = make(w, h)
    assert len(data) < 2000
    _check(data, max_side)


@pytest.mark.parametrize("make", [_png_declaring, _jpeg_declaring, _gif_declaring])
def test_a_bomb_is_refused_before_decoding(make):
    with pytest.raises(ImageTooLargeError, match="too large"):
        decode_image(make(60000, 60000))
