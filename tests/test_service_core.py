"""Service core + worker in one process on the embedded queue: the whole job lifecycle."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from photos import photo_png
from PIL import Image

from bots.config import Settings
from bots.core import StyleService, job_stroke
from bots.worker import GENERIC_ERROR, Worker
from storage import JobKind, JobState, TooManyActiveJobsError
from stylejax.errors import (
    InvalidRequestError,
    JobNotFoundError,
    NotAnImageError,
    RateLimitedError,
    UnknownStyleError,
)
from stylejax.stylizer import Stylizer


def _png(h: int = 96, w: int = 128, seed: int = 0) -> bytes:
    return photo_png(h, w, seed)


@pytest.fixture()
def service(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", rate_per_minute=600, rate_burst=20,
                        max_active_jobs=3, max_side=256)
    svc = StyleService(settings)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def stylizer():
    return Stylizer(backend="onnx")


def test_submit_run_and_fetch_result(service, stylizer):
    alice = service.user("test", 1, "en")
    job = service.submit(alice, _png(), style="wave", strength=0.8)
    assert job.state is JobState.QUEUED and job.params["style"] == "great-wave"
    worker = Worker.beside(service, stylizer=stylizer)
    assert worker.run(max_jobs=1) == 1
    done = service.job(job.id, alice)
    assert done.state is JobState.DONE and done.progress == 1.0
    out = np.asarray(Image.open(io.BytesIO(service.result(job.id, alice))).convert("RGB"))
    photo = np.asarray(Image.open(io.BytesIO(_png())).convert("RGB"))
    assert out.shape == photo.shape
    assert np.abs(out.astype(float) - photo).mean() > 8  # stylised, not the photo


def test_batch_of_same_style_jobs(service, stylizer):
    users = [service.user("test", i) for i in range(3)]
    jobs = [service.submit(u, _png(seed=i), style="starry-night") for i, u in enumerate(users)]
    worker = Worker.beside(service, stylizer=stylizer, max_batch=4)
    worker.run(idle_exit_s=0.5)
    assert all(service.job(j.id).state is JobState.DONE for j in jobs)


def test_bad_input_is_refused_before_anything_is_stored(service):
    bob = service.user("test", 2)
    with pytest.raises(NotAnImageError):
        service.submit(bob, b"hello, not a picture", style="wave")
    with pytest.raises(UnknownStyleError):
        service.submit(bob, _png(), style="cubism")
    with pytest.raises(InvalidRequestError):
        service.submit(bob, _png(), style="wave", strength=2)
    with pytest.raises(InvalidRequestError):
        service.submit(bob, _png())  # neither a style nor a style picture
    assert service.history(bob) == [] and service.queue.pending_count() == 0


def test_limits_and_cancel_and_forget(service):
    carol = service.user("test", 3)
    jobs = [service.submit(carol, _png(seed=i), style="wood") for i in range(3)]
    with pytest.raises(TooManyActiveJobsError):
        service.submit(carol, _png(), style="wood")
    cancelled = service.cancel(jobs[0].id, carol)
    assert cancelled.state is JobState.CANCELLED
    dave = service.user("test", 4)
    with pytest.raises(JobNotFoundError):
        service.job(jobs[1].id, dave)  # not his job
    removed = service.forget(carol)
    assert removed["jobs"] == 3
    with pytest.raises(JobNotFoundError):
        service.job(jobs[1].id)
    assert not any(service.blobs.exists(j.input_sha) for j in jobs)


def test_rate_limit_says_when_to_retry(tmp_path):
    svc = StyleService(Settings(data_dir=tmp_path / "d", rate_per_minute=6, rate_burst=1))
    try:
        erin = svc.user("test", 5)
        svc.submit(erin, _png(), style="wave")
        with pytest.raises(RateLimitedError) as err:
            svc.submit(erin, _png(), style="wave")
        assert 1 <= err.value.retry_after_s <= 10
    finally:
        svc.close()


def test_worker_records_a_clear_error_and_goes_on(service, stylizer):
    frank = service.user("test", 6)
    good = service.submit(frank, _png(seed=1), style="kandinsky")
    bad = service.submit(frank, _png(seed=2), style="kandinsky")
    service.blobs.delete(bad.input_sha)  # the upload vanished (e.g. disk trouble)
    Worker.beside(service, stylizer=stylizer).run(idle_exit_s=0.5)
    assert service.job(good.id).state is JobState.DONE
    failed = service.job(bad.id)
    assert failed.state is JobState.FAILED     # retried max_attempts times, then given up
    assert failed.attempts == service.queue.max_attempts
    assert failed.error == GENERIC_ERROR       # no internals shown to the user


def test_staged_photo_resubmit_and_delete(service, stylizer):
    gina = service.user("test", 7)
    sha = service.stage_photo(gina, _png(seed=3))
    with pytest.raises(NotAnImageError):
        service.stage_photo(gina, b"not a picture")
    first = service.submit(gina, photo_sha=sha, style="wave", strength=0.5)
    assert first.input_sha == sha
    Worker.beside(service, stylizer=stylizer).run(max_jobs=1)
    stronger = service.resubmit(gina, first.id, strength=0.75)
    assert stronger.params == {**first.params, "strength": 0.75}
    other = service.resubmit(gina, first.id, style="kandinsky")
    assert other.params["style"] == "kandinsky" and other.input_sha == sha
    with pytest.raises(JobNotFoundError):
        service.resubmit(service.user("test", 8), first.id, strength=1.0)  # not hers
    with pytest.raises(InvalidRequestError):
        service.submit(gina, photo_sha="0" * 64, style="wave")  # nothing stored under it
    service.delete_job(first.id, gina)
    with pytest.raises(JobNotFoundError):
        service.job(first.id)
    assert service.blobs.exists(sha)  # still used by the other two jobs


def test_custom_job_resubmit_keeps_the_style_picture(service):
    hana = service.user("test", 9)
    job = service.submit(hana, _png(seed=4), style_image=_png(64, 64, seed=5))
    again = service.resubmit(hana, job.id, strength=0.5)
    assert again.kind.value == "custom" and again.params["strength"] == 0.5
    assert again.params["style_sha"] == job.params["style_sha"]


def test_retention_sweep_removes_old_jobs_and_stray_pictures(tmp_path, stylizer):
    import os
    import time as _time

    from storage import Store

    now = [_time.time()]
    (tmp_path / "d").mkdir()
    store = Store(tmp_path / "d" / "meta.db", clock=lambda: now[0])
    svc = StyleService(Settings(data_dir=tmp_path / "d", retention_days=7), store=store)
    try:
        ida = svc.user("test", 10)
        old = svc.submit(ida, _png(seed=6), style="wave")
        Worker.beside(svc, stylizer=stylizer).run(max_jobs=1)
        staged = svc.stage_photo(ida, _png(seed=7))
        ancient = _time.time() - 8 * 86400
        for sha in (old.input_sha, svc.job(old.id).result_sha, staged):
            os.utime(svc.blobs.path(sha), (ancient, ancient))
        now[0] += 8 * 86400  # a week and a day later…
        fresh = svc.submit(ida, _png(seed=8), style="wave")  # …a new job arrives
        assert svc.sweep_expired() == {"jobs": 1, "blobs": 1}  # old job (2 pictures) + staged
        with pytest.raises(JobNotFoundError):
            svc.job(old.id)
        assert not svc.blobs.exists(staged) and svc.blobs.exists(fresh.input_sha)
    finally:
        svc.close()


def test_stopping_worker_hands_a_custom_job_back(tmp_path, stylizer):
    """SIGTERM mid custom-style optimisation (a refine job: the any-style model's own
    answer takes no time): the job goes back to the queue at once (no attempt spent) instead
    of holding shutdown for the whole budget, and the next worker finishes it."""
    import threading

    svc = StyleService(Settings(data_dir=tmp_path / "d", custom_style_seconds=60,
                                custom_style_size=64))
    try:
        user = svc.user("test", 11)
        job = svc.submit(user, _png(64, 64, seed=1), style_image=_png(64, 64, seed=2),
                         refine=True)
        first = Worker.beside(svc, stylizer=stylizer)
        runner = threading.Thread(target=first.run, kwargs={"max_jobs": 1})
        runner.start()
        deadline = time.monotonic() + 60
        while svc.job(job.id).progress == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        t0 = time.monotonic()
        first.stop.set()
        runner.join(30)
        assert not runner.is_alive() and time.monotonic() - t0 < 20
        back = svc.job(job.id)
        assert back.state is JobState.QUEUED and back.result_sha is None
        svc.settings.custom_style_seconds = 2  # the next worker may finish quickly
        Worker.beside(svc, stylizer=stylizer).run(max_jobs=1)
        done = svc.job(job.id)
        assert done.state is JobState.DONE and done.result_sha is not None
    finally:
        svc.close()


# -- stroke size -----------------------------------------------------------------------------------
def _result(svc, job_id) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(svc.result(job_id))).convert("RGB")).astype(int)


def test_stroke_travels_from_submit_to_the_worker(service, stylizer):
    """Explicit, per-user and kept-on-resubmit strokes reach the Stylizer; old jobs (no stroke
    in their params) run as medium. Same-style jobs with other strokes batch apart."""
    ivy = service.user("test", 12)
    large = service.submit(ivy, _png(seed=9), style="wave", stroke="large")
    medium = service.submit(ivy, photo_sha=large.input_sha, style="wave", stroke=" Medium ")
    assert large.params["stroke"] == 1.6 and medium.params["stroke"] == 1.0
    old = service.store.create_job(ivy.id, JobKind.PACK,  # a row from before strokes existed
                                   {"style": "great-wave", "strength": 1.0,
                                    "keep_colors": False}, large.input_sha)
    service.queue.enqueue(old.id, {"kind": "pack"})
    assert job_stroke(old) == 1.0
    Worker.beside(service, stylizer=stylizer, max_batch=4).run(idle_exit_s=0.5)
    assert all(service.job(j.id).state is JobState.DONE for j in (large, medium, old))
    big, mid = _result(service, large.id), _result(service, medium.id)
    assert np.abs(big - mid).mean() > 2  # the stroke changed the picture
    np.testing.assert_array_equal(_result(service, old.id), mid)
    photo = np.asarray(Image.open(io.BytesIO(_png(seed=9))).convert("RGB"))
    np.testing.assert_array_equal(big, stylizer.stylize(photo, "wave", stroke=1.6))

    service.update_settings(ivy, settings={"stroke": 1.6})  # a chat /settings choice
    ivy = service.user("test", 12)

    def stroke_of(job):
        service.cancel(job.id, ivy)  # only its params matter here (and the active-job limit)
        return job.params["stroke"]

    assert stroke_of(service.submit(ivy, photo_sha=large.input_sha, style="wave")) == 1.6
    assert stroke_of(service.resubmit(ivy, medium.id, strength=0.5)) == 1.0  # the job's own
    assert stroke_of(service.resubmit(ivy, medium.id, stroke="large")) == 1.6
    assert stroke_of(service.resubmit(ivy, old.id)) == 1.0


@pytest.mark.parametrize("stroke, needle", [
    ("huge", "Stroke size must be small, medium, large or a number"),
    (float("nan"), "between 0.25 and 4"),
    ("9", "between 0.25 and 4"),
])
def test_bad_stroke_is_refused_before_anything_is_stored(service, stroke, needle):
    jo = service.user("test", 13)
    with pytest.raises(InvalidRequestError, match=needle):
        service.submit(jo, _png(), style="wave", stroke=stroke)
    assert service.history(jo) == [] and service.queue.pending_count() == 0
    assert service.blobs.usage(str(jo.id)) == 0


def test_custom_job_gets_its_stroke(service):
    """The custom-style path gets the job's stroke too (a recording Stylizer: no optimising)."""
    from stylejax.custom_style import CustomStyleResult

    calls: list[dict] = []

    class Recording(Stylizer):
        def run_custom(self, request, photo, style_image=None, **kwargs):
            calls.append({**kwargs, "stroke": request.stroke})
            rgb = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))
            return CustomStyleResult(image=rgb, seconds=0.0, steps=1, stopped_early=False)

    kim = service.user("test", 14)
    job = service.submit(kim, _png(64, 64, seed=1), style_image=_png(64, 64, seed=2),
                         stroke=0.5)
    Worker.beside(service, stylizer=Recording(backend="onnx")).run(max_jobs=1)
    assert service.job(job.id).state is JobState.DONE
    assert [c["stroke"] for c in calls] == [0.5]
