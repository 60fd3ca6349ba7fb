"""SQLite metadata store: users, jobs and the deletion audit.

`Store` is the only place SQL lives. It is safe to share one `Store` between threads (each
thread gets its own connection) and to open the same file from several processes (WAL mode,
writes in `BEGIN IMMEDIATE`, a busy timeout). Job state changes are single conditional UPDATEs
(`... WHERE state IN (...)`), so two workers can never both start, finish or deliver one job.

Timestamps are UTC seconds since the epoch (float). Blob references are sha256 hex ids of the
blob store; the store never touches blob files itself, it only says which ids became orphans.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from stylejax.errors import InvalidRequestError, echo
from stylejax.request import MASK_PICTURE_KEY, STYLE_PICTURE_KEY, StyleRequest, check_strength

from ._sqlite import ThreadConnections
from .blobs import check_sha
from .errors import (
    InvalidTransitionError,
    JobNotFoundError,
    SchemaTooNewError,
    StorageError,
    TooManyActiveJobsError,
)

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "MASK_SHA_PARAM",
    "STYLE_SHA_PARAM",
    "DeletionReport",
    "Job",
    "JobKind",
    "JobState",
    "Store",
    "UnusedBlobs",
    "User",
    "migrate",
    "schema_version",
]

# Key in a custom job's params naming the style picture blob: counted as a blob reference.
# The payload's layout is StyleRequest's (stylejax.request); this is its key for the picture.
STYLE_SHA_PARAM = STYLE_PICTURE_KEY
# Key in a job's params naming its mask picture (the region "mask"): a blob reference too.
MASK_SHA_PARAM = MASK_PICTURE_KEY
# The params keys that name blobs, each indexed (v2, v5) for the reference lookups.
_PARAM_SHAS = (STYLE_SHA_PARAM, MASK_SHA_PARAM)

# A job's lane as SQL: 1 for the video lane (the long jobs: clips and animations, 3D models;
# stylejax.request.LONG_MEDIA), 0 for photos (old jobs have no "media": photos). Indexed (v5)
# and used verbatim in the lane queries, so SQLite matches the index.
VIDEO_LANE_SQL = "((json_extract(params, '$.media') IN ('video', 'model')) IS 1)"
_V4_LANE_SQL = "(json_extract(params, '$.media') IS 'video')"  # v4's, before 3D models

# Append-only: each step is a list of statements run in one transaction. Never edit a released
# step; add a new one. (A step that rebuilds a table must switch foreign keys off around it.)
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # v1: first release — users and jobs.
    (
        """CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            platform TEXT NOT NULL,
            platform_user_id TEXT NOT NULL,
            language TEXT NOT NULL DEFAULT 'en',
            default_strength REAL,
            settings TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings)),
            created_at REAL NOT NULL,
            UNIQUE (platform, platform_user_id)
        )""",
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            owner INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            kind TEXT NOT NULL CHECK (kind IN ('pack', 'custom')),
            params TEXT NOT NULL CHECK (json_valid(params)),
            input_sha TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'queued'
                CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
            progress REAL NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            result_sha TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX jobs_owner_created ON jobs(owner, created_at)",
    ),
    # v2: custom styles, the deletion audit, and indexes for retention and blob references.
    (
        """CREATE TABLE custom_styles (
            id INTEGER PRIMARY KEY,
            owner INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            blob_sha TEXT NOT NULL,
            name TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX custom_styles_owner ON custom_styles(owner)",
        "CREATE INDEX custom_styles_blob ON custom_styles(blob_sha)",
        # No foreign key: the audit row must outlive the user it describes.
        """CREATE TABLE deletions (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL,
            what TEXT NOT NULL,
            counts TEXT NOT NULL CHECK (json_valid(counts)),
            at REAL NOT NULL
        )""",
        "CREATE INDEX jobs_state_finished ON jobs(state, finished_at)",
        "CREATE INDEX jobs_input_sha ON jobs(input_sha)",
        "CREATE INDEX jobs_result_sha ON jobs(result_sha)",
        f"CREATE INDEX jobs_style_sha ON jobs(json_extract(params, '$.{STYLE_SHA_PARAM}'))",
    ),
    # v3: saved custom styles were never offered by any front end; their table goes (a custom
    # style picture is a job's STYLE_SHA_PARAM blob, nothing more).
    (
        "DROP TABLE custom_styles",
    ),
    # v4: back-pressure (docs/service.md "Queue"): a job's place in its lane's line is one
    # indexed COUNT, and the lane's recent durations an indexed read.
    (
        f"CREATE INDEX jobs_queued_lane ON jobs({_V4_LANE_SQL}, created_at) "
        "WHERE state = 'queued'",
        f"CREATE INDEX jobs_done_lane ON jobs({_V4_LANE_SQL}, finished_at) "
        "WHERE state = 'done'",
    ),
    # v5: 3D model jobs share the video lane (long jobs): the lane indexes on the new lane
    # expression.
    (
        "DROP INDEX jobs_queued_lane",
        "DROP INDEX jobs_done_lane",
        f"CREATE INDEX jobs_queued_lane ON jobs({VIDEO_LANE_SQL}, created_at) "
        "WHERE state = 'queued'",
        f"CREATE INDEX jobs_done_lane ON jobs({VIDEO_LANE_SQL}, finished_at) "
        "WHERE state = 'done'",
    ),
    # v6: a job's hand-painted mask picture (the region "mask") is a blob reference too.
    (
        f"CREATE INDEX jobs_mask_sha ON jobs(json_extract(params, '$.{MASK_SHA_PARAM}'))",
    ),
)
LATEST_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the database header (0 for a new file)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, *, target: int | None = None,
            clock: Callable[[], float] = time.time) -> int:
    """Bring the schema up to `target` (default: latest) and return the version now in place.

    Runs in one `BEGIN IMMEDIATE` transaction, so two processes opening a fresh file at once
    cannot both apply a step, and a failed step leaves the old schema untouched. A database
    newer than this code raises `SchemaTooNewError` instead of being used half-understood.
    """
    target = LATEST_VERSION if target is None else target
    if not 0 <= target <= LATEST_VERSION:
        raise ValueError(f"unknown schema version {target}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = schema_version(conn)
        if current > LATEST_VERSION:
            raise SchemaTooNewError(current, LATEST_VERSION)
        if current < target:
            conn.execute("""CREATE TABLE IF NOT EXISTS schema_version (
                version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)""")
            for version in range(current + 1, target + 1):
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                             (version, clock()))
            conn.execute(f"PRAGMA user_version = {int(target)}")
            current = target
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return current


