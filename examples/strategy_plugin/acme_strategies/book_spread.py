"""Book spread: quote outside the market's own spread, and stop adding to a big position.

half_spread = max(min_half_spread, book_multiple * (yes_ask - yes_bid) / 2)
              + hvm_extra on High Volatility Markets
yes_bid     = round_down(mid - half_spread)
no_bid      = round_down((1 - mid) - half_spread)

Declines when the data is stale, the book is one-sided, locked, crossed or wider than
max_book_spread. Once |position| reaches reduce_only_above contracts, only the side
that reduces the position is quoted.
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

_ZERO = Decimal(0)
_ONE = Decimal(1)
_TWO = Decimal(2)


class BookSpreadParams(StrategyParams):
    """Parameters of BookSpread; prices in dollars per contract, sizes in contracts."""

    min_half_spread: Decimal = Field(default=Decimal("0.01"), ge=0, le=Decimal("0.5"))
    book_multiple: Decimal = Field(default=Decimal(1), ge=0)
    max_book_spread: Decimal = Field(default=Decimal("0.10"), gt=0, le=1)
    hvm_extra: Decimal = Field(default=Decimal("0.01"), ge=0)
    reduce_only_above: Decimal = Field(default=Decimal(500), gt=0)
    min_price: Decimal = Field(default=Decimal("0.02"), ge=0, lt=1)


class BookSpread(Strategy[BookSpreadParams]):
    """Half spread proportional to the book's, with a reduce-only mode."""

    name = "book_spread"
    Params = BookSpreadParams

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        p = self.params
        bid, ask = market.yes_bid, market.yes_ask
        if market.stale or bid is None or ask is None:
            return None  # stale data or a one-sided book: no trustworthy mid
        book_spread = ask - bid
        if not _ZERO < book_spread <= p.max_book_spread:
            return None  # locked, crossed or too wide to lean on
        mid = (bid + ask) / _TWO
        half = max(p.min_half_spread, p.book_multiple * book_spread / _TWO)
        if market.hvm:
            half += p.hvm_extra  # 3 s to confirm: ask for more edge
        yes = round_down_to_grid(mid - half, market.price_ranges)
        no = round_down_to_grid(_ONE - mid - half, market.price_ranges)
        if market.position >= p.reduce_only_above:
            yes = _ZERO  # long YES already: buy only NO
        if market.position <= -p.reduce_only_above:
            no = _ZERO  # long NO already: buy only YES
        yes = yes if yes >= p.min_price else _ZERO
        no = no if no >= p.min_price else _ZERO
        if yes == 0 and no == 0:
            return None
        return QuoteIntent(yes_bid=yes, no_bid=no)
