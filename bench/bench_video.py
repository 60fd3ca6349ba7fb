"""Video stylisation: frames/s (with the decode / encode share) and flicker, per-frame vs stable.

    python bench/bench_video.py --json out/video.json --strip docs/images/video_strip.png

Makes test clips from the bundled sample photo (stylejax/assets/sample.jpg) with a slow pan and
zoom, at 480p and 720p, 24 frames/s, with a sine as the audio track (PyAV), and stylises them
with the default pack's first style through `stylejax.video.stylize_video`: per-frame and
stable mode (and, at 480p, stable mode's two parts alone), each with the pack's video
generator (its distilled student, `Stylizer.for_video`; the default for clips) and with the
pack's own generator ("full"). Reports frames/s of the whole job,
the share of decoding and encoding in it, the brightness jitter (mean change of a frame's mean
brightness from the previous one) and the warping error (stylejax.video.warping_error:
lower = steadier) of the written results; then a bright sign appearing mid-clip
(`flash_test`): how much the rest of the picture jumps. The strip shows 6 consecutive frames:
the input, per-frame, stable, and each mode's change from the previous frame (warped by the
input's flow, ×4): flicker shows there as bright speckle. "PSNR to full" is how close the
video generator's frames are to the full generator's in the same mode (dB, higher = closer).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stylejax.request import StyleRequest  # noqa: E402
from stylejax.stylizer import Stylizer  # noqa: E402
from stylejax.video import (  # noqa: E402
    StableConfig,
    _Flow,
    _gray,
    probe_video,
    read_frames,
    stylize_video,
    warping_error,
    write_video,
)

SIZES = {"480p": (854, 480), "720p": (1280, 720)}
# stable mode's parts alone (at 480p)
VARIANTS = [("stable: interpolated statistics only", True, StableConfig(blend=0.0)),
            ("stable: first-frame statistics only", True, StableConfig(blend=0.0, stats="first")),
            ("stable: flow blending only", True, StableConfig(stats="own"))]


def flash_test(stylizer, request, tmp: Path) -> list[dict]:
    """A bright sign (15% of the frame) appears at frame 12 of a 1 s 480p pan: how much does
    the rest of the picture change then (instance norm re-normalising the whole frame), against
    its usual change from frame to frame?"""
    clip = make_clip(tmp / "flash0.mp4", SIZES["480p"], 1.0)
    frames = _frames(clip)
    for i in range(12, len(frames)):
        frames[i] = frames[i].copy()
        frames[i][:200, :300] = 250
    src = tmp / "flash.mp4"
    write_video(frames, src, like=probe_video(clip))
    outside = np.ones(frames[0].shape[:2], bool)
    outside[:200, :300] = False
    rows = []
    for label, stable, cfg in [("per-frame", False, None), ("stable", True, None), *VARIANTS]:
        stylize_video(stylizer, request, src, tmp / "flash_out.mp4", stable=stable,
                      stable_config=cfg)
        out = [f.astype(np.float32) for f in _frames(tmp / "flash_out.mp4")]
        usual = np.mean([np.abs(out[i] - out[i - 1])[outside].mean() for i in range(2, 11)])
        row = {"mode": label,
               "change_outside_at_flash": round(float(np.abs(out[12] - out[11])[outside].mean()),
                                                2),
               "usual_change": round(float(usual), 2),
               "brightness_shift_outside": round(float(abs(out[12][outside].mean()
                                                           - out[11][outside].mean())), 2)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def make_clip(path: Path, size: tuple[int, int], seconds: float, fps: int = 24) -> Path:
    """The sample photo seen through a window that pans right and zooms in, with a 440 Hz sine."""
    photo = cv2.cvtColor(cv2.imread(str(ROOT / "stylejax/assets/sample.jpg")), cv2.COLOR_BGR2RGB)
    ph, pw = photo.shape[:2]
    w, h = size
    n = round(seconds * fps)
    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    vs.options = {"crf": "18", "preset": "veryfast"}
    a = out.add_stream("aac", rate=44100)
    a.layout = "mono"
    for i in range(n):
        t = i / max(1, n - 1)
        zoom = 1.0 + 0.25 * t                       # window shrinks: zoom in
        cw = min(pw, ph * w / h) / zoom * 0.8
        ch = cw * h / w
        x0 = (pw - cw) * (0.1 + 0.8 * t)            # pan left → right
        y0 = (ph - ch) * 0.5
        m = np.float32([[w / cw, 0, -x0 * w / cw], [0, h / ch, -y0 * h / ch]])
        img = cv2.warpAffine(photo, m, (w, h), flags=cv2.INTER_AREA)
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts = i
        for p in vs.encode(f):
            out.mux(p)
    for p in vs.encode(None):
        out.mux(p)
    sr = 44100
    sig = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(sr * n / fps)) / sr)).astype(np.float32)
    for k in range(0, len(sig), 1024):
        fr = av.AudioFrame.from_ndarray(sig[None, k: k + 1024], format="fltp", layout="mono")
        fr.sample_rate, fr.pts = sr, k
        for p in a.encode(fr):
            out.mux(p)
    for p in a.encode(None):
        out.mux(p)
    out.close()
    return path


def _frames(path: Path) -> list[np.ndarray]:
    return [f.image for f in read_frames(path)]


def _psnr(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    mse = np.mean([np.mean((x.astype(np.float32) - y.astype(np.float32)) ** 2)
                   for x, y in zip(a, b)])
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def _brightness_jitter(frames: list[np.ndarray]) -> float:
    """Mean |change of a frame's mean brightness| between consecutive frames, in [0,1]."""
    means = np.array([f.mean() / 255.0 for f in frames])
    return float(np.abs(np.diff(means)).mean()) if len(means) > 1 else 0.0


