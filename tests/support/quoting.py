"""A QuoteManager over a scripted in-memory exchange, with timers the test fires itself.

Nothing here opens a socket or waits on the wall clock: the exchange is :class:`FakeExchange`
(the REST methods the manager calls, with scriptable outcomes and calls that can be parked to
force an interleaving), and the manager's timers (quote TTL, execution check) are captured by
:class:`VirtualTimers` and fired by the test. :class:`Harness` wires them to a real
MarketData, RiskBook and strategy router; :func:`engine_for` puts an Engine over it.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any, Literal, cast

from mmbot.config import QuotesSettings, Settings
from mmbot.engine import Engine
from mmbot.journal import CreatedQuote, Journal
from mmbot.kalshi.errors import BadRequestError, ConflictError, NotFoundError, ServerError
from mmbot.kalshi.models import (
    Fill,
    Market,
    MarketPosition,
    Quote,
    QuoteAcceptedMsg,
    QuoteExecutedMsg,
    Rfq,
    Side,
)
from mmbot.kalshi.rest import Page
from mmbot.kalshi.wire import validate_quote_prices
from mmbot.marketdata import MarketData
from mmbot.quoting import LiveQuote, QuoteGateway, QuoteManager
from mmbot.risk import RiskBook, RiskLimits
from mmbot.strategy import (
    MarketView,
    QuoteIntent,
    Route,
    Strategy,
    StrategyParams,
    StrategyRouter,
    build_strategy,
)
from tests.support.clock import FakeClock
from tests.support.factories import kalshi_market

D = Decimal

LIMITS = RiskLimits(
    max_contracts_per_rfq=D(100),
    max_position_per_market=D(100),
    max_exposure_dollars=D(1000),
    max_open_quotes=10,
    max_daily_loss_dollars=D(100),
)
QUOTES = QuotesSettings(
    min_edge=D("0.01"), ttl_seconds=10.0, requote_threshold=D("0.02"), rest_remainder=False
)
RISK_NOW = datetime(2025, 6, 2, 15, 0, tzinfo=UTC)
MARKET_TTL = 5.0


# --------------------------------------------------------------------------- timers


@dataclass
class VirtualTimer:
    kind: str  # "ttl" or "execution_check"
    delay: float
    live: LiveQuote | None
    handle: asyncio.TimerHandle
    callback: Callable[..., object]
    args: tuple[object, ...]


class VirtualTimers:
    """Captures the manager's ``loop.call_later`` timers so a test fires them when it wants.

    Only callbacks defined inside QuoteManager are captured; asyncio's own timers (and any
    other library's) still go to the real loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._real = loop.call_later
        self.timers: list[VirtualTimer] = []

    def install(self) -> None:
        self._loop.call_later = self.call_later  # type: ignore[method-assign]

    def uninstall(self) -> None:
        if "call_later" in vars(self._loop):
            del self._loop.call_later

    def call_later(
        self, delay: float, callback: Callable[..., object], *args: object, context: Any = None
    ) -> asyncio.TimerHandle:
        qualname = getattr(callback, "__qualname__", "")
        if not qualname.startswith("QuoteManager."):
            return self._real(delay, callback, *args, context=context)
        handle = asyncio.TimerHandle(self._loop.time() + delay, callback, args, self._loop, context)
        if "_arm_expiry" in qualname:
            kind = "ttl"
        elif "execution" in qualname or "_confirm" in qualname:
            kind = "execution_check"
        else:
            kind = qualname
        live = inspect.getclosurevars(callback).nonlocals.get("live")
        self.timers.append(VirtualTimer(kind, delay, live, handle, callback, args))
        return handle

    def armed(self, kind: str, live: LiveQuote | None = None) -> list[VirtualTimer]:
        return [
            t
            for t in self.timers
            if t.kind == kind and not t.handle.cancelled() and (live is None or t.live is live)
        ]

    def fire(self, timer: VirtualTimer) -> None:
        """Run a timer's callback as the loop would when it falls due (call inside the loop)."""
        self.timers.remove(timer)
        if not timer.handle.cancelled():
            timer.callback(*timer.args)

    def fire_all(self, kind: str) -> int:
        due = self.armed(kind)
        for timer in due:
            self.fire(timer)
        return len(due)


