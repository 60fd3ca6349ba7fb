"""`python -m bots.serve serve` as a real process for tests, and small HTTP helpers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
MAX_UPLOAD = 300_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`stylejax serve` on a free port; `fresh=True` runs it as on a new machine: no settings,
    no flags but the port, started in `tmp` (so its data goes to the default folder there)."""

    def __init__(self, tmp: Path, workers: int | None = 1, *, fresh: bool = False, **env: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "server.log"
        self.data_dir = tmp / ("stylejax-data" if fresh else "data")
        clean = {k: v for k, v in os.environ.items() if not k.startswith("STYLEJAX_")}
        cmd = [sys.executable, "-m", "bots.serve", "serve", "--port", str(self.port)]
        if not fresh:
            clean.update(JAX_PLATFORMS="cpu", STYLEJAX_ORT_THREADS="2",
                         STYLEJAX_MAX_UPLOAD_BYTES=str(MAX_UPLOAD), STYLEJAX_MAX_SIDE="256")
            cmd += ["--data-dir", str(self.data_dir)]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        clean.update(env)
        self.env = clean
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=tmp if fresh else ROOT, env=clean,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.base, timeout=30)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                if self.client.get("/healthz", timeout=2).json() == {"status": "ok"}:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 45) -> int | None:
        """SIGTERM, then wait; returns the exit code (None if it had to be killed)."""
        self.client.close()
        code = self.proc.poll()
        if code is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                code = None
        self._log.close()
        return code


def post_photo(client: httpx.Client, photo: bytes, name: str = "photo.png", **form):
    return client.post("/api/v1/jobs", files={"image": (name, photo, "image/png")},
                       data={k: str(v) for k, v in form.items()})


def assert_json_error(resp: httpx.Response, status: int | tuple[int, ...]) -> str:
    statuses = status if isinstance(status, tuple) else (status,)
    assert resp.status_code in statuses, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in resp.text and "File \"" not in resp.text
    return body["error"]


def wait_done(client: httpx.Client, job_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get(f"/api/v1/jobs/{job_id}").json()
        if status["state"] in ("done", "failed", "cancelled"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished in {timeout_s} s")
