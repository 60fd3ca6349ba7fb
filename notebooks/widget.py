"""`StylizeWidget`: stylise photos in Jupyter, in-process, for one user.

    from notebooks import widget
    w = widget("photo.jpg")          # shows itself as a cell's last expression
    w.result                         # the full-resolution result, a PIL image

What it shows: a photo upload, a gallery of the pack's styles (thumbnails), strength, stroke
size (small/medium/large), a second style to blend with and its mix, keep colours, a custom
style from any picture (optimisation in a background thread, with a progress bar and cancel),
before/after side by side and a PNG download link. A video or an animated GIF / WebP (a path,
bytes, or the upload button) goes through `stylize_video` (`stylejax.video`, stable mode) with
the current pack style and controls, and plays inline (`video_widget`). Every control change
first renders a quick low-resolution preview, then the full size; changes are debounced so
dragging a slider does not queue up work.

Where the style goes (issue 16, docs/regions.md): a "Where" choice (everywhere, background,
person, clothing or sky only, or only where you paint), "keep faces", a feather radius
(0–100 px of the result) and "Elsewhere", a second pack style for the rest of the picture.
With a region chosen, the "Before" picture becomes an `ipycanvas` canvas showing the photo with
the region tinted (where the style goes), and a brush paints or erases it with the mouse
(paint / erase, brush size, "Undo my painting"). Once painted, the painting is the region
"mask" (the CLI's --mask); faces stay kept with keep=face.

The logic is plain Python and callable without a browser, which is how the tests drive it:
`set_image`, `select_style`, `strength.value = …`, `where.value = "person"`,
`paint(x, y, radius, erase=False)`, `paint_line`, `undo_painting`, `run(full=True)`,
`start_custom`, `wait`. With `sync=True` every change renders at full size at once, in the
calling thread.

All model work goes through `stylejax.Stylizer` (the same path as the CLI and the service
workers) and the region composition through `stylejax.compose` (the engine's); this module only
adds the user interface, a small cache of raw generator outputs (so strength, keep colours and
the regions are instant), a cache of the photo's region masks (the segmenter runs once per
photo and region, for the overlay and every render) and the threads.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
from ipycanvas import Canvas
from PIL import Image

from stylejax import compose
from stylejax.custom_style import CustomStyleConfig
from stylejax.errors import (
    RegionNotFoundError,
    StyleJAXError,
    WeightsError,
)
from stylejax.generator import apply_controls
from stylejax.imageio import (
    DecodedImage,
    decode_image,
    encode_image,
    picture_to_rgb,
    resize_max_side,
    to_float,
    to_uint8,
)
from stylejax.request import RegionSpec, RegionStyle, StyleRequest
from stylejax.stroke import STROKES
from stylejax.stylizer import Stylizer
from stylejax.video import is_video_file, probe_video
from stylejax.video import stylize_video as _stylize_video

logger = logging.getLogger(__name__)

CUSTOM = ":custom"  # the id of "your own style" (a colon never appears in a pack's style ids)
_THUMB = 88
_OK, _BUSY, _ERROR = "#1a7f37", "#555555", "#c62828"
# "Where" choices: (label, region). "mask" starts empty: the style goes only where you paint.
WHERE = (("everywhere", "everywhere"), ("background only", "background"),
         ("person only", "person"), ("clothing only", "clothing"), ("sky only", "sky"),
         ("where I paint", "mask"))
_TINT = np.array([79, 70, 229], np.float32)  # the overlay's accent colour (as the web page's)
_TINT_ALPHA = 0.55
_PAINT_FIRST = ("Paint where the style goes on the photo with the brush, or choose another "
                "'Where'.")
_PAINT_HINT = "Or paint the region by hand with the brush."
_REGION_TEXT = {"background": "the background", "person": "the person",
                "clothing": "the clothing", "sky": "the sky", "mask": "where you painted"}

ImageInput = str | os.PathLike | bytes | np.ndarray | Image.Image | DecodedImage


def to_rgb(image: ImageInput) -> np.ndarray:
    """A path, bytes, array or PIL image → H×W×3 uint8, with the same checks as uploads.

    Bytes and files go through `decode_image` (format allow-list, size limits, EXIF rotation,
    alpha composited on white); arrays and PIL images through `picture_to_rgb`, the same
    normalisation and limits (both in `stylejax.imageio`).
    """
    if isinstance(image, DecodedImage):
        return image.rgb
    if isinstance(image, (bytes, bytearray, memoryview, str, os.PathLike)):
        return decode_image(bytes(image) if isinstance(image, (bytearray, memoryview))
                            else image).rgb
    if isinstance(image, (Image.Image, np.ndarray)):
        return picture_to_rgb(image)
    raise StyleJAXError(f"Cannot use a {type(image).__name__} as a picture: give a file "
                        "path, bytes, a NumPy array or a PIL image.")


def _jpeg(rgb: np.ndarray, side: int) -> bytes:
    return encode_image(resize_max_side(rgb, side), "jpeg", quality=88)


def _placeholder(side: int = _THUMB) -> bytes:
    tile = np.full((side, side, 3), 225, np.uint8)
    tile[side // 2 - 1: side // 2 + 1] = 190
    return encode_image(tile, "png")


def _thumbnail(path: Path | None) -> bytes:
    if path is None or not path.is_file():
        return _placeholder()
    try:
        rgb = decode_image(path).rgb
    except StyleJAXError:
        return _placeholder()
    h, w = rgb.shape[:2]  # centre square, so the gallery lines up
    s = min(h, w)
    sq = rgb[(h - s) // 2: (h - s) // 2 + s, (w - s) // 2: (w - s) // 2 + s]
    return encode_image(np.asarray(Image.fromarray(sq).resize((_THUMB, _THUMB), Image.LANCZOS)),
                        "jpeg", quality=88)


def _short(name: str) -> str:
    return name.split(" (")[0]


class StylizeWidget:
    """An ipywidgets front end over `Stylizer`; display it, or drive it from Python.

    image         optional first photo (path, bytes, array, PIL image)
    stylizer      a `Stylizer` to share between widgets (default: one on `pack`)
    pack          a style pack folder (default: the bundled pack)
    lang          language of the style names ("en", "zh", …)
    preview_size  long side of the quick preview (pixels)
    max_size      long side of the full result; larger photos are shrunk (None: no limit)
    display_size  long side of the pictures shown in the notebook (the result keeps its size)
    debounce      seconds of quiet after a change before rendering starts
    sync          render every change at full size at once, in the calling thread (tests,
                  scripts); otherwise rendering runs in a background thread
    custom_config the optimisation settings for custom styles (size, steps, time budget)
    """

    def __init__(self, image: ImageInput | None = None, *, stylizer: Stylizer | None = None,
                 pack: str | os.PathLike | None = None, lang: str = "en",
                 preview_size: int = 256, max_size: int | None = 2048,
                 display_size: int = 512, debounce: float = 0.25, sync: bool = False,
                 custom_config: CustomStyleConfig | None = None, backend: str = "auto"):
        self.stylizer = stylizer or Stylizer(pack, backend=backend)
        self.lang = lang
        self.preview_size = int(preview_size)
        self.max_size = max_size
        self.display_size = int(display_size)
        self.debounce = float(debounce)
        self.sync = sync
        self.custom_config = custom_config or CustomStyleConfig()

        self._photo: np.ndarray | None = None
        self._photo_name = "photo"
        self._photo_version = 0
        self._raw: OrderedDict[tuple, np.ndarray] = OrderedDict()  # generator outputs, uint8
        self._style_id: str | None = None
        self._custom_style: np.ndarray | None = None
        self._custom_raw: np.ndarray | None = None   # optimised picture (strength 1, no controls)
        self._custom_photo: np.ndarray | None = None  # the photo at the optimised picture's size
        self._custom_stroke: str | None = None        # the stroke size it was optimised at
        self._custom_refine: bool | None = None       # whether it was refined (optimised)
        self._lock = threading.RLock()   # one render at a time
        self._token = 0                  # bumped by every change; stale renders are dropped
        self._token_lock = threading.Lock()  # (not _lock: a change never waits for a render)
        self._timer: threading.Timer | None = None
        self._custom_thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._pack_style: str | None = None  # the last pack style chosen (custom aside)
        self._masks: dict[str, np.ndarray] = {}    # this photo's automatic region masks, full size
        self._mask_lock = threading.Lock()         # (the segmenter runs once per photo + region)
        self._painted: dict[str, np.ndarray] = {}  # hand-painted masks (uint8) per Where choice
        self._paint_version = 0
        self._overlay_key: tuple | None = None
        self._stroke_at: tuple[float, float] | None = None  # brush stroke in progress (photo px)

        self.result_array: np.ndarray | None = None   # full-resolution result, H×W×3 uint8
        self.preview_array: np.ndarray | None = None  # latest quick preview
        self.last_error: str | None = None
        self.overlay_array: np.ndarray | None = None  # the photo with the region tinted
        self.no_pack: str | None = None  # why there are no pack styles, when there are none
        self.renders = {"preview": 0, "full": 0}      # how much work was done (tests, tuning)
        self.video_path: Path | None = None           # the last stylised video (stylize_video)
        self.video_widget: widgets.Widget | None = None
        self.video_result = None                      # its stylejax.video.VideoResult

        self._build_ui()
        if self.no_pack:
            self._say(f"{self.no_pack} Custom styles still work: upload a photo and a style "
                      "picture.", _BUSY)
        if image is not None:
            self._guard(self.set_image, image)

    # -- the user interface ------------------------------------------------------------------------
    def _build_ui(self) -> None:
        W = widgets
        try:
            styles = self.stylizer.styles
        except WeightsError as err:  # no pack: custom styles still work
            styles, self.no_pack = [], str(err)
        self._names = {s.id: s.name(self.lang) for s in styles}
        root = getattr(self.stylizer.pack, "root", None) if styles else None

        self.upload = W.FileUpload(accept="image/*,video/*", multiple=False, description="Photo",
                                   icon="upload",
                                   tooltip="Upload a photo (JPEG, PNG, WebP) or a video / GIF")
        self.upload.observe(self._on_upload, "value")
        self.status = W.Label("Upload a photo to begin.")

        self.style_buttons: dict[str, widgets.Button] = {}
        cards = []
        for s in styles:
            button = W.Button(description=_short(s.name(self.lang)), tooltip=self._credit(s),
                              layout=W.Layout(width=f"{_THUMB + 8}px"))
            button.on_click(lambda _b, sid=s.id: self._guard(self.select_style, sid))
            self.style_buttons[s.id] = button
            thumb = _thumbnail(root / s.thumbnail if root and s.thumbnail else None)
            image = W.Image(value=thumb, format="jpeg" if thumb[:2] == b"\xff\xd8" else "png",
                            width=_THUMB, height=_THUMB)
            cards.append(W.VBox([image, button], layout=W.Layout(align_items="center",
                                                                  margin="2px")))
        self._custom_thumb = W.Image(value=_placeholder(), format="png", width=_THUMB,
                                     height=_THUMB)
        custom_button = W.Button(description="Your style", layout=W.Layout(width=f"{_THUMB + 8}px"),
                                 tooltip="The style made from your own picture")
        custom_button.on_click(lambda _b: self._guard(self.select_style, CUSTOM))
        self.style_buttons[CUSTOM] = custom_button
        self._custom_card = W.VBox([self._custom_thumb, custom_button],
                                   layout=W.Layout(align_items="center", margin="2px",
                                                   display="none"))
        self.gallery = W.HBox(cards + [self._custom_card], layout=W.Layout(flex_flow="row wrap"))

        self.strength = W.FloatSlider(value=1.0, min=0.0, max=1.0, step=0.05,
                                      description="Strength", readout_format=".2f")
        self.keep_colors = W.Checkbox(value=False, description="Keep photo colours", indent=False)
        self.stroke = W.ToggleButtons(options=list(STROKES), value="medium", description="Strokes",
                                      tooltips=["Finer texture", "The style's own scale",
                                                "Broader texture"],
                                      style={"button_width": "72px"})
        self.stroke.observe(self._on_stroke, "value")
        # index=0 rather than value=None: ipywidgets 8 shows value None as an empty box
        self.blend_with = W.Dropdown(options=[("(none)", None)] + [
            (_short(s.name(self.lang)), s.id) for s in styles], index=0,
            description="Blend with")
        self.mix = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="Mix",
                                 readout_format=".2f", disabled=True)
        for control in (self.strength, self.keep_colors, self.blend_with, self.mix):
            control.observe(self._on_control, "value")

        # where the style goes (stylejax.compose): a region, faces kept, a feathered border, the
        # rest of the picture in a second style; a brush paints or erases the region by hand
        self.where = W.Dropdown(options=WHERE, value="everywhere", description="Where")
        self.keep_faces = W.Checkbox(value=False, description="Keep faces", indent=False)
        self.feather = W.IntSlider(value=0, min=0, max=100, step=1, description="Feather",
                                   tooltip="Widen the region's border by this many pixels")
        self.rest_style = W.Dropdown(options=[("(the photo)", None)] + [
            (_short(s.name(self.lang)), s.id) for s in styles], index=0,
            description="Elsewhere", disabled=True,
            tooltip="The rest of the picture in another style")
        for control in (self.where, self.keep_faces, self.feather, self.rest_style):
            control.observe(self._on_region, "value")
        self.brush = W.ToggleButtons(options=[("paint", "paint"), ("erase", "erase")],
                                     value="paint", description="Brush",
                                     style={"button_width": "64px"})
        self.brush_size = W.IntSlider(value=24, min=2, max=120, step=1, description="Brush size",
                                      tooltip="Brush diameter in screen pixels")
        self.undo_paint = W.Button(description="Undo my painting", icon="undo", disabled=True)
        self.undo_paint.on_click(lambda _b: self._guard(self.undo_painting))
        self.region_tools = W.HBox([self.brush, self.brush_size, self.undo_paint],
                                   layout=W.Layout(align_items="center", display="none"))
        # the overlay: the photo with the region tinted, painted on with the mouse
        self.canvas = Canvas(width=4, height=3, layout=W.Layout(display="none", height="auto",
                                                                max_width="100%"))
        self.canvas.on_mouse_down(self._on_mouse_down)
        self.canvas.on_mouse_move(self._on_mouse_move)
        self.canvas.on_mouse_up(self._on_mouse_up)
        self.canvas.on_mouse_out(self._on_mouse_up)

        self.style_upload = W.FileUpload(accept="image/*", multiple=False,
                                         description="Your style", icon="paint-brush",
                                         tooltip="Any picture: its style is applied in a "
                                                 "second (any-style model), or by "
                                                 "optimisation (~30 s) without one")
        self.style_upload.observe(self._on_style_upload, "value")
        self.custom_button = W.Button(description="Apply my style", disabled=True,
                                      icon="play")
        self.custom_button.on_click(lambda _b: self._guard(self.start_custom))
        self.refine = W.ToggleButton(value=False, description="Refine", icon="magic",
                                     tooltip="Your style: optimise on top of the instant "
                                             "result (slower, ~30 s)")
        self.refine.observe(self._on_refine, "value")
        self.cancel_button = W.Button(description="Cancel", disabled=True, icon="stop")
        self.cancel_button.on_click(lambda _b: self.cancel_custom())
        self.progress = W.IntProgress(value=0, min=0, max=100, description="Custom",
                                      bar_style="info")

        # flex-start: the pictures and the canvas at their own pixel size, side by side at the
        # same scale (the column's default "stretch" blew a portrait photo up to its width)
        box = W.Layout(width=f"{self.display_size + 10}px", align_items="flex-start")
        self.before = W.Image(format="jpeg", layout=W.Layout(max_width=f"{self.display_size}px"))
        self.after = W.Image(format="jpeg", layout=W.Layout(max_width=f"{self.display_size}px"))
        self.download = W.HTML("")
        self.video_box = W.VBox([])  # a stylised video plays here

        self.ui = W.VBox([
            W.HBox([self.upload, self.status], layout=W.Layout(align_items="center")),
            self.gallery,
            W.HBox([self.strength, self.keep_colors], layout=W.Layout(align_items="center")),
            self.stroke,
            W.HBox([self.blend_with, self.mix]),
            W.HBox([self.where, self.keep_faces, self.feather, self.rest_style],
                   layout=W.Layout(align_items="center", flex_flow="row wrap")),
            self.region_tools,
            W.HBox([self.style_upload, self.custom_button, self.refine, self.cancel_button,
                    self.progress],
                   layout=W.Layout(align_items="center")),
            W.HBox([W.VBox([W.HTML("<b>Before</b>"), self.before, self.canvas], layout=box),
                    W.VBox([W.HTML("<b>After</b>"), self.after], layout=box)]),
            self.download,
            self.video_box,
        ])

    def _credit(self, s) -> str:
        bits = [s.name(self.lang), s.author, s.license]
        return " — ".join(b for b in bits if b)

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.ui._repr_mimebundle_(**kwargs)

    def _say(self, text: str, color: str = _BUSY) -> None:
        self.status.value = text
        self.status.style.text_color = color

    def _fail(self, err: BaseException) -> None:
        if isinstance(err, StyleJAXError):
            message = str(err)
        else:  # a bug rather than a bad input: say what it was, keep the traceback in the log
            logger.exception("StylizeWidget failed")
            message = f"Something went wrong ({type(err).__name__}: {err})."
        self.last_error = message
        self._say(message, _ERROR)

    def _guard(self, fn, *args) -> Any:
        """Run a callback; errors become the status line instead of a traceback in a thread."""
        try:
            return fn(*args)
        except Exception as err:
            self._fail(err)
            return None

    # -- inputs --------------------------------------------------------------------------------
    def set_image(self, image: ImageInput, name: str | None = None) -> None:
        """Use this photo (path, bytes, array, PIL image). Raises `StyleJAXError` for a bad
        picture, after putting the message in the status line."""
        try:
            rgb = to_rgb(image)
        except StyleJAXError as err:
            self._fail(err)
            raise
        if self.max_size is not None:
            rgb = resize_max_side(rgb, self.max_size)
        if name is None and isinstance(image, (str, os.PathLike)):
            name = Path(image).name
        with self._lock:
            self._photo = rgb
            self._photo_name = Path(name).stem if name else "photo"
            self._photo_version += 1
            self._raw.clear()
            self._masks.clear()
            self._painted.clear()
            self._overlay_key = None
            self.result_array = self.preview_array = None
            self.last_error = None
        self.before.value = _jpeg(rgb, self.display_size)
        self.after.value = b""
        self.download.value = ""
        if self._style_id == CUSTOM:  # that optimised picture belongs to the old photo
            self._custom_raw = self._custom_photo = None
            self._custom_card.layout.display = "none"
            self._style_id = None
        if self._custom_style is not None:
            self.custom_button.disabled = False
        if self._style_id is None and self._names:
            self._style_id = self._pack_style or next(iter(self._names))
            self._highlight()
        if self._style_id is None:
            self._say("Photo ready. There is no style pack here: upload a style picture "
                      "('Your style').", _OK)
        self._changed()

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        f = files[0]
        self.upload.value = ()  # so the same file can be chosen again
        try:
            data = bytes(f["content"])
            if is_video_file(data):
                self.stylize_video(data)
            else:
                self.set_image(data, f.get("name"))
        except StyleJAXError:
            pass  # already in the status line
        except Exception as err:
            self._fail(err)

    def stylize_video(self, video: str | os.PathLike | bytes,
                      dst: str | os.PathLike | None = None, *, stable: bool = True):
        """Stylise a clip or an animated GIF / WebP (a path or its bytes) with the current
        pack style and controls, in the calling thread, and show it inline: an
        `ipywidgets.Video` (MP4) or, for an animation, an `ipywidgets.Image` of the same kind.
        The result goes to `dst` (default: a temporary .mp4 / .gif / .webp); its path is
        `video_path`, the shown widget `video_widget`, the outcome `video_result`. Raises a
        `StyleJAXError` (also shown in the status line) for a bad file or a custom style."""
        try:
            request = self._base_request()  # a video is styled everywhere
            if request is None:
                raise StyleJAXError("Choose a style first.")
            request = request.with_changes(media="video")  # custom styles: refused here
            with tempfile.TemporaryDirectory(prefix="stylejax-widget-") as tmp:
                src = video
                if isinstance(video, bytes | bytearray | memoryview):
                    src = Path(tmp, "upload")
                    src.write_bytes(bytes(video))
                info = probe_video(src)
                kind = info.container if info.container in ("gif", "webp") else "mp4"
                if dst is None:
                    dst = Path(tempfile.mkdtemp(prefix="stylejax-video-"), f"stylized.{kind}")
                self._say(f"Stylising {info.frames} frames…")
                self.progress.value, self.progress.bar_style = 0, "info"
                self.progress.description = "Video"

                def progress(fraction: float) -> None:
                    self.progress.value = int(round(100 * fraction))

                self.video_result = _stylize_video(self.stylizer, request, src, dst,
                                                   stable=stable, progress=progress, info=info)
        except Exception as err:
            self._fail(err)
            raise
        self.video_path = Path(dst)
        data = self.video_path.read_bytes()
        suffix = self.video_path.suffix.lower().lstrip(".")
        if suffix in ("gif", "webp"):
            shown = widgets.Image(value=data, format=suffix)
        else:
            shown = widgets.Video(value=data, format=suffix, autoplay=True, loop=True,
                                  controls=True)
        shown.layout = widgets.Layout(max_width=f"{self.display_size}px")
        self.video_widget = shown
        self.video_box.children = (widgets.HTML("<b>Video</b>"), shown)
        self.progress.bar_style = "success"
        r = self.video_result
        self._say(f"Done: {r.frames} frames, {r.duration_s:.1f} s, in {r.seconds:.0f} s.", _OK)
        return shown

    def set_style_image(self, image: ImageInput, name: str | None = None) -> None:
        """A picture to take a custom style from (then `start_custom`)."""
        try:
            rgb = to_rgb(image)
        except StyleJAXError as err:
            self._fail(err)
            raise
        self._custom_style = resize_max_side(rgb, 1024)
        self._custom_thumb.value = _thumbnail_from(rgb)
        self.custom_button.disabled = self._photo is None
        what = f"'{name}'" if name else "Style picture"
        self._say(f"{what} ready: press 'Apply my style'." if self._photo is not None
                  else f"{what} ready: now upload a photo.", _OK)

    def _on_style_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        f = files[0]
        self.style_upload.value = ()
        try:
            self.set_style_image(bytes(f["content"]), f.get("name"))
        except StyleJAXError:
            return
        except Exception as err:
            self._fail(err)
            return
        if self._photo is not None:
            self._guard(self.start_custom)

    def select_style(self, style_id: str) -> None:
        """Choose a pack style by id (or unambiguous prefix), or CUSTOM for your own style."""
        if style_id == CUSTOM:
            if self._custom_raw is None:
                raise StyleJAXError("No custom style yet: upload a style picture first.")
            if (self._custom_stroke, self._custom_refine) != (self.stroke.value,
                                                              self.refine.value):
                self.start_custom()  # made at another stroke size, or (not) refined
                return
        else:
            style_id = self.stylizer.styles[self._index(style_id)].id
            self._pack_style = style_id
        self._style_id = style_id
        self._highlight()
        self._changed()

    def _index(self, style_id: str) -> int:
        from stylejax.pack import find_style

        return find_style(self.stylizer.styles, style_id)

    def _highlight(self) -> None:
        for sid, button in self.style_buttons.items():
            button.button_style = ("primary" if sid == self._style_id else
                                   "info" if sid == self.blend_with.value else "")
        custom = self._style_id == CUSTOM
        self.blend_with.disabled = custom
        self.mix.disabled = custom or self.blend_with.value is None

    def _on_control(self, change) -> None:
        if change["owner"] is self.blend_with:
            self._highlight()
        self._changed()

    def _on_stroke(self, _change) -> None:
        """Pack styles re-render; a custom style is optimised again at the new stroke size (its
        texture scale is learnt, so it cannot be changed after the fact)."""
        if self._style_id == CUSTOM and self._custom_style is not None:
            self._guard(self.start_custom)
        else:
            self._changed()

    def _on_refine(self, _change) -> None:
        """Refine (or not) the custom style shown: it is made again."""
        if self._style_id == CUSTOM and self._custom_style is not None:
            self._guard(self.start_custom)

    # -- rendering -------------------------------------------------------------------------------
    @property
    def style_choice(self) -> str | Mapping[str, float] | None:
        """What goes to `Stylizer`: a style id, or {id: weight} when blending two styles."""
        sid, other, m = self._style_id, self.blend_with.value, round(float(self.mix.value), 3)
        if sid is None or sid == CUSTOM:
            return sid
        if other is None or other == sid or m <= 0.0:
            return sid
        if m >= 1.0:
            return other
        return {sid: 1.0 - m, other: m}

    @property
    def request(self) -> StyleRequest | None:
        """The controls as a StyleRequest, checked as in every front end (None: no style yet),
        with where the style goes (`region_spec`).

        A custom style's picture is the one uploaded here, so its reference is only a label.
        """
        base, spec = self._base_request(), self.region_spec
        return base if base is None or spec is None else base.with_changes(regions=spec)

    @property
    def region_spec(self) -> RegionSpec | None:
        """Where the style goes, as `Stylizer` takes it (None: everywhere). Once painted, the
        region is "mask" (the painted picture, like the CLI's --mask); faces are kept with
        keep=face; "Elsewhere" styles the rest of the picture (the region "everywhere", which
        the more specific region overrides)."""
        where = self.where.value
        region = "mask" if where in self._painted else where
        entries = [] if region == "everywhere" else [RegionStyle(region)]
        if entries and self.rest_style.value is not None:
            entries.append(RegionStyle("everywhere", self.rest_style.value))
        keep = ["face"] if self.keep_faces.value else []
        if not entries and not keep:
            return None
        return RegionSpec.create(entries, keep=keep, feather=float(self.feather.value))

    def _base_request(self) -> StyleRequest | None:
        """The style controls alone (no regions)."""
        choice = self.style_choice
        if choice is None:
            return None
        if choice == CUSTOM:
            kind: dict[str, Any] = {"style_image": "custom", "refine": bool(self.refine.value)}
        else:
            kind = {"blend": choice} if isinstance(choice, Mapping) else {"style": choice}
        return StyleRequest.create(**kind, strength=float(self.strength.value),
                                   keep_colors=bool(self.keep_colors.value),
                                   stroke=self.stroke.value)

    def _describe(self) -> str:
        if self._style_id == CUSTOM:
            text = "your style"
        else:
            text = self._names.get(self._style_id or "", "?")
            other = self.blend_with.value
            if isinstance(self.style_choice, Mapping):
                text += f" blended with {self._names[other]} at {self.mix.value:.2f}"
            elif other is not None and self.style_choice == other:
                text = self._names[other]
        text += f", strength {self.strength.value:.2f}, {self.stroke.value} strokes"
        text += ", photo colours" if self.keep_colors.value else ""
        spec = self.region_spec
        if spec is not None:
            region = spec.entries[0].region
            if region != "everywhere":
                text += f", only {_REGION_TEXT.get(region, region)}"
            if len(spec.entries) > 1:
                text += f", elsewhere {self._names.get(spec.entries[1].style, '?')}"
            text += ", faces kept" if spec.keep else ""
            text += f", feather {spec.feather:g} px" if spec.feather else ""
        return text

    def _changed(self) -> None:
        """A control or input changed: re-render (now, or debounced in the background), the
        region overlay first."""
        if self._photo is None:
            return
        if self.sync or self._style_id is None:
            self._guard(self._show_region)
            if self._style_id is not None:
                self._guard(self.run, True)
            return
        token = self._next_token()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(self.debounce, self._background, args=(token,))
        self._timer.daemon = True
        self._timer.start()

    def _next_token(self) -> int:
        with self._token_lock:
            self._token += 1
            return self._token

    def _background(self, token: int) -> None:
        try:
            self._show_region()
            small = self._photo is not None and max(self._photo.shape[:2]) > self.preview_size
            if small and self._style_id != CUSTOM:
                self._render(False, token)
            self._render(True, token)
        except Exception as err:
            self._fail(err)

    def run(self, full: bool = True) -> Image.Image | None:
        """Render the current settings now, in this thread: the full result (default) or only
        the quick preview. Returns the picture (PIL), or None without a photo."""
        if self._photo is None:
            self._say("Upload a photo first.", _ERROR)
            return None
        if self._timer is not None:
            self._timer.cancel()
        token = self._next_token()
        out = self._render(full, token)
        return None if out is None else Image.fromarray(out)

    def _styled(self, full: bool) -> tuple[np.ndarray, np.ndarray]:
        """(photo, raw stylised photo) as uint8 at the size of this render."""
        if self._style_id == CUSTOM:
            return self._custom_photo, self._custom_raw
        photo = self._photo if full else resize_max_side(self._photo, self.preview_size)
        if self.style_choice is None:
            raise StyleJAXError("Choose a style first.")
        return photo, self._raw_output(self.style_choice, photo)

    def _raw_output(self, choice: str | Mapping[str, float], photo: np.ndarray) -> np.ndarray:
        """The photo in a pack style (or blend) at full strength, its own colours: cached, so
        strength, keep colours and the regions are applied on top without the model."""
        key_style = tuple(sorted(choice.items())) if isinstance(choice, Mapping) else choice
        key = (self._photo_version, key_style, photo.shape, self.stroke.value)
        raw = self._raw.get(key)
        if raw is None:
            kind = {"blend": choice} if isinstance(choice, Mapping) else {"style": choice}
            raw = self.stylizer.run(StyleRequest.create(**kind, stroke=self.stroke.value), photo)
            self._raw[key] = raw
            while len(self._raw) > 6:
                self._raw.popitem(last=False)
        else:
            self._raw.move_to_end(key)
        return raw

    def _render(self, full: bool, token: int) -> np.ndarray | None:
        with self._lock:
            if token != self._token or self._photo is None:
                return None  # a newer change is on its way
            kind = "full" if full else "preview"
            self._say(f"Stylizing ({'full size' if full else 'preview'})…", _BUSY)
            t0 = time.monotonic()
            photo, raw = self._styled(full)
            request = self.request
            if request.regions is None:
                out = to_uint8(np.asarray(apply_controls(to_float(photo), to_float(raw),
                                                         request.strength, request.keep_colors)))
            else:
                out = self._compose(photo, raw, request)
            seconds = time.monotonic() - t0
            self.renders[kind] += 1
            if token != self._token:  # overtaken by a change made meanwhile: do not show it
                return out
            self.after.value = _jpeg(out, self.display_size)
            h, w = out.shape[:2]
            if full:
                self.result_array = out
                self.download.value = self.download_html()
                self._say(f"Done: {self._describe()} — {w}×{h} px in {seconds:.2f} s.", _OK)
            else:
                self.preview_array = out
                self._say(f"Preview ({w}×{h}): {self._describe()}; full size on its way…",
                          _BUSY)
            return out

    # -- where the style goes -------------------------------------------------------------------
    def _compose(self, photo: np.ndarray, raw: np.ndarray, request: StyleRequest) -> np.ndarray:
        """The engine's region composition (stylejax.compose, as `Stylizer` does it) over the
        cached raw outputs and this photo's cached masks, at this render's size."""
        spec = request.regions
        if spec.entries[0].region == "mask" and self.where.value not in self._painted:
            raise StyleJAXError(_PAINT_FIRST)
        f = to_float(photo)
        styled: dict[str | None, np.ndarray] = {}
        for e in spec.entries:
            if e.style not in styled:
                y = raw if e.style is None else self._raw_output(e.style, photo)
                styled[e.style] = np.asarray(apply_controls(f, to_float(y), 1.0,
                                                            request.keep_colors))
        scale = photo.shape[1] / self._photo.shape[1]  # feather: pixels of the full result
        here = dataclasses.replace(spec, feather=spec.feather * scale)
        try:
            out = compose.compose(f, here, styled, request.strength,
                                  masks=self._masks_for(spec, photo.shape[:2]))
        except RegionNotFoundError as err:
            raise RegionNotFoundError(f"{err} {_PAINT_HINT}") from None
        return to_uint8(out)

    def _masks_for(self, spec: RegionSpec, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        """Every mask the spec names, at `shape`. The automatic ones are made once per photo and
        region, at the photo's full size (as `Stylizer` would, `compose.region_masks`), and
        reused for the overlay, the previews and every render; "mask" is the painting."""
        import cv2

        names = {e.region for e in spec.entries} | set(spec.keep)
        full = self._photo.shape[:2]
        with self._mask_lock:
            missing = [n for n in sorted(names - {"everywhere", "mask"}) if n not in self._masks]
            if missing:
                self._say("Finding the region…", _BUSY)
                only = RegionSpec(entries=tuple(RegionStyle(n) for n in missing))
                self._masks.update(compose.region_masks(only, self._photo))
        out = {}
        for name in names:
            if name == "everywhere":
                m = np.ones(full, np.float32)
            elif name == "mask":
                painted = self._painted.get(self.where.value)
                m = (np.zeros(full, np.float32) if painted is None
                     else painted.astype(np.float32) / 255.0)
            else:
                m = self._masks[name]
            if m.shape != tuple(shape):
                m = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
            out[name] = m
        return out

    def _show_region(self) -> None:
        """Show the photo with the region tinted (where the style goes) when one is chosen,
        on the canvas the brush paints on; the plain photo otherwise."""
        if self._photo is None:
            return
        spec = self.region_spec
        painted = self.where.value in self._painted
        self.undo_paint.disabled = not painted
        self.rest_style.disabled = self.where.value == "everywhere" and not painted
        shown = "" if spec is not None else "none"
        self.canvas.layout.display = self.region_tools.layout.display = shown
        self.before.layout.display = "none" if spec is not None else ""
        if spec is None:
            self.overlay_array, self._overlay_key = None, None
            return
        key = (self._photo_version, spec, self._paint_version)
        if key == self._overlay_key:
            return
        small = resize_max_side(self._photo, self.display_size)
        masks = self._masks_for(spec, small.shape[:2])
        scale = small.shape[1] / self._photo.shape[1]
        note = None
        if spec.entries[0].region == "mask" and not painted:
            weight, note = masks["mask"], _PAINT_FIRST
        else:
            try:
                weight = compose.region_weights(
                    dataclasses.replace(spec, feather=spec.feather * scale), to_float(small),
                    masks=masks)[0][1]
            except RegionNotFoundError as err:
                weight, note = masks[spec.entries[0].region], f"{err} {_PAINT_HINT}"
        alpha = (_TINT_ALPHA * weight)[..., None]
        tinted = small.astype(np.float32) * (1.0 - alpha) + _TINT * alpha
        self.overlay_array = np.clip(np.rint(tinted), 0, 255).astype(np.uint8)
        h, w = small.shape[:2]
        if (self.canvas.width, self.canvas.height) != (w, h):
            self.canvas.width, self.canvas.height = w, h
        self.canvas.put_image_data(self.overlay_array, 0, 0)
        self._overlay_key = key
        if note:
            self.last_error = note
            self._say(note, _ERROR)

    def _on_region(self, _change) -> None:
        self._changed()

    def paint(self, x: float, y: float, radius: float, erase: bool = False, *,
              render: bool = True) -> None:
        """Paint (or erase) a disc of the region at (x, y), in pixels of the photo (its size
        after `max_size`). The first stroke starts from the automatic region (all of the
        picture for "everywhere", nothing for "where I paint"); from then on the painted mask
        is the region ("mask"). `render`: re-render now (the canvas does it when the mouse
        button is released)."""
        self.paint_line([(x, y)], radius, erase, render=render)

    def paint_line(self, points: list[tuple[float, float]], radius: float,
                   erase: bool = False, *, render: bool = True) -> None:
        """Paint (or erase) a stroke through `points` (photo pixels) with a round brush."""
        import cv2

        if self._photo is None:
            raise StyleJAXError("Upload a photo first.")
        where = self.where.value
        mask = self._painted.get(where)
        if mask is None:
            if where == "mask":
                mask = np.zeros(self._photo.shape[:2], np.uint8)
            else:
                start = self._masks_for(RegionSpec(entries=(RegionStyle(where),)),
                                        self._photo.shape[:2])[where]
                mask = np.clip(np.rint(start * 255.0), 0, 255).astype(np.uint8)
        else:
            mask = mask.copy()  # a render may be reading the current one
        value, r = 0 if erase else 255, max(1, int(round(radius)))
        pts = [(int(round(px)), int(round(py))) for px, py in points]
        cv2.circle(mask, pts[0], r, value, -1, cv2.LINE_AA)
        for a, b in zip(pts, pts[1:]):
            cv2.line(mask, a, b, value, 2 * r, cv2.LINE_AA)
            cv2.circle(mask, b, r, value, -1, cv2.LINE_AA)
        self._painted[where] = mask
        self._paint_version += 1
        self._show_region()
        self._say("Your painted mask is the region now ('Undo my painting' goes back).", _OK)
        if render:
            self._changed()

    def undo_painting(self) -> None:
        """Forget the painting of the current Where choice: back to the automatic region."""
        if self._painted.pop(self.where.value, None) is not None:
            self._paint_version += 1
        self._changed()

    @property
    def painted_mask(self) -> np.ndarray | None:
        """The painted mask of the current Where choice (uint8, 255 = styled), if any."""
        return self._painted.get(self.where.value)

    def _canvas_point(self, x: float, y: float) -> tuple[float, float]:
        scale = self._photo.shape[1] / max(1, self.canvas.width)
        return x * scale, y * scale

    def _brush_radius(self) -> float:
        return self.brush_size.value / 2 * self._photo.shape[1] / max(1, self.canvas.width)

    def _on_mouse_down(self, x: float, y: float) -> None:
        if self._photo is None:
            return
        self._stroke_at = self._canvas_point(x, y)
        self._guard(lambda: self.paint(*self._stroke_at, self._brush_radius(),
                                       self.brush.value == "erase", render=False))

    def _on_mouse_move(self, x: float, y: float) -> None:
        if self._stroke_at is None or self._photo is None:
            return
        at = self._canvas_point(x, y)
        self._guard(lambda: self.paint_line([self._stroke_at, at], self._brush_radius(),
                                            self.brush.value == "erase", render=False))
        self._stroke_at = at

    def _on_mouse_up(self, x: float, y: float) -> None:
        if self._stroke_at is None:
            return
        self._stroke_at = None
        self._changed()

    # -- custom style ------------------------------------------------------------------------------
    def start_custom(self) -> None:
        """Optimise the photo towards the uploaded style picture (background thread unless
        `sync`); the progress bar follows, `cancel_custom` stops it with the picture so far."""
        if self._custom_style is None:
            raise StyleJAXError("Upload a style picture first.")
        if self._photo is None:
            raise StyleJAXError("Upload a photo first.")
        if self._custom_thread is not None and self._custom_thread.is_alive():
            self._say("A custom style is already running (Cancel stops it).", _BUSY)
            return
        self._cancel.clear()
        self.progress.value = 0
        self.progress.bar_style = "info"
        self.custom_button.disabled = True
        self.cancel_button.disabled = False
        self._say("Custom style: preparing (the first run also compiles)…", _BUSY)
        args = (self._photo, self._custom_style, self._photo_version, self.stroke.value,
                bool(self.refine.value))
        if self.sync:
            self._custom_job(*args)
        else:
            self._custom_thread = threading.Thread(target=self._custom_job, args=args,
                                                   daemon=True, name="stylejax-custom")
            self._custom_thread.start()

    def cancel_custom(self) -> None:
        """Stop a running custom style; the picture reached so far is kept."""
        self._cancel.set()
        self.cancel_button.disabled = True

    def _custom_job(self, photo: np.ndarray, style: np.ndarray, version: int,
                    stroke: str, refine: bool = False) -> None:
        t0 = time.monotonic()

        def progress(fraction: float, record: dict) -> None:
            self.progress.value = int(round(100 * fraction))
            self.progress.description = f"{self.progress.value}%"

        try:
            # optimised at full strength: strength and colours are applied on top
            request = StyleRequest.create(style_image="custom", stroke=stroke, refine=refine)
            res = self.stylizer.run_custom(request, photo, style, config=self.custom_config,
                                           progress=progress, should_stop=self._cancel.is_set)
        except Exception as err:
            self.progress.bar_style = "danger"
            self._fail(err)
            return
        finally:
            self.custom_button.disabled = self._photo is None
            self.cancel_button.disabled = True
        if version != self._photo_version:
            self._say("The photo changed while the custom style ran: press 'Apply my style' "
                      "again.", _BUSY)
            return
        h, w = res.image.shape[:2]
        self._custom_photo = np.asarray(Image.fromarray(photo).resize((w, h), Image.LANCZOS))
        self._custom_raw = res.image
        self._custom_stroke = stroke
        self._custom_refine = refine
        self._custom_card.layout.display = ""
        cancelled = self._cancel.is_set()
        if cancelled:
            self.progress.bar_style = "warning"
        else:  # the time budget may end it before the last step: the job is still done
            self.progress.value = 100
            self.progress.bar_style = "success"
        self.progress.description = f"{self.progress.value}%"
        self._style_id = CUSTOM
        self._highlight()
        if self.sync:
            self.run(True)
        else:
            self._changed()
            if self._timer is not None:
                self._timer.join()
        seconds = time.monotonic() - t0
        if stroke != self.stroke.value:
            self._say(f"The stroke size changed while the custom style ran ({stroke} strokes "
                      "shown): press 'Apply my style' again.", _BUSY)
        elif cancelled:
            self._say(f"Custom style cancelled after {res.steps} steps: showing the picture so "
                      "far.", _BUSY)
        elif res.steps == 0:  # the any-style model, no optimisation
            self._say(f"Custom style done in {seconds:.1f} s, {w}×{h} px (Refine optimises "
                      "on top, ~30 s).", _OK)
        else:
            self._say(f"Custom style done: {res.steps} steps in {seconds:.0f} s, "
                      f"{w}×{h} px.", _OK)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until pending renders and a running custom style are done (True if so)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            busy = [t for t in (self._custom_thread, self._timer) if t is not None and t.is_alive()]
            if not busy:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            busy[0].join(left)

    # -- outputs ---------------------------------------------------------------------------------
    @property
    def result(self) -> Image.Image | None:
        """The full-resolution result of the latest completed render, as a PIL image."""
        return None if self.result_array is None else Image.fromarray(self.result_array)

    @property
    def file_name(self) -> str:
        sid = "custom" if self._style_id == CUSTOM else (self._style_id or "style")
        if isinstance(self.style_choice, Mapping):
            sid += f"+{self.blend_with.value}"
        stroke = "" if self.stroke.value == "medium" else f"_{self.stroke.value}"
        spec = self.region_spec
        where = ""
        if spec is not None:
            where = "" if spec.entries[0].region == "everywhere" else f"_{spec.entries[0].region}"
            where += "_keep-faces" if spec.keep else ""
        return f"{self._photo_name}_{sid}{stroke}{where}.png"

    def png_bytes(self) -> bytes:
        if self.result_array is None:
            raise StyleJAXError("Nothing stylised yet.")
        return encode_image(self.result_array, "png")

    def download_html(self) -> str:
        """An <a download> link holding the result as a PNG data URI."""
        data = base64.b64encode(self.png_bytes()).decode("ascii")
        h, w = self.result_array.shape[:2]
        name = html.escape(self.file_name, quote=True)
        return (f'<a download="{name}" href="data:image/png;base64,{data}" '
                'style="display:inline-block;padding:4px 12px;border-radius:4px;'
                'background:#1976d2;color:white;text-decoration:none">'
                f"&#11015; Download PNG ({w}×{h})</a>")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result (format from the suffix: .png, .jpg, .webp)."""
        from stylejax.imageio import save_image

        if self.result_array is None:
            raise StyleJAXError("Nothing stylised yet.")
        return save_image(path, self.result_array)


def _thumbnail_from(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(rgb)
    im.thumbnail((_THUMB, _THUMB))
    im.save(buf, format="PNG")
    return buf.getvalue()


def widget(image: ImageInput | None = None, **kwargs: Any) -> StylizeWidget:
    """`StylizeWidget(image, **kwargs)`: as a cell's last expression it shows itself."""
    return StylizeWidget(image, **kwargs)
