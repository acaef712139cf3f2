"""The chaos suite: faults injected into the mock exchange during a steady RFQ flow.

Each scenario starts a fresh mock exchange (timers scaled down twenty-fold), a steady
flow of RFQs from simulated requesters who accept the daemon's quotes, and the real
daemon with tight risk limits. It then injects one kind of fault a few times through the
mock's in-process API (:attr:`MockExchange.faults`, :meth:`MockExchange.drop_ws`, or
``kill -9`` of a daemon subprocess) and asserts, from the exchange's own records:

* ``risk limits``: no confirmation the exchange accepts takes the daemon's account past
  any limit (contracts per RFQ, net position per market, exposure, daily loss), counting
  confirmed-unexecuted quotes the way :mod:`mmbot.risk` does; checked at every confirm;
* ``quoting resumes``: after the fault clears, the exchange receives a new quote from
  the daemon within a bound (the recovery time, measured and reported);
* ``journal = exchange``: once the flow pauses and deals settle, the journal's latest
  ``position_changed`` per market equals the exchange's position of the daemon's user;
* ``no stale quote``: after a restart's reconciliation no quote of the killed run is
  still open, and after shutdown no quote of the daemon's user is open;
* ``no unhandled task error``: no error log record of the daemon carries an exception or
  names an unhandled task (``task_failed``, ``background_task_failed``,
  ``Task exception was never retrieved``, ...).

With ``MMBOT_CHAOS_REPORT=PATH`` set, the figures (faults, injections, recovery times,
invariants) are written to PATH as JSON; ``python -m tests.support.chaos_report PATH`` turns them
into the table of ``docs/RELIABILITY.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mmbot.logs import configure_logging
from mmbot.mock.driver import rfq_body
from mmbot.mock.exchange import QuoteRecord, User
from mmbot.mock.server import MockConfig, MockExchange
from mmbot.mock.sim import RfqPlan, SimMarket
from tests.support.daemon import (
    FLAT,
    MAKER_KEY_ID,
    Daemons,
    Venue,
    daemon_env,
    daemon_process,
    journal_rows,
    recording_daemons,
    status,
    subprocess_config,
)
from tests.support.env import clear_mmbot_env
from tests.support.keys import TestKey
from tests.support.polling import eventually

# Minutes of real daemons under injected faults: CI runs it, the inner loop does not.
pytestmark = pytest.mark.slow

# Kalshi's timers times 0.05: 1.5 s to confirm, 0.75 s from confirm to execution.
TIME_SCALE = 0.05
MARKETS = 4
LOT = Decimal(10)
FLOW_GAP_SECONDS = 0.15
# Scaled by TIME_SCALE: an RFQ lives 1 s, its requester decides 25 ms after the quote.
RFQ_LIFETIME = 20.0
DECISION_DELAY = 0.5
RECOVERY_BOUND_SECONDS = 10.0
RESTART_RECOVERY_BOUND_SECONDS = 30.0
# The flow only adds risk while the daemon's committed and pending exposure (as the
# exchange sees it, counting RFQs in flight at their worst) is below this; above it, it
# sends only RFQs that reduce a position. That keeps the book from parking at the
# exposure limit, where the daemon (which counts a reducing fill at full cost) would
# rightly quote nothing ever again.
FLOW_ADD_BELOW_DOLLARS = Decimal(9)

LIMITS = {
    "max_contracts_per_rfq": Decimal(10),
    "max_position_per_market": Decimal(20),
    "max_exposure_dollars": Decimal(24),
    "max_daily_loss_dollars": Decimal(50),
}

INVARIANTS = (
    "risk limits",
    "quoting resumes",
    "journal = exchange",
    "no stale quote",
    "no unhandled task error",
)

# Error records that mean a task died with an exception nobody handled.
UNHANDLED = frozenset(
    {
        "task_failed",
        "background_task_failed",
        "event_stream_failed",
        "journal_writer_error",
        "journal_listener_failed",
        "strategy_on_fill_failed",
        "readiness_check_failed",
        "response_observer_failed",
        "ws_on_malformed_failed",
        "shutdown_timeout",
        "shutdown_cleanup_failed",
        "journal_flush_incomplete",
        "journal_records_lost",
    }
)


class JournalMismatch(AssertionError):
    """The journal's positions differ from the exchange's (see the kill -9 scenario)."""


# ----------------------------------------------------------------------------- the record


@dataclass
class ScenarioRecord:
    """What one scenario did and saw, for the report."""

    fault: str
    how: str
    injections: int = 0
    recovery_seconds: list[float] = field(default_factory=list)
    invariants: dict[str, str] = field(default_factory=dict)
    confirms_checked: int = 0
    risk_declines: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    note: str = ""

    def held(self, name: str) -> None:
        self.invariants.setdefault(name, "held")

    def failed(self, name: str) -> None:
        self.invariants[name] = "FAILED"


RECORDS: dict[str, ScenarioRecord] = {}


@pytest.fixture(scope="module", autouse=True)
def _chaos_report() -> Iterator[None]:
    """Write every scenario's figures as JSON when MMBOT_CHAOS_REPORT names a file."""
    yield
    target = os.environ.get("MMBOT_CHAOS_REPORT")
    if not target:
        return
    data = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "time_scale": TIME_SCALE,
        "limits": {k: str(v) for k, v in LIMITS.items()},
        "recovery_bound_seconds": RECOVERY_BOUND_SECONDS,
        "restart_recovery_bound_seconds": RESTART_RECOVERY_BOUND_SECONDS,
        "invariants": list(INVARIANTS),
        "scenarios": [
            {
                "fault": r.fault,
                "how": r.how,
                "injections": r.injections,
                "recovery_seconds": [round(s, 3) for s in r.recovery_seconds],
                "invariants": r.invariants,
                "confirms_checked": r.confirms_checked,
                "risk_declines": r.risk_declines,
                "seconds": round(r.seconds, 1),
                "note": r.note,
            }
            for r in RECORDS.values()
        ],
    }
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


