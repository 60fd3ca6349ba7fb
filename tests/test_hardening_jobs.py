"""Issue 17, findings 1, 3 and 8: nothing stranded when the queue loses jobs, DELETE that
deletes, and the storage quota checked before the work.

* Reconcile (`StyleService.reconcile`, run by `stylejax serve` at start and by the janitor):
  a real redis-server without persistence is SIGKILLed and restarted with jobs queued and one
  delivery still held by a worker; every job is put back on its lane (photo / video), done
  exactly once, and the user is no longer locked out. Reconcile is idempotent on both queues.
* DELETE against a real `stylejax serve` process (no worker of its own; the worker runs in this
  process on the same data folder): finished, queued and running jobs go with their pictures
  and results, pictures shared with another job stay, the quota empties.
* The quota (the `user_quota_bytes` setting) refuses a job whose upload and result estimate do
  not fit, before anything is stored; HTTP 413, the chat's "quota" message.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from photos import photo_png
from PIL import Image
from redis_server import RedisServer, require_redis_server
from service_process import Server, assert_json_error, post_photo, wait_done

from bots import chat
from bots.config import Settings
from bots.core import StyleService
from bots.i18n import t
from bots.janitor import Janitor
from bots.serve import reconcile_queues
from bots.worker import Worker
from storage import BlobStore, JobState, Store, TooManyActiveJobsError
from storage.queue import JobQueue, open_queue
from stylejax.errors import JobNotFoundError, JobOverQuotaError, QuotaExceededError
from stylejax.stylizer import Stylizer

pytestmark = pytest.mark.timeout(300)


def _png(seed: int = 0, h: int = 96, w: int = 128) -> bytes:
    return photo_png(h, w, seed)


def _gif(frames: int = 4, w: int = 48, h: int = 32) -> bytes:
    """A tiny animated GIF: a video job (the video lane)."""
    rng = np.random.default_rng(7)
    ims = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for _ in
           range(frames)]
    buf = io.BytesIO()
    ims[0].save(buf, "GIF", save_all=True, append_images=ims[1:], duration=100, loop=0)
    return buf.getvalue()


def _wait(pred, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := pred()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)
    return value


def _done_lines(caplog: pytest.LogCaptureFixture, job_id: str) -> int:
    return sum(1 for r in caplog.records if r.getMessage().startswith(f"job {job_id} done"))


@pytest.fixture(scope="module")
def stylizer() -> Stylizer:
    return Stylizer(backend="onnx")


@pytest.fixture()
def volatile_redis(tmp_path: Path):
    """redis-server with neither AOF nor snapshots: a restart comes back empty."""
    with RedisServer(tmp_path / "redis", require_redis_server(), persistent=False) as srv:
        yield srv


def _settings(tmp_path: Path, **extra) -> Settings:
    base = dict(data_dir=tmp_path / "data", rate_per_minute=600, rate_burst=30,
                max_active_jobs=2, max_side=256, batch_wait_s=0)
    return Settings(**{**base, **extra})


# -- finding 1: the job book reconciled with the queue -------------------------------------------
def test_job_ids_tell_what_the_queue_holds(tmp_path: Path, volatile_redis: RedisServer) -> None:
    """The contract's `job_ids`: waiting, in flight and dead letters; an ack forgets."""
    for url in (f"sqlite:///{tmp_path / 'q.db'}",
                f"{volatile_redis.url}?stream=ids&max_attempts=1&visibility_s=0.2"):
        q = open_queue(url, max_attempts=1, visibility_s=0.2)
        try:
            for i in range(3):
                q.enqueue(f"j{i}", {"i": i})
            assert q.job_ids() == {"j0", "j1", "j2"}
            first, second = q.claim("w", block_s=0, max_items=2)
            assert q.job_ids() == {"j0", "j1", "j2"}  # in flight still held
            q.ack(first)
            time.sleep(0.3)  # j1's lease expires; its next delivery is over max_attempts
            q.claim("w", block_s=0, max_items=5)
            assert [d.job_id for d in q.dead_letters()] == ["j1"]
            assert q.job_ids() == {"j1", "j2"}  # a dead letter is held until removed
            q.remove_dead(q.dead_letters()[0])
            assert q.job_ids() == {"j2"}
        finally:
            q.close()


