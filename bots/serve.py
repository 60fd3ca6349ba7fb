"""`stylejax serve`: the whole service from one command; `stylejax worker`: one more worker.

    stylejax serve [--host H] [--port P] [--data-dir D] [--workers N] [--config TOML]
    stylejax worker [--data-dir D] [--config TOML]

`serve` runs the HTTP API (and its web page), the Telegram and Discord bots whose tokens are
configured, and N worker processes (or threads, `STYLEJAX_WORKER_MODE=thread`) that it restarts
if they die. `worker` runs one worker alone: point several machines at one Redis queue
(`STYLEJAX_QUEUE=redis://…`) and shared storage to scale out.

Settings come from the TOML file < STYLEJAX_* environment < flags. Ctrl-C or SIGTERM stops the
server, lets the workers finish their current jobs (bounded wait) and closes the service.

This module is the wiring: the command line (`main`, the `stylejax` console script) and the two
entry points `serve` and `run_worker`. What `serve` starts lives beside it: the worker pool and
its process supervisor in `bots/worker_pool.py`, the chat bots in `bots/bot_runner.py`, the
janitor (dead letters, retention sweep) in `bots/janitor.py`.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence

from .bot_runner import ChatBots
from .config import ConfigError, Settings, load_settings
from .janitor import Janitor
from .worker_pool import ProcessWorkers, ThreadWorkers

log = logging.getLogger("stylejax.serve")

WORKER_JOIN_S = 30.0

# Query parameters that may carry a secret (`?api_key=…`, `?token=…`): never written to a log.
_SECRET_QUERY = re.compile(
    r"([?&;](?:[\w.-]*(?:key|token|secret|password|passwd|signature|sig|auth)[\w.-]*)=)"
    r"[^&;#\s\"]*", re.IGNORECASE)


class ScrubQuerySecrets(logging.Filter):
    """A logging filter for uvicorn's access log: `?api_key=abc` is logged as `?api_key=***`
    (clients that put keys in a URL should not leave them in the log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_SECRET_QUERY.sub(r"\1***", a) if isinstance(a, str) else a
                                for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = _SECRET_QUERY.sub(r"\1***", record.msg)
        return True


_SCRUB = ScrubQuerySecrets()


def uvicorn_proxy_options(settings: Settings) -> dict:
    """Believe X-Forwarded-For/-Proto only from `trusted_proxies` (uvicorn would believe them
    from 127.0.0.1 by default, letting any local client choose its identity)."""
    if not settings.trusted_proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": list(settings.trusted_proxies)}


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


def open_service(settings: Settings):
    """The service core, or a one-line `ConfigError` naming the setting that stops it (a
    missing pack, an unusable data_dir, an unreachable queue) instead of a traceback."""
    from urllib.parse import urlsplit

    from stylejax.errors import StyleJAXError

    from .core import StyleService

    try:
        return StyleService(settings)
    except StyleJAXError as err:  # the pack (WeightsError)
        raise ConfigError(f"pack: {err}") from None
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        raise ConfigError(f"data_dir or pack cannot be used: {err.strerror or err}{where}") \
            from None
    except Exception as err:
        if type(err).__module__.split(".")[0] != "redis":
            raise
        url = urlsplit(settings.queue)  # host and port only: the URL may carry a password
        raise ConfigError(f"queue: cannot reach Redis at {url.hostname}:{url.port or 6379} "
                          f"({type(err).__name__})") from None


def serve(settings: Settings, log_level: str = "info", config_path: str | None = None) -> int:
    import uvicorn

    from .http_api import create_app

    service = open_service(settings)
    if settings.worker_mode == "thread":
        pool = ThreadWorkers(service, settings.workers)
    else:
        pool = ProcessWorkers(settings, settings.workers, config_path)
    bots = ChatBots(service, settings)
    janitor = Janitor(service)

    def on_signal(signum, _frame):  # also what uvicorn re-raises after its own shutdown
        log.info("%s received, shutting down", signal.Signals(signum).name)
        pool.stop()
        bots.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        reconcile_queues(service)
        pool.start()
        log.info("started %d worker %s(s); data in %s", settings.workers,
                 settings.worker_mode, settings.data_dir.absolute())
        bots.start()
        janitor.start()
        logging.getLogger("uvicorn.access").addFilter(_SCRUB)  # once, however often serve runs
        config = uvicorn.Config(create_app(service), host=settings.host, port=settings.port,
                                log_config=None, log_level=log_level, lifespan="off",
                                server_header=False, timeout_graceful_shutdown=5,
                                **uvicorn_proxy_options(settings))
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


def reconcile_queues(service) -> int:
    """At start, before any worker or request: the jobs the book calls active that the queue
    lost while the service was down (e.g. Redis restarted without persistence) go back on
    their lane; nothing is being submitted yet, so no age limit is needed. A queue that is
    unreachable now is retried by the janitor."""
    try:
        return service.reconcile()
    except Exception as err:  # noqa: BLE001 - e.g. Redis still starting: the janitor retries
        log.warning("could not reconcile the job book with the queue at start: %r", err)
        return 0


def run_worker(settings: Settings, parent_pid: int | None = None,
               server_url: str | None = None) -> int:
    """One worker process: claim, stylise, store, until SIGTERM (or its parent is gone).

    It opens only a queue and a job book (`Worker.local` / `Worker.remote`), not the service;
    the serving machine's janitor fails the dead letters."""
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
        worker = Worker.remote(settings, server_url, max_batch=settings.max_batch)
    else:
        worker = Worker.local(settings, max_batch=settings.max_batch)
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
        worker.close()
    log.info("worker %s stopped after %d job(s)", worker.consumer, worker.handled)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        force=True)  # orbax's absl import may have added a root handler first
    overrides = {"data_dir": args.data_dir}
    if args.command == "serve":
        overrides.update(host=args.host, port=args.port, workers=args.workers)
    try:
        settings = load_settings(args.config, **overrides)
    except ConfigError as err:
        print(f"stylejax: {err}", file=sys.stderr)
        return 2
    try:
        if args.command == "serve":
            return serve(settings, args.log_level, args.config)
        return run_worker(settings, args.parent_pid, args.server)
    except ConfigError as err:
        print(f"stylejax: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
