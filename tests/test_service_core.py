"""Service core + worker in one process on the embedded queue: the whole job lifecycle."""

from __future__ import annotations

import io

import numpy as np
import pytest
from photos import photo_png
from PIL import Image

from bots.config import Settings
from bots.core import JobNotFoundError, RateLimitedError, StyleService
from bots.worker import GENERIC_ERROR, Worker
from storage import JobState, TooManyActiveJobsError
from stylejax.errors import InvalidRequestError, NotAnImageError, UnknownStyleError
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
    worker = Worker(service, stylizer=stylizer)
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
    worker = Worker(service, stylizer=stylizer, max_batch=4)
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
    Worker(service, stylizer=stylizer).run(idle_exit_s=0.5)
    assert service.job(good.id).state is JobState.DONE
    failed = service.job(bad.id)
    assert failed.state is JobState.FAILED     # retried max_attempts times, then given up
    assert failed.attempts == service.queue.max_attempts
    assert failed.error == GENERIC_ERROR       # no internals shown to the user
