"""Raw WebSocket and REST helpers for tests of the mock's channels and the order-book feed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType

from mmbot.kalshi.auth import Signer
from mmbot.kalshi.bookfeed import OrderbookFeed
from mmbot.mock.server import MockExchange
from mmbot.mock.sim import CENT_STRUCTURE, SimMarket


async def connect(
    session: aiohttp.ClientSession, mock: MockExchange, signer: Signer | None, **options: Any
) -> aiohttp.ClientWebSocketResponse:
    headers = signer.headers("GET", mock.ws_url) if signer is not None else {}
    ws: aiohttp.ClientWebSocketResponse = await session.ws_connect(
        mock.ws_url, headers=headers, **options
    )
    return ws


@contextlib.asynccontextmanager
async def closing(
    ws: aiohttp.ClientWebSocketResponse,
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    try:
        yield ws
    finally:
        await ws.close()


async def send(ws: aiohttp.ClientWebSocketResponse, command: Any) -> None:
    await ws.send_str(command if isinstance(command, str) else orjson.dumps(command).decode())


async def recv(ws: aiohttp.ClientWebSocketResponse, within: float = 2.0) -> dict[str, Any]:
    """The next text frame as JSON, less its ``sending_ts_ms`` (control frames are skipped).

    Every frame the mock sends must carry ``sending_ts_ms``, an integer in milliseconds;
    it is checked and removed here so tests can compare the rest exactly.
    """
    async with asyncio.timeout(within):
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                data: dict[str, Any] = orjson.loads(msg.data)
                sent_ms = data.pop("sending_ts_ms", None)
                assert type(sent_ms) is int, data
                assert sent_ms > 0, data
                return data
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                raise AssertionError(f"connection closed: {msg.data!r} {msg.extra!r}")


async def rest_get(
    session: aiohttp.ClientSession, mock: MockExchange, signer: Signer, path: str
) -> dict[str, Any]:
    url = mock.rest_url + path
    async with session.get(url, headers=signer.headers("GET", url)) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def control(session: aiohttp.ClientSession, mock: MockExchange, path: str, body: Any) -> Any:
    url = f"{mock.base_url}/_mock/{path}"
    async with session.post(url, json=body, headers=mock.control_headers) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def cent_markets(mock: MockExchange) -> list[SimMarket]:
    markets = [
        m
        for m in mock.exchange.markets.values()
        if m.price_level_structure == CENT_STRUCTURE and not m.is_combo
    ]
    # Away from the edges so both sides of every book hold bids.
    for number, market in enumerate(markets):
        market.fair_micros = 300_000 + 40_000 * number
    return markets


def make_feed(mock: MockExchange, signer: Signer, **options: Any) -> OrderbookFeed:
    settings: dict[str, Any] = {"reconnect_min_seconds": 0.05, "reconnect_max_seconds": 0.2}
    settings.update(options)
    return OrderbookFeed(mock.ws_url, signer, **settings)


@asynccontextmanager
async def running(feed: OrderbookFeed) -> AsyncIterator[OrderbookFeed]:
    task = asyncio.create_task(feed.run())
    try:
        yield feed
    finally:
        await feed.close()
        await asyncio.wait_for(task, 3)


async def rest_top(
    session: aiohttp.ClientSession, mock: MockExchange, signer: Signer, ticker: str
) -> tuple[Decimal, Decimal]:
    market = (await rest_get(session, mock, signer, f"/markets/{ticker}"))["market"]
    return Decimal(market["yes_bid_dollars"]), Decimal(market["yes_ask_dollars"])
