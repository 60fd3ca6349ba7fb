"""Video jobs through the service: submit (recognised by content, limits from Settings), the
video lane, workers (progress, cancel, a SIGKILLed worker's clip redone once), results decoded.

The clip helpers here (`clip_bytes`, `gif_bytes`, `decoded`) are shared by the front ends'
tests (HTTP, Telegram, Discord, web page, widget)."""

from __future__ import annotations

import io
import tempfile
import threading
import time
from pathlib import Path

import pytest

av = pytest.importorskip("av")

from photos import photo_png  # noqa: E402
from PIL import Image  # noqa: E402
from test_video import _scene, _sine, make_clip  # noqa: E402

from bots.config import Settings  # noqa: E402
from bots.core import StyleService, result_format  # noqa: E402
from bots.worker import Worker  # noqa: E402
from storage import JobState  # noqa: E402
from stylejax.errors import (  # noqa: E402
    CorruptVideoError,
    InvalidRequestError,
    NotAnImageError,
    UnsupportedVideoError,
    VideoTooLongError,
)
from stylejax.pack import default_pack_dir  # noqa: E402

W, H, N, FPS = 64, 48, 12, 12

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(not (default_pack_dir() / "pack.json").is_file(),
                                 reason="the default pack is not installed")]


# -- clips made here (with tests/test_video.py's makers) -----------------------------------------
def clip_bytes(n: int = N, *, fps: int = FPS, audio: bool = True, w: int = W,
               h: int = H) -> bytes:
    """A tiny H.264 mp4 (n frames at fps, w×h, a panning texture), with a 440 Hz AAC track
    when `audio`."""
    with tempfile.TemporaryDirectory() as tmp:
        return make_clip(Path(tmp, "clip.mp4"), _scene(w, h, n), fps=fps,
                         audio=audio).read_bytes()


def audio_only_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "song.m4a")
        out = av.open(str(path), "w", format="mp4")
        a = out.add_stream("aac", rate=22050)
        a.layout = "mono"
        _sine(out, a, 0.5)
        out.close()
        return path.read_bytes()


def gif_bytes(n: int = 6, duration_ms: int = 100) -> bytes:
    """An animated GIF of n frames, `duration_ms` each, looping forever."""
    ims = [Image.fromarray(f) for f in _scene(n=n)]
    buf = io.BytesIO()
    ims[0].save(buf, "GIF", save_all=True, append_images=ims[1:], duration=duration_ms, loop=0)
    return buf.getvalue()


def decoded(data: bytes) -> dict:
    """What a result is: format, frames, duration, size, audio (decoded, not from headers)."""
    mime = result_format(data)[0]
    if mime in ("image/gif", "image/webp"):
        with Image.open(io.BytesIO(data)) as im:
            durations = []
            for i in range(im.n_frames):
                im.seek(i)
                durations.append(im.info.get("duration", 0))
            return {"mime": mime, "frames": im.n_frames, "duration_s": sum(durations) / 1000,
                    "size": im.size, "audio": False}
    with av.open(io.BytesIO(data)) as c:
        frames = sum(1 for _ in c.decode(video=0))
        vs = c.streams.video[0]
        size = (vs.codec_context.width, vs.codec_context.height)
        audio = bool(c.streams.audio)
        duration = c.duration / 1e6 if c.duration else frames / float(vs.average_rate)
    return {"mime": mime, "frames": frames, "duration_s": duration, "size": size,
            "audio": audio}


def assert_clip_result(data: bytes, *, frames: int = N, fps: float = FPS, audio: bool = True,
                       size: tuple[int, int] = (W, H)) -> dict:
    out = decoded(data)
    assert out["mime"] == "video/mp4"
    assert out["frames"] == frames and out["size"] == size and out["audio"] is audio, out
    assert abs(out["duration_s"] - frames / fps) < 0.15, out
    return out


