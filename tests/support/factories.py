"""Price grids, markets and RFQs built from the few arguments a test cares about."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from mmbot.kalshi.models import Market, PriceRange, Rfq
from mmbot.mock import sim
from mmbot.strategy import MarketView

if TYPE_CHECKING:
    from mmbot.mock.server import MockExchange

D = Decimal

#: Kalshi's "linear_cent" structure: one cent from 0 to 1.
CENT_GRID = (PriceRange(start=D("0.00"), end=D("1.00"), step=D("0.01")),)
#: Kalshi's "tails" structure: tenths of a cent near 0 and 1, cents in between.
TAILS_GRID = (
    PriceRange(start=D("0.000"), end=D("0.100"), step=D("0.001")),
    PriceRange(start=D("0.100"), end=D("0.900"), step=D("0.01")),
    PriceRange(start=D("0.900"), end=D("1.000"), step=D("0.001")),
)
#: The grids the strategy tests run on, by name (for parametrize ids and Hypothesis).
GRIDS = {"cent": CENT_GRID, "tails": TAILS_GRID}


def quotable_prices(grid: tuple[PriceRange, ...]) -> list[Decimal]:
    """Every price on ``grid`` strictly between 0 and 1, in increasing order."""
    points = set()
    for band in grid:
        price = band.start
        while price <= band.end:
            # 0 and 1 are on every grid, but no quote can bid them.
            if 0 < price < 1:
                points.add(price)
            price += band.step
    return sorted(points)


def _decimal(value: Decimal | str | int | None) -> Decimal | None:
    """``value`` as a Decimal (a Decimal unchanged), or None."""
    return None if value is None else D(value)


def market_view(
    yes_bid: Decimal | str | None = "0.40",
    yes_ask: Decimal | str | None = "0.44",
    *,
    last_price: Decimal | str | None = None,
    grid: tuple[PriceRange, ...] = CENT_GRID,
    **fields: Any,
) -> MarketView:
    """What a strategy sees of market KXRAIN-25; ``fields`` set any other MarketView field."""
    values: dict[str, Any] = {
        "ticker": "KXRAIN-25",
        "event_ticker": "KXRAIN",
        "yes_bid": _decimal(yes_bid),
        "yes_ask": _decimal(yes_ask),
        "last_price": _decimal(last_price),
        "price_ranges": grid,
    }
    # A field named outright (price_ranges=, ticker=, ...) wins over the defaults above.
    values.update(fields)
    return MarketView(**values)


def rfq(
    contracts: Decimal | str | int | None = "100",
    target_cost: Decimal | str | None = None,
    **fields: Any,
) -> Rfq:
    """RFQ rfq-1 on KXRAIN-25, sized in contracts or (with ``contracts=None``) in dollars."""
    return Rfq(
        id="rfq-1",
        market_ticker="KXRAIN-25",
        event_ticker="KXRAIN",
        contracts_fp=_decimal(contracts),
        target_cost_dollars=_decimal(target_cost),
        **fields,
    )


def kalshi_market(
    ticker: str,
    bid: str | None = "0.48",
    ask: str | None = "0.52",
    *,
    hvm: bool = False,
    grid: tuple[PriceRange, ...] = CENT_GRID,
) -> Market:
    """A market as the REST API lists it; its event is the ticker up to the last dash."""
    return Market(
        ticker=ticker,
        event_ticker=ticker.rsplit("-", 1)[0],
        yes_bid_dollars=_decimal(bid),
        yes_ask_dollars=_decimal(ask),
        price_ranges=grid,
        # Kalshi treats every combo (MVE) market as a High Volatility Market.
        mve_collection_ticker="KXMVE-COMBO" if hvm else None,
    )


def cent_market(mock: MockExchange, skip: int = 0) -> sim.SimMarket:
    """The mock's ``skip``-th standard (not HVM) market on the one-cent grid."""
    markets = [m for m in mock.exchange.markets.values() if not m.hvm and m.grid == sim.CENT_GRID]
    return markets[skip]
