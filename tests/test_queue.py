"""The job queue contract (storage/queue.py), run against SQLite and a real redis-server.

Timeouts are small (0.3–1 s) to keep the suite fast; every wait is bounded by a deadline.
Worker processes are this file run as a script (see `_worker_main` at the bottom), so they are
real processes that can be SIGKILLed, and they import neither pytest plugins nor JAX.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.queue import DeadLetter, Delivery, JobQueue, SqliteQueue, open_queue

try:  # as a worker script, tests/ is sys.path[0]; under pytest, rootdir-relative import
    from redis_server import RedisServer, require_redis_server
except ImportError:  # pragma: no cover
    from tests.redis_server import RedisServer, require_redis_server

BACKENDS = ["sqlite", "redis"]
WORKER = Path(__file__).resolve()


def wait_until(pred: Callable[[], Any], timeout_s: float, what: str, step_s: float = 0.02) -> Any:
    """Poll `pred` until it returns something truthy; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(step_s)


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def redis_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = require_redis_server()
    with RedisServer(tmp_path_factory.mktemp("redis"), binary) as srv:
        yield srv


@pytest.fixture(params=BACKENDS)
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., str]:
    """`queue_url(**options)` → a URL for one fresh queue per test (a new file or stream)."""
    if request.param == "sqlite":
        base = f"sqlite:///{tmp_path / 'queue.db'}"  # absolute path → sqlite:////tmp/...
    else:
        srv: RedisServer = request.getfixturevalue("redis_srv")
        base = f"{srv.url}?stream=test:{uuid.uuid4().hex}&group=workers"

    def url(**options: Any) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        sep = "&" if "?" in base else "?"
        return f"{base}{sep}{query}" if query else base

    return url


@pytest.fixture
def open_q(queue_url: Callable[..., str]) -> Iterator[Callable[..., JobQueue]]:
    """`open_q(**options)` → a new queue object on this test's queue; closed at teardown."""
    opened: list[JobQueue] = []

    def factory(**options: Any) -> JobQueue:
        q = open_queue(queue_url(**options))
        opened.append(q)
        return q

    yield factory
    for q in opened:
        q.close()


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.job_id for d in deliveries]


# --------------------------------------------------------------------------------------------
# contract, both backends


def test_fifo_claim_ack_and_payload_roundtrip(open_q: Callable[..., JobQueue]) -> None:
    q = open_q()
    payloads = [{"photo": f"blob/{i}", "style": "wave", "strength": 0.5, "i": i} for i in range(5)]
    payloads[0]["caption"] = "Kätzchen 🐱"
    for i, p in enumerate(payloads):
        q.enqueue(f"job-{i}", p)
    assert q.pending_count() == 5

    first = q.claim("w1", block_s=0, max_items=2)
    assert ids(first) == ["job-0", "job-1"]
    assert [d.payload for d in first] == payloads[:2]
    assert all(d.attempts == 1 and d.consumer == "w1" for d in first)
    rest = q.claim("w2", block_s=0, max_items=10)
    assert ids(rest) == ["job-2", "job-3", "job-4"]
    assert q.pending_count() == 5  # in flight still counts until acked

    for d in first + rest:
        assert q.ack(d)
    assert not q.ack(first[0])  # second ack is a no-op
    assert q.pending_count() == 0
    assert q.claim("w1", block_s=0) == []
    assert q.dead_letters() == []


def test_claim_blocks_until_work_arrives(open_q: Callable[..., JobQueue]) -> None:
    q, producer = open_q(), open_q()
    t0 = time.monotonic()
    assert q.claim("w", block_s=0.3) == []
    assert 0.25 <= time.monotonic() - t0 < 3.0

    timer = threading.Timer(0.3, producer.enqueue, args=("late", {"n": 1}))
    timer.start()
    try:
        t0 = time.monotonic()
        got = q.claim("w", block_s=5.0)
        waited = time.monotonic() - t0
    finally:
        timer.cancel()
        timer.join(timeout=10)  # its XADD reply must be read before the fixture closes it
    assert ids(got) == ["late"]
    assert waited < 3.0  # woke up for the job, did not sit out the whole block


def test_unacked_delivery_hidden_until_visibility_timeout(
    open_q: Callable[..., JobQueue],
) -> None:
    vis = 0.8
    a, b = open_q(visibility_s=vis), open_q(visibility_s=vis)
    a.enqueue("job-0", {"n": 0})
    t0 = time.monotonic()
    (d1,) = a.claim("worker-a", block_s=0)
    assert b.claim("worker-b", block_s=0) == []  # leased to worker-a
    assert b.pending_count() == 1

    got = b.claim("worker-b", block_s=5.0)
    elapsed = time.monotonic() - t0
    assert ids(got) == ["job-0"]
    (d2,) = got
    assert d2.attempts == 2 and d2.consumer == "worker-b"
    assert d2.delivery_id == d1.delivery_id and d2.payload == {"n": 0}
    assert elapsed >= vis - 0.05
    # worker-a lost its lease: it can no longer give the job back or extend it
    assert not a.release(d1)
    assert not a.touch(d1)
    assert b.ack(d2)
    assert b.pending_count() == 0


