"""The job queue between the service core and the stylization workers.

One interface (`JobQueue`), two implementations:

* `SqliteQueue` — the embedded default: worker *processes* on one machine share one SQLite file
  (WAL). Claims are one `UPDATE … RETURNING` inside `BEGIN IMMEDIATE`, so two processes can
  never lease the same row.
* `RedisQueue` (in `storage.queue_redis`, imported lazily so the `redis` client stays an
  optional extra) — Redis Streams with a consumer group, for workers on several machines.

The interface itself lives in `storage.queue_base` (re-exported here), which both build on.

Semantics shared by both (and pinned by tests/test_queue.py):

* At-least-once delivery. A claimed job is leased to its consumer for `visibility_s`; if it is
  neither acked nor released nor `touch`ed in time, the next `claim` (or `reclaim_stale`)
  redelivers it with ``attempts + 1``. Workers must therefore be idempotent per job id.
* A job whose next delivery would exceed `max_attempts` is moved to the dead letters
  (`dead_letters()`), so a photo that crashes every worker cannot loop forever; the service core
  marks the job failed, tells the user, then calls `remove_dead`.
* `release` puts a job back at its old FIFO position at once. By default the delivery still
  counts as an attempt, so "release to retry" after an error cannot loop forever; a graceful
  shutdown passes ``count_attempt=False`` (stopping is not the job's fault).
* `pending_count()` counts jobs enqueued and not yet finished: waiting plus in flight, excluding
  dead letters.
* Job ids are not deduplicated: enqueue each job once (the service core owns job ids).
  `job_ids()` says which ids the queue holds, so the service core can put back the jobs a
  queue lost (`StyleService.reconcile`) without enqueueing one that is still there.

`open_queue(url)` picks the implementation from a URL, as ``STYLEJAX_QUEUE`` does.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from storage._sqlite import enable_wal
from storage.queue_base import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_VISIBILITY_S,
    DeadLetter,
    Delivery,
    JobQueue,
    _check_positive,
    _encode_payload,
)

if TYPE_CHECKING:  # pragma: no cover
    from storage.queue_redis import RedisQueue

__all__ = [
    "DeadLetter",
    "Delivery",
    "JobQueue",
    "RedisQueue",
    "SqliteQueue",
    "new_consumer_name",
    "open_queue",
]

# --------------------------------------------------------------------------------------------
# SQLite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue_jobs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,  -- FIFO order + delivery id, never reused
    job_id      TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'dead')),
    owner       TEXT,                               -- NULL when waiting, else the lease holder
    leased_at   REAL,
    lease_until REAL,
    attempts    INTEGER NOT NULL DEFAULT 0,         -- deliveries so far
    enqueued_at REAL    NOT NULL,
    died_at     REAL
);
CREATE INDEX IF NOT EXISTS queue_jobs_ready ON queue_jobs (state, lease_until, seq);
"""


