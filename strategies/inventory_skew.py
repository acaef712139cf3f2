"""Inventory skew: a fixed spread that leans against the position we already hold.

The idea
    A market maker wants to be flat. Holding YES (position > 0), it should be keener to
    buy NO (which offsets YES: a YES and a NO together pay exactly 1) and less keen to buy
    more YES; holding NO (position < 0), the reverse. So both prices of the fixed spread
    move by the same ``shift`` against the position::

        shift   = skew_per_contract * position, capped to [-max_skew, +max_skew]
        yes_bid = round_down(mid - half_spread - shift)
        no_bid  = round_down((1 - mid) - half_spread + shift)

    Long YES lowers ``yes_bid`` and raises ``no_bid``; short (long NO) does the opposite.
    The pair still sums to at most ``1 - 2 * half_spread``: skewing moves the quote, it
    does not narrow it. Prices are rounded down to the market's grid and stay below 1.

    On top of the skew, a soft position limit: a side is declined when a full fill of this
    RFQ on it would take the position past ``max_position`` in that direction (YES fills
    add to the position, NO fills subtract). This is the strategy's own limit, applied
    before and independently of the daemon's risk limits. For a target-cost RFQ the
    size is estimated as the whole contracts the budget buys at that side's price; an RFQ
    with no size at all only declines a side the position is already at or past the limit on.

Parameters
    ``half_spread`` (Decimal, dollars per contract, default 0.02, from 0 to 0.5)
        Distance below fair value on each side when flat.
    ``skew_per_contract`` (Decimal, dollars per contract of position, default 0.0005)
        How far both prices move per contract held: 100 contracts move them 5 cents.
    ``max_skew`` (Decimal, dollars, default 0.05, from 0 to 1)
        Cap on the shift, however large the position.
    ``max_position`` (Decimal, contracts, default 1000, above 0)
        Soft limit on the net position in either direction, see above.
    ``min_price`` (Decimal, dollars per contract, default 0.01)
        A side whose rounded price is below this is declined.
    ``require_fresh`` (bool, default true)
        Decline when the market data is stale.

Declines (returns None) when
    the data is stale and ``require_fresh`` is set; there is no reference price, or it is
    not strictly between 0 and 1; or neither side survives ``min_price`` and
    ``max_position``.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

from pydantic import Field

from mmbot.strategy import (
    MarketView,
    QuoteIntent,
    Rfq,
    Strategy,
    StrategyParams,
    round_down_to_grid,
)

__all__ = ["InventorySkew", "InventorySkewParams"]

_ZERO = Decimal(0)
_ONE = Decimal(1)


class InventorySkewParams(StrategyParams):
    """Parameters of :class:`InventorySkew`."""

    half_spread: Decimal = Field(
        default=Decimal("0.02"), ge=0, le=Decimal("0.5"), description="dollars below fair value"
    )
    skew_per_contract: Decimal = Field(
        default=Decimal("0.0005"), ge=0, description="price shift per contract held (dollars)"
    )
    max_skew: Decimal = Field(
        default=Decimal("0.05"), ge=0, le=1, description="largest price shift (dollars)"
    )
    max_position: Decimal = Field(
        default=Decimal(1000), gt=0, description="soft limit on |position| (contracts)"
    )
    min_price: Decimal = Field(
        default=Decimal("0.01"), ge=0, lt=1, description="lowest price worth bidding (dollars)"
    )
    require_fresh: bool = Field(default=True, description="decline on stale market data")


class InventorySkew(Strategy[InventorySkewParams]):
    """Fixed spread shifted against the position, with a soft position limit."""

    name = "inventory_skew"
    Params = InventorySkewParams

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        """Quote a spread skewed against the position, or decline."""
        p = self.params
        if p.require_fresh and market.stale:
            return None
        mid = market.mid
        if mid is None or not _ZERO < mid < _ONE:
            return None
        position = market.position
        shift = max(-p.max_skew, min(p.max_skew, p.skew_per_contract * position))
        yes = round_down_to_grid(mid - p.half_spread - shift, market.price_ranges)
        no = round_down_to_grid(_ONE - mid - p.half_spread + shift, market.price_ranges)
        if yes < p.min_price or _grows_past(position, _fill_size(rfq, yes), p.max_position):
            yes = _ZERO
        if no < p.min_price or _grows_past(-position, _fill_size(rfq, no), p.max_position):
            no = _ZERO
        if yes == 0 and no == 0:
            return None
        return QuoteIntent(yes_bid=yes, no_bid=no)


def _fill_size(rfq: Rfq, price: Decimal) -> Decimal | None:
    """Contracts a full fill at ``price`` would be, or None when the RFQ gives no size."""
    if rfq.contracts_fp is not None:
        return rfq.contracts_fp
    if rfq.target_cost_dollars is None or price <= 0:
        return None
    # The exchange sells a target cost in whole contracts at the bid price.
    return (rfq.target_cost_dollars / price).to_integral_value(rounding=ROUND_FLOOR)


def _grows_past(exposure: Decimal, contracts: Decimal | None, limit: Decimal) -> bool:
    """True when buying ``contracts`` more in this direction would take exposure past limit."""
    if contracts is None:
        return exposure >= limit
    return exposure + contracts > limit
