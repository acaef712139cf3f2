"""OrderbookFeed against the mock's ``orderbook_delta`` channel, over real sockets.

Every book the feed holds is checked against the mock's own REST answer at the same
instant; faults (gaps, cut-off frames, drops, unknown markets) come from the mock's
control knobs, and each test waits with :func:`eventually`, never a fixed sleep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import orjson
import pytest

from mmbot.kalshi.auth import Signer
from mmbot.kalshi.bookfeed import BookTop, OrderbookFeed
from mmbot.mock.marketfeed import MarketSubscription
from mmbot.mock.server import MockConfig, MockExchange
from tests.support.keys import KEY_ID, TestKey
from tests.support.marketfeed import cent_markets, control, make_feed, rest_top, running
from tests.support.polling import eventually


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


def pair(top: BookTop | None) -> tuple[Decimal | None, Decimal | None] | None:
    return None if top is None else (top.yes_bid, top.yes_ask)


async def matches_rest(
    feed: OrderbookFeed,
    session: aiohttp.ClientSession,
    mock: MockExchange,
    signer: Signer,
    tickers: list[str],
    within: float = 3.0,
) -> None:
    """Wait until the feed's top of every market equals the mock's REST answer."""
    for ticker in tickers:
        expected = await rest_top(session, mock, signer, ticker)
        await eventually(
            lambda t=ticker, e=expected: pair(feed.top(t)) == e,  # type: ignore[misc]
            f"{ticker} top == REST {expected} (have {pair(feed.top(ticker))})",
            within=within,
        )


def subscriptions(mock: MockExchange) -> list[MarketSubscription]:
    feed = mock.market_feed
    return [
        sub
        for conn in list(mock._connections)
        for sub in feed.subscriptions_of(conn).values()
        if sub.channel == "orderbook_delta"
    ]


async def test_tops_match_rest_and_follow_moves(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    signer = rsa_key.signer()
    first, second = cent_markets(mock)[:2]
    tickers = [first.ticker, second.ticker]
    feed = make_feed(mock, signer)
    told: list[str] = []
    feed.on_top = told.append
    lags: list[float] = []
    feed.on_lag = lags.append
    for ticker in tickers:
        feed.want(ticker)
    async with running(feed):
        await matches_rest(feed, session, mock, signer, tickers)
        assert feed.stats.connected
        assert feed.stats.markets == 2
        assert feed.stats.snapshots == 2
        assert set(told) == set(tickers)
        for fair in (350_000, 420_000, 610_000):
            told.clear()
            first.fair_micros = fair
            second.fair_micros = 1_000_000 - fair
            await matches_rest(feed, session, mock, signer, tickers)
            assert set(told) == set(tickers)
        assert feed.stats.deltas > 0
        assert feed.stats.gaps == feed.stats.malformed == feed.stats.unknown == 0
        assert lags
        assert all(-1.0 < lag < 1.0 for lag in lags)
        age = feed.last_message_age()
        assert age is not None
        assert 0 <= age < 1.0


async def test_a_gap_invalidates_every_book_until_the_resync(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    signer = rsa_key.signer()
    first, second = cent_markets(mock)[:2]
    tickers = [first.ticker, second.ticker]
    feed = make_feed(mock, signer)
    # What the hook saw: (gaps so far, snapshots so far, ticker, top at that moment).
    seen: list[tuple[int, int, str, BookTop | None]] = []
    feed.on_top = lambda t: seen.append((feed.stats.gaps, feed.stats.snapshots, t, feed.top(t)))
    for ticker in tickers:
        feed.want(ticker)
    async with running(feed):
        await matches_rest(feed, session, mock, signer, tickers)
        snapshots = feed.stats.snapshots
        before = pair(feed.top(second.ticker))
        seen.clear()
        assert await control(session, mock, "md_gap", {}) == {"pending_gaps": 1}
        first.fair_micros += 60_000  # several ticks: more than one delta
        await eventually(lambda: feed.stats.gaps == 1, "the gap is seen", within=3)
        await eventually(lambda: feed.stats.resyncs >= 1, "a resync is asked for", within=3)
        await matches_rest(feed, session, mock, signer, tickers)
        assert feed.stats.gaps == 1
        assert feed.stats.snapshots >= snapshots + 2
        assert pair(feed.top(second.ticker)) == before
        # Right after the gap, both books went invalid (the untouched one too), and
        # no hook call between the gap and a market's fresh snapshot saw a valid book.
        invalidated = [t for gaps, _, t, top in seen if gaps == 1 and top is None]
        assert set(invalidated) >= set(tickers), seen
        for ticker in tickers:
            calls = [(snaps, top) for _, snaps, t, top in seen if t == ticker]
            first_valid = next(i for i, (_, top) in enumerate(calls) if top is not None)
            assert calls[0][1] is None, calls
            assert calls[first_valid][0] > snapshots, calls
        # The mock agrees a delta was skipped.
        state = await (
            await session.get(f"{mock.base_url}/_mock/state", headers=mock.control_headers)
        ).json()
        assert state["stats"]["md_gaps_injected"] == 1


async def test_cut_off_frames_are_survived_and_books_resync(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    signer = rsa_key.signer()
    first, second = cent_markets(mock)[:2]
    tickers = [first.ticker, second.ticker]
    feed = make_feed(mock, signer)
    for ticker in tickers:
        feed.want(ticker)
    async with running(feed):
        await matches_rest(feed, session, mock, signer, tickers)
        await control(session, mock, "faults", {"malformed_fraction": 1.0})
        first.fair_micros += 30_000
        await eventually(lambda: feed.stats.malformed > 0, "a cut-off frame is seen", within=3)
        second.fair_micros -= 30_000
        await eventually(lambda: feed.stats.malformed > 1, "another cut-off frame", within=3)
        await control(session, mock, "faults", {"malformed_fraction": 0.0})
        first.fair_micros -= 50_000
        second.fair_micros += 50_000
        await matches_rest(feed, session, mock, signer, tickers)
        assert feed.stats.connected
        assert feed.stats.reconnects == 0
        assert feed.stats.resyncs >= 1


async def test_a_drop_invalidates_then_reconnects(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    signer = rsa_key.signer()
    first, second = cent_markets(mock)[:2]
    tickers = [first.ticker, second.ticker]
    feed = make_feed(mock, signer)
    seen: list[tuple[str, bool, BookTop | None]] = []
    feed.on_top = lambda t: seen.append((t, feed.stats.connected, feed.top(t)))
    for ticker in tickers:
        feed.want(ticker)
    async with running(feed):
        await matches_rest(feed, session, mock, signer, tickers)
        seen.clear()
        assert (await control(session, mock, "drop_ws", {}))["dropped"] == 1
        await eventually(lambda: feed.stats.reconnects >= 1, "the drop is seen", within=3)
        first.fair_micros += 50_000  # moved while (or after) the feed was away
        await matches_rest(feed, session, mock, signer, tickers)
        assert feed.stats.connected
        assert feed.stats.markets == 2
        # The drop told the hook both books went, while disconnected.
        dropped = {t for t, connected, top in seen if top is None and not connected}
        assert dropped == set(tickers), seen


async def test_unwanted_markets_are_dropped_after_the_linger_unless_pinned(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    signer = rsa_key.signer()
    kept, dropped = cent_markets(mock)[:2]
    feed = make_feed(mock, signer, linger_seconds=0.2)
    feed.pinned = lambda ticker: ticker == kept.ticker
    feed.want(kept.ticker)
    feed.want(dropped.ticker)
    async with running(feed):
        await matches_rest(feed, session, mock, signer, [kept.ticker, dropped.ticker], within=0.15)
        await eventually(lambda: feed.stats.markets == 1, "the unpinned market is dropped", 3)
        assert feed.top(dropped.ticker) is None
        assert list(feed.wanted()) == [kept.ticker]
        await eventually(
            lambda: [s.tickers for s in subscriptions(mock)] == [[kept.ticker]],
            "the mock's subscription holds only the pinned market",
            within=3,
        )
        kept.fair_micros += 40_000
        await matches_rest(feed, session, mock, signer, [kept.ticker])
        # Wanted again: subscribed again.
        feed.want(dropped.ticker)
        await matches_rest(feed, session, mock, signer, [dropped.ticker])
        assert feed.stats.gaps == 0


async def test_unknown_fields_and_message_types_are_tolerated(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    signer = rsa_key.signer()
    market = cent_markets(mock)[0]
    feed = make_feed(mock, signer)
    feed.want(market.ticker)
    async with running(feed):
        await matches_rest(feed, session, mock, signer, [market.ticker])
        [sub] = subscriptions(mock)
        deltas = feed.stats.deltas
        # A level far below the touch comes and goes, each delta with fields unheard of;
        # the test numbers them in the subscription's own sequence.
        for change in ("7.00", "-7.00"):
            sub.seq += 1
            frame = {
                "type": "orderbook_delta",
                "sid": sub.sid,
                "seq": sub.seq,
                "future_top_level": {"x": 1},
                "msg": {
                    "market_ticker": market.ticker,
                    "market_id": "whatever",
                    "price_dollars": "0.0100",
                    "delta_fp": change,
                    "side": "yes",
                    "ts_ms": 1,
                    "client_order_id": None,
                    "new_field": [1, 2, 3],
                },
            }
            sub.conn.send_exact(orjson.dumps(frame).decode())
        sub.conn.send_exact(orjson.dumps({"type": "market_lifecycle_v3", "msg": {}}).decode())
        await eventually(lambda: feed.stats.unknown == 1, "the unknown type is counted", 3)
        assert feed.stats.deltas == deltas + 2
        assert feed.stats.malformed == feed.stats.gaps == 0
        market.fair_micros += 30_000
        await matches_rest(feed, session, mock, signer, [market.ticker])
        assert feed.stats.gaps == 0


async def test_an_unknown_market_is_dropped_and_the_others_stream(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    signer = rsa_key.signer()
    first, second, third = cent_markets(mock)[:3]
    feed = make_feed(mock, signer)
    # In the first subscribe...
    for ticker in (first.ticker, "NO-SUCH-1", second.ticker):
        feed.want(ticker)
    async with running(feed):
        await matches_rest(feed, session, mock, signer, [first.ticker, second.ticker])
        assert feed.stats.errors == 1
        assert "NO-SUCH-1" not in feed.wanted()
        assert feed.top("NO-SUCH-1") is None
        # ...and in a later add_markets, alongside a real market.
        feed.want("NO-SUCH-2")
        feed.want(third.ticker)
        await eventually(lambda: feed.stats.errors == 2, "the add is refused", within=3)
        await matches_rest(feed, session, mock, signer, [first.ticker, second.ticker, third.ticker])
        assert "NO-SUCH-2" not in feed.wanted()
        assert feed.stats.markets == 3
        first.fair_micros += 30_000
        third.fair_micros -= 30_000
        await matches_rest(feed, session, mock, signer, [first.ticker, second.ticker, third.ticker])
        assert feed.stats.reconnects == 0
        assert feed.stats.gaps == 0
