"""Load and faults: N users on the real HTTP API while workers, serve and Redis are killed.

    python bench/bench_faults.py                         # every row, 200 users, 180 s each
    python bench/bench_faults.py --users 10 --seconds 20 --rows load,worker-kill --json out.json

Each row starts a real `stylejax serve` subprocess on a free loopback port (default settings,
`--workers` worker processes, a temporary data dir; `tests/service_process.py`) and runs
`--users` simulated users against its HTTP API for `--seconds`, then waits for their jobs
(at most `--drain` s more). A fault, if the row has one, strikes at `--fault-at` of the burst:

* `load`: no fault.
* `worker-kill`: SIGKILL worker process 0 (its pid from serve's log); the supervisor restarts
  it, its jobs come back after their lease (`queue_visibility_s`, 60 s by default).
* `serve-restart`: SIGTERM serve (with jobs queued), start it again on the same data dir (a new
  port; the users follow); afterwards every result delivered before the stop is fetched again.
* `redis-aof`: the queue on a real `redis-server` with `appendonly yes`; SIGKILL it and start
  it again after `--redis-down` s.
* `redis-nopersist`: the same with `--save '' --appendonly no`: Redis comes back empty.

Users: each has its own API key (serve gets `STYLEJAX_API_KEYS`, a JSON list), so each has
its own rate limit and active-job limit, as distinct people do. A user runs two lanes (the
default 2 active jobs per user); a lane submits a `--size` px photo (small by default, so the
bench measures the service, not the model) in a random pack style, polls the job every
`--poll` s (±25 %) to its end, downloads the result if done, thinks 0-2 s, and starts again
until the burst ends. 429 and 503 are answered by waiting `Retry-After` (capped at
`MAX_BACKOFF_S`, with jitter) and retrying; a refused connection (serve restarting) by a
short wait; all are counted. Before the burst one warm-up job per worker (another key, not
counted) loads the model.

Accounting, per row (every accepted job ends in exactly one bucket):

* accepted: 202 answers. done / failed (with the reasons the API gives) / cancelled: the
  job's last state as the user saw it. lost: accepted but not in a final state when its lane's
  `--drain` deadline after the burst passed (e.g. stuck in `queued`), so
  accepted == done + failed + cancelled + lost.
* duplicated: a job whose result was recorded or delivered more than once, from three
  independent measurements: (a) more than one `job <id> done` line in the logs of serve and
  its workers (a worker writes it only when `Store.mark_done` recorded the result, i.e. once
  per successful recording); (b) after the drain the job's state or result differs from what
  its user was handed (the state left its final value, or the result's sha256 changed: a
  second recording replaced the first); (c) the job book (`meta.db`) says `done` for a job
  the user saw fail or the reverse. Each part is also in the JSON.
* re-run: jobs the job book says were attempted more than once (`attempts` > 1): executed
  again after a crash, which at-least-once delivery allows, but recorded once (else they
  would count in duplicated).
* p50/p95 latency: submit sent → `done` seen by the polling user (so it includes upload and
  up to one poll interval); `book_p50/95` in the JSON: the job book's `finished_at -
  created_at` (accepted → result stored).
* retries: 429, 503, and transport errors (`connect`: serve down; `transport`: a dropped
  keep-alive connection or a timeout). unseen: jobs in the job book that no user was handed
  an id for (a POST whose answer was lost and which the user then sent again); shown in the
  notes, not in the sums above.

A row with lost or duplicated jobs is a finding, not a failure of the bench: the exit code is
0 unless the bench itself broke, or 1 with `--strict` when any row lost or duplicated a job.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from photos import photo_png  # noqa: E402
from redis_server import RedisServer  # noqa: E402
from service_process import Server  # noqa: E402

from storage import JobState, Store  # noqa: E402

ROWS = ("load", "worker-kill", "serve-restart", "redis-aof", "redis-nopersist")
FINAL = ("done", "failed", "cancelled")
LANES_PER_USER = 2  # the default max_active_jobs
MAX_BACKOFF_S = 10.0
CONNECT_RETRY_S = 1.0
DONE_LINE = re.compile(r"job (\S+) done \(attempt (\d+)\)")
WORKER_PID = r"worker process {index} started \(pid (\d+)\)"


@dataclass
class Job:
    id: str
    user: int
    submitted: float  # monotonic, when the POST was sent
    state: str = "queued"
    error: str | None = None
    seen_final: float | None = None
    result_sha: str | None = None


@dataclass
class Tally:
    """What the users saw during one row."""

    jobs: dict[str, Job] = field(default_factory=dict)
    warm_ids: set[str] = field(default_factory=set)     # warm-up jobs, not counted
    retries: Counter = field(default_factory=Counter)   # "429", "503", "connect", ...
    refused: Counter = field(default_factory=Counter)   # submissions given up: "413 ..." etc.
    notes: dict = field(default_factory=dict)


class Target:
    """The serve the users talk to (its port changes when serve is restarted)."""

    def __init__(self, srv: Server):
        self.srv = srv
        self.logs: list[str] = []  # logs of earlier serve processes of this row

    @property
    def base(self) -> str:
        return self.srv.base


def _retry_after(resp: httpx.Response) -> float:
    try:
        wait = float(resp.headers.get("retry-after", "1"))
    except ValueError:
        wait = 1.0
    return min(MAX_BACKOFF_S, max(0.2, wait)) * random.uniform(0.8, 1.2)


async def _request(client: httpx.AsyncClient, target: Target, method: str, path: str,
                   tally: Tally, until: float, **kwargs) -> httpx.Response | None:
    """One API call, retried on 429/503 (after Retry-After) and refused connections, until
    monotonic time `until`; None when it never got another answer."""
    while time.monotonic() < until:
        try:
            resp = await client.request(method, target.base + path, **kwargs)
        except httpx.TransportError as err:  # serve restarting; a dropped keep-alive; timeout
            tally.retries["connect" if isinstance(err, httpx.ConnectError) else "transport"] += 1
            await asyncio.sleep(CONNECT_RETRY_S * random.uniform(0.5, 1.5))
            continue
        if resp.status_code in (429, 503):
            tally.retries[str(resp.status_code)] += 1
            await asyncio.sleep(min(_retry_after(resp), max(0.0, until - time.monotonic())))
            continue
        return resp
    return None


async def _follow(client: httpx.AsyncClient, target: Target, job: Job, tally: Tally,
                  until: float, poll_s: float) -> None:
    """Poll the job to its end (or `until`); fetch the result of a done job."""
    while time.monotonic() < until:
        await asyncio.sleep(poll_s * random.uniform(0.75, 1.25))
        resp = await _request(client, target, "GET", f"/api/v1/jobs/{job.id}", tally, until)
        if resp is None or resp.status_code != 200:
            continue
        body = resp.json()
        job.state, job.error = body["state"], body.get("error")
        if job.state in FINAL:
            job.seen_final = time.monotonic()
            break
    if job.state == "done":
        resp = await _request(client, target, "GET", f"/api/v1/jobs/{job.id}/result", tally,
                              until + 60)
        if resp is not None and resp.status_code == 200:
            job.result_sha = hashlib.sha256(resp.content).hexdigest()


async def _lane(client: httpx.AsyncClient, target: Target, user: int, photos: list[bytes],
                styles: list[str], tally: Tally, burst_end: float, drain_end: float,
                poll_s: float, rng: random.Random) -> None:
    """One user's stream of jobs: submit, follow to the end, think, again, until burst_end."""
    while time.monotonic() < burst_end:
        sent = time.monotonic()
        resp = await _request(client, target, "POST", "/api/v1/jobs", tally, burst_end,
                              files={"image": ("photo.png", rng.choice(photos), "image/png")},
                              data={"style": rng.choice(styles)})
        if resp is None:
            return
        if resp.status_code != 202:
            try:
                message = resp.json().get("error", "")
            except ValueError:
                message = resp.text[:80]
            tally.refused[f"{resp.status_code} {message}"] += 1
            await asyncio.sleep(1.0)
            continue
        job = Job(resp.json()["id"], user, sent)
        tally.jobs[job.id] = job
        await _follow(client, target, job, tally, drain_end, poll_s)
        await asyncio.sleep(rng.uniform(0.0, 2.0))


