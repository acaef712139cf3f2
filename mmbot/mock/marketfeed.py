"""The market-data WebSocket channels of the mock: ``orderbook_delta`` and ``ticker``.

Both are driven by the simulated fair values (:mod:`mmbot.mock.sim`): the book a market
publishes is, at every instant, the one ``GET /markets/{ticker}/orderbook`` returns (the
simulated levels plus resting orders), and its ticker carries the ``GET /markets/{ticker}``
bid, ask, last price and sizes. Only markets someone subscribed to are watched.

``orderbook_delta``
    ``market_ticker`` or ``market_tickers`` is required (error 14 without; 16 with
    ``market_ticker`` for an unknown market; ``market_id(s)`` answer 11). The reply
    ``subscribed`` is followed by one ``orderbook_snapshot`` per market, then one
    ``orderbook_delta`` per changed level: a level that appears is a positive delta of its
    size, one that goes a negative delta of its size, a size change the difference
    (removals first, so a client's book never crosses in between). Every delta carries
    ``ts_ms``, the wall-clock ms of the change. ``seq`` counts every message of the
    subscription that carries one (snapshots, deltas, ``ok`` replies) from 1 up by one.
``ticker``
    markets optional (omit for all; ``market_id(s)`` accepted); a ``ticker`` message (no
    ``seq``, as documented) whenever any of its fields changes; ``send_initial_snapshot``
    sends one per market at once.
``update_subscription``
    ``add_markets`` (snapshots of the added markets follow the ``ok``), ``delete_markets``
    and, for ``orderbook_delta``, ``get_snapshot`` (markets of the subscription; all of
    them when none are named), each answered ``ok`` with the full ``market_tickers`` list
    (omitted under ``skip_ticker_ack``).

Changes are found by polling the watched markets every :data:`POLL_SECONDS` (their
fair value and resting orders; a change is published at most that much after it) and at
once after every move the ``market_updates_per_second`` knob forces. Fault knobs:
``md_gap_fraction`` (and :meth:`MarketFeed.skip_next_delta`, ``POST /_mock/md_gap``)
spend a delta's ``seq`` without sending it; ``malformed_fraction`` sends a cut-off copy
right before a market-data frame. Counters are in :class:`MarketDataStats`.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import orjson
import structlog

from mmbot.mock.markets import market_wire
from mmbot.mock.sim import FAIR_MAX_MICROS, FAIR_MIN_MICROS, SimMarket, grid_prices
from mmbot.mock.wire import wire_count, wire_dollars

if TYPE_CHECKING:
    from mmbot.mock.server import MockExchange
    from mmbot.mock.ws import Connection

__all__ = [
    "MARKET_CHANNELS",
    "ORDERBOOK_DELTA",
    "POLL_SECONDS",
    "TICKER",
    "MarketDataCommandError",
    "MarketDataStats",
    "MarketFeed",
    "MarketSubscription",
    "market_id",
]

log = structlog.get_logger("mmbot.mock")

ORDERBOOK_DELTA: Final = "orderbook_delta"
TICKER: Final = "ticker"
MARKET_CHANNELS: Final = frozenset({ORDERBOOK_DELTA, TICKER})
#: How often the watched markets are checked for a change of the random walk or orders.
POLL_SECONDS: Final = 0.02
# A forced-update backlog older than this is dropped rather than sent in one burst.
_MAX_BEHIND_SECONDS: Final = 1.0
_MARKET_ID_NAMESPACE: Final = uuid.UUID("6f1c7a52-3b0e-4a57-9a0c-2f4d8e1b9c11")
_ZERO: Final = Decimal(0)
_MICROS: Final = Decimal(1_000_000)

# One side's levels: price -> contracts.
_Levels = dict[Decimal, Decimal]
# Resting orders of one market as (side, price, remaining), the book's other source.
_Resting = tuple[tuple[str, Decimal, Decimal], ...]


def market_id(ticker: str) -> str:
    """The market's ``market_id`` UUID on the market-data channels (stable per ticker)."""
    return str(uuid.uuid5(_MARKET_ID_NAMESPACE, ticker))


