"""Kalshi's trade fees and fee rounding, in exact dollars.

Pure: no I/O, no clock. The fee schedule (kalshi.com/fee-schedule) charges a trade fee of
``multiplier * C * P * (1 - P)`` for ``C`` contracts at price ``P`` (the price the party
pays for its side), with the taker multiplier 0.07 and, on markets with maker fees, the
maker multiplier 0.0175 (the changelog's "fee multiplier 0.25" of the taker's). The
market's ``fee_type_override`` (market-lifecycle docs) says which of these apply:

* ``quadratic``: takers pay, makers pay nothing;
* ``quadratic_with_maker_fees``: both pay, each with its own multiplier;
* ``quadratic_with_combo_maker_fees``: makers pay on combo markets. The RFQ rail quotes
  combos, so the maker pays here as with ``quadratic_with_maker_fees``;
* ``flat``: no formula is published; taken as ``multiplier * C``, a fixed fee per contract.

Rounding follows ``getting_started/fee_rounding.md``: the trade fee is rounded up to
$0.0001; the balance change ``revenue - trade_fee`` is floored to the member's balance
precision ($0.01, or $0.0001 for direct members) and the difference is the *rounding fee*.
A per-order :class:`FeeAccumulator` sums rounding fees and gives whole cents back as a
*rebate* once they exceed $0.01. The docs promise a net fee of at least zero, so a cent
is given back only by a fill whose own trade and rounding fee cover it; otherwise it waits
for a later fill (every worked example of the docs satisfies this).

The RFQ maker (mmbot) buys its side of a quote's execution in one fill of a fresh order,
so :meth:`FeeModel.fill_fee` charges one fill with a fresh accumulator: its rounding fee
is always below a cent, so no rebate applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Final

from mmbot.config.models import FEE_TYPES, FeesSettings, FeeType

__all__ = [
    "FEE_TYPES",
    "FeeAccumulator",
    "FeeBreakdown",
    "FeeModel",
    "FeeType",
    "round_fill",
]

_ZERO: Final = Decimal(0)
_ONE: Final = Decimal(1)
_CENTICENT: Final = Decimal("0.0001")
_CENT: Final = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class FeeBreakdown:
    """The three fee components of one fill, and the balance change they leave."""

    trade_fee: Decimal
    rounding_fee: Decimal
    rebate: Decimal
    #: ``revenue - trade_fee`` floored to the balance precision; any rebate comes on top.
    balance_change: Decimal

    @property
    def net_fee(self) -> Decimal:
        """What the fill costs in fees: trade fee plus rounding fee, less the rebate."""
        return self.trade_fee + self.rounding_fee - self.rebate


def round_fill(
    revenue: Decimal, trade_fee: Decimal, precision: Decimal
) -> tuple[Decimal, Decimal, Decimal]:
    """Return (trade fee ceiled to $0.0001, rounding fee, floored balance change) of a fill."""
    _check_precision(precision)
    ceiled = trade_fee.quantize(_CENTICENT, rounding=ROUND_CEILING)
    change = revenue - ceiled
    floored = change.quantize(precision, rounding=ROUND_FLOOR)
    return ceiled, change - floored, floored


class FeeAccumulator:
    """Rounding fees of one order's fills, and the whole-cent rebates they earn back."""

    def __init__(self, precision: Decimal = _CENT) -> None:
        """Start an order with nothing accumulated, at balance ``precision``."""
        _check_precision(precision)
        self.precision = precision
        #: Rounding fees paid and not yet given back.
        self.accumulated = _ZERO

    def charge(self, revenue: Decimal, trade_fee: Decimal) -> FeeBreakdown:
        """Charge one fill of the order: ``revenue`` is signed (negative for a buyer)."""
        ceiled, rounding, change = round_fill(revenue, trade_fee, self.precision)
        self.accumulated += rounding
        rebate = _ZERO
        if self.accumulated > _CENT:
            cents = (self.accumulated / _CENT).to_integral_value(rounding=ROUND_FLOOR) * _CENT
            # A fill's net fee never goes below zero: only what it paid can come back.
            affordable = ((ceiled + rounding) / _CENT).to_integral_value(rounding=ROUND_FLOOR)
            rebate = min(cents, affordable * _CENT)
            self.accumulated -= rebate
        return FeeBreakdown(ceiled, rounding, rebate, change)


@dataclass(frozen=True, slots=True)
class FeeModel:
    """A market's fee schedule and the member's balance precision."""

    fee_type: FeeType = "quadratic_with_maker_fees"
    maker_multiplier: Decimal = Decimal("0.0175")
    taker_multiplier: Decimal = Decimal("0.07")
    #: $0.01 for non-direct members, $0.0001 for direct members.
    balance_precision: Decimal = _CENT

    def __post_init__(self) -> None:
        """Refuse a schedule no fill could be charged by (a programming error)."""
        if self.fee_type not in FEE_TYPES:
            raise ValueError(f"unknown fee type {self.fee_type!r}")
        for name in ("maker_multiplier", "taker_multiplier"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                raise ValueError(f"{name} must be a finite Decimal >= 0, got {value!r}")
        _check_precision(self.balance_precision)

    @classmethod
    def from_settings(cls, settings: FeesSettings) -> FeeModel:
        """The model the ``fees`` configuration section describes."""
        return cls(
            fee_type=settings.model,
            maker_multiplier=settings.maker_multiplier,
            taker_multiplier=settings.taker_multiplier,
            balance_precision=settings.balance_precision,
        )

    def trade_fee(self, side_price: Decimal, contracts: Decimal, *, maker: bool = True) -> Decimal:
        """The unrounded trade fee of buying ``contracts`` at ``side_price`` (dollars)."""
        _check_fill(side_price, contracts)
        if maker and self.fee_type == "quadratic":
            return _ZERO
        multiplier = self.maker_multiplier if maker else self.taker_multiplier
        if self.fee_type == "flat":
            return multiplier * contracts
        return multiplier * contracts * side_price * (_ONE - side_price)

    def charge(
        self,
        side_price: Decimal,
        contracts: Decimal,
        accumulator: FeeAccumulator,
        *,
        maker: bool = True,
    ) -> FeeBreakdown:
        """Charge one fill of an order whose rounding ``accumulator`` is given."""
        fee = self.trade_fee(side_price, contracts, maker=maker)
        return accumulator.charge(-side_price * contracts, fee)

    def fill_fee(self, side_price: Decimal, contracts: Decimal, *, maker: bool = True) -> Decimal:
        """Net fee in dollars of a single fill buying ``contracts`` at ``side_price``."""
        accumulator = FeeAccumulator(self.balance_precision)
        return self.charge(side_price, contracts, accumulator, maker=maker).net_fee


def _check_precision(precision: Decimal) -> None:
    if not isinstance(precision, Decimal) or not precision.is_finite() or precision <= 0:
        raise ValueError(f"balance precision must be a Decimal > 0, got {precision!r}")


def _check_fill(side_price: Decimal, contracts: Decimal) -> None:
    if not isinstance(side_price, Decimal) or not _ZERO <= side_price <= _ONE:
        raise ValueError(f"side_price must be a Decimal from 0 to 1, got {side_price!r}")
    if not isinstance(contracts, Decimal) or not contracts.is_finite() or contracts < 0:
        raise ValueError(f"contracts must be a finite Decimal >= 0, got {contracts!r}")