# --------------------------------------------------------------------------- the fake exchange


@dataclass
class ExQuote:
    """One quote as the exchange sees it."""

    id: str
    rfq: Rfq
    yes_bid: Decimal
    no_bid: Decimal
    status: str = "open"  # open, accepted, confirmed, executed, cancelled
    side: Side | None = None
    contracts: Decimal | None = None

    @property
    def market(self) -> str:
        return self.rfq.market_ticker

    def offered(self, side: Side) -> Decimal:
        price = self.yes_bid if side == "yes" else self.no_bid
        if price <= 0:
            return D(0)
        if self.rfq.contracts_fp is not None:
            return self.rfq.contracts_fp
        assert self.rfq.target_cost_dollars is not None
        return (self.rfq.target_cost_dollars / price).to_integral_value(rounding=ROUND_FLOOR)


@dataclass
class Parked:
    """A REST call held until the test releases it (ok or not)."""

    name: str
    args: dict[str, Any]
    future: asyncio.Future[bool]


Outcome = BaseException | Literal["ok", "refuse", "ambiguous"]


class FakeExchange:
    """The REST methods QuoteManager and MarketData call, backed by an in-memory exchange.

    * Every call records itself, then yields once (a network round trip is a point where
      other tasks run).
    * ``script[name]`` holds outcomes for the next calls of ``name``: an exception is raised
      without any effect. For ``confirm_quote`` "refuse" is a definite refusal and
      "ambiguous" lands the confirm and then raises a 502, as a lost response would.
    * While ``hold`` is set, create/delete/confirm calls park until :meth:`release`. A parked
      create or delete takes effect when released; a parked confirm lands at once and only
      its answer waits (released not-ok, the answer is a 502).
    """

    def __init__(self) -> None:
        self.markets: dict[str, Market] = {}
        self.rfqs: dict[str, Rfq] = {}
        self.closed_rfqs: set[str] = set()
        self.quotes: dict[str, ExQuote] = {}
        # What GET /portfolio/positions reports: contracts and cost per market.
        self.positions: dict[str, tuple[Decimal, Decimal]] = {}
        # What GET /portfolio/fills reports: the maker's fills, by order id.
        self.fills: dict[str, list[Fill]] = defaultdict(list)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.script: dict[str, list[Outcome]] = defaultdict(list)
        self.hold = False
        self.confirm_outcome: Outcome = "ok"
        self.parked: list[Parked] = []
        # Confirms received for a quote already confirmed.
        self.duplicate_confirms: list[str] = []
        # Hooks for the property test: called as a create or a confirm reaches the exchange.
        self.on_create: Callable[[dict[str, Any]], None] | None = None
        self.on_confirm: Callable[[ExQuote], None] | None = None
        self._ids = itertools.count(1)

    # -- test helpers

    def calls_to(self, name: str) -> list[dict[str, Any]]:
        return [args for called, args in self.calls if called == name]

    def add_market(self, market: Market) -> None:
        self.markets[market.ticker] = market

    def add_rfq(self, rfq: Rfq) -> None:
        self.rfqs[rfq.id] = rfq

    def quote(self, quote_id: str) -> Quote:
        """The REST view of a quote (``GET /communications/quotes/{id}``)."""
        q = self.quotes[quote_id]
        return Quote(
            id=q.id,
            rfq_id=q.rfq.id,
            creator_id="me",
            market_ticker=q.market,
            yes_bid_dollars=q.yes_bid,
            no_bid_dollars=q.no_bid,
            status=q.status,
            accepted_side=q.side,
            contracts_fp=q.contracts if q.contracts is not None else q.rfq.contracts_fp,
            yes_contracts_fp=q.offered("yes"),
            no_contracts_fp=q.offered("no"),
            creator_order_id=f"order-{q.id}",
        )

    def accept(self, quote_id: str, side: Side, contracts: Decimal) -> QuoteAcceptedMsg:
        """A requester accepts one side of an open quote; returns the event it causes."""
        q = self.quotes[quote_id]
        assert q.status == "open", q
        q.status, q.side, q.contracts = "accepted", side, contracts
        return self.accepted_msg(q)

    def accepted_msg(self, q: ExQuote) -> QuoteAcceptedMsg:
        return QuoteAcceptedMsg(
            quote_id=q.id,
            rfq_id=q.rfq.id,
            quote_creator_id="me",
            rfq_creator_id="them",
            market_ticker=q.market,
            yes_bid_dollars=q.yes_bid,
            no_bid_dollars=q.no_bid,
            yes_contracts_offered_fp=q.offered("yes"),
            no_contracts_offered_fp=q.offered("no"),
            accepted_side=q.side,
            contracts_accepted_fp=q.contracts,
        )

    def execute(
        self, quote_id: str, filled: Decimal | None = None, *, listed: bool = True
    ) -> QuoteExecutedMsg:
        """Execute a confirmed quote; ``filled`` less than accepted is a partial fill.

        Unless ``listed`` is False (fills trailing the event), the maker's fill is listed
        under the execution's order id.
        """
        q = self.quotes[quote_id]
        assert q.status == "confirmed", q
        q.status = "executed"
        assert q.side is not None
        assert q.contracts is not None
        if listed:
            self.list_fill(quote_id, q.contracts if filled is None else filled)
        return QuoteExecutedMsg(
            quote_id=q.id,
            rfq_id=q.rfq.id,
            quote_creator_id="me",
            order_id=f"order-{q.id}",
            market_ticker=q.market,
        )

    def list_fill(self, quote_id: str, count: Decimal) -> None:
        q = self.quotes[quote_id]
        assert q.side is not None
        price = q.yes_bid if q.side == "yes" else q.no_bid
        yes_price = price if q.side == "yes" else 1 - price
        self.fills[f"order-{q.id}"].append(
            Fill(
                order_id=f"order-{q.id}",
                ticker=q.market,
                side=q.side,
                outcome_side=q.side,
                action="buy",
                count_fp=count,
                yes_price_dollars=yes_price,
                no_price_dollars=1 - yes_price,
            )
        )

    def void(self, quote_id: str) -> None:
        q = self.quotes[quote_id]
        assert q.status in ("accepted", "confirmed"), q
        q.status = "cancelled"

    def close_rfq(self, rfq_id: str) -> None:
        """The RFQ goes away; the exchange withdraws the open quotes on it."""
        self.closed_rfqs.add(rfq_id)
        for q in self.quotes.values():
            if q.rfq.id == rfq_id and q.status == "open":
                q.status = "cancelled"

    def release(self, parked: Parked, ok: bool = True) -> None:
        self.parked.remove(parked)
        parked.future.set_result(ok)

    # -- REST

    async def _call(self, name: str, **args: Any) -> tuple[Outcome, bool]:
        """Record a call; return its scripted outcome and whether it was released ok."""
        self.calls.append((name, args))
        held = self.hold and name in ("create_quote", "delete_quote", "confirm_quote")
        await asyncio.sleep(0)
        scripted = self.script.get(name)
        outcome: Outcome
        if scripted:
            outcome = scripted.pop(0)
        elif name == "confirm_quote":
            outcome = self.confirm_outcome
        else:
            outcome = "ok"
        if not held or name == "confirm_quote":
            return outcome, True
        return outcome, await self._park(name, args)

    async def _park(self, name: str, args: dict[str, Any]) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.parked.append(Parked(name, args, future))
        return await future

    async def create_quote(
        self,
        rfq_id: str,
        yes_bid: Decimal,
        no_bid: Decimal,
        *,
        rest_remainder: bool = False,
        post_only: bool = True,
        subaccount: int | None = None,
        deadline_seconds: float | None = None,
        value: Decimal | None = None,
        shed_at: float | None = None,
    ) -> str:
        # The real client refuses a malformed quote before anything is sent.
        validate_quote_prices(yes_bid, no_bid)
        args = {
            "rfq_id": rfq_id,
            "yes_bid": yes_bid,
            "no_bid": no_bid,
            "rest_remainder": rest_remainder,
            "post_only": post_only,
            "deadline_seconds": deadline_seconds,
            "value": value,
            "shed_at": shed_at,
        }
        if self.on_create is not None:
            self.on_create(args)
        outcome, released_ok = await self._call("create_quote", **args)
        if isinstance(outcome, BaseException):
            raise outcome
        if not released_ok:
            raise BadRequestError("invalid_parameters", status=400, code="invalid_parameters")
        if rfq_id in self.closed_rfqs:
            raise BadRequestError("RFQ is closed", status=400, code="RFQ_CLOSED")
        # A maker's new quote on an RFQ replaces its previous open one.
        for q in self.quotes.values():
            if q.rfq.id == rfq_id and q.status == "open":
                q.status = "cancelled"
        quote_id = f"q{next(self._ids)}"
        rfq = self.rfqs.get(rfq_id) or Rfq(id=rfq_id, market_ticker="?")
        self.quotes[quote_id] = ExQuote(quote_id, rfq, D(yes_bid), D(no_bid))
        return quote_id

    async def delete_quote(
        self, quote_id: str, *, rfq_id: str | None = None, deadline_seconds: float | None = None
    ) -> None:
        outcome, released_ok = await self._call(
            "delete_quote", quote_id=quote_id, rfq_id=rfq_id, deadline_seconds=deadline_seconds
        )
        if isinstance(outcome, BaseException):
            raise outcome
        if not released_ok:
            raise ServerError("bad gateway", status=502)
        q = self.quotes.get(quote_id)
        if q is None or q.status in ("cancelled", "executed"):
            raise NotFoundError("quote not found", status=404, code="not_found")
        if q.status == "confirmed":
            raise ConflictError("quote is confirmed", status=409, code="conflict")
        # Withdrawing an accepted, unconfirmed quote voids the acceptance.
        q.status = "cancelled"

    async def confirm_quote(
        self, quote_id: str, *, rfq_id: str | None = None, deadline_seconds: float | None = None
    ) -> None:
        held = self.hold
        outcome, _ = await self._call(
            "confirm_quote", quote_id=quote_id, rfq_id=rfq_id, deadline_seconds=deadline_seconds
        )
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "refuse":
            raise ConflictError("quote can no longer be confirmed", status=409, code="conflict")
        q = self.quotes.get(quote_id)
        if q is None or q.status not in ("accepted", "confirmed"):
            raise ConflictError("quote is not accepted", status=409, code="conflict")
        if q.status == "confirmed":
            self.duplicate_confirms.append(quote_id)
        if q.status == "accepted":
            if self.on_confirm is not None:
                self.on_confirm(q)
            q.status = "confirmed"
        if held and not await self._park("confirm_quote", {"quote_id": quote_id}):
            raise ServerError("bad gateway", status=502)
        if outcome == "ambiguous":
            raise ServerError("bad gateway", status=502)

    async def get_quote(self, quote_id: str, *, rfq_id: str | None = None) -> Quote:
        outcome, _ = await self._call("get_quote", quote_id=quote_id, rfq_id=rfq_id)
        if isinstance(outcome, BaseException):
            raise outcome
        if quote_id not in self.quotes:
            raise NotFoundError("quote not found", status=404)
        return self.quote(quote_id)

    async def get_market(self, ticker: str) -> Market:
        outcome, _ = await self._call("get_market", ticker=ticker)
        if isinstance(outcome, BaseException):
            raise outcome
        if ticker not in self.markets:
            raise NotFoundError("market not found", status=404)
        return self.markets[ticker]

    async def list_markets(
        self, *, tickers: list[str] | None = None, limit: int | None = None, **_: Any
    ) -> Page[Market]:
        await self._call("list_markets", tickers=tickers)
        wanted = tickers if tickers is not None else list(self.markets)
        return Page([self.markets[t] for t in wanted if t in self.markets], None)

    # Listings used by Engine reconciliation.

    async def iter_positions(self, **_: Any) -> AsyncIterator[MarketPosition]:
        for ticker, (contracts, cost) in list(self.positions.items()):
            yield MarketPosition(ticker=ticker, position_fp=contracts, market_exposure_dollars=cost)

    async def iter_quotes(self, *, status: str | None = None, **_: Any) -> AsyncIterator[Quote]:
        for q in list(self.quotes.values()):
            if status is None or q.status == status:
                yield self.quote(q.id)

    async def iter_rfqs(self, **_: Any) -> AsyncIterator[Rfq]:
        none: tuple[Rfq, ...] = ()
        for rfq in none:
            yield rfq

    async def iter_fills(self, *, order_id: str | None = None, **_: Any) -> AsyncIterator[Fill]:
        outcome, _done = await self._call("list_fills", order_id=order_id)
        if isinstance(outcome, BaseException):
            raise outcome
        for fill in list(self.fills.get(order_id or "", [])):
            yield fill


