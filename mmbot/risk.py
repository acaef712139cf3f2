"""Risk limits, reservations and positions: the gate every quote and every confirmation passes.

Pure and synchronous: no I/O, no logging, no time source besides the injected clock. The
daemon is a single-threaded asyncio program and every method here runs to completion
without awaiting, so each call is atomic; :meth:`RiskBook.reserve` is a check-and-set
that nothing can slip between.

Units: prices in dollars per contract (0 to 1), sizes in contracts, money in dollars, all
:class:`~decimal.Decimal`. A fill is a :class:`~mmbot.kalshi.models.MakerFill` (the maker
buys ``contracts`` of ``side`` at ``price``), built by
:func:`~mmbot.kalshi.models.maker_fill_for_accept`; this module never maps an acceptance
to a side itself. Positions are signed net contracts: YES > 0, NO < 0. A fill's *delta* is
``+contracts`` for a YES fill and ``-contracts`` for a NO fill.

Limits are invariants, not best effort. A check passes only if every limit would still
hold whatever subset of the pending reservations later executes:

* ``max_contracts_per_rfq``: a fill (or quoted side) larger than this is refused.
* ``max_position_per_market``: with ``committed`` the market's net position, the *long
  extreme* is ``committed`` + every positive reserved delta (+ the new delta if positive)
  and the *short extreme* is ``committed`` + every negative reserved delta (+ the new delta
  if negative); both must lie within ``±max_position_per_market``. Opposite pending
  fills never offset each other, because either may be voided.
* ``max_exposure_dollars``: a position's worst-case loss is its cost (a contract can
  expire worthless); a reservation's is ``fill.max_loss``. ``exposure()`` is the sum of
  both, and ``exposure() + fill.max_loss`` must not exceed the limit. A reservation that
  would reduce a position still counts in full: it may never execute, and exposure may
  only ever be over-estimated.
* ``max_daily_loss_dollars``: today's P&L (:meth:`RiskBook.daily_pnl`) is what was
  realised since UTC midnight net of the fees paid (:meth:`RiskBook.record_fee`), plus
  every open position marked to market (at the last reference price given to
  :meth:`RiskBook.mark`; a market never marked is worth nothing),
  plus the worst case of every reserved fill: its own mark-to-market when that is a loss
  (a fill that would realise a loss counts now, before it executes), zero when it is a
  gain. Once the loss reaches the limit (``-daily_pnl() >= max_daily_loss_dollars``) no
  quote passes and only *risk-reducing* fills are reserved; below it, a fill passes only
  if the loss including its own worst case stays within the limit. A fill reduces risk
  when it is on the opposite side of the committed position and, together with every
  pending fill in its direction, cannot take the position past flat. "Today" is the UTC
  date of the injected clock; the realised part restarts when that date moves forward. A
  clock stepping back across midnight keeps counting into the later day rather than
  forgetting a loss.
* ``max_open_quotes`` (quoting only): ``open_quotes`` is the number of quotes already
  open, not counting the one being checked (nor one it replaces); the check refuses when
  ``open_quotes >= max_open_quotes``.
* ``kill_switch``: while set, every check and reservation is refused.

Every check must hold *after* the new fill; there is no "it only makes things a little
worse" allowance. So when reconciliation (:meth:`RiskBook.set_position`) or a tightened
:attr:`RiskBook.limits` leaves the book beyond a limit, which is allowed because the
exchange is the truth, nothing new is granted until the book is back within it, not even
a fill that would reduce the position (it is counted at full cost and may never execute).

A refused check changes nothing. Checks run in a fixed order and report the first limit
that fails: kill switch, contracts per RFQ, open quotes, daily loss, position, exposure.
Bad inputs (a negative or non-finite price or size, a price above 1, an unknown side,
a non-Decimal number) are programming errors and raise :class:`ValueError` or
:class:`TypeError` instead of returning a :class:`Decision`.

Reservations are keyed by quote id. Reserving the same quote id with the same market and
fill again is a no-op that returns ok (a duplicated ``quote_accepted``). Reserving it with
a different market or fill (a re-accept seen after a reconnect) replaces the old
reservation only if the new one passes every check computed *without* the old one; if it
fails, the old reservation is left in place, since keeping more reserved is the safe
side, and the caller releases it when the quote is voided.

Committing a reservation nets it into the position as the exchange does: fills on the
position's side add contracts and cost; an opposite fill pairs off
``netted = min(|position|, contracts)``, each pair paying $1 at once, so realised P&L is
``netted * (1 - price)`` minus the cost share the netted contracts carried, and any
leftover opens a position on the other side at the fill's price. When that cost share is
not an exact decimal, the kept cost and the released cost are both rounded up to the next
1e-12 dollars, so the book errs towards more exposure and more loss, never less.

:meth:`RiskBook.set_position` replaces a market's contracts and cost with what the
exchange reports and leaves reservations alone. It touches only the market named, so a
market the exchange no longer lists must be set to ``(0, 0)`` by the caller. If a
reserved fill has already executed
on the exchange and so is inside the reported position, the caller must
:meth:`~RiskBook.release` that reservation rather than :meth:`~RiskBook.commit` it, or the
fill would be counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_CEILING, Decimal, localcontext
from types import MappingProxyType
from typing import Final

from mmbot.kalshi.models import MakerFill, Side

__all__ = [
    "KILL_SWITCH",
    "MAX_CONTRACTS_PER_RFQ",
    "MAX_DAILY_LOSS_DOLLARS",
    "MAX_EXPOSURE_DOLLARS",
    "MAX_OPEN_QUOTES",
    "MAX_POSITION_PER_MARKET",
    "REASONS",
    "Decision",
    "PositionState",
    "Reservation",
    "RiskBook",
    "RiskLimits",
]

KILL_SWITCH: Final = "kill_switch"
MAX_CONTRACTS_PER_RFQ: Final = "max_contracts_per_rfq"
MAX_OPEN_QUOTES: Final = "max_open_quotes"
MAX_DAILY_LOSS_DOLLARS: Final = "max_daily_loss_dollars"
MAX_POSITION_PER_MARKET: Final = "max_position_per_market"
MAX_EXPOSURE_DOLLARS: Final = "max_exposure_dollars"
#: Every value :attr:`Decision.reason` can take on a refusal, in the order checks run.
REASONS: Final = (
    KILL_SWITCH,
    MAX_CONTRACTS_PER_RFQ,
    MAX_OPEN_QUOTES,
    MAX_DAILY_LOSS_DOLLARS,
    MAX_POSITION_PER_MARKET,
    MAX_EXPOSURE_DOLLARS,
)

_ZERO = Decimal(0)
_ONE = Decimal(1)
#: Unit a cost share is rounded up to when netting splits a cost inexactly (1e-12 dollars).
_COST_QUANTUM = Decimal("1e-12")
_SIDES: Final = ("yes", "no")


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The limits a :class:`RiskBook` enforces; every Decimal limit is a finite value >= 0."""

    max_contracts_per_rfq: Decimal
    max_position_per_market: Decimal
    max_exposure_dollars: Decimal
    max_open_quotes: int
    max_daily_loss_dollars: Decimal

    def __post_init__(self) -> None:
        """Refuse limits that would make every comparison meaningless."""
        for name in (
            "max_contracts_per_rfq",
            "max_position_per_market",
            "max_exposure_dollars",
            "max_daily_loss_dollars",
        ):
            _non_negative(name, getattr(self, name))
        quotes = self.max_open_quotes
        if isinstance(quotes, bool) or not isinstance(quotes, int) or quotes < 0:
            raise ValueError(f"max_open_quotes must be an integer >= 0, got {quotes!r}")


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer of a risk check: ``ok``, or the first limit that failed and its numbers."""

    ok: bool
    reason: str | None = None
    detail: str = ""


_OK: Final = Decision(ok=True)


@dataclass(frozen=True, slots=True)
class Reservation:
    """Risk held for an accepted quote between ``reserve`` and ``commit`` or ``release``."""

    quote_id: str
    market: str
    fill: MakerFill
    at: datetime

    @property
    def delta(self) -> Decimal:
        """Signed contracts the fill would add to the position (YES > 0, NO < 0)."""
        return _delta(self.fill)


@dataclass(frozen=True, slots=True)
class PositionState:
    """Committed position in one market: net contracts, cost, cumulative realised P&L."""

    contracts: Decimal
    cost: Decimal
    realized_pnl: Decimal = _ZERO


_FLAT: Final = PositionState(contracts=_ZERO, cost=_ZERO)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RiskBook:
    """Positions, reservations and today's realised P&L, checked against :class:`RiskLimits`."""

    def __init__(self, limits: RiskLimits, *, clock: Callable[[], datetime] = _utc_now) -> None:
        """Start flat, with no reservations and the kill switch off."""
        # Public and replaceable so a config reload can tighten limits; what is already
        # held stays, and only new risk is judged against the new values.
        self.limits = limits
        self.kill_switch = False
        self._clock = clock
        self._positions: dict[str, PositionState] = {}
        self._reserved: dict[str, Reservation] = {}
        self._pnl_day: date | None = None
        self._pnl_today = _ZERO
        self._fees_today = _ZERO
        self._fees_paid = _ZERO
        # The YES reference price per market, for marking positions and fills to market.
        # Sticky: a refresh without a price keeps the last one rather than forgetting it.
        self._marks: dict[str, Decimal] = {}
        # Every check reads the total cost and the marked-to-market P&L of all positions;
        # kept up to date as positions and marks change (exact Decimal sums), so a check
        # costs the same with five markets held or five hundred.
        self._costs = _ZERO
        self._upnl: dict[str, Decimal] = {}
        self._upnl_total = _ZERO

    # ------------------------------------------------------------------ checks

    def check_quote(
        self, market: str, side: Side, price: Decimal, contracts: Decimal, *, open_quotes: int
    ) -> Decision:
        """Could a full fill of this quoted side be reserved right now? Reserves nothing."""
        _validate(side, price, contracts)
        if isinstance(open_quotes, bool) or not isinstance(open_quotes, int) or open_quotes < 0:
            raise ValueError(f"open_quotes must be an integer >= 0, got {open_quotes!r}")
        fill = MakerFill(side=side, price=price, contracts=contracts)
        return self._check(market, fill, open_quotes=open_quotes, without=None)

    def reserve(self, quote_id: str, market: str, fill: MakerFill) -> Decision:
        """Atomically check a fill and, if it passes, hold its risk under ``quote_id``."""
        _validate(fill.side, fill.price, fill.contracts)
        if self.kill_switch:
            return _kill_switch()
        held = self._reserved.get(quote_id)
        if held is not None and held.market == market and held.fill == fill:
            return _OK
        decision = self._check(market, fill, open_quotes=None, without=quote_id)
        if decision.ok:
            self._reserved[quote_id] = Reservation(quote_id, market, fill, self._now())
        return decision

    def hold(self, quote_id: str, market: str, fill: MakerFill) -> None:
        """Hold a fill the exchange has already committed us to, whatever the limits say.

        A quote confirmed by an earlier run is final: its risk exists. Holding it makes that
        risk count, so nothing new is granted on top of it until it executes or is voided.
        """
        _validate(fill.side, fill.price, fill.contracts)
        self._reserved[quote_id] = Reservation(quote_id, market, fill, self._now())

    def release(self, quote_id: str) -> None:
        """Drop a reservation (void, timeout, failed confirm); an unknown id is a no-op."""
        self._reserved.pop(quote_id, None)

    def commit(self, quote_id: str, contracts: Decimal | None = None) -> MakerFill | None:
        """Turn a reservation into position on execution; return the fill applied.

        ``contracts`` is what actually filled when the execution was partial: at most the
        reserved size is applied and the rest of the reservation is released. An unknown
        id is a no-op that returns None.
        """
        reservation = self._reserved.pop(quote_id, None)
        if reservation is None:
            return None
        fill = reservation.fill
        if contracts is not None:
            _non_negative("contracts", contracts)
            if contracts < fill.contracts:
                fill = MakerFill(side=fill.side, price=fill.price, contracts=contracts)
        self._apply(reservation.market, fill)
        return fill

    def set_position(self, market: str, contracts: Decimal, cost: Decimal) -> None:
        """Overwrite a market's position with the exchange's (reconciliation); keeps its P&L."""
        _finite("contracts", contracts)
        _non_negative("cost", cost)
        previous = self._positions.get(market, _FLAT)
        self._store(market, PositionState(contracts, cost, previous.realized_pnl))

    def record_realized(self, amount: Decimal) -> None:
        """Add realised P&L learned elsewhere to today's total."""
        _finite("amount", amount)
        self._roll_day()
        self._pnl_today += amount

    def record_fee(self, amount: Decimal) -> None:
        """Charge a fill's fee: today's realised P&L falls by it and today's fees rise by it."""
        _non_negative("amount", amount)
        self._roll_day()
        self._pnl_today -= amount
        self._fees_today += amount
        self._fees_paid += amount

    def set_realized_today(self, amount: Decimal, *, fees: Decimal = _ZERO) -> None:
        """Start today's realised P&L (net of ``fees``) at ``amount``, as rebuilt at start-up."""
        _finite("amount", amount)
        _non_negative("fees", fees)
        self._pnl_day = self._now().astimezone(UTC).date()
        self._pnl_today = amount
        self._fees_today = fees

    def settle(self, market: str, yes_value: Decimal) -> Decimal:
        """Close ``market``'s position at its settlement value; return the P&L realised.

        ``yes_value`` is what one YES contract paid (1 or 0 for a binary result); a NO
        contract paid ``1 - yes_value``. The market's position becomes flat.
        """
        _non_negative("yes_value", yes_value)
        if yes_value > _ONE:
            raise ValueError(f"yes_value must be <= 1, got {yes_value}")
        state = self._positions.get(market, _FLAT)
        held = state.contracts
        payout = held * yes_value if held > 0 else -held * (_ONE - yes_value)
        realized = payout - state.cost
        self._store(market, PositionState(_ZERO, _ZERO, state.realized_pnl + realized))
        self._roll_day()
        self._pnl_today += realized
        return realized

    def mark(self, market: str, yes_price: Decimal | None) -> None:
        """Take ``yes_price`` as ``market``'s reference price for marking to market.

        None (no usable price right now) keeps the last mark.
        """
        if yes_price is None:
            return
        if _non_negative("yes_price", yes_price) > _ONE:
            raise ValueError(f"yes_price must be <= 1, got {yes_price}")
        self._marks[market] = yes_price
        if market in self._positions:
            self._remark(market)

    # ------------------------------------------------------------------ views

    def reserved(self) -> Mapping[str, Reservation]:
        """Live read-only view of the reservations by quote id."""
        return MappingProxyType(self._reserved)

    def position(self, market: str) -> Decimal:
        """Committed net contracts in ``market`` (YES > 0, NO < 0)."""
        return self._positions.get(market, _FLAT).contracts

    def positions(self) -> Mapping[str, PositionState]:
        """Live read-only view of every market's committed position."""
        return MappingProxyType(self._positions)

    def exposure(self) -> Decimal:
        """Worst-case loss: committed position costs plus every reservation's max loss."""
        return self._exposure(without=None)

    def realized_pnl_today(self) -> Decimal:
        """Realised P&L since the last UTC midnight of the clock, net of fees."""
        self._roll_day()
        return self._pnl_today

    @property
    def fees_paid(self) -> Decimal:
        """Fees charged through this book since it was created: this run's."""
        return self._fees_paid

    @property
    def fees_today(self) -> Decimal:
        """Fees paid since the last UTC midnight of the clock (already out of the P&L)."""
        self._roll_day()
        return self._fees_today

    def unrealized_pnl(self) -> Decimal:
        """Every open position marked to market, less its cost."""
        return self._upnl_total

    def daily_pnl(self) -> Decimal:
        """Today's P&L as the daily loss limit reads it (see the module docstring)."""
        return self._daily_pnl(without=None)

    def marks(self) -> Mapping[str, Decimal]:
        """Live read-only view of the reference price of every marked market."""
        return MappingProxyType(self._marks)

    # ------------------------------------------------------------------ internals

    def _check(
        self, market: str, fill: MakerFill, *, open_quotes: int | None, without: str | None
    ) -> Decision:
        limits = self.limits
        if self.kill_switch:
            return _kill_switch()
        if fill.contracts > limits.max_contracts_per_rfq:
            return Decision(
                False,
                MAX_CONTRACTS_PER_RFQ,
                f"{_fmt(fill.contracts)} contracts > max_contracts_per_rfq "
                f"{_fmt(limits.max_contracts_per_rfq)}",
            )
        if open_quotes is not None and open_quotes >= limits.max_open_quotes:
            return Decision(
                False,
                MAX_OPEN_QUOTES,
                f"{open_quotes} quotes already open, max_open_quotes {limits.max_open_quotes}",
            )
        # A confirm (no open_quotes) that only brings a position back towards flat passes
        # the daily loss limit: stopping such fills would keep the loss open.
        reducing = open_quotes is None and self._reduces(market, fill, without)
        if not reducing:
            refused = self._daily_loss_refusal(market, fill, without)
            if refused is not None:
                return refused

        committed = self.position(market)
        pending_long = pending_short = _ZERO
        for reservation in self._reserved.values():
            if reservation.market != market or reservation.quote_id == without:
                continue
            delta = reservation.delta
            if delta > 0:
                pending_long += delta
            else:
                pending_short += delta
        delta = _delta(fill)
        long_extreme = committed + pending_long + max(delta, _ZERO)
        short_extreme = committed + pending_short + min(delta, _ZERO)
        worst = max(abs(long_extreme), abs(short_extreme))
        if worst > limits.max_position_per_market:
            return Decision(
                False,
                MAX_POSITION_PER_MARKET,
                f"{market}: {fill.side} {_fmt(fill.contracts)} would allow a position of "
                f"{_fmt(worst)} (committed {_fmt(committed)}, pending +{_fmt(pending_long)}"
                f"/{_fmt(pending_short)}) > max_position_per_market "
                f"{_fmt(limits.max_position_per_market)}",
            )

        exposure = self._exposure(without=without)
        after = exposure + fill.max_loss
        if after > limits.max_exposure_dollars:
            return Decision(
                False,
                MAX_EXPOSURE_DOLLARS,
                f"exposure {_fmt(exposure)} + max loss {_fmt(fill.max_loss)} "
                f"({_fmt(fill.contracts)} x {_fmt(fill.price)}) = {_fmt(after)} > "
                f"max_exposure_dollars {_fmt(limits.max_exposure_dollars)}",
            )
        return _OK

    def _daily_loss_refusal(
        self, market: str, fill: MakerFill, without: str | None
    ) -> Decision | None:
        limit = self.limits.max_daily_loss_dollars
        realized = self.realized_pnl_today()
        loss = -(realized + self.unrealized_pnl() + self._pending_worst(without))
        if loss >= limit:
            return Decision(
                False,
                MAX_DAILY_LOSS_DOLLARS,
                f"loss today {_fmt(loss)} (realised {_fmt(-realized)}, the rest marked to "
                f"market) >= max_daily_loss_dollars {_fmt(limit)}",
            )
        own = -min(self._fill_pnl(market, fill), _ZERO)
        if loss + own > limit:
            return Decision(
                False,
                MAX_DAILY_LOSS_DOLLARS,
                f"loss today {_fmt(loss)} + this fill marked to market {_fmt(own)} = "
                f"{_fmt(loss + own)} > max_daily_loss_dollars {_fmt(limit)}",
            )
        return None

    def _reduces(self, market: str, fill: MakerFill, without: str | None) -> bool:
        committed = self.position(market)
        delta = _delta(fill)
        if committed == 0 or (committed > 0) == (delta > 0):
            return False
        pending = sum(
            (
                r.delta
                for r in self._reserved.values()
                if r.market == market and r.quote_id != without and (r.delta > 0) == (delta > 0)
            ),
            _ZERO,
        )
        after = committed + pending + delta
        return after >= 0 if committed > 0 else after <= 0

    def _value(self, market: str, contracts: Decimal) -> Decimal:
        """What ``contracts`` of ``market`` (signed) are worth at its mark; 0 unmarked."""
        mark = self._marks.get(market)
        if mark is None or contracts == 0:
            return _ZERO
        return contracts * mark if contracts > 0 else -contracts * (_ONE - mark)

    def _fill_pnl(self, market: str, fill: MakerFill) -> Decimal:
        """A fill marked to market: what it would be worth less what it costs."""
        return self._value(market, _delta(fill)) - fill.max_loss

    def _pending_worst(self, without: str | None) -> Decimal:
        total = _ZERO
        for r in self._reserved.values():
            if r.quote_id != without:
                total += min(self._fill_pnl(r.market, r.fill), _ZERO)
        return total

    def _daily_pnl(self, *, without: str | None) -> Decimal:
        return self.realized_pnl_today() + self.unrealized_pnl() + self._pending_worst(without)

    def _exposure(self, *, without: str | None) -> Decimal:
        committed = self._costs
        pending = sum(
            (r.fill.max_loss for r in self._reserved.values() if r.quote_id != without), _ZERO
        )
        return committed + pending

    def _apply(self, market: str, fill: MakerFill) -> None:
        if fill.contracts == 0:
            return
        state = self._positions.get(market, _FLAT)
        held, cost = state.contracts, state.cost
        signed = _delta(fill)
        if held == 0 or (held > 0) == (signed > 0):
            self._store(
                market, PositionState(held + signed, cost + fill.max_loss, state.realized_pnl)
            )
            return
        size = abs(held)
        netted = min(size, fill.contracts)
        leftover = fill.contracts - netted
        if netted == size:
            kept, released = _ZERO, cost
        else:
            kept = _cost_share(cost, size - netted, size)
            released = _cost_share(cost, netted, size)
        realized = netted * (_ONE - fill.price) - released
        new_cost = fill.price * leftover if leftover > 0 else kept
        self._store(market, PositionState(held + signed, new_cost, state.realized_pnl + realized))
        self._roll_day()
        self._pnl_today += realized

    def _store(self, market: str, state: PositionState) -> None:
        """Set ``market``'s position, keeping the totals every check reads in step."""
        previous = self._positions.get(market, _FLAT)
        self._positions[market] = state
        self._costs += state.cost - previous.cost
        self._remark(market)

    def _remark(self, market: str) -> None:
        """Bring ``market``'s share of the marked-to-market total up to date."""
        state = self._positions.get(market, _FLAT)
        new = self._value(market, state.contracts) - state.cost
        old = self._upnl.get(market, _ZERO)
        if new != old:
            self._upnl[market] = new
            self._upnl_total += new - old

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("the risk clock must return timezone-aware datetimes")
        return now

    def _roll_day(self) -> None:
        today = self._now().astimezone(UTC).date()
        # Only a forward move starts a new day: a clock stepping back must not wipe a loss.
        if self._pnl_day is None or today > self._pnl_day:
            self._pnl_day = today
            self._pnl_today = _ZERO
            self._fees_today = _ZERO


