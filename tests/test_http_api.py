"""The HTTP API end to end: `python -m bots.serve serve` as a real process, spoken to over HTTP."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from photos import photo_png
from PIL import Image

from bots.config import Settings
from bots.core import StyleService
from bots.http_api import create_app

ROOT = Path(__file__).resolve().parents[1]
MAX_UPLOAD = 300_000
pytestmark = pytest.mark.timeout(180)


def _photo_png(w: int = 200, h: int = 150, seed: int = 0) -> bytes:
    return photo_png(h, w, seed)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp: Path, workers: int, **env: str):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "server.log"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("STYLEJAX_")}
        clean.update(JAX_PLATFORMS="cpu", STYLEJAX_ORT_THREADS="2",
                     STYLEJAX_MAX_UPLOAD_BYTES=str(MAX_UPLOAD), STYLEJAX_MAX_SIDE="256", **env)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bots.serve", "serve", "--port", str(self.port),
             "--data-dir", str(tmp / "data"), "--workers", str(workers)],
            cwd=ROOT, env=clean, stdout=self._log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.base, timeout=30)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                if self.client.get("/healthz", timeout=2).json() == {"status": "ok"}:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 45) -> int | None:
        """SIGTERM, then wait; returns the exit code (None if it had to be killed)."""
        self.client.close()
        code = self.proc.poll()
        if code is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                code = None
        self._log.close()
        return code


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("api"), workers=1, STYLEJAX_RATE_PER_MINUTE="600",
                 STYLEJAX_RATE_BURST="30", STYLEJAX_MAX_ACTIVE_JOBS="10")
    yield srv
    code = srv.stop()
    assert code == 0, srv.log()


def _post(client: httpx.Client, photo: bytes, name: str = "photo.png", **form):
    return client.post("/api/v1/jobs", files={"image": (name, photo, "image/png")},
                       data={k: str(v) for k, v in form.items()})


def _assert_json_error(resp: httpx.Response, status: int | tuple[int, ...]) -> str:
    statuses = status if isinstance(status, tuple) else (status,)
    assert resp.status_code in statuses, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in resp.text and "File \"" not in resp.text
    return body["error"]


def _wait_done(client: httpx.Client, job_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get(f"/api/v1/jobs/{job_id}").json()
        if status["state"] in ("done", "failed", "cancelled"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished in {timeout_s} s")


def test_health_and_styles(server):
    c = server.client
    assert c.get("/healthz").json() == {"status": "ok"}
    styles = c.get("/api/v1/styles").json()
    assert len(styles) >= 8
    for s in styles:
        assert set(s) >= {"id", "name", "names", "thumbnail_url"} and s["names"]["en"]
        thumb = c.get(s["thumbnail_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(thumb.content)).size[0] > 0
    _assert_json_error(c.get("/api/v1/styles/nope/thumbnail"), 404)


def test_submit_poll_and_fetch_result(server):
    c = server.client
    photo = _photo_png()
    resp = _post(c, photo, style="wave", strength=0.9)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["state"] == "queued" and body["status_url"].endswith(body["id"])
    status = _wait_done(c, body["id"])
    assert status == {"id": body["id"], "state": "done", "progress": 1.0, "error": None}
    result = c.get(body["result_url"])
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    out = np.asarray(Image.open(io.BytesIO(result.content)).convert("RGB"), np.float32)
    src = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"), np.float32)
    assert out.shape == src.shape == (150, 200, 3)
    assert np.abs(out - src).mean() > 8


def test_events_stream_until_done(server):
    c = server.client
    job_id = _post(c, _photo_png(seed=1), style="starry").json()["id"]
    events = []
    with c.stream("GET", f"/api/v1/jobs/{job_id}/events", timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: "):]))
            assert len(events) < 1000
    assert events and events[-1]["state"] == "done" and events[-1]["progress"] == 1.0
    assert all(set(e) >= {"state", "progress"} for e in events)
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress)
    _assert_json_error(c.get("/api/v1/jobs/nope/events"), 404)


def test_bad_requests(server):
    c = server.client
    photo = _photo_png(seed=2)
    text = b"hello, not a picture\n" * 5
    err = _assert_json_error(_post(c, text, "notes.txt", style="wave"), 400)
    assert "image" in err.lower()
    err = _assert_json_error(_post(c, photo, style="no-such-style"), 400)
    assert "no-such-style" in err
    _assert_json_error(_post(c, photo, style="wave", strength=2), (400, 422))
    _assert_json_error(_post(c, photo, style="wave", strength="lots"), (400, 422))
    _assert_json_error(_post(c, photo), (400, 422))  # neither style nor style picture
    _assert_json_error(c.post("/api/v1/jobs", data={"style": "wave"}), (400, 422))  # no image
    too_big = os.urandom(MAX_UPLOAD + 50_000)
    _assert_json_error(_post(c, too_big, style="wave"), 413)
    _assert_json_error(c.get("/api/v1/jobs/unknown-job"), 404)
    _assert_json_error(c.get("/api/v1/jobs/unknown-job/result"), 404)
    _assert_json_error(c.delete("/api/v1/jobs/unknown-job"), 404)
    _assert_json_error(c.get("/no/such/page"), 404)


def test_api_only_server_rate_limit_conflict_and_sigterm(tmp_path):
    """Workers=0 keeps jobs queued, so 'not ready' and cancelling are deterministic."""
    srv = Server(tmp_path, workers=0, STYLEJAX_RATE_PER_MINUTE="1", STYLEJAX_RATE_BURST="2",
                 STYLEJAX_MAX_ACTIVE_JOBS="5")
    try:
        c = srv.client
        photo = _photo_png(seed=3)
        first = _post(c, photo, style="kandinsky")
        assert first.status_code == 202, first.text
        job_id = first.json()["id"]
        _assert_json_error(c.get(f"/api/v1/jobs/{job_id}/result"), 409)
        assert _post(c, photo, style="wave").status_code == 202
        limited = _post(c, photo, style="wave")
        _assert_json_error(limited, 429)
        assert int(limited.headers["retry-after"]) >= 1
        cancelled = c.delete(f"/api/v1/jobs/{job_id}")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        assert c.get(f"/api/v1/jobs/{job_id}").json()["state"] == "cancelled"
        _assert_json_error(c.get(f"/api/v1/jobs/{job_id}/result"), 409)
    finally:
        t0 = time.monotonic()
        code = srv.stop(timeout_s=30)
    assert code == 0, srv.log()
    assert time.monotonic() - t0 < 30


def test_api_key_required_when_configured(tmp_path):
    from fastapi.testclient import TestClient

    key = "test-key-0123456789"
    service = StyleService(Settings(data_dir=tmp_path / "data", api_keys=[key]))
    try:
        with TestClient(create_app(service)) as client:
            files = {"image": ("p.png", _photo_png(seed=4), "image/png")}
            assert client.get("/healthz").status_code == 200
            _assert_json_error(client.post("/api/v1/jobs", files=files, data={"style": "wave"}),
                               401)
            wrong = {"X-API-Key": "wrong-key"}
            _assert_json_error(client.post("/api/v1/jobs", files=files, data={"style": "wave"},
                                           headers=wrong), 401)
            ok = client.post("/api/v1/jobs", files=files, data={"style": "wave"},
                             headers={"X-API-Key": key})
            assert ok.status_code == 202, ok.text
            job_id = ok.json()["id"]
            assert client.get(f"/api/v1/jobs/{job_id}",
                              headers={"X-API-Key": key}).json()["state"] == "queued"
            _assert_json_error(client.get(f"/api/v1/jobs/{job_id}"), 401)
            custom = client.post(  # a style picture instead of a pack style
                "/api/v1/jobs", headers={"X-API-Key": key},
                files={"image": ("p.png", _photo_png(seed=5), "image/png"),
                       "style_image": ("s.png", _photo_png(96, 96, seed=6), "image/png")})
            assert custom.status_code == 202, custom.text
            assert service.job(custom.json()["id"]).kind.value == "custom"
            job = service.job(job_id)
            owner = service.store.get_job(job_id).owner
            assert job.owner == owner and service.user("api", _digest(key)).id == owner
    finally:
        service.close()


def _digest(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:16]
