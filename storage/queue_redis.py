"""`RedisQueue`: the job queue on Redis Streams, for workers on several machines.

Mapping of the `JobQueue` contract onto one stream and one consumer group:

* enqueue → ``XADD`` (fields ``job_id``, ``payload`` as JSON, ``enqueued_at``);
* claim → ``XAUTOCLAIM`` of entries idle longer than the visibility timeout (so a dead worker's
  jobs come back first), then ``XREADGROUP … >`` with ``BLOCK`` for new ones;
* attempts → the pending-entries list's ``times_delivered`` (``XPENDING``); over `max_attempts`
  the entry is copied to the ``<stream>:dead`` stream and removed, in one ``MULTI``;
* ack → ``XACK`` + ``XDEL`` (so ``XLEN`` is exactly the number of unfinished jobs, and
  `job_ids` is an ``XRANGE`` of the stream and its dead letters);
* release / touch → ``XCLAIM … JUSTID`` by a small Lua script that first checks that this
  delivery still owns the entry (a late call from a worker that lost its lease is a no-op);
  release hands the entry to the placeholder consumer ``<group>:released`` with a huge idle
  time (so the next claim's XAUTOCLAIM takes it) and sets its delivery count.

Needs Redis >= 6.2 (XAUTOCLAIM); tested against Debian's redis-server 7. Not Redis Cluster:
the job and dead-letter streams would live in different hash slots.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from storage.queue_base import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_VISIBILITY_S,
    DeadLetter,
    Delivery,
    JobQueue,
    _check_positive,
    _encode_payload,
)

T = TypeVar("T")

# XCLAIM IDLE for `release`: older than any sane visibility timeout, so the next claim takes
# the entry at once; must stay below "now" in ms or Redis clamps it to 0 (~3 years here).
_RELEASED_IDLE_MS = 10**11
_PAGE = 1000  # entries per XRANGE in `job_ids`

# ARGV: group, consumer, entry id, expected times_delivered, mode ('release' | 'touch'),
#       idle, retry count after release, placeholder consumer for released entries.
_OWNED_XCLAIM = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] or tonumber(p[1][4]) ~= tonumber(ARGV[4]) then
  return 0
end
if ARGV[5] == 'release' then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[8], 0, ARGV[3], 'IDLE', ARGV[6],
             'RETRYCOUNT', ARGV[7], 'JUSTID')
else
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
end
return 1
"""


