"""The mock's market-data channels over real sockets: ``orderbook_delta`` and ``ticker``.

Frames are read with raw aiohttp clients (the helpers of test_mock_ws.py) so each test
sees exactly what the mock sends; books and tickers are checked against the mock's own
REST answers at the same instant.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from mmbot.kalshi.auth import Signer
from mmbot.mock.marketfeed import market_id
from mmbot.mock.server import MockConfig, MockExchange
from mmbot.mock.sim import CENT_STRUCTURE, SimMarket
from tests.support.keys import KEY_ID, TestKey
from tests.support.marketfeed import closing, connect, control, recv, rest_get, send

# Book: side -> price string -> contracts.
Book = dict[str, dict[str, Decimal]]


@pytest.fixture
async def mock(rsa_key: TestKey) -> AsyncIterator[MockExchange]:
    # No random walk: every change in these tests is one the test made.
    config = MockConfig(seed=5, markets=12, market_step_seconds=0)
    async with MockExchange(config) as server:
        server.register_key(KEY_ID, rsa_key.public)
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


def cent_markets(mock: MockExchange) -> list[SimMarket]:
    return [
        m
        for m in mock.exchange.markets.values()
        if m.price_level_structure == CENT_STRUCTURE and not m.is_combo
    ]


async def rest_book(
    session: aiohttp.ClientSession, mock: MockExchange, signer: Signer, ticker: str
) -> Book:
    book = (await rest_get(session, mock, signer, f"/markets/{ticker}/orderbook"))["orderbook_fp"]
    return {
        side: {price: Decimal(count) for price, count in book[f"{side}_dollars"]}
        for side in ("yes", "no")
    }


async def drain(ws: aiohttp.ClientWebSocketResponse, quiet: float = 0.15) -> list[dict[str, Any]]:
    """Every frame until none comes for ``quiet`` seconds."""
    frames = []
    while True:
        try:
            frames.append(await recv(ws, within=quiet))
        except TimeoutError:
            return frames


def apply(books: dict[str, Book], frame: dict[str, Any]) -> None:
    """Apply one snapshot or delta to ``books`` (ticker -> book), checking it is sane."""
    msg = frame["msg"]
    if frame["type"] == "orderbook_snapshot":
        books[msg["market_ticker"]] = {
            side: {p: Decimal(c) for p, c in msg.get(f"{side}_dollars_fp", [])}
            for side in ("yes", "no")
        }
        return
    assert frame["type"] == "orderbook_delta", frame
    assert type(msg["ts_ms"]) is int
    assert msg["market_id"] == market_id(msg["market_ticker"])
    levels = books[msg["market_ticker"]][msg["side"]]
    size = levels.get(msg["price_dollars"], Decimal(0)) + Decimal(msg["delta_fp"])
    assert size >= 0, frame
    if size == 0:
        levels.pop(msg["price_dollars"], None)
    else:
        levels[msg["price_dollars"]] = size


async def subscribe(ws: aiohttp.ClientWebSocketResponse, cmd_id: int, **params: Any) -> int:
    await send(ws, {"id": cmd_id, "cmd": "subscribe", "params": params})
    reply = await recv(ws)
    assert reply["type"] == "subscribed", reply
    assert reply["id"] == cmd_id
    sid: int = reply["msg"]["sid"]
    return sid


def move(market: SimMarket, fair_micros: int) -> None:
    market.fair_micros = fair_micros


# ----------------------------------------------------------------------------- orderbook


async def test_snapshot_then_deltas_rebuild_the_rest_book(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    signer = rsa_key.signer()
    first, second = cent_markets(mock)[:2]
    ws = await connect(session, mock, signer)
    async with closing(ws):
        sid = await subscribe(
            ws, 1, channels=["orderbook_delta"], market_tickers=[first.ticker, second.ticker]
        )
        snapshots = [await recv(ws), await recv(ws)]
        assert [(f["type"], f["sid"], f["seq"]) for f in snapshots] == [
            ("orderbook_snapshot", sid, 1),
            ("orderbook_snapshot", sid, 2),
        ]
        assert [f["msg"]["market_ticker"] for f in snapshots] == [first.ticker, second.ticker]
        books: dict[str, Book] = {}
        for frame in snapshots:
            apply(books, frame)
        for market in (first, second):
            assert books[market.ticker] == await rest_book(session, mock, signer, market.ticker)
        seq = 2
        for fair in (300_000, 345_000, 340_000, 700_000, 123_456):
            move(first, fair)
            move(second, 1_000_000 - fair)
            frames = await drain(ws)
            assert frames, "a move of the touch publishes deltas"
            for frame in frames:
                assert frame["sid"] == sid
                assert frame["seq"] == seq + 1, (frame, seq)
                seq = frame["seq"]
                apply(books, frame)
            for market in (first, second):
                assert books[market.ticker] == await rest_book(session, mock, signer, market.ticker)


async def test_one_tick_moves_send_a_couple_of_deltas_removals_first(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    market = cent_markets(mock)[0]
    move(market, 405_000)
    ws = await connect(session, mock, rsa_key.signer())
    async with closing(ws):
        await subscribe(ws, 1, channels=["orderbook_delta"], market_ticker=market.ticker)
        await recv(ws)
        move(market, 415_000)
        deltas = await drain(ws)
        assert len(deltas) == 2
        signs = [Decimal(f["msg"]["delta_fp"]) > 0 for f in deltas]
        assert signs == [False, True]
        # A fair value change that leaves the touch in place changes nothing.
        move(market, 416_000)
        assert await drain(ws, quiet=0.1) == []


async def test_update_subscription_add_delete_and_get_snapshot(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    signer = rsa_key.signer()
    first, second = cent_markets(mock)[:2]
    ws = await connect(session, mock, signer)
    async with closing(ws):
        sid = await subscribe(ws, 1, channels=["orderbook_delta"], market_ticker=first.ticker)
        assert (await recv(ws))["seq"] == 1
        await send(
            ws,
            {
                "id": 2,
                "cmd": "update_subscription",
                "params": {
                    "sids": [sid],
                    "action": "add_markets",
                    "market_tickers": [second.ticker],
                },
            },
        )
        assert await recv(ws) == {
            "id": 2,
            "sid": sid,
            "seq": 2,
            "type": "ok",
            "msg": {"market_tickers": [first.ticker, second.ticker]},
        }
        added = await recv(ws)
        assert (added["type"], added["seq"], added["msg"]["market_ticker"]) == (
            "orderbook_snapshot",
            3,
            second.ticker,
        )
        await send(
            ws,
            {
                "id": 3,
                "cmd": "update_subscription",
                "params": {"sid": sid, "action": "delete_markets", "market_ticker": first.ticker},
            },
        )
        reply = await recv(ws)
        assert (reply["type"], reply["seq"], reply["msg"]) == (
            "ok",
            4,
            {"market_tickers": [second.ticker]},
        )
        move(first, 250_000)
        move(second, 250_000)
        deltas = await drain(ws)
        assert deltas
        assert {f["msg"]["market_ticker"] for f in deltas} == {second.ticker}
        seq = deltas[-1]["seq"]
        await send(
            ws,
            {
                "id": 4,
                "cmd": "update_subscription",
                "params": {"sid": sid, "action": "get_snapshot"},
            },
        )
        assert (await recv(ws))["seq"] == seq + 1
        snapshot = await recv(ws)
        assert (snapshot["type"], snapshot["seq"]) == ("orderbook_snapshot", seq + 2)
        books: dict[str, Book] = {}
        apply(books, snapshot)
        assert books[second.ticker] == await rest_book(session, mock, signer, second.ticker)
        # Errors, as documented.
        cases: list[tuple[dict[str, Any], int]] = [
            ({"channels": ["orderbook_delta"]}, 14),
            ({"channels": ["orderbook_delta"], "market_ticker": "NO-SUCH"}, 16),
            ({"channels": ["orderbook_delta"], "market_ids": [market_id(first.ticker)]}, 11),
            ({"channels": ["orderbook_delta"], "market_ticker": second.ticker}, 6),
        ]
        for params, code in cases:
            await send(ws, {"id": 9, "cmd": "subscribe", "params": params})
            error = await recv(ws)
            assert (error["type"], error["msg"]["code"]) == ("error", code), (params, error)
        await send(
            ws,
            {
                "id": 10,
                "cmd": "update_subscription",
                "params": {"sid": sid, "action": "add_markets", "market_ticker": "NO-SUCH"},
            },
        )
        error = await recv(ws)
        assert error["msg"] == {
            "code": 16,
            "msg": "market NO-SUCH not found",
            "market_ticker": "NO-SUCH",
        }
        await send(ws, {"id": 11, "cmd": "list_subscriptions"})
        assert (await recv(ws))["msg"] == [{"channel": "orderbook_delta", "sid": sid}]
        await send(ws, {"id": 12, "cmd": "unsubscribe", "params": {"sids": [sid]}})
        assert (await recv(ws))["type"] == "unsubscribed"
        move(second, 600_000)
        assert await drain(ws, quiet=0.1) == []


# ----------------------------------------------------------------------------- ticker


async def test_ticker_matches_the_rest_market(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    signer = rsa_key.signer()
    market, other = cent_markets(mock)[:2]
    ws = await connect(session, mock, signer)
    async with closing(ws):
        sid = await subscribe(
            ws, 1, channels=["ticker"], market_ticker=market.ticker, send_initial_snapshot=True
        )
        initial = await recv(ws)
        await send(
            ws, {"id": 2, "cmd": "subscribe", "params": {"channels": ["ticker", "communications"]}}
        )
        replies = [await recv(ws), await recv(ws)]
        sids = {r["msg"]["channel"]: r["msg"]["sid"] for r in replies}
        assert {r["type"] for r in replies} == {"subscribed"}
        everything = sids["ticker"]
        assert sids["communications"] not in (sid, everything)
        for fair in (None, 610_000, 205_000):
            if fair is not None:
                move(market, fair)
            frames = [initial] if fair is None else await drain(ws)
            mine = [f for f in frames if f["sid"] == sid]
            assert len(mine) == 1
            ticker = mine[0]
            assert ticker["type"] == "ticker"
            assert "seq" not in ticker
            if fair is not None:
                assert [f["sid"] for f in frames if f["sid"] == everything] == [everything]
            rest = (await rest_get(session, mock, signer, f"/markets/{market.ticker}"))["market"]
            msg = ticker["msg"]
            assert msg["market_ticker"] == market.ticker
            assert msg["market_id"] == market_id(market.ticker)
            assert msg["yes_bid_dollars"] == rest["yes_bid_dollars"]
            assert msg["yes_ask_dollars"] == rest["yes_ask_dollars"]
            assert msg["price_dollars"] == rest["last_price_dollars"]
            assert msg["yes_bid_size_fp"] == rest["yes_bid_size_fp"]
            assert type(msg["ts_ms"]) is int
            assert msg["ts"] == msg["ts_ms"] // 1000
            assert msg["time"].endswith("Z")
        move(other, 880_000)
        frames = await drain(ws)
        assert [(f["sid"], f["msg"]["market_ticker"]) for f in frames] == [
            (everything, other.ticker)
        ]


# ----------------------------------------------------------------------------- knobs


async def test_a_gap_is_detectable_and_get_snapshot_resyncs(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    signer = rsa_key.signer()
    market = cent_markets(mock)[0]
    move(market, 400_000)
    ws = await connect(session, mock, signer)
    async with closing(ws):
        sid = await subscribe(ws, 1, channels=["orderbook_delta"], market_ticker=market.ticker)
        books: dict[str, Book] = {}
        apply(books, await recv(ws))
        assert await control(session, mock, "md_gap", {}) == {"pending_gaps": 1}
        move(market, 410_000)
        deltas = await drain(ws)
        # Two levels changed; the first delta's seq was spent but never sent.
        assert [f["seq"] for f in deltas] == [3]
        await send(
            ws,
            {
                "id": 2,
                "cmd": "update_subscription",
                "params": {"sid": sid, "action": "get_snapshot"},
            },
        )
        assert (await recv(ws))["seq"] == 4
        apply(books, await recv(ws))
        assert books[market.ticker] == await rest_book(session, mock, signer, market.ticker)
        await control(session, mock, "faults", {"md_gap_fraction": 1.0})
        move(market, 400_000)
        assert await drain(ws, quiet=0.1) == []
        stats = (await rest_get_state(session, mock))["stats"]
        assert stats["md_gaps_injected"] == 3


async def rest_get_state(session: aiohttp.ClientSession, mock: MockExchange) -> dict[str, Any]:
    async with session.get(f"{mock.base_url}/_mock/state", headers=mock.control_headers) as r:
        state: dict[str, Any] = await r.json()
        return state


async def test_malformed_fraction_applies_to_market_data(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    market = cent_markets(mock)[0]
    await control(session, mock, "faults", {"malformed_fraction": 1.0})
    ws = await connect(session, mock, rsa_key.signer())
    async with closing(ws):
        await send(
            ws,
            {
                "id": 1,
                "cmd": "subscribe",
                "params": {"channels": ["ticker"], "market_ticker": market.ticker},
            },
        )
        await recv(ws)
        move(market, 777_000)
        async with asyncio.timeout(2):
            cut = await ws.receive_str()
            whole = await ws.receive_str()
        assert whole.startswith(cut)
        assert len(cut) < len(whole)


async def test_the_update_rate_knob_publishes_steadily(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    markets = cent_markets(mock)[:3]
    ws = await connect(session, mock, rsa_key.signer())
    async with closing(ws):
        await subscribe(ws, 1, channels=["ticker"], market_tickers=[m.ticker for m in markets])
        await control(session, mock, "faults", {"market_updates_per_second": 100})
        start = time.monotonic()
        count = 0
        while time.monotonic() - start < 0.5:
            frame = await recv(ws)
            assert frame["type"] == "ticker"
            count += 1
        await control(session, mock, "faults", {"market_updates_per_second": 0})
    # Every forced move changes the touch, so each is one ticker message.
    assert 35 <= count <= 65


@pytest.mark.slow
async def test_the_update_rate_knob_sustains_200_per_second(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    markets = cent_markets(mock)[:4]
    ws = await connect(session, mock, rsa_key.signer())
    async with closing(ws):
        await subscribe(
            ws, 1, channels=["orderbook_delta"], market_tickers=[m.ticker for m in markets]
        )
        await drain(ws, quiet=0.1)
        await subscribe(ws, 2, channels=["ticker"], market_tickers=[m.ticker for m in markets])
        before = (await rest_get_state(session, mock))["stats"]
        await control(session, mock, "faults", {"market_updates_per_second": 200})
        start = time.monotonic()
        tickers = 0
        last_seq = None
        while time.monotonic() - start < 1.0:
            frame = await recv(ws)
            if frame["type"] == "ticker":
                tickers += 1
            else:
                assert last_seq is None or frame["seq"] == last_seq + 1
                last_seq = frame["seq"]
        await control(session, mock, "faults", {"market_updates_per_second": 0})
        after = (await rest_get_state(session, mock))["stats"]
    assert 170 <= tickers <= 230
    assert 170 <= after["md_forced_moves"] - before["md_forced_moves"] <= 240
    assert after["md_forced_moves_dropped"] == 0
    assert after["md_updates_published"] > before["md_updates_published"]
