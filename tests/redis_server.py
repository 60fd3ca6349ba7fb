"""A real `redis-server` (Debian package) on 127.0.0.1 for tests, with AOF so restarts keep data.

`RedisServer` starts it on a free port in a temporary directory, waits until it answers PING,
and can `restart()` it (kill, start again on the same port and directory) to test that queued
jobs survive. `require_redis_server()` skips the calling test locally when the binary is
missing, but fails under CI (``CI=true``), where scripts/test.sh installs it: a queue suite
that silently skipped its Redis half in CI would prove nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

INSTALL_HINT = "apt-get install -y redis-server (scripts/test.sh installs it when missing)"


def require_redis_server() -> str:
    """Path of `redis-server` and an importable `redis` client, else skip (fail under CI)."""
    missing = []
    binary = shutil.which("redis-server")
    if binary is None:
        missing.append(f"redis-server is not installed: {INSTALL_HINT}")
    try:
        import redis  # noqa: F401
    except ImportError:
        missing.append("the redis client is not installed: pip install -e '.[test]'")
    if missing:
        msg = "; ".join(missing)
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    assert binary is not None
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int, timeout_s: float = 0.5) -> bool:
    """True once the server answers +PONG (not -LOADING while it replays the AOF)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process bound to 127.0.0.1; `url` is valid until `stop()`."""

    def __init__(self, directory: str | os.PathLike[str], binary: str | None = None, *,
                 persistent: bool = True, appendfsync: str = "always") -> None:
        """`persistent=False`: no AOF, no snapshots, so a restart starts empty (the data loss
        the job book's reconcile must survive). `appendfsync`: "always" (the tests: nothing
        acknowledged is lost to a SIGKILL) or "everysec" (Redis' default, for the benches)."""
        self.persistent = persistent
        self.appendfsync = appendfsync
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.binary = binary or require_redis_server()
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        """Start on a free port (first time) or the previous one; wait until PING answers."""
        tries = 1 if self.port else 5  # a just-found free port can be taken by someone else
        for _ in range(tries):
            if not self.port or tries > 1:
                self.port = _free_port()
            if self._spawn(timeout_s):
                return self
        raise RuntimeError(f"redis-server did not start; log:\n{self._log_tail()}")

    def _spawn(self, timeout_s: float) -> bool:
        cmd = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--protected-mode", "yes",
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            # With everysec, a write that meets a slow background fsync waits up to 2 s in
            # Redis' own buffer, and a SIGKILL then loses it (seen on a loaded 2-core CI
            # machine). Tests that claim "nothing written is lost" need `always`; the
            # service's reconcile covers everysec.
            "--appendfsync", self.appendfsync,
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--logfile", "",  # log to stdout, which goes to redis.log below
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:  # exited: e.g. port in use
                self.proc = None
                return False
            if _ping(self.port):
                return True
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server gave no PONG in {timeout_s}s; log:\n{self._log_tail()}")

    def stop(self, *, graceful: bool = False, timeout_s: float = 10.0) -> None:
        """Stop the server: SIGKILL (a crash; AOF writes already reached the OS survive) or
        SIGTERM (clean shutdown)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)

    def restart(self, *, graceful: bool = False) -> None:
        """Kill and start again on the same port and directory (replays the AOF)."""
        self.stop(graceful=graceful)
        self.start()

    def _log_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return "(no log)"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def redis_server(directory: str | os.PathLike[str]) -> Iterator[RedisServer]:
    """Context manager form: ``with redis_server(tmp_path) as srv: … srv.url …``."""
    with RedisServer(directory) as server:
        yield server
