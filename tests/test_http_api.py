"""The HTTP API end to end: `python -m bots.serve serve` as a real process, spoken to over HTTP."""

from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pytest
from photos import photo_png
from PIL import Image
from service_process import MAX_UPLOAD, Server, assert_json_error, post_photo, wait_done

from bots.config import Settings
from bots.core import StyleService
from bots.http_api import create_app, key_digest

pytestmark = pytest.mark.timeout(180)


def _photo_png(w: int = 200, h: int = 150, seed: int = 0) -> bytes:
    return photo_png(h, w, seed)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("api"), workers=1, STYLEJAX_RATE_PER_MINUTE="600",
                 STYLEJAX_RATE_BURST="30", STYLEJAX_MAX_ACTIVE_JOBS="10",
                 STYLEJAX_VIDEO_MAX_SECONDS="3")
    yield srv
    code = srv.stop()
    assert code == 0, srv.log()


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
    assert_json_error(c.get("/api/v1/styles/nope/thumbnail"), 404)


def test_submit_poll_and_fetch_result(server):
    c = server.client
    photo = _photo_png()
    resp = post_photo(c, photo, style="wave", strength=0.9)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["state"] == "queued" and body["status_url"].endswith(body["id"])
    assert body["stroke"] == 1.0  # medium unless asked
    status = wait_done(c, body["id"])
    assert status == {"id": body["id"], "state": "done", "progress": 1.0, "error": None,
                      "stroke": 1.0, "refine": False, "media": "photo", "regions": None,
                      "queue_position": None, "eta_s": None}  # done: no place, no estimate
    result = c.get(body["result_url"])
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    out = np.asarray(Image.open(io.BytesIO(result.content)).convert("RGB"), np.float32)
    src = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"), np.float32)
    assert out.shape == src.shape == (150, 200, 3)
    assert np.abs(out - src).mean() > 8


def test_stroke_field_changes_the_picture(server):
    """stroke=large vs 1 (medium) on one photo: echoed as factors, and different pictures."""
    c = server.client
    photo = _photo_png(seed=7)
    results = {}
    for stroke in ("large", "1"):
        resp = post_photo(c, photo, style="wave", stroke=stroke)
        assert resp.status_code == 202, resp.text
        body = resp.json()
        assert wait_done(c, body["id"])["stroke"] == {"large": 1.6, "1": 1.0}[stroke]
        png = c.get(body["result_url"]).content
        results[stroke] = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float32)
    assert results["large"].shape == results["1"].shape == (150, 200, 3)
    assert np.abs(results["large"] - results["1"]).mean() > 2


def test_events_stream_until_done(server):
    c = server.client
    job_id = post_photo(c, _photo_png(seed=1), style="starry").json()["id"]
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
    assert_json_error(c.get("/api/v1/jobs/nope/events"), 404)


def test_bad_requests(server):
    c = server.client
    photo = _photo_png(seed=2)
    text = b"hello, not a picture\n" * 5
    err = assert_json_error(post_photo(c, text, "notes.txt", style="wave"), 400)
    assert "image" in err.lower()
    err = assert_json_error(post_photo(c, photo, style="no-such-style"), 400)
    assert "no-such-style" in err
    assert_json_error(post_photo(c, photo, style="wave", strength=2), (400, 422))
    assert_json_error(post_photo(c, photo, style="wave", strength="lots"), (400, 422))
    err = assert_json_error(post_photo(c, photo, style="wave", stroke="huge"), (400, 422))
    assert "Stroke size must be small, medium, large or a number" in err
    for stroke in ("nan", "0.1", "-2"):
        err = assert_json_error(post_photo(c, photo, style="wave", stroke=stroke), (400, 422))
        assert "Stroke size must be between 0.25 and 4" in err, stroke
    assert_json_error(post_photo(c, photo), (400, 422))  # neither style nor style picture
    assert_json_error(c.post("/api/v1/jobs", data={"style": "wave"}), (400, 422))  # no image
    too_big = os.urandom(MAX_UPLOAD + 50_000)
    assert_json_error(post_photo(c, too_big, style="wave"), 413)
    assert_json_error(c.get("/api/v1/jobs/unknown-job"), 404)
    assert_json_error(c.get("/api/v1/jobs/unknown-job/result"), 404)
    assert_json_error(c.delete("/api/v1/jobs/unknown-job"), 404)
    assert_json_error(c.get("/no/such/page"), 404)


