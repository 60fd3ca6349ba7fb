"""Videos and animated pictures: probe, stream frames, write them back, stylise every frame.

    from stylejax import Stylizer
    from stylejax.request import StyleRequest
    from stylejax.video import stylize_video
    req = StyleRequest.create(style="starry-night")
    result = stylize_video(Stylizer(), req, "clip.mp4", "out.mp4")   # stable mode by default

- Decoding and encoding with PyAV (FFmpeg); animated GIF / WebP with Pillow. Frames are
  streamed: at most one batch of frames is in memory (GIF / WebP output keeps its palettised
  frames until the file is written, as Pillow needs them all).
- Rotation metadata is applied to the pixels; the frame rate (constant), the duration and the
  audio track are kept (audio copied without re-encoding when the output container takes its
  codec, else re-encoded to AAC, or Opus for .webm).
- Stable mode (docs/video.md): instance-norm statistics shared over time (taken on a scene's
  first frame, refreshed as a slow running average) and optical-flow-guided blending of the
  previous result into the current one where the flow is reliable; reset at scene cuts.
- Every failure a user can cause is a `stylejax.errors.VideoError` with a friendly message.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import (
    CorruptVideoError,
    JobCancelledError,
    NotAVideoError,
    UnsupportedVideoError,
    VideoError,
    VideoTooLargeError,
    VideoTooLongError,
)

Source = bytes | str | os.PathLike

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".m4v")
ANIMATION_SUFFIXES = (".gif", ".webp")
OUTPUT_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".gif", ".webp")


@dataclass(frozen=True)
class VideoLimits:
    """What a clip may be; beyond, a VideoTooLongError / VideoTooLargeError names the limit."""

    max_duration_s: float = 60.0
    max_frames: int = 1800
    max_pixels: int = 1920 * 1080  # per frame, either orientation
    max_bytes: int = 100_000_000


DEFAULT_LIMITS = VideoLimits()


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` found. width × height is the display size (rotation applied)."""

    kind: str            # "video" | "animation" (animated GIF / WebP)
    width: int
    height: int
    frames: int          # exact for animations and most containers, else an estimate
    fps: float           # average frame rate
    duration_s: float
    has_audio: bool
    rotation: int        # clockwise degrees applied to the coded frames for display
    codec: str           # video codec name ("h264", "vp9", "gif", "webp", ...)
    container: str       # "mp4", "mov", "webm", "mkv", "gif", "webp", ...
    loop: int = 0        # animations: loop count (0 = forever)
    audio_codec: str | None = None


@dataclass(frozen=True)
class Frame:
    """One decoded frame: H×W×3 uint8 RGB at display orientation, with its timing."""

    image: np.ndarray
    index: int
    time_s: float
    duration_s: float


@dataclass(frozen=True)
class VideoResult:
    frames: int
    fps: float
    duration_s: float
    seconds: float       # wall time of the whole stylisation
    stable: bool


# -- reading ----------------------------------------------------------------------------------
def _head(source: Source, n: int = 64) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source[:n])
    with open(source, "rb") as f:
        return f.read(n)


def _size(source: Source) -> int:
    if isinstance(source, bytes | bytearray | memoryview):
        return len(source)
    return os.path.getsize(source)


def _is_animation(head: bytes) -> str | None:
    """'gif' / 'webp' for an animated (or single-frame) GIF or an animated WebP."""
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    # VP8X flags: bit 1 = animation
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and head[12:16] == b"VP8X" \
            and head[20] & 0x02:
        return "webp"
    return None


def _looks_like_video(head: bytes) -> bool:
    """A container signature: a damaged file with one is corrupt, not 'not a video'."""
    return (head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3"
            or (head[:4] == b"RIFF" and head[8:11] == b"AVI") or head[4:8] in (b"moov", b"mdat"))


def _open(source: Source):
    import av

    file = io.BytesIO(bytes(source)) if isinstance(source, bytes | bytearray | memoryview) \
        else os.fspath(source)
    return av.open(file, "r", metadata_errors="ignore")


def _av_errors():
    import av

    return (av.FFmpegError, EOFError, OSError, ValueError, UnicodeDecodeError)


