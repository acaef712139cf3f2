"""The quote lifecycle: create, replace, expire, confirm, delete.

One :class:`QuoteManager` owns every quote the daemon has on the exchange. For
each RFQ it asks the routed strategy for prices, rounds them down to the
market's grid, keeps ``yes_bid + no_bid <= 1 - quotes.min_edge``, declines any
side the risk book could not confirm, and sends one post-only quote. A quote is
deleted after its TTL and when its RFQ goes away, and replaced when the
reference mid moves more than ``quotes.requote_threshold``.

When a requester accepts, the risk book reserves the fill atomically (the event
loop is single-threaded and :meth:`RiskBook.reserve` is synchronous) and the
confirm goes out on the write lane's highest priority, with a deadline inside
the confirmation window (30 s, 3 s on High Volatility Markets). An accept that
risk declines is deleted and journaled with its reason. ``quote_executed``
turns the reservation into a position.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Literal, Protocol

import structlog

from mmbot.config import QuotesSettings
from mmbot.journal import Journal
from mmbot.kalshi.errors import (
    KalshiApiError,
    KalshiError,
    NotFoundError,
    ServerError,
    TransportError,
)
from mmbot.kalshi.models import (
    MakerFill,
    Market,
    Quote,
    QuoteAcceptedMsg,
    QuoteExecutedMsg,
    Rfq,
    maker_fill_for_accept,
)
from mmbot.kalshi.ratelimit import Shed
from mmbot.kalshi.rest import InvalidQuoteError, KalshiRestClient
from mmbot.logs import log_context
from mmbot.marketdata import MarketData, reference_mid
from mmbot.risk import RiskBook
from mmbot.strategy import (
    FillInfo,
    MarketView,
    Strategy,
    StrategyRouter,
    clamp_pair,
    round_down_to_grid,
    safe_quote,
)

__all__ = [
    "Counters",
    "LatencyObserver",
    "LiveQuote",
    "QuoteManager",
    "confirm_window_seconds",
    "expected_value",
    "shape_prices",
]

log = structlog.get_logger("mmbot.quoting")

_ZERO = Decimal(0)
_ONE = Decimal(1)
# The states of a quote that is (or is about to be) live on the exchange.
_LIVE_STATES: frozenset[str] = frozenset({"creating", "open"})
_CONFIRM_WINDOW = (30.0, 3.0)  # standard, High Volatility Market
_EXECUTION_TIMER = (15.0, 1.0)
# Confirm well inside the window: the requester's clock started before our event arrived.
_CONFIRM_SHARE = 0.8
# After the execution timer, how long to wait for quote_executed before asking over REST.
_EXECUTION_GRACE_SECONDS = 5.0
# Repeated looks at a quote whose execution is late back off to this interval: a look-up
# that keeps failing must not cost a read every five seconds for as long as it fails.
_EXECUTION_CHECK_MAX_SECONDS = 60.0
_CREATE_DEADLINE_SECONDS = 2.0
_DELETE_DEADLINE_SECONDS = 2.0
_RECENT_RFQS = 10_000

State = Literal["creating", "open", "confirmed", "done"]


def confirm_window_seconds(hvm: bool) -> float:
    """Time the exchange allows to confirm an accepted quote."""
    return _CONFIRM_WINDOW[1] if hvm else _CONFIRM_WINDOW[0]


def shape_prices(
    yes_bid: Decimal, no_bid: Decimal, view: MarketView, min_edge: Decimal
) -> tuple[Decimal, Decimal]:
    """Round a strategy's prices down to the grid and keep the pair at least min_edge under 1.

    Rounding only ever lowers a bid, and lowering a bid only makes the quote safer, so the
    result is never more aggressive than what the strategy asked for.
    """
    yes, no = clamp_pair(max(yes_bid, _ZERO), max(no_bid, _ZERO), _ONE - min_edge)
    yes = round_down_to_grid(yes, view.price_ranges) if yes > 0 else _ZERO
    no = round_down_to_grid(no, view.price_ranges) if no > 0 else _ZERO
    return yes, no


def expected_value(live: LiveQuote) -> Decimal:
    """What a quote is worth if accepted, in dollars: its better side's edge times its size.

    Edge is measured from the reference mid (the price a side is worth); only one side of
    a quote can be accepted, so the better one counts. Without a reference it is zero:
    such quotes are the first to give way.
    """
    mid = live.reference
    if mid is None:
        return _ZERO
    best = _ZERO
    if live.yes_bid > 0:
        best = max(best, (mid - live.yes_bid) * _contracts_for(live.rfq, live.yes_bid))
    if live.no_bid > 0:
        best = max(best, (_ONE - mid - live.no_bid) * _contracts_for(live.rfq, live.no_bid))
    return best


def _sized(rfq: Rfq) -> bool:
    """Whether the RFQ asks for a positive size, in contracts or as a dollar budget."""
    if rfq.contracts_fp is not None:
        return rfq.contracts_fp > 0
    return rfq.target_cost_dollars is not None and rfq.target_cost_dollars > 0


def _contracts_for(rfq: Rfq, price: Decimal) -> Decimal:
    """Contracts a full fill of one side would be: the RFQ size, or what its budget buys."""
    if rfq.contracts_fp is not None:
        return rfq.contracts_fp
    if rfq.target_cost_dollars is None or price <= 0:
        return _ZERO
    return (rfq.target_cost_dollars / price).to_integral_value(rounding=ROUND_FLOOR)


def _may_have_landed(exc: KalshiError) -> bool:
    """Whether a request that raised ``exc`` may still have taken effect on the exchange."""
    if isinstance(exc, TransportError):
        return exc.sent
    if isinstance(exc, KalshiApiError):
        # A 4xx answer is a refusal; a 5xx says nothing about whether the write happened.
        return isinstance(exc, ServerError)
    # Anything else (an unreadable answer, say) came after the request went out.
    return True


@dataclass
class Counters:
    """What the daemon did this run, for the status line and metrics."""

    rfqs_seen: int = 0
    rfqs_quoted: int = 0
    rfqs_skipped: int = 0
    quotes_created: int = 0
    quotes_replaced: int = 0
    quotes_deleted: int = 0
    quote_errors: int = 0
    accepts: int = 0
    confirms: int = 0
    declines: int = 0
    confirm_failures: int = 0
    executions: int = 0
    contracts_traded: Decimal = _ZERO
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    declined_by_reason: dict[str, int] = field(default_factory=dict)


class LatencyObserver(Protocol):
    """Told how long the daemon took to answer, for the latency histograms."""

    def rfq_to_quote(self, seconds: float) -> None:
        """An RFQ's frame was received ``seconds`` before its quote was acknowledged."""

    def accept_to_confirm(self, seconds: float) -> None:
        """An acceptance's frame was received ``seconds`` before its confirm was acknowledged."""


