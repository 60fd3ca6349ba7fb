"""Typed storage errors.

Two families: `StyleJAXError` subclasses carry a message a front end may show as it is (quota,
unknown job, too many jobs); `StorageError` subclasses are programming or operations problems
(an illegal state transition, a database from a newer release) that front ends log and answer
with a generic message.
"""

from __future__ import annotations

from stylejax.errors import StyleJAXError


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


class JobNotFound(StyleJAXError, LookupError):
    """The job id is unknown (never existed, or removed by retention or a deletion request)."""

    def __init__(self, job_id: str) -> None:
        super().__init__("That job does not exist (anymore).")
        self.job_id = job_id


class TooManyActiveJobsError(StyleJAXError):
    """The user already has as many queued or running jobs as allowed."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You already have {limit} picture(s) in progress. "
            "Please wait for one to finish and try again."
        )
        self.limit = limit


class QuotaExceededError(StyleJAXError):
    """Storing this blob would take the owner past their storage quota."""

    def __init__(self, used: int, size: int, limit: int) -> None:
        super().__init__(
            f"Your storage is full ({_mb(used)} of {_mb(limit)} used; this file needs "
            f"{_mb(size)}). Delete some history or wait for old pictures to expire."
        )
        self.used = used
        self.size = size
        self.limit = limit


def _mb(n: int) -> str:
    """Bytes as a short human figure for messages."""
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} kB"
