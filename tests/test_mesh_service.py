"""3D model jobs through the service (docs/3d.md "On the service"): a GLB submitted over the
real HTTP API (`stylejax serve` as a process), stylised by its worker on the video lane and
reloaded with pygltflib; the model limits' messages; bad files refused at submit; quota,
DELETE and retention as for photos; the web page submitting a dropped GLB in Chromium."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest

g = pytest.importorskip("pygltflib")

import zipfile  # noqa: E402

from meshes import png_bytes, write_cube_glb, write_cube_obj  # noqa: E402
from PIL import Image  # noqa: E402
from service_process import Server, assert_json_error, wait_done  # noqa: E402

from bots.config import Settings  # noqa: E402
from bots.core import StyleService  # noqa: E402
from bots.worker import Worker  # noqa: E402
from storage import BlobStore, JobState, Store  # noqa: E402
from stylejax import mesh_textures as mt  # noqa: E402
from stylejax.errors import (  # noqa: E402
    BrokenModelError,
    InvalidRequestError,
    JobOverQuotaError,
    ModelTooLargeError,
    NotAModelError,
)
from stylejax.pack import default_pack_dir  # noqa: E402

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(not (default_pack_dir() / "pack.json").is_file(),
                                 reason="the default pack is not installed")]

GLB_TYPE = "model/gltf-binary"
# the limits the test server runs with (the cube's 128² texture fits all of them)
LIMITS = {"STYLEJAX_MODEL_MAX_BYTES": "150000", "STYLEJAX_MODEL_MAX_TEXTURES": "1",
          "STYLEJAX_MODEL_MAX_TEXTURE_SIDE": "300",
          "STYLEJAX_MODEL_MAX_TEXTURE_PIXELS": "40000"}


# -- models made here ----------------------------------------------------------------------------
def cube_glb(tmp: Path, size: int = 128, textures: list[np.ndarray] | None = None) -> bytes:
    return write_cube_glb(tmp / f"cube-{time.monotonic_ns()}.glb", size,
                          textures=textures).read_bytes()


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def smooth(h: int, w: int) -> np.ndarray:
    """A gradient: a texture of many pixels in few bytes."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 128)], -1).astype(np.uint8)


def edited_glb(data: bytes, edit) -> bytes:
    """The GLB with its JSON changed by `edit(doc)` (binary chunk kept)."""
    doc = g.GLTF2.load_from_bytes(data)
    edit(doc)
    return b"".join(doc.save_to_bytes())


def truncated_texture_glb(tmp: Path) -> bytes:
    """A GLB whose PNG texture has a valid header but loses its pixel data half way: only
    decoding it (the worker) finds out."""
    png = png_bytes(noise(64, 64, seed=3))
    data = cube_glb(tmp, textures=[noise(64, 64, seed=3)])
    return data.replace(png[len(png) // 2:], b"\0" * (len(png) - len(png) // 2))


def zip_bytes(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A zip of these members (name → bytes) and symbolic links (name → target)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)
    return buf.getvalue()


def obj_zip(tmp: Path, size: int = 128) -> bytes:
    """The cube as OBJ + MTL + PNG, zipped in a folder "cube/"."""
    folder = tmp / f"obj-{time.monotonic_ns()}"
    folder.mkdir()
    write_cube_obj(folder, size)
    return zip_bytes({f"cube/{p.name}": p.read_bytes() for p in sorted(folder.iterdir())})


def post_model(client, data: bytes, name: str = "cube.glb", **form):
    return client.post("/api/v1/jobs", files={"image": (name, data, GLB_TYPE)},
                       data={k: str(v) for k, v in form.items()})


def glb_texture(data: bytes) -> np.ndarray:
    doc = g.GLTF2.load_from_bytes(data)
    view = doc.bufferViews[doc.images[0].bufferView]
    blob = doc.binary_blob()
    png = blob[view.byteOffset:view.byteOffset + view.byteLength]
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float32)


def vertex_count(data: bytes) -> int:
    doc = g.GLTF2.load_from_bytes(data)
    return sum(doc.accessors[p.attributes.POSITION].count
               for m in doc.meshes for p in m.primitives)


def blob_files(data_dir: Path) -> set[str]:
    return {p.name for p in (data_dir / "blobs").glob("??/??/*") if len(p.name) == 64}


# -- through the HTTP API of a real `stylejax serve` ----------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("mesh"), workers=1, STYLEJAX_RATE_PER_MINUTE="600",
                 STYLEJAX_RATE_BURST="30", STYLEJAX_MAX_ACTIVE_JOBS="10", **LIMITS)
    yield srv
    code = srv.stop()
    assert code == 0, srv.log()