def assert_gif_result(data: bytes, *, frames: int = 6, duration_s: float = 0.6) -> dict:
    out = decoded(data)
    assert out["mime"] == "image/gif" and out["frames"] == frames, out
    assert out["size"] == (W, H) and abs(out["duration_s"] - duration_s) < 0.05, out
    return out


# -- the service in-process ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def stylizer():
    from stylejax.stylizer import Stylizer

    return Stylizer(backend="onnx")


@pytest.fixture()
def service(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", rate_per_minute=600, rate_burst=30,
                        max_active_jobs=5, max_side=256, video_max_seconds=3,
                        batch_wait_s=0)
    svc = StyleService(settings)
    yield svc
    svc.close()


def test_request_media_kind():
    from stylejax.request import StyleRequest

    assert StyleRequest.create(style="x").media == "photo"
    assert StyleRequest.from_params({"style": "x"}).media == "photo"  # old payloads
    req = StyleRequest.create(style="x", media="video")
    assert req.is_video and StyleRequest.from_params(req.to_params()) == req
    with pytest.raises(InvalidRequestError, match="gallery's styles only"):
        StyleRequest.create(style_image="abc", media="video")


def test_clip_and_gif_go_through_the_video_lane(service, stylizer, monkeypatch):
    alice = service.user("test", 1)
    clip = service.submit(alice, clip_bytes(), style="starry", stroke=4)
    gif = service.submit(alice, gif_bytes(), style="wave", stroke=4)
    assert clip.request.media == gif.request.media == "video"
    assert service.queue.pending_count() == 0 and service.video_queue.pending_count() == 2
    seen: dict[str, list[float]] = {clip.id: [], gif.id: []}
    real = service.jobs.progress
    monkeypatch.setattr(service.jobs, "progress",
                        lambda jid, f: (seen[jid].append(f), real(jid, f)))
    assert Worker.beside(service, stylizer=stylizer).run(max_jobs=2) == 2
    assert service.job(clip.id).state is JobState.DONE
    assert_clip_result(service.result(clip.id, alice))
    assert_gif_result(service.result(gif.id, alice))
    for fractions in seen.values():  # per frame batch (4 frames), rising
        assert len(fractions) >= 2 and fractions == sorted(fractions) and fractions[-1] > 0.9


def test_bad_videos_are_refused_and_nothing_is_stored(service):
    bob = service.user("test", 2)
    cases = [(b"hello, this is text renamed .mp4", NotAnImageError),
             (clip_bytes()[:3000], CorruptVideoError),
             (audio_only_bytes(), UnsupportedVideoError),
             (clip_bytes(48, fps=12, audio=False), VideoTooLongError)]  # 4 s > 3 s
    for data, error in cases:
        with pytest.raises(error) as err:
            service.submit(bob, data, style="wave")
        assert "ffmpeg" not in str(err.value).lower() and str(err.value).endswith(".")
    with pytest.raises(InvalidRequestError, match="gallery's styles only"):
        service.submit(bob, clip_bytes(), style_image=photo_png())
    assert service.history(bob) == []
    assert service.queue.pending_count() == service.video_queue.pending_count() == 0
    assert service.store.referenced_blobs() == set()


def test_staged_video_and_resubmit_stay_videos(service, stylizer):
    carol = service.user("test", 3)
    sha = service.stage_photo(carol, gif_bytes())
    first = service.submit(carol, photo_sha=sha, style="wave", stroke=4)
    assert first.request.is_video
    again = service.resubmit(carol, first.id, style="starry")
    assert again.request.is_video and service.video_queue.pending_count() == 2


def test_cancel_mid_clip(service, stylizer, monkeypatch):
    dave = service.user("test", 4)
    job = service.submit(dave, clip_bytes(24), style="starry", stroke=4)
    real = service.jobs.progress

    def progress(job_id, f):
        real(job_id, f)
        service.cancel(job_id, dave)  # the user cancels after the first batch

    monkeypatch.setattr(service.jobs, "progress", progress)
    assert Worker.beside(service, stylizer=stylizer).run(max_jobs=1) == 1
    done = service.job(job.id)
    assert done.state is JobState.CANCELLED and done.result_sha is None
    assert 0 < done.progress < 0.5  # stopped between batches, early
    assert service.video_queue.pending_count() == 0  # acked, not redelivered