class SqliteQueue(JobQueue):
    """Embedded queue in one SQLite file shared by the worker processes of one machine.

    Each process (or thread) should open its own `SqliteQueue`; one object is thread-safe but
    serialises its calls. Wall-clock time (`time.time`) is used for leases because it is the one
    clock every process on the machine agrees on.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        visibility_s: float = DEFAULT_VISIBILITY_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        poll_s: float = 0.1,
        busy_timeout_s: float = 30.0,
    ) -> None:
        _check_positive(visibility_s, max_attempts)
        self.path = str(path)
        self.visibility_s = float(visibility_s)
        self.max_attempts = int(max_attempts)
        self._poll_s = poll_s
        self._lock = threading.Lock()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so the write lock is taken
        # before the SELECT that picks the row (no lock upgrade race between processes).
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        if self.path != ":memory:":
            enable_wal(self._db, busy_timeout_s, self.path)  # retries: workers start together
        self._db.execute("PRAGMA synchronous=FULL")  # an acked enqueue survives power loss
        with self._tx() as db:  # not executescript: it would COMMIT outside our transaction
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                db.execute(stmt)

    def __repr__(self) -> str:
        return f"SqliteQueue({self.path!r}, visibility_s={self.visibility_s})"

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("queue is closed")
        return self._db

    def _tx(self) -> _Tx:
        return _Tx(self._lock, self._conn)

    def enqueue(self, job_id: str, payload: dict[str, Any]) -> None:
        data = _encode_payload(payload)
        with self._tx() as db:
            db.execute(
                "INSERT INTO queue_jobs (job_id, payload, enqueued_at) VALUES (?, ?, ?)",
                (str(job_id), data, time.time()),
            )

    def claim(self, consumer: str, *, block_s: float, max_items: int = 1) -> list[Delivery]:
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        deadline = time.monotonic() + max(0.0, block_s)
        delay = min(0.01, self._poll_s)
        while True:
            got = self._lease(consumer, max_items, stale_before=None)
            remaining = deadline - time.monotonic()
            if got or remaining <= 0:
                return got
            # Polling (with backoff) is the price of having no server; a 0.1 s cap keeps the
            # latency small next to a stylization, and an idle worker costs ~10 queries/s.
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, self._poll_s)

    def reclaim_stale(self, consumer: str, idle_s: float, max_items: int = 100) -> list[Delivery]:
        return self._lease(consumer, max_items, stale_before=time.time() - max(0.0, idle_s))

    def _lease(self, consumer: str, limit: int, stale_before: float | None) -> list[Delivery]:
        """Atomically lease up to `limit` rows; dead-letter the ones out of attempts first.

        stale_before=None: claim mode (waiting rows and expired leases); a timestamp: reclaim
        mode (leased rows last claimed/touched before it, whoever owns them).
        """
        now = time.time()
        if stale_before is None:
            eligible = "state = 'ready' AND (owner IS NULL OR lease_until <= ?)"
            args: tuple[Any, ...] = (now,)
        else:
            eligible = "state = 'ready' AND owner IS NOT NULL AND leased_at <= ?"
            args = (stale_before,)
        with self._lock:  # cheap read first: idle pollers should not take the write lock
            if self._conn.execute(
                f"SELECT 1 FROM queue_jobs WHERE {eligible} LIMIT 1", args
            ).fetchone() is None:
                return []
        with self._tx() as db:
            db.execute(
                f"UPDATE queue_jobs SET state = 'dead', owner = NULL, died_at = ? "
                f"WHERE {eligible} AND attempts >= ?",
                (now, *args, self.max_attempts),
            )
            rows = db.execute(
                f"UPDATE queue_jobs SET owner = ?, leased_at = ?, lease_until = ?, "
                f"attempts = attempts + 1 "
                f"WHERE seq IN (SELECT seq FROM queue_jobs WHERE {eligible} ORDER BY seq LIMIT ?) "
                f"RETURNING seq, job_id, payload, attempts",
                (consumer, now, now + self.visibility_s, *args, limit),
            ).fetchall()
        rows.sort()  # RETURNING order is unspecified
        return [
            Delivery(job_id, json.loads(payload), str(seq), attempts, consumer)
            for seq, job_id, payload, attempts in rows
        ]

    def ack(self, delivery: Delivery) -> bool:
        # Keyed by row, not by owner: a slow worker that finishes after its lease was taken over
        # still did the job, and the duplicate's ack then is a harmless no-op.
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM queue_jobs WHERE seq = ? AND state = 'ready'",
                (int(delivery.delivery_id),),
            )
            return cur.rowcount > 0

    def release(self, delivery: Delivery, *, count_attempt: bool = True) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE queue_jobs SET owner = NULL, leased_at = NULL, lease_until = NULL, "
                "attempts = attempts - ? "
                "WHERE seq = ? AND state = 'ready' AND owner = ? AND attempts = ?",
                (0 if count_attempt else 1, int(delivery.delivery_id), delivery.consumer,
                 delivery.attempts),
            )
            return cur.rowcount > 0

    def touch(self, delivery: Delivery) -> bool:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE queue_jobs SET leased_at = ?, lease_until = ? "
                "WHERE seq = ? AND state = 'ready' AND owner = ? AND attempts = ?",
                (now, now + self.visibility_s, int(delivery.delivery_id), delivery.consumer,
                 delivery.attempts),
            )
            return cur.rowcount > 0

    def pending_count(self) -> int:
        with self._lock:
            (n,) = self._conn.execute(
                "SELECT COUNT(*) FROM queue_jobs WHERE state = 'ready'"
            ).fetchone()
        return int(n)

    def job_ids(self) -> set[str]:
        with self._lock:
            rows = self._conn.execute("SELECT DISTINCT job_id FROM queue_jobs").fetchall()
        return {job_id for (job_id,) in rows}

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, job_id, payload, attempts, died_at FROM queue_jobs "
                "WHERE state = 'dead' ORDER BY died_at, seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            DeadLetter(job_id, json.loads(payload), attempts, str(seq), died_at)
            for seq, job_id, payload, attempts, died_at in rows
        ]

    def remove_dead(self, dead: DeadLetter) -> None:
        with self._tx() as db:
            db.execute(
                "DELETE FROM queue_jobs WHERE seq = ? AND state = 'dead'", (int(dead.dead_id),)
            )

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


class _Tx:
    """`BEGIN IMMEDIATE` … `COMMIT` under the object's thread lock (ROLLBACK on error)."""

    def __init__(self, lock: threading.Lock, db: sqlite3.Connection) -> None:
        self._lock, self._db = lock, db

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._db

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self._lock.release()