def test_glb_job_end_to_end(server, tmp_path):
    c = server.client
    glb = cube_glb(tmp_path)
    resp = post_model(c, glb, style="wave", strength=0.9)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["media"] == "model" and body["state"] == "queued"
    assert body["queue_position"] == 1  # the video lane's line: no clip is waiting
    status = wait_done(c, body["id"], timeout_s=180)
    assert status["state"] == "done" and status["progress"] == 1.0, status
    assert status["media"] == "model" and status["error"] is None
    result = c.get(body["result_url"])
    assert result.status_code == 200 and result.headers["content-type"] == GLB_TYPE
    assert result.headers["content-disposition"].endswith('.glb"')
    assert vertex_count(result.content) == vertex_count(glb) == 24
    before, after = glb_texture(glb), glb_texture(result.content)
    assert after.shape == before.shape == (128, 128, 3)
    assert np.abs(after - before).mean() > 10  # the texture was painted
    doc_in, doc_out = (g.GLTF2.load_from_bytes(d) for d in (glb, result.content))
    pos_in, pos_out = (doc.binary_blob()[v.byteOffset:v.byteOffset + v.byteLength]
                       for doc in (doc_in, doc_out)
                       for v in [doc.bufferViews[doc.accessors[1].bufferView]])
    assert pos_in == pos_out  # geometry untouched, bit for bit


def test_limits_each_give_their_message(server, tmp_path):
    c = server.client
    files = blob_files(server.data_dir)
    err = assert_json_error(post_model(c, cube_glb(tmp_path, textures=[noise(256, 256)]),
                                       style="wave"), 413)
    assert err.startswith("The model is ") and "models up to 150 kB are taken" in err, err
    two = cube_glb(tmp_path, textures=[noise(32, 32, 1), noise(32, 32, 2)])
    err = assert_json_error(post_model(c, two, style="wave"), 413)
    assert err == "The model has more than 1 texture; up to 1 can be stylised.", err
    err = assert_json_error(post_model(c, cube_glb(tmp_path, textures=[noise(40, 400)]),
                                       style="wave"), 413)
    assert "is 400×40" in err and "up to 300 px on a side" in err, err
    err = assert_json_error(post_model(c, cube_glb(tmp_path, textures=[smooth(250, 200)]),
                                       style="wave"), 413)
    assert "is 200×250" in err and "0.04 megapixels" in err, err
    assert blob_files(server.data_dir) == files  # nothing stored


def test_bad_files_are_refused_at_submit(server, tmp_path):
    c = server.client
    files = blob_files(server.data_dir)
    glb = cube_glb(tmp_path)
    text = b"just some notes, renamed\n" * 20
    err = assert_json_error(post_model(c, text, "notes.glb", style="wave"), 422)
    assert err == ("That file is not a GLB 3D model; this service takes 3D models as .glb "
                   "files (binary glTF)."), err
    err = assert_json_error(post_model(c, b"glTF" + b"\x02\0\0\0" + b"garbage" * 10,
                                       style="wave"), 422)
    assert err.startswith("That file is not a 3D model we can read."), err

    def no_texture(doc):
        doc.materials[0].pbrMetallicRoughness.baseColorTexture = None

    err = assert_json_error(post_model(c, edited_glb(glb, no_texture), style="wave"), 422)
    assert err == "This model has no textures to stylise.", err

    def broken(doc):
        doc.textures[0].source = 7

    err = assert_json_error(post_model(c, edited_glb(glb, broken), style="wave"), 422)
    assert err == "A texture refers to an image the model does not have.", err
    gltf = json.dumps({"asset": {"version": "2.0"}}).encode()
    err = assert_json_error(post_model(c, gltf, "scene.gltf", style="wave"), 422)
    assert "takes 3D models as .glb" in err, err
    err = assert_json_error(post_model(c, glb, style="wave", regions="person"), 422)
    assert err.startswith("Regions work on photos"), err
    assert blob_files(server.data_dir) == files  # nothing stored


