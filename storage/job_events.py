"""One stream of a job's changes, for everyone who follows a job (the SSE endpoint, the bots).

A worker may run in another process or on another machine, so the serving process learns of a
change by reading the job's row; this module is the only place that reads it in a loop. Each
follower gets `JobEvent`s: one when the job's state, progress or error changed, and a
heartbeat (`changed=False`) when nothing moved for `heartbeat_s`, so a follower can keep its
connection alive or notice its own client left. The stream ends after the job's final state,
when the job is gone (deleted, or not the follower's), or at `timeout_s`.

Should a push channel arrive (Redis pub/sub from the workers), it replaces the loop below and
no follower changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from .db import Job

DEFAULT_POLL_S = 0.2


@dataclass(frozen=True)
class JobEvent:
    """What a follower sees: the job now (None once it is gone), whether it moved, and what
    `watch` said of it (e.g. its place in the queue)."""

    job: Job | None
    changed: bool = True
    watched: Any = None

    @property
    def is_last(self) -> bool:
        return self.job is None or self.job.state.is_terminal


def _key(job: Job) -> tuple:
    return job.state, round(float(job.progress), 4), job.error


async def job_events(read: Callable[[str], Job | None], job_id: str, *,
                     poll_s: float = DEFAULT_POLL_S, heartbeat_s: float = 15.0,
                     timeout_s: float = 900.0,
                     watch: Callable[[Job], Hashable] | None = None) -> AsyncIterator[JobEvent]:
    """Yield the job's changes as `JobEvent`s; `read` (e.g. `Store.get_job`) runs in a thread
    so the event loop stays free. `watch` (run in that thread too) adds something beside the
    row that counts as a change, e.g. the job's place in the line, which moves while its row
    stays the same."""
    deadline = time.monotonic() + timeout_s
    last: tuple | None = None
    last_yield = time.monotonic()

    def look() -> tuple[Job | None, Any]:
        job = read(job_id)
        return job, (watch(job) if watch is not None and job is not None else None)

    while True:
        job, watched = await asyncio.to_thread(look)
        if job is None:
            yield JobEvent(None)
            return
        key = (*_key(job), watched)
        now = time.monotonic()
        if key != last:
            last, last_yield = key, now
            yield JobEvent(job, watched=watched)
            if job.state.is_terminal:
                return
        elif now - last_yield >= heartbeat_s:
            last_yield = now
            yield JobEvent(job, changed=False, watched=watched)
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(poll_s)
