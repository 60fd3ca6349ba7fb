"""Service throughput and latency: jobs/s and p50/p95 for 1 and 2 workers, SQLite and Redis.

    python bench/bench_service.py --jobs 40 --size 512 --json out/service.json

Runs the real service core and queue with `stylejax worker` processes (what `stylejax serve`
starts by default; `--mode thread` runs Worker threads in this process instead) on photos of
`--size` px (long side) in one pack style, all submitted at once after a warm-up job per worker.
Latency is submit → result stored, as a client polling the job would see it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from photos import photo_png  # noqa: E402
from redis_server import RedisServer  # noqa: E402

from bots.config import Settings  # noqa: E402
from bots.core import StyleService  # noqa: E402
from bots.worker import Worker  # noqa: E402
from storage import JobState  # noqa: E402
from stylejax.stylizer import Stylizer  # noqa: E402


class _Workers:
    """`workers` Worker threads here, or `stylejax worker` processes (as `serve` runs them)."""

    def __init__(self, mode: str, n: int, service: StyleService, stylizer: Stylizer | None):
        self.mode, self.procs, self.pool, self.threads = mode, [], [], []
        if mode == "thread":
            self.pool = [Worker.beside(service, stylizer=stylizer, max_batch=4) for _ in range(n)]
            self.threads = [threading.Thread(target=w.run, daemon=True) for w in self.pool]
            for t in self.threads:
                t.start()
            return
        s = service.settings
        env = {**os.environ, "STYLEJAX_QUEUE": s.queue, "STYLEJAX_MAX_SIDE": str(s.max_side),
               "STYLEJAX_MAX_BATCH": "4",
               "STYLEJAX_ORT_THREADS": str(max(1, (os.cpu_count() or 1) // n))}
        cmd = [sys.executable, "-m", "bots.serve", "worker", "--data-dir", str(s.data_dir),
               "--log-level", "warning"]
        self.procs = [subprocess.Popen(cmd, env=env) for _ in range(n)]

    def stop(self) -> None:
        for w in self.pool:
            w.stop.set()
        for t in self.threads:
            t.join(30)
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            p.wait(30)


def _wait_all(service: StyleService, ids: list[str], deadline: float) -> dict[str, float]:
    done: dict[str, float] = {}
    while len(done) < len(ids) and time.monotonic() < deadline:
        for jid in set(ids) - done.keys():
            job = service.job(jid)
            if job.state is JobState.DONE:
                done[jid] = job.finished_at or time.time()
        time.sleep(0.01)
    return done


def run_case(queue_url: str, workers: int, jobs: int, data: Path, *, mode: str, size: int,
             stylizer: Stylizer | None, sequential: bool = False) -> dict:
    settings = Settings(data_dir=data, queue=queue_url, rate_per_minute=1e6, rate_burst=10_000,
                        max_active_jobs=10_000, max_side=size)
    service = StyleService(settings)
    user = service.user("bench", 1)
    photos = [photo_png(size * 3 // 4, size, seed=i) for i in range(8)]
    pool = _Workers(mode, workers, service, stylizer)
    # warm-up: start-up, model load and first-run costs stay outside the measurement
    warm = [service.submit(user, photos[0], style="starry-night").id for _ in range(2 * workers)]
    _wait_all(service, warm, time.monotonic() + 180)
    start = time.monotonic()
    submitted = {}
    done: dict[str, float] = {}
    for i in range(jobs):
        job = service.submit(user, photos[i % len(photos)], style="starry-night")
        submitted[job.id] = time.time()
        if sequential:  # one at a time: what a single user sees on an idle service
            done.update(_wait_all(service, [job.id], time.monotonic() + 120))
    done.update(_wait_all(service, list(submitted.keys() - done.keys()),
                          time.monotonic() + 900))
    wall = time.monotonic() - start
    pool.stop()
    service.close()
    lat = np.array([done[j] - submitted[j] for j in done])
    return {"queue": queue_url.split(":")[0], "mode": mode + (" seq" if sequential else ""),
            "workers": workers,
            "size": size, "jobs": len(done), "jobs_per_s": len(done) / wall,
            "p50_s": float(np.percentile(lat, 50)), "p95_s": float(np.percentile(lat, 95))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--size", type=int, default=512, help="photo long side (px)")
    ap.add_argument("--mode", choices=["process", "thread"], default="process")
    ap.add_argument("--sequential", action="store_true",
                    help="submit each job after the previous one finished (idle latency)")
    ap.add_argument("--json")
    args = ap.parse_args()
    stylizer = Stylizer(backend="onnx") if args.mode == "thread" else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with RedisServer(tmp / "redis", appendfsync="everysec").start() as redis:
            for qname in ("sqlite", "redis"):
                for workers in (1, 2):
                    data = tmp / f"{qname}{workers}"
                    url = f"sqlite:///{data / 'queue.db'}" if qname == "sqlite" else redis.url
                    if qname == "redis":  # a fresh Redis database per case
                        url = url.rsplit("/", 1)[0] + f"/{workers}"
                    rows.append(run_case(url, workers, args.jobs, data, mode=args.mode,
                                         size=args.size, stylizer=stylizer,
                                         sequential=args.sequential))
                    print(json.dumps(rows[-1]), flush=True)
    print("\n| queue | workers | photo | jobs | jobs/s | p50 latency (s) | p95 latency (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['queue']} | {r['workers']} {r['mode']} | {r['size']} px | {r['jobs']} | "
              f"{r['jobs_per_s']:.2f} | {r['p50_s']:.2f} | {r['p95_s']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