def test_a_model_that_fails_in_the_worker_fails_with_its_message(server, tmp_path):
    c = server.client
    resp = post_model(c, truncated_texture_glb(tmp_path), style="wave")
    assert resp.status_code == 202, resp.text  # the header is fine: only decoding fails
    status = wait_done(c, resp.json()["id"], timeout_s=120)
    assert status["state"] == "failed", status
    assert status["error"] == "The texture cube-colours is not a picture we can read.", status


def test_delete_removes_the_files_and_the_quota(server, tmp_path):
    c = server.client
    me = Store(server.data_dir / "meta.db").get_or_create_user("web", "127.0.0.1").id
    quota = BlobStore(server.data_dir / "blobs")
    files, used = blob_files(server.data_dir), quota.usage(str(me))
    glb = cube_glb(tmp_path, textures=[noise(96, 96, seed=11)])
    job_id = post_model(c, glb, style="starry").json()["id"]
    assert wait_done(c, job_id, timeout_s=180)["state"] == "done"
    result = c.get(f"/api/v1/jobs/{job_id}/result").content
    assert len(blob_files(server.data_dir) - files) == 2  # the model and its result
    assert quota.usage(str(me)) == used + len(glb) + len(result)
    assert c.delete(f"/api/v1/jobs/{job_id}").json() == {"deleted": job_id}
    assert_json_error(c.get(f"/api/v1/jobs/{job_id}/result"), 404)
    assert blob_files(server.data_dir) == files and quota.usage(str(me)) == used


def test_zip_of_an_obj_end_to_end(server, tmp_path):
    """A zip of an OBJ with its MTL and texture: the zip back, the styled model beside the
    original (`styled-cube.obj`, its MTL and texture), geometry the same, texture painted."""
    c = server.client
    resp = post_model(c, obj_zip(tmp_path), "cube.zip", style="wave")
    assert resp.status_code == 202, resp.text
    assert resp.json()["media"] == "model"
    status = wait_done(c, resp.json()["id"], timeout_s=180)
    assert status["state"] == "done", status
    result = c.get(resp.json()["result_url"])
    assert result.headers["content-type"] == "application/zip"
    assert result.headers["content-disposition"].endswith('.zip"')
    out = tmp_path / "out"
    with zipfile.ZipFile(io.BytesIO(result.content)) as zf:
        assert set(zf.namelist()) == {"cube/cube.obj", "cube/cube.mtl", "cube/cube.png",
                                      "cube/styled-cube.obj", "cube/styled-cube.mtl",
                                      "cube/styled-cube_cube.png"}
        zf.extractall(out)
    before, after = (mt.load_model(out / "cube" / n) for n in ("cube.obj", "styled-cube.obj"))
    np.testing.assert_array_equal(before.v, after.v)
    t0, t1 = (s.pixels.astype(np.float32) for m in (before, after) for s in m.sites())
    assert t0.shape == t1.shape == (128, 128, 3) and np.abs(t1 - t0).mean() > 10


