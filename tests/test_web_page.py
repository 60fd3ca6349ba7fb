"""The web page end to end: `python -m bots.serve serve` as a real process, Debian's chromium
driven by Playwright (no browser download: `executable_path`).

The browser tests also write the screenshots used in docs/web.md (docs/images/web_*.png).
"""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from photos import photo_png
from PIL import Image
from service_process import MAX_UPLOAD, Server

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SAMPLE = ROOT / "stylejax" / "assets" / "sample.jpg"  # 640×360, 38 kB
STYLE_PICTURE = ROOT / "stylejax" / "assets" / "styles" / "great_wave.jpg"
IMAGES = ROOT / "docs" / "images"
JOB_TIMEOUT_MS = 60_000

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("web"), 1, STYLEJAX_MAX_SIDE="1024",
                 STYLEJAX_RATE_PER_MINUTE="600", STYLEJAX_RATE_BURST="30",
                 STYLEJAX_MAX_ACTIVE_JOBS="10")
    yield srv
    code = srv.stop()
    assert code == 0, srv.log()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        msg = f"{CHROMIUM} is missing (Debian package 'chromium'); no browser to drive"
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(msg, pytrace=False)  # CI installs it (scripts/test.sh): never skip there
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Tab:
    """A fresh browser context on the web page, fully initialised (config and styles loaded),
    recording uncaught script errors and job submissions."""

    def __init__(self, browser, server: Server, init_script: str | None = None, **context):
        self.ctx = browser.new_context(**context)
        if init_script:
            self.ctx.add_init_script(init_script)
        self.page = self.ctx.new_page()
        self.js_errors: list[str] = []
        self.job_posts: list[str] = []
        self.page.on("pageerror", lambda err: self.js_errors.append(str(err)))
        self.page.on("request", self._request)
        self.page.goto(server.base + "/")
        self.page.wait_for_selector("body[data-ready=yes]", timeout=15_000)

    def _request(self, request) -> None:
        if request.method == "POST" and request.url.endswith("/api/v1/jobs"):
            self.job_posts.append(request.url)

    def __enter__(self) -> Tab:
        return self

    def __exit__(self, *exc) -> None:
        self.ctx.close()


def _wait_result(page, previous_job: str | None = None) -> str:
    """Wait (bounded) until the page shows a finished result (another job's than `previous`)."""
    page.wait_for_function(
        """prev => {
            const s = document.getElementById("stage");
            return s.dataset.state === "done" && s.dataset.busy !== "yes"
                && s.dataset.jobId !== prev && document.getElementById("after").complete;
        }""", arg=previous_job or "", timeout=JOB_TIMEOUT_MS)
    return page.get_attribute("#stage", "data-job-id")


def _no_horizontal_overflow(page) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"page is wider than the screen: {widths}"


