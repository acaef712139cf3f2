"""The simulation driver: what happens on the mock exchange without any client asking.

Three activities run while the mock exchange serves:

* arrivals: an :class:`~mmbot.mock.sim.RfqStream` yields ``(gap, plan)`` pairs; after
  each gap the plan's simulated requester creates its RFQ (unless it already has an open
  RFQ on that market or the market has closed: those plans are counted and skipped);
* the market walk: every ``step_interval_seconds`` each market's hidden fair value takes
  one random-walk step, from its own seeded generator;
* requesters: each simulated RFQ waits for quotes. The first ``quote_created`` schedules
  a decision ``decision_delay_seconds x time_scale`` later; the requester then picks the
  cheapest acceptable quote (:func:`~mmbot.mock.sim.choose_quote`), valuing the contract
  at the market's fair value at that moment (or at the fixed reservation an RFQ created
  through ``POST /_mock/rfqs`` was given), and accepts it, in whole contracts when its
  plan asks for a partial fill. When nothing is acceptable it
  decides again as soon as another quote arrives. After ``lifetime_seconds x time_scale``
  it deletes the RFQ if it is still open.

The arrival and walk loops are supervised: an exception is logged and the loop restarts
after a short delay. Exchange errors inside requester callbacks are logged and dropped,
so one odd quote never stops the simulation. The same seed gives the same RFQ stream.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import ROUND_FLOOR, Decimal

import structlog

from mmbot.mock.exchange import (
    Exchange,
    ExchangeEvent,
    MockApiError,
    RfqRecord,
    User,
    wire_count,
    wire_dollars,
)
from mmbot.mock.sim import (
    QuoteView,
    RfqPlan,
    RfqStream,
    choose_quote,
    replan_reservation,
)

__all__ = ["DriverStats", "SimulationDriver", "partial_contracts"]

log = structlog.get_logger("mmbot.mock")

_ONE_CONTRACT = Decimal(1)
# Re-checks an expired RFQ this much later (scaled) while a deal on it is in flight.
_EXPIRY_RECHECK_SECONDS = 1.0


def partial_contracts(offered: Decimal, fraction: Decimal | None) -> Decimal | None:
    """Contracts a requester accepts out of ``offered``: None for all of them.

    A partial acceptance is floored to whole contracts, at least one, never more than
    offered (an offer below one contract is taken whole).
    """
    if fraction is None:
        return None
    size = (offered * fraction).to_integral_value(rounding=ROUND_FLOOR)
    size = min(max(size, _ONE_CONTRACT), offered)
    return None if size == offered else size


@dataclass(slots=True)
class DriverStats:
    """Counters for operators and tests."""

    rfqs_created: int = 0
    skipped_open_rfq: int = 0
    skipped_closed_market: int = 0
    create_errors: int = 0
    decisions: int = 0
    acceptances: int = 0
    accept_errors: int = 0
    expired_deleted: int = 0
    task_restarts: int = 0

    def to_dict(self) -> dict[str, int]:
        """The counters as a JSON-ready mapping."""
        return asdict(self)


@dataclass(slots=True)
class _Tracked:
    """A simulated requester's open RFQ and what it is waiting for."""

    rfq_id: str
    requester: User
    plan: RfqPlan
    # True when the plan's reservation was given explicitly and must not follow the market.
    fixed_reservation: bool
    quotes_seen: bool = False
    decision: asyncio.TimerHandle | None = None
    expiry: asyncio.TimerHandle | None = None
    handles: list[asyncio.Handle] = field(default_factory=list)