class RedisQueue(JobQueue):
    """Job queue on one Redis stream + consumer group (see module docstring).

    Commands are retried on connection errors with backoff (~5 s), so a Redis restart is a
    pause, not an error; a retried XADD or XREADGROUP can at worst cause a duplicate delivery,
    which at-least-once already allows.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str = "stylejax:jobs",
        group: str = "workers",
        visibility_s: float = DEFAULT_VISIBILITY_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        socket_timeout_s: float = 10.0,
        **redis_kwargs: Any,
    ) -> None:
        _check_positive(visibility_s, max_attempts)
        self.stream = stream
        self.dead_stream = f"{stream}:dead"
        self.group = group
        self.visibility_s = float(visibility_s)
        self.max_attempts = int(max_attempts)
        # claim() blocks in slices well under the socket timeout, and short enough that leases
        # expiring while we wait are noticed (XREADGROUP only wakes up for new entries).
        self._slice_s = min(1.0, self.visibility_s / 2, socket_timeout_s / 2)
        redis_kwargs.setdefault(
            "retry", Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), retries=10)
        )
        redis_kwargs.setdefault("protocol", 2)  # same reply shapes on redis-py 5 … 8
        self._r: redis.Redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=min(5.0, socket_timeout_s),
            **redis_kwargs,
        )
        self._owned_xclaim = self._r.register_script(_OWNED_XCLAIM)
        self._ensure_group()

    def __repr__(self) -> str:
        return f"RedisQueue(stream={self.stream!r}, group={self.group!r})"

    @property
    def client(self) -> redis.Redis:
        """The underlying redis-py client (e.g. for health checks)."""
        return self._r

    def _ensure_group(self) -> None:
        try:
            # id 0: jobs enqueued before the first worker ever started are delivered too.
            self._r.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def _grouped(self, fn: Callable[[], T]) -> T:
        """Run `fn`; if the stream or group vanished (FLUSHALL, key deleted), recreate, retry."""
        try:
            return fn()
        except redis.ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            self._ensure_group()
            return fn()

    def enqueue(self, job_id: str, payload: dict[str, Any]) -> None:
        fields = {"job_id": str(job_id), "payload": _encode_payload(payload),
                  "enqueued_at": repr(time.time())}
        self._r.xadd(self.stream, fields)

    def claim(self, consumer: str, *, block_s: float, max_items: int = 1) -> list[Delivery]:
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        deadline = time.monotonic() + max(0.0, block_s)
        vis_ms = int(self.visibility_s * 1000)
        while True:
            got = self._autoclaim(consumer, vis_ms, max_items)
            if len(got) < max_items:  # top up with new entries; wait only if we have nothing
                remaining = deadline - time.monotonic()
                block_ms = 0 if got else int(min(remaining, self._slice_s) * 1000)
                got += self._read_new(consumer, max_items - len(got), block_ms)
            if got or deadline - time.monotonic() <= 0:
                return got

    def _read_new(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        # BLOCK 0 would mean "forever": below 1 ms we do not block at all.
        block = block_ms if block_ms >= 1 else None
        resp = self._grouped(
            lambda: self._r.xreadgroup(
                self.group, consumer, {self.stream: ">"}, count=count, block=block
            )
        )
        out: list[Delivery] = []
        for _stream, entries in resp or []:
            for entry_id, fields in entries:
                out.append(self._delivery(entry_id, fields, 1, consumer))
        return out

    def reclaim_stale(self, consumer: str, idle_s: float, max_items: int = 100) -> list[Delivery]:
        return self._autoclaim(consumer, max(0, int(idle_s * 1000)), max_items)

    def _autoclaim(self, consumer: str, min_idle_ms: int, limit: int) -> list[Delivery]:
        """XAUTOCLAIM up to `limit` idle entries; dead-letter the ones out of attempts."""
        out: list[Delivery] = []
        start = "0-0"
        for _ in range(16):  # bounded scan of the pending list (each call scans <= 10*count)
            next_start, entries, *_deleted = self._grouped(
                lambda s=start: self._r.xautoclaim(
                    self.stream, self.group, consumer, min_idle_ms, s, count=limit - len(out)
                )
            )
            if entries:
                out.extend(self._with_attempts(consumer, entries))
            if next_start == "0-0" or len(out) >= limit:
                break
            start = next_start
        return out

    def _with_attempts(self, consumer: str, entries: list[Any]) -> list[Delivery]:
        pipe = self._r.pipeline(transaction=False)
        for entry_id, _fields in entries:
            pipe.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
        pending = pipe.execute()
        out: list[Delivery] = []
        for (entry_id, fields), info in zip(entries, pending):
            if not fields:  # Redis 6.2 reports entries deleted while pending this way
                self._r.xack(self.stream, self.group, entry_id)
                continue
            attempts = int(info[0]["times_delivered"]) if info else 1
            if attempts > self.max_attempts:
                self._bury(entry_id, fields, attempts - 1)
            else:
                out.append(self._delivery(entry_id, fields, attempts, consumer))
        return out

    def _bury(self, entry_id: str, fields: dict[str, str], attempts: int) -> None:
        """Move an entry to the dead-letter stream, atomically (MULTI) with removing it."""
        pipe = self._r.pipeline(transaction=True)
        pipe.xadd(self.dead_stream, {**fields, "attempts": str(attempts),
                                     "died_at": repr(time.time()), "entry_id": entry_id})
        pipe.xack(self.stream, self.group, entry_id)
        pipe.xdel(self.stream, entry_id)
        pipe.execute()

    @staticmethod
    def _delivery(entry_id: str, fields: dict[str, str], attempts: int, consumer: str) -> Delivery:
        return Delivery(fields["job_id"], json.loads(fields["payload"]), entry_id, attempts,
                        consumer)

    def ack(self, delivery: Delivery) -> bool:
        pipe = self._r.pipeline(transaction=True)
        pipe.xack(self.stream, self.group, delivery.delivery_id)
        pipe.xdel(self.stream, delivery.delivery_id)
        acked, _deleted = pipe.execute()
        return int(acked) > 0

    def release(self, delivery: Delivery, *, count_attempt: bool = True) -> bool:
        # The next XAUTOCLAIM adds one to the count: keep it, or step back one to reuse it.
        retry_count = delivery.attempts if count_attempt else delivery.attempts - 1
        return self._owned(delivery, "release", retry_count)

    def touch(self, delivery: Delivery) -> bool:
        return self._owned(delivery, "touch", delivery.attempts)

    def _owned(self, delivery: Delivery, mode: str, retry_count: int) -> bool:
        args = [self.group, delivery.consumer, delivery.delivery_id, delivery.attempts, mode,
                _RELEASED_IDLE_MS, retry_count, f"{self.group}:released"]
        return bool(self._grouped(lambda: self._owned_xclaim(keys=[self.stream], args=args)))

    def pending_count(self) -> int:
        return int(self._r.xlen(self.stream))

    def job_ids(self) -> set[str]:
        # The stream holds every unfinished entry (ack deletes it), pending or not; the dead
        # stream the ones given up on. Paged so one call never returns a huge reply.
        found: set[str] = set()
        for stream in (self.stream, self.dead_stream):
            start = "-"
            while True:
                rows = self._r.xrange(stream, min=start, count=_PAGE)
                found.update(fields["job_id"] for _entry, fields in rows if "job_id" in fields)
                if len(rows) < _PAGE:
                    break
                start = "(" + rows[-1][0]  # exclusive: after the last entry read
        return found

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = self._r.xrange(self.dead_stream, count=limit)
        return [
            DeadLetter(f["job_id"], json.loads(f["payload"]), int(f["attempts"]), dead_id,
                       float(f["died_at"]))
            for dead_id, f in rows
        ]

    def remove_dead(self, dead: DeadLetter) -> None:
        self._r.xdel(self.dead_stream, dead.dead_id)

    def close(self) -> None:
        self._r.close()
