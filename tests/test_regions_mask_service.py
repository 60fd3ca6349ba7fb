"""A hand-painted mask (the region "mask") through the service, end to end (issue 16).

`POST /api/v1/jobs` with `regions=mask` (or `keep=mask`) and a `mask` picture, against a real
`bots.serve serve` process with its SQLite queue; a worker on another machine with the Redis
queue and the internal API; the mask as a stored blob: the quota, DELETE, the retention
sweep, a mask two jobs share. The masks are squares on photos whose every pixel the style
changes, so where the style went is measured, not guessed.
"""

from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
from photos import photo_png
from PIL import Image
from redis_server import RedisServer, require_redis_server
from service_process import Server, assert_json_error, wait_done

from bots.config import Settings
from bots.core import StyleService
from bots.worker import Worker
from storage import MASK_SHA_PARAM, BlobStore, JobNotFoundError, JobState, Store
from stylejax.errors import JobOverQuotaError
from stylejax.stylizer import Stylizer

pytestmark = pytest.mark.timeout(300)

H, W = 96, 128  # the photos
MARGIN = 4  # px each side of the square's edge where the scaled mask may be in between


def square_mask(h: int, w: int, box: tuple[float, float, float, float]) -> bytes:
    """A grey PNG of h×w, white inside `box` = (top, left, bottom, right) as fractions."""
    m = np.zeros((h, w), np.uint8)
    t, left, b, r = box
    m[round(t * h):round(b * h), round(left * w):round(r * w)] = 255
    buf = io.BytesIO()
    Image.fromarray(m, mode="L").save(buf, "PNG")
    return buf.getvalue()


BOX = (0.25, 0.25, 0.75, 0.625)  # rows 24..72, columns 32..80 of the photo


def inside_outside(box=BOX, h: int = H, w: int = W) -> tuple[np.ndarray, np.ndarray]:
    """Boolean maps of the photo well inside and well outside the square."""
    t, left, b, r = round(box[0] * h), round(box[1] * w), round(box[2] * h), round(box[3] * w)
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((yy >= t + MARGIN) & (yy < b - MARGIN) & (xx >= left + MARGIN)
              & (xx < r - MARGIN))
    near = (yy >= t - MARGIN) & (yy < b + MARGIN) & (xx >= left - MARGIN) & (xx < r + MARGIN)
    return inside, ~near


def _rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.float32)


def assert_follows_mask(result: bytes, photo: bytes, *, styled_inside: bool) -> None:
    """The style where the mask says (mean change > 10 levels), the photo elsewhere (99 % of
    the pixels within 2 levels)."""
    out, src = _rgb(result), _rgb(photo)
    assert out.shape == src.shape
    diff = np.abs(out - src).max(axis=-1)
    inside, outside = inside_outside()
    styled, kept = (inside, outside) if styled_inside else (outside, inside)
    assert np.percentile(diff[kept], 99) <= 2.0, np.percentile(diff[kept], 99)
    assert diff[styled].mean() > 10, diff[styled].mean()


def post_job(client, photo: bytes, mask: bytes | None = None, **form):
    files = {"image": ("photo.png", photo, "image/png")}
    if mask is not None:
        files["mask"] = ("mask.png", mask, "image/png")
    return client.post("/api/v1/jobs", files=files, data={k: str(v) for k, v in form.items()})


def blob_files(data_dir) -> set[str]:
    """The stored pictures' files (sha names) under a data folder."""
    root = data_dir / "blobs"
    return {p.name for p in root.rglob("*") if p.is_file() and len(p.name) == 64}


# -- the HTTP API (embedded SQLite queue) ---------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("mask-api"), workers=1,
                 STYLEJAX_RATE_PER_MINUTE="600", STYLEJAX_RATE_BURST="40",
                 STYLEJAX_MAX_ACTIVE_JOBS="10")
    yield srv
    code = srv.stop()
    assert code == 0, srv.log()