def test_max_attempts_moves_job_to_dead_letters(open_q: Callable[..., JobQueue]) -> None:
    q = open_q(visibility_s=0.3, max_attempts=2)
    q.enqueue("poison", {"photo": "crashes-every-worker"})
    (p1,) = q.claim("w", block_s=0)
    assert p1.job_id == "poison" and p1.attempts == 1

    # the worker "crashes" (never acks); the lease runs out and the job comes back once more
    (p2,) = q.claim("w", block_s=3.0)
    assert (p2.job_id, p2.attempts) == ("poison", 2)
    # ... and is out of attempts after that: the claim that finds it expired buries it
    assert q.claim("w", block_s=0.8) == []
    assert not q.ack(p2)  # a late ack of a dead job changes nothing
    q.enqueue("fine", {"photo": "ok"})
    got = q.claim("w", block_s=0)
    assert ids(got) == ["fine"] and got[0].attempts == 1
    assert q.ack(got[0])

    dead = q.dead_letters()
    assert [(x.job_id, x.attempts, x.payload) for x in dead] == [
        ("poison", 2, {"photo": "crashes-every-worker"})
    ]
    assert isinstance(dead[0], DeadLetter) and dead[0].died_at > 0
    assert q.pending_count() == 0
    assert q.claim("w", block_s=0.4) == []  # never redelivered
    q.remove_dead(dead[0])
    assert q.dead_letters() == []


def test_release_puts_job_back_now(open_q: Callable[..., JobQueue]) -> None:
    q = open_q(visibility_s=30)
    for i in range(3):
        q.enqueue(f"job-{i}", {"i": i})
    (d0,) = q.claim("w1", block_s=0)
    assert q.release(d0, count_attempt=False)  # graceful shutdown: not the job's fault
    assert not q.release(d0) and not q.touch(d0)  # already given back: no longer ours

    got = q.claim("w2", block_s=0, max_items=2)  # visible at once, still first in line
    assert ids(got) == ["job-0", "job-1"]
    assert [d.attempts for d in got] == [1, 1]
    for d in got:
        q.ack(d)
    assert q.pending_count() == 1


def test_release_spends_the_attempt_by_default(open_q: Callable[..., JobQueue]) -> None:
    """"Release to retry" after an error: attempts grow, so a failing job cannot loop forever."""
    q = open_q(visibility_s=30, max_attempts=3)
    q.enqueue("flaky", {})
    q.enqueue("next", {})
    seen = []
    for _ in range(3):
        (d,) = q.claim("w", block_s=0)
        seen.append((d.job_id, d.attempts))
        assert q.release(d)
    assert seen == [("flaky", 1), ("flaky", 2), ("flaky", 3)]
    # released on its last attempt: dead, and the queue moves on
    assert ids(q.claim("w", block_s=0)) == ["next"]
    assert [(x.job_id, x.attempts) for x in q.dead_letters()] == [("flaky", 3)]


def test_touch_extends_the_lease(open_q: Callable[..., JobQueue]) -> None:
    vis = 0.6
    a, b = open_q(visibility_s=vis), open_q(visibility_s=vis)
    a.enqueue("long-job", {})
    (d,) = a.claim("a", block_s=0)
    for _ in range(3):  # 3 × 0.3 s = 0.9 s > visibility, but heartbeats keep it leased
        time.sleep(vis / 2)
        assert a.touch(d)
        assert b.claim("b", block_s=0) == []
        assert b.reclaim_stale("b", idle_s=vis) == []
    assert a.ack(d)


def test_reclaim_stale_takes_over_idle_deliveries(open_q: Callable[..., JobQueue]) -> None:
    q = open_q(visibility_s=30)  # long lease: only reclaim_stale can take the job over
    q.enqueue("job-0", {"n": 0})
    q.enqueue("job-1", {"n": 1})
    (d,) = q.claim("dead-worker", block_s=0)
    assert q.reclaim_stale("rescuer", idle_s=5.0) == []

    got = wait_until(lambda: q.reclaim_stale("rescuer", idle_s=0.2), 5.0, "a stale delivery")
    assert [(x.job_id, x.attempts, x.consumer) for x in got] == [("job-0", 2, "rescuer")]
    assert q.reclaim_stale("other", idle_s=0.2) == []  # just taken over: not idle
    assert not q.release(d)
    assert q.ack(got[0])
    assert ids(q.claim("rescuer", block_s=0)) == ["job-1"]


