"""Fixed spread: bid a constant distance below fair value on both sides.

The idea
    The reference price of YES is the market's mid (``MarketView.mid``: the middle of the
    book, or the last trade when one side of the book is empty); NO is then worth
    ``1 - mid``. Bidding ``half_spread`` below each means that if both sides get hit in
    equal size, the pair cost ``1 - 2 * half_spread`` and pays exactly 1: the spread is the
    profit for providing liquidity. It ignores size, inventory and volatility, which makes
    it the baseline the other strategies are measured against::

        yes_bid = round_down(mid - half_spread)
        no_bid  = round_down((1 - mid) - half_spread)

    Rounding is down to the market's price grid, so a price is never more aggressive than
    asked, and ``yes_bid + no_bid <= 1 - 2 * half_spread <= 1`` always holds.

Parameters
    ``half_spread`` (Decimal, dollars per contract, default 0.02, from 0 to 0.5)
        Distance below fair value on each side; the full spread is twice this.
    ``min_price`` (Decimal, dollars per contract, default 0.01, from 0 to below 1)
        A side whose rounded price is below this is declined (bid "0"): a bid of a
        fraction of a cent earns nothing worth the risk of being wrong about the tail.
    ``require_fresh`` (bool, default true)
        Decline when the market data is stale (older than ``marketdata.ttl_seconds``).

Declines (returns None) when
    the market data is stale and ``require_fresh`` is set; there is no reference price, or
    it is not strictly between 0 and 1; or both sides fall below ``min_price`` (this also
    covers a market whose price grid is unknown).
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field

from mmbot.strategy import (
    MarketView,
    QuoteIntent,
    Rfq,
    Strategy,
    StrategyParams,
    round_down_to_grid,
)

__all__ = ["FixedSpread", "FixedSpreadParams"]

_ZERO = Decimal(0)
_ONE = Decimal(1)


class FixedSpreadParams(StrategyParams):
    """Parameters of :class:`FixedSpread`."""

    half_spread: Decimal = Field(
        default=Decimal("0.02"), ge=0, le=Decimal("0.5"), description="dollars below fair value"
    )
    min_price: Decimal = Field(
        default=Decimal("0.01"), ge=0, lt=1, description="lowest price worth bidding (dollars)"
    )
    require_fresh: bool = Field(default=True, description="decline on stale market data")


class FixedSpread(Strategy[FixedSpreadParams]):
    """Bid ``half_spread`` below the mid for YES and below ``1 - mid`` for NO."""

    name = "fixed_spread"
    Params = FixedSpreadParams

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        """Quote a fixed spread around the mid, or decline."""
        p = self.params
        if p.require_fresh and market.stale:
            return None
        mid = market.mid
        if mid is None or not _ZERO < mid < _ONE:
            return None
        yes = round_down_to_grid(mid - p.half_spread, market.price_ranges)
        no = round_down_to_grid(_ONE - mid - p.half_spread, market.price_ranges)
        if yes < p.min_price:
            yes = _ZERO
        if no < p.min_price:
            no = _ZERO
        if yes == 0 and no == 0:
            return None
        return QuoteIntent(yes_bid=yes, no_bid=no)