def _as_gateway(exchange: FakeExchange) -> QuoteGateway:
    """mypy checks the fake against QuoteGateway here: a drift of either fails type-checking."""
    return exchange


# --------------------------------------------------------------------------- journal, strategies


class RecordingJournal:
    """Records ``record_*`` calls; each is checked against the real Journal's signature.

    It also answers the readers the engine uses from what it recorded, as the real journal
    would from its file.
    """

    path = Path("recording-journal")
    run_id = "test-run"
    last_error: str | None = None

    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, Any]]] = []
        self.healthy = True

    def quotes_created(self, quote_ids: Any) -> dict[str, CreatedQuote]:
        wanted = set(quote_ids)
        found: dict[str, CreatedQuote] = {}
        for kind, row in self.rows:
            if kind in ("quote_created", "quote_replaced") and row["quote_id"] in wanted:
                found[row["quote_id"]] = CreatedQuote(
                    quote_id=row["quote_id"],
                    rfq_id=row["rfq_id"],
                    market=row["market"],
                    yes_bid=row["yes_bid"],
                    no_bid=row["no_bid"],
                    contracts=row.get("contracts"),
                    reference=row.get("reference"),
                    strategy=row.get("strategy"),
                    run_id=self.run_id,
                )
        return found

    def realized_pnl_since(self, since: datetime) -> Decimal:
        return sum((row["realized_pnl_change"] for row in self.of("position_changed")), D(0))

    def fees_since(self, since: datetime) -> Decimal:
        return sum((row.get("fee") or D(0) for row in self.of("position_changed")), D(0))

    def runs(self) -> list[Any]:
        return []

    def __getattr__(self, name: str) -> Callable[..., None]:
        real = getattr(Journal, name, None)
        if not name.startswith("record_") or real is None:
            raise AttributeError(name)
        signature = inspect.signature(real)

        def record(*args: Any, **kwargs: Any) -> None:
            # A call the real journal would reject must fail here too.
            signature.bind(None, *args, **kwargs)
            self.rows.append((name.removeprefix("record_"), kwargs))

        return record

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.rows]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [row for k, row in self.rows if k == kind]


