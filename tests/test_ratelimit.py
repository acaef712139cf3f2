"""Token buckets: refill arithmetic, strict priority among waiters, cancellation."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmbot.kalshi.ratelimit import Priority, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


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