def _container_name(fmt_name: str, source: Source) -> str:
    names = fmt_name.split(",")
    if not isinstance(source, bytes | bytearray | memoryview):
        suffix = Path(source).suffix.lower().lstrip(".")
        if suffix in names or (suffix == "m4v" and "mp4" in names):
            return suffix
    for n in ("mp4", "mov", "webm", "matroska", "avi"):
        if n in names:
            return {"matroska": "mkv"}.get(n, n)
    return names[0]


def _rotate(rgb: np.ndarray, clockwise: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(rgb, k=-(clockwise // 90))) if clockwise else rgb


def _clockwise(frame) -> int:
    try:
        ccw = int(round(frame.rotation or 0))
    except (AttributeError, ValueError):
        return 0
    return (-ccw) % 360 // 90 * 90


def _probe_animation(source: Source, kind: str) -> VideoInfo:
    from PIL import Image

    data = source if isinstance(source, bytes | bytearray | memoryview) else None
    try:
        with Image.open(io.BytesIO(bytes(data)) if data is not None else source) as im:
            n = getattr(im, "n_frames", 1)
            durations = []
            for i in range(n):
                im.seek(i)
                im.load()  # WebP sets the frame's duration when it is decoded
                durations.append(_frame_ms(im))
            loop = int(im.info.get("loop", 0) or 0)
            w, h = im.size
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise CorruptVideoError("That animated picture seems damaged or incomplete.") from err
    duration = sum(durations) / 1000.0
    return VideoInfo(kind="animation", width=w, height=h, frames=n,
                     fps=n / duration if duration > 0 else 10.0, duration_s=duration,
                     has_audio=False, rotation=0, codec=kind, container=kind, loop=loop)


def _frame_ms(im) -> int:
    """A GIF/WebP frame's duration in ms; 0 or missing reads as 100 ms, as browsers show it."""
    d = im.info.get("duration", 0) or 0
    return int(d) if d > 0 else 100


def probe_video(source: Source, limits: VideoLimits | None = None) -> VideoInfo:
    """What the clip is (see `VideoInfo`); raises a VideoError for anything we cannot take.

    With `limits`, the size, duration and frame count are checked too (VideoTooLongError /
    VideoTooLargeError with the limit in the message).
    """
    try:
        size = _size(source)
        head = _head(source, 64)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise NotAVideoError() from err
    if limits is not None and size > limits.max_bytes:
        raise VideoTooLargeError(f"That file is too large ({size / 1e6:.0f} MB); the limit is "
                                 f"{limits.max_bytes / 1e6:.0f} MB.", limits.max_bytes)
    anim = _is_animation(head)
    info = _probe_animation(source, anim) if anim is not None else _probe_av(source, head)
    if limits is not None:
        check_limits(info, limits)
    return info


def _probe_av(source: Source, head: bytes) -> VideoInfo:
    import av

    if len(head) < 12:
        raise NotAVideoError()
    try:
        container = _open(source)
    except av.error.InvalidDataError as err:
        raise (CorruptVideoError() if _looks_like_video(head) else NotAVideoError()) from err
    except _av_errors() as err:
        raise (CorruptVideoError() if _looks_like_video(head) else NotAVideoError()) from err
    with container:
        fmt = container.format.name
        if fmt in ("image2", "png_pipe", "jpeg_pipe", "tty", "mjpeg") or fmt.endswith("_pipe"):
            raise NotAVideoError("That is a still picture, not a video: send it as a photo.")
        audio = container.streams.audio
        if not container.streams.video:
            if audio:
                raise UnsupportedVideoError("That file has sound but no picture to stylise.")
            raise NotAVideoError()
        stream = container.streams.video[0]
        codec = stream.codec_context.name if stream.codec_context else "unknown"
        if stream.codec_context is None or codec in ("", "none"):
            raise UnsupportedVideoError("That video uses a picture format we cannot decode.")
        first = None
        try:
            for frame in container.decode(stream):
                first = frame
                break
        except av.error.InvalidDataError as err:
            raise CorruptVideoError() from err
        except _av_errors() as err:
            raise CorruptVideoError() from err
        if first is None:
            raise CorruptVideoError("That video has no picture frames we could read.")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 25.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6
        else:
            duration = 0.0
        frames = int(stream.frames or 0) or max(1, round(duration * fps))
        if duration <= 0:
            duration = frames / fps
        rotation = _clockwise(first)
        w, h = first.width, first.height
        if rotation in (90, 270):
            w, h = h, w
        acodec = audio[0].codec_context.name if audio and audio[0].codec_context else None
        return VideoInfo(kind="video", width=w, height=h, frames=frames, fps=fps,
                         duration_s=duration, has_audio=bool(audio), rotation=rotation,
                         codec=codec, container=_container_name(fmt, source),
                         audio_codec=acodec)


def check_limits(info: VideoInfo, limits: VideoLimits = DEFAULT_LIMITS) -> None:
    """VideoTooLongError / VideoTooLargeError if the clip is beyond `limits`."""
    if info.width * info.height > limits.max_pixels:
        side = round((limits.max_pixels * 16 / 9) ** 0.5)
        raise VideoTooLargeError(
            f"That video's frames are too large ({info.width}×{info.height}); the limit is "
            f"{side}×{limits.max_pixels // side} pixels.", limits.max_pixels)
    if info.duration_s > limits.max_duration_s + 1e-3:
        raise VideoTooLongError(f"That video is too long ({info.duration_s:.0f} s); the limit "
                                f"is {limits.max_duration_s:g} s.", limits.max_duration_s)
    if info.frames > limits.max_frames:
        raise VideoTooLongError(f"That video has too many frames ({info.frames}); the limit "
                                f"is {limits.max_frames}.", limits.max_frames)


def read_frames(source: Source, info: VideoInfo | None = None) -> Iterator[Frame]:
    """Every frame in order, streamed (one decoded frame at a time), rotation applied."""
    info = info or probe_video(source)
    if info.kind == "animation":
        yield from _read_animation(source)
        return
    import av

    container = _open(source)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        default = 1.0 / info.fps if info.fps > 0 else 0.04
        index, start = 0, None
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else index * default
                start = t if start is None else start
                rgb = _rotate(frame.to_ndarray(format="rgb24"), info.rotation)
                yield Frame(image=rgb, index=index, time_s=t - start, duration_s=default)
                index += 1
        except av.error.InvalidDataError as err:
            if index == 0:
                raise CorruptVideoError() from err
            # a damaged tail: keep the frames that decoded (players do the same)
        except av.FFmpegError as err:
            if index == 0:
                raise CorruptVideoError() from err
        if index == 0:
            raise CorruptVideoError("That video has no picture frames we could read.")
    finally:
        container.close()


def _read_animation(source: Source) -> Iterator[Frame]:
    from PIL import Image

    data = source if isinstance(source, bytes | bytearray | memoryview) else None
    try:
        with Image.open(io.BytesIO(bytes(data)) if data is not None else source) as im:
            t = 0.0
            for i in range(getattr(im, "n_frames", 1)):
                im.seek(i)
                rgba = np.asarray(im.convert("RGBA"), np.float32)
                d = _frame_ms(im) / 1000.0
                a = rgba[..., 3:] / 255.0
                rgb = np.round(rgba[..., :3] * a + 255.0 * (1 - a)).astype(np.uint8)
                yield Frame(image=rgb, index=i, time_s=t, duration_s=d)
                t += d
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise CorruptVideoError("That animated picture seems damaged or incomplete.") from err


# -- writing ----------------------------------------------------------------------------------
# Audio codecs each container takes as they are (copied without re-encoding).
_AUDIO_COPY = {
    "mp4": {"aac", "mp3", "opus", "alac", "ac3", "eac3", "flac"},
    "mov": {"aac", "mp3", "alac", "ac3", "pcm_s16le", "pcm_s16be", "pcm_s24le"},
    "mkv": {"aac", "mp3", "opus", "vorbis", "flac", "ac3", "eac3", "alac", "pcm_s16le"},
    "webm": {"opus", "vorbis"},
}
_FORMAT = {"mp4": "mp4", "mov": "mov", "mkv": "matroska", "webm": "webm"}


def output_kind(dst: str | os.PathLike) -> str:
    """The output's format from its suffix: mp4, mov, mkv, webm, gif or webp."""
    suffix = Path(dst).suffix.lower().lstrip(".")
    suffix = {"m4v": "mp4"}.get(suffix, suffix)
    if f".{suffix}" not in OUTPUT_SUFFIXES:
        raise UnsupportedVideoError(
            "Videos can be saved as .mp4, .mov, .mkv, .webm, .gif or .webp.")
    return suffix


def _even(rgb: np.ndarray) -> np.ndarray:
    """H.264 / VP9 in yuv420p need even sides: crop the odd last row / column."""
    h, w = rgb.shape[:2]
    return rgb[: h - h % 2, : w - w % 2] if h % 2 or w % 2 else rgb


class VideoWriter:
    """Write frames one at a time to `dst` (format from its suffix), like `like`'s timing.

    Video sources are written at their constant average frame rate; animation sources keep
    each frame's duration (`write(rgb, duration_s=...)`). `audio_from` (the source clip) gives
    the audio track, interleaved as the frames go out.
    """

    def __init__(self, dst: str | os.PathLike, like: VideoInfo, *,
                 audio_from: Source | None = None, crf: int = 20):
        self.dst = Path(dst)
        self.kind = output_kind(dst)
        self.like = like
        self.frames = 0
        self._t = 0.0
        self._pics: list = []
        self._durations: list[float] = []
        self._audio_in = self._audio_out = self._audio_iter = None
        self._pending = None
        if self.kind in ("gif", "webp"):
            return
        import av

        options = {"movflags": "+faststart"} if self.kind in ("mp4", "mov") else {}
        self._out = av.open(os.fspath(self.dst), "w", format=_FORMAT[self.kind],
                            container_options=options)
        self._vfr = like.kind == "animation"
        self._rate = (Fraction(1000) if self._vfr else
                      Fraction(like.fps).limit_denominator(1001) if like.fps > 0 else Fraction(25))
        if self.kind == "webm":
            self._vs = self._out.add_stream("libvpx-vp9", rate=self._rate)
            self._vs.options = {"deadline": "realtime", "cpu-used": "8", "crf": "32",
                                "b": "0", "row-mt": "1"}
        else:
            self._vs = self._out.add_stream("libx264", rate=self._rate)
            self._vs.options = {"crf": str(crf), "preset": "veryfast"}
        self._vs.pix_fmt = "yuv420p"
        w, h = like.width - like.width % 2, like.height - like.height % 2
        self._vs.width, self._vs.height = max(2, w), max(2, h)
        self._vs.codec_context.time_base = 1 / self._rate
        if self._vfr:
            self._vs.codec_context.framerate = Fraction(like.fps).limit_denominator(1000) \
                if like.fps > 0 else Fraction(10)
        if audio_from is not None and like.has_audio:
            self._open_audio(audio_from)

    # audio: copied packet by packet, or decoded and re-encoded, interleaved with the video
    def _open_audio(self, src: Source) -> None:
        try:
            self._audio_in = _open(src)
            a_in = self._audio_in.streams.audio[0]
        except (*_av_errors(), IndexError):
            self._audio_in = None
            return
        name = a_in.codec_context.name
        if name in _AUDIO_COPY[self.kind]:
            self._audio_out = self._out.add_stream_from_template(a_in)
            self._audio_copy = True
            self._audio_iter = (p for p in self._audio_in.demux(a_in))
        else:
            codec = "libopus" if self.kind == "webm" else "aac"
            rate = 48000 if codec == "libopus" else (a_in.rate or 44100)
            self._audio_out = self._out.add_stream(codec, rate=rate)
            self._audio_out.layout = "stereo" if (a_in.channels or 2) >= 2 else "mono"
            self._audio_copy = False
            self._audio_iter = (f for f in self._audio_in.decode(a_in))

    def _pump_audio(self, until_s: float | None) -> None:
        """Write the source's audio up to `until_s` seconds (None: all of it)."""
        if self._audio_iter is None:
            return
        while True:
            item = self._pending
            if item is None:
                try:
                    item = next(self._audio_iter)
                except StopIteration:
                    self._finish_audio()
                    return
                except _av_errors():
                    self._finish_audio()  # a damaged audio tail: keep what was read
                    return
            t = item.pts * item.time_base if item.pts is not None and item.time_base else None
            if until_s is not None and t is not None and float(t) > until_s:
                self._pending = item
                return
            self._pending = None
            if self._audio_copy:
                if item.dts is None:
                    continue
                item.stream = self._audio_out
                self._out.mux(item)
            else:
                item.pts = None
                for packet in self._audio_out.encode(item):
                    self._out.mux(packet)

    def _finish_audio(self) -> None:
        if self._audio_iter is None:
            return
        if not self._audio_copy:
            for packet in self._audio_out.encode(None):
                self._out.mux(packet)
        self._audio_iter = None
        self._audio_in.close()

    def write(self, rgb: np.ndarray, duration_s: float | None = None) -> None:
        """Add one H×W×3 uint8 frame (`duration_s`: its display time, animations)."""
        d = duration_s if duration_s is not None else (
            1.0 / self.like.fps if self.like.fps > 0 else 0.1)
        if self.kind in ("gif", "webp"):
            self._write_picture(rgb, d)
            self.frames += 1
            return
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(_even(rgb)), format="rgb24")
        if self._vfr:
            frame.pts = round(self._t * 1000)
        else:
            frame.pts = self.frames
        frame.time_base = 1 / self._rate
        for packet in self._vs.encode(frame):
            self._out.mux(packet)
        self._t += d
        self.frames += 1
        self._pump_audio(self._t + 0.5)

    def _write_picture(self, rgb: np.ndarray, d: float) -> None:
        from PIL import Image

        im = Image.fromarray(rgb)
        if self.kind == "gif":  # a palette per frame, no dithering (dither noise flickers)
            im = im.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        self._pics.append(im)
        self._durations.append(d)

    def close(self) -> None:
        if self.kind in ("gif", "webp"):
            self._save_picture()
            return
        for packet in self._vs.encode(None):
            self._out.mux(packet)
        self._pump_audio(None)
        self._out.close()

    def abort(self) -> None:
        """Stop without finishing: the partial file is removed."""
        try:
            if self.kind not in ("gif", "webp"):
                if self._audio_in is not None:
                    self._audio_in.close()
                self._out.close()
        except _av_errors():
            pass
        self._pics.clear()
        self.dst.unlink(missing_ok=True)

    def _save_picture(self) -> None:
        if not self._pics:
            raise CorruptVideoError("There were no frames to write.")
        # GIF counts in 1/100 s: round the cumulative times so the total duration is kept
        ms, acc, prev = [], 0.0, 0
        for d in self._durations:
            acc += d * 1000
            step = 10 if self.kind == "gif" else 1
            now = int(round(acc / step) * step)
            ms.append(max(step, now - prev))
            prev = now
        loop = self.like.loop if self.like.kind == "animation" else 0
        first, rest = self._pics[0], self._pics[1:]
        if self.kind == "gif":
            first.save(self.dst, format="GIF", save_all=True, append_images=rest,
                       duration=ms, loop=loop, disposal=1, optimize=False)
        else:
            first.save(self.dst, format="WEBP", save_all=True, append_images=rest,
                       duration=ms, loop=loop, quality=85, method=4)
        self._pics.clear()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(frames, dst: str | os.PathLike, like: VideoInfo, *,
                audio_from: Source | None = None) -> int:
    """Write `frames` (Frame objects or H×W×3 uint8 arrays) to `dst`; returns the count."""
    with VideoWriter(dst, like, audio_from=audio_from) as writer:
        for f in frames:
            if isinstance(f, Frame):
                writer.write(f.image, f.duration_s)
            else:
                writer.write(f)
    return writer.frames


# -- optical flow, the warping error ----------------------------------------------------------
def _gray(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


class _Flow:
    """DIS optical flow (OpenCV) with a forward-backward consistency check."""

    def __init__(self):
        import cv2

        self._cv2 = cv2
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def backward(self, prev_gray: np.ndarray, cur_gray: np.ndarray):
        """(map_x, map_y, reliable): where each pixel of `cur` was in `prev`, and where that
        is trustworthy (forward-backward consistent, inside the frame)."""
        cv2 = self._cv2
        fb = self._dis.calc(cur_gray, prev_gray, None)   # cur → prev
        ff = self._dis.calc(prev_gray, cur_gray, None)   # prev → cur
        h, w = cur_gray.shape
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        mx, my = gx + fb[..., 0], gy + fb[..., 1]
        ff_w = cv2.remap(ff, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        diff = ((fb + ff_w) ** 2).sum(-1)
        mag = (fb ** 2).sum(-1) + (ff_w ** 2).sum(-1)
        reliable = diff <= 0.01 * mag + 0.5
        reliable &= (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
        return mx, my, reliable

    def warp(self, img: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        return cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def warping_error(frames_in, frames_out) -> float:
    """Temporal instability of a result: the mean over consecutive pairs of the squared
    difference between output t and output t−1 warped by the flow of the INPUT frames, on
    pixels the forward-backward check keeps, in [0,1] colour units (lower = steadier).

    `frames_in` / `frames_out`: sequences (or iterables) of H×W×3 uint8 frames or Frames.
    """
    import cv2

    flow = _Flow()
    total, pairs = 0.0, 0
    prev_in = prev_out = None
    for fin, fout in zip(frames_in, frames_out):
        a = fin.image if isinstance(fin, Frame) else fin
        b = (fout.image if isinstance(fout, Frame) else fout).astype(np.float32) / 255.0
        if a.shape[:2] != b.shape[:2]:
            a = cv2.resize(a, (b.shape[1], b.shape[0]), interpolation=cv2.INTER_AREA)
        g = _gray(a)
        if prev_in is not None:
            mx, my, ok = flow.backward(prev_in, g)
            warped = flow.warp(prev_out, mx, my)
            if ok.any():
                total += float(((b - warped) ** 2).mean(-1)[ok].mean())
                pairs += 1
        prev_in, prev_out = g, b
    return total / pairs if pairs else 0.0


# -- stylising --------------------------------------------------------------------------------
@dataclass(frozen=True)
class StableConfig:
    """Stable mode's knobs (docs/video.md measures them)."""

    blend: float = 0.6            # weight of the warped previous result where flow is reliable
    flow_side: int = 480          # long side the flow is computed at (then scaled up)
    cut_error: float = 0.12       # mean |Δ| of the warped input above this: a scene cut
    # instance-norm statistics: "interpolate" (measured at each batch's last frame, linearly
    # interpolated in between: one extra generator pass a batch), "first" (a scene's first
    # frame for the whole scene) or "own" (each frame its own, as per-frame mode)
    stats: str = "interpolate"


class _Stabiliser:
    """Flow-guided temporal blending of stylised frames (state: the previous frame)."""

    def __init__(self, cfg: StableConfig):
        self.cfg = cfg
        self.flow = _Flow()
        self.prev_gray: np.ndarray | None = None
        self.prev_out: np.ndarray | None = None

    def small_gray(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        h, w = rgb.shape[:2]
        s = min(1.0, self.cfg.flow_side / max(h, w))
        g = _gray(rgb)
        if s < 1.0:
            g = cv2.resize(g, (max(8, round(w * s)), max(8, round(h * s))),
                           interpolation=cv2.INTER_AREA)
        return g

    def motion(self, gray: np.ndarray):
        """The backward flow from the previous frame to `gray` and whether this is a cut."""
        if self.prev_gray is None or self.prev_gray.shape != gray.shape:
            return None, True
        mx, my, ok = self.flow.backward(self.prev_gray, gray)
        warped = self.flow.warp(self.prev_gray, mx, my)
        err = np.abs(gray.astype(np.float32) - warped.astype(np.float32)) / 255.0
        cut = ok.mean() < 0.3 or float(err[ok].mean() if ok.any() else 1.0) > self.cfg.cut_error
        return ((mx, my, ok & (err < 0.1)), cut)

    def blend(self, out: np.ndarray, gray: np.ndarray, motion, cut: bool) -> np.ndarray:
        """The current uint8 result blended with the warped previous one."""
        import cv2

        cur = out.astype(np.float32)
        if not cut and motion is not None and self.prev_out is not None \
                and self.prev_out.shape == cur.shape:
            mx, my, ok = motion
            h, w = cur.shape[:2]
            sh, sw = gray.shape
            if (sh, sw) != (h, w):  # flow at the small size → output size, in pixels
                fx, fy = w / sw, h / sh
                gx, gy = np.meshgrid(np.arange(sw, dtype=np.float32),
                                     np.arange(sh, dtype=np.float32))
                dx = cv2.resize(mx - gx, (w, h), interpolation=cv2.INTER_LINEAR) * fx
                dy = cv2.resize(my - gy, (w, h), interpolation=cv2.INTER_LINEAR) * fy
                bx, by = np.meshgrid(np.arange(w, dtype=np.float32),
                                     np.arange(h, dtype=np.float32))
                mx, my = bx + dx, by + dy
                ok = cv2.resize(ok.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
            else:
                ok = ok.astype(np.float32)
            warped = self.flow.warp(self.prev_out, mx, my)
            a = (self.cfg.blend * ok)[..., None]
            cur = a * warped + (1.0 - a) * cur
        self.prev_out = cur
        return np.clip(np.round(cur), 0, 255).astype(np.uint8)


def _stylize_batch_shared(stylizer, request, rgbs: list[np.ndarray],
                          stats: list) -> list[np.ndarray]:
    """`Stylizer.run_many` with given instance-norm statistics (the engine's `stats`, one set
    per frame), the whole batch in one generator call; same work size, resizing and controls
    as run_many."""
    from .engine import BATCH_BUCKETS, bucket_size, pad_to
    from .generator import apply_controls
    from .imageio import resize_long_side, resize_to, to_float, to_uint8
    from .stroke import pack_work_side

    engine = stylizer.engine
    w = stylizer.style_weights(request.style_choice)
    work = [to_float(resize_long_side(r, pack_work_side(request.stroke))) for r in rgbs]
    hb = max(bucket_size(p.shape[0], engine.buckets, engine.multiple) for p in work)
    wb = max(bucket_size(p.shape[1], engine.buckets, engine.multiple) for p in work)
    nb = bucket_size(len(work), BATCH_BUCKETS, 1)
    batch = np.zeros((nb, hb, wb, 3), np.float32)
    for i, p in enumerate(work):
        batch[i] = pad_to(p[None], hb, wb)[0]
    ws = np.repeat(w[None], nb, axis=0)
    padded = list(stats) + [stats[-1]] * (nb - len(stats))
    stacked = [(np.concatenate([st[k][0] for st in padded]),
                np.concatenate([st[k][1] for st in padded])) for k in range(len(stats[0]))]
    y = engine.backend(batch, ws, stats=stacked)
    out = []
    for i, (r, p) in enumerate(zip(rgbs, work)):
        yi = np.asarray(y[i, : p.shape[0], : p.shape[1]])
        if yi.shape[:2] != r.shape[:2]:
            yi = to_float(resize_to(to_uint8(yi), r.shape[:2]))
        if request.strength == 1.0 and not request.keep_colors:  # apply_controls' identity
            out.append(to_uint8(yi))
            continue
        f = to_float(r)
        out.append(to_uint8(np.asarray(apply_controls(f, yi, request.strength,
                                                      request.keep_colors, None))))
    return out


def frame_stats(stylizer, request, rgb: np.ndarray):
    """The instance-norm statistics of one frame at the request's working size."""
    from .imageio import resize_long_side, to_float
    from .stroke import pack_work_side

    w = stylizer.style_weights(request.style_choice)
    work = to_float(resize_long_side(rgb, pack_work_side(request.stroke)))
    return stylizer.engine.whole_photo_stats(work, w)


def _mix_stats(old, new, momentum: float):
    return [(momentum * mo + (1 - momentum) * mn, momentum * vo + (1 - momentum) * vn)
            for (mo, vo), (mn, vn) in zip(old, new)]


def stylize_video(stylizer, request, src: Source, dst: str | os.PathLike, *,
                  stable: bool = True, batch: int = 4,
                  progress: Callable[[float], None] | None = None,
                  should_stop: Callable[[], bool] | None = None,
                  limits: VideoLimits | None = DEFAULT_LIMITS,
                  stable_config: StableConfig | None = None,
                  info: VideoInfo | None = None,
                  full_generator: bool = False) -> VideoResult:
    """Stylise every frame of `src` (video or animated GIF/WebP) with a pack-style `request`
    and write `dst` (format from its suffix), keeping timing, rotation (applied) and audio.

    Frames go through the pack's video generator when it has one (`Stylizer.for_video`: a
    cheaper student of the pack in its `video/` folder; the bundled pack has none, see
    docs/video.md) unless `full_generator` asks for the pack's own.

    Frames go through the generator `batch` at a time. `progress(fraction)` after each batch;
    `should_stop()` before each: True stops the work, removes `dst` and raises
    JobCancelledError. `stable` (default): shared statistics + flow-guided blending.
    """
    if request.is_custom:
        raise UnsupportedVideoError("Videos can be stylised with the pack's styles only.")
    start = time.monotonic()
    if not full_generator:
        stylizer = stylizer.for_video()
    info = info or probe_video(src, limits)
    if info.kind == "animation" and limits is not None:
        check_limits(info, limits)
    cfg = stable_config or StableConfig()
    batch = max(1, min(int(batch), 8))
    stab = _Stabiliser(cfg) if stable else None
    from .stroke import pack_work_side

    if cfg.stats not in ("interpolate", "first", "own"):
        raise ValueError(f"unknown stats mode {cfg.stats!r}")
    shared = (stable and cfg.stats != "own"
              and pack_work_side(request.stroke) <= stylizer.engine.tile)
    key = None
    writer = VideoWriter(dst, info, audio_from=src if info.has_audio else None)
    done = 0
    try:
        frames = read_frames(src, info)
        while True:
            if should_stop is not None and should_stop():
                raise JobCancelledError()
            chunk = [f for _, f in zip(range(batch), frames)]
            if not chunk:
                break
            if limits is not None and done + len(chunk) > limits.max_frames:
                raise VideoTooLongError(f"That video has too many frames; the limit is "
                                        f"{limits.max_frames}.", limits.max_frames)
            rgbs = [f.image for f in chunk]
            if stab is None:
                outs = stylizer.run_many(request, rgbs, palette=False)
            else:
                grays = [stab.small_gray(r) for r in rgbs]
                motions = []
                for g in grays:  # flows between consecutive inputs, known before stylising
                    m, cut = stab.motion(g)
                    motions.append((m, cut))
                    stab.prev_gray = g
                outs = []
                # statistics: a scene's first frame, then a slow running average
                segments, begin = [], 0
                for k in range(1, len(chunk)):
                    if motions[k][1]:
                        segments.append((begin, k))
                        begin = k
                segments.append((begin, len(chunk)))
                for a, b in segments:
                    if not shared:
                        outs += stylizer.run_many(request, rgbs[a:b], palette=False)
                        continue
                    if key is None or motions[a][1]:  # a scene's first frame
                        key, key_at = frame_stats(stylizer, request, rgbs[a]), a
                    else:
                        key_at = a - 1  # the previous batch's last frame
                    if cfg.stats == "first" or b - 1 == key_at:
                        per_frame = [key] * (b - a)
                    else:
                        nxt = frame_stats(stylizer, request, rgbs[b - 1])
                        per_frame = [_mix_stats(key, nxt, 1 - (j - key_at) / (b - 1 - key_at))
                                     for j in range(a, b)]
                        key = nxt
                    outs += _stylize_batch_shared(stylizer, request, rgbs[a:b], per_frame)
                outs = [stab.blend(out, g, m, cut)
                        for out, g, (m, cut) in zip(outs, grays, motions)]
            for f, out in zip(chunk, outs):
                writer.write(out, f.duration_s)
            done += len(chunk)
            if progress is not None:
                progress(min(1.0, done / max(1, info.frames)))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    if progress is not None:
        progress(1.0)
    fps = info.fps if info.kind == "video" else (done / info.duration_s if info.duration_s
                                                  else info.fps)
    return VideoResult(frames=done, fps=fps, duration_s=done / fps if fps else 0.0,
                       seconds=time.monotonic() - start, stable=stable)


def is_video_file(path: Source) -> bool:
    """Whether a file (or its bytes) is a clip or an animation (by content; a still picture is
    not)."""
    try:
        head = _head(path, 64)
    except OSError:
        return False
    anim = _is_animation(head)
    if anim == "gif":
        try:
            return probe_video(path).frames > 1
        except VideoError:
            return False
    if anim == "webp":
        return True
    if not isinstance(path, bytes | bytearray | memoryview) \
            and Path(path).suffix.lower() in VIDEO_SUFFIXES:
        return True
    return _looks_like_video(head) or head[:4] == b"\x1a\x45\xdf\xa3"