class MarketDataCommandError(Exception):
    """A market-data command failed with one of the documented WebSocket error codes."""

    def __init__(self, code: int, text: str, market_ticker: str | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.market_ticker = market_ticker


@dataclass(eq=False, slots=True)
class MarketSubscription:
    """One ``orderbook_delta`` or ``ticker`` subscription of one connection."""

    sid: int
    channel: str
    conn: Connection
    #: The markets, in the order asked; None: every market (``ticker`` only).
    tickers: list[str] | None
    skip_ticker_ack: bool = False
    #: The last ``seq`` used on this sid (``orderbook_delta`` only).
    seq: int = 0

    def wants(self, ticker: str) -> bool:
        """Whether this subscription publishes ``ticker``."""
        return self.tickers is None or ticker in self.tickers


@dataclass(slots=True)
class MarketDataStats:
    """Market-data counters, reported under ``stats`` in ``GET /_mock/state``."""

    #: Market-data frames queued: snapshots, deltas and tickers, one per subscription.
    md_updates_published: int = 0
    md_snapshots_sent: int = 0
    md_deltas_sent: int = 0
    md_tickers_sent: int = 0
    #: Times a watched market's book or ticker changed (once per change, not per client).
    md_book_changes: int = 0
    #: Top-of-book moves made by ``market_updates_per_second``.
    md_forced_moves: int = 0
    #: Forced moves dropped because the loop fell more than a second behind.
    md_forced_moves_dropped: int = 0
    #: Deltas whose ``seq`` was spent without sending them (gap faults).
    md_gaps_injected: int = 0
    md_malformed_sent: int = 0

    def to_dict(self) -> dict[str, int]:
        """The counters as a JSON-ready mapping."""
        return asdict(self)


@dataclass(slots=True)
class _Watch:
    """What was last published for one watched market."""

    market: SimMarket
    #: (fair_micros, resting orders) when last checked: unchanged means nothing to do.
    key: tuple[int, _Resting]
    #: YES and NO levels, while an ``orderbook_delta`` subscription watches the market.
    book: tuple[_Levels, _Levels] | None = None
    #: The ticker fields, while a ``ticker`` subscription watches the market.
    ticker: tuple[str, ...] | None = None
    #: Direction of the next forced move: alternating keeps the fair value in place.
    direction: int = 1


class MarketFeed:
    """Publishes the ``orderbook_delta`` and ``ticker`` channels of one mock exchange."""

    def __init__(self, server: MockExchange) -> None:
        self._server = server
        self._markets = server.exchange.markets
        self._ids = {ticker: market_id(ticker) for ticker in self._markets}
        self._by_id = {mid: ticker for ticker, mid in self._ids.items()}
        self._by_conn: dict[Connection, dict[int, MarketSubscription]] = {}
        self._subs: list[MarketSubscription] = []
        self._watched: dict[str, _Watch] = {}
        self._rotation: list[str] = []
        self._next_move = 0
        self._resting: dict[str, _Resting] = {}
        self._pending_gaps = 0
        self._task: asyncio.Task[None] | None = None
        self.stats = MarketDataStats()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the poll and forced-update loop (needs a running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mock-md-feed")

    async def stop(self) -> None:
        """Stop the loop; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        anchor: float | None = None
        anchor_rate = 0.0
        done = 0
        while True:
            try:
                now = loop.time()
                if now >= next_poll:
                    self.poll()
                    next_poll = now + POLL_SECONDS
                wake = next_poll
                rate = self._server.faults.config.market_updates_per_second
                if rate > 0 and self._rotation:
                    if anchor is None or rate != anchor_rate:
                        anchor, anchor_rate, done = now, rate, 0
                    # Scheduled by absolute time from the anchor: sleeping late never
                    # lowers the rate, the moves that fell due meanwhile go out together.
                    # The epsilon keeps float rounding from waking the loop a hair early.
                    due = int((now - anchor) * rate + 1e-9) + 1 - done
                    behind = due - max(1, int(rate * _MAX_BEHIND_SECONDS))
                    if behind > 0:
                        self.stats.md_forced_moves_dropped += behind
                        done += behind
                        due -= behind
                    for _ in range(max(due, 0)):
                        self._force_move()
                        done += 1
                    wake = min(wake, anchor + done / rate)
                else:
                    anchor = None
                await asyncio.sleep(max(0.0, wake - loop.time()))
            except asyncio.CancelledError:
                raise
            except Exception:
                # One bad publication must not end the feed for the whole session.
                log.exception("mock_md_feed_failed")
                await asyncio.sleep(POLL_SECONDS)

    # ------------------------------------------------------------------ fault controls

    def skip_next_delta(self) -> int:
        """Spend the ``seq`` of the next ``orderbook_delta`` without sending it; returns pending."""
        self._pending_gaps += 1
        return self._pending_gaps

    # ------------------------------------------------------------------ commands

    def subscriptions_of(self, conn: Connection) -> dict[int, MarketSubscription]:
        """``conn``'s market-data subscriptions by sid."""
        return self._by_conn.get(conn, {})

    def plan(
        self, conn: Connection, channels: Iterable[str], params: Mapping[str, Any]
    ) -> list[tuple[str, list[str] | None]]:
        """Validate a ``subscribe`` for market-data ``channels``: (channel, markets) each."""
        plans: list[tuple[str, list[str] | None]] = []
        for channel in channels:
            tickers = self._requested(params, channel, required=channel == ORDERBOOK_DELTA)
            for sub in self.subscriptions_of(conn).values():
                if sub.channel != channel:
                    continue
                # A market named twice on one channel is a duplicate; "every market"
                # alongside a list is not (the list may outlive a narrower interest).
                if (tickers is None and sub.tickers is None) or (
                    tickers is not None
                    and sub.tickers is not None
                    and set(tickers) & set(sub.tickers)
                ):
                    raise MarketDataCommandError(6, "already subscribed")
            plans.append((channel, tickers))
        if not plans:
            return plans
        _flag(params, "send_initial_snapshot")
        _flag(params, "skip_ticker_ack")
        return plans

    def open(
        self,
        conn: Connection,
        cmd_id: int | None,
        sid: int,
        channel: str,
        tickers: list[str] | None,
        params: Mapping[str, Any],
    ) -> None:
        """Create a planned subscription: reply ``subscribed``, then snapshots."""
        sub = MarketSubscription(
            sid, channel, conn, tickers, skip_ticker_ack=_flag(params, "skip_ticker_ack")
        )
        self._catch_up(tickers)
        self._by_conn.setdefault(conn, {})[sid] = sub
        self._rebuild()
        conn.reply(
            _with_id(cmd_id, {"type": "subscribed", "msg": {"channel": channel, "sid": sid}})
        )
        self._initial(sub, tickers, params)

    def close(self, conn: Connection, sid: int) -> MarketSubscription:
        """Drop one subscription (the caller checked it exists)."""
        sub = self._by_conn[conn].pop(sid)
        if not self._by_conn[conn]:
            del self._by_conn[conn]
        self._rebuild()
        return sub

    def forget(self, conn: Connection) -> None:
        """Drop every subscription of a connection that is going away."""
        if self._by_conn.pop(conn, None) is not None:
            self._rebuild()

    def update(
        self,
        conn: Connection,
        cmd_id: int | None,
        sub: MarketSubscription,
        action: str,
        params: Mapping[str, Any],
    ) -> None:
        """Run ``update_subscription`` (add_markets, delete_markets, get_snapshot) on ``sub``."""
        if action not in ("add_markets", "delete_markets", "get_snapshot") or (
            action == "get_snapshot" and sub.channel != ORDERBOOK_DELTA
        ):
            raise MarketDataCommandError(
                13, f"unsupported action {action[:40]!r} for the {sub.channel} channel"
            )
        if action == "get_snapshot":
            asked = self._requested(params, sub.channel, required=False)
            current = sub.tickers or []
            wanted = current if asked is None else asked
            for ticker in wanted:
                if ticker not in current:
                    raise MarketDataCommandError(
                        11, f"market {ticker} is not part of subscription {sub.sid}", ticker
                    )
            self._catch_up(wanted)
            self._ok(sub, cmd_id)
            for ticker in wanted:
                self._send_snapshot(sub, ticker)
            return
        tickers = self._requested(params, sub.channel, required=True) or []
        if action == "add_markets":
            added = [] if sub.tickers is None else [t for t in tickers if t not in sub.tickers]
            self._catch_up(added)
            if sub.tickers is not None:
                sub.tickers.extend(added)
            self._rebuild()
            self._ok(sub, cmd_id)
            self._initial(sub, added, params)
            return
        kept = sub.tickers if sub.tickers is not None else list(self._markets)
        sub.tickers = [t for t in kept if t not in set(tickers)]
        self._rebuild()
        self._ok(sub, cmd_id)

    def _initial(
        self, sub: MarketSubscription, tickers: list[str] | None, params: Mapping[str, Any]
    ) -> None:
        if sub.channel == ORDERBOOK_DELTA:
            for ticker in tickers or ():
                self._send_snapshot(sub, ticker)
        elif _flag(params, "send_initial_snapshot"):
            for ticker in tickers if tickers is not None else list(self._markets):
                watch = self._watched[ticker]
                if watch.ticker is not None:
                    self._send_ticker(sub, watch.market, watch.ticker)

    def _ok(self, sub: MarketSubscription, cmd_id: int | None) -> None:
        frame: dict[str, Any] = {"sid": sub.sid, "type": "ok"}
        if sub.channel == ORDERBOOK_DELTA:
            sub.seq += 1
            frame["seq"] = sub.seq
        listed = sub.tickers if sub.tickers is not None else list(self._markets)
        frame["msg"] = {} if sub.skip_ticker_ack else {"market_tickers": listed}
        sub.conn.reply(_with_id(cmd_id, frame))

    def _requested(
        self, params: Mapping[str, Any], channel: str, *, required: bool
    ) -> list[str] | None:
        """The markets a command names, validated; None when it names none."""
        forms = [
            name
            for name in ("market_ticker", "market_tickers", "market_id", "market_ids")
            if params.get(name) not in (None, [], "")
        ]
        if len(forms) > 1:
            raise MarketDataCommandError(11, f"{' and '.join(forms)} are mutually exclusive")
        if not forms:
            if required:
                raise MarketDataCommandError(14, "market_ticker or market_tickers required")
            return None
        form = forms[0]
        if form.startswith("market_id") and channel == ORDERBOOK_DELTA:
            raise MarketDataCommandError(11, f"{form} is not supported for {channel}")
        value = params[form]
        values = [value] if form in ("market_ticker", "market_id") else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise MarketDataCommandError(11, f"{form} must be a string or a list of strings")
        tickers: list[str] = []
        for value in dict.fromkeys(values):
            ticker = self._by_id.get(value) if form.startswith("market_id") else value
            if ticker is None or ticker not in self._markets:
                raise MarketDataCommandError(16, f"market {value[:60]} not found", value[:60])
            tickers.append(ticker)
        return tickers

    # ------------------------------------------------------------------ watching

    def _rebuild(self) -> None:
        """Recompute which markets are watched for what, after any subscription change."""
        self._subs = [sub for subs in self._by_conn.values() for sub in subs.values()]
        books: set[str] = set()
        tickers: set[str] = set()
        for sub in self._subs:
            names = sub.tickers if sub.tickers is not None else self._markets
            (books if sub.channel == ORDERBOOK_DELTA else tickers).update(names)
        watched: dict[str, _Watch] = {}
        for ticker in (t for t in self._markets if t in books or t in tickers):
            watch = self._watched.get(ticker)
            if watch is None:
                resting = self._fresh_resting(self._markets[ticker])
                watch = _Watch(self._markets[ticker], (self._markets[ticker].fair_micros, resting))
            if ticker not in books:
                watch.book = None
            elif watch.book is None:
                watch.book = self._book(watch.market, watch.key[1])
            if ticker not in tickers:
                watch.ticker = None
            elif watch.ticker is None:
                watch.ticker = _ticker_fields(watch.market, self._server.exchange.clock())
            watched[ticker] = watch
        self._watched = watched
        self._rotation = list(watched)

    def _catch_up(self, tickers: Iterable[str] | None) -> None:
        """Publish pending changes of these markets to their current subscribers first."""
        names = self._markets if tickers is None else tickers
        for ticker in names:
            watch = self._watched.get(ticker)
            if watch is not None:
                self._check(watch, self._fresh_resting(watch.market))

    def _fresh_resting(self, market: SimMarket) -> _Resting:
        resting = _resting_key(self._server.exchange.resting_orders(market))
        self._resting[market.ticker] = resting
        return resting

    def poll(self) -> None:
        """Publish whatever changed in the watched markets since they were last checked."""
        if not self._watched:
            return
        grouped: dict[str, list[Any]] = {}
        for order in self._server.exchange.resting_orders():
            if order.market.ticker in self._watched:
                grouped.setdefault(order.market.ticker, []).append(order)
        self._resting = {ticker: _resting_key(orders) for ticker, orders in grouped.items()}
        for ticker, watch in list(self._watched.items()):
            self._check(watch, self._resting.get(ticker, ()))

    def _check(self, watch: _Watch, resting: _Resting) -> None:
        market = watch.market
        key = (market.fair_micros, resting)
        if key == watch.key:
            return
        watch.key = key
        ts_ms = time.time_ns() // 1_000_000
        changed = False
        if watch.book is not None:
            book = self._book(market, resting)
            deltas = _diff("yes", watch.book[0], book[0]) + _diff("no", watch.book[1], book[1])
            watch.book = book
            # Removals first: a client applying them in order never sees a crossed book.
            deltas.sort(key=lambda d: d[2] > 0)
            if deltas:
                changed = True
                self._publish_deltas(market.ticker, deltas, ts_ms)
        if watch.ticker is not None:
            fields = _ticker_fields(market, self._server.exchange.clock())
            if fields != watch.ticker:
                watch.ticker = fields
                changed = True
                for sub in self._subs:
                    if sub.channel == TICKER and sub.wants(market.ticker):
                        self._send_ticker(sub, market, fields, ts_ms)
        if changed:
            self.stats.md_book_changes += 1

    def _book(self, market: SimMarket, resting: _Resting) -> tuple[_Levels, _Levels]:
        """The market's book exactly as ``GET /markets/{ticker}/orderbook`` computes it."""
        rng = random.Random(  # noqa: S311 - simulation, not security
            f"mmbot-mock-book:{self._server.config.seed}:{market.ticker}:{market.fair_micros}"
        )
        yes, no = market.orderbook(len(grid_prices(market.grid)), rng)
        book = (dict(yes), dict(no))
        for side, price, count in resting:
            levels = book[0] if side == "yes" else book[1]
            levels[price] = levels.get(price, _ZERO) + count
        return book

    # ------------------------------------------------------------------ forced updates

    def _force_move(self) -> None:
        """Move the next watched market's fair value so its top of book changes, then publish."""
        for _ in range(len(self._rotation)):
            ticker = self._rotation[self._next_move % len(self._rotation)]
            self._next_move += 1
            watch = self._watched[ticker]
            for direction in (watch.direction, -watch.direction):
                if _nudge(watch.market, direction):
                    watch.direction = -direction
                    self.stats.md_forced_moves += 1
                    self._check(watch, self._resting.get(ticker, ()))
                    return

    # ------------------------------------------------------------------ sending

    def _publish_deltas(
        self, ticker: str, deltas: list[tuple[str, Decimal, Decimal]], ts_ms: int
    ) -> None:
        subs = [s for s in self._subs if s.channel == ORDERBOOK_DELTA and s.wants(ticker)]
        if not subs:
            return
        mid = self._ids[ticker]
        for side, price, delta in deltas:
            body = orjson.dumps(
                {
                    "market_ticker": ticker,
                    "market_id": mid,
                    "price_dollars": wire_dollars(price),
                    "delta_fp": wire_count(delta),
                    "side": side,
                    "ts_ms": ts_ms,
                }
            ).decode()
            for sub in subs:
                if sub.conn.closing:
                    continue
                sub.seq += 1
                if self._skip_delta():
                    continue
                text = f'{{"type":"orderbook_delta","sid":{sub.sid},"seq":{sub.seq},"msg":{body}}}'
                if self._queue(sub.conn, text):
                    self.stats.md_deltas_sent += 1

    def _skip_delta(self) -> bool:
        if self._pending_gaps > 0:
            self._pending_gaps -= 1
        elif not self._server.faults.md_draw(self._server.faults.config.md_gap_fraction):
            return False
        self.stats.md_gaps_injected += 1
        return True

    def _send_snapshot(self, sub: MarketSubscription, ticker: str) -> None:
        watch = self._watched[ticker]
        if watch.book is None or sub.conn.closing:
            return
        msg: dict[str, Any] = {"market_ticker": ticker, "market_id": self._ids[ticker]}
        for name, levels in (("yes_dollars_fp", watch.book[0]), ("no_dollars_fp", watch.book[1])):
            # Like the documented snapshot: a side with no levels has no key at all.
            if levels:
                msg[name] = [
                    [wire_dollars(price), wire_count(count)]
                    for price, count in sorted(levels.items())
                ]
        sub.seq += 1
        body = orjson.dumps(msg).decode()
        text = f'{{"type":"orderbook_snapshot","sid":{sub.sid},"seq":{sub.seq},"msg":{body}}}'
        if self._queue(sub.conn, text):
            self.stats.md_snapshots_sent += 1

    def _send_ticker(
        self,
        sub: MarketSubscription,
        market: SimMarket,
        fields: tuple[str, ...],
        ts_ms: int | None = None,
    ) -> None:
        if sub.conn.closing:
            return
        ms = time.time_ns() // 1_000_000 if ts_ms is None else ts_ms
        bid, ask, price, volume, interest, bid_size, ask_size = fields
        msg = {
            "market_id": self._ids[market.ticker],
            "market_ticker": market.ticker,
            "price_dollars": price,
            "yes_bid_dollars": bid,
            "yes_ask_dollars": ask,
            "volume_fp": volume,
            "open_interest_fp": interest,
            # Whole dollars of notional, signed, as documented.
            "dollar_volume": int(Decimal(volume) * Decimal(price)),
            "dollar_open_interest": int(Decimal(interest) * Decimal(price)),
            "yes_bid_size_fp": bid_size,
            "yes_ask_size_fp": ask_size,
            "last_trade_size_fp": wire_count(_ZERO),
            "ts": ms // 1000,
            "ts_ms": ms,
            "time": datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        text = f'{{"type":"ticker","sid":{sub.sid},"msg":{orjson.dumps(msg).decode()}}}'
        if self._queue(sub.conn, text):
            self.stats.md_tickers_sent += 1

    def _queue(self, conn: Connection, text: str) -> bool:
        faults = self._server.faults
        if faults.md_draw(faults.config.malformed_fraction):
            conn.send_market_data(text[: max(1, len(text) // 2)])
            # Not in the server's malformed_sent: that one counts what a communications
            # client should report as invalid frames, and market data is counted apart.
            self.stats.md_malformed_sent += 1
        if not conn.send_market_data(text):
            return False
        self.stats.md_updates_published += 1
        return True


def _flag(params: Mapping[str, Any], name: str) -> bool:
    value = params.get(name, False)
    if not isinstance(value, bool):
        raise MarketDataCommandError(11, f"{name} must be a boolean")
    return value


def _with_id(cmd_id: int | None, frame: dict[str, Any]) -> dict[str, Any]:
    return {"id": cmd_id, **frame} if cmd_id is not None else frame


def _resting_key(orders: Iterable[Any]) -> _Resting:
    return tuple(sorted((o.side, o.price, o.remaining) for o in orders))


def _ticker_fields(market: SimMarket, now: datetime) -> tuple[str, ...]:
    """The ``ticker`` fields ``GET /markets/{ticker}`` reports, so both always agree."""
    wire = market_wire(market, now)
    return (
        wire["yes_bid_dollars"],
        wire["yes_ask_dollars"],
        wire["last_price_dollars"],
        wire["volume_fp"],
        wire["open_interest_fp"],
        wire["yes_bid_size_fp"],
        wire["yes_ask_size_fp"],
    )


def _diff(side: str, old: _Levels, new: _Levels) -> list[tuple[str, Decimal, Decimal]]:
    """(side, price, delta) for every level whose size differs, ascending by price."""
    out = []
    for price in sorted(old.keys() | new.keys()):
        delta = new.get(price, _ZERO) - old.get(price, _ZERO)
        if delta != 0:
            out.append((side, price, delta))
    return out


def _nudge(market: SimMarket, direction: int) -> bool:
    """Move ``market``'s fair value one grid point up (+1) or down (-1); True if the bid moved.

    The YES bid steps exactly when the fair value crosses a grid point, so the fair value
    moves to the neighbouring grid point of the one at or above it.
    """
    points = grid_prices(market.grid)
    fair = market.fair()
    target = bisect.bisect_left(points, fair) + direction
    if not 0 <= target < len(points):
        return False
    micros = int(points[target] * _MICROS)
    if not FAIR_MIN_MICROS <= micros <= FAIR_MAX_MICROS:
        return False
    before, old = market.yes_bid(), market.fair_micros
    market.fair_micros = micros
    if market.yes_bid() != before:
        return True
    market.fair_micros = old
    return False
