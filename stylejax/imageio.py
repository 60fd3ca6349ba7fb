"""Safe picture decoding and encoding.

Everything a user uploads goes through `decode_image`: it refuses oversized files and
decompression bombs before any pixel is decoded, normalises every colour mode to H×W×3 uint8
RGB, and turns every failure into a typed `StyleJAXError` whose message can be shown as is.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from stylejax.errors import (
    CorruptImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    NotAnImageError,
    StyleJAXError,
    UnsupportedImageError,
)

try:  # LittleCMS is optional in Pillow builds; without it CMYK gets a plain conversion.
    from PIL import ImageCms
except ImportError:  # pragma: no cover
    ImageCms = None  # type: ignore[assignment]

# Only photo formats: fewer parsers exposed to uploads (EPS, for one, would run Ghostscript).
_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
_ANIMATED_FORMATS = ("GIF", "WEBP", "PNG")
# A file starting like one of these is a damaged picture rather than "not a picture".
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"II*\x00", b"MM\x00*")
_ORIENTATION = 0x0112

_NOT_IMAGE = "This file is not an image we can read. Send a JPEG, PNG, WebP or GIF picture."
_CORRUPT = "The picture is damaged or incomplete. Try sending it again."
_ANIMATED = "Animated pictures are not supported; send a still photo."


@dataclass(frozen=True)
class ImageLimits:
    """Upper and lower bounds on what `decode_image` accepts (bytes, pixels, sides)."""

    max_bytes: int = 30_000_000
    max_pixels: int = 50_000_000
    max_side: int = 16384
    min_side: int = 16


DEFAULT_LIMITS = ImageLimits()


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """A decoded picture: RGB pixels plus what the front ends may want to tell the user."""

    rgb: np.ndarray  # H×W×3 uint8
    alpha: np.ndarray | None  # H×W uint8, only with alpha="keep" and real transparency
    format: str
    animated: bool
    n_frames: int
    original_mode: str
    exif_rotated: bool


def _num(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def _check_size(w: int, h: int, limits: ImageLimits) -> None:
    if w < limits.min_side or h < limits.min_side:
        raise ImageTooSmallError(
            f"The picture is too small: {w}×{h}, each side must be at least "
            f"{limits.min_side} pixels."
        )
    if w * h > limits.max_pixels:
        raise ImageTooLargeError(
            f"The picture is too large: {w}×{h} ({_num(w * h / 1e6)} MP), "
            f"the limit is {_num(limits.max_pixels / 1e6)} MP."
        )
    if max(w, h) > limits.max_side:
        raise ImageTooLargeError(
            f"The picture is too large: {w}×{h}, a side may be at most {limits.max_side} pixels."
        )


def _read(data: bytes | str | os.PathLike[str], max_bytes: int) -> bytes:
    """Return the file's bytes, refusing oversized input before reading all of it."""
    in_memory = isinstance(data, (bytes, bytearray, memoryview))
    size = memoryview(data).nbytes if in_memory else os.path.getsize(data)  # type: ignore[arg-type]
    raw = b""
    if size <= max_bytes:
        if in_memory:
            raw = bytes(data)  # type: ignore[arg-type]
        else:
            with open(data, "rb") as f:  # type: ignore[arg-type]
                raw = f.read(max_bytes + 1)  # + 1: a file that grew since stat() is caught
        size = len(raw)
    if size > max_bytes:
        raise ImageTooLargeError(
            f"The file is too large: {_num(size / 1e6)} MB, "
            f"the limit is {_num(max_bytes / 1e6)} MB."
        )
    return raw


def _allowed_formats() -> list[str]:
    Image.init()
    return [f for f in _FORMATS if f in Image.OPEN]


def _pillow_guard(raw: bytes, limits: ImageLimits) -> ImageTooLargeError:
    """Pillow's bomb guard fired inside Image.open: read the size from the format plugin
    directly (which skips that guard) so the user still gets our message with real numbers."""
    size = None
    for fmt in _allowed_formats():
        factory, accept = Image.OPEN[fmt]
        ok = accept(raw[:16]) if accept else True
        if ok and not isinstance(ok, str):
            try:
                size = factory(io.BytesIO(raw), "").size
                _check_size(*size, limits)
                break
            except ImageTooLargeError as err:
                return err
            except Exception:
                continue
    cap = min(Image.MAX_IMAGE_PIXELS or limits.max_pixels, limits.max_pixels)
    where = f": {size[0]}×{size[1]}" if size else ""
    msg = f"The picture is too large{where}, the limit is {_num(cap / 1e6)} MP."
    return ImageTooLargeError(msg)


