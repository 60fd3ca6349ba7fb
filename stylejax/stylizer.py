"""The Python API: `Stylizer` turns photos into stylised pictures, from a pack or any picture.

    from stylejax import Stylizer
    s = Stylizer()                                   # the default pack (if installed)
    out = s.stylize("photo.jpg", "starry", strength=0.7)
    out = s.stylize_with_image("photo.jpg", "my_style.jpg").image  # any-style model or optimiser
    out = s.run(StyleRequest.create(style="starry", stroke="large"), "photo.jpg")

Every front end (CLI, service workers, notebook widget) goes through this class, with a
`StyleRequest` (stylejax.request) that was validated where it was made: `run` / `run_many` /
`run_custom` take it as it is; `stylize*` are the keyword form for Python callers.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .colour import ColourStats, colour_stats, match_colours
from .custom_style import CustomStyleConfig, CustomStyleResult, stylize_with_image
from .engine import Engine, Request
from .errors import InvalidRequestError, StyleJAXError, WeightsError
from .generator import apply_controls
from .imageio import (
    DecodedImage,
    decode_image,
    resize_long_side,
    resize_max_side,
    resize_to,
    to_float,
    to_uint8,
)
from .pack import StyleInfo, StylePack, default_pack_dir, load_pack, read_pack_styles
from .request import RegionSpec, RegionStyle, StyleRequest
from .stroke import MAX_STROKE, pack_work_side
from .style_vectors import AnyStyle

PhotoInput = np.ndarray | bytes | str | os.PathLike
VIDEO_PACK = "video"  # a pack's subfolder holding its video generator (Stylizer.for_video)
StyleChoice = str | int | Mapping[str, float]


def load_photo(photo: PhotoInput, max_side: int | None = None) -> np.ndarray:
    """Any accepted photo input → H×W×3 uint8 (validated, EXIF-rotated, alpha composited);
    files and bytes are decoded at `max_side` at most (the size they will be used at)."""
    if isinstance(photo, np.ndarray):
        if photo.ndim != 3 or photo.shape[2] != 3:
            raise StyleJAXError("A photo array must be H×W×3.")
        return photo if photo.dtype == np.uint8 else to_uint8(photo)
    if isinstance(photo, DecodedImage):
        return photo.rgb
    return decode_image(photo, max_side=max_side).rgb


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


class Stylizer:
    """Stylise photos with a style pack's generator, or with any style picture (the any-style
    model when one is installed, else optimisation).

    `anystyle` is the any-style model's folder (or an `AnyStyle`); None: the one
    $STYLEJAX_ANYSTYLE_MODEL names, else the bundled one, if any (stylejax.style_vectors).
    """

    def __init__(self, pack: str | os.PathLike | StylePack | None = None, *,
                 backend: str = "auto", tile: int = 1024,
                 anystyle: str | os.PathLike | AnyStyle | None = None,
                 palette: float | None = None):
        self._pack_arg = pack
        self._palette = palette  # None: the pack's own amount (pack.json "palette")
        self._style_colours: dict[int, ColourStats] = {}
        self._backend = backend
        self._tile = tile
        self._pack: StylePack | None = pack if isinstance(pack, StylePack) else None
        self._engine: Engine | None = None
        self.anystyle = (anystyle if isinstance(anystyle, AnyStyle)
                         else AnyStyle(anystyle, backend=backend, tile=tile))
        self._video: Stylizer | None = None

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

    def for_video(self) -> Stylizer:
        """The stylizer clips go through: the pack's video generator (a cheaper student
        distilled from this pack, in its `video/` folder: trainer/distill.py) when it has one
        with the same styles, else this one. A clip is hundreds of frames, so the frame rate
        matters more there than the last bit of likeness to the pack."""
        if self._video is None:
            self._video = self
            root = self.pack.root
            if root is not None and (root / VIDEO_PACK / "pack.json").is_file():
                student = load_pack(root / VIDEO_PACK)
                if [s.id for s in student.styles] != [s.id for s in self.pack.styles]:
                    raise WeightsError(f"The pack's {VIDEO_PACK}/ generator has other styles "
                                       "than the pack.")
                self._video = Stylizer(student, backend=self._backend, tile=self._tile,
                                       anystyle=self.anystyle)
                self._video._video = self._video
        return self._video

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

    # -- the styles' palettes ---------------------------------------------------------------------
    @property
    def palette(self) -> float:
        """How far a pack result's colours move onto its style's (stylejax.colour)."""
        return self.pack.palette if self._palette is None else self._palette

    def palette_stats(self, weights: np.ndarray) -> ColourStats:
        """The colour statistics of a style, or of a blend: the moments of the mixture of its
        styles' colours, each read once from the style's thumbnail."""
        mean, second = np.zeros(3), np.zeros((3, 3))
        for i in np.flatnonzero(weights):
            if i not in self._style_colours:
                path = self.pack.thumbnail_path(self.pack.styles[i].id)
                if path is None:
                    raise WeightsError(f"Style '{self.pack.styles[i].id}' has no thumbnail "
                                       "to read its palette from.")
                self._style_colours[i] = colour_stats(decode_image(path).rgb)
            c = self._style_colours[i]
            mean += weights[i] * c.mean
            second += weights[i] * (c.cov + np.outer(c.mean, c.mean))
        return ColourStats(mean, second - np.outer(mean, mean))

    def _with_palette(self, y: np.ndarray, weights: np.ndarray, request: StyleRequest,
                      palette: bool) -> np.ndarray:
        if not palette or self.palette <= 0 or request.keep_colors:
            return y
        return match_colours(np.asarray(y), self.palette_stats(weights), self.palette)

    # -- stylising ------------------------------------------------------------------------------
    def run(self, request: StyleRequest, photo: PhotoInput, *,
            style_image: PhotoInput | None = None, max_size: int | None = None,
            mask: PhotoInput | None = None, config: CustomStyleConfig | None = None,
            progress: Callable[[float], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """One request on one photo → H×W×3 uint8, whichever path the request takes.

        The request was validated when it was made (`StyleRequest.create`); nothing is checked
        twice here. A custom-style request reads `style_image` (or the file its reference
        names); `max_size` caps the pack path's result, the custom path's size is `config`'s.
        """
        if request.is_custom:
            return self.run_custom(
                request, photo, style_image, config=config, should_stop=should_stop,
                progress=None if progress is None else (lambda f, _losses: progress(f))).image
        return self.run_many(request, [photo], max_size=max_size, mask=mask,
                             progress=progress)[0]

    def run_many(self, request: StyleRequest, photos: Sequence[PhotoInput], *,
                 max_size: int | None = None, mask: PhotoInput | None = None,
                 progress: Callable[[float], None] | None = None,
                 palette: bool = True) -> list[np.ndarray]:
        """A pack request on several photos in one batched call (same-size photos share one
        compiled program). The generator's output takes the style's palette by the pack's
        amount unless the request keeps the photo's colours; `palette=False` leaves it out
        (video frames: a map per frame is not measured for flicker).

        The generator runs at a long side set by the stroke alone (stylejax.stroke), so texture
        keeps its size relative to the picture whatever the photo's resolution; the result is
        resized to the photo and blended with it there. A request with `regions` (or a `mask`)
        gets a style per region (`_run_regions`, stylejax.compose).
        """
        if request.is_custom:
            raise ValueError("run_many takes pack-style requests; use run_custom")
        if max_size is not None and max_size < 16:
            raise InvalidRequestError(f"The size limit must be at least 16 pixels, got {max_size}.")
        rgbs = [load_photo(p, max_size) for p in photos]
        if max_size is not None:
            rgbs = [resize_max_side(r, max_size) for r in rgbs]
        floats = [to_float(r) for r in rgbs]
        work = [to_float(resize_long_side(r, pack_work_side(request.stroke))) for r in rgbs]
        if request.regions is not None or mask is not None:
            return self._run_regions(request, floats, work, mask, progress, palette)
        w = self.style_weights(request.style_choice)
        raw = self.engine.run([Request(f, w) for f in work], progress)
        out = []
        for f, y in zip(floats, raw):
            y = self._with_palette(y, w, request, palette)
            if y.shape[:2] != f.shape[:2]:
                y = to_float(resize_to(to_uint8(np.asarray(y)), f.shape[:2]))
            out.append(to_uint8(np.asarray(apply_controls(
                f, y, request.strength, request.keep_colors, _mask_for(mask, f.shape[:2])))))
        return out

    def _run_regions(self, request: StyleRequest, floats: list[np.ndarray],
                     work: list[np.ndarray], mask: PhotoInput | None,
                     progress: Callable[[float], None] | None,
                     palette: bool = True) -> list[np.ndarray]:
        """A style per region (stylejax.compose): every photo stylised whole once per distinct
        style, all in one engine call (they share the stroke, hence the working size), then
        blended with the photo's region masks. A bare `mask` is the region "mask" in the
        request's style and strength."""
        from .compose import compose

        spec = request.regions or RegionSpec(entries=(RegionStyle("mask"),))
        # each entry's style → a style choice; entries naming the request's own style share it
        choices: dict[str | None, str | dict[str, float]] = {}
        for e in spec.entries:
            choices[e.style] = request.style_choice if e.style is None else e.style
        distinct: list[str | dict[str, float]] = []
        for c in choices.values():
            if c not in distinct:
                distinct.append(c)
        ws = [self.style_weights(c) for c in distinct]
        raw = self.engine.run([Request(f, w) for f in work for w in ws], progress)
        out = []
        for i, f in enumerate(floats):
            user_mask = None if mask is None else _mask_for(mask, f.shape[:2])[..., 0]
            by_choice = []
            for w, y in zip(ws, raw[i * len(ws):(i + 1) * len(ws)], strict=True):
                y = self._with_palette(y, w, request, palette)
                if y.shape[:2] != f.shape[:2]:
                    y = to_float(resize_to(to_uint8(np.asarray(y)), f.shape[:2]))
                by_choice.append(np.asarray(apply_controls(f, y, 1.0, request.keep_colors)))
            styled = {key: by_choice[distinct.index(c)] for key, c in choices.items()}
            out.append(to_uint8(compose(f, spec, styled, request.strength, user_mask)))
        return out

    def run_custom(self, request: StyleRequest, photo: PhotoInput,
                   style_image: PhotoInput | None = None, *,
                   config: CustomStyleConfig | None = None,
                   progress: Callable[[float, dict], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> CustomStyleResult:
        """A custom-style request: the any-style model's one pass when it is installed (steps
        0), optimisation towards the picture within a time budget when it is not or when the
        request asks to `refine` (then starting from the model's result).

        The picture is `style_image`, or the file the request's reference names. The result is
        at most `config.size` on its long side (the model's) or exactly that (optimised), and
        says how many steps ran and whether it stopped early (a worker shutting down needs it).
        """
        if not request.is_custom:
            raise ValueError("run_custom takes custom-style requests; use run_many")
        start = time.monotonic()
        cfg = dataclasses.replace(config or CustomStyleConfig(), stroke=request.stroke)
        rgb = load_photo(photo, cfg.size)
        # the style picture is viewed at most at the result's size × the largest stroke
        style_rgb = load_photo(request.style_image if style_image is None else style_image,
                               MAX_STROKE * max(cfg.size, cfg.style_size or 0))
        init = None
        if self.anystyle.available():
            small = resize_max_side(rgb, cfg.size)
            if not request.refine:
                image = self.anystyle.stylize(request, small, style_rgb)
                return CustomStyleResult(image=image, seconds=time.monotonic() - start,
                                         steps=0, stopped_early=False)
            # the optimiser's start: the model's full-strength style, its colours unchanged
            init = self.anystyle.stylize(dataclasses.replace(request, strength=1.0,
                                                             keep_colors=False),
                                         small, style_rgb)
        result = stylize_with_image(rgb, style_rgb, cfg, keep_colors=request.keep_colors,
                                    progress=progress, should_stop=should_stop, init=init)
        if request.strength < 1.0:
            from PIL import Image

            base = np.asarray(Image.fromarray(rgb).resize(
                (result.image.shape[1], result.image.shape[0]), Image.LANCZOS), np.float32) / 255
            result.image = to_uint8(np.asarray(apply_controls(base, to_float(result.image),
                                                              request.strength)))
        return result

    # -- the keyword API (thin wrappers over `run`) --------------------------------------------
    def _pack_request(self, style: StyleChoice, strength: float, keep_colors: bool,
                      stroke: float | str | None) -> StyleRequest:
        if isinstance(style, (int, np.integer)):  # a style number: the pack's order
            styles = self.styles
            if not 0 <= int(style) < len(styles):
                self.engine.style_weights(int(style))  # raises the engine's UnknownStyleError
            style = styles[int(style)].id
        if isinstance(style, Mapping):
            return StyleRequest.create(blend=style, strength=strength, keep_colors=keep_colors,
                                       stroke=stroke)
        return StyleRequest.create(style=str(style), strength=strength,
                                   keep_colors=keep_colors, stroke=stroke)

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
        """Several photos in one batched call: `run_many` with the options as keywords."""
        request = self._pack_request(style, strength, keep_colors, stroke)
        return self.run_many(request, photos, max_size=max_size, mask=mask, progress=progress)

    def stylize_with_image(self, photo: PhotoInput, style_image: PhotoInput, *,
                           strength: float = 1.0, keep_colors: bool = False,
                           max_size: int = 512, config: CustomStyleConfig | None = None,
                           progress: Callable[[float, dict], None] | None = None,
                           should_stop: Callable[[], bool] | None = None,
                           stroke: float | str | None = None,
                           refine: bool = False) -> CustomStyleResult:
        """Any style picture, no pack needed: the any-style model (instant) when installed,
        else (or with `refine`) optimisation within a time budget (~30 s).

        `stroke` (stylejax.stroke) overrides the config's; None keeps it.
        """
        cfg = config or CustomStyleConfig(size=max_size)
        ref = os.fspath(style_image) if isinstance(style_image, str | os.PathLike) else "picture"
        request = StyleRequest.create(style_image=ref, strength=strength,
                                      keep_colors=keep_colors, refine=refine,
                                      stroke=cfg.stroke if stroke is None else stroke)
        return self.run_custom(request, photo, style_image, config=cfg, progress=progress,
                               should_stop=should_stop)
