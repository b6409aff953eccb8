"""Token buckets per key (a caller's token), in this process's memory.

Each gateway replica keeps its own buckets: with N replicas behind a load balancer a caller may
get up to N times the configured rate. That is the accepted price of needing no shared store on
the request path (docs/security.md); the limit exists to stop a runaway client, not to bill.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("a rate limiter needs a positive rate and a burst of at least 1")
        self.rate = rate_per_second
        self.burst = burst
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str) -> float:
        """Takes one token from the key's bucket: 0.0 when granted, otherwise the seconds until
        one is available (nothing is taken)."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), updated=now)
            self._buckets[key] = bucket
            # Forgetting the least recently used key hands it a full bucket: harmless, and it
            # bounds memory whatever the number of callers.
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        self._buckets.move_to_end(key)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


def retry_after_header(wait_seconds: float) -> str:
    """Retry-After in whole seconds, never 0 (a client would retry at once and be refused)."""
    return str(max(1, math.ceil(wait_seconds)))


@dataclass(frozen=True)
class MethodLimit:
    """A limit of its own on one method, on top of the one on every write: `what` names what is
    counted in the refusal ("generations")."""

    limiter: RateLimiter
    what: str

    def refusal(self, wait_seconds: float) -> str:
        per_minute = self.limiter.rate * 60
        return (
            f"too many {self.what}: at most {self.limiter.burst} at once, then {per_minute:g} "
            f"per minute; retry in {retry_after_header(wait_seconds)} s"
        )