class JobKind(str, Enum):
    """What produces the picture: a trained style of the pack, or a user's own style image."""

    PACK = "pack"
    CUSTOM = "custom"


class JobState(str, Enum):
    """Job lifecycle: queued → running → done | failed; queued/running → cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """No further transition is possible."""
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)
TERMINAL_STATES = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)

# Allowed source states for each target state. DONE goes only through mark_done (needs a result
# and must be idempotent). RUNNING → QUEUED is redelivery after a worker died.
_SOURCES: dict[JobState, tuple[JobState, ...]] = {
    JobState.RUNNING: (JobState.QUEUED,),
    JobState.FAILED: (JobState.RUNNING,),
    JobState.CANCELLED: (JobState.QUEUED, JobState.RUNNING),
    JobState.QUEUED: (JobState.RUNNING,),
}


@dataclass(frozen=True, slots=True)
class User:
    """A person on one platform. `default_strength` None means the service default."""

    id: int
    platform: str
    platform_user_id: str
    language: str
    default_strength: float | None
    settings: dict[str, Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class Job:
    """A snapshot of one stylisation request; re-read it with `Store.get_job` for news."""

    id: str
    owner: int
    kind: JobKind
    params: dict[str, Any]
    input_sha: str
    state: JobState
    progress: float
    attempts: int
    error: str | None
    result_sha: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float

    @property
    def request(self) -> StyleRequest:
        """What was asked for, as the worker and the stylizer take it (params are its payload;
        jobs recorded before an option existed read with its default)."""
        return StyleRequest.from_params(self.params)

    @property
    def blob_shas(self) -> frozenset[str]:
        """Every blob this job refers to (input, style picture, mask picture, result)."""
        shas = {self.input_sha, self.result_sha,
                *(self.params.get(key) for key in _PARAM_SHAS)}
        return frozenset(s for s in shas if isinstance(s, str))


@dataclass(frozen=True, slots=True)
class DeletionReport:
    """What a deletion removed, and which blobs nobody references any more."""

    counts: dict[str, int]
    orphaned_shas: frozenset[str]


@dataclass(frozen=True, slots=True)
class UnusedBlobs:
    """Blobs a deletion left unused: `orphaned` ones no job refers to (delete their files) and
    `released` ones none of the owner's jobs refers to (drop the owner's quota charge; another
    user's job may still need the file)."""

    orphaned: frozenset[str]
    released: frozenset[str]


