"""Replaying strategies over a recording, through exactly the daemon's pricing and risk.

Each RFQ of the recording is priced by :func:`mmbot.quoting.pricing.price_quote`, the
function the daemon calls: strategy, grid and min-edge shaping, pre-trade risk. Fills go
through the daemon's :class:`~mmbot.risk.RiskBook` (reserve at the acceptance, commit at
the execution, fees charged with :class:`~mmbot.fees.FeeModel`), so positions, exposure
and the daily loss evolve with the replayed fills and limit later quotes as they would
have live. The replay is deterministic: one pass in time order, the risk book's clock set
to each event's recorded time, ties broken by order of arrival.

Fill models (what a requester would have done with the replayed quote):

``markout``
    No fills. Every quote is scored by its edge against the mid at each horizon.
``recorded``
    The recorded acceptances, replayed: a replayed quote is accepted when the recorded
    quote was accepted on that side and the replayed price there is at least as good for
    the requester (our bid at least as high). Size, timing and whether the exchange
    executed come from the recording. A pessimistic bound: a better price can win flow
    the recording never saw accepted.
``threshold``
    The requester accepts as soon as the quote is sent when a bid is within
    ``requester_edge`` of what its side is worth at a horizon's mid (the first horizon,
    unless set): it pays up to that much a contract for an RFQ's immediacy, as the mock's
    requesters do, and takes the side that costs it least. An optimistic bound: every
    quote good enough fills, and no requester knows more than the mid.

Every acceptance gets the daemon's last look (:mod:`mmbot.lastlook`, with
``quotes.last_look`` and ``last_look_tolerance`` from the settings) against the latest
recorded mid no later than it, the strategy's own ``confirm`` included; a declined one is
marked ``declined:last_look`` and counted in the summary's ``last_look_declines``.

Markets that settle (the recording's ``settlements``) settle positions at 0 or 1.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal

import orjson

from mmbot.config import Settings
from mmbot.daemon import risk_limits
from mmbot.fees import FeeModel
from mmbot.kalshi.models import MakerFill, MveLeg, PriceRange, Rfq
from mmbot.lastlook import AcceptInfo, safe_confirm
from mmbot.quoting.pricing import Decline, contracts_for, price_quote, sized
from mmbot.research.recording import Recording, collector_paused
from mmbot.risk import RiskBook
from mmbot.strategy import FillInfo, MarketView, StrategyRouter

__all__ = [
    "FILL_MODELS",
    "FillModel",
    "Flow",
    "LabelResult",
    "ReplayError",
    "flow_of",
    "replay",
]

FILL_MODELS: Final = ("markout", "recorded", "threshold")
FillModelName = Literal["markout", "recorded", "threshold"]

_ZERO: Final = Decimal(0)
_ONE: Final = Decimal(1)
_TWO: Final = Decimal(2)
#: The marked-to-market P&L of every position is recomputed at most this often (recording
#: time): summing every market on every RFQ would cost more than the pricing.
_MTM_EVERY: Final = timedelta(seconds=1)


class ReplayError(Exception):
    """A replay cannot run as asked (a fill model's horizon is not in the recording, say)."""


@dataclass(frozen=True)
class FillModel:
    """Which fill model, and the threshold model's requester edge and horizon."""

    name: FillModelName = "markout"
    requester_edge: Decimal = Decimal("0.02")
    horizon: int | None = None  # threshold: the mid to judge against (None: the first)


@dataclass(slots=True)
class _Recorded:
    """One recorded RFQ, as the replay reads it (built once, shared by every strategy)."""

    ts: datetime
    rfq: Rfq
    market: str
    event: str | None
    view: MarketView | None  # position 0: each replay sets its own
    mid: Decimal | None
    recorded_decision: str
    recorded_closed: datetime | None
    accepted_ts: datetime | None
    accepted_side: str | None
    accepted_price: Decimal | None
    accepted_contracts: Decimal | None
    confirm: str | None
    executed: Decimal | None
    mids: tuple[Decimal | None, ...]
    fair: Decimal | None


@dataclass
class Flow:
    """A recording made ready for replay: its RFQs and settlements, in time order."""

    rows: list[_Recorded]
    settlements: list[tuple[datetime, str, Decimal]]
    horizons: tuple[int, ...]
    has_fair_value: bool


@dataclass
class LabelResult:
    """One strategy's replay: a row per RFQ (as columns) and the summary figures."""

    label: str
    columns: dict[str, list[Any]]
    summary: dict[str, Any]


def flow_of(recording: Recording) -> Flow:
    """Read a recording's rows into the replay's form (once, for every strategy)."""
    with collector_paused():
        return _flow_of(recording)


def _flow_of(recording: Recording) -> Flow:
    table = recording.rfqs
    col = {name: table.column(name).to_pylist() for name in _COLUMNS}
    horizons = recording.horizons
    # One tuple of horizon mids per row, built by zip in C rather than per row in Python.
    mids_by_row = list(zip(*(table.column(f"mid_{h}s").to_pylist() for h in horizons), strict=True))
    fair = table.column("fair_value").to_pylist() if recording.has_fair_value else None
    grids: dict[str, tuple[PriceRange, ...]] = {}
    rows: list[_Recorded] = []
    template = Rfq.model_validate({"id": "", "market_ticker": ""})
    fairs = fair if fair is not None else [None] * table.num_rows
    columns = [col[name] for name in _COLUMNS]
    for values, mids, fair_value in zip(
        zip(*columns, strict=True), mids_by_row, fairs, strict=True
    ):
        (
            ts,
            rfq_id,
            market,
            event,
            creator_id,
            contracts,
            target_cost,
            legs,
            view_yes_bid,
            view_yes_ask,
            view_last,
            view_age_s,
            view_stale,
            view_hvm,
            grid_text,
            decision,
            closed_ts,
            accepted_ts,
            accepted_side,
            accepted_price,
            accepted_contracts,
            confirm,
            executed,
        ) = values
        view: MarketView | None = None
        if grid_text is not None:
            grid = grids.get(grid_text)
            if grid is None:
                grid = tuple(
                    PriceRange.model_construct(start=Decimal(a), end=Decimal(b), step=Decimal(c))
                    for a, b, c in orjson.loads(grid_text)
                )
                grids[grid_text] = grid
            view = MarketView(
                ticker=market,
                event_ticker=event or "",
                yes_bid=_norm(view_yes_bid),
                yes_ask=_norm(view_yes_ask),
                last_price=_norm(view_last),
                price_ranges=grid,
                hvm=bool(view_hvm),
                age_seconds=view_age_s or 0.0,
                stale=bool(view_stale),
            )
        # A copy of a template skips validation and defaults: the recording holds what the
        # daemon already validated, and model_construct costs six times as much.
        rfq = template.model_copy(
            update={
                "id": rfq_id,
                "creator_id": creator_id or "",
                "market_ticker": market,
                "event_ticker": event,
                "contracts_fp": _norm(contracts),
                "target_cost_dollars": _norm(target_cost),
                "mve_selected_legs": _legs(legs),
            }
        )
        rows.append(
            _Recorded(
                ts=ts,
                rfq=rfq,
                market=market,
                event=event,
                view=view,
                mid=view.mid if view is not None else None,
                recorded_decision=decision,
                recorded_closed=closed_ts,
                accepted_ts=accepted_ts,
                accepted_side=accepted_side,
                accepted_price=_norm(accepted_price),
                accepted_contracts=_norm(accepted_contracts),
                confirm=confirm,
                executed=_norm(executed),
                mids=mids,
                fair=fair_value,
            )
        )
    settle = recording.settlements
    settlements = [
        (when, market, value)
        for when, market, value in zip(
            settle.column("ts").to_pylist(),
            settle.column("market").to_pylist(),
            [_norm(v) for v in settle.column("yes_value").to_pylist()],
            strict=True,
        )
        if value is not None
    ]
    return Flow(rows, settlements, horizons, recording.has_fair_value)


_COLUMNS: Final = (
    "ts",
    "rfq_id",
    "market",
    "event",
    "creator_id",
    "contracts",
    "target_cost",
    "legs",
    "view_yes_bid",
    "view_yes_ask",
    "view_last",
    "view_age_s",
    "view_stale",
    "view_hvm",
    "price_grid",
    "decision",
    "closed_ts",
    "accepted_ts",
    "accepted_side",
    "accepted_price",
    "accepted_contracts",
    "confirm",
    "executed_contracts",
)


def _norm(value: Decimal | None) -> Decimal | None:
    """A stored decimal without the column's trailing zeros (0.29000000 reads as 0.29)."""
    if value is None:
        return None
    return value.normalize() if value else _ZERO


def _legs(text: str | None) -> tuple[MveLeg, ...]:
    if not text:
        return ()
    return tuple(MveLeg.model_validate(leg) for leg in orjson.loads(text))


# --------------------------------------------------------------------------- the replay

_CLOSE: Final = 0
_ACCEPT: Final = 1
_EXECUTE: Final = 2
_SETTLE: Final = 3


class _Replay:
    """The state of one strategy's replay."""

    def __init__(
        self,
        flow: Flow,
        label: str,
        router: StrategyRouter,
        settings: Settings,
        fill_model: FillModel,
        fees: FeeModel,
    ) -> None:
        self.flow = flow
        self.label = label
        self.router = router
        self.settings = settings
        self.model = fill_model
        self.fees = fees
        self.now = flow.rows[0].ts if flow.rows else datetime.now().astimezone()
        self.risk = RiskBook(risk_limits(settings), clock=lambda: self.now)
        self.events: list[tuple[datetime, int, int, Any]] = []
        self.seq = 0
        self.open: set[int] = set()
        self.realized = _ZERO
        self.fees_paid = _ZERO
        self.fills = 0
        self.quoted = 0
        self.errors = 0
        self.first_error: str | None = None
        self.mtm = _ZERO
        self.mtm_at: datetime | None = None
        self.threshold_index = 0
        self.last_look_declines = 0
        if fill_model.name == "threshold":
            horizon = fill_model.horizon if fill_model.horizon is not None else flow.horizons[0]
            if horizon not in flow.horizons:
                raise ReplayError(
                    f"threshold horizon {horizon}s is not recorded (horizons: "
                    f"{', '.join(str(h) for h in flow.horizons)})"
                )
            self.threshold_index = flow.horizons.index(horizon)
        n = len(flow.rows)
        names = [
            "ts",
            "rfq_id",
            "market",
            "rfq_contracts",
            "decision",
            "reason",
            "yes_bid",
            "no_bid",
            "mid",
            "filled_side",
            "filled_contracts",
            "fill_price",
            "fee",
            "realized_pnl",
            "mtm_pnl",
            "position",
        ]
        names += [f"markout_{h}s" for h in flow.horizons]
        names += [f"fill_markout_{h}s" for h in flow.horizons]
        if flow.has_fair_value:
            names += ["fair_value", "fair_markout"]
        self.columns: dict[str, list[Any]] = {name: [None] * n for name in names}
        self.columns["label"] = [label] * n
        # The horizon columns, looked up once rather than by name for every RFQ.
        self._markout_columns = [self.columns[f"markout_{h}s"] for h in flow.horizons]
        self._fill_markout_columns = [self.columns[f"fill_markout_{h}s"] for h in flow.horizons]

    def _push(self, when: datetime, kind: int, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, kind, payload))

    def _until(self, when: datetime | None) -> None:
        events = self.events
        while events and (when is None or events[0][0] <= when):
            at, _, kind, payload = heapq.heappop(events)
            if at > self.now:
                self.now = at
            if kind == _CLOSE:
                self.open.discard(payload)
            elif kind == _ACCEPT:
                self._accept(*payload)
            elif kind == _EXECUTE:
                self._execute(*payload)
            else:
                self._settle(*payload)

    def _booked(self, change: Callable[[], object]) -> None:
        """Apply a change to the risk book and add what it realised to the running total."""
        before = self.risk.realized_pnl_today()
        change()
        self.realized += self.risk.realized_pnl_today() - before

    def _settle(self, market: str, value: Decimal) -> None:
        self._booked(lambda: self.risk.settle(market, value))

    def _accept(self, index: int, side: str, contracts: Decimal, outcome: tuple[Any, ...]) -> None:
        if index not in self.open:
            return  # closed (expired) before the acceptance came
        self.open.discard(index)
        cols = self.columns
        price = cols["yes_bid"][index] if side == "yes" else cols["no_bid"][index]
        rec = self.flow.rows[index]
        fill = MakerFill(side=side, price=price, contracts=contracts)  # type: ignore[arg-type]
        quote_id = rec.rfq.id
        if self.settings.quotes.last_look:
            refused = self._last_look(index, rec, fill)
            if refused is not None:
                cols["reason"][index] = f"declined:{refused}"
                self.last_look_declines += 1
                return
        decision = self.risk.reserve(quote_id, rec.market, fill)
        if not decision.ok:
            cols["reason"][index] = f"declined:{decision.reason}"
            return
        executed, at = outcome
        if executed is not None and executed <= 0:
            # The exchange never executed the confirmed quote (voided): nothing is bought.
            self._push(at or self.now, _EXECUTE, (index, _ZERO))
            return
        self._push(at or self.now, _EXECUTE, (index, executed))

    def _last_look(self, index: int, rec: _Recorded, fill: MakerFill) -> str | None:
        """The daemon's last look at an acceptance, on the mids the recording holds.

        The market at the acceptance is the latest recorded mid no later than it: the
        view's mid, then each horizon's as it passes. Returns the decline reason, or None.
        """
        strategy = self.router.route(rec.market, rec.event)
        offset = (self.now - rec.ts).total_seconds()
        mid = rec.mid
        for horizon, later in zip(self.flow.horizons, rec.mids, strict=True):
            if horizon <= offset and later is not None:
                mid = later
        if strategy is None or rec.view is None or mid is None:
            return "stale_market_data"
        accept = AcceptInfo(
            quote_id=rec.rfq.id,
            rfq_id=rec.rfq.id,
            market_ticker=rec.market,
            side=fill.side,
            price=fill.price,
            contracts=fill.contracts,
            reference=rec.mid,
            quoted_seconds_ago=max(0.0, offset),
            tolerance=self.settings.quotes.last_look_tolerance,
        )
        # Only the mid is known at the acceptance: the view carries it as the last price.
        now = dataclasses.replace(
            rec.view,
            yes_bid=None,
            yes_ask=None,
            last_price=mid,
            age_seconds=0.0,
            stale=False,
            position=self.risk.position(rec.market),
        )
        ok, _, exc = safe_confirm(strategy, accept, now)
        if ok:
            return None
        return "strategy_error" if exc is not None else "last_look"

    def _execute(self, index: int, contracts: Decimal | None) -> None:
        rec = self.flow.rows[index]
        quote_id = rec.rfq.id
        if contracts is not None and contracts == 0:
            self.risk.release(quote_id)
            return
        applied: list[MakerFill | None] = []
        self._booked(lambda: applied.append(self.risk.commit(quote_id, contracts)))
        fill = applied[0]
        if fill is None or fill.contracts <= 0:
            return
        fee = self.fees.fill_fee(fill.price, fill.contracts)
        if fee:
            self._booked(lambda: self.risk.record_fee(fee))
        self.fees_paid += fee
        self.fills += 1
        cols = self.columns
        cols["filled_side"][index] = fill.side
        cols["filled_contracts"][index] = fill.contracts
        cols["fill_price"][index] = fill.price
        cols["fee"][index] = fee
        for mid, column in zip(rec.mids, self._fill_markout_columns, strict=True):
            if mid is not None:
                value = mid if fill.side == "yes" else _ONE - mid
                column[index] = value - fill.price
        strategy = self.router.route(rec.market, rec.event)
        if strategy is not None:
            try:
                strategy.on_fill(
                    FillInfo(
                        quote_id=quote_id,
                        rfq_id=quote_id,
                        market_ticker=rec.market,
                        side=fill.side,
                        price=fill.price,
                        contracts=fill.contracts,
                    )
                )
            except Exception:
                self.errors += 1

    def run(self) -> LabelResult:
        flow = self.flow
        for when, market, value in flow.settlements:
            self._push(when, _SETTLE, (market, value))
        cols = self.columns
        quotes = self.settings.quotes
        default_ttl = timedelta(seconds=quotes.ttl_seconds)
        for index, rec in enumerate(flow.rows):
            self._until(rec.ts)
            if rec.ts > self.now:
                self.now = rec.ts
            cols["ts"][index] = rec.ts
            cols["rfq_id"][index] = rec.rfq.id
            cols["market"][index] = rec.market
            cols["rfq_contracts"][index] = rec.rfq.contracts_fp
            cols["mid"][index] = rec.mid
            if flow.has_fair_value:
                cols["fair_value"][index] = rec.fair
            self._price(index, rec, default_ttl)
            cols["realized_pnl"][index] = self.realized
            cols["position"][index] = self.risk.position(rec.market)
            if self.mtm_at is None or rec.ts - self.mtm_at >= _MTM_EVERY:
                self.mtm = self.risk.unrealized_pnl()
                self.mtm_at = rec.ts
            cols["mtm_pnl"][index] = self.mtm
        self._until(None)
        self.mtm = self.risk.unrealized_pnl()
        if cols["mtm_pnl"]:
            cols["mtm_pnl"][-1] = self.mtm
            cols["realized_pnl"][-1] = self.realized
        return LabelResult(self.label, cols, self._summary())

    def _price(self, index: int, rec: _Recorded, default_ttl: timedelta) -> None:
        cols = self.columns
        cols["decision"][index] = "skipped"
        if rec.mid is not None:
            self.risk.mark(rec.market, rec.mid)
        if not sized(rec.rfq):
            cols["reason"][index] = "invalid_size"
            return
        strategy = self.router.route(rec.market, rec.event)
        if strategy is None:
            cols["reason"][index] = "unrouted_market"
            return
        base = rec.view
        view = None
        if base is not None:
            view = MarketView(
                ticker=base.ticker,
                event_ticker=base.event_ticker,
                yes_bid=base.yes_bid,
                yes_ask=base.yes_ask,
                last_price=base.last_price,
                price_ranges=base.price_ranges,
                hvm=base.hvm,
                age_seconds=base.age_seconds,
                stale=base.stale,
                position=self.risk.position(rec.market),
            )
        priced = price_quote(
            rec.rfq,
            strategy,
            view,
            self.risk,
            open_quotes=len(self.open),
            min_edge=self.settings.quotes.min_edge,
        )
        if isinstance(priced, Decline):
            cols["reason"][index] = priced.reason
            if priced.reason == "strategy_error":
                self.errors += 1
                if self.first_error is None:
                    self.first_error = priced.detail
            return
        yes, no, _, ttl = priced
        self.quoted += 1
        cols["decision"][index] = "quoted"
        cols["reason"][index] = ""
        cols["yes_bid"][index] = yes
        cols["no_bid"][index] = no
        self._markouts(index, rec, yes, no)
        self.open.add(index)
        life = timedelta(seconds=ttl) if ttl is not None else default_ttl
        closes = rec.ts + life
        if rec.recorded_decision == "quoted" and rec.recorded_closed is not None:
            # The RFQ's own life: a quote lapses with the RFQ it answers.
            closes = min(closes, rec.recorded_closed)
        self._push(closes, _CLOSE, index)
        self._fill(index, rec, yes, no)

    def _markouts(self, index: int, rec: _Recorded, yes: Decimal, no: Decimal) -> None:
        for mid, column in zip(rec.mids, self._markout_columns, strict=True):
            if mid is not None:
                column[index] = _quote_edge(yes, no, mid)
        if rec.fair is not None:
            self.columns["fair_markout"][index] = _quote_edge(yes, no, rec.fair)

    def _fill(self, index: int, rec: _Recorded, yes: Decimal, no: Decimal) -> None:
        model = self.model.name
        if model == "recorded":
            side = rec.accepted_side
            if side not in ("yes", "no") or rec.accepted_ts is None:
                return
            ours = yes if side == "yes" else no
            theirs = rec.accepted_price
            if ours <= 0 or theirs is None or ours < theirs:
                return
            offered = contracts_for(rec.rfq, ours)
            wanted = rec.accepted_contracts if rec.accepted_contracts is not None else offered
            contracts = min(wanted, offered)
            if contracts <= 0:
                return
            executed: Decimal | None = None
            at = rec.recorded_closed
            if rec.confirm == "confirmed":
                # What the exchange did with the confirmed quote: executed (perhaps in part),
                # or never (voided). A quote the live run declined has no such record.
                executed = min(rec.executed, contracts) if rec.executed is not None else _ZERO
            else:
                at = rec.accepted_ts
            self._push(rec.accepted_ts, _ACCEPT, (index, side, contracts, (executed, at)))
        elif model == "threshold":
            mid = rec.mids[self.threshold_index]
            if mid is None:
                return
            edge = self.model.requester_edge
            # The requester gives up at most ``edge`` a contract against the mid for the
            # immediacy of an RFQ, and takes the side that costs it least.
            best: tuple[Decimal, str, Decimal] | None = None
            for side, bid, value in (("yes", yes, mid), ("no", no, _ONE - mid)):
                given_up = value - bid
                if bid > 0 and given_up <= edge and (best is None or given_up < best[0]):
                    best = (given_up, side, bid)
            if best is None:
                return
            _, side, bid = best
            contracts = contracts_for(rec.rfq, bid)
            if contracts > 0:
                self._accept(index, side, contracts, (None, rec.ts))
                self._until(rec.ts)

    def _summary(self) -> dict[str, Any]:
        cols = self.columns
        total = self.realized + self.mtm
        markout: dict[str, str | None] = {}
        for horizon in self.flow.horizons:
            markout[str(horizon)] = _mean(cols[f"markout_{horizon}s"])
        fill_markout = {str(h): _mean(cols[f"fill_markout_{h}s"]) for h in self.flow.horizons}
        summary: dict[str, Any] = {
            "rfqs": len(self.flow.rows),
            "quoted": self.quoted,
            "fills": self.fills,
            "fill_rate": str(_ratio(self.fills, self.quoted)),
            "realized_pnl": str(self.realized),
            "mtm_pnl": str(self.mtm),
            "total_pnl": str(total),
            "fees": str(self.fees_paid),
            "sharpe_daily": _sharpe(cols["ts"], cols["realized_pnl"], cols["mtm_pnl"]),
            "markout": markout,
            "fill_markout": fill_markout,
            "strategy_errors": self.errors,
            "first_strategy_error": self.first_error,
            "last_look_declines": self.last_look_declines,
            "contracts_bought": str(sum((c for c in cols["filled_contracts"] if c), _ZERO)),
        }
        if self.flow.has_fair_value:
            summary["fair_markout"] = _mean(cols["fair_markout"])
        return summary