def test_page_assets_and_config_are_served(server):
    page = httpx.get(server.base + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert '<script type="module" src="/static/app.js">' in html
    assets = set(re.findall(r'(?:src|href)="(/static/[^"]+)"', html))
    assert {"/static/app.js", "/static/style.css", "/static/icon.svg"} <= assets
    types = {".js": "javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for asset in assets:
        resp = httpx.get(server.base + asset)
        assert resp.status_code == 200, asset
        assert types[Path(asset).suffix] in resp.headers["content-type"], asset
    config = httpx.get(server.base + "/api/v1/config").json()
    assert config == {"max_upload_bytes": MAX_UPLOAD, "api_key_required": False,
                      "max_video_bytes": 100_000_000, "max_video_seconds": 60.0,
                      "max_model_bytes": 50_000_000, "instant_custom_style": True}
    assert "media-src 'self' blob:" in page.headers["content-security-policy"]
    missing = httpx.get(server.base + "/static/nope.js")
    assert missing.status_code == 404 and missing.json()["error"]
    outside = httpx.get(server.base + "/static/..%2Fhttp_api.py")
    assert outside.status_code == 404 and "create_app" not in outside.text


def test_stylize_move_strength_and_download_desktop(server, browser, tmp_path):
    with Tab(browser, server, viewport={"width": 1280, "height": 800}, locale="en-US",
             accept_downloads=True) as tab:
        page = tab.page
        # the gallery: thumbnails from the API, English names, every picture with an alt text
        radios = page.locator('#gallery input[name="style"]')
        assert radios.count() >= 8
        page.wait_for_function("() => [...document.querySelectorAll('#gallery img')]"
                               ".every(i => i.complete && i.naturalWidth > 0)", timeout=10_000)
        assert "Starry Night" in page.inner_text("#gallery")
        assert page.evaluate("[...document.images].every(i => i.hasAttribute('alt'))")
        assert page.get_attribute("#status", "aria-live") == "polite"

        page.set_input_files("#photo", str(SAMPLE))
        assert "sample.jpg" in page.inner_text("#photo-name")
        # keyboard: arrow keys move through the style radios
        page.focus("#style-starry-night")
        page.keyboard.press("ArrowRight")
        assert page.is_checked("#style-great-wave")
        page.click("#go")
        first = _wait_result(page)
        assert "The Great Wave" in page.inner_text("#status")
        assert page.is_visible("#download") and page.is_visible("#after")

        # move the strength: one debounced re-run with the new value, no button press
        page.focus("#strength")
        for _ in range(4):
            page.keyboard.press("ArrowRight")
        assert page.inner_text("#strength-value") == "100%"
        second = _wait_result(page, previous_job=first)
        assert second != first and "100%" in page.inner_text("#status")
        assert len(tab.job_posts) == 2, tab.job_posts

        # the stroke size: medium by default; "large" re-runs by itself, sent with the job
        assert page.is_checked("#stroke-medium") and "medium strokes" in page.inner_text("#status")
        page.click("label[for=stroke-large]")
        third = _wait_result(page, previous_job=second)
        assert len(tab.job_posts) == 3 and "large strokes" in page.inner_text("#status")
        api = f"{server.base}/api/v1/jobs"
        assert [httpx.get(f"{api}/{j}").json()["stroke"] for j in (second, third)] == [1.0, 1.6]
        medium, large = (np.asarray(Image.open(io.BytesIO(httpx.get(f"{api}/{j}/result").content))
                                    .convert("RGB"), np.float32) for j in (second, third))
        assert np.abs(medium - large).mean() > 2  # a different picture, not just a label

        # the before/after split is a keyboard-usable slider
        page.focus("#split")
        page.keyboard.press("Home")
        assert page.evaluate("getComputedStyle(document.getElementById('compare'))"
                             ".getPropertyValue('--pos').trim()") == "0%"
        page.keyboard.press("End")
        page.fill("#split", "50")
        page.dispatch_event("#split", "input")

        with page.expect_download() as info:
            page.click("#download")
        download = info.value
        assert download.suggested_filename == "stylejax-great-wave-100-large.png"
        data = Path(download.path()).read_bytes()
        out = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)
        src = np.asarray(Image.open(SAMPLE).convert("RGB"), np.float32)
        assert out.shape == src.shape == (360, 640, 3)
        assert np.abs(out - src).mean() > 8

        _no_horizontal_overflow(page)
        page.mouse.move(1270, 790)
        page.evaluate("window.scrollTo(0, 0)")
        page.keyboard.press("Escape")
        page.evaluate("document.activeElement.blur()")
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMAGES / "web_desktop.png"))
        assert not tab.js_errors, tab.js_errors