def test_zips_are_unpacked_safely(server, tmp_path):
    """Zip slip, links, bombs, no model, two models: refused at submit, nothing stored."""
    c = server.client
    files = blob_files(server.data_dir)
    cube = obj_zip(tmp_path)
    members = {n: zipfile.ZipFile(io.BytesIO(cube)).read(n)
               for n in zipfile.ZipFile(io.BytesIO(cube)).namelist()}
    for evil in ("../evil.png", "/tmp/evil.png", "cube/../../evil.png", "C:/evil.png"):
        err = assert_json_error(post_model(c, zip_bytes({**members, evil: b"x"}), "m.zip",
                                           style="wave"), 422)
        assert "outside its folder" in err, (evil, err)
    err = assert_json_error(post_model(c, zip_bytes(members, {"cube/x.png": "/etc/passwd"}),
                                       "m.zip", style="wave"), 422)
    assert "holds a link" in err, err
    bomb = zip_bytes({**members, "cube/zeros.bin": b"\0" * 20_000_000})
    assert len(bomb) < 150_000
    err = assert_json_error(post_model(c, bomb, "m.zip", style="wave"), 413)
    assert err == "The zip unpacks to more than 150 kB; models up to 150 kB are taken.", err
    err = assert_json_error(post_model(c, zip_bytes({"notes.txt": b"hi"}), "m.zip",
                                       style="wave"), 422)
    assert err == "The zip holds no .gltf, .glb or .obj model.", err
    two = {**members, "other/cube.obj": members["cube/cube.obj"]}
    err = assert_json_error(post_model(c, zip_bytes(two), "m.zip", style="wave"), 422)
    assert "several models" in err, err
    no_mtl = {k: v for k, v in members.items() if not k.endswith(".mtl")}
    err = assert_json_error(post_model(c, zip_bytes(no_mtl), "m.zip", style="wave"), 422)
    assert err == "The model refers to cube.mtl, which is missing.", err
    assert blob_files(server.data_dir) == files
    assert not (server.data_dir.parent / "evil.png").exists()


def test_unpack_model_zip_writes_nothing_outside(tmp_path):
    dest = tmp_path / "a" / "dest"
    with pytest.raises(BrokenModelError):
        mt.unpack_model_zip(zip_bytes({"ok.obj": b"v 0 0 0", "../../x.txt": b"x"}), dest)
    assert not (tmp_path / "x.txt").exists() and not (tmp_path / "a" / "x.txt").exists()
    with pytest.raises(ModelTooLargeError):
        mt.unpack_model_zip(zip_bytes({"big.bin": b"\0" * 3_000_000}), tmp_path / "b",
                            mt.ModelLimits(max_bytes=1_000_000))
    assert (tmp_path / "b" / "big.bin").stat().st_size <= 1_000_000 + (1 << 20)
    with pytest.raises(NotAModelError):
        mt.unpack_model_zip(b"PK\x03\x04 broken", tmp_path / "c")
    assert mt.unpack_model_zip(zip_bytes({"__MACOSX/._m.obj": b"", "m/m.obj": b"v"}),
                               tmp_path / "d") == tmp_path / "d" / "m" / "m.obj"


# -- in the service core (quota, retention, the lane) ----------------------------------------------
@pytest.fixture(scope="module")
def stylizer():
    from stylejax.stylizer import Stylizer

    return Stylizer(backend="onnx")


def _service(tmp_path: Path, **extra) -> StyleService:
    base = dict(data_dir=tmp_path / "data", rate_per_minute=600, rate_burst=30,
                max_active_jobs=5, batch_wait_s=0)
    return StyleService(Settings(**{**base, **extra}))


def test_models_take_the_video_lane_and_gallery_styles_only(tmp_path):
    service = _service(tmp_path)
    try:
        me = service.user("web", "lane")
        job = service.submit(me, cube_glb(tmp_path), style="wave", filename="cube.glb")
        assert job.request.media == "model" and job.request.long_lane
        assert service.video_queue.pending_count() == 1 and service.queue.pending_count() == 0
        assert service.store.queued_count(video=True) == 1
        assert service.store.queued_count(video=False) == 0
        with pytest.raises(InvalidRequestError, match="3D models can be stylised with the "
                                                      "gallery's styles only"):
            service.submit(me, cube_glb(tmp_path), style_image=png_bytes(noise(64, 64)))
    finally:
        service.close()