def _cost_share(cost: Decimal, part: Decimal, whole: Decimal) -> Decimal:
    # cost * part / whole need not be a finite decimal. Rounding up, both the cost kept and
    # the cost released, errs towards more exposure and more loss; a fixed quantum keeps
    # every later sum exact instead of leaving 28-digit tails that round either way.
    with localcontext() as ctx:
        ctx.rounding = ROUND_CEILING
        return (cost * part / whole).quantize(_COST_QUANTUM)


def _kill_switch() -> Decision:
    return Decision(False, KILL_SWITCH, "kill switch is on: no new quotes or reservations")


def _delta(fill: MakerFill) -> Decimal:
    return fill.contracts if fill.side == "yes" else -fill.contracts


def _finite(name: str, value: object) -> Decimal:
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal, got {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _non_negative(name: str, value: object) -> Decimal:
    checked = _finite(name, value)
    if checked < 0:
        raise ValueError(f"{name} must be >= 0, got {checked}")
    return checked


def _validate(side: object, price: object, contracts: object) -> None:
    if side not in _SIDES:
        raise ValueError(f"side must be 'yes' or 'no', got {side!r}")
    _non_negative("contracts", contracts)
    if _non_negative("price", price) > _ONE:
        raise ValueError(f"price must be <= 1, got {price}")


def _fmt(value: Decimal) -> str:
    """Plain fixed-point text without trailing zeros or exponent: 4.000 -> 4, 1E+1 -> 10."""
    return format(value.normalize(), "f")
