"""Service throughput and latency: jobs/s and p50/p95 for 1 and 2 workers, SQLite and Redis.

    python bench/bench_service.py --jobs 40 --json out/service.json

Runs the real service core, queue and workers (threads in this process, as `stylejax serve`
runs them, sharing one ONNX Runtime generator) on 256-px photos in one pack style. Latency is
submit → result stored, as a client polling the job would see it.
"""

from __future__ import annotations

import argparse
import json
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


def run_case(queue_url: str, workers: int, jobs: int, stylizer: Stylizer, data: Path) -> dict:
    settings = Settings(data_dir=data, queue=queue_url, rate_per_minute=1e6, rate_burst=10_000,
                        max_active_jobs=10_000, max_side=256)
    service = StyleService(settings)
    pool = [Worker(service, stylizer=stylizer, max_batch=4) for _ in range(workers)]
    threads = [threading.Thread(target=w.run, daemon=True) for w in pool]
    user = service.user("bench", 1)
    photos = [photo_png(192, 256, seed=i) for i in range(8)]
    # warm-up: compile/load outside the measurement
    warm = service.submit(user, photos[0], style="starry-night")
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while service.job(warm.id).state is not JobState.DONE and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.monotonic()
    submitted = {}
    for i in range(jobs):
        job = service.submit(user, photos[i % len(photos)], style="starry-night")
        submitted[job.id] = time.time()
    done: dict[str, float] = {}
    while len(done) < jobs and time.monotonic() < deadline + 600:
        for jid in submitted.keys() - done.keys():
            job = service.job(jid)
            if job.state is JobState.DONE:
                done[jid] = job.finished_at or time.time()
        time.sleep(0.01)
    wall = time.monotonic() - start
    for w in pool:
        w.stop.set()
    for t in threads:
        t.join(30)
    service.close()
    lat = np.array([done[j] - submitted[j] for j in done])
    return {"queue": queue_url.split(":")[0], "workers": workers, "jobs": len(done),
            "jobs_per_s": len(done) / wall, "p50_s": float(np.percentile(lat, 50)),
            "p95_s": float(np.percentile(lat, 95))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--json")
    args = ap.parse_args()
    stylizer = Stylizer(backend="onnx")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with RedisServer(tmp / "redis").start() as redis:
            for qname in ("sqlite", "redis"):
                for workers in (1, 2):
                    data = tmp / f"{qname}{workers}"
                    url = f"sqlite:///{data / 'queue.db'}" if qname == "sqlite" else redis.url
                    if qname == "redis":  # a fresh Redis database per case
                        url = url.rsplit("/", 1)[0] + f"/{workers}"
                    rows.append(run_case(url, workers, args.jobs, stylizer, data))
                    print(json.dumps(rows[-1]), flush=True)
    print("\n| queue | workers | jobs | jobs/s | p50 latency (s) | p95 latency (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['queue']} | {r['workers']} | {r['jobs']} | {r['jobs_per_s']:.2f} | "
              f"{r['p50_s']:.2f} | {r['p95_s']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
