"""History listings the exchange can answer: bounded windows, paged, retried, split on 5xx.

Kalshi times out (500/504) on an unbounded ``GET /communications/quotes``; the mock refuses
one the same way, and the client walks ``min_ts``/``max_ts`` windows over real sockets.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from mmbot.config.models import KalshiSettings
from mmbot.kalshi.errors import KalshiError, ServerError
from mmbot.kalshi.history import HistoryWindowError, HistoryWindows, Page, iter_history, windows
from mmbot.kalshi.rest import KalshiRestClient
from mmbot.mock.exchange import User
from mmbot.mock.server import MockConfig, MockExchange
from tests.support.factories import cent_market
from tests.support.keys import TestKey

MAKER_KEY_ID = "maker-key-history"
HOUR = 3600
FAILURE = (500, {"code": "internal_server_error", "message": "timed out"})


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
def key(ed25519_key: TestKey) -> TestKey:
    """The maker's signing key."""
    return ed25519_key


@asynccontextmanager
async def _mock(
    key: TestKey, max_window: float = 6 * HOUR, *, scripted: bool = False
) -> AsyncIterator[tuple[MockExchange, User]]:
    """A mock enforcing ``max_window`` with the maker registered (recording if ``scripted``)."""
    config = MockConfig(seed=3, market_step_seconds=0, max_history_window_seconds=max_window)
    mock = MockExchange.scripted(config=config) if scripted else MockExchange(config)
    async with mock:
        yield mock, mock.register_key(MAKER_KEY_ID, key.public)


def _client(
    mock: MockExchange,
    key: TestKey,
    history: HistoryWindows,
    *,
    retry_deadline: float = 0.0,
    calls: list[str] | None = None,
    sleep: Callable[[float], Awaitable[None]] = _no_sleep,
) -> KalshiRestClient:
    """A maker client with ``history`` windows, recording each answer's status in ``calls``."""

    def observe(endpoint: str, status: str, _: float) -> None:
        if calls is not None:
            calls.append(f"{endpoint} {status}")

    return KalshiRestClient(
        mock.rest_url,
        key.signer(MAKER_KEY_ID),
        retry_deadline_seconds=retry_deadline,
        sleep=sleep,
        on_response=observe,
        history=history,
    )


def _quotes_at(mock: MockExchange, maker: User, moments: list[int]) -> list[str]:
    """One open quote of ``maker`` last updated at each Unix second of ``moments``."""
    market = cent_market(mock)
    real_clock = mock.exchange.clock
    ids = []
    try:
        for moment in moments:
            at = datetime.fromtimestamp(moment, UTC)
            mock.exchange.clock = lambda at=at: at  # type: ignore[misc]
            # One requester per quote: a maker's second quote on an RFQ would replace its first.
            requester = mock.exchange.add_user()
            rfq = mock.exchange.create_rfq(
                requester,
                {"market_ticker": market.ticker, "contracts_fp": "5", "rest_remainder": False},
            )
            body = {"rfq_id": rfq.id, "yes_bid": "0.40", "no_bid": "0.50", "rest_remainder": False}
            ids.append(mock.exchange.create_quote(maker, body).id)
    finally:
        mock.exchange.clock = real_clock
    return ids


# ---------------------------------------------------------------------- the mock refuses


async def test_the_mock_refuses_unbounded_and_too_wide_history_queries(key: TestKey) -> None:
    async with _mock(key, 2 * HOUR) as (mock, _), _client(mock, key, HistoryWindows()) as c:
        now = int(time.time())
        cases: list[tuple[str, int | None, int | None]] = [
            ("unbounded", None, None),
            ("no max_ts", now - HOUR, None),
            ("no min_ts", None, now),
            ("too wide", now - 3 * HOUR, now),
        ]
        for what, low, high in cases:
            with pytest.raises(ServerError) as quotes:
                await c.list_quotes(user_filter="self", min_ts=low, max_ts=high)
            assert quotes.value.status == 500, what
            assert quotes.value.code == "internal_server_error"
            with pytest.raises(ServerError):
                await c.list_fills(min_ts=low, max_ts=high)
        low, high = now - 2 * HOUR, now
        assert (await c.list_quotes(user_filter="self", min_ts=low, max_ts=high)).items == []
        assert (await c.list_fills(min_ts=low, max_ts=high)).items == []


def test_mock_config_validates_the_window() -> None:
    assert MockConfig().max_history_window_seconds >= KalshiSettings().history_window_seconds
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="max_history_window_seconds"):
            MockConfig(max_history_window_seconds=bad)


