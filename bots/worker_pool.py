"""The worker pool `stylejax serve` runs beside the API: worker processes under a supervisor
that restarts the ones that die (the default), or worker threads in the serving process
(`STYLEJAX_WORKER_MODE=thread`).

Both have `start()`, `stop()` (finish the current jobs, claim no more) and `join(timeout_s)`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .config import Settings

log = logging.getLogger("stylejax.serve")


def takes_video(i: int, n: int) -> bool:
    """Whether worker `i` of `n` also takes the video lane: all but one when there are two or
    more, so a photo always finds a worker that no clip holds (docs/video.md "Service")."""
    return i < max(1, n - 1)


def join_all(threads: list[threading.Thread], timeout_s: float) -> bool:
    """Join every thread within one shared timeout; True when all of them ended."""
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in threads)


class ThreadWorkers:
    """N `Worker`s sharing one Stylizer in this process (`STYLEJAX_WORKER_MODE=thread`)."""

    def __init__(self, service, n: int):
        from stylejax.stylizer import Stylizer

        from .worker import Worker

        self.stylizer = Stylizer(service.settings.pack)
        self.workers = [Worker.beside(service, stylizer=self.stylizer,
                                      max_batch=service.settings.max_batch,
                                      video=takes_video(i, n))
                        for i in range(n)]
        self.threads: list[threading.Thread] = []
        self._init_lock = threading.Lock()

    def _run(self, worker) -> None:
        try:
            with self._init_lock:  # load the pack once, not once per thread
                _ = self.stylizer.engine
            worker.run()
        except Exception:  # noqa: BLE001 - a dead worker must be visible in the log
            log.exception("worker %s stopped on an error", worker.consumer)

    def start(self) -> None:
        for i, w in enumerate(self.workers):
            t = threading.Thread(target=self._run, args=(w,), name=f"stylejax-worker-{i}",
                                 daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self) -> None:
        for w in self.workers:
            w.stop.set()

    def join(self, timeout_s: float) -> bool:
        return join_all(self.threads, timeout_s)


# What a worker process needs to see as `serve` does, whatever source (file, flag) set it.
_WORKER_SETTINGS = ("queue", "pack", "max_side", "max_batch", "batch_wait_s",
                    "custom_style_seconds", "custom_style_size", "queue_visibility_s",
                    "video_max_seconds", "video_max_frames", "video_max_pixels",
                    "video_max_bytes")


class ProcessWorkers:
    """N `stylejax worker` subprocesses, restarted when one dies (the default).

    Processes use every core (no GIL between them) and a crash, even a SIGKILL, costs only the
    jobs in flight, which the queue redelivers after their lease.
    """

    RESTART_BACKOFF_S = (1.0, 30.0)

    def __init__(self, settings: Settings, n: int, config_path: str | None):
        self.settings = settings
        self.n = n
        self.config_path = config_path
        self.procs: list[subprocess.Popen | None] = [None] * n
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="stylejax-supervisor",
                                            daemon=True)

    def _command(self) -> list[str]:
        cmd = [sys.executable, "-m", "bots.serve", "worker",
               "--data-dir", str(Path(self.settings.data_dir).absolute()),
               "--parent-pid", str(os.getpid()),
               "--log-level", logging.getLevelName(log.getEffectiveLevel()).lower()]
        if self.config_path:
            cmd += ["--config", str(self.config_path)]
        return cmd

    def _env(self, i: int) -> dict[str, str]:
        env = dict(os.environ)
        # N processes × all cores each would oversubscribe the CPU
        env.setdefault("STYLEJAX_ORT_THREADS", str(max(1, (os.cpu_count() or 1) // self.n)))
        # the workers read the same settings; flags given to `serve` travel as environment
        for name in _WORKER_SETTINGS:
            value = getattr(self.settings, name)
            if value is not None and value != "":
                env[f"STYLEJAX_{name.upper()}"] = str(value)
        env["STYLEJAX_WORKER_VIDEO"] = "1" if takes_video(i, self.n) else "0"
        env.pop("TELEGRAM_BOT_TOKEN", None)  # workers never talk to the platforms
        env.pop("DISCORD_BOT_TOKEN", None)
        return env

    def _spawn(self, i: int) -> None:
        self.procs[i] = subprocess.Popen(self._command(), env=self._env(i))
        log.info("worker process %d started (pid %d)", i, self.procs[i].pid)

    def _supervise(self) -> None:
        backoff = [self.RESTART_BACKOFF_S[0]] * self.n
        while not self._stopping.wait(0.5):
            for i, proc in enumerate(self.procs):
                if proc is None or proc.poll() is None:
                    continue
                log.warning("worker process %d (pid %d) exited with %s; restarting in %.0f s",
                            i, proc.pid, proc.returncode, backoff[i])
                if self._stopping.wait(backoff[i]):
                    return
                backoff[i] = min(self.RESTART_BACKOFF_S[1], backoff[i] * 2)
                self._spawn(i)

    def start(self) -> None:
        for i in range(self.n):
            self._spawn(i)
        self._supervisor.start()

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # finish the current jobs, claim no more

    def join(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        clean = True
        for proc in self.procs:
            if proc is None:
                continue
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()  # its jobs are redelivered to the next worker to start
                proc.wait()
                clean = False
        return clean