def _gray_to_8bit(im: Image.Image) -> np.ndarray:
    """16/32-bit and float gray to 0..255: fixed scale where the range is standard, else min-max."""
    with np.errstate(all="ignore"):  # NaN/inf/huge floats from hostile files are handled below
        a = np.asarray(im).astype(np.float64)
        if im.mode.startswith("I;16"):
            return np.rint(a / 257.0).astype(np.uint8)
        a = np.where(np.isfinite(a), a, 0.0)
        lo, hi = float(a.min()), float(a.max())
        natural = 1.0 if im.mode == "F" else 65535.0
        if lo >= 0.0 and hi <= natural:
            lo, hi = 0.0, natural
        if not hi - lo > 0.0 or not np.isfinite(hi - lo):
            return np.zeros(a.shape, np.uint8)
        return np.rint((a - lo) * (255.0 / (hi - lo))).clip(0, 255).astype(np.uint8)


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    icc = im.info.get("icc_profile")
    if icc and ImageCms is not None:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            out = ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
            if out is not None:
                return out
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass  # a broken profile is no reason to refuse the photo
    return im.convert("RGB")


def _to_arrays(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Any Pillow mode to (H×W×3 uint8, H×W uint8 alpha or None)."""
    mode = im.mode
    if mode.startswith("I") or mode == "F":
        gray = _gray_to_8bit(im)
        return np.repeat(gray[:, :, None], 3, axis=2), None
    if mode == "CMYK":
        return np.asarray(_cmyk_to_rgb(im), dtype=np.uint8).copy(), None
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info
    try:
        arr = np.array(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.uint8)
    except (ValueError, OSError) as err:
        raise UnsupportedImageError(
            f"This kind of picture (colour mode {mode}) is not supported; send an RGB photo."
        ) from err
    if not has_alpha:
        return arr, None
    return np.ascontiguousarray(arr[:, :, :3]), np.ascontiguousarray(arr[:, :, 3])


_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def _orientation(im: Image.Image) -> int:
    """The camera's orientation tag (1 = as stored); a damaged EXIF block reads as 1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about damaged EXIF; we tolerate it
        try:
            value = im.getexif().get(_ORIENTATION, 1)
            return value if value in _TRANSPOSE else 1
        except Exception:
            return 1


def _exif_transpose(im: Image.Image, orientation: int | None = None) -> tuple[Image.Image, bool]:
    """Apply the camera's orientation tag (read from `im` unless given: a reduced copy has
    lost it)."""
    method = _TRANSPOSE.get(_orientation(im) if orientation is None else orientation)
    if method is None:
        return im, False
    return im.transpose(method), True


def picture_shape(data: bytes) -> tuple[int, int]:
    """(height, width) of a picture as it is shown (the camera's orientation applied), from
    its header alone: for a picture already checked by `decode_image`, where only its shape is
    wanted again (nothing is decoded)."""
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        return (w, h) if _orientation(im) in (5, 6, 7, 8) else (h, w)  # 5-8 turn 90°


def decode_image(
    data: bytes | str | os.PathLike[str],
    *,
    limits: ImageLimits = DEFAULT_LIMITS,
    alpha: Literal["composite", "keep"] = "composite",
    background: tuple[int, int, int] = (255, 255, 255),
    allow_animated: bool = True,
    max_side: int | None = None,
) -> DecodedImage:
    """Decode untrusted picture bytes (or a file) to RGB uint8, raising only `StyleJAXError`s.

    `max_side` decodes at the size the caller will use (the long side at most that, Lanczos):
    a JPEG is decoded at a reduced scale, any other format is reduced in its own colour mode as
    soon as it is loaded, before any conversion. The limits apply to the picture's full size.
    Without it, the pixels come at full size."""
    if alpha not in ("composite", "keep"):
        raise ValueError(f"alpha must be 'composite' or 'keep', not {alpha!r}")
    if max_side is not None and max_side < 1:
        raise ValueError("max_side must be at least 1")
    raw = _read(data, limits.max_bytes)
    if not raw:
        raise NotAnImageError(_NOT_IMAGE)
    with warnings.catch_warnings():  # note: the warnings filter is process-wide while it runs
        warnings.simplefilter("ignore")  # Pillow's notes on malformed uploads are just log noise
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            try:
                im = Image.open(io.BytesIO(raw), formats=_allowed_formats())
            except UnidentifiedImageError as err:
                bad = CorruptImageError(_CORRUPT) if raw.startswith(_MAGIC) else None
                raise (bad or NotAnImageError(_NOT_IMAGE)) from err
            _check_size(*im.size, limits)  # header only: nothing decoded yet
            n_frames = max(1, int(getattr(im, "n_frames", 1)))
            animated = n_frames > 1 and im.format in _ANIMATED_FORMATS
            if animated and not allow_animated:
                raise UnsupportedImageError(_ANIMATED)
            fmt, original_mode, full_size = im.format or "", im.mode, im.size
            if max_side is not None:
                _draft(im, max_side)
            im.load()
            orientation = _orientation(im)
            if max_side is not None:
                im = _reduce(im, max_side)
        except StyleJAXError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise _pillow_guard(raw, limits) from err
        except Exception as err:
            raise CorruptImageError(_CORRUPT) from err
    im, rotated = _exif_transpose(im, orientation)
    if max_side is None:
        _check_size(*im.size, limits)
    rgb, a = _to_arrays(im)
    if max_side is not None and max(full_size) > max_side:
        # the size a full decode scaled down would have (not the reduced picture's rounding)
        w, h = full_size[::-1] if orientation in (5, 6, 7, 8) else full_size  # 5-8 turn 90°
        tw, th = _fit(w, h, max_side)
        if rgb.shape[:2] != (th, tw):
            rgb = resize_to(rgb, (th, tw))
            a = None if a is None else resize_to(a, (th, tw))
    if a is not None and a.min() == 255:
        a = None  # an alpha channel with nothing transparent in it
    if a is not None and alpha == "composite":
        rgb, a = _composite(rgb, a, background), None
    return DecodedImage(rgb, a, fmt, animated, n_frames, original_mode, rotated)


def _draft(im: Image.Image, max_side: int) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when that still covers `max_side`: the
    decoder then never holds the full-size pixels."""
    w, h = im.size
    scale = max_side / max(w, h)
    if im.format == "JPEG" and scale < 0.5:
        im.draft(None, (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))


def _reduce(im: Image.Image, max_side: int) -> Image.Image:
    """Shrink a loaded picture by a whole factor (box filter) to no less than `max_side`, in its
    own mode where Pillow can (palette and 1-bit pictures are converted first)."""
    factor = max(im.size) // max_side
    if factor < 2:
        return im
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    try:
        return im.reduce(factor)
    except ValueError:  # a mode `reduce` does not take (e.g. I;16): left for the final resize
        return im


def _composite(rgb: np.ndarray, a: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """uint8 colour and alpha over an opaque background colour, rounded to the nearest."""
    a16 = a.astype(np.uint16)[:, :, None]
    bg = np.asarray(background, dtype=np.uint16).reshape(1, 1, 3)
    return ((rgb.astype(np.uint16) * a16 + bg * (255 - a16) + 127) // 255).astype(np.uint8)


def picture_to_rgb(
    image: Image.Image | np.ndarray,
    *,
    limits: ImageLimits = DEFAULT_LIMITS,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """A picture already in memory (a PIL image or an array) to H×W×3 uint8, normalised as
    `decode_image` normalises uploads: EXIF rotation and any colour mode (PIL), alpha composited
    on `background`, the same size limits. Arrays may be H×W, H×W×3 or H×W×4, uint8 or floats in
    [0, 1]."""
    if isinstance(image, Image.Image):
        im, _ = _exif_transpose(image)
        rgb, a = _to_arrays(im)
        if a is not None:
            rgb = _composite(rgb, a, background)
    elif isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise UnsupportedImageError(f"A picture array must be H×W, H×W×3 or H×W×4, "
                                        f"got shape {tuple(image.shape)}.")
        if arr.shape[2] == 4:
            a = to_float(arr[..., 3:])
            bg = np.asarray(background, np.float32).reshape(1, 1, 3) / 255.0
            arr = to_float(arr[..., :3]) * a + bg * (1.0 - a)
        rgb = to_uint8(arr)
    else:
        raise TypeError(f"picture_to_rgb takes a PIL image or an array, not "
                        f"{type(image).__name__}")
    h, w = rgb.shape[:2]
    _check_size(w, h, limits)
    return np.ascontiguousarray(rgb)


def to_float(rgb: np.ndarray) -> np.ndarray:
    """uint8 (or float) pixels to float32 in [0, 1], the networks' input range."""
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8:
        return rgb.astype(np.float32) / 255.0
    return np.clip(np.nan_to_num(rgb.astype(np.float32)), 0.0, 1.0)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] (clipped, rounded) or integers in [0, 255] to uint8 for encoding."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        return np.clip(x, 0, 255).astype(np.uint8)
    return np.rint(np.clip(np.nan_to_num(x.astype(np.float32)), 0.0, 1.0) * 255.0).astype(np.uint8)