# ----------------------------------------------------------------------------- the harness


def _max_loss(quote: QuoteRecord) -> Decimal:
    assert quote.accepted_side is not None
    assert quote.contracts_accepted is not None
    price = quote.yes_bid if quote.accepted_side == "yes" else quote.no_bid
    return price * quote.contracts_accepted


def _delta(quote: QuoteRecord) -> Decimal:
    assert quote.contracts_accepted is not None
    return quote.contracts_accepted if quote.accepted_side == "yes" else -quote.contracts_accepted


@dataclass
class Chaos:
    """The venue, the flow of RFQs and the exchange-side checks of one scenario."""

    venue: Venue
    record: ScenarioRecord
    journal: Path
    markets: list[SimMarket]
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    flowing: bool = False
    #: time.monotonic() of every quote the exchange accepted from the daemon's user.
    quote_times: list[float] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    flow_rfqs: dict[str, str] = field(default_factory=dict)  # rfq id -> market
    #: While set, the flow's RFQs are sized by this dollar budget instead of by LOT.
    budget: Decimal | None = None
    _confirmed: list[QuoteRecord] = field(default_factory=list)
    _next_market: int = 0

    @property
    def mock(self) -> MockExchange:
        return self.venue.mock

    @property
    def maker(self) -> User:
        return self.venue.maker

    # ------------------------------------------------------------------ exchange hooks

    def install(self) -> None:
        """Watch the maker's quote creations and confirmations inside the exchange."""
        exchange = self.mock.exchange
        create, confirm = exchange.create_quote, exchange.confirm_quote

        def create_quote(user: User, body: Any) -> QuoteRecord:
            quote = create(user, body)
            if user is self.maker:
                self.quote_times.append(time.monotonic())
            return quote

        def confirm_quote(user: User, quote_id: str, rfq_id: str | None = None) -> QuoteRecord:
            quote = confirm(user, quote_id, rfq_id)
            if user is self.maker:
                self._confirmed.append(quote)
                self.check_limits(quote)
            return quote

        # Instance attributes shadow the methods: the server calls through them.
        exchange.create_quote = create_quote  # type: ignore[method-assign]
        exchange.confirm_quote = confirm_quote  # type: ignore[method-assign]

    def maker_positions(self) -> dict[str, Decimal]:
        return {
            ticker: p.contracts
            for (uid, ticker), p in self.mock.exchange.positions.items()
            if uid == self.maker.user_id and p.contracts != 0
        }

    def check_limits(self, quote: QuoteRecord) -> None:
        """After a confirm: every limit as mmbot.risk counts it, from the exchange's books."""
        self.record.confirms_checked += 1
        ex = self.mock.exchange
        self._confirmed = [q for q in self._confirmed if q.status == "confirmed"]
        market = quote.rfq.market.ticker
        held = ex.positions.get((self.maker.user_id, market))
        committed = held.contracts if held is not None else Decimal(0)
        pending = [q for q in self._confirmed if q.rfq.market.ticker == market]
        long = committed + sum((max(_delta(q), Decimal(0)) for q in pending), Decimal(0))
        short = committed + sum((min(_delta(q), Decimal(0)) for q in pending), Decimal(0))
        exposure = sum(
            (p.cost for (uid, _), p in ex.positions.items() if uid == self.maker.user_id),
            Decimal(0),
        ) + sum((_max_loss(q) for q in self._confirmed), Decimal(0))
        loss = -sum(
            (p.realized_pnl for (uid, _), p in ex.positions.items() if uid == self.maker.user_id),
            Decimal(0),
        )
        assert quote.contracts_accepted is not None
        problems = []
        if quote.contracts_accepted > LIMITS["max_contracts_per_rfq"]:
            problems.append(f"{quote.contracts_accepted} contracts in one fill")
        if max(abs(long), abs(short)) > LIMITS["max_position_per_market"]:
            problems.append(f"{market}: position could reach {long} / {short}")
        if exposure > LIMITS["max_exposure_dollars"]:
            problems.append(f"exposure {exposure}")
        if loss > LIMITS["max_daily_loss_dollars"]:
            problems.append(f"realised loss {loss}")
        if problems:
            self.violations.append(f"confirm of {quote.id}: " + "; ".join(problems))

    # ------------------------------------------------------------------ the flow

    def _pending_exposure(self) -> tuple[Decimal, dict[str, Decimal]]:
        """Committed cost plus worst-case pending, and each market's position with pending."""
        ex = self.mock.exchange
        exposure = Decimal(0)
        effective = dict(self.maker_positions())
        for (uid, _), p in ex.positions.items():
            if uid == self.maker.user_id:
                exposure += p.cost
        dealt: set[str] = set()
        for rfq_id, market in list(self.flow_rfqs.items()):
            rfq = ex.rfqs.get(rfq_id)
            if rfq is None or rfq.status != "open":
                del self.flow_rfqs[rfq_id]
                continue
            for q in ex.quotes_on(rfq):
                if q.creator is self.maker and q.status in ("accepted", "confirmed"):
                    exposure += _max_loss(q)
                    effective[market] = effective.get(market, Decimal(0)) + _delta(q)
                    dealt.add(rfq_id)
            if rfq_id not in dealt:
                exposure += Decimal("0.5") * LOT  # the worse of the two sides, in flight
        return exposure, effective

    def new_rfq(
        self, market: SimMarket, wants: str, *, reservation: str = "0.99", flow: bool = True
    ) -> str:
        """A simulated requester asks for a lot; it accepts a quote up to ``reservation``."""
        driver = self.mock.driver
        requester = driver.open_requester_for(market.ticker)
        if requester is None:
            requester = self.mock.exchange.add_user(simulated=True)
            driver.add_requester(requester)
        plan = RfqPlan(
            requester=requester.user_id,
            market_ticker=market.ticker,
            contracts=LOT if self.budget is None or not flow else None,
            target_cost_dollars=self.budget if flow else None,
            rest_remainder=False,
            wants=wants,  # type: ignore[arg-type]
            reservation=Decimal(reservation),
            # The flow's RFQs live 1 s; one that is never accepted lives on.
            lifetime_seconds=RFQ_LIFETIME if flow else 10_000,
            decision_delay_seconds=DECISION_DELAY,
            partial_fraction=None,
        )
        rfq = self.mock.exchange.create_rfq(requester, rfq_body(plan))
        driver.track(rfq, plan, fixed_reservation=True)
        if flow:
            self.flow_rfqs[rfq.id] = market.ticker
        return rfq.id

    def tick(self) -> None:
        exposure, effective = self._pending_exposure()
        held = [m for m in self.markets if effective.get(m.ticker, Decimal(0)) != 0]
        if exposure >= FLOW_ADD_BELOW_DOLLARS:
            if not held:
                return
            market = self.rng.choice(held)
        else:
            market = self.markets[self._next_market % len(self.markets)]
            self._next_market += 1
        position = effective.get(market.ticker, Decimal(0))
        if exposure >= FLOW_ADD_BELOW_DOLLARS or abs(position) >= LOT:
            # wants "yes": the maker buys NO (short); "no": the maker buys YES (long).
            wants = "yes" if position > 0 else "no"
        else:
            wants = self.rng.choice(("yes", "no"))
        self.new_rfq(market, wants)

    async def flow(self) -> None:
        while True:
            await asyncio.sleep(FLOW_GAP_SECONDS)
            if self.flowing:
                self.tick()

    async def burst(self) -> None:
        """Six acceptances at once: 28 dollars of worst case against a 24 dollar limit."""
        x, y = self.markets[0], self.markets[1]
        for market, wants in ((x, "yes"), (x, "yes"), (x, "no"), (x, "no"), (y, "yes")):
            self.new_rfq(market, wants)
        self.new_rfq(y, "yes")
        await self.settled()

    # ------------------------------------------------------------------ waits and checks

    def deals_in_flight(self) -> list[QuoteRecord]:
        return [q for q in self.venue.maker_quotes() if q.status in ("accepted", "confirmed")]

    async def settled(self, within: float = 10.0) -> None:
        """Pause until no deal of the maker is accepted or confirmed on the exchange."""
        await asyncio.sleep(0.1)
        await eventually(lambda: not self.deals_in_flight(), "deals to settle", within)

    async def recovered(self, cleared: float, bound: float = RECOVERY_BOUND_SECONDS) -> float:
        """Seconds from ``cleared`` to the first quote the exchange received after it."""

        def first() -> float | None:
            after = [t for t in self.quote_times if t > cleared]
            return after[0] if after else None

        try:
            at = await eventually(first, "a new quote after the fault cleared", bound)
        except AssertionError:
            self.record.failed("quoting resumes")
            raise
        seconds = at - cleared
        self.record.recovery_seconds.append(seconds)
        self.record.held("quoting resumes")
        return seconds

    def journal_positions(self) -> dict[str, Decimal]:
        latest: dict[str, Decimal] = {}
        for row in journal_rows(self.journal, "position_changed"):
            latest[row["market"]] = Decimal(row["contracts"])
        return {market: n for market, n in latest.items() if n != 0}

    async def positions_agree(self, *, raise_as: type[AssertionError] = AssertionError) -> None:
        """With the flow paused and deals settled, the journal agrees with the exchange."""
        self.flowing = False
        await self.settled()
        try:
            await eventually(
                lambda: self.journal_positions() == self.maker_positions(),
                "the journal's positions to equal the exchange's",
                5,
            )
        except AssertionError:
            self.record.failed("journal = exchange")
            raise raise_as(
                f"journal {self.journal_positions()} != exchange {self.maker_positions()}"
            ) from None
        self.record.held("journal = exchange")

    def assert_limits_held(self) -> None:
        if self.violations:
            self.record.failed("risk limits")
        assert self.violations == [], self.violations
        self.record.held("risk limits")

    def assert_no_open_quote(self, what: str) -> None:
        left = [q.id for q in self.venue.open_maker_quotes()]
        if left:
            self.record.failed("no stale quote")
        assert left == [], f"open quotes of the maker {what}: {left}"
        self.record.held("no stale quote")

    def count_declines(self) -> None:
        for row in journal_rows(self.journal, "confirm_declined"):
            reason = row["reason"] or "?"
            self.record.risk_declines[reason] = self.record.risk_declines.get(reason, 0) + 1


