"""Content-addressed blob store on the local filesystem (photos, style pictures, results).

A blob's id is the sha256 hex of its bytes and its file lives at `root/ab/cd/<sha>`. Writes go
to a temporary file in the same directory, are fsynced and then renamed over the final name,
so a reader never sees a partial blob, even after a crash mid-write (the leftover temp file is
invisible to `get`/`exists` and removed by `sweep`). Storing the same bytes twice is free.

Per-owner quotas are kept in a small SQLite index next to the blobs (`root/index.sqlite`): an
owner is charged once for each distinct blob they stored, shared content is charged to each
owner that stored it, and charges disappear with `delete`, `release` or `sweep`. A job's room
is checked before it is accepted (`check_room`: its upload and its result's estimate), so a
result is stored without a check (`put(..., check_quota=False)`): the work is never wasted.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from ._sqlite import ThreadConnections
from .errors import BlobNotFoundError, InvalidBlobIdError, JobOverQuotaError, QuotaExceededError

__all__ = ["DEFAULT_MAX_BYTES_PER_USER", "BlobStore", "check_sha"]

DEFAULT_MAX_BYTES_PER_USER = 256 * 1024 * 1024
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_HEX2_RE = re.compile(r"[0-9a-f]{2}")
_TMP_SUFFIX = ".tmp"


def check_sha(sha: object) -> str:
    """Return `sha` if it is 64 lowercase hex characters, else raise InvalidBlobIdError.

    Every path the store builds goes through here, so ids from users ('../../etc/passwd',
    '/abs', upper case, NUL bytes) can never name a file outside the store.
    """
    if not isinstance(sha, str) or _SHA_RE.fullmatch(sha) is None:
        raise InvalidBlobIdError(f"not a blob id (64 lowercase hex characters): {sha!r:.80}")
    return sha


def _init_index(conn: sqlite3.Connection) -> None:
    conn.execute("""CREATE TABLE IF NOT EXISTS owners (
        owner TEXT NOT NULL, sha TEXT NOT NULL, size INTEGER NOT NULL, added_at REAL NOT NULL,
        PRIMARY KEY (owner, sha))""")
    conn.execute("CREATE INDEX IF NOT EXISTS owners_sha ON owners(sha)")


class BlobStore:
    """Blobs under `root`, with an optional per-owner byte quota (None: unlimited)."""

    def __init__(self, root: str | os.PathLike[str], *,
                 max_bytes_per_user: int | None = DEFAULT_MAX_BYTES_PER_USER,
                 fsync: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes_per_user = max_bytes_per_user
        self._fsync = fsync
        self._index = ThreadConnections(self.root / "index.sqlite", on_connect=_init_index)
        self._index.get()  # create the index now, not in a race between first users

    def close(self) -> None:
        """Close the quota index connections (at shutdown)."""
        self._index.close()

    def __enter__(self) -> BlobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading -----------------------------------------------------------------------------

    def path(self, sha: str) -> Path:
        """Where the blob's file is (or would be); for handing files to senders as paths."""
        check_sha(sha)
        return self.root / sha[:2] / sha[2:4] / sha

    def exists(self, sha: str) -> bool:
        """Whether the blob is stored (a leftover temp file does not count)."""
        return self.path(sha).is_file()

    def get(self, sha: str) -> bytes:
        """The blob's bytes; BlobNotFoundError if it is not stored."""
        try:
            return self.path(sha).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise BlobNotFoundError(f"no blob {sha}") from None

    def usage(self, owner: str) -> int:
        """Bytes charged to `owner` (each distinct blob they stored, once)."""
        return self._used(self._index.get(), owner)

    # --- writing -----------------------------------------------------------------------------

    def put(self, data: bytes | bytearray | memoryview, owner: str | None = None, *,
            check_quota: bool = True) -> str:
        """Store `data` and return its sha256 hex id; charge it to `owner` unless None.

        Raises QuotaExceededError (a message fit for the user) when the owner would go over
        their quota; bytes they already stored are not charged again. `check_quota=False`
        charges without refusing (a job's result: its room was checked when it was accepted).
        """
        data = bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        # The index lock is held while writing so that sweep/delete cannot remove the file
        # between our write and our return, and quota checks of one owner are serialised.
        with self._index.write() as conn:
            if owner is not None and conn.execute(
                    "SELECT 1 FROM owners WHERE owner = ? AND sha = ?",
                    (owner, sha)).fetchone() is None:
                limit = self.max_bytes_per_user
                if limit is not None and check_quota:
                    used = self._used(conn, owner)
                    if used + len(data) > limit:
                        raise QuotaExceededError(used, len(data), limit)
                conn.execute("INSERT INTO owners (owner, sha, size, added_at) "
                             "VALUES (?, ?, ?, ?)", (owner, sha, len(data), time.time()))
            self._write(sha, data)
        return sha

    @staticmethod
    def _used(conn: sqlite3.Connection, owner: str) -> int:
        return int(conn.execute("SELECT COALESCE(SUM(size), 0) FROM owners WHERE owner = ?",
                                (owner,)).fetchone()[0])

    def check_room(self, owner: str, uploads: Iterable[bytes] = (), reserve: int = 0) -> None:
        """Refuse a job before any work: JobOverQuotaError unless `owner` can still store
        `uploads` (those they already stored cost nothing) plus `reserve` bytes (the estimated
        size of the results to come). Stores nothing."""
        limit = self.max_bytes_per_user
        if limit is None:
            return
        conn = self._index.get()
        need = max(0, int(reserve))
        for data in uploads:
            sha = hashlib.sha256(data).hexdigest()
            if conn.execute("SELECT 1 FROM owners WHERE owner = ? AND sha = ?",
                            (owner, sha)).fetchone() is None:
                need += len(data)
        used = self._used(conn, owner)
        if used + need > limit:
            raise JobOverQuotaError(used, need, limit)

    def _write(self, sha: str, data: bytes) -> None:
        """Atomically place `data` at the blob's path (or refresh the age of an existing one)."""
        final = self.path(sha)
        try:
            if final.stat().st_size == len(data):
                os.utime(final)  # stored again: young again for retention
                return
        except FileNotFoundError:
            pass
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{sha}.{secrets.token_hex(6)}{_TMP_SUFFIX}"
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                if self._fsync:
                    os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if self._fsync:  # make the rename itself durable
            fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def delete(self, sha: str) -> bool:
        """Remove the blob and every owner's charge for it; False if it was not stored."""
        path = self.path(sha)
        with self._index.write() as conn:
            conn.execute("DELETE FROM owners WHERE sha = ?", (sha,))
            try:
                path.unlink()
            except FileNotFoundError:
                return False
        return True

    def release(self, owner: str, shas: Iterable[str] | None = None) -> int:
        """Drop `owner`'s charges (all, or for `shas`) without deleting files; returns count.

        For deletion requests: the user's quota empties even for content other users share.
        """
        with self._index.write() as conn:
            if shas is None:
                return conn.execute("DELETE FROM owners WHERE owner = ?", (owner,)).rowcount
            return sum(conn.execute("DELETE FROM owners WHERE owner = ? AND sha = ?",
                                    (owner, check_sha(s))).rowcount for s in shas)

    # --- retention ---------------------------------------------------------------------------

    def _files(self) -> Iterator[Path]:
        """Every file in the fan-out directories (blobs and temp files)."""
        for first in self.root.iterdir():
            if not (first.is_dir() and _HEX2_RE.fullmatch(first.name)):
                continue
            for second in first.iterdir():
                if second.is_dir() and _HEX2_RE.fullmatch(second.name):
                    yield from (p for p in second.iterdir() if p.is_file())

    def __iter__(self) -> Iterator[str]:
        """The ids of all stored blobs (unordered)."""
        return (p.name for p in self._files() if _SHA_RE.fullmatch(p.name))

    def sweep(self, older_than_s: float, keep: Iterable[str] = frozenset()) -> int:
        """Delete blobs last stored more than `older_than_s` ago unless their id is in `keep`.

        Pass `Store.referenced_blobs()` as `keep` so nothing a job or saved style points at
        disappears. Also removes temp files abandoned by crashed writers and charges for
        blobs that no longer exist. Returns the number of blobs removed.
        """
        keep = frozenset(keep)
        cutoff = time.time() - older_than_s
        removed = 0
        for path in list(self._files()):
            name = path.name
            if name.endswith(_TMP_SUFFIX):
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink(missing_ok=True)
                except FileNotFoundError:
                    pass
                continue
            if _SHA_RE.fullmatch(name) is None or name in keep:
                continue
            with self._index.write() as conn:
                # Re-check under the lock: a put may have just refreshed this blob.
                try:
                    if path.stat().st_mtime >= cutoff:
                        continue
                    path.unlink()
                except FileNotFoundError:
                    continue
                conn.execute("DELETE FROM owners WHERE sha = ?", (name,))
                removed += 1
        with self._index.write() as conn:
            stale = [r[0] for r in conn.execute("SELECT DISTINCT sha FROM owners")
                     if not self.path(r[0]).is_file()]
            for sha in stale:
                conn.execute("DELETE FROM owners WHERE sha = ?", (sha,))
        return removed
