"""Durable state of the service: SQLite metadata, content-addressed blobs, the job queue.

- `Store` (storage.db): users, jobs and their lifecycle, the deletion audit; the only
  place SQL lives. Safe across threads and processes (SQLite WAL).
- `BlobStore` (storage.blobs): photos and results on disk by sha256, atomic writes, per-user
  quota, retention sweep.

Typical retention pass (the two stores never call each other; the caller joins them)::

    old = store.jobs_older_than(days=7)
    for sha in store.delete_jobs(j.id for j in old):
        blobs.delete(sha)
    blobs.sweep(older_than_s=7 * 86400, keep=store.referenced_blobs())

Nothing here knows about Telegram, Discord or HTTP: users are (platform, platform_user_id).
"""

from .blobs import DEFAULT_MAX_BYTES_PER_USER, BlobStore, check_sha
from .db import (
    LATEST_VERSION,
    MASK_SHA_PARAM,
    STYLE_SHA_PARAM,
    DeletionReport,
    Job,
    JobKind,
    JobState,
    Store,
    UnusedBlobs,
    User,
)
from .errors import (
    BlobNotFoundError,
    InvalidBlobIdError,
    InvalidTransitionError,
    JobNotFoundError,
    QuotaExceededError,
    SchemaTooNewError,
    StorageError,
    TooManyActiveJobsError,
)

__all__ = [
    "DEFAULT_MAX_BYTES_PER_USER",
    "LATEST_VERSION",
    "MASK_SHA_PARAM",
    "STYLE_SHA_PARAM",
    "BlobNotFoundError",
    "BlobStore",
    "DeletionReport",
    "InvalidBlobIdError",
    "InvalidTransitionError",
    "Job",
    "JobKind",
    "JobNotFoundError",
    "JobState",
    "QuotaExceededError",
    "SchemaTooNewError",
    "StorageError",
    "Store",
    "TooManyActiveJobsError",
    "UnusedBlobs",
    "User",
    "check_sha",
]
