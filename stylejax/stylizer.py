"""The Python API: `Stylizer` turns photos into stylised pictures, from a pack or any picture.

    from stylejax import Stylizer
    s = Stylizer()                                   # the default pack (if installed)
    out = s.stylize("photo.jpg", "starry", strength=0.7)
    out = s.stylize_with_image("photo.jpg", "my_style.jpg").image

Every front end (CLI, service workers, notebook widget) goes through this class.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .custom_style import CustomStyleConfig, CustomStyleResult, stylize_with_image
from .engine import Engine, Request
from .errors import InvalidRequestError, StyleJAXError, WeightsError
from .generator import apply_controls
from .imageio import DecodedImage, decode_image, resize_max_side, to_float, to_uint8
from .pack import StyleInfo, StylePack, default_pack_dir, load_pack, read_pack_styles
from .stroke import pack_work_side, parse_stroke

PhotoInput = np.ndarray | bytes | str | os.PathLike
StyleChoice = str | int | Mapping[str, float]


def load_photo(photo: PhotoInput) -> np.ndarray:
    """Any accepted photo input → H×W×3 uint8 (validated, EXIF-rotated, alpha composited)."""
    if isinstance(photo, np.ndarray):
        if photo.ndim != 3 or photo.shape[2] != 3:
            raise StyleJAXError("A photo array must be H×W×3.")
        return photo if photo.dtype == np.uint8 else to_uint8(photo)
    if isinstance(photo, DecodedImage):
        return photo.rgb
    return decode_image(photo).rgb


def _mask_for(mask: PhotoInput | None, shape: tuple[int, int]) -> np.ndarray | None:
    """A mask picture (white = styled) resized to the photo: H×W×1 float32 in [0,1]."""
    if mask is None:
        return None
    from PIL import Image

    if isinstance(mask, np.ndarray):
        m = mask.astype(np.float32)
        m = m / 255.0 if mask.dtype == np.uint8 else m
        m = m.mean(axis=2) if m.ndim == 3 else m
    else:
        m = to_float(decode_image(mask).rgb).mean(axis=2)
    if m.shape != shape:
        m = np.asarray(Image.fromarray((m * 255).astype(np.uint8)).resize(
            (shape[1], shape[0]), Image.BILINEAR), np.float32) / 255.0
    return np.clip(m, 0, 1)[..., None]


def _fit_shape(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((shape[1], shape[0]), Image.LANCZOS))


def _fit_long_side(rgb: np.ndarray, long_side: int) -> np.ndarray:
    """Resize (up or down) so the long side is `long_side`; the aspect ratio is kept."""
    h, w = rgb.shape[:2]
    if max(h, w) == long_side:
        return rgb
    s = long_side / max(h, w)
    return _fit_shape(rgb, (max(8, round(h * s)), max(8, round(w * s))))


class Stylizer:
    """Stylise photos with a style pack's generator, or with any style picture (optimisation)."""

    def __init__(self, pack: str | os.PathLike | StylePack | None = None, *,
                 backend: str = "auto", tile: int = 1024):
        self._pack_arg = pack
        self._backend = backend
        self._tile = tile
        self._pack: StylePack | None = pack if isinstance(pack, StylePack) else None
        self._engine: Engine | None = None

    # -- the pack ---------------------------------------------------------------------------------
    def _pack_dir(self) -> Path:
        path = Path(self._pack_arg) if self._pack_arg is not None else default_pack_dir()
        if self._pack_arg is None and not (path / "pack.json").is_file():
            raise WeightsError("No style pack is installed yet: use a style picture "
                               "(--style-image) or give a pack (--pack DIR).")
        return path

    @property
    def pack(self) -> StylePack:
        if self._pack is None:
            self._pack = load_pack(self._pack_dir())
        return self._pack

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(self.pack.generator, backend=self._backend, tile=self._tile)
        return self._engine

    @property
    def styles(self) -> list[StyleInfo]:
        """The pack's styles; read from pack.json alone until the weights are needed."""
        if self._pack is not None:
            return list(self._pack.styles)
        return read_pack_styles(self._pack_dir())

    def style_weights(self, style: StyleChoice) -> np.ndarray:
        """A style id (or unambiguous prefix), index, or {id: weight} blend → weights."""
        if isinstance(style, Mapping):
            w = np.zeros(self.pack.config.num_styles, np.float32)
            for sid, weight in style.items():
                w[self.pack.index(sid)] += float(weight)
            return self.engine.style_weights(list(w))
        if isinstance(style, (int, np.integer)):
            return self.engine.style_weights(int(style))
        return self.engine.style_weights(self.pack.index(str(style)))

    # -- stylising ------------------------------------------------------------------------------
    def stylize(self, photo: PhotoInput, style: StyleChoice, *, strength: float = 1.0,
                keep_colors: bool = False, mask: PhotoInput | None = None,
                max_size: int | None = None, stroke: float | str = 1.0) -> np.ndarray:
        """One photo → stylised H×W×3 uint8 (photo size, or `max_size` on the long side)."""
        return self.stylize_many([photo], style, strength=strength, keep_colors=keep_colors,
                                 mask=mask, max_size=max_size, stroke=stroke)[0]

    def stylize_many(self, photos: Sequence[PhotoInput], style: StyleChoice, *,
                     strength: float = 1.0, keep_colors: bool = False,
                     mask: PhotoInput | None = None, max_size: int | None = None,
                     progress: Callable[[float], None] | None = None,
                     stroke: float | str = 1.0) -> list[np.ndarray]:
        """Several photos in one batched call (same-size photos share one compiled program).

        The generator runs at a long side set by `stroke` alone (stylejax.stroke), so texture
        keeps its size relative to the picture whatever the photo's resolution; the result is
        resized to the photo and blended with it there.
        """
        stroke = parse_stroke(stroke)
        if not 0.0 <= float(strength) <= 1.0:
            raise InvalidRequestError(f"Strength must be between 0 and 1, got {strength}.")
        if max_size is not None and max_size < 16:
            raise InvalidRequestError(f"The size limit must be at least 16 pixels, got {max_size}.")
        w = self.style_weights(style)
        rgbs = [load_photo(p) for p in photos]
        if max_size is not None:
            rgbs = [resize_max_side(r, max_size) for r in rgbs]
        floats = [to_float(r) for r in rgbs]
        work = [to_float(_fit_long_side(r, pack_work_side(stroke))) for r in rgbs]
        raw = self.engine.run([Request(f, w) for f in work], progress)
        out = []
        for f, y in zip(floats, raw):
            if y.shape[:2] != f.shape[:2]:
                y = to_float(_fit_shape(to_uint8(np.asarray(y)), f.shape[:2]))
            out.append(to_uint8(np.asarray(apply_controls(
                f, y, strength, keep_colors, _mask_for(mask, f.shape[:2])))))
        return out

    def stylize_with_image(self, photo: PhotoInput, style_image: PhotoInput, *,
                           strength: float = 1.0, keep_colors: bool = False,
                           max_size: int = 512, config: CustomStyleConfig | None = None,
                           progress: Callable[[float, dict], None] | None = None,
                           should_stop: Callable[[], bool] | None = None,
                           stroke: float | str | None = None) -> CustomStyleResult:
        """Any style picture, no pack needed: optimisation within a time budget (~30 s).

        `stroke` (stylejax.stroke) overrides the config's; None keeps it.
        """
        if not 0.0 <= float(strength) <= 1.0:
            raise InvalidRequestError(f"Strength must be between 0 and 1, got {strength}.")
        rgb = load_photo(photo)
        style_rgb = load_photo(style_image)
        cfg = config or CustomStyleConfig(size=max_size)
        if stroke is not None:
            cfg = dataclasses.replace(cfg, stroke=parse_stroke(stroke))
        result = stylize_with_image(rgb, style_rgb, cfg, keep_colors=keep_colors,
                                    progress=progress, should_stop=should_stop)
        if strength < 1.0:
            from PIL import Image

            base = np.asarray(Image.fromarray(rgb).resize(
                (result.image.shape[1], result.image.shape[0]), Image.LANCZOS), np.float32) / 255
            result.image = to_uint8(np.asarray(apply_controls(base, to_float(result.image),
                                                              strength)))
        return result
