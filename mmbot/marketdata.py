"""Reference prices and price grids per market, with staleness.

Markets come from ``GET /markets`` (all open markets at start-up, then the
quoted ones in batches every ``marketdata.refresh_seconds``) and from
``GET /markets/{ticker}`` on a cache miss. A market older than
``marketdata.ttl_seconds`` is stale, and the daemon does not quote on stale
data. When a refresh moves a market's reference mid, ``on_refresh`` is called
so live quotes can be replaced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

import structlog

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


def reference_mid(market: Market) -> Decimal | None:
    """The market's reference price: the YES bid/ask mid, else the last trade, else None."""
    bid, ask, last = _book(market)
    if bid is not None and ask is not None and bid < ask:
        return (bid + ask) / _TWO
    return last


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
        on_refresh: Callable[[Market], None] | None = None,
        price_listeners: Iterable[Callable[[str, Decimal | None], None]] = (),
    ) -> None:
        """Cache markets fetched through ``rest``; tell the listeners of what is fetched.

        ``on_refresh`` is called with each market a background refresh fetched (the quote
        manager requotes on it); each of ``price_listeners`` with every market's ticker and
        reference price as it is stored (the risk book marks to market with it).
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

    # ------------------------------------------------------------------ reads (sync, hot path)

    def market(self, ticker: str) -> Market | None:
        """The cached market, fresh or not."""
        entry = self._entries.get(ticker)
        return entry.market if entry else None

    def age(self, ticker: str) -> float | None:
        """Seconds since the market was fetched, or None if never."""
        entry = self._entries.get(ticker)
        return None if entry is None else self._clock() - entry.fetched_at

    def is_fresh(self, ticker: str) -> bool:
        """True when the market is cached and younger than the TTL."""
        age = self.age(ticker)
        return age is not None and age <= self.ttl_seconds

    def last_success_age(self) -> float | None:
        """Seconds since a market-data request last succeeded, or None if none has."""
        return None if self._last_ok is None else self._clock() - self._last_ok

    def view(self, ticker: str, position: Decimal) -> MarketView | None:
        """What a strategy sees of the market, or None if it was never fetched."""
        entry = self._entries.get(ticker)
        if entry is None:
            return None
        market = entry.market
        age = self._clock() - entry.fetched_at
        bid, ask, last = _book(market)
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
        )

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
                    self.on_refresh(market)
        return refreshed

    async def run(self) -> None:
        """Refresh the watched markets forever (a supervised background task)."""
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                if self._watched:
                    await self.refresh(list(self._watched))
                else:
                    await self._probe()
            except KalshiError as exc:
                # Stale data stops quoting on its own; keep trying.
                log.warning("market_refresh_failed", error=str(exc), markets=len(self._watched))

    async def _probe(self) -> None:
        # With nothing quoted nothing is refreshed, yet readiness must still tell whether
        # market data can be had when the next RFQ comes: one small read says so.
        page = await self._rest.list_markets(status="open", limit=1)
        self._note_ok()
        for market in page.items:
            self._store(market)