async def _verify(client: httpx.AsyncClient, target: Target, tally: Tally) -> Counter:
    """After the drain: is each job still what its user was handed? (duplicated, part b)."""
    changed: Counter = Counter()
    gate = asyncio.Semaphore(16)

    async def one(job: Job) -> None:
        if job.state not in FINAL:
            return
        async with gate:
            until = time.monotonic() + 60
            resp = await _request(client, target, "GET", f"/api/v1/jobs/{job.id}", tally, until)
            if resp is None or resp.status_code != 200 or resp.json()["state"] != job.state:
                changed[job.id] += 1
                return
            if job.state == "done":
                resp = await _request(client, target, "GET", f"/api/v1/jobs/{job.id}/result",
                                      tally, until)
                sha = (hashlib.sha256(resp.content).hexdigest()
                       if resp is not None and resp.status_code == 200 else None)
                if sha != job.result_sha:
                    changed[job.id] += 1

    await asyncio.gather(*(one(j) for j in list(tally.jobs.values())))
    return changed


async def _drive(target: Target, keys: list[str], warm_key: str, args: argparse.Namespace,
                 tally: Tally, fault: Callable[[Target], dict] | None) -> Counter:
    """Warm up, run the users (and the fault) into `tally`, then verify what they were handed;
    returns the jobs whose state or result changed after delivery."""
    photos = [photo_png(args.size * 3 // 4, args.size, seed=i) for i in range(16)]
    limits = httpx.Limits(max_connections=len(keys) * LANES_PER_USER + 32,
                          max_keepalive_connections=len(keys) * LANES_PER_USER + 32)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        warm_h = {"X-API-Key": warm_key}
        resp = await client.get(target.base + "/api/v1/styles", headers=warm_h)
        resp.raise_for_status()
        styles = [s["id"] for s in resp.json()]
        warm = Tally()  # warm-up: the model loads outside the measurement
        until = time.monotonic() + 300
        warm_jobs = []
        for _ in range(args.workers):
            r = await _request(client, target, "POST", "/api/v1/jobs", warm, until,
                               headers=warm_h, data={"style": styles[0]},
                               files={"image": ("w.png", photos[0], "image/png")})
            if r is None or r.status_code != 202:
                raise RuntimeError(f"warm-up job refused: {r and r.text}")
            warm_jobs.append(Job(r.json()["id"], -1, time.monotonic()))
            tally.warm_ids.add(warm_jobs[-1].id)
        await asyncio.gather(*(_follow(_Keyed(client, warm_h), target, j, warm, until, 0.5)
                               for j in warm_jobs))
        if any(j.state != "done" for j in warm_jobs):
            raise RuntimeError(f"warm-up jobs did not finish: {[j.state for j in warm_jobs]}")

        start = time.monotonic()
        burst_end = start + args.seconds
        drain_end = burst_end + args.drain
        lanes = []
        for user, key in enumerate(keys):
            headers = {"X-API-Key": key}
            for lane in range(LANES_PER_USER):
                rng = random.Random(user * 1000 + lane)
                lanes.append(_lane(_Keyed(client, headers), target, user, photos, styles,
                                   tally, burst_end, drain_end, args.poll, rng))

        async def strike() -> None:
            await asyncio.sleep(args.fault_at * args.seconds)
            queued = sum(j.state == "queued" for j in tally.jobs.values())
            running = sum(j.state == "running" for j in tally.jobs.values())
            tally.notes.update(fault_at_s=round(time.monotonic() - start, 1),
                               queued_at_fault=queued, running_at_fault=running)
            tally.notes.update(await asyncio.to_thread(fault, target))

        tasks = [asyncio.ensure_future(c) for c in lanes]
        if fault is not None:
            tasks.append(asyncio.ensure_future(strike()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        tally.notes["burst_and_drain_s"] = round(time.monotonic() - start, 1)
        return await _verify(_Keyed(client, None, keys, tally), target, tally)


class _Keyed:
    """The shared client with one user's X-API-Key (or, for `_verify`, each job's owner's)."""

    def __init__(self, client: httpx.AsyncClient, headers: dict | None,
                 keys: list[str] | None = None, tally: Tally | None = None):
        self.client, self.headers, self.keys, self.tally = client, headers, keys, tally

    async def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        headers = self.headers
        if headers is None:  # verification: the job's owner asks
            job_id = url.split("/api/v1/jobs/", 1)[1].split("/", 1)[0]
            headers = {"X-API-Key": self.keys[self.tally.jobs[job_id].user]}
        return await self.client.request(method, url, headers=headers, **kwargs)


# -- faults ------------------------------------------------------------------------------------
def kill_worker(target: Target) -> dict:
    """SIGKILL worker process 0 (the newest pid serve logged for it)."""
    pids = re.findall(WORKER_PID.format(index=0), target.srv.log())
    if not pids:
        raise RuntimeError("serve's log names no worker process 0")
    os.kill(int(pids[-1]), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(re.findall(WORKER_PID.format(index=0), target.srv.log())) > len(pids):
            return {"killed_pid": int(pids[-1]), "worker_restarted": True}
        time.sleep(0.5)
    return {"killed_pid": int(pids[-1]), "worker_restarted": False}


def restart_serve(target: Target, tally: Tally, workers: int) -> dict:
    """SIGTERM serve, then start it again on the same data dir; remember the log of the first."""
    old = target.srv
    done_before = [j for j in tally.jobs.values() if j.result_sha is not None]
    t0 = time.monotonic()
    code = old.stop()
    target.logs.append(old.log())
    stopped_s = time.monotonic() - t0
    target.srv = Server(old.log_path.parent, workers=workers, **old_env(old))
    return {"serve_exit_code": code, "stop_s": round(stopped_s, 1),
            "down_s": round(time.monotonic() - t0, 1),
            "results_before_stop": [j.id for j in done_before]}


def old_env(srv: Server) -> dict[str, str]:
    """The STYLEJAX_* settings `srv` was started with (the same for its successor)."""
    return {k: v for k, v in srv.env.items() if k.startswith("STYLEJAX_")}


def kill_redis(redis: RedisServer, down_s: float) -> dict:
    redis.stop()  # SIGKILL
    time.sleep(down_s)
    redis.start()
    return {"redis_down_s": down_s, "redis_persistence": "aof" if redis.persistent else "none"}


# -- one row -----------------------------------------------------------------------------------
def _percentiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def _serve_env(args: argparse.Namespace, keys: list[str]) -> dict[str, str]:
    """Serve's own defaults, not the test helper's small limits; the users' API keys."""
    env = {"STYLEJAX_API_KEYS": json.dumps(keys),
           "STYLEJAX_MAX_UPLOAD_BYTES": "20000000", "STYLEJAX_MAX_SIDE": "2048",
           # what serve itself sets for its worker processes: cores / workers
           "STYLEJAX_ORT_THREADS": str(max(1, (os.cpu_count() or 1) // max(1, args.workers)))}
    for item in args.env:
        name, _, value = item.partition("=")
        env[name] = value
    return env


def run_row(row: str, args: argparse.Namespace, tmp: Path) -> dict:
    keys = [f"bench-{i:04d}-{secrets.token_hex(8)}" for i in range(args.users)]
    warm_key = f"bench-warm-{secrets.token_hex(8)}"
    env = _serve_env(args, keys + [warm_key])
    redis = None
    target = None
    try:
        if row.startswith("redis"):
            redis = RedisServer(tmp / "redis", persistent=row == "redis-aof",
                                appendfsync="everysec").start()
            env["STYLEJAX_QUEUE"] = redis.url
        target = Target(Server(tmp, workers=args.workers, **env))
        tally = Tally()
        fault: Callable[[Target], dict] | None = {
            "load": None,
            "worker-kill": kill_worker,
            "serve-restart": lambda t: restart_serve(t, tally, args.workers),
            "redis-aof": lambda t: kill_redis(redis, args.redis_down),
            "redis-nopersist": lambda t: kill_redis(redis, args.redis_down),
        }[row]
        changed = asyncio.run(_drive(target, keys, warm_key, args, tally, fault))
    finally:
        if target is not None:
            target.srv.stop()
            target.logs.append(target.srv.log())
        if redis is not None:
            redis.stop()
    return _summarise(row, args, tally, changed, target, tmp)


def _summarise(row: str, args: argparse.Namespace, tally: Tally, changed: Counter,
               target: Target, tmp: Path) -> dict:
    jobs = tally.jobs
    log = "\n".join(target.logs)
    done_lines = Counter(m.group(1) for m in DONE_LINE.finditer(log))
    with Store(target.srv.data_dir / "meta.db") as store:
        book = {jid: store.get_job(jid) for jid in jobs}
        everything = {j.id: j for state in JobState for j in store.jobs_in_state(state,
                                                                                 limit=10**7)}
    # in the book but never handed to a user: a POST whose answer was lost, then retried
    unseen = Counter(j.state.value for jid, j in everything.items()
                     if jid not in jobs and jid not in tally.warm_ids)
    states = Counter(j.state if j.state in FINAL else "lost" for j in jobs.values())
    multi_done = {jid for jid in jobs if done_lines[jid] > 1}
    book_mismatch = {jid for jid, j in jobs.items() if j.state in FINAL
                     and (book[jid] is None or book[jid].state.value != j.state)}
    duplicated = multi_done | set(changed) | book_mismatch
    rerun = sum(1 for b in book.values() if b is not None and b.attempts > 1)
    lat = [j.seen_final - j.submitted for j in jobs.values()
           if j.state == "done" and j.seen_final is not None]
    book_lat = [b.finished_at - b.created_at for b in book.values()
                if b is not None and b.state.value == "done" and b.finished_at]
    p50, p95 = _percentiles(lat)
    b50, b95 = _percentiles(book_lat)
    notes = dict(tally.notes)
    if row == "serve-restart":
        before = notes.pop("results_before_stop", [])
        notes["results_before_stop"] = len(before)
        notes["results_before_stop_still_served"] = sum(
            1 for jid in before if jid not in changed and jobs[jid].state == "done")
    lost_states = Counter(
        f"{book[jid].state.value} ({book[jid].attempts} attempts)" if book[jid] else "gone"
        for jid, j in jobs.items() if j.state not in FINAL)  # as the job book has them
    return {
        "row": row, "users": args.users, "seconds": args.seconds, "workers": args.workers,
        "size": args.size,
        "accepted": len(jobs), "done": states["done"], "failed": states["failed"],
        "cancelled": states["cancelled"], "lost": states["lost"],
        "lost_states": dict(lost_states), "unseen": dict(unseen),
        "failed_reasons": dict(Counter(j.error for j in jobs.values() if j.state == "failed")),
        "duplicated": len(duplicated),
        "duplicated_parts": {"done_log_lines_gt1": len(multi_done),
                             "changed_after_delivery": len(changed),
                             "book_disagrees": len(book_mismatch)},
        "done_log_lines": sum(done_lines[jid] for jid in jobs),
        "rerun": rerun,
        "retries": dict(tally.retries), "refused": dict(tally.refused),
        "p50_s": p50, "p95_s": p95, "book_p50_s": b50, "book_p95_s": b95,
        "notes": notes,
    }


# -- output ------------------------------------------------------------------------------------
def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def markdown(rows: list[dict]) -> str:
    lines = ["| row | accepted | done | failed | lost | duplicated | re-run | 429 / 503 / "
             "conn. retries | p50 (s) | p95 (s) | notes |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in rows:
        retries = r["retries"]
        conn = retries.get("connect", 0) + retries.get("transport", 0)
        notes = "; ".join(f"{k} {v}" for k, v in r["notes"].items())
        if r["failed_reasons"]:
            notes += "; failed: " + ", ".join(f"{n}× {e!r}" for e, n in
                                               r["failed_reasons"].items())
        if r["lost_states"]:
            notes += "; lost in: " + ", ".join(f"{n} {s}" for s, n in r["lost_states"].items())
        if r["unseen"]:
            notes += "; in the book, never handed to a user: " + ", ".join(
                f"{n} {s}" for s, n in r["unseen"].items())
        if r["refused"]:
            notes += "; refused: " + ", ".join(f"{n}× {e}" for e, n in r["refused"].items())
        lines.append(
            f"| {r['row']} | {r['accepted']} | {r['done']} | {r['failed']} | {r['lost']} | "
            f"{r['duplicated']} | {r['rerun']} | {retries.get('429', 0)} / "
            f"{retries.get('503', 0)} / {conn} | {_fmt(r['p50_s'])} | "
            f"{_fmt(r['p95_s'])} | {notes} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=180.0, help="burst length per row")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated of {ROWS}")
    ap.add_argument("--workers", type=int, default=2, help="worker processes of serve")
    ap.add_argument("--size", type=int, default=256, help="photo long side (px)")
    ap.add_argument("--drain", type=float, default=300.0,
                    help="seconds after the burst a job may take to end before it is lost")
    ap.add_argument("--poll", type=float, default=2.0, help="users' poll interval (s)")
    ap.add_argument("--fault-at", type=float, default=0.5, help="fraction of the burst")
    ap.add_argument("--redis-down", type=float, default=2.0,
                    help="seconds Redis stays down in the redis rows")
    ap.add_argument("--env", action="append", default=[], metavar="STYLEJAX_NAME=VALUE",
                    help="an extra serve setting (repeatable), e.g. "
                         "STYLEJAX_QUEUE_VISIBILITY_S=5")
    ap.add_argument("--out-dir", help="keep each row's data dir and logs here (default: a "
                                      "temporary dir, removed)")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 when any row lost or duplicated a job")
    args = ap.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        ap.error(f"unknown row(s) {', '.join(unknown)}; known: {', '.join(ROWS)}")
    if args.workers < 1 or args.users < 1:
        ap.error("--workers and --users must be at least 1")

    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpus": os.cpu_count(),
            "args": {k: v for k, v in vars(args).items() if k not in ("json", "out_dir")}}
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as scratch:
        base = Path(args.out_dir) if args.out_dir else Path(scratch)
        for row in rows:
            folder = base / row
            if folder.exists() and any(folder.iterdir()):  # old jobs and AOF would mix in
                ap.error(f"{folder} is not empty: give --out-dir a new folder")
            folder.mkdir(parents=True, exist_ok=True)
            print(f"== {row}: {args.users} users, {args.seconds:g} s, {args.workers} workers",
                  flush=True)
            results.append(run_row(row, args, folder))
            print(json.dumps(results[-1]), flush=True)
            if args.json:  # after each row: a long run that breaks later keeps what it measured
                Path(args.json).write_text(json.dumps({"meta": meta, "rows": results}, indent=2))
    print()
    print(markdown(results))
    if args.strict and any(r["lost"] or r["duplicated"] for r in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
