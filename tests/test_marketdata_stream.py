"""MarketData with a live OrderbookFeed: the fresher source wins, REST covers the gaps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from mmbot.kalshi.bookfeed import BookTop
from mmbot.kalshi.models import Market
from mmbot.kalshi.rest import Page
from mmbot.marketdata import MarketData
from mmbot.mock.server import MockConfig, MockExchange
from mmbot.strategy import MarketView
from tests.support.factories import kalshi_market
from tests.support.keys import KEY_ID, TestKey
from tests.support.marketfeed import cent_markets, control, make_feed, rest_top, running
from tests.support.mock import rest
from tests.support.polling import eventually

_ZERO = Decimal(0)


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


def view(data: MarketData, ticker: str) -> MarketView:
    seen = data.view(ticker, _ZERO)
    assert seen is not None
    return seen


@pytest.fixture
async def background() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_stream_first_then_rest_when_the_stream_is_gone(
    mock: MockExchange,
    session: aiohttp.ClientSession,
    rsa_key: TestKey,
    monkeypatch: pytest.MonkeyPatch,
    background: list[asyncio.Task[None]],
) -> None:
    signer = rsa_key.signer()
    market = cent_markets(mock)[0]
    client = rest(mock, signer)
    polls: list[dict[str, Any]] = []
    list_markets = client.list_markets

    async def counting(**params: Any) -> Page[Market]:
        polls.append(params)
        return await list_markets(**params)

    monkeypatch.setattr(client, "list_markets", counting)
    feed = make_feed(mock, signer)
    data = MarketData(client, ttl_seconds=0.5, refresh_seconds=0.1, feed=feed)
    try:
        async with running(feed):
            assert await data.ensure_fresh(market.ticker) is not None
            assert list(feed.wanted()) == [market.ticker]
            data.watch(market.ticker)
            expected = await rest_top(session, mock, signer, market.ticker)
            await eventually(lambda: view(data, market.ticker).source == "stream", "streamed")
            seen = view(data, market.ticker)
            assert (seen.yes_bid, seen.yes_ask) == expected
            assert 0 <= seen.age_seconds < 0.5
            assert not seen.stale
            # Steady state: an active market streamed live costs no REST read at all.
            await control(session, mock, "faults", {"market_updates_per_second": 100})
            background.append(asyncio.create_task(data.run()))
            moves = mock.market_feed.stats.md_forced_moves
            await eventually(
                lambda: mock.market_feed.stats.md_forced_moves >= moves + 40, "40 moves", 3
            )
            assert polls == []
            assert view(data, market.ticker).source == "stream"
            await control(session, mock, "faults", {"market_updates_per_second": 0})
            background.pop().cancel()
        # The stream is gone: the REST copy stands in, and ages past the TTL.
        assert feed.top(market.ticker) is None
        assert view(data, market.ticker).source == "rest"
        await eventually(lambda: view(data, market.ticker).stale, "stale after the TTL", 2)
        assert not data.is_fresh(market.ticker)
        # The poll picks the watched market up again.
        market.fair_micros += 50_000
        expected = await rest_top(session, mock, signer, market.ticker)
        background.append(asyncio.create_task(data.run()))
        await eventually(lambda: data.is_fresh(market.ticker), "refreshed over REST", 2)
        seen = view(data, market.ticker)
        assert (seen.source, seen.stale) == ("rest", False)
        assert (seen.yes_bid, seen.yes_ask) == expected
        assert polls
        assert all(p.get("tickers") == [market.ticker] for p in polls)
    finally:
        await client.aclose()


async def test_a_quiet_stream_is_topped_up_over_rest(
    mock: MockExchange,
    session: aiohttp.ClientSession,
    rsa_key: TestKey,
    monkeypatch: pytest.MonkeyPatch,
    background: list[asyncio.Task[None]],
) -> None:
    signer = rsa_key.signer()
    market = cent_markets(mock)[0]
    client = rest(mock, signer)
    polls: list[dict[str, Any]] = []
    list_markets = client.list_markets

    async def counting(**params: Any) -> Page[Market]:
        polls.append(params)
        return await list_markets(**params)

    monkeypatch.setattr(client, "list_markets", counting)
    feed = make_feed(mock, signer)
    data = MarketData(client, ttl_seconds=1.0, refresh_seconds=0.1, feed=feed)
    try:
        async with running(feed):
            await data.ensure_fresh(market.ticker)
            data.watch(market.ticker)
            await eventually(lambda: view(data, market.ticker).source == "stream", "streamed")
            background.append(asyncio.create_task(data.run()))
            # Nothing moves: the subscription falls silent, so the poll covers the market.
            await eventually(lambda: polls, "a REST poll of the quiet market", 2)
            assert polls[0].get("tickers") == [market.ticker]
            assert data.is_fresh(market.ticker)
    finally:
        await client.aclose()


def test_a_crossed_or_locked_view_has_no_mid() -> None:
    def make(bid: str, ask: str) -> MarketView:
        return MarketView(
            ticker="T",
            event_ticker="E",
            yes_bid=Decimal(bid),
            yes_ask=Decimal(ask),
            last_price=Decimal("0.40"),
            price_ranges=(),
            source="stream",
        )

    assert make("0.45", "0.47").mid == Decimal("0.46")
    assert make("0.47", "0.47").mid is None
    assert make("0.48", "0.47").mid is None


async def test_on_refresh_follows_streamed_moves(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    signer = rsa_key.signer()
    market, other = cent_markets(mock)[:2]
    client = rest(mock, signer)
    refreshed: list[tuple[str, Decimal | None]] = []
    marked: list[tuple[str, Decimal | None]] = []
    feed = make_feed(mock, signer)
    data = MarketData(
        client,
        ttl_seconds=5,
        refresh_seconds=5,
        feed=feed,
        on_refresh=lambda t, mid: refreshed.append((t, mid)),
        price_listeners=[lambda t, mid: marked.append((t, mid))],
    )
    try:
        async with running(feed):
            for ticker in (market.ticker, other.ticker):
                await data.ensure_fresh(ticker)
            for ticker in (market.ticker, other.ticker):
                await eventually(
                    lambda t=ticker: view(data, t).source == "stream",  # type: ignore[misc]
                    f"{ticker} streamed",
                )
            refreshed.clear()
            marked.clear()
            for fair in (420_000, 610_000):
                market.fair_micros = fair
                bid, ask = await rest_top(session, mock, signer, market.ticker)
                mid = (bid + ask) / 2
                await eventually(
                    lambda m=mid: (market.ticker, m) in refreshed,  # type: ignore[misc]
                    f"on_refresh with {mid}",
                    within=2,
                )
                assert (market.ticker, mid) in marked
                assert view(data, market.ticker).mid == mid
            assert all(t == market.ticker for t, _ in refreshed)
    finally:
        await client.aclose()


class _StubFeed:
    """A feed holding one fixed top, for the view's rules without sockets."""

    def __init__(self, top: BookTop | None) -> None:
        self._top = top
        self.clock = time.monotonic
        self.on_top: Any = None
        self.pinned: Any = None
        self.wanted: list[str] = []

    def top(self, ticker: str) -> BookTop | None:
        return self._top

    def want(self, ticker: str) -> None:
        self.wanted.append(ticker)

    def last_message_age(self) -> float | None:
        return 0.0


@pytest.mark.parametrize(
    ("bid", "ask", "mid"),
    [
        ("0.40", "0.44", "0.42"),  # a book: its middle
        (None, None, None),  # empty: no mid, although REST knows a last trade
        ("0.48", "0.46", None),  # crossed: no mid either
        ("0.40", None, "0.55"),  # one side only: the last trade, as over REST
    ],
)
def test_a_streamed_view_names_its_source_and_gives_no_mid_on_an_empty_book(
    bid: str | None, ask: str | None, mid: str | None
) -> None:
    later = time.monotonic() + 1  # newer than the REST copy stored below
    top = BookTop(
        None if bid is None else Decimal(bid), None if ask is None else Decimal(ask), later
    )
    data = MarketData(
        None,  # type: ignore[arg-type]  # nothing is fetched
        ttl_seconds=5,
        refresh_seconds=1,
        feed=_StubFeed(top),  # type: ignore[arg-type]
    )
    polled = kalshi_market("T-1", "0.30", "0.36").model_copy(
        update={"last_price_dollars": Decimal("0.55")}
    )
    data._store(polled)
    seen = data.view("T-1", Decimal(0))
    assert seen is not None
    assert seen.source == "stream"
    assert seen.mid == (None if mid is None else Decimal(mid))