def test_enqueue_rejects_non_json_payloads(open_q: Callable[..., JobQueue]) -> None:
    q = open_q()
    with pytest.raises(TypeError):
        q.enqueue("x", {"photo": object()})
    with pytest.raises(TypeError):
        q.enqueue("x", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        q.enqueue("x", {"nan": float("nan")})
    assert q.pending_count() == 0


# --------------------------------------------------------------------------------------------
# real worker processes


def _spawn_worker(mode: str, url: str, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), mode, url, str(out), *extra],
        stdin=subprocess.DEVNULL,
    )


def _reap(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def test_two_worker_processes_process_each_job_exactly_once(
    queue_url: Callable[..., str], tmp_path: Path
) -> None:
    url = queue_url(visibility_s=30)
    outs = [tmp_path / f"worker{i}.txt" for i in range(2)]
    stop = tmp_path / "stop"
    procs = [_spawn_worker("consume", url, out, str(stop)) for out in outs]
    try:
        # both workers are up and blocked in claim() before the jobs arrive, so both get some
        wait_until(lambda: all(Path(f"{o}.ready").exists() for o in outs), 30, "workers ready")
        with open_queue(url) as q:
            for i in range(20):
                q.enqueue(f"job-{i:02d}", {"i": i})
            wait_until(lambda: q.pending_count() == 0, 30, "all 20 jobs acked", step_s=0.05)
        stop.touch()
        for p in procs:
            assert p.wait(timeout=20) == 0
    finally:
        _reap(procs)
    done = [o.read_text().split() for o in outs]
    everything = done[0] + done[1]
    assert sorted(everything) == [f"job-{i:02d}" for i in range(20)]  # none lost, none twice
    assert all(done), f"one worker did nothing: {[len(d) for d in done]}"


def test_sigkilled_worker_job_is_reclaimed_by_another_consumer(
    queue_url: Callable[..., str], tmp_path: Path
) -> None:
    url = queue_url(visibility_s=30)  # long lease: the rescue is reclaim_stale's doing
    out = tmp_path / "victim.txt"
    with open_queue(url) as q:
        q.enqueue("job-0", {"photo": "a"})
        q.enqueue("job-1", {"photo": "b"})
        victim = _spawn_worker("claim-and-hang", url, out)
        try:
            wait_until(lambda: out.exists() and out.read_text().strip(), 30, "victim's claim")
            os.kill(victim.pid, signal.SIGKILL)
            assert victim.wait(timeout=10) == -signal.SIGKILL
        finally:
            _reap([victim])
        assert out.read_text().split() == ["job-0"]

        (d1,) = q.claim("rescuer", block_s=0)  # the untouched job is still plain waiting work
        assert (d1.job_id, d1.attempts) == ("job-1", 1)
        assert q.ack(d1)

        got = wait_until(lambda: q.reclaim_stale("rescuer", idle_s=0.5), 10, "reclaim")
        assert [(d.job_id, d.attempts, d.consumer) for d in got] == [("job-0", 2, "rescuer")]
        assert got[0].payload == {"photo": "a"}
        assert q.ack(got[0])
        assert q.pending_count() == 0
        assert q.dead_letters() == []


# --------------------------------------------------------------------------------------------
# backend specific


def test_redis_restart_loses_no_job(tmp_path: Path) -> None:
    """AOF: acked jobs stay acked, waiting and in-flight ones survive a redis-server crash."""
    binary = require_redis_server()
    with RedisServer(tmp_path / "redis", binary) as srv:
        url = f"{srv.url}?stream=restart:{uuid.uuid4().hex}&visibility_s=0.5"
        q = open_queue(url)
        try:
            for i in range(10):
                q.enqueue(f"job-{i}", {"i": i})
            for d in q.claim("w1", block_s=0, max_items=3):
                assert q.ack(d)
            (in_flight,) = q.claim("w1", block_s=0)  # job-3: claimed, worker dies with redis
            assert in_flight.job_id == "job-3"

            port = srv.port
            srv.restart()  # SIGKILL, then start on the same port and directory
            assert srv.port == port

            assert q.pending_count() == 7  # same client object: reconnects by itself
            done: dict[str, Delivery] = {}
            deadline = time.monotonic() + 15
            while len(done) < 7 and time.monotonic() < deadline:
                for d in q.claim("w2", block_s=0.5, max_items=10):
                    assert d.job_id not in done, f"{d.job_id} delivered twice"
                    done[d.job_id] = d
                    assert q.ack(d)
            assert sorted(done) == [f"job-{i}" for i in range(3, 10)]
            assert done["job-3"].attempts == 2
            assert all(d.attempts == 1 for k, d in done.items() if k != "job-3")
            assert q.pending_count() == 0
            assert q.dead_letters() == []
        finally:
            q.close()


def test_sqlite_claims_are_atomic_across_connections(tmp_path: Path) -> None:
    """Four connections claiming as fast as they can never lease one row twice."""
    path = tmp_path / "q.db"
    with SqliteQueue(path) as q:
        for i in range(200):
            q.enqueue(f"job-{i:03d}", {"i": i})
    seen: list[list[str]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            with SqliteQueue(path) as mine:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    got = mine.claim(f"t{k}", block_s=0, max_items=3)
                    if not got:
                        return
                    for d in got:
                        seen[k].append(d.job_id)
                        mine.ack(d)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    everything = [j for s in seen for j in s]
    assert sorted(everything) == [f"job-{i:03d}" for i in range(200)]


def test_sqlite_queue_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    with SqliteQueue(path, visibility_s=0.3) as q:
        q.enqueue("a", {"x": 1})
        q.enqueue("b", {"x": 2})
        (d,) = q.claim("w", block_s=0)
    with SqliteQueue(path, visibility_s=0.3) as q:  # e.g. the whole service restarted
        assert q.pending_count() == 2
        assert ids(q.claim("w", block_s=0)) == ["b"]
        got = q.claim("w", block_s=3)
        assert (got[0].job_id, got[0].attempts) == (d.job_id, 2)


def test_open_queue_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_queue("sqlite:///rel/q.db?visibility_s=7&max_attempts=5") as q:
        assert isinstance(q, SqliteQueue)
        assert Path(q.path) == Path("rel/q.db")
        assert (q.visibility_s, q.max_attempts) == (7.0, 5)
    assert (tmp_path / "rel" / "q.db").exists()
    absolute = tmp_path / "abs.db"
    with open_queue(f"sqlite:///{absolute}") as q:  # sqlite:////abs/path (SQLAlchemy style)
        assert isinstance(q, SqliteQueue) and Path(q.path) == absolute
    with open_queue(str(tmp_path / "bare.db"), visibility_s=2) as q:
        assert isinstance(q, SqliteQueue) and q.visibility_s == 2.0
    with pytest.raises(ValueError, match="scheme"):
        open_queue("amqp://localhost/")
    with pytest.raises(ValueError, match="options"):
        open_queue("sqlite:///q.db?bogus=1")
    with pytest.raises(ValueError, match="Redis options"):
        open_queue("sqlite:///q.db?stream=x")
    with pytest.raises(ValueError, match="visibility_s"):
        open_queue("sqlite:///q.db?visibility_s=0")


def test_open_queue_redis_url(redis_srv: RedisServer) -> None:
    from storage.queue_redis import RedisQueue

    stream = f"url:{uuid.uuid4().hex}"
    with open_queue(f"{redis_srv.url}?stream={stream}&group=g&max_attempts=4") as q:
        assert isinstance(q, RedisQueue)
        assert (q.stream, q.group, q.max_attempts, q.visibility_s) == (stream, "g", 4, 60.0)
        q.enqueue("j", {})
        assert q.client.xlen(stream) == 1


def test_missing_redis_server_fails_under_ci_and_skips_locally(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    helper = sys.modules[require_redis_server.__module__]
    monkeypatch.setattr(helper.shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="redis-server is not installed"):
        helper.require_redis_server()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install"):
        helper.require_redis_server()


# --------------------------------------------------------------------------------------------
# worker processes: `python tests/test_queue.py MODE URL OUT [STOPFILE]`


def _worker_main(argv: list[str]) -> int:
    mode, url, out = argv[0], argv[1], Path(argv[2])
    consumer = f"{mode}-{os.getpid()}"
    deadline = time.monotonic() + 60  # never outlive a broken test for long
    with open_queue(url) as q:
        if mode == "claim-and-hang":
            (d,) = q.claim(consumer, block_s=20)
            out.write_text(d.job_id + "\n")
            time.sleep(max(0.0, deadline - time.monotonic()))  # "crash" before ack: SIGKILL
            return 1
        stop = Path(argv[3])
        Path(f"{out}.ready").touch()
        with open(out, "a") as log:
            while time.monotonic() < deadline:
                got = q.claim(consumer, block_s=0.2)
                if not got and stop.exists():
                    return 0
                for d in got:
                    time.sleep(0.02)  # "stylize": lets the other worker take its share
                    log.write(d.job_id + "\n")
                    log.flush()
                    q.ack(d)
    return 2


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))


def _open_and_close(path: str, barrier) -> None:
    barrier.wait()
    SqliteQueue(path).close()


def test_workers_opening_a_fresh_sqlite_queue_together(tmp_path: Path) -> None:
    """Switching a new file to WAL does not wait for locks: every opener must retry, not die."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    for r in range(4):
        path = str(tmp_path / f"q{r}.db")
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_and_close, args=(path, barrier)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
