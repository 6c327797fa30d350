"""`Admission`: at most ``max_concurrent`` requests run, at most ``max_queue`` wait; the rest get 429.

The Retry-After estimate is the running mean of recent request durations times the number of requests ahead,
divided by the slots, rounded up to whole seconds (at least 1).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from safesail_guard.server.errors import APIError


class Admission:
    """A bounded queue in front of a fixed number of slots."""

    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self._sem = asyncio.Semaphore(max_concurrent)
        self.waiting = 0
        self.active = 0
        self.rejected = 0
        self._mean_s = 1.0

    def retry_after(self) -> int:
        """Seconds a rejected client should wait before trying again."""
        ahead = self.waiting + self.active
        return max(1, math.ceil(self._mean_s * ahead / self.max_concurrent))

    @asynccontextmanager
    async def slot(self, deadline: float) -> AsyncIterator[None]:
        """Hold a slot for the block; 429 when the queue is full, 504 when ``deadline`` (monotonic) passes
        while waiting."""
        # counted, not read from the semaphore: a burst arrives before any waiter has run acquire(), so the
        # semaphore still looks free to all of them (found by benchmarks/bench_proxy.py's overload phase)
        if self.waiting + self.active >= self.max_concurrent + self.max_queue:
            self.rejected += 1
            raise APIError(429, f"the server is busy ({self.active} running, {self.waiting} queued); retry later",
                           code="server_busy", headers={"Retry-After": str(self.retry_after())})
        self.waiting += 1
        try:
            await asyncio.wait_for(self._sem.acquire(), timeout=max(0.0, deadline - time.monotonic()))
        except (TimeoutError, asyncio.TimeoutError):
            raise APIError(504, "the request timed out while waiting for a free generation slot",
                           code="timeout") from None
        finally:
            self.waiting -= 1
        self.active += 1
        start = time.monotonic()
        try:
            yield
        finally:
            self.active -= 1
            self._sem.release()
            self._mean_s = 0.8 * self._mean_s + 0.2 * (time.monotonic() - start)