def _diff(prev_in, cur_in, prev_out, cur_out) -> np.ndarray:
    """|output t − warped output t−1| × 4 on reliable pixels (black where occluded)."""
    flow = _Flow()
    mx, my, ok = flow.backward(_gray(prev_in), _gray(cur_in))
    warped = flow.warp(prev_out.astype(np.float32), mx, my)
    d = np.abs(cur_out.astype(np.float32) - warped) * 4 * ok[..., None]
    return np.clip(d, 0, 255).astype(np.uint8)


def strip(frames_in, per_frame, stable, start: int, out: Path, width: int = 240) -> None:
    rows = [("input", frames_in), ("per-frame", per_frame), ("stable", stable)]
    diffs = [(f"{name}: change x4", [np.zeros_like(fr[start])] + [
        _diff(frames_in[i - 1], frames_in[i], fr[i - 1], fr[i]) for i in range(start + 1,
                                                                            start + 6)])
        for name, fr in (("per-frame", per_frame), ("stable", stable))]
    h = round(frames_in[0].shape[0] * width / frames_in[0].shape[1])
    label = 16
    sheet = Image.new("RGB", (6 * width, 5 * (h + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (name, fr) in enumerate(rows + diffs):
        seq = fr[start: start + 6] if len(fr) > 6 else fr
        draw.text((4, r * (h + label) + 2), f"{name} (frames {start}-{start + 5})", fill="black")
        for c, img in enumerate(seq):
            sheet.paste(Image.fromarray(img).resize((width, h), Image.LANCZOS),
                        (c * width, r * (h + label) + label))
    out.parent.mkdir(parents=True, exist_ok=True)
    # a palette keeps the PNG small enough for the repository (no dithering: it would speckle)
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        out, optimize=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--sizes", default="480p,720p")
    p.add_argument("--style", default=None, help="pack style id (default: the first)")
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--strip", type=Path, default=None)
    p.add_argument("--generators", default="video,full",
                   help="video (the pack's distilled video generator), full (the pack's own)")
    args = p.parse_args()
    generators = args.generators.split(",")

    stylizer = Stylizer()
    style = args.style or stylizer.styles[0].id
    request = StyleRequest.create(style=style, strength=args.strength)
    tmp = Path(tempfile.mkdtemp(prefix="bench_video_"))
    # warm up (ONNX sessions, the first-run costs) on a tiny clip
    warm = make_clip(tmp / "warm.mp4", (320, 180), 0.5)
    for stable in (False, True):
        for gen in generators:
            stylize_video(stylizer, request, warm, tmp / "warm_out.mp4", stable=stable,
                          full_generator=gen == "full")

    results = []
    for name in args.sizes.split(","):
        clip = make_clip(tmp / f"{name}.mp4", SIZES[name], args.seconds)
        info = probe_video(clip)
        t = time.perf_counter()
        frames_in = _frames(clip)
        decode_s = time.perf_counter() - t
        t = time.perf_counter()
        write_video(frames_in, tmp / "enc.mp4", like=info, audio_from=clip)
        encode_s = time.perf_counter() - t
        # the full generator first, so the video generator's rows can be compared with it
        variants = [(gen, mode, stable, None) for gen in sorted(generators, key="full".__ne__)
                    for mode, stable in (("per-frame", False), ("stable", True))]
        if name == "480p":
            variants += [(generators[0], *v) for v in VARIANTS]
        outs = {}
        for gen, label, stable, cfg in variants:
            dst = tmp / f"{name}_{gen}_{label.split(':')[0]}_{len(outs)}.mp4"
            res = stylize_video(stylizer, request, clip, dst, stable=stable, stable_config=cfg,
                                full_generator=gen == "full")
            frames_out = _frames(dst)
            outs[gen, label] = frames_out
            full = outs.get(("full", label))
            row = {"size": name, "generator": gen, "mode": label, "frames": res.frames,
                   "psnr_to_full": (None if gen == "full" or full is None
                                    else round(_psnr(frames_out, full), 2)),
                   "fps": round(res.frames / res.seconds, 2), "seconds": round(res.seconds, 2),
                   "decode_share": round(decode_s / res.seconds, 3),
                   "encode_share": round(encode_s / res.seconds, 3),
                   "warping_error": round(warping_error(frames_in, frames_out), 6),
                   "brightness_jitter": round(_brightness_jitter(frames_out), 5),
                   "audio_kept": probe_video(dst).has_audio}
            results.append(row)
            print(json.dumps(row), flush=True)
        if args.strip and name == args.sizes.split(",")[0]:
            g = generators[0]
            strip(frames_in, outs[g, "per-frame"], outs[g, "stable"], len(frames_in) // 2,
                  args.strip)
    flash = flash_test(stylizer, request, tmp)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"style": style, "seconds": args.seconds,
                                         "results": results, "flash": flash}, indent=1))


if __name__ == "__main__":
    main()