@dataclass(eq=False)
class LiveQuote:
    """One quote of ours and where it is in its lifecycle."""

    rfq: Rfq
    strategy: Strategy[Any]
    yes_bid: Decimal
    no_bid: Decimal
    reference: Decimal | None
    hvm: bool
    # The strategy's own time to live for this quote; None means quotes.ttl_seconds.
    ttl: float | None = None
    quote_id: str | None = None
    state: State = "creating"
    sent_at: float = 0.0
    expiry: asyncio.TimerHandle | None = None
    fill: MakerFill | None = None
    # time.monotonic() when the RFQ's frame was received; None when it came over REST.
    received_at: float | None = None
    # REST looks taken at this quote's late execution so far.
    execution_checks: int = 0


class QuoteManager:
    """Owns every quote of the daemon on the exchange."""

    def __init__(
        self,
        rest: KalshiRestClient,
        market_data: MarketData,
        router: StrategyRouter,
        risk: RiskBook,
        journal: Journal,
        settings: QuotesSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        latency: LatencyObserver | None = None,
    ) -> None:
        self._rest = rest
        self._market_data = market_data
        self._router = router
        self._risk = risk
        self._journal = journal
        self._settings = settings
        self._clock = clock
        self._latency = latency
        self.counters = Counters()
        self.quoting = True
        self._by_rfq: dict[str, LiveQuote] = {}
        # The same quotes by market: a market-data refresh looks at its market's quotes
        # only, instead of scanning every live quote for each market refreshed.
        self._by_market: dict[str, dict[str, LiveQuote]] = {}
        # How many quotes in _by_rfq are creating or open; changed only by _track_rfq,
        # _set_state and _forget.
        self._open_count = 0
        self._by_quote: dict[str, LiveQuote] = {}
        # RFQs that went away while their quote was being created, and RFQs already handled.
        self._deleted_rfqs: dict[str, None] = {}
        # RFQs whose rfq_seen row is not written yet (see on_rfq).
        self._unjournaled: dict[str, Rfq] = {}
        self._seen_rfqs: dict[str, None] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ bookkeeping

    @property
    def open_quotes(self) -> int:
        """Quotes live on the exchange (sent and not yet accepted, deleted or expired)."""
        # Kept as a count: every RFQ's risk check reads it, and counting the tracked
        # quotes each time was a visible share of the time before each quote went out.
        return self._open_count

    def live(self) -> list[LiveQuote]:
        """Every tracked quote."""
        # Not only _by_rfq: an adopted quote whose RFQ already has a quote of ours is tracked
        # by id alone, and left out of this list it escaped the reconciliation that settles
        # confirmed quotes before positions are reloaded, so its fill was counted twice.
        tracked = {id(q): q for q in self._by_rfq.values()}
        for q in self._by_quote.values():
            tracked.setdefault(id(q), q)
        return list(tracked.values())

    def tracked_quote_ids(self) -> set[str]:
        """Ids of every quote the manager tracks."""
        return set(self._by_quote)

    @property
    def tasks_in_flight(self) -> int:
        """Handlers running now (each RFQ, acceptance and withdrawal runs as one)."""
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a supervised background task: errors are logged, never lost."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task_failed", task=task.get_name(), exc_info=task.exception())

    async def wait_idle(self) -> None:
        """Wait for every background task started so far."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _remember(self, seen: dict[str, None], rfq_id: str) -> None:
        seen[rfq_id] = None
        if len(seen) > _RECENT_RFQS:
            seen.pop(next(iter(seen)))

    def _skip(self, rfq: Rfq, reason: str, detail: str = "") -> None:
        self._journal_seen(rfq.id)
        self.counters.rfqs_skipped += 1
        by_reason = self.counters.skipped_by_reason
        by_reason[reason] = by_reason.get(reason, 0) + 1
        self._journal.record_rfq_skipped(
            rfq_id=rfq.id, market=rfq.market_ticker, reason=reason, detail=detail
        )
        log.debug("rfq_skipped", reason=reason, detail=detail)

    def _track_rfq(self, live: LiveQuote) -> bool:
        """Track ``live`` as its RFQ's quote unless another is; True if it now is."""
        if self._by_rfq.setdefault(live.rfq.id, live) is not live:
            return False
        self._by_market.setdefault(live.rfq.market_ticker, {})[live.rfq.id] = live
        self._open_count += live.state in _LIVE_STATES
        return True

    def _set_state(self, live: LiveQuote, state: State) -> None:
        """Move ``live`` to ``state``, keeping the open-quote count in step."""
        if self._by_rfq.get(live.rfq.id) is live:
            self._open_count += (state in _LIVE_STATES) - (live.state in _LIVE_STATES)
        live.state = state

    def _forget(self, live: LiveQuote) -> None:
        self._set_state(live, "done")
        if live.expiry is not None:
            live.expiry.cancel()
            live.expiry = None
        if self._by_rfq.get(live.rfq.id) is live:
            del self._by_rfq[live.rfq.id]
            same_market = self._by_market.get(live.rfq.market_ticker)
            if same_market is not None:
                same_market.pop(live.rfq.id, None)
                if not same_market:
                    del self._by_market[live.rfq.market_ticker]
            self._market_data.unwatch(live.rfq.market_ticker)
        if live.quote_id is not None and self._by_quote.get(live.quote_id) is live:
            del self._by_quote[live.quote_id]

    # ------------------------------------------------------------------ RFQ -> quote

    async def on_rfq(self, rfq: Rfq, received_at: float | None = None) -> None:
        """Quote an RFQ if a strategy wants it and risk allows it.

        ``received_at`` is when its frame arrived (``time.monotonic()``), for the latency
        histogram; None for an RFQ found over REST.
        """
        if rfq.id in self._seen_rfqs:
            return  # a duplicate event, or an RFQ reconciliation already handled
        self._remember(self._seen_rfqs, rfq.id)
        self.counters.rfqs_seen += 1
        # The rfq_seen row is written once the quote request is on its way (or as soon as
        # anything else about this RFQ is journaled, whichever comes first): building it
        # cost a seventh of the time from frame to request. Row order is unchanged.
        self._unjournaled[rfq.id] = rfq
        try:
            with log_context(rfq_id=rfq.id, market=rfq.market_ticker):
                await self._quote_rfq(rfq, received_at)
        finally:
            self._journal_seen(rfq.id)

    def _journal_seen(self, rfq_id: str) -> None:
        """Write the rfq_seen row of ``rfq_id`` if it is still owed."""
        rfq = self._unjournaled.pop(rfq_id, None)
        if rfq is not None:
            self._journal.record_rfq_seen(
                rfq_id=rfq.id,
                market=rfq.market_ticker,
                contracts=rfq.contracts_fp,
                target_cost=rfq.target_cost_dollars,
            )

    async def _quote_rfq(self, rfq: Rfq, received_at: float | None) -> None:
        if not self.quoting:
            return self._skip(rfq, "stopping")
        if self._risk.kill_switch:
            return self._skip(rfq, "kill_switch")
        if not _sized(rfq):
            return self._skip(rfq, "invalid_size")
        strategy = self._router.route(rfq.market_ticker, rfq.event_ticker or "")
        if strategy is None:
            return self._skip(rfq, "unrouted_market")
        market = await self._market_data.ensure_fresh(rfq.market_ticker)
        if market is None:
            return self._skip(rfq, "unknown_market")
        priced = self._price(rfq, strategy)
        if isinstance(priced, str):
            return self._skip(rfq, priced)
        yes, no, view, ttl = priced
        if rfq.id in self._deleted_rfqs or rfq.id in self._by_rfq:
            return None
        live = LiveQuote(
            rfq=rfq,
            strategy=strategy,
            yes_bid=yes,
            no_bid=no,
            reference=view.mid,
            hvm=view.hvm or rfq.is_combo,
            ttl=ttl,
            received_at=received_at,
        )
        self._track_rfq(live)
        self._market_data.watch(rfq.market_ticker)
        if not await self._send(live):
            self._forget(live)
            return None
        self.counters.rfqs_quoted += 1
        if rfq.id in self._deleted_rfqs:
            # The RFQ went away while the quote was in flight.
            await self._delete(live, "rfq_deleted")

    def _price(
        self, rfq: Rfq, strategy: Strategy[Any], *, replacing: bool = False
    ) -> tuple[Decimal, Decimal, MarketView, float | None] | str:
        """Ask the strategy and apply grid, edge and pre-trade risk; a str is a skip reason."""
        # RiskBook counts open quotes "not counting the one being checked (nor one it
        # replaces)": a replacement's own quote is already in self.open_quotes, and counting
        # it made every requote at max_open_quotes delete the quote instead of replacing it.
        open_quotes = self.open_quotes - 1 if replacing else self.open_quotes
        view = self._market_data.view(rfq.market_ticker, self._risk.position(rfq.market_ticker))
        if view is None:
            return "unknown_market"
        if view.stale:
            return "stale_market_data"
        intent, error = safe_quote(strategy, rfq, view)
        if error is not None:
            log.warning("strategy_error", strategy=strategy.name, error=error)
            return "strategy_error"
        if intent is None:
            return "strategy_declined"
        yes, no = shape_prices(intent.yes_bid, intent.no_bid, view, self._settings.min_edge)
        refused: list[str] = []
        for side in ("yes", "no"):
            price = yes if side == "yes" else no
            if price <= 0:
                continue
            check = self._risk.check_quote(
                rfq.market_ticker,
                side,
                price,
                _contracts_for(rfq, price),
                open_quotes=open_quotes,
            )
            if not check.ok:
                refused.append(check.reason or "risk")
                if side == "yes":
                    yes = _ZERO
                else:
                    no = _ZERO
        if yes == 0 and no == 0:
            return refused[0] if refused else "nothing_to_quote"
        return yes, no, view, intent.ttl_seconds

    async def _send(self, live: LiveQuote) -> bool:
        """Send (or re-send, replacing) the quote; False if it is not live and ours."""
        replacing = live.state == "open"
        value: Decimal | None = None
        shed_at: float | None = None
        if not replacing:
            # A new quote may give way to more valuable ones when the write budget runs
            # short. A replacement may not: the quote it replaces stands at stale prices.
            value = expected_value(live)
            arrived = live.received_at if live.received_at is not None else time.monotonic()
            shed_at = arrived + self._settings.max_queue_seconds
            # Runs once this task waits for the answer, so after the request is written.
            asyncio.get_running_loop().call_soon(self._journal_seen, live.rfq.id)
        try:
            quote_id = await self._rest.create_quote(
                live.rfq.id,
                live.yes_bid,
                live.no_bid,
                rest_remainder=self._settings.rest_remainder,
                post_only=True,
                deadline_seconds=_CREATE_DEADLINE_SECONDS,
                value=value,
                shed_at=shed_at,
            )
        except Shed as shed:
            self._skip(live.rfq, f"shed_{shed.reason}")
            return False
        except (KalshiError, InvalidQuoteError) as exc:
            self._journal_seen(live.rfq.id)  # refused before the request went out, maybe
            self.counters.quote_errors += 1
            code = exc.code if isinstance(exc, KalshiError) else "invalid_quote"
            log.warning(
                "quote_rejected",
                rfq_id=live.rfq.id,
                status=getattr(exc, "status", None),
                code=code,
                reason=getattr(exc, "message", str(exc)),
            )
            self._journal.record_quote_failed(
                rfq_id=live.rfq.id,
                market=live.rfq.market_ticker,
                code=code or "",
                message=getattr(exc, "message", str(exc)),
            )
            return False
        self._journal_seen(live.rfq.id)
        if replacing and live.state != "open":
            # The quote this one replaces was accepted, expired or withdrawn while the
            # replacement was in flight. `live` must keep following that quote (an accepted
            # one is confirmed, executed and settled under its own id; re-pointing `live`
            # stranded its reservation and resurrected expired quotes), so the replacement
            # is nobody's: withdraw it.
            await self._withdraw(live, quote_id, "requote_orphaned")
            return False
        previous = live.quote_id
        if previous is not None:
            self._by_quote.pop(previous, None)
        live.quote_id = quote_id
        self._set_state(live, "open")
        live.sent_at = self._clock()
        self._by_quote[quote_id] = live
        self._arm_expiry(live)
        contracts = live.rfq.contracts_fp
        if previous is None:
            if live.received_at is not None and self._latency is not None:
                # Wall time, not self._clock: this is a measurement, not a schedule.
                self._latency.rfq_to_quote(time.monotonic() - live.received_at)
            self.counters.quotes_created += 1
            self._journal.record_quote_created(
                rfq_id=live.rfq.id,
                quote_id=quote_id,
                market=live.rfq.market_ticker,
                yes_bid=live.yes_bid,
                no_bid=live.no_bid,
                contracts=contracts,
                strategy=live.strategy.name,
            )
        else:
            self.counters.quotes_replaced += 1
            self._journal.record_quote_replaced(
                rfq_id=live.rfq.id,
                old_quote_id=previous,
                quote_id=quote_id,
                market=live.rfq.market_ticker,
                yes_bid=live.yes_bid,
                no_bid=live.no_bid,
            )
        log.info(
            "quote_sent",
            rfq_id=live.rfq.id,
            quote_id=quote_id,
            market=live.rfq.market_ticker,
            yes_bid=str(live.yes_bid),
            no_bid=str(live.no_bid),
            replaced=previous,
        )
        return True

    def _arm_expiry(self, live: LiveQuote) -> None:
        if live.expiry is not None:
            live.expiry.cancel()
        ttl = live.ttl if live.ttl is not None else self._settings.ttl_seconds
        live.expiry = asyncio.get_running_loop().call_later(
            ttl, lambda: self.spawn(self._expire(live), "quote-expiry")
        )

    async def _expire(self, live: LiveQuote) -> None:
        live.expiry = None
        if live.state == "open":
            await self._delete(live, "ttl")

    async def _delete(self, live: LiveQuote, reason: str) -> None:
        """Withdraw an open quote and stop tracking it."""
        if live.state not in ("open", "creating") or live.quote_id is None:
            return
        quote_id = live.quote_id
        self._forget(live)
        await self._withdraw(live, quote_id, reason)

    async def _withdraw(self, live: LiveQuote, quote_id: str, reason: str) -> None:
        """Delete ``quote_id`` on the exchange; count and journal it unless that failed."""
        try:
            await self._rest.delete_quote(
                quote_id, rfq_id=live.rfq.id, deadline_seconds=_DELETE_DEADLINE_SECONDS
            )
        except NotFoundError:
            pass  # already gone: accepted meanwhile is handled by its own event
        except KalshiError as exc:
            log.warning("quote_delete_failed", quote_id=quote_id, reason=reason, error=str(exc))
            return
        self.counters.quotes_deleted += 1
        self._journal.record_quote_deleted(
            rfq_id=live.rfq.id, quote_id=quote_id, market=live.rfq.market_ticker, reason=reason
        )

    async def on_rfq_deleted(self, rfq_id: str) -> None:
        """The RFQ was withdrawn, expired or filled: our quote on it goes with it."""
        self._remember(self._deleted_rfqs, rfq_id)
        live = self._by_rfq.get(rfq_id)
        if live is None or live.state != "open" or live.quote_id is None:
            return
        # No DELETE: nobody can accept a quote on an RFQ that is gone, and the exchange
        # closes the RFQ's quotes with it. Sending one anyway cost a write per RFQ, which
        # under load halved the quotes the budget could carry. (A quote still in flight
        # when the RFQ goes is deleted when its answer comes, in _quote_rfq.)
        quote_id = live.quote_id
        self._forget(live)
        self.counters.quotes_deleted += 1
        self._journal.record_quote_deleted(
            rfq_id=rfq_id, quote_id=quote_id, market=live.rfq.market_ticker, reason="rfq_deleted"
        )

    def on_market(self, market: Market) -> None:
        """A refreshed market: replace quotes whose reference moved past the threshold."""
        mid = reference_mid(market)
        for live in list(self._by_market.get(market.ticker, {}).values()):
            if live.state != "open":
                continue
            moved = (
                mid is None
                or live.reference is None
                or (abs(mid - live.reference) > self._settings.requote_threshold)
            )
            if moved:
                self.spawn(self._requote(live), "requote")

    async def _requote(self, live: LiveQuote) -> None:
        if live.state != "open" or not self.quoting:
            return
        priced = self._price(live.rfq, live.strategy, replacing=True)
        if isinstance(priced, str):
            await self._delete(live, f"requote_{priced}")
            return
        live.yes_bid, live.no_bid, view, live.ttl = priced
        live.reference = view.mid
        # A new quote on the same RFQ replaces the previous one on the exchange.
        if not await self._send(live):
            await self._delete(live, "requote_failed")

    # ------------------------------------------------------------------ accept -> confirm

    async def on_quote_accepted(
        self, msg: QuoteAcceptedMsg, received_at: float | None = None
    ) -> None:
        """A requester accepted our quote: reserve and confirm, or decline and delete."""
        with log_context(rfq_id=msg.rfq_id, quote_id=msg.quote_id, market=msg.market_ticker):
            await self._accepted(msg, received_at)

    async def _accepted(self, msg: QuoteAcceptedMsg, received_at: float | None) -> None:
        live = self._by_quote.get(msg.quote_id)
        if live is None:
            log.warning("accept_for_untracked_quote")
            await self._decline_untracked(msg)
            return
        if live.state != "open":
            return  # a duplicate event
        if live.expiry is not None:
            live.expiry.cancel()
            live.expiry = None
        self.counters.accepts += 1
        try:
            fill = maker_fill_for_accept(msg)
        except ValueError as exc:
            await self._decline(live, msg, "malformed_accept", str(exc))
            return
        live.fill = fill
        self._journal.record_accept_received(
            rfq_id=msg.rfq_id,
            quote_id=msg.quote_id,
            market=msg.market_ticker,
            side=fill.side,
            price=fill.price,
            contracts=fill.contracts,
        )
        if not self.quoting:
            await self._decline(live, msg, "stopping", "the daemon is shutting down")
            return
        decision = self._risk.reserve(msg.quote_id, msg.market_ticker, fill)
        if not decision.ok:
            await self._decline(live, msg, decision.reason or "risk", decision.detail)
            return
        await self._confirm(live, msg, fill, received_at)

    async def _confirm(
        self,
        live: LiveQuote,
        msg: QuoteAcceptedMsg,
        fill: MakerFill,
        received_at: float | None = None,
    ) -> None:
        # Confirmed from the moment the confirm leaves, not when its answer is back: the
        # exchange may execute (or void) the quote first, and a reconciliation meanwhile
        # must settle it from REST before reloading positions, like any confirmed quote.
        # (A separate "confirming" state was skipped there, so its execution event was
        # later committed on top of a reloaded position that already held the fill.)
        self._set_state(live, "confirmed")
        deadline = confirm_window_seconds(live.hvm) * _CONFIRM_SHARE
        try:
            await self._rest.confirm_quote(
                msg.quote_id, rfq_id=msg.rfq_id, deadline_seconds=deadline
            )
        except KalshiError as exc:
            self.counters.confirm_failures += 1
            log.warning("confirm_failed", status=exc.status, code=exc.code, reason=exc.message)
            self._journal.record_confirm_failed(
                rfq_id=msg.rfq_id,
                quote_id=msg.quote_id,
                market=msg.market_ticker,
                code=exc.code or "",
                message=exc.message,
            )
            if live.state != "confirmed":
                return  # settled while the confirm was out: nothing left to undo
            if not _may_have_landed(exc):
                self._risk.release(msg.quote_id)
                self._forget(live)
                return
            # A 5xx or a timeout after sending may hide a confirm that went through. Releasing
            # the reservation then would hide a real fill from every limit until the next
            # reconciliation, so keep it and treat the quote as confirmed: quote_executed, or
            # the execution check over REST (executed / cancelled), settles it either way.
        else:
            if received_at is not None and self._latency is not None:
                self._latency.accept_to_confirm(time.monotonic() - received_at)
            self.counters.confirms += 1
            self._journal.record_confirm_sent(
                rfq_id=msg.rfq_id,
                quote_id=msg.quote_id,
                market=msg.market_ticker,
                side=fill.side,
                price=fill.price,
                contracts=fill.contracts,
            )
            log.info(
                "quote_confirmed",
                side=fill.side,
                price=str(fill.price),
                contracts=str(fill.contracts),
            )
            if live.state != "confirmed":
                # Settled while the answer was on its way (a retried confirm on a High
                # Volatility Market can outlast its 1 s execution timer): the fill is already
                # committed and forgotten, and an execution check now would settle, count
                # and journal it a second time.
                return
        timer = _EXECUTION_TIMER[1] if live.hvm else _EXECUTION_TIMER[0]
        self._schedule_execution_check(live, timer + _EXECUTION_GRACE_SECONDS)

    def _schedule_execution_check(self, live: LiveQuote, delay: float) -> None:
        asyncio.get_running_loop().call_later(
            delay, lambda: self.spawn(self._check_execution(live), "execution-check")
        )

    async def _decline(
        self, live: LiveQuote, msg: QuoteAcceptedMsg, reason: str, detail: str
    ) -> None:
        self.counters.declines += 1
        by_reason = self.counters.declined_by_reason
        by_reason[reason] = by_reason.get(reason, 0) + 1
        log.warning("accept_declined", reason=reason, detail=detail)
        fill = live.fill
        self._journal.record_confirm_declined(
            rfq_id=msg.rfq_id,
            quote_id=msg.quote_id,
            market=msg.market_ticker,
            side=fill.side if fill else None,
            price=fill.price if fill else None,
            contracts=fill.contracts if fill else None,
            reason=reason,
            detail=detail,
        )
        # Not confirming lets the acceptance lapse; deleting the quote ends it at once.
        self._set_state(live, "open")
        await self._delete(live, "declined_accept")

    async def _decline_untracked(self, msg: QuoteAcceptedMsg) -> None:
        self.counters.declines += 1
        by_reason = self.counters.declined_by_reason
        by_reason["untracked_quote"] = by_reason.get("untracked_quote", 0) + 1
        self._journal.record_confirm_declined(
            rfq_id=msg.rfq_id,
            quote_id=msg.quote_id,
            market=msg.market_ticker,
            side=None,
            price=None,
            contracts=None,
            reason="untracked_quote",
            detail="accepted quote is not one this daemon is tracking",
        )
        with contextlib.suppress(KalshiError):
            await self._rest.delete_quote(msg.quote_id, rfq_id=msg.rfq_id)

    # ------------------------------------------------------------------ execution

    def on_quote_executed(self, msg: QuoteExecutedMsg) -> None:
        """A confirmed quote executed: its reservation becomes a position."""
        live = self._by_quote.get(msg.quote_id)
        if live is None or live.fill is None or live.state == "done":
            # Unknown here (e.g. confirmed by an earlier run): positions are reconciled
            # from the exchange instead.
            log.info("execution_of_untracked_quote", quote_id=msg.quote_id)
            return
        self._executed(live, order_id=msg.order_id)

    def _executed(self, live: LiveQuote, *, order_id: str | None) -> None:
        fill = live.fill
        assert fill is not None
        assert live.quote_id is not None
        market = live.rfq.market_ticker
        before = self._risk.positions().get(market)
        realized_before = before.realized_pnl if before else _ZERO
        self._risk.commit(live.quote_id)
        after = self._risk.positions().get(market)
        self.counters.executions += 1
        self.counters.contracts_traded += fill.contracts
        self._journal.record_execution(
            rfq_id=live.rfq.id,
            quote_id=live.quote_id,
            market=market,
            side=fill.side,
            price=fill.price,
            contracts=fill.contracts,
            order_id=order_id or "",
        )
        self._journal.record_position_changed(
            market=market,
            contracts=after.contracts if after else _ZERO,
            realized_pnl_change=(after.realized_pnl if after else _ZERO) - realized_before,
        )
        log.info(
            "quote_executed",
            quote_id=live.quote_id,
            market=market,
            side=fill.side,
            contracts=str(fill.contracts),
        )
        try:
            live.strategy.on_fill(
                FillInfo(
                    quote_id=live.quote_id,
                    rfq_id=live.rfq.id,
                    market_ticker=market,
                    side=fill.side,
                    price=fill.price,
                    contracts=fill.contracts,
                )
            )
        except Exception:
            log.exception("strategy_on_fill_failed", strategy=live.strategy.name)
        self._forget(live)

    async def _check_execution(self, live: LiveQuote) -> None:
        """The execution event is late: ask the exchange what became of the quote."""
        if live.state != "confirmed" or live.quote_id is None:
            return
        try:
            quote = await self._rest.get_quote(live.quote_id, rfq_id=live.rfq.id)
        except KalshiError as exc:
            log.warning("execution_check_failed", quote_id=live.quote_id, error=str(exc))
        else:
            self.settle_from_rest(live, quote)
        if live.state == "confirmed":
            # Not settled yet (still confirmed or accepted, or the look-up failed). Checking
            # only once left its reservation held until the next reconciliation, which may
            # never come while the stream stays up: look again, less often each time.
            live.execution_checks += 1
            delay = _EXECUTION_GRACE_SECONDS * 2 ** min(live.execution_checks - 1, 8)
            self._schedule_execution_check(live, min(delay, _EXECUTION_CHECK_MAX_SECONDS))

    def settle_from_rest(self, live: LiveQuote, quote: Quote) -> None:
        """Apply a quote's REST state to a confirmed quote whose execution event was missed."""
        if live.state != "confirmed":
            return
        if quote.status == Quote.EXECUTED:
            self._executed(live, order_id=quote.creator_order_id)
        elif quote.status == Quote.CANCELLED:
            assert live.quote_id is not None
            self._risk.release(live.quote_id)
            self._forget(live)

    # ------------------------------------------------------------------ adoption and shutdown

    def adopt(self, quote: Quote, strategy: Strategy[Any]) -> None:
        """Track an open or accepted quote found on the exchange, so its acceptance is judged.

        After a restart the exchange may hold an acceptance of a quote an earlier run sent;
        it gets the same risk check and confirmation as any other.
        """
        if quote.id in self._by_quote:
            return
        rfq = Rfq(
            id=quote.rfq_id, market_ticker=quote.market_ticker, contracts_fp=quote.contracts_fp
        )
        # The confirm deadline must fit the market's window: hvm=False gave an adopted quote
        # on a High Volatility Market a 24 s deadline for a 3 s window. Without market data,
        # assume the short window.
        view = self._market_data.view(rfq.market_ticker, self._risk.position(rfq.market_ticker))
        live = LiveQuote(
            rfq=rfq,
            strategy=strategy,
            yes_bid=quote.yes_bid_dollars,
            no_bid=quote.no_bid_dollars,
            reference=None,
            hvm=view.hvm if view is not None else True,
            quote_id=quote.id,
            state="open",
        )
        self._by_quote[quote.id] = live
        # _forget unwatches only what _by_rfq holds: watching a quote tracked by id alone
        # kept its market refreshed forever.
        if self._track_rfq(live):
            self._market_data.watch(rfq.market_ticker)

    def adopt_confirmed(self, quote: Quote, strategy: Strategy[Any] | None) -> bool:
        """Track a confirmed quote found on the exchange (an earlier run confirmed it)."""
        if quote.id in self._by_quote or quote.accepted_side is None or strategy is None:
            return False
        side = quote.accepted_side
        price = quote.yes_bid_dollars if side == "yes" else quote.no_bid_dollars
        contracts = quote.contracts_fp or _ZERO
        rfq = Rfq(id=quote.rfq_id, market_ticker=quote.market_ticker, contracts_fp=contracts)
        fill = MakerFill(side=side, price=price, contracts=contracts)
        live = LiveQuote(
            rfq=rfq,
            strategy=strategy,
            yes_bid=quote.yes_bid_dollars,
            no_bid=quote.no_bid_dollars,
            reference=None,
            hvm=False,
            quote_id=quote.id,
            state="confirmed",
            fill=fill,
        )
        decision = self._risk.reserve(quote.id, quote.market_ticker, fill)
        if not decision.ok:
            # Confirmed is final: the exposure exists whatever the limit says, so it is held
            # anyway and nothing new may be added on top of it until it clears.
            self._risk.hold(quote.id, quote.market_ticker, fill)
            log.warning("confirmed_quote_over_limit", quote_id=quote.id, reason=decision.reason)
        self._by_quote[quote.id] = live
        self._track_rfq(live)
        return True

    async def cancel_all(self, reason: str) -> int:
        """Delete every open quote we track; return how many were deleted."""
        targets = [q for q in self._by_rfq.values() if q.state == "open"]
        before = self.counters.quotes_deleted
        await asyncio.gather(*(self._delete(q, reason) for q in targets))
        return self.counters.quotes_deleted - before