def unhandled_errors(text: str) -> list[str]:
    """JSON log lines of the daemon that report an exception or an unhandled task."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("level") not in ("error", "critical"):
            continue
        logger = str(record.get("logger", ""))
        event = str(record.get("event", ""))
        if logger.startswith(("mmbot.mock", "aiohttp")):
            continue  # the exchange's side: a client hanging up mid-request, etc.
        if event in UNHANDLED or "exception" in record or "never retrieved" in event:
            found.append(line[:2000])
    return found


def assert_no_unhandled(record: ScenarioRecord, logs: str) -> None:
    # The capture itself works: the daemon's own records are in it.
    assert '"event":"daemon_started"' in logs.replace(" ", ""), "no daemon log captured"
    errors = unhandled_errors(logs)
    if errors:
        record.failed("no unhandled task error")
    assert errors == [], "\n".join(errors)
    record.held("no unhandled task error")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
async def chaos(
    record: ScenarioRecord,
    ed25519_key: TestKey,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> AsyncIterator[Chaos]:
    clear_mmbot_env(monkeypatch)
    config = MockConfig(
        seed=11, markets=30, rfq_rate=0.0, time_scale=TIME_SCALE, market_step_seconds=0
    )
    async with MockExchange(config) as mock:
        maker = mock.register_key(MAKER_KEY_ID, ed25519_key.public)
        venue = Venue(mock, maker, ed25519_key, [])
        harness = Chaos(venue, record, tmp_path / "journal.sqlite", venue.markets(MARKETS))
        harness.install()
        flow = asyncio.create_task(harness.flow())
        started = time.monotonic()
        try:
            yield harness
        finally:
            harness.flowing = False
            flow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flow
            record.seconds = time.monotonic() - started


def _daemons(chaos: Chaos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Daemons:
    return recording_daemons(chaos.venue, tmp_path, monkeypatch)


def daemon_settings(chaos: Chaos) -> dict[str, Any]:
    """Overrides of the e2e settings: the flat strategy on the flow's markets, tight limits."""
    return {
        "kalshi": {"retry_deadline_seconds": 3},
        "quotes": {"ttl_seconds": 2, "max_rfq_age_seconds": 2},
        "risk": {k: str(v) for k, v in LIMITS.items()} | {"max_open_quotes": 50},
        "strategies": {"routes": [{"match": [m.ticker for m in chaos.markets], "strategy": FLAT}]},
    }


