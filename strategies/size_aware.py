"""Size aware: the bigger the RFQ, the wider the spread; too big, too old or a combo: no quote.

The idea
    A large RFQ is more likely to come from someone who knows more than the book does, and
    it moves our position further in one go, so it should pay a wider spread. The half
    spread grows linearly with the size, up to a cap::

        half_spread = min(base_half_spread + per_contract * contracts, max_half_spread)
        yes_bid     = round_down(mid - half_spread_yes)
        no_bid      = round_down((1 - mid) - half_spread_no)

    ``contracts`` is the RFQ's ``contracts_fp``. A target-cost RFQ names dollars instead;
    its size on each side is estimated as ``target_cost / reference price of that side``
    (``mid`` for YES, ``1 - mid`` for NO), so the cheaper side, which the budget buys
    more of, gets the wider spread. A side whose estimate exceeds ``max_contracts`` is
    declined. Prices are rounded down to the market's grid, so a larger RFQ never gets a
    better price than a smaller one, and ``yes_bid + no_bid <= 1`` always holds.

Parameters
    ``base_half_spread`` (Decimal, dollars per contract, default 0.02, from 0 to 0.5)
        Half spread of a tiny RFQ.
    ``per_contract`` (Decimal, dollars per contract of RFQ size, default 0.00001)
        Widening per contract asked: 1,000 contracts add 1 cent to each side.
    ``max_half_spread`` (Decimal, dollars per contract, default 0.10, at least
        ``base_half_spread``)
        Cap on the half spread, however large the RFQ.
    ``max_contracts`` (Decimal, contracts, default 10000)
        Larger RFQs are declined (for target-cost RFQs: per side, on the estimate).
    ``max_target_cost`` (Decimal, dollars, default 5000)
        Target-cost RFQs with a larger budget are declined.
    ``max_age_seconds`` (float, seconds, default 2.0)
        Decline when the market data is older than this, even if the daemon does not yet
        call it stale: a wide quote on a big size is exactly when old prices hurt most.
    ``quote_combos`` (bool, default false)
        Combo (multivariate) RFQs are declined unless this is set: they are High
        Volatility Markets with a 3-second confirmation window and no simple mid.
    ``min_price`` (Decimal, dollars per contract, default 0.01)
        A side whose rounded price is below this is declined.

Declines (returns None) when
    the data is stale or older than ``max_age_seconds``; the RFQ is a combo and
    ``quote_combos`` is off; the RFQ gives neither a positive ``contracts_fp`` nor a
    positive ``target_cost_dollars``; ``contracts_fp > max_contracts``;
    ``target_cost_dollars > max_target_cost``; there is no reference price strictly
    between 0 and 1; or neither side survives ``min_price`` and ``max_contracts``.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field, model_validator

from mmbot.strategy import (
    MarketView,
    PriceRange,
    QuoteIntent,
    Rfq,
    Strategy,
    StrategyParams,
    round_down_to_grid,
)

__all__ = ["SizeAware", "SizeAwareParams"]

_ZERO = Decimal(0)
_ONE = Decimal(1)


class SizeAwareParams(StrategyParams):
    """Parameters of :class:`SizeAware`."""

    base_half_spread: Decimal = Field(
        default=Decimal("0.02"), ge=0, le=Decimal("0.5"), description="half spread at size 0"
    )
    per_contract: Decimal = Field(
        default=Decimal("0.00001"), ge=0, description="widening per contract (dollars)"
    )
    max_half_spread: Decimal = Field(
        default=Decimal("0.10"), ge=0, le=1, description="cap on the half spread (dollars)"
    )
    max_contracts: Decimal = Field(
        default=Decimal(10000), gt=0, description="larger RFQs are declined (contracts)"
    )
    max_target_cost: Decimal = Field(
        default=Decimal(5000), gt=0, description="larger target costs are declined (dollars)"
    )
    max_age_seconds: float = Field(
        default=2.0, gt=0, allow_inf_nan=False, description="older market data: no quote"
    )
    quote_combos: bool = Field(default=False, description="quote combo (multivariate) RFQs")
    min_price: Decimal = Field(
        default=Decimal("0.01"), ge=0, lt=1, description="lowest price worth bidding (dollars)"
    )

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> SizeAwareParams:
        if self.max_half_spread < self.base_half_spread:
            raise ValueError(
                f"max_half_spread ({self.max_half_spread}) must be at least "
                f"base_half_spread ({self.base_half_spread})"
            )
        return self


class SizeAware(Strategy[SizeAwareParams]):
    """Spread widening with RFQ size, with limits on size, data age and combos."""

    name = "size_aware"
    Params = SizeAwareParams

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        """Quote a size-dependent spread around the mid, or decline."""
        p = self.params
        if market.stale or market.age_seconds > p.max_age_seconds:
            return None
        if rfq.is_combo and not p.quote_combos:
            return None
        contracts, cost = rfq.contracts_fp, rfq.target_cost_dollars
        if contracts is not None:
            if not _ZERO < contracts <= p.max_contracts:
                return None
        elif cost is None or not _ZERO < cost <= p.max_target_cost:
            return None
        mid = market.mid
        if mid is None or not _ZERO < mid < _ONE:
            return None
        yes = self._side_price(_size(rfq, mid), mid, market.price_ranges)
        no = self._side_price(_size(rfq, _ONE - mid), _ONE - mid, market.price_ranges)
        if yes == 0 and no == 0:
            return None
        return QuoteIntent(yes_bid=yes, no_bid=no)

    def _side_price(
        self, contracts: Decimal, reference: Decimal, price_ranges: tuple[PriceRange, ...]
    ) -> Decimal:
        """Bid for one side whose fair price is ``reference``; 0 declines the side."""
        p = self.params
        if contracts > p.max_contracts:
            return _ZERO
        half_spread = min(p.base_half_spread + p.per_contract * contracts, p.max_half_spread)
        price = round_down_to_grid(reference - half_spread, price_ranges)
        return price if price >= p.min_price else _ZERO


def _size(rfq: Rfq, reference: Decimal) -> Decimal:
    """Contracts the RFQ asks for on a side whose fair price is ``reference``."""
    if rfq.contracts_fp is not None:
        return rfq.contracts_fp
    # Estimated at the side's fair price, not at the bid: the bid depends on the spread,
    # which depends on the size, and the estimate only needs to rank sizes consistently.
    return (rfq.target_cost_dollars or _ZERO) / reference
