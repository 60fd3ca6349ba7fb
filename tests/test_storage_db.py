"""The SQLite metadata store: migrations, users, the job lifecycle under races, deletion."""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from storage import _sqlite
from storage import db as dbmod
from storage.db import LATEST_VERSION, STYLE_SHA_PARAM, JobKind, JobState, Store, migrate
from storage.errors import (
    InvalidBlobIdError,
    InvalidTransitionError,
    JobNotFoundError,
    SchemaTooNewError,
    StorageError,
    TooManyActiveJobsError,
)
from stylejax.errors import InvalidRequestError, StyleJAXError

DAY = 86400.0


def sha(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


class Clock:
    """A settable clock so retention tests need no sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock):
    with Store(tmp_path / "meta.db", clock=clock) as s:
        yield s


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


# --- schema ----------------------------------------------------------------------------------


def test_fresh_database_gets_latest_schema_and_history(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    store = Store(path)
    assert store.version == LATEST_VERSION >= 2
    store.close()
    assert {"users", "jobs", "deletions", "schema_version"} <= tables(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
    assert versions == list(range(1, LATEST_VERSION + 1))
    # Reopening applies nothing twice.
    assert Store(path).version == LATEST_VERSION


def test_v1_database_is_migrated_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=1) == 1
    assert "custom_styles" not in tables(path)
    # Rows as the v1 release wrote them.
    conn.execute("INSERT INTO users (id, platform, platform_user_id, created_at) "
                 "VALUES (7, 'telegram', '42', 1.0)")
    conn.execute("INSERT INTO jobs (id, owner, kind, params, input_sha, state, created_at, "
                 "updated_at) VALUES ('old-job', 7, 'pack', '{\"style\":\"wave\"}', ?, 'done', "
                 "1.0, 2.0)", (sha("in"),))
    conn.close()

    store = Store(path)
    assert store.version == LATEST_VERSION
    user = store.get_or_create_user("telegram", 42)
    assert user.id == 7 and user.language == "en"
    job = store.get_job("old-job")
    assert job is not None and job.params == {"style": "wave"} and job.state is JobState.DONE
    # Later steps' tables and indexes work on the migrated file.
    assert store.referenced_blobs() == {sha("in")}


def test_database_newer_than_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    with pytest.raises(SchemaTooNewError, match="newer than this code"):
        Store(path)


def test_failing_migration_step_leaves_old_schema(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "meta.db"
    Store(path).close()
    broken = (*dbmod.MIGRATIONS, ("CREATE TABLE extra (x INTEGER)", "THIS IS NOT SQL"))
    monkeypatch.setattr(dbmod, "MIGRATIONS", broken)
    monkeypatch.setattr(dbmod, "LATEST_VERSION", len(broken))
    with pytest.raises(sqlite3.OperationalError):
        Store(path)
    assert "extra" not in tables(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION


def test_connection_settings(store: Store) -> None:
    conn = store._db.get()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    # Another thread gets its own, equally configured connection.
    seen = {}
    t = threading.Thread(target=lambda: seen.update(c=store._db.get()))
    t.start()
    t.join()
    assert seen["c"] is not conn
    assert seen["c"].execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_connections_of_ended_threads_are_closed(store: Store) -> None:
    box = {}
    t = threading.Thread(target=lambda: box.update(c=store._db.get()))
    t.start()
    t.join()
    store.get_or_create_user("telegram", 1)
    newcomer = threading.Thread(target=store._db.get)  # a new thread prunes the dead one's
    newcomer.start()
    newcomer.join()
    with pytest.raises(sqlite3.ProgrammingError):
        box["c"].execute("SELECT 1")


def test_forked_child_never_reuses_or_closes_parent_connections(store: Store,
                                                                monkeypatch) -> None:
    """After fork the child must open its own connections and leave the inherited ones be
    (closing them there could delete the parent's WAL). Simulated by changing the pid."""
    parent_conn = store._db.get()
    monkeypatch.setattr(_sqlite.os, "getpid", lambda: -1)
    child_conn = store._db.get()
    assert child_conn is not parent_conn
    assert parent_conn in _sqlite._ABANDONED_AFTER_FORK
    store.close()  # the child's close leaves the parent's connection open
    parent_conn.execute("SELECT 1")
    _sqlite._ABANDONED_AFTER_FORK.remove(parent_conn)
    parent_conn.close()


def test_memory_database_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Store(":memory:")


# --- users -----------------------------------------------------------------------------------


def test_get_or_create_user_is_idempotent_and_per_platform(store: Store, clock: Clock) -> None:
    a = store.get_or_create_user("telegram", 42, language="de")
    clock.now += 10
    again = store.get_or_create_user("telegram", "42", language="fr")
    assert again == a  # same row; the first language sticks
    assert a.language == "de" and a.settings == {} and a.default_strength is None
    other = store.get_or_create_user("discord", 42)
    assert other.id != a.id and other.language == "en"
    assert store.get_or_create_user("web", "x", language="../../bad").language == "en"
    assert store.get_user(a.id) == a and store.get_user(10_000) is None


def test_concurrent_first_contact_creates_one_user(store: Store) -> None:
    barrier = threading.Barrier(4)
    ids: list[int] = []

    def first_contact() -> None:
        barrier.wait()
        ids.append(store.get_or_create_user("telegram", "99").id)

    threads = [threading.Thread(target=first_contact) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and len(ids) == 4


def test_update_user_settings(store: Store) -> None:
    user = store.get_or_create_user("telegram", 1)
    u = store.update_user_settings(user.id, language="pt-BR", default_strength=0.6,
                                   settings={"keep_colors": True, "style": "wave"})
    assert (u.language, u.default_strength) == ("pt-BR", 0.6)
    assert u.settings == {"keep_colors": True, "style": "wave"}
    u = store.update_user_settings(user.id, settings={"style": None, "size": 768})
    assert u.settings == {"keep_colors": True, "size": 768} and u.language == "pt-BR"
    u = store.update_user_settings(user.id, default_strength=None)
    assert u.default_strength is None and store.get_user(user.id) == u
    with pytest.raises(InvalidRequestError):
        store.update_user_settings(user.id, default_strength=1.5)
    with pytest.raises(InvalidRequestError):
        store.update_user_settings(user.id, language="en; DROP TABLE users")
    with pytest.raises(StorageError):
        store.update_user_settings(12345, language="en")


# --- jobs ------------------------------------------------------------------------------------


def test_job_lifecycle(store: Store, clock: Clock) -> None:
    owner = store.get_or_create_user("telegram", 1).id
    job = store.create_job(owner, "pack", {"style": "wave", "strength": 0.8}, sha("photo"))
    assert job.state is JobState.QUEUED and job.kind is JobKind.PACK
    assert (job.progress, job.attempts, job.started_at, job.result_sha) == (0.0, 0, None, None)
    assert len(job.id) >= 22 and store.get_job(job.id) == job
    assert store.count_active_jobs(owner) == 1

    clock.now += 1
    running = store.set_state(job.id, JobState.RUNNING)
    assert running.state is JobState.RUNNING and running.started_at == clock.now
    assert store.increment_attempts(job.id) == 1
    assert store.set_progress(job.id, 0.5)
    assert store.get_job(job.id).progress == 0.5
    store.set_progress(job.id, 7)  # clamped
    assert store.get_job(job.id).progress == 1.0

    clock.now += 1
    assert store.mark_done(job.id, sha("result")) is True
    done = store.get_job(job.id)
    assert done.state is JobState.DONE and done.result_sha == sha("result")
    assert done.finished_at == clock.now and done.state.is_terminal
    assert store.count_active_jobs(owner) == 0
    # Exactly once: a second finish changes nothing.
    clock.now += 1
    assert store.mark_done(job.id, sha("other result")) is False
    assert store.get_job(job.id) == done
    assert store.set_progress(job.id, 0.1) is False


def test_illegal_transitions_are_refused(store: Store) -> None:
    owner = store.get_or_create_user("telegram", 1).id
    job = store.create_job(owner, JobKind.PACK, {"style": "wave"}, sha("photo"))
    with pytest.raises(InvalidTransitionError) as info:
        store.set_state(job.id, JobState.FAILED)  # never started
    assert (info.value.current, info.value.requested) == ("queued", "failed")
    assert store.mark_done(job.id, sha("r")) is False  # not running: nothing to finish
    store.set_state(job.id, "running")
    with pytest.raises(InvalidTransitionError):
        store.set_state(job.id, JobState.RUNNING)  # a second worker may not take it
    with pytest.raises(ValueError, match="mark_done"):
        store.set_state(job.id, JobState.DONE)
    failed = store.set_state(job.id, JobState.FAILED, error="That picture could not be read.")
    assert failed.error == "That picture could not be read." and failed.finished_at is not None
    for target in (JobState.RUNNING, JobState.QUEUED, JobState.CANCELLED):
        with pytest.raises(InvalidTransitionError):
            store.set_state(job.id, target)
    assert store.get_job(job.id) == failed
    with pytest.raises(JobNotFoundError) as missing:
        store.set_state("no-such-job", JobState.RUNNING)
    assert isinstance(missing.value, StyleJAXError)
    with pytest.raises(JobNotFoundError):
        store.mark_done("no-such-job", sha("r"))
    with pytest.raises(JobNotFoundError):
        store.increment_attempts("no-such-job")


def test_redelivery_and_cancellation(store: Store) -> None:
    owner = store.get_or_create_user("telegram", 1).id
    job = store.create_job(owner, "custom", {STYLE_SHA_PARAM: sha("style")}, sha("photo"))
    store.set_state(job.id, JobState.RUNNING)
    store.set_progress(job.id, 0.4)
    requeued = store.set_state(job.id, JobState.QUEUED)  # the worker died
    assert requeued.progress == 0.0 and requeued.started_at is None
    store.set_state(job.id, JobState.RUNNING)
    cancelled = store.set_state(job.id, JobState.CANCELLED)
    assert cancelled.state is JobState.CANCELLED
    # The worker that was running it learns by its heartbeat, and cannot deliver.
    assert store.set_progress(job.id, 0.9) is False
    assert store.mark_done(job.id, sha("late")) is False
    assert store.get_job(job.id).result_sha is None
    queued = store.create_job(owner, "pack", {}, sha("photo"))
    assert store.set_state(queued.id, JobState.CANCELLED).state is JobState.CANCELLED


def test_create_job_validates_input(store: Store) -> None:
    owner = store.get_or_create_user("telegram", 1).id
    with pytest.raises(InvalidBlobIdError):
        store.create_job(owner, "pack", {}, "../../etc/passwd")
    with pytest.raises(InvalidBlobIdError):
        store.create_job(owner, "custom", {STYLE_SHA_PARAM: "nope"}, sha("p"))
    with pytest.raises(ValueError):
        store.create_job(owner, "video", {}, sha("p"))
    with pytest.raises(ValueError):
        store.create_job(owner, "pack", {"strength": float("nan")}, sha("p"))
    with pytest.raises(StorageError, match="unknown user"):
        store.create_job(owner + 100, "pack", {}, sha("p"))
    assert store.list_jobs(owner) == []


def test_max_active_jobs_is_enforced_atomically(store: Store) -> None:
    owner = store.get_or_create_user("telegram", 1).id
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def submit() -> None:
        barrier.wait()
        try:
            store.create_job(owner, "pack", {}, sha("p"), max_active=2)
            outcomes.append("ok")
        except TooManyActiveJobsError:
            outcomes.append("refused")

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok", "ok", "refused", "refused"]
    assert store.count_active_jobs(owner) == 2


def _race(store: Store, n: int, first, second) -> list[list[object]]:
    """Run `first(job_id)` and `second(job_id)` in two threads at once on n running jobs."""
    owner = store.get_or_create_user("telegram", 5).id
    results: list[list[object]] = []
    for _ in range(n):
        job = store.create_job(owner, "pack", {}, sha("p"))
        store.set_state(job.id, JobState.RUNNING)
        barrier = threading.Barrier(2)
        outcome: list[object] = [None, None]

        def worker(slot: int, action, job_id: str = job.id, barrier=barrier,
                   outcome=outcome) -> None:
            barrier.wait()
            try:
                outcome[slot] = action(job_id)
            except Exception as err:  # the outcome is what we check
                outcome[slot] = type(err)

        threads = [threading.Thread(target=worker, args=(i, a))
                   for i, a in enumerate((first, second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results.append(outcome)
    return results


def test_mark_done_exactly_once_under_racing_threads(store: Store) -> None:
    def finish(job_id: str) -> bool:
        return store.mark_done(job_id, sha(job_id))

    outcomes = _race(store, 25, finish, finish)
    assert all(sorted(o) == [False, True] for o in outcomes), outcomes


def test_start_and_cancel_races_have_one_winner(store: Store) -> None:
    def cancel(job_id: str) -> str:
        return store.set_state(job_id, JobState.CANCELLED).state.value

    def finish(job_id: str) -> bool:
        return store.mark_done(job_id, sha("r"))

    for done, cancelled in _race(store, 10, finish, cancel):
        # Either the result was delivered and the cancel refused, or the reverse.
        assert (done, cancelled) in ((True, InvalidTransitionError), (False, "cancelled"))

    def requeue(job_id: str) -> str:  # two reapers redeliver the same stalled job
        return store.set_state(job_id, JobState.QUEUED).state.value

    for outcome in _race(store, 10, requeue, requeue):
        assert sorted(outcome, key=str) == sorted(["queued", InvalidTransitionError], key=str)


_start_barrier = None


def _init_child(barrier) -> None:
    global _start_barrier
    _start_barrier = barrier


def _create_jobs_in_process(path: str, worker: int, n: int) -> list[str]:
    """Child process body: open the same file and write as fast as possible.

    Includes read-then-write transactions (max_active, settings merge), the kind that fails
    at once with 'database is locked' in WAL unless the write lock is taken up front.
    """
    with Store(path, busy_timeout_s=30) as s:
        owner = s.get_or_create_user("telegram", f"proc-{worker}").id
        ids = []
        _start_barrier.wait(timeout=60)
        for i in range(n):
            job = s.create_job(owner, "pack", {"i": i}, sha(f"{worker}-{i}"), max_active=5)
            s.set_state(job.id, JobState.RUNNING)
            s.set_progress(job.id, 0.5)
            s.update_user_settings(owner, settings={"last": i})
            assert s.mark_done(job.id, sha(f"r{worker}-{i}"))
            ids.append(job.id)
        return ids


def test_two_processes_write_concurrently(tmp_path: Path) -> None:
    path = str(tmp_path / "meta.db")
    Store(path).close()
    n = 80
    # spawn: the parent has JAX loaded (threads), which fork would copy half-alive.
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    with ProcessPoolExecutor(2, mp_context=ctx, initializer=_init_child,
                             initargs=(barrier,)) as pool:
        futures = [pool.submit(_create_jobs_in_process, path, w, n) for w in range(2)]
        ids = [f.result(timeout=120) for f in futures]  # re-raises 'database is locked'
    with Store(path) as s:
        assert len(set(ids[0]) | set(ids[1])) == 2 * n
        assert all(s.get_job(i).state is JobState.DONE for i in ids[0] + ids[1])


def test_history_lists_newest_first(store: Store, clock: Clock) -> None:
    owner = store.get_or_create_user("telegram", 1).id
    other = store.get_or_create_user("telegram", 2).id
    made = []
    for i in range(5):
        clock.now += 1
        made.append(store.create_job(owner, "pack", {"i": i}, sha("p")).id)
    store.create_job(other, "pack", {}, sha("p"))
    assert [j.id for j in store.list_jobs(owner, limit=3)] == made[::-1][:3]
    assert len(store.list_jobs(other)) == 1


# --- retention and deletion ------------------------------------------------------------------


def test_retention_query_and_delete_jobs(store: Store, clock: Clock) -> None:
    owner = store.get_or_create_user("telegram", 1).id
    old = store.create_job(owner, "pack", {}, sha("old-in"))
    store.set_state(old.id, JobState.RUNNING)
    store.mark_done(old.id, sha("old-out"))
    stuck = store.create_job(owner, "pack", {}, sha("shared-in"))  # queued for ages
    old_failed = store.create_job(owner, "pack", {}, sha("shared-in"))
    store.set_state(old_failed.id, JobState.RUNNING)
    store.set_state(old_failed.id, JobState.FAILED, error="x")
    clock.now += 8 * DAY
    recent = store.create_job(owner, "pack", {}, sha("shared-in"))
    store.set_state(recent.id, JobState.RUNNING)
    store.mark_done(recent.id, sha("new-out"))
    clock.now += 1 * DAY

    assert {j.id for j in store.jobs_older_than(7)} == {old.id, old_failed.id}
    assert {j.id for j in store.jobs_older_than(7, states=JobState)} == {
        old.id, old_failed.id, stuck.id}
    assert store.jobs_older_than(30) == []

    orphans = store.delete_jobs(j.id for j in store.jobs_older_than(7))
    assert orphans == {sha("old-in"), sha("old-out")}  # shared-in is still used
    assert store.get_job(old.id) is None and store.get_job(recent.id) is not None
    assert store.delete_jobs([]) == frozenset()


def test_stalled_running_jobs_are_found(store: Store, clock: Clock) -> None:
    owner = store.get_or_create_user("telegram", 1).id
    a = store.create_job(owner, "pack", {}, sha("a"))
    b = store.create_job(owner, "pack", {}, sha("b"))
    store.set_state(a.id, JobState.RUNNING)
    store.set_state(b.id, JobState.RUNNING)
    clock.now += 100
    store.set_progress(b.id, 0.3)  # b's worker is alive
    stalled = store.jobs_in_state(JobState.RUNNING, updated_before=clock.now - 50)
    assert [j.id for j in stalled] == [a.id]


def test_delete_user_data(store: Store) -> None:
    alice = store.get_or_create_user("telegram", "alice")
    bob = store.get_or_create_user("discord", "bob")
    shared = sha("same meme both sent")
    a1 = store.create_job(alice.id, "pack", {"style": "wave"}, shared)
    store.set_state(a1.id, JobState.RUNNING)
    store.mark_done(a1.id, sha("a1-out"))
    a2 = store.create_job(alice.id, "custom", {STYLE_SHA_PARAM: sha("alice-style")},
                          sha("a2-in"))
    b1 = store.create_job(bob.id, "pack", {}, shared)

    report = store.delete_user_data(alice.id)
    assert report.counts == {"jobs": 2, "users": 1, "blobs": 3}
    assert report.orphaned_shas == {sha("a1-out"), sha("a2-in"), sha("alice-style")}
    assert store.get_user(alice.id) is None
    assert store.get_job(a1.id) is None and store.get_job(a2.id) is None
    assert store.get_job(b1.id) is not None and store.get_user(bob.id) == bob
    assert store.referenced_blobs() == {shared}
    audit = store.deletion_audit(alice.id)
    assert len(audit) == 1 and audit[0]["what"] == "all" and audit[0]["counts"]["jobs"] == 2
    # Mid-run deletion: the worker cannot deliver afterwards.
    b2 = store.create_job(bob.id, "pack", {}, sha("b2"))
    store.set_state(b2.id, JobState.RUNNING)
    report = store.delete_user_data(bob.id, keep_account=True)
    assert report.counts["users"] == 0 and store.get_user(bob.id) is not None
    assert report.orphaned_shas == {shared, sha("b2")}
    with pytest.raises(JobNotFoundError):
        store.mark_done(b2.id, sha("late"))
    assert [a["what"] for a in store.deletion_audit()] == ["all", "history"]


def test_many_openers_of_a_fresh_file(tmp_path: Path) -> None:
    """Workers starting together all switch the new file to WAL and migrate it exactly once."""
    path = tmp_path / "fresh.db"
    barrier = threading.Barrier(6)
    versions: list[object] = []

    def open_store() -> None:
        barrier.wait()
        try:
            with Store(path) as s:
                versions.append(s.version)
        except Exception as err:  # reported below
            versions.append(err)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert versions == [LATEST_VERSION] * 6
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == LATEST_VERSION


def test_opening_while_another_process_creates_the_file(tmp_path: Path) -> None:
    """Switching to WAL ignores the busy timeout; a worker starting while another is still
    creating the file (rollback journal, write lock held) must wait, not fail."""
    path = tmp_path / "meta.db"
    first = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    first.execute("BEGIN IMMEDIATE")
    first.execute("CREATE TABLE scratch (x)")
    timer = threading.Timer(0.3, lambda: first.execute("COMMIT"))
    timer.start()
    try:
        with Store(path) as late:
            assert late.get_or_create_user("telegram", 1).id == 1
    finally:
        timer.join()
        first.close()