@pytest.mark.slow
def test_api_painted_mask_styles_inside_and_keep_mask_the_reverse(server):
    c = server.client
    photo = photo_png(H, W, seed=61)
    mask = square_mask(H // 2, W // 2, BOX)  # half the photo's size: scaled by the worker
    resp = post_job(c, photo, mask, style="wave", regions="mask")
    assert resp.status_code == 202, resp.text
    spec = {"entries": [{"region": "mask"}], "keep": [], "feather": 0.0}
    assert resp.json()["regions"] == spec  # the region, never the pixels or their sha
    status = wait_done(c, resp.json()["id"], timeout_s=120)
    assert status["state"] == "done", status
    assert status["regions"] == spec and "mask_sha" not in str(status)
    assert_follows_mask(c.get(resp.json()["result_url"]).content, photo, styled_inside=True)

    kept = post_job(c, photo, mask, style="wave", keep="mask")
    assert kept.status_code == 202, kept.text
    assert kept.json()["regions"] == {"entries": [{"region": "everywhere"}], "keep": ["mask"],
                                      "feather": 0.0}
    status = wait_done(c, kept.json()["id"], timeout_s=120)
    assert status["state"] == "done", status
    assert_follows_mask(c.get(kept.json()["result_url"]).content, photo, styled_inside=False)

    # a bigger mask (2×) in colour, with a style per region: the square in one style, the rest
    # in another; the mask wins over "everywhere"
    colour = Image.open(io.BytesIO(square_mask(H * 2, W * 2, BOX))).convert("RGB")
    buf = io.BytesIO()
    colour.save(buf, "JPEG", quality=95)
    two = post_job(c, photo, buf.getvalue(), regions="everywhere=starry,mask=wave")
    assert two.status_code == 202, two.text
    status = wait_done(c, two.json()["id"], timeout_s=120)
    assert status["state"] == "done", status
    first = _rgb(c.get(resp.json()["result_url"]).content)
    both = _rgb(c.get(two.json()["result_url"]).content)
    inside, outside = inside_outside()
    assert np.abs(both - first).max(axis=-1)[inside].mean() < 3  # wave in the square
    assert np.abs(both - _rgb(photo)).max(axis=-1)[outside].mean() > 10  # starry outside


@pytest.mark.slow
def test_api_mask_mistakes_are_one_line_422s_and_store_nothing(server):
    c = server.client
    photo = photo_png(H, W, seed=62)
    mask = square_mask(H, W, BOX)
    before = blob_files(server.data_dir)
    cases = [
        ({"style": "wave"}, mask, "no region names 'mask'"),
        ({"style": "wave", "regions": "person"}, mask, "no region names 'mask'"),
        ({"style": "wave", "regions": "mask"}, None, "needs a mask picture"),
        ({"style": "wave", "keep": "mask"}, None, "needs a mask picture"),
        ({"style": "wave", "regions": "mask"}, b"not a picture at all" * 10,
         "mask is not a picture"),
        ({"style": "wave", "regions": "mask"}, square_mask(H, W * 2, BOX), "photo's shape"),
        ({"style": "wave", "keep": "mask"}, square_mask(round(H * 1.04), W, BOX),
         "photo's shape"),
    ]
    for form, mask_file, words in cases:
        message = assert_json_error(post_job(c, photo, mask_file, **form), 422)
        assert words in message, (form, message)
        assert "\n" not in message and len(message) < 200, message
    assert blob_files(server.data_dir) == before  # nothing was stored for them
    # within the tolerance (2 % off): accepted
    near = post_job(c, photo, square_mask(round(H * 0.51), W // 2, BOX), style="wave",
                    regions="mask")
    assert near.status_code == 202, near.text
    assert wait_done(c, near.json()["id"], timeout_s=120)["state"] == "done"


@pytest.mark.slow
def test_openapi_documents_the_mask_field(server):
    schema = server.client.get("/openapi.json").json()
    forms = [s for s in schema["components"]["schemas"].values()
             if "mask" in s.get("properties", {}) and "image" in s["properties"]]
    assert len(forms) == 1
    assert "white = in the region" in forms[0]["properties"]["mask"]["description"]


# -- DELETE: the mask's file and its quota go with the job ---------------------------------------
@pytest.mark.slow
def test_delete_removes_the_mask_blob_and_its_quota(tmp_path):
    srv = Server(tmp_path, workers=1, STYLEJAX_RATE_PER_MINUTE="600",
                 STYLEJAX_RATE_BURST="40")
    try:
        c = srv.client
        photo, mask = photo_png(H, W, seed=63), square_mask(H, W, BOX)
        job = post_job(c, photo, mask, style="wave", regions="mask").json()
        assert wait_done(c, job["id"], timeout_s=120)["state"] == "done"
        store = Store(srv.data_dir / "meta.db")
        blobs = BlobStore(srv.data_dir / "blobs")
        try:
            stored = store.get_job(job["id"])
            mask_sha = stored.params[MASK_SHA_PARAM]
            assert blobs.get(mask_sha) == mask  # kept as sent
            owner = str(stored.owner)
            assert blob_files(srv.data_dir) == {stored.input_sha, mask_sha, stored.result_sha}
            assert blobs.usage(owner) == sum(blobs.path(s).stat().st_size
                                             for s in blob_files(srv.data_dir))
            assert c.delete(f"/api/v1/jobs/{job['id']}").json() == {"deleted": job["id"]}
            assert blob_files(srv.data_dir) == set() and blobs.usage(owner) == 0
            assert c.get(f"/api/v1/jobs/{job['id']}").status_code == 404
        finally:
            store.close()
            blobs.close()
    finally:
        assert srv.stop() == 0, srv.log()


# -- the service core: shared masks, the quota, retention -----------------------------------------
@pytest.fixture(scope="module")
def stylizer() -> Stylizer:
    return Stylizer(backend="onnx")


def _service(path, **settings) -> StyleService:
    return StyleService(Settings(data_dir=path, rate_per_minute=600, rate_burst=40,
                                 max_active_jobs=10, max_side=128, **settings))


def test_a_shared_mask_stays_until_its_last_job_goes(tmp_path):
    service = _service(tmp_path / "d")
    try:
        ann, bob = service.user("test", 1), service.user("test", 2)
        mask = square_mask(H, W, BOX)
        a = service.submit(ann, photo_png(H, W, seed=64), style="wave", regions="mask",
                           mask=mask)
        b = service.submit(bob, photo_png(H, W, seed=65), style="wave", regions="mask",
                           mask=mask)
        sha = a.params[MASK_SHA_PARAM]
        assert b.params[MASK_SHA_PARAM] == sha and a.request.mask == sha
        assert service.blobs.usage(str(bob.id)) > len(mask)  # each owner is charged
        service.delete_job(b.id, bob)
        assert service.blobs.exists(sha) and service.blobs.usage(str(bob.id)) == 0
        service.delete_job(a.id, ann)
        assert not service.blobs.exists(sha) and service.blobs.usage(str(ann.id)) == 0
    finally:
        service.close()


def test_the_mask_counts_in_the_quota(tmp_path):
    photo = photo_png(H, W, seed=66)
    rng = np.random.default_rng(0)  # a mask that does not compress: about 37 kB
    noisy = (rng.random((H, W)) > 0.5).astype(np.uint8) * 255
    noisy[24:72, 32:80] = 255
    buf = io.BytesIO()
    Image.fromarray(noisy, mode="L").save(buf, "PNG", compress_level=0)
    mask = buf.getvalue()
    # room for the photo and its result, not for the mask too
    quota = len(photo) + 128 * 96 * 3 + 64 * 1024 + len(mask) // 2
    service = _service(tmp_path / "d", user_quota_bytes=quota)
    try:
        owner = service.user("test", 3)
        with pytest.raises(JobOverQuotaError):
            service.submit(owner, photo, style="wave", regions="mask", mask=mask)
        assert service.blobs.usage(str(owner.id)) == 0  # refused before anything was stored
        service.submit(owner, photo, style="wave", regions="mask",
                       mask=square_mask(H, W, BOX))  # a small mask fits
    finally:
        service.close()


def test_retention_keeps_an_active_jobs_mask_and_removes_a_finished_ones(tmp_path, stylizer):
    now = [time.time()]
    (tmp_path / "d").mkdir()
    store = Store(tmp_path / "d" / "meta.db", clock=lambda: now[0])
    service = StyleService(Settings(data_dir=tmp_path / "d", retention_days=7,
                                    rate_per_minute=600, rate_burst=40, max_side=128),
                           store=store)
    try:
        owner = service.user("test", 4)
        done = service.submit(owner, photo_png(H, W, seed=67), style="wave", regions="mask",
                              mask=square_mask(H, W, BOX))
        Worker.beside(service, stylizer=stylizer).run(max_jobs=1, idle_exit_s=5)
        assert service.job(done.id).state is JobState.DONE
        waiting = service.submit(owner, photo_png(H, W, seed=68), style="wave", keep="mask",
                                 mask=square_mask(H, W, (0.1, 0.1, 0.5, 0.5)))
        ancient = time.time() - 8 * 86400
        for sha in service.job(done.id).blob_shas | service.job(waiting.id).blob_shas:
            os.utime(service.blobs.path(sha), (ancient, ancient))
        now[0] += 8 * 86400
        service.sweep_expired()
        with pytest.raises(JobNotFoundError):
            service.job(done.id)
        assert not service.blobs.exists(done.params[MASK_SHA_PARAM])
        # the queued job still has its mask: the sweep counts it as a reference
        assert service.blobs.exists(waiting.params[MASK_SHA_PARAM])
        assert service.job(waiting.id).state is JobState.QUEUED
    finally:
        service.close()


# -- a worker on another machine: the Redis queue, the mask over the internal API ----------------
@pytest.mark.slow
def test_remote_worker_with_redis_gets_the_mask_over_http(tmp_path, stylizer):
    require_redis_server()
    redis = RedisServer(tmp_path / "redis").start()
    key = "worker-key-mask-0123456789"
    srv = Server(tmp_path, workers=0, STYLEJAX_QUEUE=redis.url, STYLEJAX_WORKER_KEY=key,
                 STYLEJAX_RATE_PER_MINUTE="600", STYLEJAX_RATE_BURST="30")
    worker = None
    try:
        photo = photo_png(H, W, seed=69)
        job = post_job(srv.client, photo, square_mask(H // 4, W // 4, BOX), style="wave",
                       regions="mask").json()
        settings = Settings(data_dir=tmp_path / "elsewhere", queue=redis.url, worker_key=key,
                            max_side=256, batch_wait_s=0)
        worker = Worker.remote(settings, srv.base, stylizer=stylizer)
        worker.run(max_jobs=1, idle_exit_s=30)
        status = wait_done(srv.client, job["id"], timeout_s=60)
        assert status["state"] == "done", status
        assert_follows_mask(srv.client.get(job["result_url"]).content, photo,
                            styled_inside=True)
    finally:
        if worker is not None:
            worker.close()
        assert srv.stop() == 0, srv.log()
        redis.stop()
    assert not (tmp_path / "elsewhere" / "meta.db").exists()


def test_delete_my_data_removes_the_mask(tmp_path):
    service = _service(tmp_path / "d")
    try:
        owner = service.user("test", 5)
        job = service.submit(owner, photo_png(H, W, seed=70), style="wave", regions="mask",
                             mask=square_mask(H, W, BOX))
        sha = job.params[MASK_SHA_PARAM]
        assert service.blobs.exists(sha)
        assert service.forget(owner)["blobs"] == 2  # the photo and the mask
        assert not service.blobs.exists(sha) and service.blobs.usage(str(owner.id)) == 0
    finally:
        service.close()


def test_a_resubmit_keeps_the_mask_while_its_regions_use_it(tmp_path):
    service = _service(tmp_path / "d")
    try:
        owner = service.user("test", 6)
        job = service.submit(owner, photo_png(H, W, seed=71), style="wave", regions="mask",
                             mask=square_mask(H, W, BOX))
        again = service.resubmit(owner, job.id, strength=0.5)
        assert again.params[MASK_SHA_PARAM] == job.params[MASK_SHA_PARAM]
        assert again.request.batch_key() != job.request.batch_key()
        whole = service.resubmit(owner, job.id, regions=())  # everywhere: no mask any more
        assert MASK_SHA_PARAM not in whole.params and whole.request.regions is None
    finally:
        service.close()
