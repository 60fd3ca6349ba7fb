"""The job queue's contract: `JobQueue`, what it hands out (`Delivery`, `DeadLetter`) and the
helpers both backends share.

Its own module so that the two implementations — `storage.queue` (SQLite, and `open_queue`)
and `storage.queue_redis` (Redis Streams) — both build on it without importing each other.
The semantics are described in `storage.queue`'s docstring and pinned by tests/test_queue.py.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

__all__ = ["DEFAULT_MAX_ATTEMPTS", "DEFAULT_VISIBILITY_S", "DeadLetter", "Delivery", "JobQueue"]

DEFAULT_VISIBILITY_S = 60.0
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Delivery:
    """One delivery of a job to one consumer; hand it back to `ack`/`release`/`touch`.

    `delivery_id` is the backend's handle (SQLite row sequence, Redis stream entry id); it stays
    the same across redeliveries of the job, while `attempts` counts them (1 = first delivery).
    """

    job_id: str
    payload: dict[str, Any]
    delivery_id: str
    attempts: int
    consumer: str = field(default="", compare=False)


@dataclass(frozen=True)
class DeadLetter:
    """A job given up on after `attempts` deliveries without an ack (`JobQueue.dead_letters`)."""

    job_id: str
    payload: dict[str, Any]
    attempts: int
    dead_id: str
    died_at: float


class JobQueue(ABC):
    """The queue the service core enqueues into and workers claim from (see module docstring)."""

    visibility_s: float
    max_attempts: int

    @abstractmethod
    def enqueue(self, job_id: str, payload: dict[str, Any]) -> None:
        """Append a job (payload must be JSON-serialisable); durable once this returns."""

    @abstractmethod
    def claim(self, consumer: str, *, block_s: float, max_items: int = 1) -> list[Delivery]:
        """Lease up to `max_items` jobs to `consumer`, oldest first; expired leases come back
        first. Waits up to `block_s` seconds for work (0 = do not wait); [] if none came."""

    @abstractmethod
    def ack(self, delivery: Delivery) -> bool:
        """Mark the job done and forget it. False if it was already acked or dead-lettered."""

    @abstractmethod
    def release(self, delivery: Delivery, *, count_attempt: bool = True) -> bool:
        """Give the job back now, ahead of newer jobs, for any consumer to claim.

        `count_attempt=False` (graceful shutdown) makes the next delivery reuse this attempt
        number; by default it is spent, and a job released on its last attempt goes to the
        dead letters. False (and nothing changes) if this delivery no longer holds the lease."""

    @abstractmethod
    def touch(self, delivery: Delivery) -> bool:
        """Renew the lease for another `visibility_s` (heartbeat for long jobs).

        False if the lease was already lost to another consumer: stop working on the job."""

    @abstractmethod
    def reclaim_stale(self, consumer: str, idle_s: float, max_items: int = 100) -> list[Delivery]:
        """Take over deliveries not acked/touched for `idle_s` seconds (their worker died).

        Each comes back with ``attempts + 1``; ones over `max_attempts` go to dead letters."""

    @abstractmethod
    def pending_count(self) -> int:
        """Jobs enqueued and not yet acked or dead: waiting plus in flight."""

    @abstractmethod
    def job_ids(self) -> set[str]:
        """Every job id the queue holds: waiting, in flight or dead-lettered (not yet removed).

        For reconciling with the job book (`StyleService.reconcile`): a job the book calls
        active that is in none of these was lost by the queue (e.g. Redis restarted without
        persistence) and must be enqueued again."""

    @abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Jobs given up on, oldest first, until `remove_dead` is called for them."""

    @abstractmethod
    def remove_dead(self, dead: DeadLetter) -> None:
        """Forget a dead letter once the service core has recorded the failure."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the queue object is unusable afterwards."""

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _encode_payload(payload: dict[str, Any]) -> str:
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


def _check_positive(visibility_s: float, max_attempts: int) -> None:
    if not visibility_s > 0:
        raise ValueError(f"visibility_s must be > 0, got {visibility_s}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