class SimulationDriver:
    """Runs arrivals, the market walk and the simulated requesters against one exchange."""

    def __init__(
        self,
        exchange: Exchange,
        requesters: Sequence[User],
        *,
        seed: int,
        rfq_rate: float,
        step_interval_seconds: float = 1.0,
        restart_delay_seconds: float = 0.5,
    ) -> None:
        self.exchange = exchange
        self.requesters = list(requesters)
        self._by_id = {user.user_id: user for user in self.requesters}
        markets = list(exchange.markets.values())
        self._stream = RfqStream(seed, rfq_rate, markets, [u.user_id for u in self.requesters])
        self._walk_rng = random.Random(f"mmbot-mock-walk:{seed}")  # noqa: S311 - simulation
        self._step_interval = step_interval_seconds
        self._restart_delay = restart_delay_seconds
        self._tracked: dict[str, _Tracked] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self.stats = DriverStats()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the supervised loops and listen to the exchange (needs a running loop)."""
        if self._running:
            return
        self._running = True
        self.exchange.listeners.append(self._on_event)
        if self._stream.enabled:
            self._tasks.append(self._spawn("arrivals", self._arrivals))
        if self.exchange.markets and self._step_interval > 0:
            self._tasks.append(self._spawn("market_walk", self._walk))

    async def stop(self) -> None:
        """Cancel every loop and pending requester timer; idempotent."""
        self._running = False
        if self._on_event in self.exchange.listeners:
            self.exchange.listeners.remove(self._on_event)
        for tracked in self._tracked.values():
            self._cancel_timers(tracked)
        self._tracked.clear()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, name: str, body: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(
            self._supervise(name, body), name=f"mock-driver-{name}"
        )

    async def _supervise(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        while self._running:
            try:
                await body()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats.task_restarts += 1
                log.exception(
                    "mock_driver_task_failed",
                    task=name,
                    restart_in_seconds=self._restart_delay,
                )
                await asyncio.sleep(self._restart_delay)

    # ------------------------------------------------------------------ loops

    async def _arrivals(self) -> None:
        while True:
            arrival = self._stream.next_arrival()
            if arrival is None:
                return
            gap, plan = arrival
            await asyncio.sleep(gap)
            self._launch(plan)

    async def _walk(self) -> None:
        markets = list(self.exchange.markets.values())
        while True:
            await asyncio.sleep(self._step_interval)
            for market in markets:
                # The nominal interval rather than the measured one keeps the walk
                # reproducible under the seed however busy the event loop is.
                market.step(self._walk_rng, self._step_interval)

    def _launch(self, plan: RfqPlan) -> RfqRecord | None:
        requester = self._by_id.get(plan.requester)
        market = self.exchange.markets.get(plan.market_ticker)
        if requester is None or market is None:
            self.stats.create_errors += 1
            log.warning("mock_plan_unknown", requester=plan.requester, market=plan.market_ticker)
            return None
        if market.close_time <= self.exchange.clock():
            self.stats.skipped_closed_market += 1
            return None
        if any(r.market is market for r in self.exchange.open_rfqs_of(requester)):
            self.stats.skipped_open_rfq += 1
            return None
        try:
            rfq = self.exchange.create_rfq(requester, rfq_body(plan))
        except MockApiError as exc:
            self.stats.create_errors += 1
            log.info("mock_rfq_create_failed", market=plan.market_ticker, error=str(exc))
            return None
        self.stats.rfqs_created += 1
        self.track(rfq, plan, fixed_reservation=False)
        return rfq

    # ------------------------------------------------------------------ requesters

    def track(self, rfq: RfqRecord, plan: RfqPlan, *, fixed_reservation: bool) -> None:
        """Make the RFQ's requester behave per ``plan``: decide on quotes, expire the RFQ."""
        tracked = _Tracked(rfq.id, rfq.creator, plan, fixed_reservation)
        self._tracked[rfq.id] = tracked
        loop = asyncio.get_running_loop()
        tracked.expiry = loop.call_later(
            plan.lifetime_seconds * self.exchange.time_scale, self._expire, rfq.id
        )

    def _on_event(self, event: ExchangeEvent) -> None:
        # Called synchronously from inside the exchange: never raise, and never call back
        # into the exchange from here, or other listeners would see events out of order.
        try:
            tracked = self._tracked.get(event.rfq_id)
            if tracked is None:
                return
            if event.type == "rfq_deleted":
                self._cancel_timers(tracked)
                del self._tracked[event.rfq_id]
            elif event.type == "quote_created" and tracked.decision is None:
                loop = asyncio.get_running_loop()
                if tracked.quotes_seen:
                    tracked.handles.append(loop.call_soon(self._decide, event.rfq_id))
                else:
                    tracked.quotes_seen = True
                    delay = tracked.plan.decision_delay_seconds * self.exchange.time_scale
                    tracked.decision = loop.call_later(delay, self._decide, event.rfq_id)
        except Exception:
            log.exception("mock_requester_event_failed", event=event.type, rfq_id=event.rfq_id)

    def _decide(self, rfq_id: str) -> None:
        tracked = self._tracked.get(rfq_id)
        if tracked is None:
            return
        tracked.decision = None
        tracked.handles = [h for h in tracked.handles if not h.cancelled()]
        try:
            self._accept_best(tracked)
        except MockApiError as exc:
            self.stats.accept_errors += 1
            log.info("mock_accept_failed", rfq_id=rfq_id, error=str(exc))
        except Exception:
            self.stats.accept_errors += 1
            log.exception("mock_requester_decision_failed", rfq_id=rfq_id)

    def _accept_best(self, tracked: _Tracked) -> None:
        rfq = self.exchange.rfqs.get(tracked.rfq_id)
        if rfq is None or rfq.status != "open":
            return
        quotes = [q for q in self.exchange.quotes.values() if q.rfq is rfq]
        if any(q.status in ("accepted", "confirmed") for q in quotes):
            return  # a deal is in flight; the maker confirms or the window voids it
        views = [QuoteView(q.id, q.yes_bid, q.no_bid, q.seq) for q in quotes if q.status == "open"]
        if not views:
            return
        self.stats.decisions += 1
        plan = tracked.plan
        if not tracked.fixed_reservation:
            # A requester values the contract at the market as it is now, not at arrival.
            plan = replan_reservation(plan, rfq.market.fair_micros)
        choice = choose_quote(plan, views)
        if choice is None:
            return  # nothing acceptable: decide again when the next quote arrives
        quote = self.exchange.quotes[choice.quote_id]
        offered = quote.yes_contracts if choice.accepted_side == "yes" else quote.no_contracts
        self.exchange.accept_quote(
            tracked.requester,
            choice.quote_id,
            {"accepted_side": choice.accepted_side},
            contracts=partial_contracts(offered, choice.contracts_fraction),
        )
        self.stats.acceptances += 1

    def _expire(self, rfq_id: str) -> None:
        tracked = self._tracked.get(rfq_id)
        if tracked is None:
            return
        tracked.expiry = None
        rfq = self.exchange.rfqs.get(rfq_id)
        if rfq is None or rfq.status != "open":
            self._tracked.pop(rfq_id, None)
            return
        if any(
            q.rfq is rfq and q.status in ("accepted", "confirmed")
            for q in self.exchange.quotes.values()
        ):
            # Once confirmed neither party may withdraw; look again after the deal settles.
            tracked.expiry = asyncio.get_running_loop().call_later(
                _EXPIRY_RECHECK_SECONDS * self.exchange.time_scale, self._expire, rfq_id
            )
            return
        try:
            self.exchange.delete_rfq(tracked.requester, rfq_id)
            self.stats.expired_deleted += 1
        except MockApiError as exc:
            log.info("mock_rfq_expire_failed", rfq_id=rfq_id, error=str(exc))
        except Exception:
            log.exception("mock_rfq_expire_failed", rfq_id=rfq_id)

    @staticmethod
    def _cancel_timers(tracked: _Tracked) -> None:
        for handle in (tracked.decision, tracked.expiry, *tracked.handles):
            if handle is not None:
                handle.cancel()
        tracked.decision = tracked.expiry = None
        tracked.handles = []

    def open_requester_for(self, market_ticker: str) -> User | None:
        """The first simulated requester without an open RFQ on ``market_ticker``."""
        for user in self.requesters:
            if not any(r.market.ticker == market_ticker for r in self.exchange.open_rfqs_of(user)):
                return user
        return None

    def add_requester(self, user: User) -> None:
        """Let ``user`` act as a simulated requester for control-endpoint RFQs."""
        self.requesters.append(user)
        self._by_id[user.user_id] = user


def rfq_body(plan: RfqPlan) -> dict[str, object]:
    """The ``POST /communications/rfqs`` body a simulated requester sends for ``plan``."""
    body: dict[str, object] = {
        "market_ticker": plan.market_ticker,
        "rest_remainder": plan.rest_remainder,
    }
    if plan.contracts is not None:
        body["contracts_fp"] = wire_count(plan.contracts)
    else:
        assert plan.target_cost_dollars is not None
        body["target_cost_dollars"] = wire_dollars(plan.target_cost_dollars)
    return body
