"""Token buckets: refill arithmetic, strict priority among waiters, cancellation."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmbot.kalshi.ratelimit import Priority, Shed, TokenBucket
from tests.support.clock import FakeClock


@given(
    rate=st.integers(min_value=1, max_value=2000),
    capacity=st.integers(min_value=10, max_value=4000),
    steps=st.lists(
        st.tuples(st.integers(min_value=0, max_value=500), st.integers(min_value=1, max_value=10)),
        max_size=60,
    ),
)
def test_never_grants_more_than_capacity_plus_refill(
    rate: int, capacity: int, steps: list[tuple[int, int]]
) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, capacity, clock=clock)
    granted = 0
    for advance_ms, cost in steps:
        clock.now += advance_ms / 1000
        before = bucket.tokens
        ok = bucket.try_acquire(cost)
        # A call succeeds exactly when the bucket holds enough tokens.
        assert ok == (before >= cost)
        granted += cost if ok else 0
        assert granted <= capacity + rate * clock.now + 1e-6
        assert 0 <= bucket.tokens <= capacity


def test_cost_above_capacity_is_an_error() -> None:
    bucket = TokenBucket(10, 5)
    with pytest.raises(ValueError, match="could never be paid"):
        bucket.try_acquire(10)


async def test_waiters_are_served_by_priority_then_arrival() -> None:
    bucket = TokenBucket(rate=200, capacity=10, name="write")
    assert bucket.try_acquire(10)  # exhausted
    order: list[str] = []

    async def take(label: str, cost: int, priority: Priority) -> None:
        await bucket.acquire(cost, priority)
        order.append(label)

    tasks = [
        asyncio.create_task(take("create-1", 2, Priority.CREATE)),
        asyncio.create_task(take("create-2", 2, Priority.CREATE)),
        asyncio.create_task(take("delete", 2, Priority.DELETE)),
        asyncio.create_task(take("confirm", 10, Priority.CONFIRM)),
    ]
    await asyncio.sleep(0)  # let every task queue before any refill could serve one
    assert bucket.waiting == 4
    async with asyncio.timeout(2):
        await asyncio.gather(*tasks)
    # The confirm costs five times a create and still goes first: nothing overtakes it.
    assert order == ["confirm", "delete", "create-1", "create-2"]


async def test_cancelled_waiter_does_not_consume_tokens() -> None:
    bucket = TokenBucket(rate=100, capacity=10)
    assert bucket.try_acquire(10)
    doomed = asyncio.create_task(bucket.acquire(10, Priority.CONFIRM))
    survivor = asyncio.create_task(bucket.acquire(10, Priority.CREATE))
    await asyncio.sleep(0)
    doomed.cancel()
    async with asyncio.timeout(1):
        await survivor
    assert doomed.cancelled()
    assert bucket.waiting == 0


def test_drain_empties_the_bucket_until_it_refills() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1000, capacity=100, clock=clock)
    bucket.drain()
    assert bucket.tokens == 0
    assert not bucket.try_acquire(10)
    clock.now += 0.009
    assert not bucket.try_acquire(10)
    clock.now += 0.002
    assert bucket.try_acquire(10)


# ----------------------------------------------------------------------------- overload


async def test_sheddable_waiters_are_served_by_value_not_arrival() -> None:
    bucket = TokenBucket(rate=500, capacity=10, name="write")
    assert bucket.try_acquire(10)
    order: list[str] = []

    async def take(label: str, value: str | None, priority: Priority = Priority.CREATE) -> None:
        await bucket.acquire(
            2, priority, value=None if value is None else Decimal(value), deadline=1e12
        )
        order.append(label)

    tasks = [
        asyncio.create_task(take("low", "0.10")),
        asyncio.create_task(take("high", "3.00")),
        asyncio.create_task(take("mid", "1.50")),
        asyncio.create_task(take("requote", None)),  # plain: before every sheddable one
        asyncio.create_task(take("confirm", None, Priority.CONFIRM)),
    ]
    await asyncio.sleep(0)
    assert bucket.sheddable_waiting == 3
    async with asyncio.timeout(2):
        await asyncio.gather(*tasks)
    assert order == ["confirm", "requote", "high", "mid", "low"]
    assert bucket.peak_sheddable == 3
    assert bucket.shed == {}


async def test_a_full_queue_sheds_the_least_valuable() -> None:
    bucket = TokenBucket(rate=50, capacity=10, max_sheddable=2)
    assert bucket.try_acquire(10)
    first = asyncio.create_task(bucket.acquire(2, Priority.CREATE, value=Decimal(1)))
    second = asyncio.create_task(bucket.acquire(2, Priority.CREATE, value=Decimal(5)))
    await asyncio.sleep(0)
    # Worth less than everything waiting: shed at once, never queued.
    with pytest.raises(Shed) as poor:
        await bucket.acquire(2, Priority.CREATE, value=Decimal("0.5"))
    assert poor.value.reason == "queue_full"
    # Worth more than the weakest: takes its place, and the weakest gives way.
    third = asyncio.create_task(bucket.acquire(2, Priority.CREATE, value=Decimal(3)))
    await asyncio.sleep(0)
    with pytest.raises(Shed):
        await first
    assert bucket.sheddable_waiting == 2
    async with asyncio.timeout(2):
        await asyncio.gather(second, third)
    assert bucket.shed == {"queue_full": 2}
    assert bucket.peak_sheddable == 2


async def test_a_waiter_past_its_deadline_is_shed_on_time() -> None:
    bucket = TokenBucket(rate=1, capacity=10)  # the next 2 tokens are 2 s away
    assert bucket.try_acquire(10)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Shed) as stale:
        await bucket.acquire(2, Priority.CREATE, value=Decimal(1), deadline=time.monotonic() + 0.05)
    assert stale.value.reason == "stale"
    # Shed at its deadline, not when tokens would have come.
    assert loop.time() - started < 1
    assert bucket.sheddable_waiting == 0
    assert bucket.shed == {"stale": 1}


async def test_creations_leave_the_reserve_for_confirmations() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=100, capacity=30, reserve=20, clock=clock)
    assert bucket.try_acquire(2, Priority.CREATE)
    assert bucket.try_acquire(8, Priority.CREATE)
    # 20 left: the reserve. A creation may not touch it, a confirmation and a delete may.
    assert not bucket.try_acquire(2, Priority.CREATE)
    assert bucket.try_acquire(10, Priority.CONFIRM)
    assert bucket.try_acquire(2, Priority.DELETE)
    assert not bucket.try_acquire(2, Priority.CREATE)
    with pytest.raises(ValueError, match="reserve"):
        bucket.try_acquire(12, Priority.CREATE)  # 12 + 20 > 30: never payable


def test_bucket_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="reserve"):
        TokenBucket(10, 10, reserve=10)
    with pytest.raises(ValueError, match="max_sheddable"):
        TokenBucket(10, 10, max_sheddable=0)


@given(
    values=st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=40),
    limit=st.integers(min_value=1, max_value=8),
)
def test_shedding_keeps_the_most_valuable(values: list[int], limit: int) -> None:
    """Whatever the arrival order, the waiters left are the `limit` most valuable."""

    async def run() -> None:
        bucket = TokenBucket(rate=1, capacity=10, max_sheddable=limit)
        assert bucket.try_acquire(10)
        tasks = [
            asyncio.create_task(bucket.acquire(2, Priority.CREATE, value=Decimal(v)))
            for v in values
        ]
        for _ in range(3):  # every task queues, and every shed one wakes to its Shed
            await asyncio.sleep(0)
        assert bucket.sheddable_waiting <= limit
        kept = sorted((v for v, t in zip(values, tasks, strict=True) if not t.done()), reverse=True)
        best = sorted(values, reverse=True)[:limit]
        # Ties may keep either of two equal values; the multiset of values is what counts.
        assert kept == best[: len(kept)]
        assert len(kept) == min(limit, len(values))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())


async def test_the_wait_queue_stays_bounded_under_sustained_shedding() -> None:
    bucket = TokenBucket(rate=1, capacity=10, max_sheddable=4)
    assert bucket.try_acquire(10)
    tasks = [
        asyncio.create_task(bucket.acquire(2, Priority.CREATE, value=Decimal(n)))
        for n in range(5000)  # each newcomer is worth more: the weakest waiter is shed
    ]
    for _ in range(3):
        await asyncio.sleep(0)
    assert bucket.sheddable_waiting == 4
    assert bucket.shed == {"queue_full": 4996}
    assert len(bucket._waiters) <= 2 * (4 + 16) + 1
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
