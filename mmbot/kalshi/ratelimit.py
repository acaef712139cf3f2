"""Client-side token buckets that mirror Kalshi's Read and Write buckets.

Kalshi meters requests with two token buckets (Read, Write) that refill
continuously at the account tier's rate up to a capacity; each call costs a
number of tokens (10 by default, 2 for quote create/delete/get). Spending from
a local mirror first means the daemon waits a few milliseconds instead of
eating a 429 and a backoff.

Waiters are served strictly by priority, then arrival: a confirmation waiting
for tokens is never overtaken by a cheaper quote creation that happens to fit,
so a backlog of new quotes cannot delay a confirmation past its window.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from enum import IntEnum

__all__ = ["Priority", "TokenBucket"]


class Priority(IntEnum):
    """Write-lane priorities: lower is served first."""

    CONFIRM = 0
    DELETE = 1
    CREATE = 2
    # Reads share one lane with no ordering preference among them.
    READ = 3


class TokenBucket:
    """An async token bucket with a strict-priority wait queue."""

    def __init__(
        self,
        rate: float,
        capacity: float,
        *,
        name: str = "bucket",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError(f"{name}: rate and capacity must be positive")
        self.name = name
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = float(capacity)
        self._stamp = clock()
        # Heap entries: (priority, arrival, cost, future).
        self._waiters: list[tuple[int, int, float, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def tokens(self) -> float:
        """Tokens available now."""
        self._refill()
        return self._tokens

    @property
    def waiting(self) -> int:
        """Number of callers queued for tokens."""
        return sum(1 for *_, fut in self._waiters if not fut.done())

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._stamp = now

    def _check_cost(self, cost: float) -> None:
        if cost <= 0 or cost > self.capacity:
            raise ValueError(
                f"{self.name}: cost {cost} must be in (0, capacity={self.capacity}]; "
                "a larger cost could never be paid"
            )

    def try_acquire(self, cost: float) -> bool:
        """Take ``cost`` tokens now if nobody is queued and they are available."""
        self._check_cost(cost)
        self._refill()
        if self._waiters or self._tokens < cost:
            return False
        self._tokens -= cost
        return True

    async def acquire(self, cost: float, priority: int = Priority.READ) -> None:
        """Wait until ``cost`` tokens can be taken, serving callers by priority then arrival."""
        if self.try_acquire(cost):
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._waiters, (int(priority), next(self._arrivals), cost, fut))
        self._dispatch()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Granted but the caller went away before using the tokens: give them back.
                self._tokens = min(self.capacity, self._tokens + cost)
            self._dispatch()
            raise

    def drain(self) -> None:
        """Empty the bucket, e.g. after a 429 shows the exchange's bucket is emptier than ours."""
        self._refill()
        self._tokens = min(self._tokens, 0.0)
        self._dispatch()

    def _dispatch(self) -> None:
        """Grant queued callers in order while tokens last, then arm a timer for the next one."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._refill()
        while self._waiters:
            _, _, cost, fut = self._waiters[0]
            if fut.done():  # cancelled while waiting
                heapq.heappop(self._waiters)
                continue
            if self._tokens < cost:
                break
            heapq.heappop(self._waiters)
            self._tokens -= cost
            fut.set_result(None)
        if self._waiters:
            _, _, cost, _ = self._waiters[0]
            delay = (cost - self._tokens) / self.rate
            self._timer = asyncio.get_running_loop().call_later(delay, self._dispatch)
