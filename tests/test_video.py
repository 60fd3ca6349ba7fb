"""stylejax.video on tiny clips made here with PyAV / Pillow, styled with the default pack."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")

from PIL import Image  # noqa: E402

from stylejax.cli import main  # noqa: E402
from stylejax.errors import (  # noqa: E402
    CorruptVideoError,
    JobCancelledError,
    NotAVideoError,
    UnsupportedVideoError,
    VideoTooLargeError,
    VideoTooLongError,
)
from stylejax.pack import default_pack_dir  # noqa: E402
from stylejax.request import StyleRequest  # noqa: E402
from stylejax.video import (  # noqa: E402
    VideoLimits,
    probe_video,
    read_frames,
    stylize_video,
    warping_error,
)

W, H, N, FPS = 64, 48, 12, 12

pytestmark = pytest.mark.skipif(not (default_pack_dir() / "pack.json").is_file(),
                                reason="the default pack is not installed")



@pytest.fixture(scope="module")
def stylizer():
    from stylejax.stylizer import Stylizer

    return Stylizer()


@pytest.fixture(scope="module")
def request_():
    # the largest stroke: the generator works at 160 px, which keeps the tests quick
    return StyleRequest.create(style="starry-night", stroke=4)


def _scene(w: int = W, h: int = H, n: int = N, pan: int = 2) -> list[np.ndarray]:
    """A smooth random texture panning right by `pan` px a frame."""
    rng = np.random.default_rng(0)
    base = (rng.random((h, w + n * pan, 3)) * 255).astype(np.uint8)
    base = cv2.normalize(cv2.GaussianBlur(base, (0, 0), 2.5), None, 0, 255, cv2.NORM_MINMAX)
    return [np.ascontiguousarray(base[:, i * pan: i * pan + w]) for i in range(n)]


def make_clip(path: Path, frames: list[np.ndarray] | None = None, *, fps: int = FPS,
              audio: bool = True) -> Path:
    frames = _scene() if frames is None else frames
    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=fps)
    vs.height, vs.width = frames[0].shape[:2] if frames else (H, W)
    vs.pix_fmt = "yuv420p"
    if audio:
        a = out.add_stream("aac", rate=22050)
        a.layout = "mono"
    for i, img in enumerate(frames):
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts = i
        for p in vs.encode(f):
            out.mux(p)
    for p in vs.encode(None):
        out.mux(p)
    if audio:
        _sine(out, a, max(len(frames) / fps, 0.5))
    out.close()
    return path


def _sine(out, stream, seconds: float, sr: int = 22050) -> None:
    t = np.arange(int(sr * seconds)) / sr
    sig = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for k in range(0, len(sig), 1024):
        fr = av.AudioFrame.from_ndarray(sig[None, k: k + 1024], format="fltp", layout="mono")
        fr.sample_rate, fr.pts = sr, k
        for p in stream.encode(fr):
            out.mux(p)
    for p in stream.encode(None):
        out.mux(p)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "pan.mp4")


def test_probe_and_read(clip):
    info = probe_video(clip)
    assert (info.kind, info.width, info.height, info.frames) == ("video", W, H, N)
    assert info.fps == pytest.approx(FPS) and info.has_audio and info.audio_codec == "aac"
    assert info.duration_s == pytest.approx(N / FPS, abs=1 / FPS)
    assert probe_video(clip.read_bytes()) == info  # bytes work as well as paths
    frames = list(read_frames(clip))
    assert len(frames) == N and frames[0].image.shape == (H, W, 3)
    assert frames[0].image.dtype == np.uint8
    assert [f.index for f in frames] == list(range(N))
    assert frames[-1].time_s == pytest.approx((N - 1) / FPS, abs=1e-3)


@pytest.mark.parametrize("audio", [True, False])
def test_round_trip_keeps_timing_size_and_audio(tmp_path, stylizer, request_, clip, audio):
    src = clip if audio else make_clip(tmp_path / "silent.mp4", audio=False)
    dst = tmp_path / "out.mp4"
    seen = []
    result = stylize_video(stylizer, request_, src, dst, progress=seen.append)
    info = probe_video(dst)
    assert result.frames == N == info.frames
    assert (info.width, info.height) == (W, H)
    assert info.fps == pytest.approx(FPS)
    assert info.duration_s == pytest.approx(N / FPS, abs=1 / FPS)
    assert info.has_audio is audio
    assert seen[-1] == 1.0 and seen == sorted(seen)
    out = np.stack([f.image for f in read_frames(dst)]).astype(np.float32)
    src_frames = np.stack([f.image for f in read_frames(src)]).astype(np.float32)
    assert np.abs(out - src_frames).mean() > 10  # styled, not copied


def test_rotated_clip_is_shown_upright(tmp_path, stylizer, request_):
    frame = np.zeros((H, W, 3), np.uint8)
    frame[:8, :8] = 255  # a white mark at the top-left of the coded frame
    data = bytearray(make_clip(tmp_path / "r.mp4", [frame] * 4, audio=False).read_bytes())
    # the track header's matrix: identity → "rotate 90° clockwise for display"
    ident = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    at = data.find(ident, data.find(b"tkhd"))
    if at < 0:
        pytest.skip("no track matrix to patch")
    data[at: at + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    src = tmp_path / "rotated.mp4"
    src.write_bytes(bytes(data))
    info = probe_video(src)
    assert (info.rotation, info.width, info.height) == (90, H, W)
    img = next(read_frames(src)).image
    assert img.shape == (W, H, 3)
    assert img[:8, -8:].mean() > 200 and img[:8, :8].mean() < 50  # the mark: top-right
    stylize_video(stylizer, request_, src, tmp_path / "out.mp4")
    out = probe_video(tmp_path / "out.mp4")
    assert (out.rotation, out.width, out.height) == (0, H, W)


def _gif(path: Path, frames: list[np.ndarray], durations: list[int], loop: int = 3) -> Path:
    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=durations, loop=loop)
    return path


def _durations(path: Path) -> list[int]:
    with Image.open(path) as im:
        out = []
        for i in range(im.n_frames):
            im.seek(i)
            im.load()
            out.append(im.info["duration"])
        return out


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_animation_keeps_frames_durations_and_loop(tmp_path, stylizer, request_, suffix):
    durations = [40, 80, 120, 40, 200, 60]
    src = _gif(tmp_path / "in.gif", _scene(n=6), durations)
    info = probe_video(src)
    assert (info.kind, info.frames, info.loop) == ("animation", 6, 3)
    assert info.duration_s == pytest.approx(sum(durations) / 1000)
    dst = tmp_path / f"out{suffix}"
    stylize_video(stylizer, request_, src, dst)
    out = probe_video(dst)
    assert (out.kind, out.frames, out.width, out.height, out.loop) == ("animation", 6, W, H, 3)
    assert _durations(dst) == durations


def test_animation_to_mp4_keeps_duration(tmp_path, stylizer, request_):
    durations = [40, 80, 120, 40, 200, 60]
    src = _gif(tmp_path / "in.gif", _scene(n=6), durations)
    stylize_video(stylizer, request_, src, tmp_path / "out.mp4", stable=False)
    frames = list(read_frames(tmp_path / "out.mp4"))
    assert len(frames) == 6
    starts = np.cumsum([0, *durations[:-1]]) / 1000
    assert [f.time_s for f in frames] == pytest.approx(list(starts), abs=2e-3)


def test_warping_error_measures_flicker():
    frames = _scene()
    assert warping_error(frames, frames) < 1e-3  # the input follows its own flow
    rng = np.random.default_rng(1)
    noisy = [np.clip(f + rng.normal(0, 25, f.shape), 0, 255).astype(np.uint8) for f in frames]
    assert warping_error(frames, noisy) > 10 * warping_error(frames, frames)


def test_stable_mode_flickers_less(tmp_path, stylizer, request_, clip):
    frames_in = [f.image for f in read_frames(clip)]
    errors = {}
    for stable in (False, True):
        dst = tmp_path / f"{stable}.mp4"
        res = stylize_video(stylizer, request_, clip, dst, stable=stable)
        assert res.stable is stable
        errors[stable] = warping_error(frames_in, [f.image for f in read_frames(dst)])
    assert errors[True] < 0.7 * errors[False]


def test_cancel_mid_clip(tmp_path, stylizer, request_, clip):
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 1  # after the first batch

    dst = tmp_path / "cancelled.mp4"
    seen = []
    with pytest.raises(JobCancelledError):
        stylize_video(stylizer, request_, clip, dst, batch=4, should_stop=should_stop,
                      progress=seen.append)
    assert seen == [pytest.approx(4 / N)]
    assert not dst.exists()


# -- bad inputs: each a friendly error, never an FFmpeg traceback ------------------------------
def test_renamed_text_file(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("these are my notes, not a film\n" * 20)
    with pytest.raises(NotAVideoError, match="not a video"):
        probe_video(bad)
    with pytest.raises(NotAVideoError):
        probe_video(b"hello")


def test_truncated_mp4(tmp_path, clip):
    data = clip.read_bytes()
    for cut in (len(data) // 2, 40):
        bad = tmp_path / f"cut{cut}.mp4"
        bad.write_bytes(data[:cut])
        with pytest.raises(CorruptVideoError, match="damaged"):
            probe_video(bad)


def test_audio_only(tmp_path):
    path = tmp_path / "song.m4a"
    out = av.open(str(path), "w", format="mp4")
    a = out.add_stream("aac", rate=22050)
    a.layout = "mono"
    _sine(out, a, 0.5)
    out.close()
    with pytest.raises(UnsupportedVideoError, match="sound but no picture"):
        probe_video(path)


def test_zero_frames(tmp_path):
    # Matroska keeps a video track without frames (mp4 drops it: then it is audio-only)
    path = make_clip(tmp_path / "empty.mkv", [], audio=True)
    with pytest.raises(CorruptVideoError, match="no picture frames"):
        probe_video(path)


def test_limits(tmp_path, stylizer, request_, clip):
    with pytest.raises(VideoTooLongError, match="limit is 0.5 s"):
        probe_video(clip, VideoLimits(max_duration_s=0.5))
    with pytest.raises(VideoTooLongError, match="limit is 5"):
        probe_video(clip, VideoLimits(max_frames=5))
    with pytest.raises(VideoTooLargeError, match="too large"):
        probe_video(clip, VideoLimits(max_pixels=32 * 24))
    with pytest.raises(VideoTooLargeError, match="limit is"):
        probe_video(clip, VideoLimits(max_bytes=1000))
    with pytest.raises(VideoTooLongError):
        stylize_video(stylizer, request_, clip, tmp_path / "o.mp4",
                      limits=VideoLimits(max_frames=5))
    assert not (tmp_path / "o.mp4").exists()


def test_custom_style_refused(tmp_path, stylizer, clip):
    req = StyleRequest.create(style_image="x.png")
    with pytest.raises(UnsupportedVideoError):
        stylize_video(stylizer, req, clip, tmp_path / "o.mp4")


# -- the command line ---------------------------------------------------------------------------
def test_cli_video(tmp_path, clip, capsys):
    out = tmp_path / "styled.mp4"
    assert main([str(clip), "--style", "starry", "--stroke", "4", "-o", str(out), "-q"]) == 0
    info = probe_video(out)
    assert (info.frames, info.has_audio) == (N, True)
    # recognised by content without a suffix; --no-stable; a GIF out
    bare = tmp_path / "clip"
    bare.write_bytes(clip.read_bytes())
    gif = tmp_path / "styled.gif"
    assert main([str(bare), "--style", "starry", "--stroke", "4", "--no-stable", "-o",
                 str(gif), "-q"]) == 0
    assert probe_video(gif).frames == N
    assert main([str(clip), "--style", "starry", "-o", str(tmp_path / "x.png")]) == 2
    assert "Save a video as" in capsys.readouterr().err
    text = tmp_path / "fake.mp4"
    text.write_text("not a clip")
    assert main([str(text), "--style", "starry", "-o", str(tmp_path / "y.mp4")]) == 2
    assert "not a video" in capsys.readouterr().err


def test_webm_out_reencodes_audio(tmp_path, stylizer, request_, clip):
    if "libvpx-vp9" not in av.codecs_available:
        pytest.skip("this FFmpeg build has no VP9 encoder")
    dst = tmp_path / "out.webm"
    stylize_video(stylizer, request_, clip, dst, stable=False)
    info = probe_video(dst)
    assert (info.container, info.codec, info.audio_codec) == ("webm", "vp9", "opus")
    assert len(list(read_frames(dst))) == N


def test_still_picture_is_not_a_video(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(_scene()[0]).save(path)
    with pytest.raises(NotAVideoError, match="still picture"):
        probe_video(path)
