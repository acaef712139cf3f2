"""The simulation driver: what happens on the mock exchange without any client asking.

Three activities run while the mock exchange serves:

* arrivals: an :class:`~mmbot.mock.sim.RfqStream` yields ``(gap, plan)`` pairs; after
  each gap the plan's simulated requester creates its RFQ (unless it already has an open
  RFQ on that market or the market has closed or settled: those plans are counted and
  skipped);
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
* informed requesters: about ``informed_fraction`` of the stream's RFQs (the plan's
  ``informed`` flag, drawn under the seed) come from requesters that never shop within a
  reservation. The driver notes the market's fair value when each quote on such an RFQ
  is created; after every walk step (and a reaction time of up to 0.1 s, times
  ``time_scale``), if fair has since moved against the maker by more than
  ``informed_move_threshold`` (fell, for the maker's ``yes_bid``; rose, for its
  ``no_bid``), the requester accepts that quote on the side the move made a bargain
  (:func:`~mmbot.mock.informed.choose_bargain`). That picks off stale quotes, which a
  maker's last look should decline. Without such a move the RFQ simply expires
  at the end of its lifetime: an informed requester only trades with an edge. The check
  rides on the walk, so with no walk (``step_interval_seconds`` 0) call
  :meth:`SimulationDriver.informed_look` after moving a market by hand. Counted in
  ``informed_rfqs`` and ``informed_accepts`` (also in ``acceptances``).

The arrival and walk loops are supervised: an exception is logged and the loop restarts
after a short delay. Exchange errors inside requester callbacks are logged and dropped,
so one odd quote never stops the simulation. The same seed gives the same RFQ stream.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import ROUND_FLOOR, Decimal

import structlog

from mmbot.mock.exchange import Exchange
from mmbot.mock.informed import (
    DEFAULT_INFORMED_FRACTION,
    DEFAULT_INFORMED_MOVE_THRESHOLD,
    InformedQuote,
    choose_bargain,
    threshold_micros,
)
from mmbot.mock.records import ExchangeEvent, RfqRecord, User
from mmbot.mock.sim import (
    Acceptance,
    QuoteView,
    RfqPlan,
    RfqStream,
    choose_quote,
    replan_reservation,
)
from mmbot.mock.wire import MockApiError, wire_count, wire_dollars

__all__ = [
    "BenchCounters",
    "BenchPlan",
    "BenchSource",
    "DriverStats",
    "SimulationDriver",
    "partial_contracts",
]

log = structlog.get_logger("mmbot.mock")

_ONE_CONTRACT = Decimal(1)
# Re-checks an expired RFQ this much later (scaled) while a deal on it is in flight.
_EXPIRY_RECHECK_SECONDS = 1.0
# An informed requester reacts to a move within this long (drawn uniformly per step, then
# scaled by time_scale). Some of its acceptances land before a maker can have seen the
# move, some after the move is on the book but before the maker's requote: the ones a
# last look exists to refuse.
_INFORMED_REACTION_MAX_SECONDS = 0.1


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
    #: RFQs tracked for an informed requester (see the module docstring).
    informed_rfqs: int = 0
    #: Stale quotes informed requesters accepted after fair moved against the maker.
    informed_accepts: int = 0

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
    # Informed requesters only: the market's fair value (micros) when each quote was made.
    quoted_fair: dict[str, int] = field(default_factory=dict)


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
        informed_fraction: float = DEFAULT_INFORMED_FRACTION,
        informed_move_threshold: Decimal = DEFAULT_INFORMED_MOVE_THRESHOLD,
    ) -> None:
        self.exchange = exchange
        self.requesters = list(requesters)
        self._by_id = {user.user_id: user for user in self.requesters}
        markets = list(exchange.markets.values())
        self._stream = RfqStream(
            seed,
            rfq_rate,
            markets,
            [u.user_id for u in self.requesters],
            informed_fraction=informed_fraction,
        )
        self._informed_threshold = threshold_micros(informed_move_threshold)
        self._walk_rng = random.Random(f"mmbot-mock-walk:{seed}")  # noqa: S311 - simulation
        # Its own generator: the walk's draws, and so the seeded prices, stay as they were.
        self._reaction_rng = random.Random(f"mmbot-mock-reaction:{seed}")  # noqa: S311
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
            reaction = self._reaction_rng.uniform(0.0, _INFORMED_REACTION_MAX_SECONDS)
            asyncio.get_running_loop().call_later(
                reaction * self.exchange.time_scale, self.informed_look
            )

    def _launch(self, plan: RfqPlan) -> RfqRecord | None:
        requester = self._by_id.get(plan.requester)
        market = self.exchange.markets.get(plan.market_ticker)
        if requester is None or market is None:
            self.stats.create_errors += 1
            log.warning("mock_plan_unknown", requester=plan.requester, market=plan.market_ticker)
            return None
        if market.settled or market.close_time <= self.exchange.clock():
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
        if plan.informed:
            self.stats.informed_rfqs += 1
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
            elif event.type == "quote_created" and tracked.plan.informed:
                # No decision timer: the walk loop checks informed RFQs after each step.
                quote_id = str(next(iter(event.messages.values()))["quote_id"])
                market = self.exchange.markets[tracked.plan.market_ticker]
                tracked.quoted_fair[quote_id] = market.fair_micros
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
        quotes = self.exchange.quotes_on(rfq)
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
        self._accept(tracked, choice)

    def informed_look(self) -> None:
        """Let every informed requester pick off a quote fair has moved past (after a step)."""
        # A copy: accepting emits events that may drop entries from the dict.
        for tracked in [t for t in self._tracked.values() if t.quoted_fair]:
            try:
                self._pick_off(tracked)
            except MockApiError as exc:
                self.stats.accept_errors += 1
                log.info("mock_accept_failed", rfq_id=tracked.rfq_id, error=str(exc))
            except Exception:
                self.stats.accept_errors += 1
                log.exception("mock_informed_decision_failed", rfq_id=tracked.rfq_id)

    def _pick_off(self, tracked: _Tracked) -> None:
        rfq = self.exchange.rfqs.get(tracked.rfq_id)
        if rfq is None or rfq.status != "open":
            return
        quotes = self.exchange.quotes_on(rfq)
        if any(q.status in ("accepted", "confirmed") for q in quotes):
            return  # a deal is in flight; the maker confirms (or declines) first
        held = [
            InformedQuote(QuoteView(q.id, q.yes_bid, q.no_bid, q.seq), tracked.quoted_fair[q.id])
            for q in quotes
            if q.status == "open" and q.id in tracked.quoted_fair
        ]
        choice = choose_bargain(
            held, rfq.market.fair_micros, self._informed_threshold, tracked.plan.partial_fraction
        )
        if choice is None:
            return
        self._accept(tracked, choice)
        self.stats.informed_accepts += 1

    def _accept(self, tracked: _Tracked, choice: Acceptance) -> None:
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
        if any(q.status in ("accepted", "confirmed") for q in self.exchange.quotes_on(rfq)):
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


# --------------------------------------------------------------------------- benchmark source


@dataclass(frozen=True, slots=True)
class BenchPlan:
    """What the benchmark RFQ source emits: a fixed rate of RFQs and how requesters react."""

    #: RFQs per second, paced on the event loop's clock.
    rate: float
    #: Share of first quotes the requester accepts at once (deterministic, not random).
    accept_fraction: float = 0.1
    #: Real seconds (not scaled by ``time_scale``) before the requester deletes its RFQ.
    lifetime_seconds: float = 1.0
    #: RFQ sizes in whole contracts, drawn uniformly so expected value varies per RFQ.
    sizes: tuple[int, ...] = (1, 2, 3, 5, 10, 20, 50)
    seed: int = 0

    def __post_init__(self) -> None:
        if not math.isfinite(self.rate) or self.rate <= 0:
            raise ValueError("rate must be a finite number > 0")
        if not 0 <= self.accept_fraction <= 1:
            raise ValueError("accept_fraction must be within [0, 1]")
        if not math.isfinite(self.lifetime_seconds) or self.lifetime_seconds <= 0:
            raise ValueError("lifetime_seconds must be a finite number > 0")
        if not self.sizes or any(s < 1 for s in self.sizes):
            raise ValueError("sizes must be a non-empty list of positive integers")


@dataclass(slots=True)
class BenchCounters:
    """What the benchmark source did since it started or was last reset."""

    rfqs_created: int = 0
    create_errors: int = 0
    #: RFQs not emitted because the exchange's own loop fell behind the schedule.
    lagged: int = 0
    rfqs_quoted: int = 0
    acceptances: int = 0
    accept_errors: int = 0
    deleted: int = 0
    offered_contracts: int = 0
    quoted_contracts: int = 0

    def to_dict(self) -> dict[str, int]:
        """The counters as a JSON-ready mapping."""
        return asdict(self)


@dataclass(slots=True)
class _BenchRfq:
    requester: User
    size: int
    quoted: bool = False


# The scheduler tick at high rates: emitting a small batch every 2 ms costs far less loop
# overhead than one timer per RFQ, and keeps bursts to a couple of RFQs.
_MIN_TICK_SECONDS = 0.002
# At most this share of a second's RFQs is emitted in one catch-up burst; the rest counts
# as lagged, so an overloaded exchange reports it instead of flooding the maker.
_MAX_BURST_SECONDS = 0.05
# A closed RFQ is forgotten this long after it closed (deals settle first).
_FORGET_AFTER_SECONDS = 3.0
# Pairs (requester, market) are reused round-robin; they must be free again by then.
_PAIR_REUSE_SECONDS = 4.0


class BenchSource:
    """Emits ``rfq_created`` at a fixed rate from benchmark requesters across every market.

    RFQ number ``i`` goes to market ``i % M`` from requester ``(i // M) % U``, with ``U``
    chosen so a (requester, market) pair is reused only after ``_PAIR_REUSE_SECONDS`` and
    no requester exceeds the open-RFQ limit. Each requester deletes its RFQ after
    ``lifetime_seconds`` and accepts ``accept_fraction`` of first quotes immediately.
    Closed RFQs are forgotten by the exchange, so memory stays flat over long runs.
    """

    def __init__(self, exchange: Exchange, plan: BenchPlan) -> None:
        self.exchange = exchange
        self.plan = plan
        self.counters = BenchCounters()
        self._markets = sorted(exchange.markets.values(), key=lambda m: m.ticker)
        if not self._markets:
            raise ValueError("the benchmark needs at least one market")
        per_pair = math.ceil(plan.rate * _PAIR_REUSE_SECONDS / len(self._markets))
        per_limit = math.ceil(plan.rate * plan.lifetime_seconds * 2 / 100)
        count = max(4, per_pair, per_limit)
        self._requesters = [exchange.add_user(simulated=True) for _ in range(count)]
        self._rng = random.Random(f"mmbot-bench:{plan.seed}")  # noqa: S311 - simulation
        self._open: dict[str, _BenchRfq] = {}
        self._expiries: deque[tuple[float, str]] = deque()
        self._forget: deque[tuple[float, str]] = deque()
        self._accept_credit = 0.0
        self._accepted_sides = 0
        self._tick_seconds = max(1.0 / plan.rate, _MIN_TICK_SECONDS)
        self._max_burst = max(1, math.ceil(plan.rate * _MAX_BURST_SECONDS))
        self._index = 0
        self._scheduled = 0
        self._ticks = 0
        self._t0 = 0.0
        self._started_at = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._emitting = True

    @property
    def requester_count(self) -> int:
        """How many benchmark requesters share the RFQ stream."""
        return len(self._requesters)

    @property
    def running(self) -> bool:
        """True while RFQs are being emitted."""
        return self._handle is not None and self._emitting

    def start(self) -> None:
        """Start emitting (needs a running loop)."""
        if self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
        self.exchange.listeners.append(self._on_event)
        self._t0 = self._started_at = self._loop.time()
        self._handle = self._loop.call_at(self._t0, self._tick)

    def reset_counters(self) -> None:
        """Start counting afresh (after a warm-up) without disturbing the stream."""
        self.counters = BenchCounters()
        if self._loop is not None:
            self._started_at = self._loop.time()

    def elapsed_seconds(self) -> float:
        """Seconds since the start or the last counter reset."""
        return 0.0 if self._loop is None else self._loop.time() - self._started_at

    def pause(self) -> None:
        """Stop emitting new RFQs; open ones still expire on schedule (no burst of deletes)."""
        self._emitting = False

    def stop(self) -> None:
        """Stop emitting, delete every open benchmark RFQ and forget what can be forgotten."""
        self._emitting = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        for rfq_id, entry in list(self._open.items()):
            self._delete(rfq_id, entry)
        self._open.clear()
        self._expiries.clear()
        if self._on_event in self.exchange.listeners:
            self.exchange.listeners.remove(self._on_event)
        for _, rfq_id in self._forget:
            self.exchange.forget_rfq(rfq_id)
        self._forget.clear()

    # ------------------------------------------------------------------ the schedule

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        try:
            now = loop.time()
            due = int((now - self._t0) * self.plan.rate) - self._scheduled
            if not self._emitting:
                due = 0
            if due > self._max_burst:
                # Fell behind: report the gap rather than burst to catch up.
                self.counters.lagged += due - self._max_burst
                self._scheduled += due - self._max_burst
                due = self._max_burst
            for _ in range(max(0, due)):
                self._scheduled += 1
                self._emit_one(now)
            self._expire(now)
            self._purge(now)
        except Exception:
            log.exception("mock_bench_tick_failed")
        self._ticks += 1
        # Absolute deadlines: the schedule does not drift with callback latency.
        self._handle = loop.call_at(self._t0 + self._ticks * self._tick_seconds, self._tick)

    def _emit_one(self, now: float) -> None:
        i = self._index
        self._index += 1
        market = self._markets[i % len(self._markets)]
        requester = self._requesters[(i // len(self._markets)) % len(self._requesters)]
        size = self.plan.sizes[self._rng.randrange(len(self.plan.sizes))]
        body = {"market_ticker": market.ticker, "rest_remainder": False, "contracts": size}
        try:
            rfq = self.exchange.create_rfq(requester, body)
        except MockApiError:
            self.counters.create_errors += 1
            return
        self.counters.rfqs_created += 1
        self.counters.offered_contracts += size
        self._open[rfq.id] = _BenchRfq(requester, size)
        self._expiries.append((now + self.plan.lifetime_seconds, rfq.id))

    def _expire(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, rfq_id = self._expiries.popleft()
            entry = self._open.get(rfq_id)
            if entry is None:
                continue
            rfq = self.exchange.rfqs.get(rfq_id)
            if rfq is not None and any(
                q.status in ("accepted", "confirmed") for q in self.exchange.quotes_on(rfq)
            ):
                # A deal is in flight: it executes (closing the RFQ) or its window voids it.
                self._expiries.append((now + self.plan.lifetime_seconds, rfq_id))
                continue
            self._delete(rfq_id, entry)

    def _delete(self, rfq_id: str, entry: _BenchRfq) -> None:
        rfq = self.exchange.rfqs.get(rfq_id)
        if rfq is None or rfq.status != "open":
            return
        try:
            self.exchange.delete_rfq(entry.requester, rfq_id)
            self.counters.deleted += 1
        except MockApiError:
            pass  # locked by a confirmed deal: it closes when it executes

    def _purge(self, now: float) -> None:
        while self._forget and self._forget[0][0] <= now:
            _, rfq_id = self._forget.popleft()
            if not self.exchange.forget_rfq(rfq_id):
                self._forget.append((now + _FORGET_AFTER_SECONDS, rfq_id))

    # ------------------------------------------------------------------ requesters

    def _on_event(self, event: ExchangeEvent) -> None:
        # Synchronous, inside the exchange: only bookkeeping here; accepting is deferred.
        try:
            if event.type == "rfq_deleted":
                if self._open.pop(event.rfq_id, None) is not None and self._loop is not None:
                    self._forget.append((self._loop.time() + _FORGET_AFTER_SECONDS, event.rfq_id))
                return
            if event.type != "quote_created":
                return
            entry = self._open.get(event.rfq_id)
            if entry is None or entry.quoted:
                return
            entry.quoted = True
            self.counters.rfqs_quoted += 1
            self.counters.quoted_contracts += entry.size
            self._accept_credit += self.plan.accept_fraction
            if self._accept_credit >= 1.0 and self._loop is not None:
                self._accept_credit -= 1.0
                msg = next(iter(event.messages.values()))
                self._loop.call_soon(self._accept, entry, str(msg["quote_id"]))
        except Exception:
            log.exception("mock_bench_event_failed", event=event.type, rfq_id=event.rfq_id)

    def _accept(self, entry: _BenchRfq, quote_id: str) -> None:
        quote = self.exchange.quotes.get(quote_id)
        if quote is None or quote.status != "open":
            self.counters.accept_errors += 1
            return
        # Alternate sides so the maker's positions net off over a long run.
        self._accepted_sides += 1
        side = "yes" if self._accepted_sides % 2 else "no"
        if (quote.yes_bid if side == "yes" else quote.no_bid) == 0:
            side = "no" if side == "yes" else "yes"
        try:
            self.exchange.accept_quote(entry.requester, quote_id, {"accepted_side": side})
            self.counters.acceptances += 1
        except MockApiError:
            self.counters.accept_errors += 1