class Boom(Strategy[StrategyParams]):
    """A strategy whose quote() raises."""

    name = "boom"
    Params = StrategyParams

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        raise ZeroDivisionError("strategy bug")


# --------------------------------------------------------------------------- unit-test harness


class Harness:
    """A QuoteManager wired to the fake exchange, real MarketData, real RiskBook, fixed_spread."""

    def __init__(
        self,
        timers: VirtualTimers,
        *,
        limits: RiskLimits = LIMITS,
        quotes: QuotesSettings = QUOTES,
        journal: Any = None,
    ) -> None:
        self.timers = timers
        self.exchange = FakeExchange()
        for ticker in ("M-1", "M-2", "M-3", "X-1", "B-1"):
            self.exchange.add_market(kalshi_market(ticker))
        self.exchange.add_market(kalshi_market("M-HVM", hvm=True))
        self.clock = FakeClock(1000.0)
        self.market_data = MarketData(
            self.exchange,  # type: ignore[arg-type]
            ttl_seconds=MARKET_TTL,
            refresh_seconds=1.0,
            clock=self.clock,
        )
        self.risk = RiskBook(limits, clock=lambda: RISK_NOW)
        self.market_data.price_listeners.append(self.risk.mark)
        self.journal = journal if journal is not None else RecordingJournal()
        self.strategy = build_strategy("fixed_spread", {"half_spread": "0.02"})
        self.router = StrategyRouter(
            [Route(("M-*",), self.strategy), Route(("B-*",), Boom(StrategyParams()))]
        )
        # Withdrawal retries and fill look-ups wait through this, not the wall clock.
        self.sleeps: list[float] = []
        self.qm = QuoteManager(
            self.exchange,
            self.market_data,
            self.router,
            self.risk,
            cast(Journal, self.journal),  # a RecordingJournal checked against Journal's API
            quotes,
            sleep=self._sleep,
        )
        self.market_data.on_refresh = self.qm.on_market
        self._rfq_ids = itertools.count(1)

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)

    def rfq(self, ticker: str = "M-1", contracts: str | None = "10", **extra: Any) -> Rfq:
        rfq = Rfq(
            id=f"rfq-{next(self._rfq_ids)}",
            market_ticker=ticker,
            event_ticker=ticker.rsplit("-", 1)[0],
            contracts_fp=D(contracts) if contracts is not None else None,
            **extra,
        )
        self.exchange.add_rfq(rfq)
        return rfq

    async def quoted(self, ticker: str = "M-1", contracts: str = "10") -> tuple[Rfq, str]:
        """Quote a fresh RFQ; return it and the id of the quote sent."""
        rfq = self.rfq(ticker, contracts)
        await self.qm.on_rfq(rfq)
        live = self.live(rfq)
        assert live.state == "open"
        assert live.quote_id is not None
        return rfq, live.quote_id

    def live(self, rfq: Rfq) -> LiveQuote:
        found = [q for q in self.qm.live() if q.rfq.id == rfq.id]
        assert len(found) == 1, found
        return found[0]

    async def settle(self, rounds: int = 20) -> None:
        """Let every runnable task run until it blocks (on a parked call) or finishes."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    def skipped(self) -> list[str]:
        return [row["reason"] for row in self.journal.of("rfq_skipped")]


def engine_for(h: Harness) -> Engine:
    """An Engine over the harness's exchange, book and market data, managing its quotes."""
    engine = Engine(
        Settings.model_construct(quotes=QUOTES),
        rest=h.exchange,  # type: ignore[arg-type]
        stream=None,  # type: ignore[arg-type]
        journal=cast(Journal, h.journal),
        risk=h.risk,
        router=h.router,
        market_data=h.market_data,
        quotes=h.qm,
    )
    # Retries and fill look-ups wait on the harness's clock, as the harness's own do.
    engine.quotes._sleep = h._sleep
    h.qm = engine.quotes
    return engine
