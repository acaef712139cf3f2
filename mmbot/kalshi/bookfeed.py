"""Live order books from Kalshi's ``orderbook_delta`` WebSocket channel.

Why this channel and not ``ticker``: both carry the best YES bid and ask, but only
``orderbook_delta`` numbers its messages. Its ``seq`` runs per subscription across every
market in it, so a contiguous run of numbers proves that nothing was missed for *any*
of those markets up to the latest message: a quiet market's book is known to be current
as long as its subscription keeps talking. ``ticker`` has no numbers, so a lost message
would leave a wrong price looking fresh. The cost is the book itself (a dict of levels
per market) and a few deltas per price change; the mock measures about two per tick.

:class:`OrderbookFeed` keeps one connection (its own, apart from ``communications``:
market data at hundreds of messages a second never delays an RFQ frame behind it, and a
resubscription of one never disturbs the other). It subscribes to the markets it is asked
for (:meth:`OrderbookFeed.want`) and drops a market once nobody asked for it for
``linger_seconds``, unless it is pinned (a live quote depends on it).

Integrity, failing closed:

- A sequence gap, or a market-data frame that cannot be read, marks every book of the
  subscription invalid and asks for fresh snapshots (``get_snapshot``); deltas for an
  invalid book are ignored until its snapshot arrives. A book is never valid on a
  broken sequence.
- A drop invalidates every book; the reconnect resubscribes and waits for snapshots.
- Unknown fields are ignored; unknown message types are counted and ignored.

Kalshi's books hold bids only: the YES ask is one dollar less the best NO bid.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import orjson
import structlog
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.uri import parse_uri

from mmbot.kalshi.auth import Signer
from mmbot.kalshi.backoff import Backoff
from mmbot.kalshi.ws import open_connection

__all__ = ["BookTop", "FeedStats", "OrderbookFeed"]

log = structlog.get_logger("mmbot.kalshi.bookfeed")

CHANNEL: Final = "orderbook_delta"
_ONE: Final = Decimal(1)
_ZERO: Final = Decimal(0)
# How often markets nobody wants any more are looked for, at most.
_PRUNE_EVERY_SECONDS: Final = 5.0
# At most this often a snapshot request: a feed that keeps breaking (every frame cut off,
# say) must not turn each broken frame into another round of snapshots.
_RESYNC_MIN_INTERVAL_SECONDS: Final = 0.25


@dataclass(slots=True)
class FeedStats:
    """Plain counters for the metrics layer."""

    frames: int = 0
    snapshots: int = 0
    deltas: int = 0
    malformed: int = 0
    unknown: int = 0
    gaps: int = 0
    resyncs: int = 0
    reconnects: int = 0
    errors: int = 0
    connected: bool = False
    markets: int = 0  # markets in the subscription


@dataclass(frozen=True, slots=True)
class BookTop:
    """The best YES bid and ask of a live book, and when it was last known current."""

    yes_bid: Decimal | None
    yes_ask: Decimal | None
    as_of: float  # the feed's clock: the last message of its subscription


class _Book:
    """One market's aggregated levels: price -> contracts, per side."""

    __slots__ = ("best_no", "best_yes", "no", "valid", "yes")

    def __init__(self) -> None:
        self.yes: dict[Decimal, Decimal] = {}
        self.no: dict[Decimal, Decimal] = {}
        self.best_yes: Decimal | None = None
        self.best_no: Decimal | None = None
        self.valid = False

    def load(self, yes: dict[Decimal, Decimal], no: dict[Decimal, Decimal]) -> None:
        self.yes, self.no = yes, no
        self.best_yes = max(yes) if yes else None
        self.best_no = max(no) if no else None
        self.valid = True

    def apply(self, side: str, price: Decimal, delta: Decimal) -> None:
        levels = self.yes if side == "yes" else self.no
        size = levels.get(price, _ZERO) + delta
        best = self.best_yes if side == "yes" else self.best_no
        if size > 0:
            levels[price] = size
            if best is None or price > best:
                best = price
        else:
            levels.pop(price, None)
            if price == best:
                best = max(levels) if levels else None
        if side == "yes":
            self.best_yes = best
        else:
            self.best_no = best

    def top(self) -> tuple[Decimal | None, Decimal | None]:
        ask = None if self.best_no is None else _ONE - self.best_no
        return self.best_yes, ask