def test_quota_counts_the_model_and_its_result(tmp_path):
    glb = cube_glb(tmp_path)
    # the upload fits, the upload plus its result's estimate (textures as raw RGBA) does not
    service = _service(tmp_path, user_quota_bytes=len(glb) + 128 * 128 * 2)
    try:
        me = service.user("web", "quota")
        with pytest.raises(JobOverQuotaError):
            service.submit(me, glb, style="wave")
        assert service.history(me) == [] and blob_files(tmp_path / "data") == set()
    finally:
        service.close()


def test_retention_and_forget_remove_model_jobs(tmp_path, stylizer):
    service = _service(tmp_path, retention_days=1)
    try:
        me = service.user("web", "old")
        job = service.submit(me, cube_glb(tmp_path), style="wave")
        Worker.beside(service, stylizer=stylizer, max_batch=1).run(max_jobs=1)
        assert service.job(job.id).state is JobState.DONE
        assert len(blob_files(tmp_path / "data")) == 2
        assert service.sweep_expired() == {"jobs": 0, "blobs": 0}  # not old yet
        with service.store._db.get() as conn:  # two days ago
            conn.execute("UPDATE jobs SET finished_at = finished_at - 2 * 86400, "
                         "created_at = created_at - 2 * 86400")
        assert service.sweep_expired()["jobs"] == 1
        assert service.history(me) == [] and blob_files(tmp_path / "data") == set()
        assert service.blobs.usage(str(me.id)) == 0
        # delete-my-data: the same for a model's files
        job = service.submit(me, cube_glb(tmp_path), style="wave")
        Worker.beside(service, stylizer=stylizer, max_batch=1).run(max_jobs=1)
        assert service.job(job.id).state is JobState.DONE
        assert len(blob_files(tmp_path / "data")) == 2 and service.blobs.usage(str(me.id))
        service.forget(me)
        assert blob_files(tmp_path / "data") == set() and service.blobs.usage(str(me.id)) == 0
    finally:
        service.close()


# -- Telegram (the fake Bot API): a .glb document → the same job ---------------------------------
def test_telegram_glb_document_becomes_a_model_job(tmp_path, stylizer):
    import asyncio

    from test_telegram_bot import ADA, running_bot

    glb = cube_glb(tmp_path)

    async def scenario():
        async with running_bot(tmp_path, stylizer, model_max_textures=1) as bot:
            fake = bot.fake
            m = fake.mark()
            fake.document(ADA, glb, mime_type="application/octet-stream",
                          file_name="cube.glb", caption="wave")
            sent = await fake.reply("sendDocument", ADA["id"], after=m, timeout=120)
            data = sent.upload("document")
            assert data[:4] == b"glTF" and vertex_count(data) == 24
            assert np.abs(glb_texture(data) - glb_texture(glb)).mean() > 10
            assert sent.button("Stronger") and not [
                label for label, _ in sent.buttons() if "only" in label]  # no regions
            assert not [c for c in fake.calls[m:] if c.method == "sendPhoto"]
            job = bot.service.history(bot.service.user("telegram", ADA["id"]))[0]
            assert job.request.media == "model" and job.state is JobState.DONE
            # a model past the limits: the service's message, in the chat
            m = fake.mark()
            fake.document(ADA, cube_glb(tmp_path, textures=[noise(8, 8, 1), noise(8, 8, 2)]),
                          mime_type="model/gltf-binary", file_name="two.glb", caption="wave")
            said = await fake.reply("sendMessage", ADA["id"], after=m, timeout=30)
            assert "more than 1 texture" in said.text, said.text

    asyncio.run(asyncio.wait_for(scenario(), 240))


