"""Client-side token buckets that mirror Kalshi's Read and Write buckets.

Kalshi meters requests with two token buckets (Read, Write) that refill
continuously at the account tier's rate up to a capacity; each call costs a
number of tokens (10 by default, 2 for quote create/delete/get). Spending from
a local mirror first means the daemon waits a few milliseconds instead of
eating a 429 and a backoff.

Waiters are served strictly by priority, then arrival: a confirmation waiting
for tokens is never overtaken by a cheaper quote creation that happens to fit,
so a backlog of new quotes cannot delay a confirmation past its window.

Overload: when RFQs arrive faster than the write budget can answer, new quotes
must give way, explicitly and by value rather than by arrival. A caller marks a
request *sheddable* by giving it a ``value`` and a ``deadline``:

* sheddable waiters are served by value, highest first (after every waiter of a
  more urgent priority and every non-sheddable waiter of their own);
* at most ``max_sheddable`` wait at once: a newcomer worth more than the least
  valuable waiter takes its place, and the one that gives way raises
  :class:`Shed` (``queue_full``); a newcomer worth no more is shed at once;
* a sheddable waiter still waiting at its deadline raises :class:`Shed`
  (``stale``): a quote sent late is a quote on an RFQ someone else answered.

``reserve`` tokens are kept back from creations (priority CREATE and below): a
confirmation, whose window is seconds, then finds tokens waiting instead of
queueing behind a refill that only creations would have used.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from decimal import Decimal
from enum import IntEnum

__all__ = ["DEFAULT_COST", "QUOTE_COST", "Priority", "Shed", "TokenBucket"]

#: Token cost of most calls (Kalshi's default).
DEFAULT_COST = 10
#: Token cost of creating, deleting or fetching a single quote, per the endpoint docs.
QUOTE_COST = 2


class Priority(IntEnum):
    """Write-lane priorities: lower is served first."""

    CONFIRM = 0
    DELETE = 1
    CREATE = 2
    # Reads share one lane with no ordering preference among them.
    READ = 3


_NO_VALUE = Decimal(0)


def _value_of(waiter: _Waiter) -> Decimal:
    return waiter.value if waiter.value is not None else _NO_VALUE


class Shed(Exception):
    """A sheddable request gave way: ``reason`` is ``queue_full`` or ``stale``."""

    def __init__(self, reason: str) -> None:
        """Record why the request was shed."""
        super().__init__(f"shed: {reason}")
        self.reason = reason


class _Waiter:
    """One caller waiting for tokens."""

    __slots__ = ("cost", "deadline", "future", "priority", "value")

    def __init__(
        self,
        priority: int,
        cost: float,
        future: asyncio.Future[None],
        value: Decimal | None,
        deadline: float | None,
    ) -> None:
        self.priority = priority
        self.cost = cost
        self.future = future
        self.value = value
        self.deadline = deadline


class TokenBucket:
    """An async token bucket with a strict-priority wait queue and value-based shedding."""

    def __init__(
        self,
        rate: float,
        capacity: float,
        *,
        name: str = "bucket",
        clock: Callable[[], float] = time.monotonic,
        reserve: float = 0.0,
        max_sheddable: int = 64,
    ) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError(f"{name}: rate and capacity must be positive")
        if not 0 <= reserve < capacity:
            raise ValueError(f"{name}: reserve must be in [0, capacity={capacity})")
        if max_sheddable < 1:
            raise ValueError(f"{name}: max_sheddable must be at least 1")
        self.name = name
        self.rate = rate
        self.capacity = capacity
        self.reserve = float(reserve)
        self.max_sheddable = max_sheddable
        self._clock = clock
        self._tokens = float(capacity)
        self._stamp = clock()
        # Heap entries: (priority, 0 for plain / 1 for sheddable, -value, arrival, waiter).
        # Plain waiters of a priority go before its sheddable ones, those by value.
        self._waiters: list[tuple[int, int, Decimal, int, _Waiter]] = []
        self._sheddable: set[_Waiter] = set()
        self._arrivals = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        #: The most sheddable waiters ever queued at once, and how many were shed, by reason.
        self.peak_sheddable = 0
        self.shed: dict[str, int] = {}

    @property
    def tokens(self) -> float:
        """Tokens available now."""
        self._refill()
        return self._tokens

    @property
    def waiting(self) -> int:
        """Number of callers queued for tokens."""
        return sum(1 for entry in self._waiters if not entry[-1].future.done())

    @property
    def sheddable_waiting(self) -> int:
        """Number of sheddable callers queued for tokens."""
        return len(self._sheddable)

    def _floor(self, priority: int) -> float:
        # Tokens a grant at this priority must leave in the bucket.
        return self.reserve if priority >= Priority.CREATE else 0.0

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

    def try_acquire(self, cost: float, priority: int = Priority.READ) -> bool:
        """Take ``cost`` tokens now if nobody is queued and they are available."""
        self._check_cost(cost)
        if cost + self._floor(priority) > self.capacity:
            raise ValueError(
                f"{self.name}: cost {cost} plus the reserve {self.reserve} exceeds the "
                f"capacity {self.capacity}; such a request could never be paid"
            )
        self._refill()
        if self._waiters or self._tokens - cost < self._floor(priority):
            return False
        self._tokens -= cost
        return True

    async def acquire(
        self,
        cost: float,
        priority: int = Priority.READ,
        *,
        value: Decimal | None = None,
        deadline: float | None = None,
    ) -> None:
        """Wait until ``cost`` tokens can be taken, serving callers by priority then arrival.

        With a ``value`` the request is sheddable (see the module docstring): it may raise
        :class:`Shed` instead of waiting past ``deadline`` (on this bucket's clock) or
        when more valuable requests fill the queue.
        """
        if self.try_acquire(cost, priority):
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        waiter = _Waiter(int(priority), cost, fut, value, deadline if value is not None else None)
        if value is not None:
            self._admit(waiter)
            entry = (waiter.priority, 1, -value, next(self._arrivals), waiter)
        else:
            entry = (waiter.priority, 0, _NO_VALUE, next(self._arrivals), waiter)
        heapq.heappush(self._waiters, entry)
        self._dispatch()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Granted but the caller went away before using the tokens: give them back.
                self._tokens = min(self.capacity, self._tokens + cost)
            self._sheddable.discard(waiter)
            self._dispatch()
            raise

    def _admit(self, waiter: _Waiter) -> None:
        """Make room for a sheddable waiter, or raise Shed if it is worth the least."""
        assert waiter.value is not None
        if len(self._sheddable) >= self.max_sheddable:
            # O(max_sheddable), a few dozen: cheaper than keeping a second heap in step.
            weakest = min(self._sheddable, key=_value_of)
            if waiter.value <= _value_of(weakest):
                self._count_shed("queue_full")
                raise Shed("queue_full")
            self._shed(weakest, "queue_full")
        self._sheddable.add(waiter)
        self.peak_sheddable = max(self.peak_sheddable, len(self._sheddable))

    def _shed(self, waiter: _Waiter, reason: str) -> None:
        self._sheddable.discard(waiter)
        if not waiter.future.done():
            waiter.future.set_exception(Shed(reason))
            self._count_shed(reason)
        self._compact()

    def _compact(self) -> None:
        # A shed waiter's heap entry is only dropped when it reaches the top, and under
        # sustained overload the shed ones are the least valuable, which never do: rebuild
        # the heap once they outnumber the live entries, so it stays bounded.
        entries = len(self._waiters)
        if entries > 2 * (self.max_sheddable + 16) and entries > 2 * self.waiting:
            self._waiters = [e for e in self._waiters if not e[-1].future.done()]
            heapq.heapify(self._waiters)

    def _count_shed(self, reason: str) -> None:
        self.shed[reason] = self.shed.get(reason, 0) + 1

    def _expire(self, now: float) -> float | None:
        """Shed sheddable waiters past their deadline; return the next deadline, if any."""
        upcoming: float | None = None
        for waiter in list(self._sheddable):
            deadline = waiter.deadline
            if deadline is None:
                continue
            if deadline <= now:
                self._shed(waiter, "stale")
            elif upcoming is None or deadline < upcoming:
                upcoming = deadline
        return upcoming

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
        upcoming = self._expire(self._stamp) if self._sheddable else None
        while self._waiters:
            waiter = self._waiters[0][-1]
            if waiter.future.done():  # cancelled or shed while waiting
                heapq.heappop(self._waiters)
                continue
            if self._tokens - waiter.cost < self._floor(waiter.priority):
                break
            heapq.heappop(self._waiters)
            self._sheddable.discard(waiter)
            self._tokens -= waiter.cost
            waiter.future.set_result(None)
        if self._waiters:
            head = self._waiters[0][-1]
            delay = (head.cost + self._floor(head.priority) - self._tokens) / self.rate
            if upcoming is not None:
                # Wake for the earliest deadline too, so a stale waiter is shed on time
                # rather than holding its caller until the bucket refills.
                delay = min(delay, max(0.0, upcoming - self._stamp))
            self._timer = asyncio.get_running_loop().call_later(delay, self._dispatch)