def test_api_only_server_rate_limit_conflict_and_sigterm(tmp_path):
    """Workers=0 keeps jobs queued, so 'not ready' and deleting are deterministic."""
    srv = Server(tmp_path, workers=0, STYLEJAX_RATE_PER_MINUTE="1", STYLEJAX_RATE_BURST="2",
                 STYLEJAX_MAX_ACTIVE_JOBS="5")
    try:
        c = srv.client
        photo = _photo_png(seed=3)
        first = post_photo(c, photo, style="kandinsky")
        assert first.status_code == 202, first.text
        job_id = first.json()["id"]
        assert_json_error(c.get(f"/api/v1/jobs/{job_id}/result"), 409)
        assert post_photo(c, photo, style="wave").status_code == 202
        limited = post_photo(c, photo, style="wave")
        assert_json_error(limited, 429)
        assert int(limited.headers["retry-after"]) >= 1
        deleted = c.delete(f"/api/v1/jobs/{job_id}")  # a queued job: deleted, not kept
        assert deleted.status_code == 200 and deleted.json() == {"deleted": job_id}
        assert_json_error(c.get(f"/api/v1/jobs/{job_id}"), 404)
        assert_json_error(c.get(f"/api/v1/jobs/{job_id}/result"), 404)
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
            assert_json_error(client.post("/api/v1/jobs", files=files, data={"style": "wave"}),
                               401)
            wrong = {"X-API-Key": "wrong-key"}
            assert_json_error(client.post("/api/v1/jobs", files=files, data={"style": "wave"},
                                           headers=wrong), 401)
            ok = client.post("/api/v1/jobs", files=files, data={"style": "wave"},
                             headers={"X-API-Key": key})
            assert ok.status_code == 202, ok.text
            job_id = ok.json()["id"]
            assert client.get(f"/api/v1/jobs/{job_id}",
                              headers={"X-API-Key": key}).json()["state"] == "queued"
            assert_json_error(client.get(f"/api/v1/jobs/{job_id}"), 401)
            custom = client.post(  # a style picture instead of a pack style
                "/api/v1/jobs", headers={"X-API-Key": key},
                files={"image": ("p.png", _photo_png(seed=5), "image/png"),
                       "style_image": ("s.png", _photo_png(96, 96, seed=6), "image/png")})
            assert custom.status_code == 202, custom.text
            assert service.job(custom.json()["id"]).kind.value == "custom"
            job = service.job(job_id)
            owner = service.store.get_job(job_id).owner
            digest = key_digest(key, client.app.state.api_key_secret)  # HMAC, server secret
            assert job.owner == owner and service.user("api", digest).id == owner
    finally:
        service.close()


def test_refine_field_reaches_the_job(tmp_path):
    """`refine` (custom styles only) is a form field; on a gallery style a clear error."""
    from fastapi.testclient import TestClient

    service = StyleService(Settings(data_dir=tmp_path / "data", rate_per_minute=600,
                                    rate_burst=20))
    try:
        with TestClient(create_app(service)) as client:
            def submit(**data):
                files = {"image": ("p.png", _photo_png(seed=8), "image/png")}
                if "style" not in data:
                    files["style_image"] = ("s.png", _photo_png(96, 96, seed=9), "image/png")
                return client.post("/api/v1/jobs", files=files, data=data)

            refined = submit(refine="true")
            assert refined.status_code == 202, refined.text
            assert refined.json()["refine"] is True
            assert service.job(refined.json()["id"]).request.refine is True
            assert client.get(f"/api/v1/jobs/{refined.json()['id']}").json()["refine"] is True
            plain = submit()
            assert plain.status_code == 202 and plain.json()["refine"] is False
            assert service.job(plain.json()["id"]).request.refine is False
            err = assert_json_error(submit(style="wave", refine="true"), (400, 422))
            assert "Refine is for your own style picture" in err
    finally:
        service.close()