# ---------------------------------------------------------------------- windows over sockets


async def test_windows_cover_the_range_and_list_every_quote_once(key: TestKey) -> None:
    async with _mock(key) as (mock, maker):
        start = int(time.time()) - 10 * HOUR
        # Spread over ten hours, two in the second the first two windows share (listed by
        # both), and one before the range.
        moments = [start + HOUR, start + HOUR - 1, start + 90, start + 5 * HOUR + 7]
        moments += [start + h * 1800 + 11 for h in range(0, 20, 3)]
        expected = _quotes_at(mock, maker, moments)
        (before,) = _quotes_at(mock, maker, [start - 600])
        calls: list[str] = []
        history = HistoryWindows(lookback_seconds=11 * HOUR, window_seconds=HOUR)
        async with _client(mock, key, history, calls=calls) as c:
            listed = [q.id async for q in c.iter_quotes(user_filter="self", min_ts=start, limit=2)]
    assert sorted(listed) == sorted(expected)  # each once, in spite of overlapping windows
    assert before not in listed
    assert all(call == "list_quotes 200" for call in calls)
    # Ten windows of an hour up to now (+ clock slack), plus extra pages where they were full.
    assert len(calls) >= len(windows(start, int(time.time()) + 60, HOUR)) >= 10


async def test_default_range_is_the_lookback_up_to_now(key: TestKey) -> None:
    async with _mock(key) as (mock, maker):
        now = int(time.time())
        recent, old = _quotes_at(mock, maker, [now - 2 * HOUR, now - 30 * HOUR])
        history = HistoryWindows(lookback_seconds=24 * HOUR, window_seconds=6 * HOUR)
        async with _client(mock, key, history) as c:
            listed = [q.id async for q in c.iter_quotes(user_filter="self", status="open")]
            # A min_ts past the lookback is cut to it: the listing never runs to many windows.
            early = now - 40 * HOUR
            reaching = [q.id async for q in c.iter_quotes(user_filter="self", min_ts=early)]
            fills = [f async for f in c.iter_fills(order_id="none")]
    assert listed == reaching == [recent]
    assert old not in listed
    assert fills == []


async def test_a_window_the_exchange_times_out_on_is_split_until_it_answers(key: TestKey) -> None:
    # The exchange (here: the mock's limit) times out on windows wider than 20 minutes; the
    # client's hour windows are halved until they are answered, and nothing is lost.
    async with _mock(key, 1200) as (mock, maker):
        start = int(time.time()) - 3 * HOUR
        expected = _quotes_at(mock, maker, [start + m * 600 + 3 for m in range(18)])
        calls: list[str] = []
        history = HistoryWindows(
            lookback_seconds=3 * HOUR, window_seconds=HOUR, min_window_seconds=60
        )
        async with _client(mock, key, history, calls=calls) as c:
            listed = [q.id async for q in c.iter_quotes(user_filter="self", min_ts=start)]
    assert sorted(listed) == sorted(expected)
    assert "list_quotes 500" in calls


async def test_a_5xx_on_a_page_is_retried_and_the_listing_completes(key: TestKey) -> None:
    async with _mock(key, scripted=True) as (mock, maker):
        (quote_id,) = _quotes_at(mock, maker, [int(time.time()) - 100])
        mock.scripting.script("GET", "/communications/quotes", [FAILURE, FAILURE])
        calls: list[str] = []
        history = HistoryWindows(lookback_seconds=HOUR, window_seconds=HOUR)
        # The client's own retries (5 s deadline, no real sleep) carry it over the two 500s.
        async with _client(mock, key, history, retry_deadline=5.0, calls=calls) as c:
            listed = [q.id async for q in c.iter_quotes(user_filter="self")]
    assert listed == [quote_id]
    assert calls[:3] == ["list_quotes 500", "list_quotes 500", "list_quotes 200"]
    bounded = mock.scripting.calls("GET", "/communications/quotes")
    assert all("min_ts" in r.query and "max_ts" in r.query for r in bounded)


async def test_a_smallest_window_that_fails_is_retried_by_the_walk(key: TestKey) -> None:
    async with _mock(key, scripted=True) as (mock, maker):
        (quote_id,) = _quotes_at(mock, maker, [int(time.time()) - 30])
        mock.scripting.script("GET", "/communications/quotes", [FAILURE] * 3)
        history = HistoryWindows(
            lookback_seconds=300, window_seconds=300, min_window_seconds=300, deadline_seconds=5
        )
        async with _client(mock, key, history) as c:  # no client retries: the walk retries
            listed = [q.id async for q in c.iter_quotes(user_filter="self")]
    assert listed == [quote_id]


