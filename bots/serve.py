"""`stylejax serve`: the whole service from one command; `stylejax worker`: one more worker.

    stylejax serve [--host H] [--port P] [--data-dir D] [--workers N] [--config TOML]
    stylejax worker [--data-dir D] [--config TOML]

`serve` runs the HTTP API (and its web page), the Telegram and Discord bots whose tokens are
configured, and N worker processes (or threads, `STYLEJAX_WORKER_MODE=thread`) that it restarts
if they die. `worker` runs one worker alone: point several machines at one Redis queue
(`STYLEJAX_QUEUE=redis://…`) and shared storage to scale out.

Settings come from the TOML file < STYLEJAX_* environment < flags. Ctrl-C or SIGTERM stops the
server, lets the workers finish their current jobs (bounded wait) and closes the service.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .config import ConfigError, Settings, load_settings

log = logging.getLogger("stylejax.serve")

WORKER_JOIN_S = 30.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stylejax", description="StyleJAX service commands.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the HTTP API and workers",
                           description="Run the HTTP API and background workers.")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--data-dir", help="where jobs and pictures are kept")
    serve.add_argument("--workers", type=int,
                       help="worker processes (threads with STYLEJAX_WORKER_MODE=thread; "
                            "0: API only)")
    serve.add_argument("--config", help="TOML settings file")
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])
    worker = sub.add_parser("worker", help="run one stylization worker",
                            description="Claim and run jobs until SIGTERM/Ctrl-C.")
    worker.add_argument("--data-dir", help="where jobs and pictures are kept")
    worker.add_argument("--config", help="TOML settings file")
    worker.add_argument("--server", metavar="URL",
                        help="on another machine: the serving machine's URL (jobs come from "
                             "the shared Redis queue; needs STYLEJAX_WORKER_KEY)")
    worker.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    worker.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    return parser


def _join_all(threads: list[threading.Thread], timeout_s: float) -> bool:
    """Join every thread within one shared timeout; True when all of them ended."""
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in threads)


class _ThreadWorkers:
    """N `Worker`s sharing one Stylizer in this process (`STYLEJAX_WORKER_MODE=thread`)."""

    def __init__(self, service, n: int):
        from stylejax.stylizer import Stylizer

        from .worker import Worker

        self.stylizer = Stylizer(service.settings.pack)
        self.workers = [Worker(service, stylizer=self.stylizer,
                               max_batch=service.settings.max_batch) for _ in range(n)]
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
        return _join_all(self.threads, timeout_s)


# What a worker process needs to see as `serve` does, whatever source (file, flag) set it.
_WORKER_SETTINGS = ("queue", "pack", "max_side", "max_batch", "batch_wait_s",
                    "custom_style_seconds", "custom_style_size", "queue_visibility_s")


class _ProcessWorkers:
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

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # N processes × all cores each would oversubscribe the CPU
        env.setdefault("STYLEJAX_ORT_THREADS", str(max(1, (os.cpu_count() or 1) // self.n)))
        # the workers read the same settings; flags given to `serve` travel as environment
        for name in _WORKER_SETTINGS:
            value = getattr(self.settings, name)
            if value is not None and value != "":
                env[f"STYLEJAX_{name.upper()}"] = str(value)
        env.pop("TELEGRAM_BOT_TOKEN", None)  # workers never talk to the platforms
        env.pop("DISCORD_BOT_TOKEN", None)
        return env

    def _spawn(self, i: int) -> None:
        self.procs[i] = subprocess.Popen(self._command(), env=self._env())
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


class _FrontEnds:
    """The chat bots whose tokens are configured, each on its own asyncio loop in a thread."""

    def __init__(self, service, settings: Settings):
        self.service, self.settings = service, settings
        self.threads: list[threading.Thread] = []
        self._stops: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._lock = threading.Lock()

    def configured(self) -> list[str]:
        names = []
        if self.settings.telegram_bot_token is not None:
            names.append("telegram")
        if self.settings.discord_bot_token is not None:
            names.append("discord")
        return names

    def _run(self, name: str) -> None:
        if name == "telegram":
            from .telegram_bot import run_telegram as run_bot
        else:
            from .discord_bot import run_discord as run_bot

        async def main() -> None:
            stop = asyncio.Event()
            with self._lock:
                self._stops.append((asyncio.get_running_loop(), stop))
            await run_bot(self.service, self.settings, stop)

        try:
            asyncio.run(main())
        except Exception as err:  # noqa: BLE001 - one broken bot must not stop the others
            # the repr of a platform error never holds the token (adapters use SecretStr)
            log.error("%s bot stopped on an error: %s", name, type(err).__name__)

    def start(self) -> None:
        for name in self.configured():
            t = threading.Thread(target=self._run, args=(name,), name=f"stylejax-{name}",
                                 daemon=True)
            t.start()
            self.threads.append(t)
            log.info("started the %s bot", name)

    def stop(self) -> None:
        """Ask every running bot to stop; safe to call again, and after a bot has ended."""
        with self._lock:
            for loop, stop in self._stops:
                with contextlib.suppress(RuntimeError):  # that bot's loop already closed
                    loop.call_soon_threadsafe(stop.set)

    def join(self, timeout_s: float) -> bool:
        return _join_all(self.threads, timeout_s)


class _Janitor:
    """Off the request path: fails the jobs the queue gave up on (every 10 s, also for workers
    on other machines) and runs the retention sweep (hourly)."""

    REAP_EVERY_S = 10.0
    SWEEP_EVERY_S = 3600.0

    def __init__(self, service):
        self.service = service
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stylejax-janitor", daemon=True)

    def _run(self) -> None:
        swept_at = -self.SWEEP_EVERY_S
        while True:
            try:
                self.service.reap_dead_letters()
                if time.monotonic() - swept_at >= self.SWEEP_EVERY_S:
                    swept_at = time.monotonic()
                    self.service.sweep_expired()
            except Exception as err:  # noqa: BLE001 - retry at the next round
                log.warning("janitor round failed: %r", err)
            if self._stop.wait(self.REAP_EVERY_S):
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


def serve(settings: Settings, log_level: str = "info", config_path: str | None = None) -> int:
    import uvicorn

    from .core import StyleService
    from .http_api import create_app

    service = StyleService(settings)
    if settings.worker_mode == "thread":
        pool = _ThreadWorkers(service, settings.workers)
    else:
        pool = _ProcessWorkers(settings, settings.workers, config_path)
    bots = _FrontEnds(service, settings)
    janitor = _Janitor(service)

    def on_signal(signum, _frame):  # also what uvicorn re-raises after its own shutdown
        log.info("%s received, shutting down", signal.Signals(signum).name)
        pool.stop()
        bots.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        pool.start()
        log.info("started %d worker %s(s); data in %s", settings.workers,
                 settings.worker_mode, settings.data_dir.absolute())
        bots.start()
        janitor.start()
        config = uvicorn.Config(create_app(service), host=settings.host, port=settings.port,
                                log_config=None, log_level=log_level, lifespan="off",
                                server_header=False, timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        log.info("serving the web page and HTTP API on http://%s:%d/", settings.host,
                 settings.port)
        server.run()
        started = server.started
    finally:
        janitor.stop()
        pool.stop()
        bots.stop()
        bots.join(10.0)
        if not pool.join(WORKER_JOIN_S):
            log.warning("workers still busy after %.0f s; stopped them", WORKER_JOIN_S)
        service.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("stopped")
    return 0 if started else 1


def run_worker(settings: Settings, parent_pid: int | None = None,
               server_url: str | None = None) -> int:
    """One worker process: claim, stylise, store, until SIGTERM (or its parent is gone)."""
    from .core import StyleService
    from .worker import Worker

    if server_url:
        if not settings.queue.startswith(("redis://", "rediss://")):
            print("stylejax: a worker on another machine needs the shared queue: set "
                  "STYLEJAX_QUEUE=redis://…", file=sys.stderr)
            return 2
        if settings.worker_key is None:
            print("stylejax: set STYLEJAX_WORKER_KEY to the serving machine's worker key",
                  file=sys.stderr)
            return 2
        service = None
        worker = Worker.remote(settings, server_url, max_batch=settings.max_batch)
    else:
        service = StyleService(settings)
        worker = Worker(service, max_batch=settings.max_batch)
    worker.install_signal_handlers()
    if parent_pid:
        def watch_parent() -> None:  # an orphaned worker would hold jobs nobody asked for
            while not worker.stop.wait(1.0):
                if os.getppid() != parent_pid:
                    log.warning("worker %s: parent %d gone, stopping", worker.consumer,
                                parent_pid)
                    worker.stop.set()
        threading.Thread(target=watch_parent, daemon=True).start()
    log.info("worker %s ready (queue %s)", worker.consumer, settings.queue or "embedded")
    try:
        _ = worker.stylizer.engine  # load the pack before the first claim
        worker.run()
    finally:
        if service is not None:
            service.close()
        else:
            worker.queue.close()
            worker.book.close()
    log.info("worker %s stopped after %d job(s)", worker.consumer, worker.handled)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {"data_dir": args.data_dir}
    if args.command == "serve":
        overrides.update(host=args.host, port=args.port, workers=args.workers)
    try:
        settings = load_settings(args.config, **overrides)
    except ConfigError as err:
        print(f"stylejax: {err}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return serve(settings, args.log_level, args.config)
    return run_worker(settings, args.parent_pid, args.server)


if __name__ == "__main__":
    sys.exit(main())