def test_openapi_schema_documents_the_contract(server):
    schema = server.client.get("/openapi.json").json()
    paths = schema["paths"]
    for path, method in [("/healthz", "get"), ("/api/v1/styles", "get"),
                         ("/api/v1/jobs", "post"), ("/api/v1/jobs/{job_id}", "get"),
                         ("/api/v1/jobs/{job_id}/result", "get"),
                         ("/api/v1/jobs/{job_id}/events", "get")]:
        assert method in paths[path], path
    form = paths["/api/v1/jobs"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in form
    ref = form["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    fields = schema["components"]["schemas"][ref]["properties"]
    assert {"image", "style", "style_image", "strength", "keep_colors", "stroke",
            "refine"} <= set(fields)
    assert "small, medium" in fields["stroke"]["description"]
    assert not any(p.startswith("/internal") for p in paths)  # workers' API stays private


def test_video_and_gif_jobs(server):
    """A clip with sound and an animated GIF through the same endpoint: progress while it
    runs, the result as video/mp4 and image/gif, decoded: frames, duration, size, audio."""
    from test_video_service import assert_clip_result, assert_gif_result, clip_bytes, gif_bytes

    c = server.client
    clip = c.post("/api/v1/jobs", files={"image": ("clip.mp4", clip_bytes(24), "video/mp4")},
                  data={"style": "starry", "stroke": "4"})
    assert clip.status_code == 202, clip.text
    assert clip.json()["media"] == "video"
    seen = set()
    deadline = time.monotonic() + 120
    while (status := c.get(clip.json()["status_url"]).json())["state"] != "done":
        assert status["state"] in ("queued", "running") and time.monotonic() < deadline, status
        seen.add(status["progress"])
        time.sleep(0.05)
    assert any(0 < p < 1 for p in seen), seen  # progress per frame batch
    result = c.get(clip.json()["result_url"])
    assert result.headers["content-type"] == "video/mp4"
    assert result.headers["content-disposition"].endswith('.mp4"')
    assert_clip_result(result.content, frames=24)
    gif = c.post("/api/v1/jobs", files={"image": ("loop.gif", gif_bytes(), "image/gif")},
                 data={"style": "wave", "stroke": "4"})
    assert gif.status_code == 202, gif.text
    assert wait_done(c, gif.json()["id"], timeout_s=120)["state"] == "done"
    result = c.get(gif.json()["result_url"])
    assert result.headers["content-type"] == "image/gif"
    assert_gif_result(result.content)


def test_bad_videos_answer_their_status(server):
    from test_video_service import audio_only_bytes, clip_bytes

    c = server.client
    post = lambda data, name: c.post(  # noqa: E731
        "/api/v1/jobs", files={"image": (name, data, "video/mp4")}, data={"style": "wave"})
    err = assert_json_error(post(clip_bytes()[:3000], "cut.mp4"), 400)
    assert "damaged" in err.lower() or "read" in err.lower()
    err = assert_json_error(post(audio_only_bytes(), "song.m4a"), 415)
    assert "sound but no picture" in err
    err = assert_json_error(post(clip_bytes(48, audio=False), "long.mp4"), 413)
    assert "3" in err
    err = assert_json_error(c.post("/api/v1/jobs", files={
        "image": ("clip.mp4", clip_bytes(), "video/mp4"),
        "style_image": ("s.png", _photo_png(), "image/png")}), 422)
    assert "gallery's styles only" in err
