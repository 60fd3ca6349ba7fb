"""The service as it runs in production: `stylejax serve` with worker processes, spoken to over
real HTTP, with workers killed, Redis restarted and corrupt pictures sent mid-run."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from photos import photo_png
from PIL import Image
from redis_server import RedisServer, require_redis_server
from service_process import Server, assert_json_error, post_photo, wait_done

from storage import BlobStore, Store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.float32)


def _assert_stylized(client, job_id: str, photo: bytes, max_side: int | None = None) -> None:
    resp = client.get(f"/api/v1/jobs/{job_id}/result")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    out, src = _decoded(resp.content), _decoded(photo)
    if max_side is not None:  # custom-style results come at the configured size
        scale = max_side / max(src.shape[:2])
        size = (round(src.shape[1] * scale), round(src.shape[0] * scale))
        src = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB").resize(size),
                         np.float32)
    assert out.shape == src.shape
    assert np.abs(out - src).mean() > 8, "the result is (nearly) the photo"


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def kill_worker(srv: Server, index: int = 0) -> None:
    """SIGKILL the newest process of worker `index` (the supervisor will start another)."""
    pid = int(re.findall(rf"worker process {index} started \(pid (\d+)\)", srv.log())[-1])
    os.kill(pid, signal.SIGKILL)


def assert_redone_once(srv: Server, job_id: str) -> None:
    """After `kill_worker` mid-job: the worker was restarted, the job done by the next one,
    recorded once, on its second attempt."""
    log = srv.log()
    assert "exited with -9; restarting" in log
    assert log.count(f"job {job_id} done") == 1, log
    with Store(srv.data_dir / "meta.db") as store:
        job = store.get_job(job_id)
    assert job.attempts == 2 and job.result_sha is not None


def _stop_clean(srv: Server) -> None:
    code = srv.stop()
    assert code == 0, srv.log()


def test_fresh_machine_serve_stylizes_a_posted_photo(tmp_path):
    """No settings, no flags but the port: defaults must give a working service."""
    srv = Server(tmp_path, workers=None, fresh=True)
    try:
        photo = photo_png(180, 240, seed=11)
        resp = post_photo(srv.client, photo, style="starry")
        assert resp.status_code == 202, resp.text
        status = wait_done(srv.client, resp.json()["id"], timeout_s=120)
        assert status["state"] == "done", status
        _assert_stylized(srv.client, resp.json()["id"], photo)
    finally:
        _stop_clean(srv)
    log = srv.log()
    assert "worker process 0 started" in log
    assert f"on http://127.0.0.1:{srv.port}/" in log
    assert (tmp_path / "stylejax-data" / "meta.db").is_file()  # the default data folder


def test_sigkilled_worker_job_is_redelivered_and_completed_once(tmp_path):
    """SIGKILL the worker mid-job (a refine job: optimisation long enough to be killed in):
    the supervisor starts a new one, which gets the job after its lease ends and finishes it;
    exactly one result is recorded."""
    srv = Server(tmp_path, workers=1, STYLEJAX_QUEUE_VISIBILITY_S="3",
                 STYLEJAX_CUSTOM_STYLE_SECONDS="6", STYLEJAX_CUSTOM_STYLE_SIZE="96",
                 STYLEJAX_WORKER_MODE="process")
    try:
        photo, style = photo_png(96, 128, seed=1), photo_png(96, 96, seed=2)
        resp = srv.client.post("/api/v1/jobs", files={"image": ("p.png", photo, "image/png"),
                                                      "style_image": ("s.png", style,
                                                                      "image/png")},
                               data={"refine": "true"})
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        status = lambda: srv.client.get(f"/api/v1/jobs/{job_id}").json()  # noqa: E731
        _wait_for(lambda: status()["state"] == "running" and status()["progress"] > 0, 90,
                  "the custom-style job to make progress")
        kill_worker(srv)
        final = wait_done(srv.client, job_id, timeout_s=120)
        assert final["state"] == "done", (final, srv.log())
        _assert_stylized(srv.client, job_id, photo, max_side=96)
    finally:
        _stop_clean(srv)
    assert_redone_once(srv, job_id)


def test_redis_restart_mid_run_loses_no_job(tmp_path):
    require_redis_server()
    redis = RedisServer(tmp_path / "redis").start()
    srv = Server(tmp_path, workers=1, STYLEJAX_QUEUE=redis.url, STYLEJAX_QUEUE_VISIBILITY_S="5",
                 STYLEJAX_RATE_PER_MINUTE="600", STYLEJAX_RATE_BURST="30",
                 STYLEJAX_MAX_ACTIVE_JOBS="30")
    try:
        photos = [photo_png(120, 160, seed=20 + i) for i in range(8)]
        ids = []
        for p in photos[:4]:
            resp = post_photo(srv.client, p, style="kandinsky")
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["id"])
        redis.restart()  # SIGKILL + start on the same port; the AOF holds the stream
        for p in photos[4:]:
            resp = None
            for _ in range(50):  # the API answers 503 + Retry-After while Redis is away
                resp = post_photo(srv.client, p, style="wave")
                if resp.status_code != 503:
                    break
                time.sleep(0.2)
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["id"])
        for job_id, p in zip(ids, photos):
            status = wait_done(srv.client, job_id, timeout_s=120)
            assert status["state"] == "done", (status, srv.log())
            _assert_stylized(srv.client, job_id, p)
    finally:
        _stop_clean(srv)
        redis.stop()


def test_redis_down_submit_is_refused_not_lost(tmp_path):
    """While the queue is unreachable a submission gets 503 and nothing lingers as queued."""
    require_redis_server()
    redis = RedisServer(tmp_path / "redis").start()
    srv = Server(tmp_path, workers=0, STYLEJAX_QUEUE=redis.url)
    try:
        redis.stop()
        resp = post_photo(srv.client, photo_png(64, 64, seed=3), style="wave")
        message = assert_json_error(resp, 503)
        assert "busy" in message and resp.headers["retry-after"]
        with Store(srv.data_dir / "meta.db") as store:
            assert store.jobs_in_state("queued") == []
    finally:
        _stop_clean(srv)
        redis.stop()


def test_corrupt_uploads_fail_clearly_and_others_go_through(tmp_path):
    """A corrupt photo is refused at the door with a clear message; one that rots on disk
    after upload fails its own job with a clear error, and its batch mates are stylized."""
    srv = Server(tmp_path, workers=0, STYLEJAX_RATE_PER_MINUTE="600",
                 STYLEJAX_RATE_BURST="30", STYLEJAX_MAX_ACTIVE_JOBS="30")
    worker = None
    try:
        good = [photo_png(120, 160, seed=30 + i) for i in range(3)]
        truncated = good[0][: len(good[0]) // 2]
        message = assert_json_error(post_photo(srv.client, truncated, style="wave"), 400)
        assert "picture" in message.lower() or "image" in message.lower()
        ids = [post_photo(srv.client, p, style="wave").json()["id"] for p in good[:2]]
        rotten = photo_png(120, 160, seed=99)
        bad = post_photo(srv.client, rotten, style="wave").json()["id"]
        ids.append(post_photo(srv.client, good[2], style="wave").json()["id"])
        with Store(srv.data_dir / "meta.db") as store:
            path = BlobStore(srv.data_dir / "blobs").path(store.get_job(bad).input_sha)
        path.chmod(0o644)
        path.write_bytes(rotten[:300])  # the disk lets us down after the upload
        worker = subprocess.Popen(  # one worker, so all four are claimed as one batch
            [sys.executable, "-m", "bots.serve", "worker", "--data-dir", str(srv.data_dir)],
            env={**srv.env, "STYLEJAX_MAX_BATCH": "4"}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        final_bad = wait_done(srv.client, bad, timeout_s=90)
        assert final_bad["state"] == "failed", final_bad
        assert "picture" in final_bad["error"].lower() or "image" in final_bad["error"].lower()
        for job_id, p in zip(ids, good):
            status = wait_done(srv.client, job_id, timeout_s=60)
            assert status["state"] == "done", status
            _assert_stylized(srv.client, job_id, p)
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0
        _stop_clean(srv)


def test_worker_on_another_machine_shares_only_redis_and_http(tmp_path):
    """Scale-out: the serving machine runs no worker; a worker with its own (empty) disk gets
    jobs from Redis and pictures over the internal API, authorised by the worker key."""
    require_redis_server()
    redis = RedisServer(tmp_path / "redis").start()
    key = "worker-key-0123456789abcdef"
    srv = Server(tmp_path, workers=0, STYLEJAX_QUEUE=redis.url, STYLEJAX_WORKER_KEY=key,
                 STYLEJAX_RATE_PER_MINUTE="600", STYLEJAX_RATE_BURST="30",
                 STYLEJAX_MAX_ACTIVE_JOBS="30")
    elsewhere = tmp_path / "other-machine"
    remote = None
    try:
        assert_json_error(srv.client.post("/internal/v1/jobs/x/begin"), 401)
        assert_json_error(srv.client.post("/internal/v1/jobs/x/begin",
                                          headers={"X-Worker-Key": "wrong"}), 401)
        photos = [photo_png(120, 160, seed=40 + i) for i in range(3)]
        ids = [post_photo(srv.client, p, style="night").json()["id"] for p in photos]
        custom = srv.client.post("/api/v1/jobs", files={
            "image": ("p.png", photos[0], "image/png"),
            "style_image": ("s.png", photo_png(64, 64, seed=9), "image/png")}).json()["id"]
        remote_log = open(tmp_path / "remote.log", "wb")  # noqa: SIM115
        remote = subprocess.Popen(
            [sys.executable, "-m", "bots.serve", "worker", "--server", srv.base,
             "--data-dir", str(elsewhere)],
            env={**srv.env, "STYLEJAX_CUSTOM_STYLE_SECONDS": "3",
                 "STYLEJAX_CUSTOM_STYLE_SIZE": "64"},
            stdout=remote_log, stderr=subprocess.STDOUT)
        for job_id, p in zip(ids, photos):
            status = wait_done(srv.client, job_id, timeout_s=90)
            assert status["state"] == "done", status
            _assert_stylized(srv.client, job_id, p)
        assert wait_done(srv.client, custom, timeout_s=90)["state"] == "done"
    finally:
        if remote is not None:
            remote.send_signal(signal.SIGTERM)
            assert remote.wait(30) == 0
            remote_log.close()
        _stop_clean(srv)
        redis.stop()
    assert not (elsewhere / "meta.db").exists()  # it never touched a local store
    assert key not in srv.log() and key not in (tmp_path / "remote.log").read_text()
