"""Per-user token-bucket rate limit: bursts are fine, a flood is told when to come back."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucket:
    """`rate` requests per second on average, up to `burst` at once, per key."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate, self.burst, self.clock, self.max_keys = rate, burst, clock, max_keys
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def try_acquire(self, key: str) -> float:
        """0.0 when allowed (a token is spent), else the seconds until one is available."""
        now = self.clock()
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                if len(self._buckets) >= self.max_keys:  # forget full (idle) buckets first
                    self._evict(now)
                b = self._buckets[key] = _Bucket(float(self.burst), now)
            b.tokens = min(self.burst, b.tokens + (now - b.updated) * self.rate)
            b.updated = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return 0.0
            return (1.0 - b.tokens) / self.rate

    def retry_after_s(self, key: str) -> int:
        """Whole seconds to tell a user (never 0 for a refused request)."""
        wait = self.try_acquire(key)
        return 0 if wait == 0 else max(1, math.ceil(wait))

    def _evict(self, now: float) -> None:
        full = [k for k, b in self._buckets.items()
                if b.tokens + (now - b.updated) * self.rate >= self.burst]
        for k in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[k]