_UNSET: Any = object()


def _user(row: sqlite3.Row) -> User:
    return User(id=row["id"], platform=row["platform"], platform_user_id=row["platform_user_id"],
                language=row["language"], default_strength=row["default_strength"],
                settings=json.loads(row["settings"]), created_at=row["created_at"])


def _job(row: sqlite3.Row) -> Job:
    return Job(id=row["id"], owner=row["owner"], kind=JobKind(row["kind"]),
               params=json.loads(row["params"]), input_sha=row["input_sha"],
               state=JobState(row["state"]), progress=row["progress"],
               attempts=row["attempts"], error=row["error"], result_sha=row["result_sha"],
               created_at=row["created_at"], started_at=row["started_at"],
               finished_at=row["finished_at"], updated_at=row["updated_at"])


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


def _dumps(value: Mapping[str, Any]) -> str:
    """JSON for a column; NaN/inf are refused (not JSON, and SQLite's json_valid rejects them)."""
    return json.dumps(dict(value), allow_nan=False, separators=(",", ":"), sort_keys=True)


class Store:
    """The service's metadata database (one SQLite file)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        if str(path) in ("", ":memory:") or str(path).startswith("file:"):
            raise ValueError("Store needs a file path (each thread opens its own connection)")
        self._clock = clock
        self._db = ThreadConnections(path, busy_timeout_s=busy_timeout_s)
        try:
            self.version = migrate(self._db.get(), clock=clock)
        except BaseException:
            self._db.close()
            raise

    @property
    def path(self) -> Path:
        """The database file."""
        return self._db.path

    def close(self) -> None:
        """Close this process's connections (at shutdown)."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self._db.get().execute(sql, args).fetchall()

    # --- users -------------------------------------------------------------------------------

    def get_or_create_user(self, platform: str, platform_user_id: str | int,
                           language: str | None = None) -> User:
        """The user for this platform account, created on first contact.

        `language` (e.g. the chat client's locale) only seeds a new user; an existing user's
        choice is kept. Safe when two requests of a new user race: both get the same row.
        """
        if not platform:
            raise ValueError("platform must be a non-empty string")
        puid = str(platform_user_id)
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO users (platform, platform_user_id, language, created_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (platform, platform_user_id) DO NOTHING",
                (platform, puid, _seed_language(language), self._clock()))
            row = conn.execute("SELECT * FROM users WHERE platform = ? AND platform_user_id = ?",
                               (platform, puid)).fetchone()
        return _user(row)

    def rename_platform_user(self, platform: str, old_id: str, new_id: str) -> bool:
        """Give the user known as `old_id` on `platform` the id `new_id` (when the way ids are
        derived changes), unless `new_id` is already taken; True if a user was renamed."""
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE users SET platform_user_id = ? WHERE platform = ? AND platform_user_id = ?"
                " AND NOT EXISTS (SELECT 1 FROM users WHERE platform = ? AND platform_user_id = ?)",
                (new_id, platform, old_id, platform, new_id))
            return cur.rowcount > 0

    def get_user(self, user_id: int) -> User | None:
        """The user with this internal id, or None."""
        rows = self._read("SELECT * FROM users WHERE id = ?", (user_id,))
        return _user(rows[0]) if rows else None

    def update_user_settings(self, user_id: int, *, language: str = _UNSET,
                             default_strength: float | None = _UNSET,
                             settings: Mapping[str, Any] | None = None) -> User:
        """Change a user's preferences; arguments left out stay as they are.

        `settings` is merged into the stored JSON object; a key set to None is removed.
        `default_strength=None` goes back to the service default.
        """
        with self._db.write() as conn:
            row = conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
            if row is None:
                raise StorageError(f"unknown user {user_id}")
            user = _user(row)
            merged = dict(user.settings)
            for key, value in (settings or {}).items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            lang = user.language if language is _UNSET else _language(language)
            strength = (user.default_strength if default_strength is _UNSET
                        else _strength(default_strength))
            row = conn.execute(
                "UPDATE users SET language = ?, default_strength = ?, settings = ? "
                "WHERE id = ? RETURNING *", (lang, strength, _dumps(merged), user_id)).fetchone()
        return _user(row)

    # --- jobs --------------------------------------------------------------------------------

    def create_job(self, owner: int, kind: JobKind | str, params: Mapping[str, Any],
                   input_sha: str, *, max_active: int | None = None) -> Job:
        """Record a new queued job with an unguessable id (it appears in URLs).

        With `max_active`, refuse (TooManyActiveJobsError) when the owner already has that many
        queued or running jobs; the check and the insert are one transaction, so parallel
        requests cannot slip past the limit.
        """
        kind = JobKind(kind)
        check_sha(input_sha)
        for key in _PARAM_SHAS:
            if params.get(key) is not None:
                check_sha(params[key])
        params_json = _dumps(params)
        now = self._clock()
        with self._db.write() as conn:
            if max_active is not None:
                active = self._count_active(conn, owner)
                if active >= max_active:
                    raise TooManyActiveJobsError(max_active)
            try:
                row = conn.execute(
                    "INSERT INTO jobs (id, owner, kind, params, input_sha, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
                    (secrets.token_urlsafe(16), owner, kind.value, params_json, input_sha,
                     now, now)).fetchone()
            except sqlite3.IntegrityError as err:
                if "FOREIGN KEY" in str(err):
                    raise StorageError(f"unknown user {owner}") from err
                raise
        return _job(row)

    def get_job(self, job_id: str) -> Job | None:
        """The job, or None if unknown (including removed by retention or deletion)."""
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def set_state(self, job_id: str, state: JobState | str, *, error: str | None = None) -> Job:
        """Move a job along its lifecycle, atomically; returns the updated job.

        queued → running (a worker took it), running → queued (redelivery after a worker died),
        running → failed (with a user-facing `error`), queued/running → cancelled. Anything
        else — including a second worker trying to start a running job — raises
        InvalidTransitionError and changes nothing. Use `mark_done` to finish a job.
        """
        state = JobState(state)
        if state is JobState.DONE:
            raise ValueError("use mark_done(job_id, result_sha) to finish a job")
        now = self._clock()
        sets: dict[str, Any] = {"state": state.value, "updated_at": now}
        if state is JobState.RUNNING:
            sets.update(started_at=now, error=None)
        elif state is JobState.QUEUED:
            sets.update(started_at=None, progress=0.0)
        else:
            sets.update(finished_at=now, error=error)
        sources = [s.value for s in _SOURCES[state]]
        assignments = ", ".join(f"{column} = ?" for column in sets)
        with self._db.write() as conn:
            row = conn.execute(
                f"UPDATE jobs SET {assignments} WHERE id = ? "
                f"AND state IN ({_placeholders(len(sources))}) RETURNING *",
                (*sets.values(), job_id, *sources)).fetchone()
            if row is None:
                current = conn.execute("SELECT state FROM jobs WHERE id = ?",
                                       (job_id,)).fetchone()
                if current is None:
                    raise JobNotFoundError(job_id)
                raise InvalidTransitionError(job_id, current["state"], state.value)
        return _job(row)

    def mark_done(self, job_id: str, result_sha: str) -> bool:
        """Finish a running job with its result; True only for the call that did it.

        Deliver the result only when this returns True: a duplicate call (a redelivered job
        finishing twice, a retry after a lost reply) or a job cancelled meanwhile returns
        False and changes nothing. Raises JobNotFoundError if the job was deleted meanwhile.
        """
        check_sha(result_sha)
        now = self._clock()
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE jobs SET state = 'done', result_sha = ?, progress = 1.0, error = NULL, "
                "finished_at = ?, updated_at = ? WHERE id = ? AND state = 'running'",
                (result_sha, now, now, job_id))
            if cur.rowcount == 1:
                return True
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                raise JobNotFoundError(job_id)
        return False

    def set_progress(self, job_id: str, progress: float) -> bool:
        """Record progress (clamped to 0..1) of a running job; doubles as a heartbeat.

        Returns False (and stores nothing) when the job is not running any more, which tells
        a worker that the job was cancelled or deleted and it may stop.
        """
        value = float(progress)
        if value != value:  # NaN would slip through min/max
            raise ValueError("progress must be a number")
        value = min(max(value, 0.0), 1.0)
        with self._db.write() as conn:
            cur = conn.execute("UPDATE jobs SET progress = ?, updated_at = ? "
                               "WHERE id = ? AND state = 'running'",
                               (value, self._clock(), job_id))
        return cur.rowcount == 1

    def increment_attempts(self, job_id: str) -> int:
        """Count one more delivery attempt of the job; returns the new count.

        Separate from set_state on purpose: the queue decides what counts as an attempt.
        """
        with self._db.write() as conn:
            row = conn.execute("UPDATE jobs SET attempts = attempts + 1, updated_at = ? "
                               "WHERE id = ? RETURNING attempts",
                               (self._clock(), job_id)).fetchone()
        if row is None:
            raise JobNotFoundError(job_id)
        return int(row["attempts"])

    def list_jobs(self, owner: int, limit: int = 20) -> list[Job]:
        """The owner's most recent jobs, newest first (history)."""
        rows = self._read("SELECT * FROM jobs WHERE owner = ? "
                          "ORDER BY created_at DESC, rowid DESC LIMIT ?", (owner, int(limit)))
        return [_job(r) for r in rows]

    @staticmethod
    def _count_active(conn: sqlite3.Connection, owner: int) -> int:
        return int(conn.execute("SELECT COUNT(*) FROM jobs WHERE owner = ? "
                                "AND state IN ('queued', 'running')", (owner,)).fetchone()[0])

    def count_active_jobs(self, owner: int) -> int:
        """How many of the owner's jobs are queued or running (for per-user limits)."""
        return self._count_active(self._db.get(), owner)

    def jobs_in_state(self, state: JobState | str, *, updated_before: float | None = None,
                      limit: int = 1000) -> list[Job]:
        """Jobs in one state, oldest update first; `updated_before` finds stalled runners."""
        sql, args = "SELECT * FROM jobs WHERE state = ?", [JobState(state).value]
        if updated_before is not None:
            sql += " AND updated_at < ?"
            args.append(updated_before)
        rows = self._read(sql + " ORDER BY updated_at LIMIT ?", (*args, int(limit)))
        return [_job(r) for r in rows]

    def jobs_older_than(self, days: float, *,
                        states: Iterable[JobState | str] = TERMINAL_STATES,
                        limit: int = 1000) -> list[Job]:
        """Jobs in `states` that finished (or, if never finished, were created) over `days` ago.

        For retention: delete them with `delete_jobs`, then their orphaned blobs.
        """
        values = [JobState(s).value for s in states]
        cutoff = self._clock() - days * 86400.0
        rows = self._read(
            f"SELECT * FROM jobs WHERE state IN ({_placeholders(len(values))}) "
            "AND COALESCE(finished_at, created_at) < ? ORDER BY created_at LIMIT ?",
            (*values, cutoff, int(limit)))
        return [_job(r) for r in rows]

    def delete_jobs(self, job_ids: Iterable[str]) -> frozenset[str]:
        """Delete these jobs; returns the blob shas that no remaining row refers to."""
        ids = list(job_ids)
        if not ids:
            return frozenset()
        with self._db.write() as conn:
            candidates: set[str] = set()
            for chunk in _chunks(ids):
                rows = conn.execute(
                    f"SELECT * FROM jobs WHERE id IN ({_placeholders(len(chunk))})", chunk)
                candidates.update(sha for r in rows for sha in _job(r).blob_shas)
                conn.execute(f"DELETE FROM jobs WHERE id IN ({_placeholders(len(chunk))})",
                             chunk)
            return self._unreferenced(conn, candidates)

    def delete_job(self, job_id: str) -> UnusedBlobs | None:
        """Delete one job, whatever its state; None if there was no such job.

        Its worker, if it is running, then sees the job as gone: `mark_done` raises
        JobNotFoundError and `set_progress` returns False, so nothing brings it back. Returns
        the job's blobs that are unused now (one transaction, so the answer is exact).
        """
        with self._db.write() as conn:
            row = conn.execute("DELETE FROM jobs WHERE id = ? RETURNING *",
                               (job_id,)).fetchone()
            if row is None:
                return None
            job = _job(row)
            return self._unused(conn, job.blob_shas, job.owner)

    def unused_blobs(self, shas: Iterable[str], owner: int) -> UnusedBlobs:
        """Which of `shas` no job refers to, and which none of `owner`'s jobs refers to (e.g.
        a result stored for a job that was deleted or finished meanwhile)."""
        return self._unused(self._db.get(), set(shas), owner)

    @classmethod
    def _unused(cls, conn: sqlite3.Connection, shas: Iterable[str], owner: int) -> UnusedBlobs:
        shas = set(shas)
        orphaned = cls._unreferenced(conn, shas)
        released = set(orphaned)
        for sha in shas - orphaned:
            used = conn.execute(
                "SELECT 1 FROM jobs WHERE owner = ? AND (input_sha = ? OR result_sha = ? OR "
                + " OR ".join(f"json_extract(params, '$.{k}') = ?" for k in _PARAM_SHAS)
                + ") LIMIT 1", (owner, sha, sha, *(sha for _ in _PARAM_SHAS))).fetchone()
            if used is None:
                released.add(sha)
        return UnusedBlobs(orphaned=orphaned, released=frozenset(released))

    # --- the line (back-pressure) ------------------------------------------------------------

    def queue_position(self, job_id: str) -> int | None:
        """The job's place in its lane's line (1 = next), or None when it is not queued.

        Counts the lane's queued jobs created before it (ties broken by insertion order): one
        COUNT over the `jobs_queued_lane` index, read from the job book, so it is the same for
        the SQLite and the Redis queue. A redelivered job keeps its original place.
        """
        row = self._db.get().execute(
            "SELECT (SELECT COUNT(*) FROM jobs AS j WHERE j.state = 'queued' "
            f"AND {_lane_of('j')} = {_lane_of('me')} "
            "AND (j.created_at, j.rowid) < (me.created_at, me.rowid)) + 1 "
            "FROM jobs AS me WHERE me.id = ? AND me.state = 'queued'", (job_id,)).fetchone()
        return None if row is None else int(row[0])

    def lane_counts(self, *, video: bool) -> tuple[int, int]:
        """(queued, running) jobs of the photo or the video lane."""
        row = self._db.get().execute(
            "SELECT COALESCE(SUM(state = 'queued'), 0), COALESCE(SUM(state = 'running'), 0) "
            f"FROM jobs WHERE state IN ('queued', 'running') AND {VIDEO_LANE_SQL} = ?",
            (int(video),)).fetchone()
        return int(row[0]), int(row[1])

    def queued_count(self, *, video: bool) -> int:
        """How many jobs wait in the photo or the video lane (the queue cap's measure)."""
        return int(self._db.get().execute(
            f"SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND {VIDEO_LANE_SQL} = ?",
            (int(video),)).fetchone()[0])

    def recent_durations(self, *, video: bool, limit: int = 20) -> list[float]:
        """Seconds from start to finish of the lane's last `limit` done jobs, newest first
        (for estimates; a batch's jobs all count from the moment their worker claimed them)."""
        rows = self._read(
            "SELECT finished_at - started_at FROM jobs WHERE state = 'done' "
            f"AND {VIDEO_LANE_SQL} = ? AND started_at IS NOT NULL "
            "ORDER BY finished_at DESC LIMIT ?", (int(video), int(limit)))
        return [max(0.0, float(r[0])) for r in rows]

    # --- deletion and retention --------------------------------------------------------------

    def delete_user_data(self, user_id: int, *, keep_account: bool = False) -> DeletionReport:
        """Erase a user's jobs (and, unless `keep_account`, the user row).

        Returns the counts removed and the blob shas no other row refers to (delete those from
        the blob store; shared content stays). Writes an audit row with counts only — no
        personal data. Jobs still running are removed too; their worker's mark_done then raises
        JobNotFoundError and the result is never delivered.
        """
        with self._db.write() as conn:
            candidates: set[str] = set()
            for row in conn.execute("SELECT * FROM jobs WHERE owner = ?", (user_id,)):
                candidates.update(_job(row).blob_shas)
            counts = {
                "jobs": conn.execute("DELETE FROM jobs WHERE owner = ?", (user_id,)).rowcount,
                "users": 0 if keep_account else conn.execute(
                    "DELETE FROM users WHERE id = ?", (user_id,)).rowcount,
            }
            orphaned = self._unreferenced(conn, candidates)
            counts["blobs"] = len(orphaned)
            conn.execute("INSERT INTO deletions (user_id, what, counts, at) VALUES (?, ?, ?, ?)",
                         (user_id, "history" if keep_account else "all", _dumps(counts),
                          self._clock()))
        return DeletionReport(counts=counts, orphaned_shas=orphaned)

    def deletion_audit(self, user_id: int | None = None) -> list[dict[str, Any]]:
        """Audit rows (all, or one user's), oldest first."""
        sql, args = "SELECT * FROM deletions", ()
        if user_id is not None:
            sql, args = sql + " WHERE user_id = ?", (user_id,)
        return [{"id": r["id"], "user_id": r["user_id"], "what": r["what"],
                 "counts": json.loads(r["counts"]), "at": r["at"]}
                for r in self._read(sql + " ORDER BY id", args)]

    def referenced_blobs(self) -> set[str]:
        """Every blob sha some row refers to: the `keep` set for BlobStore.sweep."""
        rows = self._read(
            "SELECT input_sha FROM jobs UNION SELECT result_sha FROM jobs "
            + "".join(f"UNION SELECT json_extract(params, '$.{k}') FROM jobs "
                      for k in _PARAM_SHAS))
        return {r[0] for r in rows if isinstance(r[0], str)}

    @staticmethod
    def _unreferenced(conn: sqlite3.Connection, shas: Iterable[str]) -> frozenset[str]:
        """The subset of `shas` that no job refers to (indexed lookups)."""
        orphans = set()
        for sha in shas:
            used = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE input_sha = ?) "
                "OR EXISTS (SELECT 1 FROM jobs WHERE result_sha = ?) "
                + "".join(f"OR EXISTS (SELECT 1 FROM jobs WHERE json_extract(params, '$.{k}')"
                          " = ?) " for k in _PARAM_SHAS),
                (sha, sha, *(sha for _ in _PARAM_SHAS))).fetchone()[0]
            if not used:
                orphans.add(sha)
        return frozenset(orphans)


def _lane_of(alias: str) -> str:
    """VIDEO_LANE_SQL for a table alias (the index matches it all the same)."""
    return VIDEO_LANE_SQL.replace("params", f"{alias}.params")


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    """Slices small enough for SQLite's bound-parameter limit."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _language(language: str) -> str:
    """A short language tag like 'en' or 'pt-BR' (validated, not interpreted here)."""
    tag = str(language).strip()
    if not tag or len(tag) > 16 or not all(c.isalnum() or c in "-_" for c in tag):
        raise InvalidRequestError(f"'{echo(language)}' is not a language code.")
    return tag


def _seed_language(language: str | None) -> str:
    """A client-reported locale for a new user; odd values fall back to English."""
    try:
        return _language(language) if language else "en"
    except InvalidRequestError:
        return "en"


def _strength(value: float | None) -> float | None:
    """None, or a strength between 0 and 1 (StyleRequest's rule, stylejax.request)."""
    return None if value is None else check_strength(value)
