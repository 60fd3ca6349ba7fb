"""The janitor `stylejax serve` runs: the service's housekeeping, off the request path.

Each round calls `StyleService.reap_dead_letters`, every minute `StyleService.reconcile` (jobs
the queue lost, e.g. to a Redis restart without persistence, go back on their lane) and, hourly,
`StyleService.sweep_expired` (the retention sweep); a failed round is logged and retried at the
next one. It is the one reaper of dead letters: workers (here or on other machines) leave them
to it.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("stylejax.serve")


class Janitor:
    """Off the request path: fails the jobs the queue gave up on (every 10 s, also for workers
    on other machines), re-enqueues the jobs the queue lost (every minute) and runs the
    retention sweep (hourly)."""

    REAP_EVERY_S = 10.0
    RECONCILE_EVERY_S = 60.0
    # a job must be this long unchanged before it counts as lost: longer than a submission
    # takes between recording a job and enqueueing it (Redis retries included)
    RECONCILE_MIN_AGE_S = 60.0
    SWEEP_EVERY_S = 3600.0

    def __init__(self, service):
        self.service = service
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stylejax-janitor", daemon=True)

    def _run(self) -> None:
        swept_at = -self.SWEEP_EVERY_S
        reconciled_at = time.monotonic()  # `serve` reconciled just before starting us
        while True:
            try:
                self.service.reap_dead_letters()
                if time.monotonic() - reconciled_at >= self.RECONCILE_EVERY_S:
                    reconciled_at = time.monotonic()
                    self.service.reconcile(min_age_s=self.RECONCILE_MIN_AGE_S)
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