def _quote_edge(yes: Decimal, no: Decimal, mid: Decimal) -> Decimal:
    """Mean per-contract edge of a quote's bid sides against ``mid`` (YES's value)."""
    total = _ZERO
    sides = 0
    if yes > 0:
        total += mid - yes
        sides += 1
    if no > 0:
        total += (_ONE - mid) - no
        sides += 1
    if sides == 2:
        return total / _TWO
    return total


def _mean(values: list[Any]) -> str | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return str(sum(present, _ZERO) / len(present))


def _ratio(part: int, whole: int) -> Decimal:
    return Decimal(part) / Decimal(whole) if whole else _ZERO


def _sharpe(times: list[Any], realized: list[Any], mtm: list[Any]) -> str | None:
    """Annualised Sharpe ratio of daily total P&L; None with fewer than two days."""
    last_by_day: dict[str, Decimal] = {}
    for when, real, marked in zip(times, realized, mtm, strict=True):
        if when is not None and real is not None and marked is not None:
            last_by_day[when.date().isoformat()] = real + marked
    if len(last_by_day) < 2:
        return None
    previous = _ZERO
    changes: list[Decimal] = []
    for day in sorted(last_by_day):
        changes.append(last_by_day[day] - previous)
        previous = last_by_day[day]
    mean = sum(changes, _ZERO) / len(changes)
    variance = sum(((c - mean) ** 2 for c in changes), _ZERO) / (len(changes) - 1)
    if variance == 0:
        return None
    # A statistic, not money: a float is fine here.
    return f"{float(mean / variance.sqrt()) * math.sqrt(365):.3f}"


def replay(
    flow: Flow,
    label: str,
    router: StrategyRouter,
    settings: Settings,
    fill_model: FillModel,
    fees: FeeModel | None = None,
) -> LabelResult:
    """Replay ``router``'s strategies over ``flow`` under ``settings``' quoting and risk."""
    for strategy in router.strategies():
        strategy.on_start()
    model = fees if fees is not None else FeeModel.from_settings(settings.fees)
    return _Replay(flow, label, router, settings, fill_model, model).run()


def params_label(strategy: str, params: Mapping[str, Any]) -> str:
    """A readable label for a strategy and its parameters: ``name k=v k=v``."""
    if not params:
        return strategy
    return strategy + " " + " ".join(f"{k}={params[k]}" for k in sorted(params))
