"""Photos and a clip sharing the workers: do photos wait behind a video?

    python bench/bench_video_service.py --photos 20 --clip-seconds 8 --json out/video_service.json

Issue 15 asks that a photo burst must not wait minutes behind a video job. This runs the real
service core and queue (embedded SQLite) with `stylejax worker` processes, laid out as
`stylejax serve --workers 2` lays them out (worker 0 photo-only, `STYLEJAX_WORKER_VIDEO=0`; the
other takes both lanes, photos first). Cases, each on a fresh data directory:

* `photos alone`: the burst of `--photos` photos on idle workers (the reference);
* `photos behind a clip`: a 480p clip is submitted, and the burst a moment after it, once a
  worker has started the clip;
* `one worker, photos behind a clip`: the same with a single worker taking both lanes, which
  shows what the photo-only worker buys.

Latency is submit → result stored (what a client polling the job sees); the clip's row gives its
end-to-end seconds and frames/s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_service import _wait_all  # noqa: E402
from photos import photo_png  # noqa: E402
from test_video import _scene, make_clip  # noqa: E402

from bots.config import Settings  # noqa: E402
from bots.core import StyleService  # noqa: E402
from storage import JobState  # noqa: E402

STYLE = "starry-night"


def start_workers(settings: Settings, video_flags: list[bool]) -> list[subprocess.Popen]:
    """One `stylejax worker` process per flag; False = photo-only, as `serve` runs worker 0."""
    threads = str(max(1, (os.cpu_count() or 1) // len(video_flags)))
    procs = []
    for takes_video in video_flags:
        env = {**os.environ, "STYLEJAX_QUEUE": settings.queue,
               "STYLEJAX_MAX_SIDE": str(settings.max_side), "STYLEJAX_ORT_THREADS": threads,
               "STYLEJAX_WORKER_VIDEO": "1" if takes_video else "0"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "bots.serve", "worker", "--data-dir",
             str(settings.data_dir), "--log-level", "warning"], env=env))
    return procs


def stop_workers(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(60)


def run_case(name: str, data: Path, *, video_flags: list[bool], photos: int, size: int,
             clip: bytes | None) -> dict:
    settings = Settings(data_dir=data, queue=f"sqlite:///{data / 'queue.db'}",
                        rate_per_minute=1e6, rate_burst=10_000, max_active_jobs=10_000,
                        max_side=size, video_max_bytes=200_000_000,
                        max_upload_bytes=200_000_000)
    service = StyleService(settings)
    user = service.user("bench", 1)
    pictures = [photo_png(size * 3 // 4, size, seed=i) for i in range(8)]
    procs = start_workers(settings, video_flags)
    try:
        warm = [service.submit(user, pictures[0], style=STYLE).id for _ in video_flags]
        _wait_all(service, warm, time.monotonic() + 240)
        clip_row = None
        if clip is not None:
            clip_job = service.submit(user, clip, style=STYLE)
            clip_sent = time.time()
            deadline = time.monotonic() + 120
            while service.job(clip_job.id).state is not JobState.RUNNING:
                if time.monotonic() > deadline:
                    raise RuntimeError("no worker started the clip")
                time.sleep(0.05)
        sent = {}
        for i in range(photos):
            sent[service.submit(user, pictures[i % len(pictures)], style=STYLE).id] = time.time()
        done = _wait_all(service, list(sent), time.monotonic() + 1800)
        lat = np.array([done[j] - sent[j] for j in done])
        if clip is not None:
            finished = _wait_all(service, [clip_job.id], time.monotonic() + 1800)
            frames = int(clip_job.params.get("frames", 0)) or None
            clip_row = {"clip_s": finished[clip_job.id] - clip_sent if finished else None,
                        "clip_frames": frames}
    finally:
        stop_workers(procs)
        service.close()
    row = {"case": name, "workers": len(video_flags), "photos": len(done), "size": size,
           "p50_s": float(np.percentile(lat, 50)), "p95_s": float(np.percentile(lat, 95)),
           "max_s": float(lat.max())}
    if clip_row:
        row.update(clip_row)
    return row


def make_480p_clip(seconds: float, fps: int = 30) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        frames = _scene(854, 480, int(seconds * fps))
        return make_clip(Path(tmp, "clip.mp4"), frames, fps=fps, audio=True).read_bytes()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--size", type=int, default=512, help="photo long side (px)")
    ap.add_argument("--clip-seconds", type=float, default=8.0, help="480p clip at 30 fps")
    ap.add_argument("--json")
    args = ap.parse_args()
    clip = make_480p_clip(args.clip_seconds)
    frames = int(args.clip_seconds * 30)
    cases = [("photos alone", [False, True], None),
             ("photos behind a clip", [False, True], clip),
             ("one worker, photos behind a clip", [True], clip)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, flags, c) in enumerate(cases):
            row = run_case(name, Path(tmp) / f"case{i}", video_flags=flags,
                           photos=args.photos, size=args.size, clip=c)
            if c is not None:
                row["clip_frames"] = frames
                row["clip_fps"] = frames / row["clip_s"] if row.get("clip_s") else None
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n| case | workers | photos ({args.size} px) | photo p50 (s) | photo p95 (s) | "
          f"photo max (s) | clip ({frames} frames, 480p) end to end (s) | clip frames/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        clip_s = f"{r['clip_s']:.1f}" if r.get("clip_s") else "–"
        fps = f"{r['clip_fps']:.1f}" if r.get("clip_fps") else "–"
        print(f"| {r['case']} | {r['workers']} | {r['photos']} | {r['p50_s']:.2f} | "
              f"{r['p95_s']:.2f} | {r['max_s']:.2f} | {clip_s} | {fps} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
