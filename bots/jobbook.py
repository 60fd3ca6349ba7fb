"""Where a worker reads its jobs and records their outcome: the job book.

Two implementations of one small interface, so the same `Worker` runs next to the service or on
another machine:

* `LocalJobBook` — the Store and BlobStore under the data directory (worker processes of
  `stylejax serve`, or any worker sharing that disk).
* `RemoteJobBook` — the serving machine's internal HTTP endpoints (`bots.worker_api`), for
  workers on other machines that share only the Redis queue. The serving machine stays the one
  writer of its SQLite file, and pictures travel over HTTP.

Every method is idempotent per job id, as at-least-once delivery needs.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from storage import (
    MASK_SHA_PARAM,
    STYLE_SHA_PARAM,
    BlobStore,
    Job,
    JobKind,
    JobNotFoundError,
    JobState,
    Store,
    UnusedBlobs,
)


class JobBook(Protocol):
    def begin(self, job_id: str) -> Job | None:
        """Mark the job running and count the attempt; None when there is nothing to do."""

    def is_cancelled(self, job_id: str) -> bool:
        """Cancelled or deleted: stop working on it."""

    def photo(self, job: Job) -> bytes: ...

    def style_picture(self, job: Job) -> bytes: ...

    def mask_picture(self, job: Job) -> bytes | None:
        """The picture of the job's region "mask" (None when it has none)."""

    def progress(self, job_id: str, fraction: float) -> None: ...

    def finish(self, job: Job, png: bytes) -> bool:
        """Record the result; True only for the call that recorded it."""

    def fail(self, job_id: str, error: str) -> bool:
        """Record a failure the user will read; False (nothing done) when the job had ended."""

    def requeue(self, job_id: str) -> None:
        """Back to queued for another attempt (no-op when the job already ended)."""

    def close(self) -> None:
        """Release what the book holds (files, connections)."""


class LocalJobBook:
    """The service's own Store and BlobStore."""

    def __init__(self, store: Store, blobs: BlobStore):
        self.store, self.blobs = store, blobs

    def begin(self, job_id: str) -> Job | None:
        job = self.store.get_job(job_id)
        if job is None or job.state.is_terminal:
            return None
        if job.state is JobState.QUEUED:
            job = self.store.set_state(job.id, JobState.RUNNING)
        self.store.increment_attempts(job.id)
        return job

    def state(self, job_id: str) -> str:
        """The job's state, or "gone" once it is deleted."""
        job = self.store.get_job(job_id)
        return job.state.value if job is not None else "gone"

    def is_cancelled(self, job_id: str) -> bool:
        return self.state(job_id) in (JobState.CANCELLED.value, "gone")

    def picture(self, sha: str) -> bytes:
        """A stored picture by its sha256 (`storage.BlobStore` errors when there is none)."""
        return self.blobs.get(sha)

    def photo(self, job: Job) -> bytes:
        return self.picture(job.input_sha)

    def style_picture(self, job: Job) -> bytes:
        return self.picture(job.params[STYLE_SHA_PARAM])

    def mask_picture(self, job: Job) -> bytes | None:
        sha = job.params.get(MASK_SHA_PARAM)
        return None if sha is None else self.picture(sha)

    def progress(self, job_id: str, fraction: float) -> None:
        self.store.set_progress(job_id, fraction)

    def finish(self, job: Job, png: bytes) -> bool:
        # no quota check: the job's room was checked when it was accepted (StyleService)
        sha = self.blobs.put(png, owner=str(job.owner), check_quota=False)
        try:
            if self.store.mark_done(job.id, sha):
                return True
        except JobNotFoundError:  # deleted while it ran: it stays deleted
            pass
        # not recorded (deleted, cancelled or already done): keep no stray copy, charge nothing
        self.discard(job.owner, self.store.unused_blobs([sha], job.owner))
        return False

    def discard(self, owner: int, unused: UnusedBlobs) -> None:
        """Delete the files no job needs and drop the owner's charges for the rest of
        `unused`, so a deletion frees the owner's quota while a picture another user's job
        shares stays on disk."""
        for sha in unused.orphaned:
            self.blobs.delete(sha)
        self.blobs.release(str(owner), unused.released - unused.orphaned)

    def finish_id(self, job_id: str, png: bytes) -> bool:
        """`finish` for a caller that holds only the id (a remote worker); False when gone."""
        job = self.store.get_job(job_id)
        return job is not None and self.finish(job, png)

    def fail(self, job_id: str, error: str) -> bool:
        job = self.store.get_job(job_id)
        if job is None or job.state.is_terminal:
            return False
        if job.state is JobState.QUEUED:  # failed before it ever ran (e.g. dead-lettered)
            self.store.set_state(job_id, JobState.RUNNING)
        self.store.set_state(job_id, JobState.FAILED, error=error)
        return True

    def requeue(self, job_id: str) -> None:
        job = self.store.get_job(job_id)
        if job is not None and job.state is JobState.RUNNING:
            self.store.set_state(job_id, JobState.QUEUED)

    def close(self) -> None:
        self.store.close()
        self.blobs.close()


def job_to_json(job: Job) -> dict:
    return {**dataclasses.asdict(job), "kind": job.kind.value, "state": job.state.value}


def job_from_json(data: dict) -> Job:
    return Job(**{**data, "kind": JobKind(data["kind"]), "state": JobState(data["state"])})


class RemoteJobBook:
    """The serving machine's `/internal/v1` endpoints, authorised by the shared worker key."""

    def __init__(self, server_url: str, worker_key: str, *, timeout_s: float = 30.0):
        import httpx

        self.client = httpx.Client(base_url=server_url.rstrip("/") + "/internal/v1",
                                   headers={"X-Worker-Key": worker_key}, timeout=timeout_s)

    def _post(self, path: str, **kwargs):
        resp = self.client.post(path, **kwargs)
        resp.raise_for_status()
        return resp

    def begin(self, job_id: str) -> Job | None:
        body = self._post(f"/jobs/{job_id}/begin").json()
        return job_from_json(body["job"]) if body["job"] is not None else None

    def is_cancelled(self, job_id: str) -> bool:
        resp = self.client.get(f"/jobs/{job_id}")
        resp.raise_for_status()
        return resp.json()["state"] in ("cancelled", "gone")

    def _blob(self, sha: str) -> bytes:
        resp = self.client.get(f"/blobs/{sha}")
        resp.raise_for_status()
        return resp.content

    def photo(self, job: Job) -> bytes:
        return self._blob(job.input_sha)

    def style_picture(self, job: Job) -> bytes:
        return self._blob(job.params[STYLE_SHA_PARAM])

    def mask_picture(self, job: Job) -> bytes | None:
        sha = job.params.get(MASK_SHA_PARAM)
        return None if sha is None else self._blob(sha)

    def progress(self, job_id: str, fraction: float) -> None:
        self._post(f"/jobs/{job_id}/progress", json={"progress": fraction})

    def finish(self, job: Job, png: bytes) -> bool:
        # A picture or a clip (video jobs): the server tells them apart by their bytes.
        resp = self._post(f"/jobs/{job.id}/result", content=png,
                          headers={"Content-Type": "application/octet-stream"})
        return bool(resp.json()["recorded"])

    def fail(self, job_id: str, error: str) -> bool:
        return bool(self._post(f"/jobs/{job_id}/fail", json={"error": error}).json()["recorded"])

    def requeue(self, job_id: str) -> None:
        self._post(f"/jobs/{job_id}/requeue")

    def close(self) -> None:
        self.client.close()