class _Malformed(Exception):
    """A market-data frame that cannot be read: the books it touched are suspect."""


def _decimal(value: Any, name: str) -> Decimal:
    if type(value) is not str:
        raise _Malformed(f"{name} is {type(value).__name__}, expected a decimal string")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise _Malformed(f"{name} {value[:20]!r} is not a decimal") from None
    if not number.is_finite():
        raise _Malformed(f"{name} {value[:20]!r} is not finite")
    return number


def _levels(raw: Any, name: str) -> dict[Decimal, Decimal]:
    if raw is None:
        return {}  # the docs: the key is absent when the side has no bids
    if type(raw) is not list:
        raise _Malformed(f"{name} is not a list")
    levels: dict[Decimal, Decimal] = {}
    for level in raw:
        if type(level) is not list or len(level) != 2:
            raise _Malformed(f"{name} holds a level that is not [price, contracts]")
        size = _decimal(level[1], name)
        if size > 0:
            levels[_decimal(level[0], name)] = size
    return levels


class OrderbookFeed:
    """An ``orderbook_delta`` subscription kept to the wanted markets, books kept live."""

    def __init__(
        self,
        url: str,
        signer: Signer | None,
        *,
        linger_seconds: float = 60.0,
        ping_interval_seconds: float = 10.0,
        ping_timeout_seconds: float = 10.0,
        reconnect_min_seconds: float = 0.5,
        reconnect_max_seconds: float = 30.0,
        open_timeout_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        """Follow books over ``url``; markets unwanted for ``linger_seconds`` are dropped."""
        parse_uri(url)
        if not linger_seconds > 0:
            raise ValueError("linger_seconds must be > 0")
        self._url = url
        self._signer = signer
        self._linger = linger_seconds
        self._ping_interval = ping_interval_seconds
        self._ping_timeout = ping_timeout_seconds
        self._open_timeout = open_timeout_seconds
        self._backoff = Backoff(
            base=reconnect_min_seconds,
            cap=reconnect_max_seconds,
            rng=rng or random.Random(),  # noqa: S311 - jitter, not cryptography
        )
        #: The clock of ``as_of`` and the linger; a reader comparing ages must share it.
        self.clock = clock
        self._wall_clock = wall_clock
        self.stats = FeedStats()
        #: Told the ticker of every market whose best bid or ask changed (or whose book
        #: became valid or invalid). Called on the event loop for each such message.
        self.on_top: Callable[[str], None] | None = None
        #: Told, for each delta carrying ``ts_ms``, our wall clock at applying it less that
        #: stamp, in seconds: how far the book we hold trails the exchange's.
        self.on_lag: Callable[[float], None] | None = None
        #: Whether a market is pinned (a live quote depends on it): never dropped.
        self.pinned: Callable[[str], bool] = lambda _ticker: False
        self._wanted: dict[str, float] = {}  # ticker -> last asked for (our clock)
        self._books: dict[str, _Book] = {}  # the subscription's markets
        self._sid: int | None = None
        self._seq: int | None = None
        self._last_message_at: float | None = None
        self._cmd_id = 0
        self._adding: dict[int, list[str]] = {}  # add_markets command id -> its markets
        self._ws: ClientConnection | None = None
        self._changed = asyncio.Event()
        self._resync = False
        self._closing = False
        self._closer: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ reads (sync, hot path)

    def top(self, ticker: str) -> BookTop | None:
        """The market's live best bid and ask, or None when no valid book is held."""
        book = self._books.get(ticker)
        if book is None or not book.valid or self._last_message_at is None:
            return None
        bid, ask = book.top()
        return BookTop(bid, ask, self._last_message_at)

    def last_message_age(self) -> float | None:
        """Seconds since the subscription last sent anything, or None if it never did."""
        at = self._last_message_at
        return None if at is None else self.clock() - at

    # ------------------------------------------------------------------ what to follow

    def want(self, ticker: str) -> None:
        """Follow ``ticker`` (again): subscribe if new, keep it for another linger period."""
        known = ticker in self._wanted
        self._wanted[ticker] = self.clock()
        if not known:
            self._changed.set()

    def wanted(self) -> Iterable[str]:
        """The markets the feed follows or is about to."""
        return self._wanted.keys()

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Connect, subscribe and keep the books until :meth:`close` (a supervised task)."""
        retrying = False
        while not self._closing:
            if retrying:
                await asyncio.sleep(self._backoff.next_delay())
                if self._closing:
                    return
            retrying = True
            try:
                ws = await self._connect()
            except (OSError, WebSocketException) as exc:
                detail = str(exc)[:200] or type(exc).__name__
                if isinstance(exc, InvalidStatus):
                    detail = f"handshake refused: HTTP {exc.response.status_code}"
                log.warning("md_connect_failed", error=type(exc).__name__, detail=detail)
                continue
            self._ws = ws
            self.stats.connected = True
            syncer = asyncio.create_task(self._sync(ws), name="md-sync")
            reason = ""
            try:
                await self._read(ws)
            except ConnectionClosed as exc:
                reason = str(exc)[:120]
            finally:
                syncer.cancel()
                await asyncio.gather(syncer, return_exceptions=True)
                self._ws = None
                self.stats.connected = False
                self._drop_subscription()
                await ws.close()
            if self._closing:
                return
            self.stats.reconnects += 1
            log.warning("md_disconnected", reason=reason)

    async def close(self) -> None:
        """Stop following: :meth:`run` returns and the connection closes."""
        self._closing = True
        self._changed.set()
        ws = self._ws
        if ws is not None:
            await ws.close()

    async def _connect(self) -> ClientConnection:
        headers = self._signer.headers("GET", self._url) if self._signer is not None else None
        return await open_connection(
            self._url,
            headers,
            open_timeout=self._open_timeout,
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_timeout,
        )

    def _drop_subscription(self) -> None:
        """The subscription is gone: no book of it can be trusted any more."""
        tickers = list(self._books)
        self._books.clear()
        self._sid = None
        self._seq = None
        self._adding.clear()
        self.stats.markets = 0
        self._notify(tickers)

    # ------------------------------------------------------------------ commands

    async def _send(self, ws: ClientConnection, cmd: str, params: dict[str, Any]) -> None:
        self._cmd_id += 1
        await ws.send(orjson.dumps({"id": self._cmd_id, "cmd": cmd, "params": params}).decode())

    async def _sync(self, ws: ClientConnection) -> None:
        """Keep the subscription equal to the wanted markets, and resync after gaps."""
        last_prune = self.clock()
        last_resync = -_RESYNC_MIN_INTERVAL_SECONDS
        self._changed.set()  # a fresh connection subscribes at once to what is wanted
        while True:
            try:
                async with asyncio.timeout(min(_PRUNE_EVERY_SECONDS, self._linger)):
                    await self._changed.wait()
            except TimeoutError:
                pass
            self._changed.clear()
            now = self.clock()
            if now - last_prune >= min(_PRUNE_EVERY_SECONDS, self._linger):
                last_prune = now
                for ticker, at in list(self._wanted.items()):
                    if now - at > self._linger and not self.pinned(ticker):
                        del self._wanted[ticker]
            wanted = set(self._wanted)
            held = set(self._books)
            if self._sid is None:
                if wanted and not self._books:
                    await self._subscribe(ws, sorted(wanted))
                continue
            added, removed = sorted(wanted - held), sorted(held - wanted)
            if removed:
                for ticker in removed:
                    self._books.pop(ticker, None)
                params = {"sids": [self._sid], "action": "delete_markets"}
                await self._send(ws, "update_subscription", {**params, "market_tickers": removed})
            if added:
                for ticker in added:
                    self._books[ticker] = _Book()
                params = {"sids": [self._sid], "action": "add_markets"}
                await self._send(ws, "update_subscription", {**params, "market_tickers": added})
                self._adding[self._cmd_id] = added
            if self._resync:
                wait = last_resync + _RESYNC_MIN_INTERVAL_SECONDS - self.clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                last_resync = self.clock()
                self._resync = False
                self.stats.resyncs += 1
                stale = sorted(t for t, b in self._books.items() if not b.valid)
                if stale:
                    params = {"sids": [self._sid], "action": "get_snapshot"}
                    await self._send(ws, "update_subscription", {**params, "market_tickers": stale})
            self.stats.markets = len(self._books)

    async def _subscribe(self, ws: ClientConnection, tickers: list[str]) -> None:
        for ticker in tickers:
            self._books[ticker] = _Book()
        self._seq = None
        self.stats.markets = len(self._books)
        await self._send(ws, "subscribe", {"channels": [CHANNEL], "market_tickers": tickers})

    # ------------------------------------------------------------------ frames

    async def _read(self, ws: ClientConnection) -> None:
        while True:
            frame = await ws.recv(decode=False)
            self.stats.frames += 1
            try:
                self._handle(frame)
            except _Malformed as exc:
                self._malformed(str(exc), frame)

    def _malformed(self, reason: str, frame: bytes | str) -> None:
        self.stats.malformed += 1
        excerpt = frame[:120] if isinstance(frame, str) else frame[:120].decode("utf-8", "replace")
        log.warning("md_malformed_frame", reason=reason, excerpt=excerpt)
        # It may have been a delta we can no longer apply: the books are suspect.
        self._invalidate("malformed frame")

    def _handle(self, frame: bytes | str) -> None:
        try:
            data = orjson.loads(frame)
        except orjson.JSONDecodeError:
            raise _Malformed("not JSON") from None
        if type(data) is not dict:
            raise _Malformed("not a JSON object")
        kind = data.get("type")
        if kind == "orderbook_delta" or kind == "orderbook_snapshot":
            if not self._in_sequence(data):
                return
            msg = data.get("msg")
            if type(msg) is not dict:
                raise _Malformed(f"{kind} without a msg object")
            ticker = msg.get("market_ticker")
            if type(ticker) is not str:
                raise _Malformed(f"{kind} without a market_ticker")
            if kind == "orderbook_delta":
                self._delta(ticker, msg)
            else:
                self._snapshot(ticker, msg)
        elif kind == "subscribed":
            msg = data.get("msg")
            if type(msg) is dict and msg.get("channel") == CHANNEL and type(msg.get("sid")) is int:
                self._sid = msg["sid"]
                self._backoff.reset()
                log.info("md_subscribed", sid=self._sid, markets=len(self._books))
                self._changed.set()  # markets wanted meanwhile are added now
        elif kind == "ok" or kind == "unsubscribed":
            self._in_sequence(data)
            cmd_id = data.get("id")
            if type(cmd_id) is int:
                self._adding.pop(cmd_id, None)
        elif kind == "error":
            self._error(data)
        else:
            self.stats.unknown += 1

    def _in_sequence(self, data: dict[str, Any]) -> bool:
        """Check the message's place in its subscription; False if it is not ours."""
        sid, seq = data.get("sid"), data.get("seq")
        if self._sid is not None and sid != self._sid:
            return False  # a subscription we left; its books are gone
        if type(seq) is not int:
            if data.get("type") in ("ok", "unsubscribed"):
                return True  # a reply that takes no number
            raise _Malformed("message without an integer seq")
        self._last_message_at = self.clock()
        expected = None if self._seq is None else self._seq + 1
        self._seq = seq
        if expected is not None and seq != expected:
            self.stats.gaps += 1
            log.warning("md_sequence_gap", sid=sid, expected=expected, got=seq)
            self._invalidate("sequence gap")
        return True

    def _invalidate(self, why: str) -> None:
        """Every book of the subscription is suspect: invalid until its next snapshot."""
        touched = [t for t, b in self._books.items() if b.valid]
        for ticker in touched:
            self._books[ticker].valid = False
        self._notify(touched)
        if self._sid is not None:
            self._resync = True
            self._changed.set()
            log.info("md_resync_requested", why=why, markets=len(self._books))

    def _snapshot(self, ticker: str, msg: dict[str, Any]) -> None:
        book = self._books.get(ticker)
        if book is None:
            return  # a market we dropped meanwhile
        yes = _levels(msg.get("yes_dollars_fp"), "yes_dollars_fp")
        no = _levels(msg.get("no_dollars_fp"), "no_dollars_fp")
        self.stats.snapshots += 1
        book.load(yes, no)
        self._notify((ticker,))

    def _delta(self, ticker: str, msg: dict[str, Any]) -> None:
        book = self._books.get(ticker)
        if book is None or not book.valid:
            return  # dropped, or waiting for its snapshot
        side = msg.get("side")
        if side != "yes" and side != "no":
            raise _Malformed(f"side {str(side)[:10]!r} is neither yes nor no")
        price = _decimal(msg.get("price_dollars"), "price_dollars")
        delta = _decimal(msg.get("delta_fp"), "delta_fp")
        self.stats.deltas += 1
        before = book.best_yes, book.best_no
        book.apply(side, price, delta)
        stamp = msg.get("ts_ms")
        if type(stamp) is int and self.on_lag is not None:
            self.on_lag(self._wall_clock() - stamp / 1000)
        if (book.best_yes, book.best_no) != before:
            self._notify((ticker,))

    def _notify(self, tickers: Iterable[str]) -> None:
        hook = self.on_top
        if hook is None:
            return
        for ticker in tickers:
            try:
                hook(ticker)
            except Exception:
                # A listener's bug must not cost us the books.
                log.exception("md_on_top_failed", market=ticker)

    def _error(self, data: dict[str, Any]) -> None:
        self.stats.errors += 1
        raw = data.get("msg")
        msg: dict[str, Any] = raw if type(raw) is dict else {}
        log.warning("md_error_reply", code=msg.get("code"), msg=msg.get("msg"), id=data.get("id"))
        market = msg.get("market_ticker")
        if type(market) is str and msg.get("code") == 16:
            # An unknown market: stop asking for it; REST answers for it as before.
            self._wanted.pop(market, None)
            self._books.pop(market, None)
            cmd_id = data.get("id")
            refused = self._adding.pop(cmd_id, []) if type(cmd_id) is int else []
            if refused:
                # The whole add_markets was refused: its other markets were not added and
                # no snapshot comes for them; forget their empty books so they are added
                # again without the unknown one.
                for ticker in refused:
                    book = self._books.get(ticker)
                    if book is not None and not book.valid:
                        del self._books[ticker]
                self.stats.markets = len(self._books)
                self._changed.set()
            if self._sid is None:
                # The subscribe it spoiled did not stand: subscribe again without it.
                self._books.clear()
                self._changed.set()
        elif self._sid is None:
            # The subscribe failed otherwise: start over on a fresh connection, after the
            # backoff, rather than hammer the exchange with the same command.
            self._books.clear()
            ws = self._ws
            if ws is not None:
                self._closer = asyncio.get_running_loop().create_task(ws.close())
