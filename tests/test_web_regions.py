"""The web page's region choice, its preview overlay, the brush and the 3D viewer, in Debian's
Chromium against a real `python -m bots.serve serve` (as tests/test_web_page.py).

Writes docs/images/web_regions.png and docs/images/web_3d.png (docs/web.md).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from test_web_page import IMAGES, Tab, browser, server  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]
PERSON = ROOT.parent / "shared" / "data" / "content" / "people_kphotoalbum_anne_helene.jpg"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

# a listener for CSP refusals, in every page before its own scripts run
CSP_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}`));
"""


@pytest.fixture(scope="module")
def person_photo(tmp_path_factory) -> Path:
    if not PERSON.exists():
        pytest.skip(f"{PERSON} is missing (the shared photo set)")
    im = Image.open(PERSON).convert("RGB")
    im.thumbnail((480, 480))
    path = tmp_path_factory.mktemp("photos") / "anne_helene.jpg"
    im.save(path, quality=90)
    return path


def _form_fields(request) -> dict[str, bytes]:
    """A multipart body's fields by name (the last of each), as bytes."""
    boundary = re.search(r"boundary=(.+)", request.headers["content-type"]).group(1).strip('"')
    fields = {}
    for part in request.post_data_buffer.split(b"--" + boundary.encode()):
        head, sep, body = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]+)"', head)
        if sep and name:
            fields[name.group(1).decode()] = body[:-2] if body.endswith(b"\r\n") else body
    return fields


def _overlay_alpha(page) -> np.ndarray:
    """The overlay canvas's alpha channel (the mask), H×W uint8."""
    w, h, data = page.evaluate("""() => {
        const c = document.getElementById("region-overlay");
        const d = c.getContext("2d", {willReadFrequently: true})
                   .getImageData(0, 0, c.width, c.height).data;
        const a = [];
        for (let i = 3; i < d.length; i += 4) a.push(d[i]);
        return [c.width, c.height, a];
    }""")
    return np.asarray(data, np.uint8).reshape(h, w)


