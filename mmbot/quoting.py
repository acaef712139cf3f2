"""The quote lifecycle: create, replace, expire, confirm, delete.

One :class:`QuoteManager` owns every quote the daemon has on the exchange. For
each RFQ it asks the routed strategy for prices, rounds them down to the
market's grid, keeps ``yes_bid + no_bid <= 1 - quotes.min_edge``, declines any
side the risk book could not confirm, and sends one post-only quote. A quote is
deleted after its TTL and when its RFQ goes away, and replaced when the
reference mid moves more than ``quotes.requote_threshold``.

A quote is ours until the exchange says it is gone. Withdrawing one (TTL, a
failed requote, a declined acceptance, the kill switch, shutdown) keeps it
tracked, counted as open and in every sweep, and retries the DELETE with backoff
until the exchange answers 204 or 404 (or closes its RFQ); an acceptance that
arrives meanwhile is declined.

When a requester accepts, the fill is built from our own record of the quote
(our price, our market, at most our offered size for that side); a frame that
disagrees is declined with its own reason. The risk book reserves the fill
atomically (the event loop is single-threaded and :meth:`RiskBook.reserve` is
synchronous) and the confirm goes out on the write lane's highest priority, with
a deadline inside the confirmation window (30 s, 3 s on High Volatility
Markets). An accept that risk declines is withdrawn and journaled with its
reason. ``quote_executed`` is booked from the fills the exchange lists under the
execution's ``order_id``: a partial fill books what filled and releases the
rest; fills that never show up are left to the next reconciliation, which holds
the reservation until the exchange's positions include them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Literal, Protocol

import structlog

from mmbot.config import QuotesSettings
from mmbot.journal import CreatedQuote, Journal
from mmbot.kalshi.backoff import Backoff
from mmbot.kalshi.errors import (
    BadRequestError,
    ConflictError,
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
    Side,
    accepted_bid,
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
    "rfq_contracts",
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
# A withdrawal whose DELETE failed tries again after a full-jitter backoff up to this cap:
# short enough that a quote outlives an exchange blip by seconds, not minutes.
_WITHDRAW_RETRY_BASE_SECONDS = 0.25
_WITHDRAW_RETRY_CAP_SECONDS = 2.0
# Delays before each look at the fills of an execution: the fills listing may trail the
# quote_executed event by a moment.
_FILL_LOOKUP_DELAYS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
_RECENT_RFQS = 10_000
_GONE = "gone"

# creating: the create request is out; open: live on the exchange; withdrawing: its DELETE
# is out or being retried (still live until the exchange says otherwise); confirmed: our
# confirm is out or done; executing: executed, its fills being looked up; done: forgotten.
State = Literal["creating", "open", "withdrawing", "confirmed", "executing", "done"]


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


def rfq_contracts(rfq: Rfq) -> Decimal | None:
    """The RFQ's size in contracts, or None when a dollar budget sizes it.

    Kalshi's RFQ schema requires ``contracts_fp``: an RFQ sized by ``target_cost_dollars``
    reports it as ``"0.00"``, so zero means "sized by its budget", not "zero contracts".
    """
    contracts = rfq.contracts_fp
    return contracts if contracts is not None and contracts > 0 else None


def _sized(rfq: Rfq) -> bool:
    """Whether the RFQ asks for a positive size, in contracts or as a dollar budget."""
    if rfq.contracts_fp is not None and rfq.contracts_fp < 0:
        return False
    if rfq_contracts(rfq) is not None:
        return True
    return rfq.target_cost_dollars is not None and rfq.target_cost_dollars > 0


def _contracts_for(rfq: Rfq, price: Decimal) -> Decimal:
    """Contracts a full fill of one side would be: the RFQ size, or what its budget buys."""
    contracts = rfq_contracts(rfq)
    if contracts is not None:
        return contracts
    if rfq.target_cost_dollars is None or price <= 0:
        return _ZERO
    # Whole contracts, as the exchange derives the size it offers per side.
    return (rfq.target_cost_dollars / price).to_integral_value(rounding=ROUND_FLOOR)


def _fill_from_record(live: LiveQuote, msg: QuoteAcceptedMsg) -> tuple[MakerFill | None, str, str]:
    """The fill an acceptance commits us to, from our own record of the quote.

    Returns the fill, or None with the reason and detail to decline with. Our price and
    market decide; the frame may only name the side and a size up to what we offered.
    """
    side = msg.accepted_side
    if side is None:
        return None, "malformed_accept", f"quote {msg.quote_id}: acceptance without accepted_side"
    ours = live.rfq.market_ticker
    if msg.market_ticker != ours:
        detail = f"the acceptance names market {msg.market_ticker}; we quoted {ours}"
        return None, "accept_market_mismatch", detail
    if msg.rfq_id != live.rfq.id:
        detail = f"the acceptance names RFQ {msg.rfq_id}; we quoted RFQ {live.rfq.id}"
        return None, "accept_rfq_mismatch", detail
    price = accepted_bid(side, live.yes_bid, live.no_bid)
    if price <= 0:
        return None, "accept_of_declined_side", f"we bid nothing on {side}"
    claimed = accepted_bid(side, msg.yes_bid_dollars, msg.no_bid_dollars)
    if claimed != price:
        detail = f"the acceptance says {side} at {claimed}; we quoted {price}"
        return None, "accept_price_mismatch", detail
    offered = _contracts_for(live.rfq, price)
    # Field reports: acceptances of budget-sized RFQs may omit the size; it is our offer.
    contracts = msg.contracts_accepted_fp if msg.contracts_accepted_fp is not None else offered
    if contracts <= 0:
        return None, "malformed_accept", f"accepted size {contracts} is not positive"
    if contracts > offered:
        detail = f"{contracts} contracts accepted; we offered {offered} on {side}"
        return None, "accept_size_mismatch", detail
    return MakerFill(side=side, price=price, contracts=contracts), "", ""


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
    # Found on the exchange by a reconciliation rather than sent by this run: its
    # acceptance gets a look at the market before it is confirmed.
    adopted: bool = False
    # The order the execution placed for us, which its fills are listed under.
    order_id: str | None = None


@dataclass(eq=False)
class _Withdrawal:
    """A quote of ours being withdrawn: live on the exchange until it says otherwise."""

    quote_id: str
    rfq_id: str
    market: str
    reason: str
    live: LiveQuote | None
    task: asyncio.Task[None] | None = None
    attempts: int = 0
    # An acceptance of it was declined already (a duplicate event must not decline twice).
    declined: bool = False


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
        sleep: Callable[[float], Coroutine[Any, Any, None]] = asyncio.sleep,
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
        # Quotes whose withdrawal the exchange has not confirmed yet, by quote id.
        self._withdrawals: dict[str, _Withdrawal] = {}
        self._sleep = sleep
        #: Our communications id: acceptances and executions naming another maker as the
        #: quote's creator are not ours to decline or book. None until the engine knows it.
        self.me: str | None = None
        #: Asked for a reconciliation with the exchange when only its positions can settle
        #: something (an execution whose fills never showed); set by the engine.
        self.on_reconcile_needed: Callable[[str], None] | None = None

    # ------------------------------------------------------------------ bookkeeping

    @property
    def open_quotes(self) -> int:
        """Quotes live on the exchange: sent, or being withdrawn and not yet gone."""
        # Kept as a count: every RFQ's risk check reads it, and counting the tracked
        # quotes each time was a visible share of the time before each quote went out.
        return self._open_count + len(self._withdrawals)

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
        """Ids of every quote the manager tracks, those being withdrawn included."""
        return set(self._by_quote) | set(self._withdrawals)

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
        self._untrack_rfq(live)
        if live.quote_id is not None and self._by_quote.get(live.quote_id) is live:
            del self._by_quote[live.quote_id]

    def _untrack_rfq(self, live: LiveQuote) -> None:
        """Stop indexing ``live`` by its RFQ and market (and refreshing the market for it)."""
        if self._by_rfq.get(live.rfq.id) is not live:
            return
        del self._by_rfq[live.rfq.id]
        same_market = self._by_market.get(live.rfq.market_ticker)
        if same_market is not None:
            same_market.pop(live.rfq.id, None)
            if not same_market:
                del self._by_market[live.rfq.market_ticker]
        self._market_data.unwatch(live.rfq.market_ticker)

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
        if not self._journal.healthy:
            # No record, no new risk: what we quote and fill must be written down.
            return self._skip(rfq, "journal_unhealthy")
        if not _sized(rfq):
            return self._skip(rfq, "invalid_size")
        # Frames carry the event ticker; only RFQs listed over REST need a look-up.
        event = rfq.event_ticker or await self._event_of(rfq)
        strategy = self._router.route(rfq.market_ticker, event)
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
        if not await self._send(live, yes, no, view.mid, ttl):
            self._forget(live)
            return None
        self.counters.rfqs_quoted += 1
        if rfq.id in self._deleted_rfqs:
            # The RFQ went away while the quote was in flight.
            await self._delete(live, "rfq_deleted")

    async def _event_of(self, rfq: Rfq) -> str:
        """The event ticker of an RFQ listed over REST (which carries none): its market's."""
        # Routed with no event, an RFQ caught up after a reconnect missed every route that
        # matches on its event.
        market = self._market_data.market(rfq.market_ticker)
        if market is None:
            market = await self._market_data.ensure_fresh(rfq.market_ticker)
        return (market.event_ticker or "") if market is not None else ""

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

    async def _send(
        self,
        live: LiveQuote,
        yes: Decimal,
        no: Decimal,
        reference: Decimal | None,
        ttl: float | None,
    ) -> bool:
        """Send (or re-send, replacing) the quote at ``yes``/``no``; False if it is not ours.

        ``live`` keeps the prices of the quote the exchange holds until the new one is
        acknowledged: an acceptance of the old quote meanwhile is judged at its own prices.
        """
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
                yes,
                no,
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
            await self._await_withdrawal(
                self._withdraw(quote_id, live.rfq.id, live.rfq.market_ticker, "requote_orphaned")
            )
            return False
        previous = live.quote_id
        if previous is not None:
            self._by_quote.pop(previous, None)
        live.yes_bid, live.no_bid, live.reference, live.ttl = yes, no, reference, ttl
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
                reference=reference,
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
                contracts=contracts,
                strategy=live.strategy.name,
                reference=reference,
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
        """Withdraw an open quote; return once the exchange says it is gone."""
        withdrawal = self._start_withdrawal(live, reason)
        if withdrawal is not None:
            await self._await_withdrawal(withdrawal)

    def _start_withdrawal(self, live: LiveQuote, reason: str) -> _Withdrawal | None:
        """Begin withdrawing ``live``'s quote; it stays tracked and counted until gone."""
        if live.state not in ("open", "creating") or live.quote_id is None:
            return None
        if live.expiry is not None:
            live.expiry.cancel()
            live.expiry = None
        self._set_state(live, "withdrawing")
        # Out of the RFQ and market indexes (no requote, no refresh for it), but still found
        # by its id: an acceptance that beats the DELETE must be declined, not adopted.
        self._untrack_rfq(live)
        return self._withdraw(live.quote_id, live.rfq.id, live.rfq.market_ticker, reason, live)

    def _withdraw(
        self,
        quote_id: str,
        rfq_id: str,
        market: str,
        reason: str,
        live: LiveQuote | None = None,
    ) -> _Withdrawal:
        """Withdraw ``quote_id`` until the exchange confirms it; one withdrawal per quote."""
        withdrawal = self._withdrawals.get(quote_id)
        if withdrawal is None:
            withdrawal = _Withdrawal(quote_id, rfq_id, market, reason, live)
            self._withdrawals[quote_id] = withdrawal
            withdrawal.task = self.spawn(self._run_withdrawal(withdrawal), "withdraw")
        return withdrawal

    def withdraw_untracked(self, quote: Quote, reason: str) -> None:
        """Withdraw an open quote of ours that nothing tracks (found by a reconciliation)."""
        self._withdraw(quote.id, quote.rfq_id, quote.market_ticker, reason)

    @staticmethod
    async def _await_withdrawal(withdrawal: _Withdrawal) -> None:
        # Shielded: a caller cancelled while waiting must not cancel the withdrawal itself.
        if withdrawal.task is not None:
            await asyncio.shield(withdrawal.task)

    async def _run_withdrawal(self, withdrawal: _Withdrawal) -> None:
        """DELETE until the exchange says the quote is gone (204, or 404, or not open)."""
        backoff = Backoff(base=_WITHDRAW_RETRY_BASE_SECONDS, cap=_WITHDRAW_RETRY_CAP_SECONDS)
        quote_id = withdrawal.quote_id
        while quote_id in self._withdrawals:
            withdrawal.attempts += 1
            try:
                await self._rest.delete_quote(
                    quote_id, rfq_id=withdrawal.rfq_id, deadline_seconds=_DELETE_DEADLINE_SECONDS
                )
            except NotFoundError:
                break  # gone: withdrawn by an earlier attempt, or closed with its RFQ
            except (BadRequestError, ConflictError) as exc:
                # Refused, but not "not found": only the quote's own state says whether it
                # is still live.
                status = await self._status_on_exchange(withdrawal)
                if status in (Quote.CANCELLED, Quote.EXECUTED, _GONE):
                    break
                if status == Quote.CONFIRMED:
                    # Confirmed is a trade, not a quote: nothing to withdraw any more, and
                    # only the exchange's records can say whose it is.
                    log.error("withdrawn_quote_confirmed", quote_id=quote_id)
                    self._withdrawals.pop(quote_id, None)
                    live = withdrawal.live
                    if live is not None and live.state == "withdrawing":
                        # Left behind, it would stay "withdrawing" and tracked for good.
                        self._forget(live)
                    if self.on_reconcile_needed is not None:
                        self.on_reconcile_needed("withdrawn_quote_confirmed")
                    return
                self._delete_failed(withdrawal, exc)
            except KalshiError as exc:
                # 5xx, timeouts, a stale-timestamp 401: the quote may still be live.
                self._delete_failed(withdrawal, exc)
            else:
                break
            await self._sleep(backoff.next_delay())
        self._withdrawn(withdrawal)

    def _delete_failed(self, withdrawal: _Withdrawal, exc: KalshiError) -> None:
        log.warning(
            "quote_delete_failed",
            quote_id=withdrawal.quote_id,
            rfq_id=withdrawal.rfq_id,
            reason=withdrawal.reason,
            attempt=withdrawal.attempts,
            status=exc.status,
            code=exc.code,
            error=exc.message,
        )

    async def _status_on_exchange(self, withdrawal: _Withdrawal) -> str | None:
        """The quote's status on the exchange; _GONE if unknown there, None if unreadable."""
        try:
            quote = await self._rest.get_quote(withdrawal.quote_id, rfq_id=withdrawal.rfq_id)
        except NotFoundError:
            return _GONE
        except KalshiError:
            return None
        return quote.status

    def _withdrawn(self, withdrawal: _Withdrawal, reason: str | None = None) -> None:
        """The exchange says the quote is gone: stop tracking it, count and journal it."""
        if self._withdrawals.pop(withdrawal.quote_id, None) is None:
            return  # settled already (its RFQ went away meanwhile)
        live = withdrawal.live
        if live is not None and live.state == "withdrawing":
            self._forget(live)
        self.counters.quotes_deleted += 1
        self._journal.record_quote_deleted(
            rfq_id=withdrawal.rfq_id,
            quote_id=withdrawal.quote_id,
            market=withdrawal.market,
            reason=reason or withdrawal.reason,
            detail={"attempts": withdrawal.attempts} if withdrawal.attempts > 1 else None,
        )

    async def on_rfq_deleted(self, rfq_id: str) -> None:
        """The RFQ was withdrawn, expired or filled: our quote on it goes with it."""
        self._remember(self._deleted_rfqs, rfq_id)
        # The exchange closes an RFQ's open and accepted quotes with it: a withdrawal still
        # retrying on this RFQ has nothing left to withdraw.
        for withdrawal in [w for w in self._withdrawals.values() if w.rfq_id == rfq_id]:
            self._withdrawn(withdrawal, "rfq_deleted")
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
        yes, no, view, ttl = priced
        # A new quote on the same RFQ replaces the previous one on the exchange.
        if not await self._send(live, yes, no, view.mid, ttl):
            await self._delete(live, "requote_failed")

    # ------------------------------------------------------------------ accept -> confirm

    def _ours(self, creator_id: str | None) -> bool:
        """Whether an event names us as the quote's creator (always, before we know who)."""
        return self.me is None or creator_id == self.me

    async def on_quote_accepted(
        self, msg: QuoteAcceptedMsg, received_at: float | None = None
    ) -> None:
        """A requester accepted our quote: reserve and confirm, or decline and withdraw."""
        with log_context(rfq_id=msg.rfq_id, quote_id=msg.quote_id, market=msg.market_ticker):
            await self._accepted(msg, received_at)

    async def _accepted(self, msg: QuoteAcceptedMsg, received_at: float | None) -> None:
        if not self._ours(msg.quote_creator_id):
            # Another maker's quote: nothing of ours to confirm, decline or delete.
            log.info("accept_of_another_makers_quote", quote_creator_id=msg.quote_creator_id)
            return
        withdrawal = self._withdrawals.get(msg.quote_id)
        if withdrawal is not None:
            await self._decline_withdrawing(withdrawal, msg)
            return
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
        fill, reason, detail = _fill_from_record(live, msg)
        if fill is None:
            await self._decline(live, msg, reason, detail)
            return
        live.fill = fill
        market = live.rfq.market_ticker
        self._journal.record_accept_received(
            rfq_id=live.rfq.id,
            quote_id=msg.quote_id,
            market=market,
            side=fill.side,
            price=fill.price,
            contracts=fill.contracts,
        )
        if not self.quoting:
            await self._decline(live, msg, "stopping", "the daemon is shutting down")
            return
        if not self._journal.healthy:
            await self._decline(live, msg, "journal_unhealthy", "the journal cannot be written")
            return
        if live.adopted:
            moved = await self._moved_against(live, fill)
            if moved is not None:
                await self._decline(live, msg, *moved)
                return
        decision = self._risk.reserve(msg.quote_id, market, fill)
        if not decision.ok:
            await self._decline(live, msg, decision.reason or "risk", decision.detail)
            return
        await self._confirm(live, msg, fill, received_at)

    async def _moved_against(self, live: LiveQuote, fill: MakerFill) -> tuple[str, str] | None:
        """For an adopted quote: the decline reason if the market moved against the fill.

        An acceptance found by a reconciliation may be old: the market can have moved far
        since the quote went out. Until a last look exists for every fill, one that moved
        against us by more than ``quotes.requote_threshold`` is declined; with no fresh
        reference at all it is declined too.
        """
        market = live.rfq.market_ticker
        await self._market_data.ensure_fresh(market)
        view = self._market_data.view(market, self._risk.position(market))
        if view is None or view.stale or view.mid is None:
            return "stale_market_data", f"no fresh reference price for {market}"
        now = view.mid if fill.side == "yes" else _ONE - view.mid
        if live.reference is not None:
            then = live.reference if fill.side == "yes" else _ONE - live.reference
        else:
            # Without the reference it was priced against, our own bid stands for it: a bid
            # sits below the value it was priced from, so this understates the move.
            then = fill.price
        moved = then - now
        if moved > self._settings.requote_threshold:
            return (
                "market_moved",
                f"{fill.side} is worth {now} now against {then} when quoted "
                f"(more than requote_threshold {self._settings.requote_threshold} against us)",
            )
        return None

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
        market = live.rfq.market_ticker
        deadline = confirm_window_seconds(live.hvm) * _CONFIRM_SHARE
        try:
            await self._rest.confirm_quote(
                msg.quote_id, rfq_id=live.rfq.id, deadline_seconds=deadline
            )
        except KalshiError as exc:
            self.counters.confirm_failures += 1
            log.warning("confirm_failed", status=exc.status, code=exc.code, reason=exc.message)
            self._journal.record_confirm_failed(
                rfq_id=live.rfq.id,
                quote_id=msg.quote_id,
                market=market,
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
                rfq_id=live.rfq.id,
                quote_id=msg.quote_id,
                market=market,
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

    def _record_decline(
        self,
        quote_id: str,
        rfq_id: str,
        market: str,
        reason: str,
        detail: str,
        *,
        side: Side | None,
        fill: MakerFill | None = None,
    ) -> None:
        """Count and journal an acceptance we do not confirm."""
        self.counters.declines += 1
        by_reason = self.counters.declined_by_reason
        by_reason[reason] = by_reason.get(reason, 0) + 1
        self._journal.record_confirm_declined(
            rfq_id=rfq_id,
            quote_id=quote_id,
            market=market,
            side=fill.side if fill else side,
            price=fill.price if fill else None,
            contracts=fill.contracts if fill else None,
            reason=reason,
            detail=detail,
        )

    async def _decline(
        self, live: LiveQuote, msg: QuoteAcceptedMsg, reason: str, detail: str
    ) -> None:
        log.warning("accept_declined", reason=reason, detail=detail)
        self._record_decline(
            msg.quote_id,
            live.rfq.id,
            live.rfq.market_ticker,
            reason,
            detail,
            side=msg.accepted_side,
            fill=live.fill,
        )
        # Not confirming lets the acceptance lapse; withdrawing the quote ends it at once.
        await self._delete(live, "declined_accept")

    async def _decline_withdrawing(self, withdrawal: _Withdrawal, msg: QuoteAcceptedMsg) -> None:
        """An acceptance of a quote we are withdrawing: never confirmed, the DELETE goes on."""
        if withdrawal.declined:
            return  # a duplicate event
        withdrawal.declined = True
        reason = "withdrawn"
        detail = f"the quote was being withdrawn ({withdrawal.reason}) when it was accepted"
        log.warning("accept_declined", reason=reason, detail=detail)
        self._record_decline(
            msg.quote_id,
            withdrawal.rfq_id,
            withdrawal.market,
            reason,
            detail,
            side=msg.accepted_side,
        )
        await self._await_withdrawal(withdrawal)

    async def _decline_untracked(self, msg: QuoteAcceptedMsg) -> None:
        self._record_decline(
            msg.quote_id,
            msg.rfq_id,
            msg.market_ticker,
            "untracked_quote",
            "accepted quote is not one this daemon is tracking",
            side=None,
        )
        # Ours (the creator is us) but unknown here: withdraw it like any other, until gone.
        await self._await_withdrawal(
            self._withdraw(msg.quote_id, msg.rfq_id, msg.market_ticker, "declined_accept")
        )

    # ------------------------------------------------------------------ execution

    def on_quote_executed(self, msg: QuoteExecutedMsg) -> None:
        """A confirmed quote executed: book it from the fills of its order."""
        if not self._ours(msg.quote_creator_id):
            return
        live = self._by_quote.get(msg.quote_id)
        if live is None or live.fill is None or live.state != "confirmed":
            # Unknown here (e.g. confirmed by an earlier run), or settled already: positions
            # are reconciled from the exchange instead.
            log.info("execution_of_untracked_quote", quote_id=msg.quote_id)
            return
        self._set_state(live, "executing")
        live.order_id = msg.order_id
        self.spawn(self._book_execution(live), "execution")

    async def _book_execution(self, live: LiveQuote) -> None:
        """Look up the execution's fills (they may trail the event) and book them."""
        filled: Decimal | None = None
        order_id = live.order_id
        for delay in _FILL_LOOKUP_DELAYS:
            if delay:
                await self._sleep(delay)
            if live.state != "executing":
                return  # settled meanwhile (by a reconciliation)
            filled = await self._filled(live, order_id)
            if filled is not None:
                break
        if live.state != "executing":
            return
        if filled is None:
            # The reservation stays held: the fill may be real. Only the exchange's
            # positions can settle it now.
            log.error(
                "execution_fills_missing",
                quote_id=live.quote_id,
                order_id=order_id,
                lookups=len(_FILL_LOOKUP_DELAYS),
            )
            if self.on_reconcile_needed is not None:
                self.on_reconcile_needed("fills_missing")
            return
        self._executed(live, order_id=order_id, filled=filled)

    async def _filled(self, live: LiveQuote, order_id: str | None) -> Decimal | None:
        """Contracts the exchange lists as filled under ``order_id``; None if none (yet)."""
        fill = live.fill
        assert fill is not None
        if not order_id:
            return None
        try:
            fills = [f async for f in self._rest.iter_fills(order_id=order_id)]
        except KalshiError as exc:
            log.warning("fills_lookup_failed", quote_id=live.quote_id, error=str(exc))
            return None
        mine = [f for f in fills if f.order_id == order_id]
        if not mine:
            return None
        for f in mine:
            price = f.yes_price_dollars if fill.side == "yes" else f.no_price_dollars
            side = f.outcome_side or f.side
            if price != fill.price or (side is not None and side != fill.side):
                # Booked at our price all the same (what we quoted is what we confirmed);
                # the position reconciliation takes the exchange's cost.
                log.error(
                    "fill_differs_from_quote",
                    quote_id=live.quote_id,
                    order_id=order_id,
                    fill_side=side,
                    fill_price=str(price),
                    side=fill.side,
                    price=str(fill.price),
                )
        return sum((f.count_fp for f in mine), _ZERO)

    def _executed(self, live: LiveQuote, *, order_id: str | None, filled: Decimal) -> None:
        fill = live.fill
        assert fill is not None
        assert live.quote_id is not None
        market = live.rfq.market_ticker
        if filled > fill.contracts:
            log.error(
                "fill_exceeds_confirmed",
                quote_id=live.quote_id,
                filled=str(filled),
                confirmed=str(fill.contracts),
            )
        before = self._risk.positions().get(market)
        realized_before = before.realized_pnl if before else _ZERO
        applied = self._risk.commit(live.quote_id, filled)
        if applied is None:
            # No reservation to turn into a position: nothing to book on top of what the
            # exchange reports at the next reconciliation.
            log.error("execution_without_reservation", quote_id=live.quote_id)
            applied = MakerFill(fill.side, fill.price, min(filled, fill.contracts))
        after = self._risk.positions().get(market)
        self.counters.executions += 1
        self.counters.contracts_traded += applied.contracts
        partial = applied.contracts < fill.contracts
        self._journal.record_execution(
            rfq_id=live.rfq.id,
            quote_id=live.quote_id,
            market=market,
            side=applied.side,
            price=applied.price,
            contracts=applied.contracts,
            order_id=order_id or "",
            detail={"confirmed": fill.contracts, "partial": True} if partial else None,
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
            side=applied.side,
            contracts=str(applied.contracts),
            confirmed=str(fill.contracts),
        )
        try:
            live.strategy.on_fill(
                FillInfo(
                    quote_id=live.quote_id,
                    rfq_id=live.rfq.id,
                    market_ticker=market,
                    side=applied.side,
                    price=applied.price,
                    contracts=applied.contracts,
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
            await self.settle_from_rest(live, quote)
        if live.state == "confirmed":
            # Not settled yet (still confirmed or accepted, or the look-up failed). Checking
            # only once left its reservation held until the next reconciliation, which may
            # never come while the stream stays up: look again, less often each time.
            live.execution_checks += 1
            delay = _EXECUTION_GRACE_SECONDS * 2 ** min(live.execution_checks - 1, 8)
            self._schedule_execution_check(live, min(delay, _EXECUTION_CHECK_MAX_SECONDS))

    async def settle_from_rest(self, live: LiveQuote, quote: Quote) -> None:
        """Apply a quote's REST state to a confirmed quote whose execution event was missed."""
        if live.state != "confirmed":
            return
        if quote.status == Quote.EXECUTED:
            self._set_state(live, "executing")
            live.order_id = quote.creator_order_id
            await self.settle_execution(live)
        elif quote.status == Quote.CANCELLED:
            assert live.quote_id is not None
            self._risk.release(live.quote_id)
            self._forget(live)

    async def settle_execution(self, live: LiveQuote) -> bool:
        """Book an executed quote from its fills now; False (still held) if none are listed."""
        if live.state != "executing":
            return True
        order_id = live.order_id
        filled = await self._filled(live, order_id)
        if live.state != "executing":
            return True
        if filled is None:
            if self.on_reconcile_needed is not None:
                self.on_reconcile_needed("fills_missing")
            return False
        self._executed(live, order_id=order_id, filled=filled)
        return True

    def release_unbooked(self, live: LiveQuote) -> None:
        """Drop an executed quote whose fills never showed: the exchange's positions hold it.

        Only the reconciliation calls this, right after loading positions that include the
        fill; until then the reservation kept the fill counted against every limit.
        """
        if live.state != "executing" or live.quote_id is None:
            return
        log.warning("execution_settled_by_positions", quote_id=live.quote_id)
        self._risk.release(live.quote_id)
        self._forget(live)

    # ------------------------------------------------------------------ adoption and shutdown

    def adopt(
        self,
        quote: Quote,
        strategy: Strategy[Any],
        record: CreatedQuote,
        event_ticker: str = "",
    ) -> None:
        """Track an open or accepted quote found on the exchange, so its acceptance is judged.

        After a restart the exchange may hold an acceptance of a quote an earlier run sent;
        ``record`` is what the journal says we quoted, and that (not the exchange's copy)
        decides the fill. It gets the same risk check as any other, and a look at the market.
        """
        if quote.id in self._by_quote or quote.id in self._withdrawals:
            return
        rfq = Rfq(
            id=quote.rfq_id,
            market_ticker=record.market,
            event_ticker=event_ticker or None,
            contracts_fp=record.contracts,
            target_cost_dollars=quote.rfq_target_cost_dollars,
        )
        # The confirm deadline must fit the market's window: hvm=False gave an adopted quote
        # on a High Volatility Market a 24 s deadline for a 3 s window. Without market data,
        # assume the short window.
        view = self._market_data.view(rfq.market_ticker, self._risk.position(rfq.market_ticker))
        live = LiveQuote(
            rfq=rfq,
            strategy=strategy,
            yes_bid=record.yes_bid,
            no_bid=record.no_bid,
            reference=record.reference,
            hvm=view.hvm if view is not None else True,
            quote_id=quote.id,
            state="open",
            adopted=True,
        )
        self._by_quote[quote.id] = live
        # _forget unwatches only what _by_rfq holds: watching a quote tracked by id alone
        # kept its market refreshed forever.
        if self._track_rfq(live):
            self._market_data.watch(rfq.market_ticker)

    def adopt_confirmed(
        self, quote: Quote, strategy: Strategy[Any] | None, event_ticker: str = ""
    ) -> bool:
        """Track a confirmed quote found on the exchange (an earlier run confirmed it)."""
        if quote.id in self._by_quote or quote.accepted_side is None or strategy is None:
            return False
        side = quote.accepted_side
        price = accepted_bid(side, quote.yes_bid_dollars, quote.no_bid_dollars)
        # The size the exchange offered on the accepted side; the acceptance may have taken
        # less, but holding more is the safe side until the fills say what traded. A budget
        # sized RFQ reports contracts_fp "0.00": its size is what the budget buys.
        offered = accepted_bid(side, quote.yes_contracts_fp, quote.no_contracts_fp)
        rfq = Rfq(
            id=quote.rfq_id,
            market_ticker=quote.market_ticker,
            event_ticker=event_ticker or None,
            contracts_fp=quote.contracts_fp,
            target_cost_dollars=quote.rfq_target_cost_dollars,
        )
        contracts = offered if offered is not None and offered > 0 else _contracts_for(rfq, price)
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
            adopted=True,
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

    async def cancel_all(self, reason: str, *, within: float | None = None) -> int:
        """Withdraw every open quote; wait (up to ``within`` seconds) until all are gone.

        Quotes already being withdrawn are waited for too. Returns how many withdrawals the
        exchange confirmed meanwhile.
        """
        for live in [q for q in self._by_rfq.values() if q.state == "open"]:
            self._start_withdrawal(live, reason)
        tasks = [w.task for w in self._withdrawals.values() if w.task is not None]
        before = self.counters.quotes_deleted
        if tasks:
            await asyncio.wait(tasks, timeout=within)
        return self.counters.quotes_deleted - before