@pytest.mark.parametrize("endpoint", ["quotes", "fills"])
async def test_a_window_failing_past_the_deadline_raises(key: TestKey, endpoint: str) -> None:
    async with _mock(key, scripted=True) as (mock, _):
        path = "/communications/quotes" if endpoint == "quotes" else "/portfolio/fills"
        mock.scripting.script("GET", path, [FAILURE], repeat_last=True)
        history = HistoryWindows(
            lookback_seconds=HOUR,
            window_seconds=HOUR,
            min_window_seconds=HOUR,
            deadline_seconds=0.2,
        )
        started = time.monotonic()
        # Real sleeps: the walk backs off between attempts rather than spinning.
        async with _client(mock, key, history, sleep=asyncio.sleep) as c:
            listing = c.iter_quotes(user_filter="self") if endpoint == "quotes" else c.iter_fills()
            with pytest.raises(HistoryWindowError) as failed:
                _ = [item async for item in listing]
    assert isinstance(failed.value, KalshiError)  # what every caller already handles
    assert failed.value.status == 500
    assert "still failing" in str(failed.value)
    low, high = failed.value.window
    assert 0 < high - low <= HOUR + 60
    assert time.monotonic() - started < 1.0


# ---------------------------------------------------------------------- the walk itself


def test_windows_overlap_by_a_second_and_stay_within_size() -> None:
    assert windows(0, 10, 4) == [(0, 4), (3, 7), (6, 10)]
    assert windows(5, 5, 60) == [(5, 5)]
    spans = windows(100, 100_000, 3600)
    assert spans[0][0] == 100
    assert spans[-1][1] == 100_000
    assert all(high - low <= 3600 for low, high in spans)
    assert all(b[0] == a[1] - 1 for a, b in itertools.pairwise(spans))
    with pytest.raises(ValueError, match="span"):
        windows(0, 10, 1)


def test_history_windows_are_validated() -> None:
    with pytest.raises(ValueError, match="lookback"):
        HistoryWindows(lookback_seconds=60, window_seconds=120)
    with pytest.raises(ValueError, match="deadline"):
        HistoryWindows(deadline_seconds=float("nan"))
    with pytest.raises(ValueError, match="span"):
        HistoryWindows(min_window_seconds=1)


def test_settings_validate_the_history_keys() -> None:
    defaults = KalshiSettings()
    assert (defaults.history_lookback_seconds, defaults.history_window_seconds) == (86_400, 21_600)
    assert defaults.history_deadline_seconds == 30.0
    with pytest.raises(ValueError, match="history_window_seconds"):
        KalshiSettings(history_window_seconds=7200, history_lookback_seconds=3600)
    for bad in ({"history_window_seconds": 0}, {"history_deadline_seconds": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            KalshiSettings(**bad)


async def test_a_window_that_fails_after_some_pages_lists_nothing_twice() -> None:
    # Page 1 of the window answers, page 2 fails: the split halves list page 1's items
    # again, and the walk passes each on once.
    failures = [True]
    items = {"a": 10, "b": 20, "c": 30}

    async def list_page(**query: Any) -> Page[str]:
        low, high, cursor = query["min_ts"], query["max_ts"], query["cursor"]
        inside = [k for k, ts in items.items() if low <= ts <= high]
        if cursor is None:
            return Page(inside[:1], "next" if len(inside) > 1 else None)
        if failures and failures.pop():
            raise ServerError("timed out", status=504)
        return Page(inside[1:], None)

    history = HistoryWindows(lookback_seconds=100, window_seconds=100, min_window_seconds=10)
    listed = [
        item
        async for item in iter_history(
            list_page,
            {"min_ts": 0, "max_ts": 100},
            history,
            key=str,
            sleep=_no_sleep,
            now=lambda: 100.0,
        )
    ]
    assert sorted(listed) == ["a", "b", "c"]
    assert len(listed) == 3


async def test_only_server_and_transport_failures_are_retried() -> None:
    async def list_page(**_: Any) -> Page[str]:
        raise KalshiError("bad request", status=400)

    history = HistoryWindows(lookback_seconds=100, window_seconds=100, min_window_seconds=10)
    with pytest.raises(KalshiError, match="bad request") as failed:
        _ = [i async for i in iter_history(list_page, {}, history, key=str, sleep=_no_sleep)]
    assert not isinstance(failed.value, HistoryWindowError)
