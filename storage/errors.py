"""Storage's internal errors, and the user-facing ones it raises (defined in stylejax.errors).

`StorageError` subclasses are programming or operations problems (an illegal state transition,
a database from a newer release) that front ends log and answer with a generic message. The
errors a user may read (unknown job, quota, too many jobs) live with every other user-facing
error in `stylejax.errors` and are re-exported here for storage's callers.
"""

from __future__ import annotations

from stylejax.errors import (
    JobNotFoundError,
    JobOverQuotaError,
    QuotaExceededError,
    TooManyActiveJobsError,
)

__all__ = [
    "BlobNotFoundError",
    "InvalidBlobIdError",
    "InvalidTransitionError",
    "JobNotFoundError",
    "JobOverQuotaError",
    "QuotaExceededError",
    "SchemaTooNewError",
    "StorageError",
    "TooManyActiveJobsError",
]


class StorageError(Exception):
    """Base of internal storage failures (not meant for users' eyes)."""


class SchemaTooNewError(StorageError):
    """The database was written by a newer release; running old code on it could corrupt it."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"database schema version {found} is newer than this code knows ({known}); "
            "upgrade StyleJAX or point it at another database"
        )
        self.found = found
        self.known = known


class InvalidTransitionError(StorageError):
    """A job state change that the lifecycle forbids (e.g. done → running)."""

    def __init__(self, job_id: str, current: str, requested: str) -> None:
        super().__init__(f"job {job_id}: cannot go from {current!r} to {requested!r}")
        self.job_id = job_id
        self.current = current
        self.requested = requested


class InvalidBlobIdError(StorageError, ValueError):
    """A blob id that is not 64 lowercase hex characters (guards against path traversal)."""


class BlobNotFoundError(StorageError, LookupError):
    """No blob with this sha256 is stored (never written, swept or deleted)."""