@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Every log record of this process, as JSON lines, for the unhandled-error check."""
    buffer = io.StringIO()
    configure_logging("INFO", "json", buffer)
    # Kept at INFO for the daemon; the chatty exchange side need not be rendered.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    yield buffer


# ----------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Fault:
    """One kind of fault: how to inject it once, and when it has cleared."""

    name: str
    how: str
    times: int
    # Injects the fault; returns time.monotonic() of the moment it cleared.
    inject: Callable[[Chaos], Awaitable[float]]


async def _ws_drop(chaos: Chaos) -> float:
    assert await chaos.mock.drop_ws() >= 1
    return time.monotonic()


async def _refused_handshakes(chaos: Chaos) -> float:
    mock = chaos.mock
    mock.faults.update({"refuse_handshakes_seconds": 1.0})
    cleared = time.monotonic() + 1.0
    assert await mock.drop_ws() >= 1
    await asyncio.sleep(max(0.0, cleared - time.monotonic()))
    while mock.faults.refusing_handshakes():  # noqa: ASYNC110 - a deadline, no event
        await asyncio.sleep(0.01)
    return time.monotonic()


def _knob(name: str, value: float, seconds: float) -> Callable[[Chaos], Awaitable[float]]:
    return _knobs(dict.fromkeys((name,), value), seconds)


def _knobs(values: dict[str, float], seconds: float) -> Callable[[Chaos], Awaitable[float]]:
    async def inject(chaos: Chaos) -> float:
        chaos.mock.faults.update(values)
        await asyncio.sleep(seconds)
        chaos.mock.faults.update(dict.fromkeys(values, 0))
        return time.monotonic()

    return inject


async def _withdrawals_failing(chaos: Chaos) -> float:
    # Longer than one DELETE's own retries (2 s): TTL withdrawals must be retried.
    chaos.mock.faults.update({"delete_503_seconds": 2.5})
    await asyncio.sleep(2.5)
    # The last withdrawals retried over the window must land before quoting is judged.
    await eventually(
        lambda: not [q for q in chaos.venue.open_maker_quotes() if _overdue(q)],
        "quotes past their TTL withdrawn once deletes work again",
        RECOVERY_BOUND_SECONDS,
    )
    return time.monotonic()


def _overdue(quote: QuoteRecord) -> bool:
    """Open longer than the daemon's quote TTL (2 s) plus a withdrawal's retry cap."""
    age = (datetime.now(UTC) - quote.created_ts).total_seconds()
    return age > 2 + 2 + 1


async def _budget_sized_flow(chaos: Chaos) -> float:
    # Budget-sized RFQs report contracts_fp "0.00"; the daemon must size them by budget.
    chaos.budget = Decimal(4)
    await asyncio.sleep(1.5)
    chaos.budget = None
    return time.monotonic()


FAULTS = [
    Fault("WebSocket drop", "`drop_ws()` every 1.5 s", 4, _ws_drop),
    Fault(
        "refused handshakes",
        "`drop_ws()` with `refuse_handshakes_seconds=1`",
        3,
        _refused_handshakes,
    ),
    Fault("429 storm", "`write_429_fraction=1` for 1 s", 3, _knob("write_429_fraction", 1, 1.0)),
    Fault(
        "5xx on writes",
        "`write_5xx_fraction=0.3` for 1.5 s",
        3,
        _knob("write_5xx_fraction", 0.3, 1.5),
    ),
    Fault("latency spike", "`latency_ms=600` for 1.5 s", 3, _knob("latency_ms", 600, 1.5)),
    Fault(
        "malformed frames",
        "`malformed_fraction=0.3` for 1.5 s",
        3,
        _knob("malformed_fraction", 0.3, 1.5),
    ),
    Fault(
        "duplicated frames",
        "`duplicate_fraction=0.3` for 1.5 s",
        3,
        _knob("duplicate_fraction", 0.3, 1.5),
    ),
    Fault(
        "reordered frames",
        "`reorder_fraction=0.3` for 1.5 s",
        3,
        _knob("reorder_fraction", 0.3, 1.5),
    ),
    Fault(
        "failed withdrawals",
        "`delete_503_seconds=2.5`: every quote DELETE answers 503",
        3,
        _withdrawals_failing,
    ),
    Fault(
        "tampered acceptances",
        "`tamper_accept_{price,size,market}_fraction=0.3` for 1.5 s",
        3,
        _knobs(
            {
                "tamper_accept_price_fraction": 0.3,
                "tamper_accept_size_fraction": 0.3,
                "tamper_accept_market_fraction": 0.3,
            },
            1.5,
        ),
    ),
    Fault(
        "target-cost RFQs",
        'the flow\'s RFQs sized by a $4 budget (`contracts_fp` "0.00") for 1.5 s',
        3,
        _budget_sized_flow,
    ),
]
KILL_9 = (
    "kill -9 and restart",
    "SIGKILL of a `python -m mmbot run` child mid-flow (an open quote, another accepted with "
    "its confirm in flight), then a restart",
)
KILL_9_CONFIRMED = (
    "kill -9 on a confirmed quote",
    "SIGKILL right after a confirm; the fill executes before the restart",
)


@pytest.fixture
def record(request: pytest.FixtureRequest) -> ScenarioRecord:
    param: Fault | tuple[str, str] = request.param
    made = (
        ScenarioRecord(param.name, param.how)
        if isinstance(param, Fault)
        else ScenarioRecord(*param)
    )
    RECORDS[made.fault] = made
    return made


@pytest.mark.parametrize(
    ("record", "fault"), [(f, f) for f in FAULTS], ids=[f.name for f in FAULTS], indirect=["record"]
)
async def test_fault_during_steady_flow(
    record: ScenarioRecord,
    fault: Fault,
    chaos: Chaos,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    daemons = _daemons(chaos, tmp_path, monkeypatch)
    with captured_logs() as logs:
        async with daemons.running(daemons.settings(**daemon_settings(chaos))):
            await chaos.burst()
            chaos.flowing = True
            await eventually(lambda: chaos.mock.exchange.fills, "a first execution")
            for _ in range(fault.times):
                chaos.flowing = True
                await asyncio.sleep(0.5)  # steady flow before the fault
                cleared = await fault.inject(chaos)
                record.injections += 1
                await chaos.recovered(cleared)
                await asyncio.sleep(0.5)  # and after it
                chaos.assert_limits_held()
                await chaos.positions_agree()
            chaos.flowing = False
            await chaos.settled()
        chaos.assert_no_open_quote("after shutdown")
        await chaos.positions_agree()
        chaos.assert_limits_held()
        chaos.count_declines()
        assert record.risk_declines, "the burst should have met a risk limit"
        gc.collect()
        await asyncio.sleep(0)
        assert_no_unhandled(record, logs.getvalue())


async def _kill_point(chaos: Chaos) -> list[QuoteRecord]:
    """Arrange an open quote and an accepted, unconfirmed one; return the open quotes.

    The flow pauses and every deal settles first, so no confirmed quote can execute while
    no daemon runs (that case is the known bug shown by
    ``test_a_fill_executed_while_the_daemon_is_down_reaches_the_journal``). Then every REST
    answer takes 0.5 s, so the confirm of the new acceptance is still in flight.
    """
    chaos.flowing = False
    await chaos.settled()
    market = chaos.markets[0]
    # Towards flat: the maker buys NO when long, YES otherwise.
    wants = "yes" if chaos.maker_positions().get(market.ticker, Decimal(0)) > 0 else "no"
    chaos.mock.faults.update({"latency_ms": 500})
    accepting = chaos.new_rfq(market, wants)
    # A requester that pays at most a cent never accepts: its quote stays open.
    lingering = chaos.new_rfq(chaos.markets[-1], "yes", reservation="0.01", flow=False)
    await eventually(
        lambda: [q for q in chaos.venue.maker_quotes(accepting) if q.status == "accepted"],
        "an accepted, unconfirmed quote",
        10,
    )
    await chaos.venue.open_quote(lingering, within=10)
    return chaos.venue.open_maker_quotes()


def _subprocess_config(chaos: Chaos, tmp_path: Path) -> Path:
    extra = daemon_settings(chaos)
    extra["kalshi"] |= {"ws_reconnect_min_seconds": 0.05, "ws_reconnect_max_seconds": 0.2}
    extra["log"] = {"level": "INFO", "format": "json"}
    return subprocess_config(tmp_path / "mmbot.toml", chaos.journal, extra)


def _starts(chaos: Chaos) -> int:
    return len(journal_rows(chaos.journal, "reconciled", reason="start"))


@pytest.mark.parametrize("record", [KILL_9], ids=["kill -9"], indirect=True)
async def test_kill_9_mid_flow_and_restart(
    record: ScenarioRecord,
    chaos: Chaos,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = _subprocess_config(chaos, tmp_path)
    env = daemon_env(chaos.venue)
    outputs: list[str] = []
    open_at_kill: list[QuoteRecord] = []

    async def restarted(before: int, spawned: float) -> None:
        """The new run reconciled: no quote of the killed run is open; it quotes again."""
        await eventually(lambda: _starts(chaos) > before, "the restart's reconciliation", 30)
        stale = [q.id for q in open_at_kill if q.status == "open"]
        if stale:
            record.failed("no stale quote")
        assert stale == [], f"quotes of the killed run still open after reconciling: {stale}"
        record.held("no stale quote")
        chaos.flowing = True
        if open_at_kill:
            await chaos.recovered(spawned, RESTART_RECOVERY_BOUND_SECONDS)

    chaos.flowing = True
    for run in range(2):
        before, spawned = _starts(chaos), time.monotonic()
        async with daemon_process(["run", "--config", str(config)], cwd=tmp_path, env=env) as child:
            await restarted(before, spawned)
            if run == 0:
                await chaos.burst()
                chaos.flowing = True
            await asyncio.sleep(1.5)  # steady flow
            open_at_kill[:] = await _kill_point(chaos)
            child.process.send_signal(signal.SIGKILL)
            record.injections += 1
            assert await child.exit_code() == -signal.SIGKILL
            chaos.mock.faults.update({"latency_ms": 0})
            outputs.append(await child.text())
        chaos.assert_limits_held()

    daemons = _daemons(chaos, tmp_path, monkeypatch)
    with captured_logs() as logs:
        before, spawned = _starts(chaos), time.monotonic()
        async with daemons.running(daemons.settings(**daemon_settings(chaos))):
            await restarted(before, spawned)
            await asyncio.sleep(1.5)
            chaos.assert_limits_held()
            await chaos.positions_agree()
        chaos.assert_no_open_quote("after shutdown")
        await chaos.positions_agree()
        chaos.assert_limits_held()
        chaos.count_declines()
        gc.collect()
        await asyncio.sleep(0)
        assert_no_unhandled(record, "\n".join([*outputs, logs.getvalue()]))


@pytest.mark.parametrize("record", [KILL_9_CONFIRMED], ids=["confirmed"], indirect=True)
# Regression: a fill confirmed by a run killed before it executed reached the next run's
# risk book through reconciliation but no position_changed row, so the journal's
# positions stayed behind the exchange's.
async def test_a_fill_executed_while_the_daemon_is_down_reaches_the_journal(
    record: ScenarioRecord,
    chaos: Chaos,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = _subprocess_config(chaos, tmp_path)
    market = chaos.markets[0]
    async with daemon_process(
        ["run", "--config", str(config)], cwd=tmp_path, env=daemon_env(chaos.venue)
    ) as child:
        await eventually(lambda: _starts(chaos) > 0, "the daemon to start", 30)
        rfq_id = chaos.new_rfq(market, "no")  # the maker buys 10 YES at 0.40
        (quote,) = await eventually(
            lambda: [q for q in chaos.venue.maker_quotes(rfq_id) if q.status == "confirmed"],
            "the confirm",
            10,
        )
        child.process.send_signal(signal.SIGKILL)
        record.injections += 1
        assert await child.exit_code() == -signal.SIGKILL
    # It executes 0.75 s after its confirm, while no daemon runs.
    await eventually(lambda: status(quote) == "executed", "the execution", 5)
    assert chaos.maker_positions() == {market.ticker: LOT}

    daemons = _daemons(chaos, tmp_path, monkeypatch)
    async with daemons.running(daemons.settings(**daemon_settings(chaos))) as daemon:
        await daemon.row("reconciled", reason="start")
        # The daemon's own book has it, from the exchange...
        assert daemon.engine.risk.position(market.ticker) == LOT
        # ...the journal does not.
        await chaos.positions_agree(raise_as=JournalMismatch)


# ----------------------------------------------------------------------------- unread pipes
# (Imports are local below: this section is appended to a suite whose header others edit.)

UNREAD_PIPES = (
    "unread output pipes",
    "stdout and stderr of a `python -m mmbot run` child are pipes nobody reads (DEBUG logs, "
    "a status line every 2 ms): both fill and stay full",
)
# A quote's time to live in this scenario, and how long past it the withdrawal may take.
SHORT_TTL_SECONDS = 1.0
WITHDRAWAL_BOUND_SECONDS = 5.0
# The child imports the test strategy (FLAT) from this checkout.
_REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    """A loopback port that was free a moment ago (the daemon's /healthz listens on it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pipe_bytes(read_end: int) -> tuple[int, int]:
    """(bytes waiting in the pipe, its capacity)."""
    import fcntl
    import struct
    import termios

    # F_GETPIPE_SZ is Linux's; elsewhere a pipe holds 64 KiB as well.
    capacity = getattr(fcntl, "F_GETPIPE_SZ", None)
    capacity = 65536 if capacity is None else fcntl.fcntl(read_end, capacity)
    (available,) = struct.unpack("i", fcntl.ioctl(read_end, termios.FIONREAD, b"\0" * 4))
    return available, capacity


async def _wait_until_pipe_full(read_end: int, port: int) -> None:
    """Wait until the pipe takes no more from a writer that keeps writing; /healthz answers.

    Full is "stopped growing", not "within PIPE_BUF of capacity": Linux keeps a pipe in
    page-sized buffers and starts a new one for a write that does not fit the last, so
    writes of a few KiB leave it blocked with several KiB free.
    """
    last, still = -1, 0
    while still < 20:  # two seconds without growth (a status line comes every 2 ms)
        assert (await _get(port, "/healthz"))[0] == 200
        await asyncio.sleep(0.1)
        available, capacity = _pipe_bytes(read_end)
        still = still + 1 if available == last and available > capacity // 2 else 0
        last = available


async def _get(port: int, path: str) -> tuple[int, str]:
    """GET a path of the daemon's metrics server; a daemon that never answers fails the test."""
    import httpx

    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            response = await http.get(f"http://127.0.0.1:{port}{path}")
    except httpx.TimeoutException:
        pytest.fail(f"{path} did not answer within 5 s: the daemon's event loop is stalled")
    return response.status_code, response.text


async def _lines_dropped(port: int) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    _, body = await _get(port, "/metrics")
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "mmbot_log_records_dropped_total":
                return float(sample.value)
    raise AssertionError("mmbot_log_records_dropped_total is not exposed")


@pytest.mark.parametrize("record", [UNREAD_PIPES], ids=["unread pipes"], indirect=True)
async def test_output_pipes_nobody_reads_do_not_stall_the_daemon(
    record: ScenarioRecord, chaos: Chaos, tmp_path: Path
) -> None:
    # Regression: logs and the status line were written on the event loop, so once a pipe
    # nobody read was full (64 KiB) the loop froze: quotes outlived their TTL, the kill
    # switch went unseen and /healthz stopped answering.
    kill = tmp_path / "KILL"
    port = _free_port()
    # Markets beyond the flow's, so the flow's positions cannot stop them being quoted: on
    # one quotes live for the configured TTL, on the others until the kill switch acts.
    ttl_market, *lasting_markets = chaos.venue.markets(MARKETS + 3)[MARKETS:]
    extra = daemon_settings(chaos)
    extra["kalshi"] |= {"ws_reconnect_min_seconds": 0.05, "ws_reconnect_max_seconds": 0.2}
    extra["quotes"] |= {"ttl_seconds": SHORT_TTL_SECONDS}
    extra["risk"] |= {"kill_switch_file": str(kill)}
    extra["strategies"]["routes"] += [
        {"match": [ttl_market.ticker], "strategy": FLAT},
        {
            "match": [m.ticker for m in lasting_markets],
            "strategy": FLAT,
            "params": {"ttl_seconds": 600},
        },
    ]
    extra["log"] = {"level": "DEBUG", "format": "json"}
    extra["run"] = {"status_interval_seconds": 0.002}
    config = subprocess_config(tmp_path / "mmbot.toml", chaos.journal, extra)
    env = {
        **daemon_env(chaos.venue),
        "MMBOT_METRICS__PORT": str(port),
        "PYTHONPATH": str(_REPO),
    }

    # Bare pipes rather than asyncio.subprocess.PIPE: asyncio's transport would go on
    # reading into memory up to its high-water mark; a pipe nobody reads is the fault here.
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mmbot",
            "run",
            "--config",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out_write,
            stderr=err_write,
            cwd=tmp_path,
            env=env,
        )
    finally:
        os.close(out_write)
        os.close(err_write)
    try:
        chaos.flowing = True
        await eventually(lambda: _starts(chaos) > 0, "the daemon to start", 30)
        for name, read_end in (("stdout", out_read), ("stderr", err_read)):
            # The daemon must go on answering while its output backs up.
            async with asyncio.timeout(60):
                await _wait_until_pipe_full(read_end, port)
            record.injections += 1
            await chaos.recovered(time.monotonic())
            assert (await _get(port, "/healthz"))[0] == 200, f"with {name} full"
        # From here on neither pipe has room for a line: every write the daemon makes to
        # them would block. The flow pauses, so its deals cannot hold the risk limits.
        chaos.flowing = False
        await chaos.settled()

        # A quote is withdrawn at its TTL.
        rfq_id = chaos.new_rfq(ttl_market, "yes", reservation="0.01", flow=False)
        quote = await chaos.venue.open_quote(rfq_id, within=10)
        await eventually(
            lambda: status(quote) != "open",
            f"the quote to be withdrawn after its {SHORT_TTL_SECONDS} s TTL",
            SHORT_TTL_SECONDS + WITHDRAWAL_BOUND_SECONDS,
        )
        assert quote.cancellation_reason == "deleted by creator"
        assert await eventually(
            lambda: journal_rows(chaos.journal, "quote_deleted", quote_id=quote.id, reason="ttl"),
            "the journal's quote_deleted (ttl)",
        )

        # The kill switch withdraws every open quote.
        lasting = [
            await chaos.venue.open_quote(
                chaos.new_rfq(market, "yes", reservation="0.01", flow=False), within=10
            )
            for market in lasting_markets
        ]
        kill.touch()
        await eventually(
            lambda: not chaos.venue.open_maker_quotes(),
            "the kill switch to withdraw every open quote",
            WITHDRAWAL_BOUND_SECONDS,
        )
        for lasted in lasting:
            await eventually(
                lambda q=lasted: journal_rows(
                    chaos.journal, "quote_deleted", quote_id=q.id, reason="kill_switch"
                ),
                f"the journal's quote_deleted (kill_switch) of {lasted.id}",
            )
        assert (await _get(port, "/healthz"))[0] == 200

        # What could not be written is counted, and the count is scraped.
        async with asyncio.timeout(60):
            while (dropped := await _lines_dropped(port)) == 0:  # noqa: ASYNC110 - polled
                await asyncio.sleep(0.2)
        chaos.assert_limits_held()
        await chaos.positions_agree()

        # Shutting down does not wait on a consumer that never reads.
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await process.wait()
        assert code == 0
        chaos.assert_no_open_quote("after shutdown")
        record.note = f"{dropped:.0f} lines dropped and counted while the pipes were full"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        os.close(out_read)
        os.close(err_read)
