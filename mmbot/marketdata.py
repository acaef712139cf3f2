"""Reference prices and price grids per market, with staleness and a source.

Two sources, the fresher one wins:

- **stream**: the live books of Kalshi's ``orderbook_delta`` channel
  (:class:`~mmbot.kalshi.bookfeed.OrderbookFeed`), for every market an RFQ came for in
  the last ``marketdata.stream_linger_seconds`` and every market a live quote depends on.
  A book is as current as the last message of its subscription, since the sequence
  numbers prove nothing was missed in between.
- **rest**: ``GET /markets`` (all open markets at start-up, then, every
  ``marketdata.refresh_seconds``, the quoted markets the stream does not cover freshly:
  while it is down, resynchronising, or quiet) and ``GET /markets/{ticker}`` on a miss.
  REST also gives what the stream does not: the price grid, the event, the last trade.

A market older than ``marketdata.ttl_seconds`` is stale, and the daemon neither quotes
nor confirms on stale data. When a market's reference mid changes, ``on_refresh`` is
called with its ticker and mid so live quotes can be replaced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

import structlog

from mmbot.kalshi.bookfeed import BookTop, OrderbookFeed
from mmbot.kalshi.errors import KalshiError, NotFoundError
from mmbot.kalshi.models import Market
from mmbot.kalshi.rest import KalshiRestClient
from mmbot.strategy import MarketView

__all__ = ["MarketData", "reference_mid", "settlement_value"]

log = structlog.get_logger("mmbot.marketdata")

_ZERO = Decimal(0)
_ONE = Decimal(1)
_TWO = Decimal(2)
# Markets per refresh request (GET /markets takes a comma-separated list of tickers). Each
# page is validated in one go on the event loop, so pages stay small enough (about a
# millisecond) not to hold up an RFQ behind them.
_BATCH = 25


def _book(market: Market) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
    """YES bid, YES ask and last price, with Kalshi's empty-side markers read as absent."""
    # An empty side shows as 0 (no bid) or 1 (no ask); a strategy must not read 0 and 1 as
    # a book and quote around a 0.50 "mid".
    bid, ask, last = market.yes_bid_dollars, market.yes_ask_dollars, market.last_price_dollars
    return (
        bid if bid is not None and _ZERO < bid < _ONE else None,
        ask if ask is not None and _ZERO < ask < _ONE else None,
        last if last is not None and _ZERO < last < _ONE else None,
    )


def _mid(bid: Decimal | None, ask: Decimal | None, last: Decimal | None) -> Decimal | None:
    if bid is not None and ask is not None:
        # A crossed or locked book has no mid: neither side can be trusted to be current.
        return (bid + ask) / _TWO if bid < ask else None
    return last


def reference_mid(market: Market) -> Decimal | None:
    """The market's reference price: the YES bid/ask mid, else the last trade, else None."""
    return _mid(*_book(market))


def _inside(price: Decimal | None) -> Decimal | None:
    return price if price is not None and _ZERO < price < _ONE else None


_SETTLED_STATUSES = frozenset({"determined", "finalized", "settled", "amended"})


def settlement_value(market: Market) -> Decimal | None:
    """What one YES contract of a settled market paid, or None if it is not settled."""
    if market.settlement_value_dollars is not None:
        return market.settlement_value_dollars
    if market.status in _SETTLED_STATUSES or market.result in ("yes", "no"):
        if market.result == "yes":
            return _ONE
        if market.result == "no":
            return _ZERO
    return None


@dataclass(frozen=True, slots=True)
class _Entry:
    market: Market
    fetched_at: float


