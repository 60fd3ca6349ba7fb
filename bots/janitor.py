"""The janitor `stylejax serve` runs: the service's housekeeping, off the request path.

Each round calls `StyleService.reap_dead_letters` and, hourly, `StyleService.sweep_expired`
(the retention sweep); a failed round is logged and retried at the next one. It is the one
reaper of dead letters: workers (here or on other machines) leave them to it.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("stylejax.serve")


class Janitor:
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