def test_redis_loses_everything_reconcile_puts_it_back(tmp_path: Path, stylizer: Stylizer,
                                                       volatile_redis: RedisServer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """The issue's reproduction: no persistence, jobs queued, kill -9, restart; the user was
    locked out (429) for good. Now serve's start and the janitor put the jobs back, each on
    its lane, and every job is done once."""
    caplog.set_level(logging.INFO, logger="stylejax")
    service = StyleService(_settings(tmp_path, queue=volatile_redis.url))
    try:
        alice, bob = service.user("test", 1), service.user("test", 2)
        jobs = [service.submit(alice, _png(seed=i), style="wave") for i in range(2)]
        clip = service.submit(bob, _gif(), style="wave")
        assert clip.request.is_video and service.video_queue.job_ids() == {clip.id}

        volatile_redis.restart()  # SIGKILL, start again empty on the same port
        assert service.queue.job_ids() == set() == service.video_queue.job_ids()
        with pytest.raises(TooManyActiveJobsError):  # the lock-out of the issue
            service.submit(alice, _png(seed=9), style="wave")

        assert reconcile_queues(service) == 3  # what `stylejax serve` does at start
        assert service.queue.job_ids() == {j.id for j in jobs}
        assert service.video_queue.job_ids() == {clip.id}  # back on the video lane
        assert service.reconcile() == 0  # idempotent: nothing enqueued twice
        assert service.queue.pending_count() == 2 and service.video_queue.pending_count() == 1

        volatile_redis.restart()  # lost again: this time the janitor's round finds them
        janitor = Janitor(service)
        janitor.REAP_EVERY_S, janitor.RECONCILE_EVERY_S = 0.05, 0.1
        janitor.RECONCILE_MIN_AGE_S = 0.0
        janitor.start()
        try:
            _wait(lambda: service.queue.pending_count() == 2
                  and service.video_queue.pending_count() == 1, 20, "the janitor's reconcile")
            time.sleep(0.5)  # a few more rounds: still nothing twice
            assert service.queue.pending_count() == 2 and service.video_queue.pending_count() == 1
        finally:
            janitor.stop()

        Worker.beside(service, stylizer=stylizer).run(idle_exit_s=1.0)
        for job in [*jobs, clip]:
            done = service.job(job.id)
            assert done.state is JobState.DONE and done.attempts == 1, done
            assert _done_lines(caplog, job.id) == 1
        again = service.submit(alice, _png(seed=9), style="wave")  # no longer locked out
        Worker.beside(service, stylizer=stylizer).run(idle_exit_s=0.5)
        assert service.job(again.id).state is JobState.DONE
        assert service.queue.pending_count() == 0 == service.video_queue.pending_count()
    finally:
        service.close()


def test_a_lost_delivery_still_held_by_a_worker_gives_one_result(
        tmp_path: Path, stylizer: Stylizer, volatile_redis: RedisServer) -> None:
    """Redis forgets a job a worker is running (its pending entry is gone): reconcile puts it
    back; whichever of the two deliveries finishes second records nothing and leaves no
    stray result behind."""
    service = StyleService(_settings(tmp_path, queue=volatile_redis.url, max_active_jobs=4))
    try:
        carol = service.user("test", 3)
        first = service.submit(carol, _png(seed=1), style="kandinsky")
        second = service.submit(carol, _png(seed=2), style="kandinsky")
        held = service.queue.claim("old-worker", block_s=0, max_items=2)
        assert [d.job_id for d in held] == [first.id, second.id]
        for d in held:
            service.jobs.begin(d.job_id)  # running, as the old worker started them
        volatile_redis.restart()
        assert service.reconcile() == 2  # running and in no queue: back on the lane
        assert service.reconcile() == 0

        # the new delivery of `first` finishes before the old worker; the old one is second
        Worker.beside(service, stylizer=stylizer, max_batch=1).run(max_jobs=1)
        done = service.job(first.id)
        assert done.state is JobState.DONE
        late = _png(seed=77)  # the old worker's (different) bytes for the same job
        assert not service.jobs.finish(done, late)
        assert service.job(first.id).result_sha == done.result_sha
        assert not service.blobs.exists(hashlib.sha256(late).hexdigest())  # thrown away
        assert not service.queue.ack(held[0])  # its lost delivery: a harmless no-op

        # for `second` the old worker finishes first; the new delivery is then a no-op
        Worker.beside(service, stylizer=stylizer).handle([held[1]])
        assert service.job(second.id).state is JobState.DONE
        result = service.job(second.id).result_sha
        Worker.beside(service, stylizer=stylizer).run(idle_exit_s=0.5)
        assert service.job(second.id).result_sha == result
        assert service.queue.pending_count() == 0
        used = service.blobs.usage(str(carol.id))
        assert used == sum(len(service.blobs.get(s)) for j in (first, second)
                           for s in service.job(j.id).blob_shas)
    finally:
        service.close()


def test_stylejax_serve_reconciles_at_start(tmp_path: Path,
                                            volatile_redis: RedisServer) -> None:
    """The issue's reproduction with real processes: `stylejax serve --workers 0` on Redis
    without persistence, 2 jobs, kill -9 and restart Redis: 429 for good before. A restart of
    serve (now with a worker) puts the jobs back; they finish and the user may submit again."""
    env = dict(STYLEJAX_QUEUE=volatile_redis.url, STYLEJAX_RATE_PER_MINUTE="600",
               STYLEJAX_RATE_BURST="30")
    srv = Server(tmp_path, workers=0, **env)
    try:
        ids = [post_photo(srv.client, _png(seed=i), style="wave").json()["id"] for i in range(2)]
        volatile_redis.restart()
        assert_json_error(post_photo(srv.client, _png(seed=5), style="wave"), 429)
    finally:
        assert srv.stop() == 0, srv.log()
    srv = Server(tmp_path, workers=1, **env)
    try:
        for job_id in ids:  # well before the janitor's first round (60 s): serve's start did it
            assert wait_done(srv.client, job_id, 45)["state"] == "done"
        again = post_photo(srv.client, _png(seed=5), style="wave")
        assert again.status_code == 202, again.text
        assert wait_done(srv.client, again.json()["id"], 120)["state"] == "done"
        log = srv.log()
        assert "reconcile: 2 job(s) the queue had lost were queued again" in log
        assert all(log.count(f"job {job_id} done") == 1 for job_id in ids)
    finally:
        assert srv.stop() == 0, srv.log()


def _lose(queue: JobQueue) -> None:
    """Make the queue forget every job, as a data loss would (claim and ack, no work)."""
    while got := queue.claim("eraser", block_s=0, max_items=100):
        for d in got:
            queue.ack(d)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_reconcile_is_idempotent(tmp_path: Path, backend: str,
                                 request: pytest.FixtureRequest) -> None:
    queue = "" if backend == "sqlite" else request.getfixturevalue("volatile_redis").url
    service = StyleService(_settings(tmp_path, queue=queue, max_active_jobs=5))
    try:
        dave = service.user("test", 4)
        kept = service.submit(dave, _png(seed=1), style="wave")
        assert service.reconcile() == 0 and service.queue.pending_count() == 1
        _lose(service.queue)
        lost = service.submit(dave, _png(seed=2), style="wave")
        lost_clip = service.submit(dave, _gif(), style="wave")
        _lose(service.video_queue)
        service.queue.claim("eraser", block_s=0)  # `lost` in flight: held, not lost
        assert service.queue.job_ids() == {lost.id} and not service.video_queue.job_ids()
        assert service.reconcile(min_age_s=60) == 0  # too young to call lost
        assert service.reconcile() == 2  # `kept` (queued, lost) and the clip
        assert service.queue.job_ids() == {kept.id, lost.id}
        assert service.video_queue.job_ids() == {lost_clip.id}
        for _ in range(2):
            assert service.reconcile() == 0
            assert service.queue.pending_count() == 2 and service.video_queue.pending_count() == 1
    finally:
        service.close()


def test_reconcile_fails_a_running_job_out_of_attempts(tmp_path: Path) -> None:
    """A job whose last allowed delivery was lost mid-run fails (as a dead letter would)
    instead of looping; the user hears of it and is not locked out."""
    service = StyleService(_settings(tmp_path))
    try:
        erin = service.user("test", 5)
        job = service.submit(erin, _png(), style="wave")
        for _ in range(service.queue.max_attempts):
            service.jobs.begin(job.id)
        _lose(service.queue)
        assert service.reconcile() == 0
        failed = service.job(job.id)
        assert failed.state is JobState.FAILED and failed.error
        assert service.queue.pending_count() == 0
    finally:
        service.close()


# -- finding 3: DELETE deletes (a real `stylejax serve`, the worker in this process) -----------
def _files(data_dir: Path) -> set[str]:
    """The blob files under a data folder (`root/ab/cd/<sha>`)."""
    return {p.name for p in (data_dir / "blobs").glob("??/??/*") if len(p.name) == 64}


def test_delete_removes_jobs_pictures_and_results(tmp_path: Path, stylizer: Stylizer) -> None:
    srv = Server(tmp_path, workers=0, STYLEJAX_RATE_PER_MINUTE="600", STYLEJAX_RATE_BURST="30",
                 STYLEJAX_MAX_ACTIVE_JOBS="5")
    settings = Settings(data_dir=srv.data_dir, max_side=256, batch_wait_s=0)
    worker = Worker.local(settings, stylizer=stylizer)
    try:
        c = srv.client
        me = Store(srv.data_dir / "meta.db").get_or_create_user("web", "127.0.0.1").id
        quota = BlobStore(srv.data_dir / "blobs")

        # a finished job: its state, result and files go; GET is 404 after
        done_id = post_photo(c, _png(seed=1), style="wave").json()["id"]
        worker.run(max_jobs=worker.handled + 1)
        assert c.get(f"/api/v1/jobs/{done_id}").json()["state"] == "done"
        assert c.get(f"/api/v1/jobs/{done_id}/result").status_code == 200
        assert len(_files(srv.data_dir)) == 2 and quota.usage(str(me)) > 0
        resp = c.delete(f"/api/v1/jobs/{done_id}")
        assert resp.status_code == 200 and resp.json() == {"deleted": done_id}
        assert_json_error(c.get(f"/api/v1/jobs/{done_id}"), 404)
        assert_json_error(c.get(f"/api/v1/jobs/{done_id}/result"), 404)
        assert_json_error(c.delete(f"/api/v1/jobs/{done_id}"), 404)
        assert _files(srv.data_dir) == set() and quota.usage(str(me)) == 0

        # a queued job: gone with its photo; the worker later skips its queue entry
        queued_id = post_photo(c, _png(seed=2), style="wave").json()["id"]
        assert c.delete(f"/api/v1/jobs/{queued_id}").json() == {"deleted": queued_id}
        assert _files(srv.data_dir) == set()
        worker.run(max_jobs=worker.handled + 1)
        assert_json_error(c.get(f"/api/v1/jobs/{queued_id}"), 404)
        assert _files(srv.data_dir) == set() and worker.queue.pending_count() == 0

        # a photo two jobs share stays while the other job needs it
        shared = _png(seed=3)
        a = post_photo(c, shared, style="wave").json()["id"]
        b = post_photo(c, shared, style="kandinsky").json()["id"]
        c.delete(f"/api/v1/jobs/{a}")
        worker.run(idle_exit_s=0.5)
        assert c.get(f"/api/v1/jobs/{b}").json()["state"] == "done"
        assert c.get(f"/api/v1/jobs/{b}/result").status_code == 200
        assert len(_files(srv.data_dir)) == 2  # the shared photo and b's result
        c.delete(f"/api/v1/jobs/{b}")
        assert _files(srv.data_dir) == set() and quota.usage(str(me)) == 0

        # a running job: DELETE stops it, and the worker finishing afterwards brings nothing
        # back (no job, no result file, no charge)
        started, go = threading.Event(), threading.Event()
        real = stylizer.run_many

        def slow_run_many(*args, **kwargs):
            started.set()
            assert go.wait(30)
            return real(*args, **kwargs)

        worker.stylizer = _Patched(stylizer, run_many=slow_run_many)
        running_id = post_photo(c, _png(seed=4), style="wave").json()["id"]
        thread = threading.Thread(target=worker.run, kwargs={"max_jobs": worker.handled + 1})
        thread.start()
        assert started.wait(30)
        assert c.get(f"/api/v1/jobs/{running_id}").json()["state"] == "running"
        assert c.delete(f"/api/v1/jobs/{running_id}").json() == {"deleted": running_id}
        go.set()
        thread.join(60)
        assert not thread.is_alive()
        assert_json_error(c.get(f"/api/v1/jobs/{running_id}"), 404)
        assert _files(srv.data_dir) == set() and quota.usage(str(me)) == 0
        assert worker.queue.pending_count() == 0
    finally:
        worker.close()
        assert srv.stop() == 0, srv.log()


class _Patched:
    """A Stylizer with some methods replaced (the rest is the real one)."""

    def __init__(self, real: Stylizer, **methods):
        self._real, self._methods = real, methods

    def __getattr__(self, name: str):
        return self._methods.get(name) or getattr(self._real, name)


def test_delete_frees_a_full_quota(tmp_path: Path, stylizer: Stylizer) -> None:
    """The issue: quota full, every job deleted, still locked out for 7 days. Now a delete
    frees the bytes at once, also of a photo another user's job still uses."""
    service = StyleService(_settings(tmp_path, max_active_jobs=5, user_quota_bytes=400_000))
    try:
        fay, gus = service.user("test", 6), service.user("test", 7)
        shared = _png(seed=5)
        service.submit(gus, shared, style="wave")
        mine = []
        with pytest.raises(JobOverQuotaError):
            for seed in range(10):
                mine.append(service.submit(fay, shared if seed == 0 else _png(seed=seed),
                                           style="wave"))
                Worker.beside(service, stylizer=stylizer).run(idle_exit_s=0.3)
        assert mine and service.blobs.usage(str(fay.id)) > 0
        for job in mine:
            service.delete_job(job.id, fay)
        assert service.blobs.usage(str(fay.id)) == 0
        assert service.blobs.exists(service.store.list_jobs(gus.id)[0].input_sha)
        service.submit(fay, _png(seed=42), style="wave")  # room again
        with pytest.raises(JobNotFoundError):
            service.job(mine[0].id)
    finally:
        service.close()


def test_retention_frees_the_quota_of_a_photo_another_user_keeps(tmp_path: Path) -> None:
    now = [time.time()]
    (tmp_path / "data").mkdir()
    store = Store(tmp_path / "data" / "meta.db", clock=lambda: now[0])
    service = StyleService(_settings(tmp_path), store=store)
    try:
        ann, ben = service.user("test", 11), service.user("test", 12)
        photo = _png(seed=11)
        old = service.submit(ann, photo, style="wave")
        service.cancel(old.id, ann)  # finished (cancelled) long ago, by the time of the sweep
        kept = service.submit(ben, photo, style="wave")
        now[0] += 8 * 86400
        assert service.sweep_expired()["jobs"] == 1
        assert service.blobs.exists(kept.input_sha)  # ben's job still needs it
        assert service.blobs.usage(str(ann.id)) == 0 < service.blobs.usage(str(ben.id))
    finally:
        service.close()


# -- finding 8: the quota checked before the work ------------------------------------------------
def test_quota_is_checked_before_the_work(tmp_path: Path, stylizer: Stylizer) -> None:
    """An upload that fits but whose result would not is refused at submit, nothing stored;
    one that fits with its result is stylised and its result recorded."""
    photo = _png(seed=8, h=150, w=200)  # 62 kB; its result ~90 kB + 64 kB of headroom
    service = StyleService(_settings(tmp_path, user_quota_bytes=len(photo) + 50_000))
    try:
        hal = service.user("test", 8)
        with pytest.raises(JobOverQuotaError) as err:
            service.submit(hal, photo, style="wave")
        assert str(err.value).startswith("Your storage cannot take this picture")
        assert isinstance(err.value, QuotaExceededError)
        assert chat.error_message(err.value, "en") == t("quota", "en")
        assert service.history(hal) == [] and service.blobs.usage(str(hal.id)) == 0
        assert service.queue.pending_count() == 0

        roomy = StyleService(_settings(tmp_path / "roomy", user_quota_bytes=400_000))
        try:
            ivy = roomy.user("test", 9)
            job = roomy.submit(ivy, photo, style="wave")
            with pytest.raises(JobOverQuotaError):  # the first job's result is reserved
                roomy.submit(ivy, _png(seed=9, h=150, w=200), style="wave")
            Worker.beside(roomy, stylizer=stylizer).run(idle_exit_s=0.5)
            assert roomy.job(job.id).state is JobState.DONE
        finally:
            roomy.close()
    finally:
        service.close()


def test_blob_store_check_room_and_unchecked_results(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "b", max_bytes_per_user=1000, fsync=False)
    try:
        blobs.put(b"x" * 600, owner="u")
        blobs.check_room("u", [b"x" * 600], reserve=400)  # already stored: costs nothing
        with pytest.raises(JobOverQuotaError):
            blobs.check_room("u", [b"y" * 300], reserve=101)
        assert blobs.usage("u") == 600  # a check stores nothing
        blobs.put(b"z" * 700, owner="u", check_quota=False)  # a result: charged, not refused
        assert blobs.usage("u") == 1300
        with pytest.raises(QuotaExceededError):
            blobs.put(b"w" * 10, owner="u")
    finally:
        blobs.close()


def test_quota_over_http_is_a_clear_413(tmp_path: Path) -> None:
    srv = Server(tmp_path, workers=0, STYLEJAX_USER_QUOTA_BYTES="100000")
    try:
        resp = post_photo(srv.client, _png(seed=8, h=150, w=200), style="wave")
        err = assert_json_error(resp, 413)
        assert "storage" in err.lower()
    finally:
        assert srv.stop() == 0, srv.log()


def test_quota_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from bots.config import load_settings

    assert load_settings().user_quota_bytes == 256 * 1024 * 1024
    monkeypatch.setenv("STYLEJAX_USER_QUOTA_BYTES", "1000000")
    assert load_settings().user_quota_bytes == 1_000_000


def test_no_quota_when_zero(tmp_path: Path) -> None:
    service = StyleService(_settings(tmp_path, user_quota_bytes=0))
    try:
        assert service.blobs.max_bytes_per_user is None
        service.submit(service.user("test", 10), _png(), style="wave")
    finally:
        service.close()