def test_phone_layout_custom_controls_and_result(server, browser):
    with Tab(browser, server, viewport={"width": 390, "height": 844}, is_mobile=True,
             has_touch=True, locale="en-US") as tab:
        page = tab.page
        _no_horizontal_overflow(page)
        assert page.is_visible("#camera-button")  # a phone gets the camera shortcut
        assert page.get_attribute("#camera", "capture") == "environment"
        page.set_input_files("#photo", str(SAMPLE))
        page.click("label[for=style-starry-night]")
        page.check("#keep-colors")
        page.click("#go")
        _wait_result(page)
        box = page.locator("#compare").bounding_box()
        assert box and box["width"] > 300 and box["x"] >= 0 and box["x"] + box["width"] <= 390
        _no_horizontal_overflow(page)
        # the custom style option reveals its picker (not run: it is the slow path)
        page.click("label[for=style-custom]")
        assert page.is_visible("label[for=style-image]")
        page.click("label[for=style-starry-night]")
        assert not page.is_visible("label[for=style-image]")
        page.wait_for_timeout(1200)  # past the re-run delay: same choices as shown, no new job
        assert len(tab.job_posts) == 1 and page.get_attribute("#stage", "data-busy") == "no"
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(IMAGES / "web_phone.png"), full_page=True)
        assert not tab.js_errors, tab.js_errors


