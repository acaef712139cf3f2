"""Tests of the BookSpread example strategy: exact quotes, every decline, and invariants."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mmbot.strategy import (
    MarketView,
    PriceRange,
    QuoteIntent,
    Rfq,
    StrategyError,
    build_strategy,
    round_down_to_grid,
    safe_quote,
)

REF = "acme_strategies.book_spread:BookSpread"
D = Decimal
CENTS = (PriceRange(start=D(0), end=D(1), step=D("0.01")),)
RFQ = Rfq(id="rfq-1", market_ticker="KXRAIN-25", contracts_fp=D(100))


def book(bid: str | None, ask: str | None, **overrides: Any) -> MarketView:
    return MarketView(
        ticker="KXRAIN-25",
        event_ticker="KXRAIN",
        yes_bid=None if bid is None else D(bid),
        yes_ask=None if ask is None else D(ask),
        last_price=D("0.42"),
        price_ranges=CENTS,
        **overrides,
    )


def quote(market: MarketView, **params: str) -> QuoteIntent | None:
    # build_strategy validates params exactly as the daemon does at start-up.
    return build_strategy(REF, params).quote(RFQ, market)


def test_half_spread_follows_the_book() -> None:
    # Book 0.40 / 0.44: mid 0.42, half spread 0.02.
    assert quote(book("0.40", "0.44")) == QuoteIntent(D("0.40"), D("0.56"))
    assert quote(book("0.40", "0.44"), book_multiple="1.5") == QuoteIntent(D("0.39"), D("0.55"))


def test_tight_book_gets_the_minimum_half_spread() -> None:
    # Mid 0.415, half spread 0.01 (not 0.005): 0.405 and 0.575 round down to the grid.
    assert quote(book("0.41", "0.42")) == QuoteIntent(D("0.40"), D("0.57"))


def test_high_volatility_markets_pay_extra() -> None:
    assert quote(book("0.40", "0.44", hvm=True)) == QuoteIntent(D("0.39"), D("0.55"))


def test_reduce_only_past_the_position_threshold() -> None:
    assert quote(book("0.40", "0.44", position=D(500))) == QuoteIntent(D(0), D("0.56"))
    assert quote(book("0.40", "0.44", position=D(-500))) == QuoteIntent(D("0.40"), D(0))
    assert quote(book("0.40", "0.44", position=D(499))) == QuoteIntent(D("0.40"), D("0.56"))


@pytest.mark.parametrize(
    ("market", "why"),
    [
        (book("0.40", "0.44", stale=True), "stale data"),
        (book("0.40", None), "one-sided book"),
        (book("0.44", "0.44"), "locked book"),
        (book("0.45", "0.44"), "crossed book"),
        (book("0.30", "0.50"), "book wider than max_book_spread"),
    ],
)
def test_declines(market: MarketView, why: str) -> None:
    assert quote(market) is None, why


def test_sides_below_min_price_are_dropped() -> None:
    # Mid 0.02: the YES bid 0.01 is under min_price 0.02, the NO bid 0.97 is not.
    assert quote(book("0.01", "0.03")) == QuoteIntent(D(0), D("0.97"))
    assert quote(book("0.40", "0.44"), min_price="0.60") is None


def test_bad_parameters_are_reported_by_name() -> None:
    with pytest.raises(StrategyError, match="did you mean 'book_multiple'"):
        build_strategy(REF, {"book_multipel": "2"})
    with pytest.raises(StrategyError, match="float"):
        build_strategy(REF, {"min_price": 0.02})  # money must not be a float


prices = st.decimals(min_value=D("0.01"), max_value=D("0.99"), places=2)


@given(
    bid=prices,
    width=st.integers(min_value=1, max_value=10),
    position=st.integers(min_value=-1000, max_value=1000),
    hvm=st.booleans(),
)
def test_every_quote_is_valid(bid: Decimal, width: int, position: int, hvm: bool) -> None:
    ask = bid + D(width) / 100
    # A YES ask is a price: at most 0.99 (Kalshi shows an empty ask side as 1.00).
    assume(ask < 1)
    market = book(str(bid), str(ask), hvm=hvm, position=D(position))
    intent, error = safe_quote(build_strategy(REF), RFQ, market)
    assert error is None  # what the daemon would accept
    if intent is not None:
        for price in (intent.yes_bid, intent.no_bid):
            assert 0 <= price < 1
            assert price == 0 or round_down_to_grid(price, CENTS) == price
        assert intent.yes_bid + intent.no_bid <= 1 - 2 * D("0.01")
