"""Helpers for tests that consume a CommunicationsStream, as the daemon will."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from mmbot.kalshi.auth import Signer
from mmbot.kalshi.ws import CommunicationsStream, Event, Reconnected
from mmbot.mock.server import MockExchange


class Consumer:
    """Iterates a stream in its own task, like the daemon will, and queues what it yields."""

    def __init__(self, stream: CommunicationsStream) -> None:
        self.stream = stream
        self.items: asyncio.Queue[Event | Reconnected] = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with contextlib.aclosing(self.stream.events()) as events:
            async for item in events:
                await self.items.put(item)

    async def next(self, within: float = 3.0) -> Event | Reconnected:
        """The next yielded item; raises what the stream raised if it ended instead."""
        getter = asyncio.ensure_future(self.items.get())
        try:
            async with asyncio.timeout(within):
                await asyncio.wait({getter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        self.task.result()
        raise AssertionError("the stream ended without yielding")

    async def next_of(self, kind: type[Any], within: float = 3.0) -> Any:
        """The next yielded item of type ``kind``, skipping others."""
        async with asyncio.timeout(within):
            while True:
                item = await self.next(within)
                if isinstance(item, kind):
                    return item

    async def finished(self, within: float = 2.0) -> None:
        """Wait for the iteration to end and re-raise its error, if any."""
        async with asyncio.timeout(within):
            await asyncio.wait({self.task})
        self.task.result()


@contextlib.asynccontextmanager
async def consuming(stream: CommunicationsStream) -> AsyncIterator[Consumer]:
    """Consume ``stream`` for the block; close it and wait for the consumer afterwards."""
    consumer = Consumer(stream)
    try:
        yield consumer
    finally:
        await stream.close()
        async with asyncio.timeout(3):
            await asyncio.wait({consumer.task})
        if not consumer.task.cancelled():
            consumer.task.exception()  # retrieved here; tests check it where it matters


@contextlib.asynccontextmanager
async def consuming_mock(mock: MockExchange, signer: Signer) -> AsyncIterator[Consumer]:
    """A subscribed stream on the mock exchange, with test-sized reconnect delays."""
    stream = CommunicationsStream(
        mock.ws_url, signer, reconnect_min_seconds=0.01, reconnect_max_seconds=0.05
    )
    async with consuming(stream) as consumer:
        await until(lambda: stream.stats.connected)
        yield consumer


async def until(predicate: Callable[[], bool], within: float = 3.0) -> None:
    """Wait until ``predicate()`` holds."""
    async with asyncio.timeout(within):
        # Polls state (server lists, stream stats) that exposes no event to wait on.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)