def test_chinese_browser_without_event_source_polls(server, browser, tmp_path):
    """Names and texts in the browser's language; without EventSource the page polls."""
    with Tab(browser, server, viewport={"width": 1280, "height": 800}, locale="zh-CN",
             extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9"}) as tab:
        page = tab.page
        assert page.get_attribute("html", "lang") == "zh-CN"
        assert "星月夜" in page.inner_text("#gallery") and page.inner_text("#go") == "生成"
    with Tab(browser, server, viewport={"width": 1280, "height": 800}, locale="zh-CN",
             init_script="delete window.EventSource;") as tab:
        page = tab.page
        events: list[str] = []
        page.on("request", lambda r: events.append(r.url) if r.url.endswith("/events") else None)
        page.set_input_files("#photo", str(SAMPLE))
        page.click("label[for=style-kandinsky]")
        page.click("#go")
        _wait_result(page)
        assert page.inner_text("#status").startswith("完成") and events == []
        assert page.get_attribute("#after", "alt") == "你的照片，风格：构成第八号（康定斯基）"
        # another photo after a result: re-run by itself, for the new photo
        first = page.get_attribute("#stage", "data-job-id")
        other = tmp_path / "gradient.png"
        other.write_bytes(photo_png(150, 200, seed=7))
        page.set_input_files("#photo", str(other))
        _wait_result(page, previous_job=first)
        size = page.evaluate("(i => [i.naturalWidth, i.naturalHeight])(document.images.after)")
        assert size == [200, 150]
        assert len(tab.job_posts) == 2
        assert not tab.js_errors, tab.js_errors


def test_custom_style_picture_progress_and_cancel(server, browser):
    with Tab(browser, server, viewport={"width": 1280, "height": 800}, locale="en-US") as tab:
        page = tab.page
        page.set_input_files("#photo", str(SAMPLE))
        page.click("label[for=style-custom]")
        page.click("#go")  # no style picture yet
        assert "style picture" in page.inner_text("#message")
        assert tab.job_posts == []
        # the server has the any-style model: the page promises seconds, not half a minute
        assert "in seconds" in page.inner_text("[data-i18n=custom_hint_instant]")
        page.set_input_files("#style-image", str(STYLE_PICTURE))
        assert page.is_checked("#style-custom")
        assert "great_wave.jpg" in page.inner_text("#style-image-name")
        t0 = time.monotonic()
        page.click("#go")
        _wait_result(page)
        assert time.monotonic() - t0 < 20  # the model's one pass, not the 30-s optimisation
        assert not page.is_visible("#cancel")
        # "Refine" optimises on top of it: progress, and Cancel stops it
        page.check("#refine")
        page.click("#go")
        assert page.is_visible("#progress") and page.is_visible("#cancel")
        page.wait_for_function("() => document.getElementById('status').textContent"
                               ".startsWith('Learning your style')", timeout=JOB_TIMEOUT_MS)
        job_id = page.get_attribute("#stage", "data-job-id")
        page.click("#cancel")
        assert page.inner_text("#status") == "Cancelled."
        assert not page.is_visible("#progress")
        deadline = time.monotonic() + 10
        # Cancel sends DELETE, which removes the job and its pictures (docs/service.md)
        while httpx.get(f"{server.base}/api/v1/jobs/{job_id}").status_code != 404:
            assert time.monotonic() < deadline, "the page did not stop the job on the server"
            time.sleep(0.2)
        assert not tab.js_errors, tab.js_errors


def test_bad_files_give_a_clear_message(server, browser, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello, not a picture\n" * 5)
    big = tmp_path / "big.jpg"
    big.write_bytes(os.urandom(MAX_UPLOAD + 50_000))
    fake = tmp_path / "holiday.png"  # says PNG, is text: only the server can tell
    fake.write_text("hello, not a picture either\n" * 5)

    with Tab(browser, server, viewport={"width": 1280, "height": 800}, locale="en-US") as tab:
        page = tab.page
        message = page.locator("#message")
        assert message.get_attribute("role") == "alert"
        page.set_input_files("#photo", str(notes))
        assert message.is_visible() and "not a picture" in message.inner_text()
        page.set_input_files("#photo", str(big))
        text = message.inner_text()
        assert "big.jpg" in text and "300 kB" in text and "limit" in text
        assert "300 kB" in page.inner_text("#photo-hint")  # the limit the page learnt
        assert tab.job_posts == []  # refused before any upload

        page.click("#go")
        assert "choose a photo" in message.inner_text().lower()

        # dropped on the drop zone: the same checks
        page.evaluate("""() => {
            const dt = new DataTransfer();
            dt.items.add(new File(["not a picture"], "dropped.txt", {type: "text/plain"}));
            document.getElementById("dropzone").dispatchEvent(
                new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""")
        assert "dropped.txt" in message.inner_text() and "not a picture" in message.inner_text()
        assert tab.job_posts == []

        page.set_input_files("#photo", str(fake))
        page.click("#go")
        page.wait_for_function("() => document.getElementById('message').textContent"
                               ".includes('not an image')", timeout=10_000)
        server_error = httpx.post(server.base + "/api/v1/jobs",
                                  files={"image": ("holiday.png", fake.read_bytes())},
                                  data={"style": "wave"}).json()["error"]
        assert message.inner_text() == server_error  # the server's own words
        assert len(tab.job_posts) == 1
        assert not page.is_visible("#download")
        assert not tab.js_errors, tab.js_errors


def test_a_video_plays_its_painted_version(server, browser, tmp_path):
    """A clip with sound: previewed in <video>, progress while it runs, the result (mp4) in
    the same <video>, downloadable as .mp4, decoded: frames, duration, size, sound."""
    from test_video_service import assert_clip_result, clip_bytes

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(clip_bytes(24))
    with Tab(browser, server, viewport={"width": 1280, "height": 800}, locale="en-US",
             accept_downloads=True) as tab:
        page = tab.page
        page.set_input_files("#photo", str(clip))
        assert page.is_visible("#result-video") and not page.is_visible("#compare")
        assert "frame by frame" in page.inner_text("#message")
        page.evaluate("document.getElementById('style-starry-night').click()")
        page.click("label[for=stroke-large]")
        assert page.is_checked("#style-starry-night") and page.is_checked("#stroke-large")
        page.click("#go")
        page.wait_for_function(
            """() => {
                const s = document.getElementById("stage");
                return s.dataset.state === "done" && s.dataset.busy !== "yes";
            }""", timeout=JOB_TIMEOUT_MS * 2)
        src = page.get_attribute("#result-video", "src")
        assert src and src.startswith("blob:")
        assert page.is_visible("#result-video") and not page.is_visible("#compare")
        page.wait_for_function("() => document.getElementById('result-video').readyState >= 1",
                               timeout=10_000)
        with page.expect_download() as download:
            page.click("#download")
        assert download.value.suggested_filename.endswith(".mp4")
        assert_clip_result(Path(download.value.path()).read_bytes(), frames=24)
        assert len(tab.job_posts) == 1
        assert not tab.js_errors, tab.js_errors