def test_preview_endpoint_answers_a_mask(server, person_photo):  # noqa: F811
    api = server.base + "/api/v1/regions/preview"
    photo = person_photo.read_bytes()
    resp = httpx.post(api, files={"image": ("p.jpg", photo)}, data={"region": "person"},
                      timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    assert resp.headers["x-region"] == "person" and resp.headers["cache-control"] == "no-store"
    mask = np.asarray(Image.open(io.BytesIO(resp.content)))
    assert mask.ndim == 2 and max(mask.shape) <= 512
    w, h = Image.open(person_photo).size
    assert abs(mask.shape[1] / mask.shape[0] - w / h) < 0.02
    coverage = float(resp.headers["x-region-coverage"])
    assert 0.1 < coverage < 0.9 and abs(mask.mean() / 255 - coverage) < 0.01
    faces = httpx.post(api, files={"image": ("p.jpg", photo)}, data={"region": "faces"},
                       timeout=60)
    assert faces.status_code == 200 and faces.headers["x-region"] == "face"
    assert 0 < float(faces.headers["x-region-coverage"]) < coverage
    bad = httpx.post(api, files={"image": ("p.jpg", photo)}, data={"region": "hat"})
    assert bad.status_code == 422 and "hat" in bad.json()["error"]
    text = httpx.post(api, files={"image": ("p.jpg", b"not a picture" * 20)},
                      data={"region": "person"})
    assert text.status_code == 400 and "image" in text.json()["error"]
    assert httpx.post(api, data={"region": "person"}).status_code == 422


def test_region_choice_overlay_brush_and_fields(server, browser, person_photo):  # noqa: F811
    with Tab(browser, server, viewport={"width": 1280, "height": 900}, locale="en-US",
             init_script=CSP_WATCH) as tab:
        page = tab.page
        posts: list[dict[str, bytes]] = []

        def intercept(route, request):  # record the job's fields; the job itself is not run
            posts.append(_form_fields(request))
            route.fulfill(status=503, content_type="application/json",
                          body='{"error": "intercepted by the test"}')

        page.route("**/api/v1/jobs", intercept)
        page.set_input_files("#photo", str(person_photo))
        assert page.is_checked("#where-everywhere") and not page.is_visible("#brush-tools")
        assert not page.is_visible("#region-overlay")
        page.click("#go")
        page.wait_for_function("() => document.getElementById('message').textContent"
                               ".includes('intercepted')", timeout=10_000)
        assert "regions" not in posts[-1] and "keep" not in posts[-1] and "mask" not in posts[-1]

        # person only: the overlay shows the server's person mask over the photo
        page.click("label[for=where-person]")
        page.wait_for_selector("#stage[data-region=shown]", timeout=30_000)
        assert page.is_visible("#region-overlay") and page.is_visible("#brush-tools")
        alpha = _overlay_alpha(page)
        assert max(alpha.shape) <= 512
        photo = np.asarray(Image.open(person_photo).convert("RGB"))
        assert abs(alpha.shape[1] / alpha.shape[0] - photo.shape[1] / photo.shape[0]) < 0.02
        assert 0.1 < (alpha > 127).mean() < 0.9, (alpha > 127).mean()
        box = page.locator("#region-overlay").bounding_box()
        photo_box = page.locator("#before").bounding_box()
        assert box == photo_box  # drawn over the photo, same place, same size
        assert "Tinted" in page.inner_text("#region-status")
        page.click("#go")
        page.wait_for_timeout(300)
        assert posts[-1]["regions"] == b"person" and "mask" not in posts[-1]

        # keep faces: keep=faces
        page.click("label[for=where-keep-faces]")
        page.wait_for_selector("#stage[data-region=shown]", timeout=30_000)
        faces = _overlay_alpha(page)
        assert 0 < (faces > 127).mean() < (alpha > 127).mean()
        page.click("#go")
        page.wait_for_timeout(300)
        assert posts[-1]["keep"] == b"faces" and "regions" not in posts[-1]

        # back to person; the brush paints a corner (background: not in the mask) and erases
        page.click("label[for=where-person]")
        page.wait_for_selector("#stage[data-region=shown]", timeout=30_000)
        before = _overlay_alpha(page)
        scale = before.shape[1] / box["width"]
        corner = (box["x"] + 30, box["y"] + 30)
        cy, cx = int(30 * scale), int(30 * scale)
        assert before[cy, cx] < 30, "the corner is background"
        page.mouse.move(*corner)
        page.mouse.down()
        page.mouse.move(corner[0] + 60, corner[1] + 10, steps=6)
        page.mouse.up()
        painted = _overlay_alpha(page)
        assert painted[cy, cx] == 255 and painted[cy, int((30 + 60) * scale)] == 255
        ys, xs = np.nonzero(before > 200)  # a point well inside the person: erase it
        py, px = int(np.median(ys)), int(np.median(xs))
        page.click("label[for=brush-erase]")
        page.mouse.click(box["x"] + px / scale, box["y"] + py / scale)
        erased = _overlay_alpha(page)
        assert erased[py, px] == 0 and before[py, px] > 200
        changed = np.abs(erased.astype(int) - before.astype(int)) > 50
        assert 0.002 < changed.mean() < 0.2
        assert "painted" in page.inner_text("#region-status")
        page.click("#go")
        page.wait_for_timeout(500)
        fields = posts[-1]
        assert fields["regions"] == b"mask"
        sent = np.asarray(Image.open(io.BytesIO(fields["mask"])).convert("L"))
        assert sent.shape == erased.shape
        assert sent[cy, cx] == 255 and sent[py, px] == 0
        assert np.abs(sent.astype(int) - erased.astype(int)).max() <= 1

        # a second region preview for the same photo and choice is not asked for again
        previews: list[str] = []
        page.on("request", lambda r: previews.append(r.url) if "/regions/" in r.url else None)
        page.click("#region-show")  # hide, then show: same mask, painting kept
        assert not page.is_visible("#region-overlay")
        page.click("#region-show")
        assert page.is_visible("#region-overlay") and previews == []
        assert _overlay_alpha(page)[cy, cx] == 255

        page.click("label[for=brush-paint]")
        page.evaluate("window.scrollTo(0, 0); document.activeElement.blur()")
        page.mouse.move(1270, 890)
        page.evaluate("document.getElementById('message').hidden = true")
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMAGES / "web_regions.png"), full_page=True)
        assert page.evaluate("window.__csp") == []
        assert not tab.js_errors, tab.js_errors


