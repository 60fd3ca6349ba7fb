"""Schemathesis against our own OpenAPI schema (issue 17): the jobs and styles endpoints of the
real app (`bots.http_api.create_app`) under real uvicorn on a loopback port.

Properties: never a 5xx; a response whose content type is JSON (declared or sent) parses as
JSON; every error is JSON `{"error": "<one line>"}`.
"""

from __future__ import annotations

import io
import json
import threading
import time

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import GenerationMode

from bots.config import Settings
from bots.core import StyleService
from bots.http_api import create_app

FUZZ = settings(deadline=None, max_examples=20, derandomize=True,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    """The app under uvicorn in a thread, on a free port (port 0, read back once bound)."""
    settings_ = Settings(data_dir=tmp_path_factory.mktemp("api-fuzz"), max_upload_bytes=200_000,
                         video_max_bytes=400_000, max_side=256, rate_per_minute=100_000,
                         rate_burst=100_000, max_active_jobs=100_000)
    service = StyleService(settings_)
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    yield url
    server.should_exit = True
    thread.join(15)
    service.close()


@pytest.fixture(scope="module")
def operations(base_url) -> dict:
    """The schema as the running app serves it: the jobs and styles operations by label."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    schema = schema.include(path_regex=r"^/api/v1/(jobs|styles|config)")
    return {op.label: op for op in (r.ok() for r in schema.get_all_operations())}


LABELS = ["GET /api/v1/config", "GET /api/v1/styles", "GET /api/v1/styles/{style_id}/thumbnail",
          "POST /api/v1/jobs", "GET /api/v1/jobs/{job_id}", "DELETE /api/v1/jobs/{job_id}",
          "GET /api/v1/jobs/{job_id}/result", "GET /api/v1/jobs/{job_id}/events"]


@schemathesis.check
def errors_are_one_line_json(ctx, response, case):
    """4xx/5xx answers are JSON {"error": str} with one line, and JSON is always valid JSON."""
    media = response.headers.get("content-type", [""])[0]
    if "json" in media:
        body = json.loads(response.content)  # raises on invalid JSON: a failure
        if response.status_code >= 400:
            assert isinstance(body, dict) and isinstance(body.get("error"), str), body
            assert body["error"] and "\n" not in body["error"], body
            assert "Traceback" not in body["error"]
    elif response.status_code >= 400:
        raise AssertionError(f"{response.status_code} answered {media!r}, not JSON")


def test_the_schema_lists_the_operations(operations):
    assert sorted(operations) == sorted(LABELS)


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (40, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


# Uploads that reach past the form checks: real, thin, truncated, a bomb's header, nonsense
UPLOADS = [_png(64, 48), _png(3000, 16), _png(64, 48)[:60], _png(9000, 9000)[:200], b"\x00",
           b"GIF89a" + b"\xff" * 40]


def _steered(operation, mode, job_id: str, style_id: str):
    """Schemathesis' cases, part of them steered to real ids and real pictures so the fuzzing
    reaches the decode, queue and job code, not only the form checks."""
    @st.composite
    def cases(draw):
        case = draw(operation.as_strategy(generation_mode=mode))
        if case.path_parameters and "job_id" in case.path_parameters and draw(st.booleans()) \
                and not case.path.endswith("/events"):  # a real job's stream lasts minutes
            case.path_parameters["job_id"] = job_id
        if isinstance(case.body, dict) and draw(st.booleans()):
            case.body["image"] = draw(st.sampled_from(UPLOADS))
            if draw(st.booleans()):
                case.body["style"] = style_id
                case.body.pop("style_image", None)
        return case

    return cases()


# Negative cases (values the schema forbids) exist only where a body or number can break it.
RUNS = [(label, GenerationMode.POSITIVE) for label in LABELS] + [
    ("POST /api/v1/jobs", GenerationMode.NEGATIVE)]


@pytest.mark.parametrize("label, mode", RUNS, ids=[f"{lb}-{m.value}" for lb, m in RUNS])
def test_jobs_and_styles_endpoints(operations, base_url, label, mode):
    from schemathesis.checks import content_type_conformance, not_a_server_error

    style_id = httpx.get(f"{base_url}/api/v1/styles").json()[0]["id"]
    job = httpx.post(f"{base_url}/api/v1/jobs", files={"image": ("p.png", _png(64, 48))},
                     data={"style": style_id})
    assert job.status_code == 202, job.text
    timeout = 10 if label.endswith("/events") else 30  # an unknown job's stream: 404 at once

    @FUZZ
    @given(case=_steered(operations[label], mode, job.json()["id"], style_id))
    def run(case):
        case.call_and_validate(base_url=base_url, timeout=timeout,
                               checks=[not_a_server_error, content_type_conformance,
                                       errors_are_one_line_json])

    run()