def _fit(w: int, h: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled so the longer side is `max_side`, aspect kept, each ≥ 1."""
    scale = max_side / max(h, w)
    return max(1, round(w * scale)), max(1, round(h * scale))


def resize_max_side(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink (never enlarge) so the longer side is at most `max_side`, same aspect: uint8 as
    `resize_to` does it (area averaging), float planes with Lanczos."""
    if max_side < 1:
        raise ValueError("max_side must be at least 1")
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    size = _fit(w, h, max_side)
    if np.asarray(rgb).dtype == np.uint8:
        return resize_to(rgb, (size[1], size[0]))
    planes = np.atleast_3d(np.asarray(rgb, dtype=np.float32))  # float: per-channel "F" images
    out = [
        np.asarray(Image.fromarray(planes[:, :, c]).resize(size, Image.Resampling.LANCZOS))
        for c in range(planes.shape[2])
    ]
    out_arr = np.stack(out, axis=2).reshape(size[1], size[0], *rgb.shape[2:])
    return np.clip(out_arr, planes.min(), planes.max())  # no Lanczos overshoot


def resize_to(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 H×W×3 resized to `shape` = (height, width): down by area averaging (OpenCV's
    INTER_AREA: alias-free and ~6x faster than Lanczos, which was a sixth of a cached style's
    time at 512 px, docs/benchmarks.md), up with Lanczos."""
    h, w = shape
    if h <= rgb.shape[0] and w <= rgb.shape[1]:
        import cv2  # opencv-python-headless: a dependency for video (DIS flow)

        rgb = np.ascontiguousarray(rgb)
        # OpenCV averages whole blocks quickly and fractional ones slowly: shrink by a whole
        # factor first where the sides allow it (1280 → 512 px: 3 ms instead of 4.5)
        f = min(rgb.shape[0] // h, rgb.shape[1] // w)
        while f >= 2 and (rgb.shape[0] % f or rgb.shape[1] % f):
            f -= 1
        if f >= 2 and (rgb.shape[0] // f, rgb.shape[1] // f) != (h, w):
            rgb = cv2.resize(rgb, (rgb.shape[1] // f, rgb.shape[0] // f),
                             interpolation=cv2.INTER_AREA)
        return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.LANCZOS))


def resize_long_side(rgb: np.ndarray, long_side: int) -> np.ndarray:
    """uint8 H×W×3 resized up or down so the longer side is `long_side` (aspect kept, ≥ 8 px):
    for working scales that must not depend on the photo's resolution."""
    h, w = rgb.shape[:2]
    if max(h, w) == long_side:
        return rgb
    s = long_side / max(h, w)
    return resize_to(rgb, (max(8, round(h * s)), max(8, round(w * s))))


def encode_image(
    rgb: np.ndarray,
    fmt: Literal["png", "jpeg", "webp"] = "png",
    *,
    quality: int = 92,
    alpha: np.ndarray | None = None,
) -> bytes:
    """Encode H×W×3 pixels (uint8 or float [0, 1]); alpha is kept for PNG/WebP, dropped for JPEG."""
    fmt_l = {"jpg": "jpeg"}.get(fmt.lower(), fmt.lower())
    if fmt_l not in ("png", "jpeg", "webp"):
        raise ValueError(f"unsupported output format {fmt!r}; use png, jpeg or webp")
    if not 0 <= quality <= 100:
        raise ValueError("quality must be in 0..100")
    arr = to_uint8(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 array, got shape {arr.shape}")
    if alpha is not None and fmt_l != "jpeg":
        a = to_uint8(alpha)
        if a.shape != arr.shape[:2]:
            raise ValueError(f"alpha shape {a.shape} does not match image {arr.shape[:2]}")
        arr = np.dstack([arr, a])
    buf = io.BytesIO()
    opts = {"quality": quality} if fmt_l in ("jpeg", "webp") else {}
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format=fmt_l.upper(), **opts)
    return buf.getvalue()


_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def save_image(
    path: str | os.PathLike[str], rgb: np.ndarray, alpha: np.ndarray | None = None
) -> Path:
    """Write a picture atomically (temp file + rename) so readers never see half a file."""
    path = Path(path)
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the format from {path.name!r}; use .png, .jpg or .webp")
    data = encode_image(rgb, fmt, alpha=alpha)  # type: ignore[arg-type]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would surprise whoever serves the file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