def test_discord_glb_attachment_becomes_a_model_job(tmp_path, stylizer):
    """/stylize with a .glb (announced as octet-stream, as Discord often does): the styled
    model comes back attached as stylejax.glb, not shown as an embed image; a model past the
    byte limit is refused from its announced size, before downloading."""
    from test_discord_bot import ALICE, _components, run, running_bot

    glb = cube_glb(tmp_path)

    async def scenario():
        async with running_bot(tmp_path, stylizer, model_max_bytes=len(glb) + 1000) as (
                fake, service):
            upload = fake.upload("cube.glb", glb, "application/octet-stream")
            sent = await fake.slash(ALICE, "stylize", image=upload, style="great-wave")
            msg = await fake.result_of(sent, timeout=120)
            (att,) = msg["attachments"]
            assert att["filename"] == "stylejax.glb"
            data = fake.file(att)
            assert data[:4] == b"glTF" and vertex_count(data) == 24
            assert np.abs(glb_texture(data) - glb_texture(glb)).mean() > 10
            assert "image" not in msg["embeds"][0]
            assert "area" not in _components(msg)  # no region buttons for a model
            job = service.history(service.user("discord", ALICE.id))[0]
            assert job.request.media == "model" and job.state is JobState.DONE

            big = fake.upload("big.glb", glb + b"\0" * 2000, "model/gltf-binary")
            sent = await fake.slash(ALICE, "stylize", image=big, style="great-wave")
            assert "MB" in await fake.ephemeral_text(sent)
            assert service.video_queue.pending_count() == 0

    run(scenario())


# -- the web page in Chromium ---------------------------------------------------------------------
def test_web_page_stylises_a_dropped_glb(server, tmp_path):
    from test_web_page import CHROMIUM, IMAGES, Tab

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing")
    from playwright.sync_api import sync_playwright

    glb = write_cube_glb(tmp_path / "cube.glb", size=128)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            with Tab(browser, server, viewport={"width": 1280, "height": 900},
                     locale="en-US") as tab:
                page = tab.page
                page.set_input_files("#photo", str(glb))
                page.wait_for_selector("#viewer-box[data-loaded=yes]", timeout=30_000)
                assert "press Stylize" in page.inner_text("#message")
                page.wait_for_timeout(800)
                before = _viewer_shot(page, tmp_path / "before.png")
                page.click("label[for=style-great-wave]")
                page.click("#go")
                page.wait_for_function(
                    """() => {
                        const s = document.getElementById("stage");
                        return s.dataset.state === "done" && s.dataset.busy !== "yes";
                    }""", timeout=180_000)
                assert tab.job_posts and page.is_hidden("#compare")
                page.wait_for_selector("#viewer-box[data-loaded=yes]", timeout=30_000)
                assert page.evaluate("document.getElementById('viewer').src").startswith(
                    "blob:")
                assert page.get_attribute("#download", "download").endswith(".glb")
                page.wait_for_timeout(800)
                after = _viewer_shot(page, tmp_path / "after.png")
                assert np.abs(after - before).mean() > 3  # the styled texture shows
                page.screenshot(path=str(IMAGES / "web_3d_styled.png"))  # docs/3d.md
                assert not page.is_visible("#message") or \
                    "error" not in (page.get_attribute("#message", "class") or "")
                assert not tab.js_errors, tab.js_errors
        finally:
            browser.close()


def _viewer_shot(page, path: Path) -> np.ndarray:
    """A screenshot of the viewer (kept at `path`), checked not to be blank: many pixels
    unlike the background, in many colours."""
    page.locator("#viewer").screenshot(path=str(path))
    shot = np.asarray(Image.open(path).convert("RGB"), np.int16)
    differs = np.abs(shot - shot[4:12, 4:12].reshape(-1, 3).mean(0)).sum(-1) > 40
    assert differs.mean() > 0.05, f"a blank viewer: {differs.mean():.3f} of it differs"
    assert len({tuple(c) for c in (shot[differs] // 32).tolist()}) > 12
    return shot.astype(np.float32)
