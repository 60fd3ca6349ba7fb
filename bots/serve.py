"""`stylejax serve`: the HTTP API plus N background worker threads in one process.

    stylejax serve [--host H] [--port P] [--data-dir D] [--workers N] [--config TOML]

Settings come from the TOML file < STYLEJAX_* environment < flags. Ctrl-C or SIGTERM stops the
server, lets the workers finish their current jobs (bounded wait) and closes the service.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

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
    serve.add_argument("--workers", type=int, help="worker threads (0: API only)")
    serve.add_argument("--config", help="TOML settings file")
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])
    return parser


class _WorkerPool:
    """N `Worker`s sharing one Stylizer, each in its own thread."""

    def __init__(self, service, n: int):
        from stylejax.stylizer import Stylizer

        from .worker import Worker

        self.stylizer = Stylizer(service.settings.pack)
        self.workers = [Worker(service, stylizer=self.stylizer) for _ in range(n)]
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
        """True when every worker thread ended within the (shared) timeout."""
        import time

        deadline = time.monotonic() + timeout_s
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)


def serve(settings: Settings, log_level: str = "info") -> int:
    import uvicorn

    from .core import StyleService
    from .http_api import create_app

    service = StyleService(settings)
    pool = _WorkerPool(service, settings.workers)

    def on_signal(signum, _frame):  # also what uvicorn re-raises after its own shutdown
        log.info("%s received, shutting down", signal.Signals(signum).name)
        pool.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        pool.start()
        log.info("started %d worker thread(s); data in %s", settings.workers,
                 settings.data_dir.absolute())
        config = uvicorn.Config(create_app(service), host=settings.host, port=settings.port,
                                log_config=None, log_level=log_level, lifespan="off",
                                server_header=False, timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        log.info("serving the HTTP API on http://%s:%d", settings.host, settings.port)
        server.run()
        started = server.started
    finally:
        pool.stop()
        if not pool.join(WORKER_JOIN_S):
            log.warning("workers still busy after %.0f s; leaving them", WORKER_JOIN_S)
        service.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("stopped")
    return 0 if started else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        try:
            settings = load_settings(args.config, host=args.host, port=args.port,
                                     data_dir=args.data_dir, workers=args.workers)
        except ConfigError as err:
            print(f"stylejax: {err}", file=sys.stderr)
            return 2
        return serve(settings, args.log_level)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
