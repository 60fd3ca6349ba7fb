"""Cross-site requests in a real browser (issue 17, finding 5): a page on another origin posts
a job to the service in the visitor's name (fetch and a plain form); none is created, and the
service's own page still submits.

`python -m bots.serve serve` as a real process (no worker: jobs stay queued, so the job book
counts every one created), Debian's chromium driven by Playwright (tests/test_web_page.py), and
a second origin served by a tiny HTTP server on another loopback port.
"""

from __future__ import annotations

import base64
import http.server
import sqlite3
import threading
import time

import pytest
from photos import photo_png
from service_process import Server
from test_web_page import SAMPLE, browser  # noqa: F401 - the browser fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

EVIL_PAGE = """<!doctype html><meta charset="utf-8"><title>cute cats</title>
<iframe name="sink"></iframe>
<form id="f" method="post" enctype="multipart/form-data" target="sink"
      action="{service}/api/v1/jobs">
  <input type="hidden" name="style" value="wave"><input type="file" name="image" id="image">
</form>
<script>
const bytes = Uint8Array.from(atob("{photo}"), c => c.charCodeAt(0));
const photo = () => new File([bytes], "p.png", {{type: "image/png"}});
async function attack() {{
  const fd = new FormData();
  fd.append("image", photo());
  fd.append("style", "wave");
  let fetched = "sent";
  try {{
    await fetch("{service}/api/v1/jobs", {{method: "POST", body: fd, mode: "no-cors",
                                           credentials: "include"}});
  }} catch (e) {{ fetched = "error " + e; }}
  const dt = new DataTransfer();
  dt.items.add(photo());
  document.getElementById("image").files = dt.files;
  document.querySelector("iframe").addEventListener("load", () => {{
    document.body.dataset.done = fetched;
  }});
  document.getElementById("f").submit();
}}
attack();
</script>"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("csrf"), workers=0, STYLEJAX_RATE_PER_MINUTE="60",
                 STYLEJAX_RATE_BURST="5", STYLEJAX_MAX_ACTIVE_JOBS="5")
    yield srv
    assert srv.stop() == 0, srv.log()


def _evil_site(html: str) -> tuple[http.server.HTTPServer, int]:
    """Another origin: a server on another loopback port that serves one page."""
    page = html.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, httpd.server_address[1]


def _jobs(server: Server) -> int:
    with sqlite3.connect(f"file:{server.data_dir / 'meta.db'}?mode=ro", uri=True) as db:
        return db.execute("SELECT count(*) FROM jobs").fetchone()[0]


@pytest.mark.parametrize("evil_host", ["127.0.0.1", "localhost"])
def test_another_origin_cannot_post_jobs_in_the_visitors_name(server, browser, evil_host):  # noqa: F811
    photo = base64.b64encode(photo_png(64, 64, 1)).decode()
    httpd, port = _evil_site(EVIL_PAGE.format(service=server.base, photo=photo))
    before = _jobs(server)
    refusals = server.log().count("refused a cross-site POST /api/v1/jobs")
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        answers: list[int] = []
        page.on("response", lambda r: answers.append(r.status)
                if r.url.endswith("/api/v1/jobs") else None)
        page.goto(f"http://{evil_host}:{port}/")
        page.wait_for_selector("body[data-done]", state="attached", timeout=20_000)
        assert page.get_attribute("body", "data-done") == "sent"  # the browser did send it
        deadline = time.monotonic() + 5
        while (server.log().count("refused a cross-site POST /api/v1/jobs") < refusals + 2
               and time.monotonic() < deadline):
            time.sleep(0.1)
    finally:
        ctx.close()
        httpd.shutdown()
    assert _jobs(server) == before, "a cross-site page created jobs"
    assert server.log().count("refused a cross-site POST /api/v1/jobs") == refusals + 2
    assert 202 not in answers and 403 in answers, answers


def test_the_services_own_page_still_submits(server, browser):  # noqa: F811
    # Jobs counted by the service's log: the page deletes its unfinished job when it is closed.
    before = server.log().count(" queued (")
    for base in (server.base, server.base.replace("127.0.0.1", "localhost")):
        ctx = browser.new_context()
        try:
            page = ctx.new_page()
            page.goto(base + "/")
            page.wait_for_selector("body[data-ready=yes]", timeout=15_000)
            page.set_input_files("#photo", str(SAMPLE))
            with page.expect_response(lambda r: r.request.method == "POST"
                                      and r.url.endswith("/api/v1/jobs")) as info:
                page.click("#go")
            assert info.value.status == 202, info.value.text()
            assert info.value.request.all_headers().get("origin") == base  # a browser sends it
        finally:
            ctx.close()
    assert server.log().count(" queued (") == before + 2
