"""The HTTP front's defences against a hostile client (issue 17): security headers, cross-site
requests, forwarded headers, stalled uploads, echoed input, secrets in the log, API-key ids.

Real `stylejax serve` processes (tests/service_process.py) spoken to over HTTP and raw sockets;
the API-key storage checks run the app in process on a real data dir.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import threading
import time

import httpx
import pytest
from photos import photo_png
from service_process import Server, assert_json_error, post_photo

from bots.config import Settings
from bots.core import StyleService

pytestmark = pytest.mark.timeout(240)

BODY_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("hard"), workers=0, STYLEJAX_RATE_PER_MINUTE="600",
                 STYLEJAX_RATE_BURST="50", STYLEJAX_MAX_ACTIVE_JOBS="50",
                 STYLEJAX_REQUEST_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
                 STYLEJAX_ALLOWED_ORIGINS="https://app.example.org, http://localhost:3000")
    yield srv
    code = srv.stop()
    assert code == 0, srv.log()


def _photo() -> bytes:
    return photo_png(64, 64, 3)


# -- headers ---------------------------------------------------------------------------------
def test_every_answer_is_nosniff_and_every_page_has_the_csp(server):
    c = server.client
    answers = {path: c.get(path) for path in (
        "/", "/static/index.html", "/static/app.js", "/static/style.css", "/api/v1/styles",
        "/api/v1/config", "/openapi.json", "/static/nope.js", "/api/v1/jobs/nope", "/healthz")}
    answers["POST 422"] = c.post("/api/v1/jobs")
    for name, resp in answers.items():
        assert resp.headers.get("x-content-type-options") == "nosniff", name
    for page in ("/", "/static/index.html"):  # the same page by both paths: same protection
        resp = answers[page]
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
        assert "frame-ancestors 'none'" in resp.headers["content-security-policy"], page
        assert "default-src 'self'" in resp.headers["content-security-policy"], page
    # no Swagger UI (it would load from a CDN); the schema itself stays
    assert_json_error(c.get("/docs"), 404)
    assert "/api/v1/jobs" in answers["/openapi.json"].json()["paths"]


# -- cross-site requests ---------------------------------------------------------------------
def test_cross_site_posts_are_refused_and_others_pass(server):
    c = server.client
    own = server.base
    refused = [{"Origin": "http://evil.example"},
               {"Origin": own.replace("127.0.0.1", "localhost")},  # another origin, same machine
               {"Origin": own + "0"}, {"Origin": "null"}, {"Origin": "https://app.example.org.evil"},
               {"Sec-Fetch-Site": "cross-site"}]
    for headers in refused:
        with httpx.Client(base_url=own, headers=headers, timeout=30) as client:
            error = assert_json_error(post_photo(client, _photo(), style="wave"), 403)
            assert "other web sites" in error, headers
            assert_json_error(client.delete("/api/v1/jobs/whatever"), 403)
    allowed = [{}, {"Origin": own}, {"Origin": own.upper().replace("HTTP", "http")},
               {"Origin": "https://app.example.org"}, {"Origin": "http://localhost:3000"},
               {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}]
    for headers in allowed:
        with httpx.Client(base_url=own, headers=headers, timeout=30) as client:
            resp = post_photo(client, _photo(), style="wave")
            assert resp.status_code == 202, (headers, resp.text)
    # reading is never refused (a page may show our pictures)
    assert c.get("/api/v1/styles", headers={"Origin": "http://evil.example"}).status_code == 200


# -- request bodies that never finish ----------------------------------------------------------
def _stalled_upload(port: int, sent: int = 1000, declared: int = 200_000) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (f"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: multipart/form-data; boundary=xyz\r\n"
            f"Content-Length: {declared}\r\n\r\n")
    body = b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.png\"\r\n\r\n"
    sock.sendall(head.encode() + body + b"\0" * (sent - len(body)))
    return sock


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_stalled_upload_is_answered_408_and_does_not_block_others(server):
    n = 50
    t0 = time.monotonic()
    socks = [_stalled_upload(server.port) for _ in range(n)]
    answers: list[tuple[float, bytes]] = []
    lock = threading.Lock()

    def wait(sock: socket.socket) -> None:
        data = _read_answer(sock)  # returns when the server closes the connection
        with lock:
            answers.append((time.monotonic() - t0, data))
        sock.close()

    threads = [threading.Thread(target=wait, args=(s,)) for s in socks]
    for t in threads:
        t.start()
    # meanwhile the service answers others at once
    t1 = time.monotonic()
    assert server.client.get("/api/v1/styles").status_code == 200
    assert post_photo(server.client, _photo(), style="wave").status_code == 202
    assert time.monotonic() - t1 < BODY_TIMEOUT_S
    for t in threads:
        t.join(BODY_TIMEOUT_S + 20)
    assert len(answers) == n
    slowest = max(a[0] for a in answers)
    assert slowest < BODY_TIMEOUT_S + 8, slowest  # cut off, not held for minutes
    print(f"{n} stalled uploads answered 408 after {min(a[0] for a in answers):.1f}-"
          f"{slowest:.1f} s (deadline {BODY_TIMEOUT_S} s)")
    for _, data in answers:
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), data[:200]
        assert b"nosniff" in head.lower() and b"took too long" in body
    assert "refused a request body on POST /api/v1/jobs" in server.log()


def test_a_slow_but_steady_upload_is_cut_off_at_the_deadline(server):
    """The deadline covers the whole body, not each read: a drip-feed does not extend it."""
    refused = server.log().count("refused a request body")
    sock = _stalled_upload(server.port, declared=100_000)
    t0 = time.monotonic()
    sock.settimeout(0.3)
    data = b""
    while time.monotonic() - t0 < BODY_TIMEOUT_S + 10:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            chunk = None
        except OSError:  # reset: the server closed while our drip was in flight
            break
        if chunk is not None:
            if not chunk:
                break
            data += chunk
            continue
        try:
            sock.sendall(b"\0" * 10)
        except OSError:
            break
    elapsed = time.monotonic() - t0
    sock.close()
    assert elapsed < BODY_TIMEOUT_S + 8, elapsed
    # the answer may be lost to the reset our own drip causes; the server's log is not
    assert not data or data.startswith(b"HTTP/1.1 408"), data[:200]
    assert server.log().count("refused a request body") == refused + 1


def test_a_chunked_body_past_the_limit_is_cut_off():
    """No Content-Length (chunked): the bytes are counted as they come (the declared-length
    check alone would let it through)."""
    import asyncio

    from bots.http_api import _BodyLimit

    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read it all"})

    async def run() -> list[dict]:
        chunks = [{"type": "http.request", "body": b"x" * 400, "more_body": True}] * 5
        sent: list[dict] = []

        async def receive():
            return chunks.pop(0)

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/api/v1/jobs", "headers": []}
        await _BodyLimit(app, max_body=1000)(scope, receive, send)
        return sent

    sent = asyncio.run(run())
    assert sent[0]["status"] == 413 and b"too large" in sent[1]["body"]


# -- echoed input, secrets in the log ----------------------------------------------------------
def test_a_huge_style_id_is_not_echoed_back(server):
    resp = post_photo(server.client, _photo(), style="s" * 100_000)
    error = assert_json_error(resp, (400, 404, 422))
    assert "Unknown style 'ssss" in error and "…" in error
    assert len(resp.content) < 1000
    stroke = assert_json_error(post_photo(server.client, _photo(), style="wave",
                                          stroke="9" * 5000), 422)
    assert len(stroke) < 300


def test_keys_in_a_query_string_stay_out_of_the_log(server):
    secrets = {"api_key": "s3cr3t-api-key-value", "token": "t0ken-value-42",
               "X-API-Key": "another-s3cr3t", "access_token": "acc3ss-t0ken"}
    query = "&".join(f"{k}={v}" for k, v in secrets.items())
    assert server.client.get(f"/api/v1/styles?lang=en&{query}").status_code == 200
    assert server.client.get("/api/v1/jobs/x?key=k3y-in-url").status_code == 404
    deadline = time.monotonic() + 5
    while "GET /api/v1/jobs/x?key=***" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.log()
    assert "GET /api/v1/styles?lang=en&api_key=***&token=***" in log, log[-2000:]
    assert "GET /api/v1/jobs/x?key=***" in log
    for value in [*secrets.values(), "k3y-in-url"]:
        assert value not in log


# -- forwarded headers ---------------------------------------------------------------------------
@pytest.mark.parametrize("trusted", [False, True], ids=["default", "trusted-proxy"])
def test_forwarded_for_counts_only_from_a_trusted_proxy(tmp_path, trusted):
    env = {"STYLEJAX_RATE_PER_MINUTE": "1", "STYLEJAX_RATE_BURST": "1"}
    if trusted:
        env["STYLEJAX_TRUSTED_PROXIES"] = "127.0.0.1"
    srv = Server(tmp_path, workers=0, **env)
    try:
        c = srv.client
        assert post_photo(c, _photo(), style="wave").status_code == 202
        assert_json_error(post_photo(c, _photo(), style="wave"), 429)  # this client is limited
        spoofed = c.post("/api/v1/jobs", headers={"X-Forwarded-For": "203.0.113.7"},
                         files={"image": ("p.png", _photo(), "image/png")},
                         data={"style": "wave"})
        if trusted:  # the proxy speaks for another client: that one is not limited
            assert spoofed.status_code == 202, spoofed.text
        else:  # anyone may send the header: it changes nothing
            assert_json_error(spoofed, 429)
    finally:
        assert srv.stop() == 0, srv.log()


# -- API-key ids -------------------------------------------------------------------------------
def _legacy(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def test_api_key_ids_are_keyed_hashes_stable_across_restarts(tmp_path):
    from fastapi.testclient import TestClient

    from bots.http_api import API_KEY_SECRET_FILE, create_app, key_digest

    key = "test-key-0123456789"
    settings = Settings(data_dir=tmp_path / "data", api_keys=[key])
    owners = []
    for _restart in range(2):
        service = StyleService(settings)
        try:
            with TestClient(create_app(service)) as client:
                resp = post_photo(client, _photo(), style="wave")
                assert resp.status_code == 401
                resp = client.post("/api/v1/jobs", headers={"X-API-Key": key},
                                   files={"image": ("p.png", _photo(), "image/png")},
                                   data={"style": "wave"})
                assert resp.status_code == 202, resp.text
                owners.append(service.store.get_job(resp.json()["id"]).owner)
                secret = client.app.state.api_key_secret
        finally:
            service.close()
    assert owners[0] == owners[1]  # the same user after a restart
    path = tmp_path / "data" / API_KEY_SECRET_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert secret == path.read_text().strip().encode() and len(secret) >= 32
    service = StyleService(settings)
    try:
        ids = service.store._read("SELECT platform_user_id FROM users WHERE platform = 'api'")
        assert [r[0] for r in ids] == [key_digest(key, secret)]
        assert _legacy(key) not in {r[0] for r in ids}  # no unsalted hash of the key is kept
        assert key_digest(key, secret) != key_digest(key, b"another secret" * 3)
    finally:
        service.close()


def test_a_user_known_by_the_old_digest_keeps_their_jobs(tmp_path):
    """Upgrading from sha256-prefix ids: the key's user is moved to the keyed id, not lost."""
    from fastapi.testclient import TestClient

    from bots.http_api import API_KEY_SECRET_FILE, create_app, key_digest

    key = "old-key-0123456789"
    settings = Settings(data_dir=tmp_path / "data", api_keys=[key],
                        api_key_secret="a-configured-secret-of-some-length")
    service = StyleService(settings)
    try:
        old = service.user("api", _legacy(key))  # as the previous version recorded it
        with TestClient(create_app(service)) as client:
            resp = client.post("/api/v1/jobs", headers={"X-API-Key": key},
                               files={"image": ("p.png", _photo(), "image/png")},
                               data={"style": "wave"})
            assert resp.status_code == 202, resp.text
        assert service.store.get_job(resp.json()["id"]).owner == old.id
        assert service.user("api", key_digest(key, b"a-configured-secret-of-some-length")).id \
            == old.id
        assert not (tmp_path / "data" / API_KEY_SECRET_FILE).exists()  # the setting was used
    finally:
        service.close()