def test_photo_submitted_after_a_video_finishes_first(service, stylizer):
    """Two workers as `stylejax serve` makes them (one with the video lane, one photos only):
    a photo sent while a long clip runs is done before the clip."""
    from bots.worker_pool import takes_video

    erin = service.user("test", 5)
    clip = service.submit(erin, clip_bytes(36), style="starry", stroke=4)
    workers = [Worker.beside(service, stylizer=stylizer, video=takes_video(i, 2))
               for i in range(2)]
    assert [w.video_queue is not None for w in workers] == [True, False]
    threads = [threading.Thread(target=w.run, kwargs={"idle_exit_s": 3.0}) for w in workers]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while service.job(clip.id).state is not JobState.RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        photo = service.submit(erin, photo_png(48, 64), style="wave", stroke=4)
        while not service.job(photo.id).state.is_terminal:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert service.job(photo.id).state is JobState.DONE
        assert service.job(clip.id).state is JobState.RUNNING  # the clip still going
    finally:
        for t in threads:
            t.join(120)
    assert service.job(clip.id).state is JobState.DONE
    assert service.job(photo.id).updated_at <= service.job(clip.id).updated_at


def test_one_worker_prefers_photos_over_waiting_clips(service, stylizer):
    frank = service.user("test", 6)
    clip = service.submit(frank, gif_bytes(), style="starry", stroke=4)
    photo = service.submit(frank, photo_png(48, 64), style="wave", stroke=4)
    Worker.beside(service, stylizer=stylizer).run(max_jobs=1)
    assert service.job(photo.id).state is JobState.DONE
    assert service.job(clip.id).state is JobState.QUEUED


# -- the real service: a SIGKILLed worker mid-clip ----------------------------------------------
@pytest.mark.slow
def test_sigkilled_worker_mid_clip_is_redone_once(tmp_path):
    from service_process import Server, wait_done
    from test_service_processes import assert_redone_once, kill_worker

    srv = Server(tmp_path, workers=1, STYLEJAX_QUEUE_VISIBILITY_S="3",
                 STYLEJAX_WORKER_MODE="process", STYLEJAX_MAX_UPLOAD_BYTES="2000000")
    try:
        data = clip_bytes(60)
        resp = srv.client.post("/api/v1/jobs", files={"image": ("clip.mp4", data, "video/mp4")},
                               data={"style": "starry", "stroke": "4"})
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        status = lambda: srv.client.get(f"/api/v1/jobs/{job_id}").json()  # noqa: E731
        deadline = time.monotonic() + 120
        while not (status()["state"] == "running" and 0 < status()["progress"] < 0.8):
            assert time.monotonic() < deadline, (status(), srv.log())
            time.sleep(0.05)
        kill_worker(srv)
        final = wait_done(srv.client, job_id, timeout_s=180)
        assert final["state"] == "done", (final, srv.log())
        result = srv.client.get(f"/api/v1/jobs/{job_id}/result")
        assert result.headers["content-type"] == "video/mp4"
        assert_clip_result(result.content, frames=60)
    finally:
        code = srv.stop()
    assert code == 0, srv.log()
    assert_redone_once(srv, job_id)


def test_still_pictures_with_a_container_signature_stay_photos(service):
    """AVIF has an ISO-BMFF 'ftyp' box like mp4, and a one-frame GIF is a GIF: both photos."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(buf, "AVIF")
    assert service.check_upload(buf.getvalue()) == "photo"
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), "blue").save(buf, "GIF")
    assert service.check_upload(buf.getvalue()) == "photo"
    assert service.check_upload(gif_bytes()) == "video"
    assert service.check_upload(clip_bytes()) == "video"