# --------------------------------------------------------------------------------------------
# URLs

_QUEUE_OPTIONS = {"visibility_s": float, "max_attempts": int, "stream": str, "group": str}


def _split_options(query: str) -> tuple[dict[str, Any], str]:
    """Our options out of a URL query; the rest stays for the backend (e.g. redis-py's)."""
    ours: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in _QUEUE_OPTIONS:
            ours[key] = _QUEUE_OPTIONS[key](value)
        else:
            rest.append((key, value))
    return ours, urlencode(rest)


def open_queue(url: str, **options: Any) -> JobQueue:
    """Open the queue named by `url` (the ``STYLEJAX_QUEUE`` setting).

    * ``sqlite:///relative/q.db``, ``sqlite:////absolute/q.db`` (SQLAlchemy's convention) or a
      bare filesystem path → `SqliteQueue`.
    * ``redis://[:password@]host:port/db``, ``rediss://…``, ``unix:///path/redis.sock`` →
      `RedisQueue`.

    Query parameters ``visibility_s``, ``max_attempts`` (and ``stream``, ``group`` for Redis)
    configure the queue, e.g. ``sqlite:///var/q.db?visibility_s=120``; keyword `options` win.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        from storage.queue_redis import RedisQueue

        ours, rest = _split_options(parts.query)
        ours.update(options)
        return RedisQueue(urlunsplit(parts._replace(query=rest)), **ours)
    if scheme == "sqlite":
        if parts.netloc:
            raise ValueError(f"sqlite URL must look like sqlite:///path (got {url!r})")
        path = unquote(parts.path)
        path = path[1:] if path.startswith("/") else path  # sqlite:///rel, sqlite:////abs
        ours, rest = _split_options(parts.query)
        if rest:
            raise ValueError(f"unknown sqlite queue options: {rest}")
        ours.update(options)
        if "stream" in ours or "group" in ours:
            raise ValueError("stream/group are Redis options; a SQLite queue is one file")
        if not path:
            raise ValueError(f"sqlite URL has no path: {url!r}")
        return SqliteQueue(path, **ours)
    if scheme and len(scheme) > 1:  # 'C:\\q.db' parses with scheme 'c'
        raise ValueError(f"unsupported queue URL scheme {scheme!r} in {url!r}")
    return SqliteQueue(url, **options)


def new_consumer_name(prefix: str = "worker") -> str:
    """A consumer name unique per process start (host + pid + random), for `claim`."""
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def __getattr__(name: str) -> Any:
    # RedisQueue lives in its own module so that importing storage.queue never needs `redis`.
    if name == "RedisQueue":
        from storage.queue_redis import RedisQueue

        return RedisQueue
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