def test_3d_viewer_shows_a_glb(server, browser, tmp_path):  # noqa: F811
    pytest.importorskip("pygltflib")
    from meshes import write_cube_glb

    glb = write_cube_glb(tmp_path / "cube.glb", size=128)
    with Tab(browser, server, viewport={"width": 1280, "height": 900}, locale="en-US",
             init_script=CSP_WATCH) as tab:
        page = tab.page
        scripts: list[str] = []
        page.on("request", lambda r: scripts.append(r.url) if "vendor" in r.url else None)
        assert not page.is_visible("#viewer-box")
        assert scripts == []  # the viewer is loaded on first use only
        page.set_input_files("#photo", str(glb))
        page.wait_for_selector("#viewer-box[data-loaded=yes]", timeout=30_000)
        assert scripts == [server.base + "/static/vendor/model-viewer.min.js"]
        assert "3D model" in page.inner_text("#message")
        assert page.is_disabled("#where-person") and not page.is_visible("#compare")
        assert page.evaluate("document.getElementById('viewer').loaded") is True
        # the rendered model: plenty of pixels unlike the plain background, in many colours
        page.wait_for_timeout(800)
        shot = np.asarray(Image.open(io.BytesIO(
            page.locator("#viewer").screenshot())).convert("RGB"), np.int16)
        corner = shot[4, 4]
        differs = np.abs(shot - shot[4:12, 4:12].reshape(-1, 3).mean(0)).sum(-1) > 40
        assert differs.mean() > 0.05, f"a blank viewer: {differs.mean():.3f} differs ({corner})"
        colours = {tuple(c) for c in (shot[differs] // 32).tolist()}
        assert len(colours) > 12, len(colours)  # the texture shows, not one flat colour
        # the message says what Stylize does with it (tests/test_mesh_service.py runs the job)
        assert "press Stylize" in page.inner_text("#message") and tab.job_posts == []
        page.evaluate("window.scrollTo(0, 0); document.activeElement.blur()")
        page.screenshot(path=str(IMAGES / "web_3d.png"), full_page=True)
        # a photo afterwards: the viewer goes, the compare comes back
        page.set_input_files("#photo", str(ROOT / "stylejax" / "assets" / "sample.jpg"))
        assert not page.is_visible("#viewer-box") and page.is_visible("#compare")
        assert page.is_enabled("#where-person")
        assert page.evaluate("window.__csp") == []
        assert not tab.js_errors, tab.js_errors


def test_csp_allows_the_viewers_own_style_by_hash(server):  # noqa: F811
    """The CSP's style hash is the one <style> in the vendored bundle: a new bundle with other
    styles fails here, not silently in a browser."""
    import base64
    import hashlib

    bundle = (ROOT / "bots" / "web" / "vendor" / "model-viewer.min.js").read_text()
    styles = re.findall(r"<style>(.*?)</style>", bundle, re.S)
    assert len(styles) == 1
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    csp = httpx.get(server.base + "/").headers["content-security-policy"]
    assert f"style-src 'self' 'sha256-{digest}'" in csp
    assert "connect-src 'self' blob:" in csp and "script-src 'self' 'wasm-unsafe-eval';" in csp
    assert "unsafe-inline" not in csp and "'unsafe-eval'" not in csp
    licence = (ROOT / "bots" / "web" / "vendor" / "model-viewer.LICENSE.txt").read_text()
    assert "Apache License" in licence and "MIT" in licence and "BSD" in licence


def test_region_choice_reaches_the_job(server, browser, person_photo):  # noqa: F811
    """End to end, real jobs: the job's JSON says what the page chose (needs the API's region
    fields, bots/http_api.py `submit`; skipped in a tree without them)."""
    from test_web_page import _wait_result

    with Tab(browser, server, viewport={"width": 1280, "height": 900}, locale="en-US") as tab:
        page = tab.page
        page.set_input_files("#photo", str(person_photo))
        page.click("label[for=where-person]")
        page.wait_for_selector("#stage[data-region=shown]", timeout=30_000)
        page.click("#go")
        job = _wait_result(page)
        info = httpx.get(f"{server.base}/api/v1/jobs/{job}").json()
        if "regions" not in info:
            pytest.skip("this server's jobs take no region fields yet")
        assert info["regions"]["entries"] == [{"region": "person"}]
        assert not page.is_visible("#region-overlay")  # the result shows, not the region
        page.click("label[for=where-keep-faces]")  # a live re-run with the new choice
        second = _wait_result(page, previous_job=job)
        info = httpx.get(f"{server.base}/api/v1/jobs/{second}").json()
        assert info["regions"]["keep"] == ["face"]
        assert [e["region"] for e in info["regions"]["entries"]] == ["everywhere"]
        assert len(tab.job_posts) == 2
        assert not tab.js_errors, tab.js_errors


def test_painted_mask_gives_a_result_that_follows_it(server, browser, person_photo):  # noqa: F811
    """End to end, a real job: *person only*, a stroke painted in the background; the job
    runs with the painted mask (`regions=mask` + the `mask` PNG, stored by the service) and
    the result is styled where the sent mask is white and is the photo where it is black."""
    import cv2
    from test_web_page import _wait_result

    from stylejax.imageio import decode_image

    with Tab(browser, server, viewport={"width": 1280, "height": 900}, locale="en-US",
             init_script=CSP_WATCH) as tab:
        page = tab.page
        posts: list[dict[str, bytes]] = []

        def record(route, request):  # the fields the page sends; the job then runs
            posts.append(_form_fields(request))
            route.continue_()

        page.route("**/api/v1/jobs", record)
        page.set_input_files("#photo", str(person_photo))
        page.click("label[for=where-person]")
        page.wait_for_selector("#stage[data-region=shown]", timeout=30_000)
        box = page.locator("#region-overlay").bounding_box()
        start = (box["x"] + 20, box["y"] + 20)  # the top left corner: background
        page.mouse.move(*start)
        page.mouse.down()
        page.mouse.move(start[0] + 120, start[1] + 40, steps=8)
        page.mouse.up()
        assert "painted" in page.inner_text("#region-status")
        page.click("#go")
        job = _wait_result(page)
        info = httpx.get(f"{server.base}/api/v1/jobs/{job}").json()
        assert info["state"] == "done" and info["regions"]["entries"] == [{"region": "mask"}]
        sent = posts[-1]
        assert sent["regions"] == b"mask"
        mask = np.asarray(Image.open(io.BytesIO(sent["mask"])).convert("L"))
        result = httpx.get(f"{server.base}/api/v1/jobs/{job}/result")
        assert result.status_code == 200, result.text
        out = np.asarray(Image.open(io.BytesIO(result.content)).convert("RGB"), np.float32)
        photo = decode_image(person_photo.read_bytes()).rgb.astype(np.float32)
        assert out.shape == photo.shape
        h, w = out.shape[:2]
        big = cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR)
        kernel = np.ones((7, 7), np.uint8)
        inside = cv2.erode(big, kernel) == 255
        outside = cv2.dilate(big, kernel) == 0
        assert inside.mean() > 0.1 and outside.mean() > 0.1
        diff = np.abs(out - photo).max(axis=-1)
        assert np.percentile(diff[outside], 99) <= 2.0, np.percentile(diff[outside], 99)
        assert diff[inside].mean() > 10, diff[inside].mean()
        # the painted stroke itself (background in the automatic mask) got the style
        scale = w / box["width"]
        stroke = diff[int(25 * scale):int(45 * scale), int(40 * scale):int(100 * scale)]
        assert stroke.mean() > 10, stroke.mean()
        assert page.evaluate("window.__csp") == []
        assert not tab.js_errors, tab.js_errors
