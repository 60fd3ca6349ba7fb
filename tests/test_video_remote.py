"""The video lane across machines: a clip and a photo queued in Redis, taken by a worker that
shares only Redis and the internal HTTP API with the serving machine (none of its disk)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

pytest.importorskip("av")

from photos import photo_png  # noqa: E402
from redis_server import RedisServer, require_redis_server  # noqa: E402
from service_process import Server, post_photo, wait_done  # noqa: E402
from test_video_service import assert_clip_result, clip_bytes  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_remote_worker_takes_clips_from_the_redis_video_lane(tmp_path):
    require_redis_server()
    redis = RedisServer(tmp_path / "redis").start()
    key = "worker-key-video-0123456789"
    srv = Server(tmp_path, workers=0, STYLEJAX_QUEUE=redis.url, STYLEJAX_WORKER_KEY=key,
                 STYLEJAX_MAX_UPLOAD_BYTES="2000000")
    remote = None
    remote_log = open(tmp_path / "remote.log", "wb")  # noqa: SIM115
    try:
        clip = clip_bytes(16)
        resp = srv.client.post("/api/v1/jobs", files={"image": ("clip.mp4", clip, "video/mp4")},
                               data={"style": "starry"})
        assert resp.status_code == 202, resp.text
        clip_id = resp.json()["id"]
        photo_id = post_photo(srv.client, photo_png(96, 128, seed=3), style="night").json()["id"]
        remote = subprocess.Popen(
            [sys.executable, "-m", "bots.serve", "worker", "--server", srv.base,
             "--data-dir", str(tmp_path / "other-machine")],
            env=srv.env, stdout=remote_log, stderr=subprocess.STDOUT)
        assert wait_done(srv.client, photo_id, timeout_s=120)["state"] == "done"
        final = wait_done(srv.client, clip_id, timeout_s=180)
        assert final["state"] == "done", (final, (tmp_path / "remote.log").read_text())
        result = srv.client.get(f"/api/v1/jobs/{clip_id}/result")
        assert result.headers["content-type"] == "video/mp4"
        assert_clip_result(result.content, frames=16)
    finally:
        if remote is not None:
            remote.send_signal(signal.SIGTERM)
            assert remote.wait(30) == 0
        remote_log.close()
        code = srv.stop()
        redis.stop()
    assert code == 0, srv.log()
    assert not (tmp_path / "other-machine" / "meta.db").exists()