class MarketData:
    """Cache of market data with freshness, refreshed in the background."""

    def __init__(
        self,
        rest: KalshiRestClient,
        *,
        ttl_seconds: float,
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_refresh: Callable[[str, Decimal | None], None] | None = None,
        price_listeners: Iterable[Callable[[str, Decimal | None], None]] = (),
        feed: OrderbookFeed | None = None,
    ) -> None:
        """Cache markets fetched through ``rest`` or streamed by ``feed``; tell the listeners.

        ``on_refresh`` is called with the ticker and reference mid of each market a
        background refresh fetched or the stream moved (the quote manager requotes on it);
        each of ``price_listeners`` with every market's ticker and reference price as it is
        stored (the risk book marks to market with it).
        """
        self._rest = rest
        self.ttl_seconds = ttl_seconds
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self.on_refresh = on_refresh
        self._entries: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Task[Market | None]] = {}
        self._watched: dict[str, int] = {}
        self._last_ok: float | None = None
        self.price_listeners: list[Callable[[str, Decimal | None], None]] = list(price_listeners)
        self.feed = feed
        if feed is not None:
            # Its as_of is compared with our fetch times: one clock for both.
            feed.clock = clock
            feed.on_top = self._on_top
            feed.pinned = self._watched.__contains__

    # ------------------------------------------------------------------ reads (sync, hot path)

    def market(self, ticker: str) -> Market | None:
        """The cached market, fresh or not."""
        entry = self._entries.get(ticker)
        return entry.market if entry else None

    def _streamed(self, ticker: str, entry: _Entry | None) -> BookTop | None:
        """The stream's book of ``ticker`` when it is at least as recent as the REST copy."""
        feed = self.feed
        if feed is None:
            return None
        top = feed.top(ticker)
        if top is None or (entry is not None and top.as_of < entry.fetched_at):
            return None
        return top

    def age(self, ticker: str) -> float | None:
        """Seconds since the market's data was last known current, or None if never."""
        entry = self._entries.get(ticker)
        if entry is None:
            return None
        top = self._streamed(ticker, entry)
        return self._clock() - (top.as_of if top is not None else entry.fetched_at)

    def is_fresh(self, ticker: str) -> bool:
        """True when the market is cached and younger than the TTL."""
        age = self.age(ticker)
        return age is not None and age <= self.ttl_seconds

    def last_success_age(self) -> float | None:
        """Seconds since market data last came in (a REST answer or a stream message)."""
        ages = [] if self._last_ok is None else [self._clock() - self._last_ok]
        if self.feed is not None:
            streamed = self.feed.last_message_age()
            if streamed is not None:
                ages.append(streamed)
        return min(ages) if ages else None

    def view(self, ticker: str, position: Decimal) -> MarketView | None:
        """What a strategy sees of the market, or None if it was never fetched."""
        entry = self._entries.get(ticker)
        if entry is None:
            return None
        market = entry.market
        bid, ask, last = _book(market)
        top = self._streamed(ticker, entry)
        if top is None:
            as_of, source = entry.fetched_at, "rest"
        else:
            bid, ask = _inside(top.yes_bid), _inside(top.yes_ask)
            as_of, source = top.as_of, "stream"
            if bid is None and ask is None:
                # The stream proves the book empty now: a polled last trade, however old,
                # is no reference for it.
                last = None
        age = self._clock() - as_of
        return MarketView(
            ticker=market.ticker,
            event_ticker=market.event_ticker or "",
            yes_bid=bid,
            yes_ask=ask,
            last_price=last,
            price_ranges=market.price_ranges,
            hvm=bool(market.mve_collection_ticker or market.mve_selected_legs),
            age_seconds=age,
            stale=age > self.ttl_seconds,
            position=position,
            source=source,
        )

    def _on_top(self, ticker: str) -> None:
        """The stream moved a market's best bid or ask: mark and requote on the new mid."""
        entry = self._entries.get(ticker)
        top = self._streamed(ticker, entry)
        if top is None or entry is None:
            # An invalidated book: the REST copy stands in, and ages, until the snapshot.
            return
        bid, ask = _inside(top.yes_bid), _inside(top.yes_ask)
        last = _book(entry.market)[2] if bid is not None or ask is not None else None
        mid = _mid(bid, ask, last)
        for listener in self.price_listeners:
            listener(ticker, mid)
        if self.on_refresh is not None:
            self.on_refresh(ticker, mid)

    # ------------------------------------------------------------------ fetching

    def _store(self, market: Market) -> None:
        now = self._clock()
        self._entries[market.ticker] = _Entry(market, now)
        self._last_ok = now
        if self.price_listeners:
            mid = reference_mid(market)
            for listener in self.price_listeners:
                listener(market.ticker, mid)

    def _note_ok(self) -> None:
        self._last_ok = self._clock()

    async def ensure_fresh(self, ticker: str) -> Market | None:
        """Return the market, fetching it if missing or stale; None if it does not exist.

        After a failed fetch the stale entry is returned: callers check freshness anyway.
        """
        if self.feed is not None and ticker in self._entries:
            # Every market an RFQ comes for is followed on the stream for a while (only
            # markets the exchange listed: an unknown one would spoil the subscription).
            self.feed.want(ticker)
        if self.is_fresh(ticker):
            return self._entries[ticker].market
        task = self._inflight.get(ticker)
        if task is None:
            # Several RFQs on one market arriving together share one request.
            task = asyncio.create_task(self._fetch(ticker))
            self._inflight[ticker] = task
            task.add_done_callback(lambda _: self._inflight.pop(ticker, None))
        return await asyncio.shield(task)

    async def _fetch(self, ticker: str) -> Market | None:
        try:
            market = await self._rest.get_market(ticker)
        except NotFoundError:
            self._note_ok()  # the exchange answered: the market does not exist
            return None
        except KalshiError as exc:
            log.warning("market_fetch_failed", market=ticker, error=str(exc))
            return self.market(ticker)
        self._store(market)
        if self.feed is not None:
            self.feed.want(ticker)  # a market first met on this RFQ: stream it from now on
        return market

    async def prime(self) -> int:
        """Load every open market (at start-up) and return how many."""
        count = 0
        async for market in self._rest.iter_markets(status="open"):
            self._store(market)
            count += 1
        self._note_ok()
        return count

    def watch(self, ticker: str) -> None:
        """Keep ``ticker`` refreshed (a live quote depends on it)."""
        self._watched[ticker] = self._watched.get(ticker, 0) + 1
        if self.feed is not None:
            self.feed.want(ticker)

    def unwatch(self, ticker: str) -> None:
        """Undo one :meth:`watch`."""
        count = self._watched.get(ticker, 0) - 1
        if count > 0:
            self._watched[ticker] = count
        else:
            self._watched.pop(ticker, None)

    async def refresh(self, tickers: Iterable[str]) -> int:
        """Refetch ``tickers`` in batches; call ``on_refresh`` for each; return how many."""
        wanted = sorted(set(tickers))
        refreshed = 0
        for start in range(0, len(wanted), _BATCH):
            batch = wanted[start : start + _BATCH]
            page = await self._rest.list_markets(tickers=batch, limit=len(batch))
            self._note_ok()
            for market in page.items:
                self._store(market)
                refreshed += 1
                if self.on_refresh is not None:
                    self.on_refresh(market.ticker, reference_mid(market))
        return refreshed

    async def run(self) -> None:
        """Refresh the watched markets forever (a supervised background task)."""
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                if self._watched:
                    # Only what the stream does not cover freshly: down, resynchronising
                    # or quiet for longer than a poll would be.
                    behind = [t for t in self._watched if not self._stream_fresh(t)]
                    if behind:
                        await self.refresh(behind)
                else:
                    await self._probe()
            except KalshiError as exc:
                # Stale data stops quoting on its own; keep trying.
                log.warning("market_refresh_failed", error=str(exc), markets=len(self._watched))

    def _stream_fresh(self, ticker: str) -> bool:
        feed = self.feed
        top = feed.top(ticker) if feed is not None else None
        return top is not None and self._clock() - top.as_of <= self.refresh_seconds

    async def _probe(self) -> None:
        # With nothing quoted nothing is refreshed, yet readiness must still tell whether
        # market data can be had when the next RFQ comes: one small read says so.
        page = await self._rest.list_markets(status="open", limit=1)
        self._note_ok()
        for market in page.items:
            self._store(market)
