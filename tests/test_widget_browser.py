"""The notebook widget's region controls in a real browser: Voilà serves a small notebook that
shows `StylizeWidget` on a photo of a person (a real kernel, the widgets' and ipycanvas's
JavaScript from the installed packages), Debian's chromium driven by Playwright picks
"person only", waits for the tinted overlay on the ipycanvas canvas and paints a stroke with the
mouse; the canvas pixels before and after show the tint over the person and the stroke exactly
where the mouse went (page coordinates → canvas pixels, as a user's drag arrives).

Also writes docs/images/widget_regions.png (used in docs/regions.md).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nbformat
import numpy as np
import pytest
from PIL import Image
from service_process import free_port
from test_web_page import IMAGES, ROOT, browser  # noqa: F401  (the browser fixture)
from test_widget import PERSON_PHOTO

from notebooks.widget import _TINT, _TINT_ALPHA, WHERE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SIDE = 320              # the photo's long side, also the widget's display size: canvas = photo
STARTUP_S = 60          # Voilà answering HTTP
RENDER_MS = 120_000     # kernel start, imports, the widget built (first run on a busy machine)
OVERLAY_MS = 60_000     # the segmenter's first run and the tint on the canvas
TINTED = _TINT_ALPHA - 0.1  # a pixel of the region moved this far towards the accent colour

NOTEBOOK = f"""\
import numpy as np
from PIL import Image
from notebooks import widget
photo = Image.open({str(PERSON_PHOTO)!r}).convert("RGB")
photo.thumbnail(({SIDE}, {SIDE}), Image.LANCZOS)
w = widget(np.asarray(photo), display_size={SIDE}, max_size={SIDE}, debounce=0.05)
w"""


def _photo() -> np.ndarray:
    """The photo exactly as the notebook gives it to the widget."""
    im = Image.open(PERSON_PHOTO).convert("RGB")
    im.thumbnail((SIDE, SIDE), Image.LANCZOS)
    return np.asarray(im)


@pytest.fixture(scope="module")
def voila(tmp_path_factory):
    """`voila` serving the notebook on a free port of 127.0.0.1; stopped at teardown."""
    if not PERSON_PHOTO.is_file():
        pytest.skip("shared photos not present")
    exe = shutil.which("voila", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("voila is not installed (the 'test' extra)")
    tmp = tmp_path_factory.mktemp("voila")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, tmp / "regions.ipynb")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp / "config")}
    log = open(tmp / "voila.log", "wb")  # noqa: SIM115  (closed at teardown)
    proc = subprocess.Popen(
        [exe, "regions.ipynb", "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
         "--Voila.port_retries=0", "--show_tracebacks=True"],
        cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"voila exited ({proc.returncode}):\n{_log(tmp)}", pytrace=False)
            try:
                if httpx.get(base + "/api", timeout=2).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"voila did not answer in {STARTUP_S} s:\n{_log(tmp)}",
                            pytrace=False)
            time.sleep(0.2)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)  # its own session: the kernel goes too
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(5)
        log.close()


def _log(tmp: Path) -> str:
    return (tmp / "voila.log").read_text(errors="replace")[-4000:]


def _canvas_pixels(canvas) -> np.ndarray:
    """The canvas as shown, H×W×3 at its own pixel size (a screenshot of the element)."""
    shot = Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")
    size = canvas.evaluate("c => [c.width, c.height]")
    if shot.size != tuple(size):
        shot = shot.resize(tuple(size), Image.BILINEAR)
    return np.asarray(shot, np.float32)


def _settled_box(canvas, still_s: float = 1.0, timeout_s: float = 30.0) -> dict:
    """The canvas's place on the page once it has stopped moving. A status line or the brush
    tools can still appear above it on a loaded machine; a drag aimed at where the canvas was
    then leaves it half-way (mouse-out ends the stroke) or misses it."""
    deadline = time.monotonic() + timeout_s
    box, since = canvas.bounding_box(), time.monotonic()
    while time.monotonic() - since < still_s and time.monotonic() < deadline:
        time.sleep(0.2)
        now = canvas.bounding_box()
        if now != box:
            box, since = now, time.monotonic()
    return box


def _tint(shown: np.ndarray, photo: np.ndarray) -> np.ndarray:
    """How far each pixel moved from the photo towards the accent colour (0 … 0.55)."""
    direction = _TINT - photo
    return ((shown - photo) * direction).sum(-1) / np.maximum((direction ** 2).sum(-1), 1.0)


def test_person_overlay_and_brush_stroke_in_the_browser(browser, voila):  # noqa: F811
    from stylejax import regions

    photo = _photo().astype(np.float32)
    h, w = photo.shape[:2]
    person = regions.person_mask(photo.astype(np.uint8))
    inside, outside = person > 0.99, person < 0.01
    assert inside.mean() > 0.05 and outside.mean() > 0.2, "the photo should show a person"

    ctx = browser.new_context(viewport={"width": 1100, "height": 1000}, device_scale_factor=1)
    try:
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(f"pageerror: {err}"))
        page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
        outside_requests: list[str] = []
        scripts: list[str] = []

        def offline(route) -> None:  # nothing outside the machine: as on a laptop offline
            outside_requests.append(route.request.url)
            route.fulfill(status=200, body="", content_type="text/css")

        page.route(lambda url: not url.startswith(voila), offline)
        page.on("request", lambda r: r.resource_type == "script" and scripts.append(r.url))

        t0 = time.monotonic()
        page.goto(voila + "/", timeout=RENDER_MS)
        where = page.get_by_label("Where", exact=True)
        where.wait_for(timeout=RENDER_MS)
        rendered_s = time.monotonic() - t0
        canvas = page.locator("canvas")
        assert canvas.count() == 1 and not canvas.is_visible()  # "everywhere": no overlay
        shown = ("s => s.selectedIndex < 0 ? '' "
                 ": s.options[s.selectedIndex].text.replace(/\\u00a0/g, ' ')")
        assert page.get_by_label("Elsewhere").evaluate(shown) == "(the photo)"
        assert page.get_by_label("Blend with").evaluate(shown) == "(none)"

        # the page and every script come from the local server (the packages' own files)
        assert all(u.startswith(voila) for u in scripts), scripts
        assert any("/labextensions/ipycanvas/" in u for u in scripts), scripts
        assert any("/labextensions/@jupyter-widgets/" in u for u in scripts), scripts
        assert all(u.endswith(".css") for u in outside_requests), outside_requests

        where.select_option(index=[r for _, r in WHERE].index("person"))
        page.wait_for_function(f"() => {{ const c = document.querySelector('canvas');"
                               f" return c.offsetWidth > 0 && c.width === {w}"
                               f" && c.height === {h}; }}", timeout=OVERLAY_MS)
        deadline = time.monotonic() + OVERLAY_MS / 1000
        while True:  # put_image_data arrives after the resize: wait for the tinted photo
            before = _canvas_pixels(canvas)
            tint = _tint(before, photo)
            if np.median(tint[inside]) > TINTED or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        overlay_s = time.monotonic() - t0 - rendered_s
        assert before.std() > 20, "the canvas is blank"
        assert np.median(tint[inside]) > TINTED, np.median(tint[inside])
        assert np.percentile(np.abs(tint[outside]), 90) < 0.08  # the background is the photo
        assert np.abs(before[outside] - photo[outside]).mean() < 4

        # the canvas shows its own pixels 1:1 (no CSS scaling in this layout)
        box = _settled_box(canvas)
        assert (round(box["width"]), round(box["height"])) == (w, h), box

        # a stroke across the background, on rows the person is not in
        rows = np.flatnonzero(outside[:, w // 8: w - w // 8].all(axis=1))
        assert rows.size, "no background row to paint across"
        y = int(rows[np.argmin(np.abs(rows - h // 5))])
        x0, x1 = w // 8, w - w // 8
        brush = 24  # the widget's default brush diameter (canvas pixels)

        def to_page(cx: float, cy: float) -> tuple[float, float]:
            """The page point over the centre of canvas pixel (cx, cy), wherever it is now."""
            return (box["x"] + (cx + 0.5) * box["width"] / w,
                    box["y"] + (cy + 0.5) * box["height"] / h)

        page.mouse.move(*to_page(x0, y))
        page.mouse.down()
        for cx in np.linspace(x0, x1, 12):
            page.mouse.move(*to_page(cx, y), steps=2)
        page.mouse.up()
        status = page.locator(".widget-label", has_text="painted mask")
        status.wait_for(timeout=OVERLAY_MS)

        yy, xx = np.mgrid[0:h, 0:w]
        dist = np.hypot(xx - np.clip(xx, x0, x1), yy - y)  # distance to the stroke segment
        on_stroke = (dist < brush / 2 - 3) & outside
        interior = np.zeros((h, w), bool)
        interior[3:-3, 3:-3] = True  # the canvas has the focus ring after the click
        far = (dist > brush / 2 + 6) & outside & interior
        assert on_stroke.sum() > 100
        # Wait for the whole stroke, end to end: on a loaded machine the canvas shows it in
        # pieces, and a half-drawn stroke has its centre in the wrong place.
        deadline = time.monotonic() + OVERLAY_MS / 1000
        while True:
            after = _canvas_pixels(canvas)
            painted = _tint(after, photo)
            covered = float(np.mean(painted[on_stroke] > TINTED))
            if covered > 0.9 or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert covered > 0.9, f"only {covered:.0%} of the stroke is where the mouse went"
        assert np.percentile(np.abs(painted[far]), 90) < 0.08  # and nowhere else
        assert np.median(painted[inside]) > TINTED  # the person still tinted
        changed = np.abs(after - before).max(-1) > 12
        assert changed[far].mean() < 0.01
        cy, cx = np.argwhere(changed & interior).mean(axis=0)  # the stroke's centre
        assert abs(cy - y) <= 2 and abs(cx - (x0 + x1) / 2) <= 3, (cx, cy)

        # the result: the full render of the painted region ("mask") appears in "After"
        page.locator(".widget-label", has_text="only where you painted").filter(
            has_text="Done").wait_for(timeout=OVERLAY_MS)
        result = page.locator(".widget-vbox", has_text="After").locator("img").last
        assert result.evaluate("img => img.complete && img.naturalWidth") == w
        shown_box = result.bounding_box()  # before and after side by side, at the same scale
        assert (round(shown_box["width"]), round(shown_box["height"])) == (w, h), shown_box
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.evaluate("document.activeElement && document.activeElement.blur()")
        page.locator(".widget-vbox").first.screenshot(path=str(IMAGES / "widget_regions.png"))

        # a narrow screen shrinks the canvas (max-width 100%): the mouse still lands right,
        # ipycanvas maps the page to canvas pixels; erase a gap into the stroke
        canvas.evaluate(f"c => {{ c.style.width = '{round(w * 0.75)}px'; }}")
        page.get_by_role("button", name="erase").click()
        box = _settled_box(canvas)
        assert abs(box["width"] - 0.75 * w) < 1.5 and abs(box["height"] - 0.75 * h) < 1.5, box
        gap = w // 3
        page.mouse.move(*to_page(gap, y - brush))
        page.mouse.down()
        page.mouse.move(*to_page(gap, y + brush), steps=8)
        page.mouse.up()
        erased = (np.abs(xx - gap) < brush / 2 - 3) & (np.abs(yy - y) < brush / 2 - 3)
        kept = on_stroke & (np.abs(xx - gap) > brush / 2 + 6)
        deadline = time.monotonic() + OVERLAY_MS / 1000
        while True:
            tint = _tint(_canvas_pixels(canvas), photo)
            if np.median(tint[erased]) < 0.08 or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert np.median(tint[erased]) < 0.08, "the eraser is not where the mouse went"
        assert np.median(tint[kept]) > TINTED  # the rest of the stroke stays painted
        assert not errors, errors
        print(f"rendered {rendered_s:.1f} s, overlay {overlay_s:.1f} s")
    finally:
        ctx.close()
