"""The shipped strategies: exact quotes, every decline, and grid / sum invariants."""

from __future__ import annotations

import ast
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbot.strategy import (
    MarketView,
    QuoteIntent,
    Rfq,
    Strategy,
    build_strategy,
    safe_quote,
)
from mmbot_strategies.fixed_spread import FixedSpread, FixedSpreadParams
from mmbot_strategies.inventory_skew import InventorySkew, InventorySkewParams
from mmbot_strategies.size_aware import SizeAware, SizeAwareParams
from tests.support.factories import GRIDS, TAILS_GRID, quotable_prices, rfq
from tests.support.factories import market_view as market
from tests.support.money import float_money_offences

D = Decimal
STRATEGIES_DIR = Path(__file__).parent.parent / "strategies"


QUOTABLE = {name: frozenset(quotable_prices(grid)) for name, grid in GRIDS.items()}


def q(yes: str, no: str) -> QuoteIntent:
    return QuoteIntent(D(yes), D(no))


def prices(intent: QuoteIntent | None) -> tuple[Decimal, Decimal]:
    """A decline counts as bidding 0 on both sides, for monotonicity comparisons."""
    return (D(0), D(0)) if intent is None else (intent.yes_bid, intent.no_bid)


def assert_valid(intent: QuoteIntent | None, grid: str, min_price: Decimal) -> None:
    """What every shipped strategy promises about a quote it returns."""
    if intent is None:
        return
    for price in (intent.yes_bid, intent.no_bid):
        assert isinstance(price, Decimal)
        assert price == 0 or price in QUOTABLE[grid], price  # on the grid, inside (0, 1)
        assert price == 0 or price >= min_price
    assert intent.yes_bid + intent.no_bid <= 1
    assert not (intent.yes_bid == 0 and intent.no_bid == 0)


# --------------------------------------------------------------------------- hypothesis inputs


@st.composite
def markets(draw: st.DrawFn, grid: str) -> MarketView:
    """Markets with a book on the grid, a last trade only, or an off-grid mid."""
    points = sorted(QUOTABLE[grid])
    kind = draw(st.sampled_from(["book", "last", "off_grid"]))
    position = draw(st.decimals(min_value=-3000, max_value=3000, places=2))
    bid: Decimal | None
    ask: Decimal | None
    last: Decimal | None
    if kind == "book":
        low = draw(st.integers(0, len(points) - 2))
        high = draw(st.integers(low + 1, len(points) - 1))
        bid, ask, last = points[low], points[high], None
    else:
        bid = ask = None
        if kind == "last":
            last = draw(st.sampled_from(points))
        else:
            last = draw(st.decimals(min_value="0.000001", max_value="0.999999", places=6))
    return MarketView(
        ticker="KXRAIN-25",
        event_ticker="KXRAIN",
        yes_bid=bid,
        yes_ask=ask,
        last_price=last,
        price_ranges=GRIDS[grid],
        position=position,
    )


@st.composite
def rfqs(draw: st.DrawFn) -> Rfq:
    """RFQs sized in contracts or in dollars, plain or combo."""
    combo = draw(st.booleans())
    extra = {"mve_collection_ticker": "KXMVE-X"} if combo else {}
    if draw(st.booleans()):
        size = draw(st.decimals(min_value="0.01", max_value=20000, places=2))
        return Rfq(id="r", market_ticker="KXRAIN-25", contracts_fp=size, **extra)
    cost = draw(st.decimals(min_value="0.01", max_value=8000, places=2))
    return Rfq(id="r", market_ticker="KXRAIN-25", target_cost_dollars=cost, **extra)


spreads = st.decimals(min_value=0, max_value="0.5", places=4)
min_prices = st.decimals(min_value=0, max_value="0.2", places=3)
grid_names = st.sampled_from(sorted(GRIDS))


# --------------------------------------------------------------------------- fixed spread


@pytest.mark.parametrize(
    ("view", "params", "expected"),
    [
        (market("0.40", "0.44"), {}, q("0.40", "0.56")),
        (market("0.40", "0.44"), {"half_spread": D("0.035")}, q("0.38", "0.54")),
        (market("0.40", "0.44"), {"half_spread": D(0)}, q("0.42", "0.58")),
        (market(None, "0.44", last_price="0.30"), {}, q("0.28", "0.68")),
        (market("0.950", "0.960"), {}, q("0.93", "0.02")),
        (market("0.050", "0.052", grid=TAILS_GRID), {}, q("0.031", "0.929")),
        (market("0.950", "0.960", grid=TAILS_GRID), {}, q("0.935", "0.025")),
        (market("0.45", "0.47", grid=TAILS_GRID), {}, q("0.44", "0.52")),
        # A side under min_price is declined, the other still quoted.
        (market("0.02", "0.03"), {}, q("0", "0.95")),
        (market("0.030", "0.040", grid=TAILS_GRID), {}, q("0.015", "0.945")),
        (market("0.030", "0.040", grid=TAILS_GRID), {"min_price": D("0.02")}, q("0", "0.945")),
    ],
)
def test_fixed_spread_quotes(
    view: MarketView, params: dict[str, Any], expected: QuoteIntent
) -> None:
    assert FixedSpread(FixedSpreadParams(**params)).quote(rfq(), view) == expected


def test_fixed_spread_ignores_size_and_position() -> None:
    strategy = FixedSpread(FixedSpreadParams())
    view = market(position=D(5000))
    assert strategy.quote(rfq("9999"), view) == strategy.quote(rfq(None, "10"), market())


@pytest.mark.parametrize(
    ("view", "params"),
    [
        (market(stale=True, age_seconds=9.0), {}),
        (market(None, None), {}),
        (market(None, None, last_price="1.00"), {}),
        (market(None, None, last_price="0"), {}),
        (market(grid=()), {}),  # no grid known: nothing is quotable
        (market("0.49", "0.51"), {"half_spread": D("0.5")}),  # both sides below zero
        (market("0.49", "0.51"), {"half_spread": D("0.45"), "min_price": D("0.06")}),
    ],
)
def test_fixed_spread_declines(view: MarketView, params: dict[str, Any]) -> None:
    assert FixedSpread(FixedSpreadParams(**params)).quote(rfq(), view) is None


def test_fixed_spread_can_quote_on_stale_data_when_told_to() -> None:
    strategy = FixedSpread(FixedSpreadParams(require_fresh=False))
    assert strategy.quote(rfq(), market(stale=True)) == q("0.40", "0.56")


@settings(max_examples=300)
@given(data=st.data(), grid=grid_names, half_spread=spreads, min_price=min_prices)
def test_fixed_spread_invariants(
    data: st.DataObject, grid: str, half_spread: Decimal, min_price: Decimal
) -> None:
    view = data.draw(markets(grid))
    params = FixedSpreadParams(half_spread=half_spread, min_price=min_price)
    intent = FixedSpread(params).quote(data.draw(rfqs()), view)
    assert_valid(intent, grid, min_price)
    if intent is not None:
        assert view.mid is not None
        assert intent.yes_bid == 0 or intent.yes_bid <= view.mid - half_spread
        assert intent.no_bid == 0 or intent.no_bid <= 1 - view.mid - half_spread


# --------------------------------------------------------------------------- inventory skew


def skew(**params: Any) -> InventorySkew:
    return InventorySkew(InventorySkewParams(**params))


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        ("0", q("0.40", "0.56")),  # flat: the fixed spread
        ("20", q("0.39", "0.57")),  # long YES: cheaper YES bid, dearer NO bid
        ("-20", q("0.41", "0.55")),  # long NO: the reverse
        ("99", q("0.35", "0.60")),  # shift 0.0495: 0.3505 and 0.6095 rounded down
        ("500", q("0.35", "0.61")),  # shift capped at max_skew
        ("-500", q("0.45", "0.51")),
    ],
)
def test_inventory_skew_quotes(position: str, expected: QuoteIntent) -> None:
    assert skew().quote(rfq("10"), market(position=D(position))) == expected


def test_inventory_skew_on_the_sub_penny_grid() -> None:
    view = market("0.050", "0.052", grid=TAILS_GRID, position=D(3))
    assert skew().quote(rfq("10"), view) == q("0.029", "0.930")


def test_inventory_skew_never_bids_a_dollar() -> None:
    # Long NO with YES near 1: the raw YES price passes 1 and is held below it.
    view = market("0.97", "0.99", position=D(-200))
    assert skew().quote(rfq("10"), view) == q("0.99", "0")
    tails = market("0.990", "0.994", grid=TAILS_GRID, position=D(-200))
    assert skew().quote(rfq("10"), tails) == q("0.999", "0")


def test_inventory_skew_direction_long_and_short() -> None:
    flat = prices(skew().quote(rfq("10"), market()))
    long = prices(skew().quote(rfq("10"), market(position=D(40))))
    short = prices(skew().quote(rfq("10"), market(position=D(-40))))
    assert long[0] < flat[0] < short[0]
    assert long[1] > flat[1] > short[1]


@settings(max_examples=200)
@given(
    view=markets("cent") | markets("tails"),
    positions=st.lists(
        st.decimals(min_value=-3000, max_value=3000, places=2), min_size=2, max_size=2
    ),
    skew_per_contract=st.decimals(min_value=0, max_value="0.01", places=5),
)
def test_inventory_skew_moves_prices_against_the_position(
    view: MarketView, positions: list[Decimal], skew_per_contract: Decimal
) -> None:
    low, high = sorted(positions)
    strategy = skew(skew_per_contract=skew_per_contract, max_position=D(10**9))
    at_low = prices(strategy.quote(rfq("1"), _with_position(view, low)))
    at_high = prices(strategy.quote(rfq("1"), _with_position(view, high)))
    assert at_high[0] <= at_low[0]  # more YES held: never a higher YES bid
    assert at_high[1] >= at_low[1]  # ... and never a lower NO bid


def _with_position(view: MarketView, position: Decimal) -> MarketView:
    return MarketView(
        ticker=view.ticker,
        event_ticker=view.event_ticker,
        yes_bid=view.yes_bid,
        yes_ask=view.yes_ask,
        last_price=view.last_price,
        price_ranges=view.price_ranges,
        position=position,
    )


@pytest.mark.parametrize(
    ("position", "request_", "expected"),
    [
        # 950 + 100 YES would pass 1000: YES declined; NO (which reduces it) still quoted.
        ("950", rfq("100"), q("0", "0.61")),
        ("900", rfq("100"), q("0.35", "0.61")),  # exactly 1000 is allowed
        ("-950", rfq("100"), q("0.45", "0")),
        ("1500", rfq("100"), q("0", "0.61")),  # over the limit: only the reducing side
        # Target cost: $10 buys 28 YES at 0.35 (1018 > 1000); $3 buys 8 (998).
        ("990", rfq(None, "10"), q("0", "0.61")),
        ("990", rfq(None, "3"), q("0.35", "0.61")),
        # No size at all: only a position already at the limit blocks a side.
        ("1000", rfq(None, None), q("0", "0.61")),
        ("999", rfq(None, None), q("0.35", "0.61")),
    ],
)
def test_inventory_skew_position_limit(position: str, request_: Rfq, expected: QuoteIntent) -> None:
    assert skew().quote(request_, market(position=D(position))) == expected


def test_inventory_skew_position_limit_on_both_sides_declines() -> None:
    strategy = skew(max_position=D(50))
    assert strategy.quote(rfq("100"), market(position=D(0))) is None


@pytest.mark.parametrize(
    "view",
    [
        market(stale=True),
        market(None, None),
        market(None, None, last_price="1"),
        market(grid=()),
    ],
)
def test_inventory_skew_declines(view: MarketView) -> None:
    assert skew().quote(rfq(), view) is None


def test_inventory_skew_can_quote_on_stale_data_when_told_to() -> None:
    assert skew(require_fresh=False).quote(rfq(), market(stale=True)) == q("0.40", "0.56")


@settings(max_examples=300)
@given(
    data=st.data(),
    grid=grid_names,
    half_spread=spreads,
    skew_per_contract=st.decimals(min_value=0, max_value="0.01", places=5),
    max_skew=st.decimals(min_value=0, max_value=1, places=3),
    max_position=st.decimals(min_value=1, max_value=5000, places=0),
    min_price=min_prices,
)
def test_inventory_skew_invariants(
    data: st.DataObject,
    grid: str,
    half_spread: Decimal,
    skew_per_contract: Decimal,
    max_skew: Decimal,
    max_position: Decimal,
    min_price: Decimal,
) -> None:
    view = data.draw(markets(grid))
    request = data.draw(rfqs())
    strategy = skew(
        half_spread=half_spread,
        skew_per_contract=skew_per_contract,
        max_skew=max_skew,
        max_position=max_position,
        min_price=min_price,
    )
    intent = strategy.quote(request, view)
    assert_valid(intent, grid, min_price)
    if intent is not None and request.contracts_fp is not None:
        if intent.yes_bid > 0:
            assert view.position + request.contracts_fp <= max_position
        if intent.no_bid > 0:
            assert view.position - request.contracts_fp >= -max_position


# --------------------------------------------------------------------------- size aware


def sized(**params: Any) -> SizeAware:
    return SizeAware(SizeAwareParams(**params))


@pytest.mark.parametrize(
    ("request_", "view", "params", "expected"),
    [
        (rfq("1000"), market(), {}, q("0.39", "0.55")),  # half spread 0.03
        (rfq("1"), market(), {}, q("0.39", "0.55")),  # 0.02001: 0.39999 rounds down
        (rfq("1"), market(grid=TAILS_GRID), {}, q("0.39", "0.55")),
        (rfq("10000"), market(), {}, q("0.32", "0.48")),  # 0.12 capped at 0.10
        (rfq("100"), market(), {"per_contract": D("0.0001")}, q("0.39", "0.55")),
        (rfq("300"), market(), {"per_contract": D("0.0001")}, q("0.37", "0.53")),
        # $42 is 100 contracts of YES at 0.42 (0.03) but 72.4 of NO at 0.58 (0.0272).
        (rfq(None, "42"), market(), {"per_contract": D("0.0001")}, q("0.39", "0.55")),
        (
            rfq(None, "5.1"),
            market("0.050", "0.052", grid=TAILS_GRID),
            {"per_contract": D("0.0001")},
            q("0.021", "0.928"),
        ),
        # The cheap side's estimate (1000 / 0.10 = 10000) is over max_contracts: declined.
        (rfq(None, "1000"), market("0.09", "0.11"), {"max_contracts": D(5000)}, q("0", "0.86")),
        (rfq("100"), market(age_seconds=2.0), {}, q("0.39", "0.55")),
        (
            rfq("100", mve_collection_ticker="KXMVE-X"),
            market(),
            {"quote_combos": True},
            q("0.39", "0.55"),
        ),
    ],
)
def test_size_aware_quotes(
    request_: Rfq, view: MarketView, params: dict[str, Any], expected: QuoteIntent
) -> None:
    assert sized(**params).quote(request_, view) == expected


@pytest.mark.parametrize(
    ("request_", "view", "params"),
    [
        (rfq(), market(stale=True), {}),
        (rfq(), market(age_seconds=2.5), {}),
        (rfq(), market(age_seconds=1.5), {"max_age_seconds": 1.0}),
        (rfq(mve_collection_ticker="KXMVE-X"), market(), {}),
        (rfq("10001"), market(), {}),
        (rfq("501"), market(), {"max_contracts": D(500)}),
        (rfq(None, "5000.01"), market(), {}),
        (rfq(None, "101"), market(), {"max_target_cost": D(100)}),
        (rfq(None, None), market(), {}),
        (rfq("0"), market(), {}),
        (rfq(None, "0"), market(), {}),
        (rfq(), market(None, None), {}),
        (rfq(), market(None, None, last_price="0"), {}),
        (rfq(), market(grid=()), {}),
        (rfq("100"), market("0.49", "0.51"), {"base_half_spread": D("0.5"), "max_half_spread": 1}),
    ],
)
def test_size_aware_declines(request_: Rfq, view: MarketView, params: dict[str, Any]) -> None:
    assert sized(**params).quote(request_, view) is None


@settings(max_examples=200)
@given(
    view=markets("cent") | markets("tails"),
    sizes=st.lists(
        st.decimals(min_value="0.01", max_value=20000, places=2), min_size=2, max_size=2
    ),
    per_contract=st.decimals(min_value=0, max_value="0.001", places=6),
    in_dollars=st.booleans(),
)
def test_size_aware_widening_is_monotonic_in_size(
    view: MarketView, sizes: list[Decimal], per_contract: Decimal, in_dollars: bool
) -> None:
    small, large = sorted(sizes)
    strategy = sized(per_contract=per_contract, max_half_spread=D("0.5"))

    def quote(size: Decimal) -> tuple[Decimal, Decimal]:
        request = rfq(None, str(size)) if in_dollars else rfq(str(size))
        return prices(strategy.quote(request, view))

    at_small, at_large = quote(small), quote(large)
    assert at_large[0] <= at_small[0]
    assert at_large[1] <= at_small[1]


@settings(max_examples=300)
@given(
    data=st.data(),
    grid=grid_names,
    base=st.decimals(min_value=0, max_value="0.3", places=4),
    extra=st.decimals(min_value=0, max_value="0.3", places=4),
    per_contract=st.decimals(min_value=0, max_value="0.001", places=6),
    min_price=min_prices,
    quote_combos=st.booleans(),
)
def test_size_aware_invariants(
    data: st.DataObject,
    grid: str,
    base: Decimal,
    extra: Decimal,
    per_contract: Decimal,
    min_price: Decimal,
    quote_combos: bool,
) -> None:
    view = data.draw(markets(grid))
    request = data.draw(rfqs())
    params = SizeAwareParams(
        base_half_spread=base,
        per_contract=per_contract,
        max_half_spread=base + extra,
        min_price=min_price,
        quote_combos=quote_combos,
    )
    intent = SizeAware(params).quote(request, view)
    assert_valid(intent, grid, min_price)
    if intent is not None:
        assert quote_combos or not request.is_combo
        if request.contracts_fp is not None:
            assert request.contracts_fp <= params.max_contracts
        else:
            assert request.target_cost_dollars is not None
            assert request.target_cost_dollars <= params.max_target_cost


# --------------------------------------------------------------------------- all three


SHIPPED: list[type[Strategy[Any]]] = [FixedSpread, InventorySkew, SizeAware]


@pytest.mark.parametrize("cls", SHIPPED, ids=lambda c: c.name)
@given(data=st.data(), grid=grid_names)
def test_shipped_quotes_pass_the_daemons_checks(
    cls: type[Strategy[Any]], data: st.DataObject, grid: str
) -> None:
    strategy = build_strategy(cls.name, {})
    intent, reason = safe_quote(strategy, data.draw(rfqs()), data.draw(markets(grid)))
    assert reason is None
    assert_valid(intent, grid, D("0.01"))


@pytest.mark.parametrize("cls", SHIPPED, ids=lambda c: c.name)
def test_every_parameter_is_documented(cls: type[Strategy[Any]]) -> None:
    module_doc = sys.modules[cls.__module__].__doc__ or ""
    readme = (STRATEGIES_DIR / "README.md").read_text()
    for name in cls.Params.model_fields:
        assert f"``{name}``" in module_doc, name
        assert f"`{name}`" in readme, name
    assert "Declines (returns None) when" in module_doc


@pytest.mark.parametrize("cls", SHIPPED, ids=lambda c: c.name)
def test_money_parameters_are_decimal(cls: type[Strategy[Any]]) -> None:
    for name, field in cls.Params.model_fields.items():
        if field.annotation is float:
            assert name.endswith("_seconds"), name
        assert field.annotation in (Decimal, bool, float), name


@pytest.mark.parametrize("path", sorted(STRATEGIES_DIR.glob("*.py")), ids=lambda p: p.name)
def test_no_money_named_float_in_strategies(path: Path) -> None:
    assert float_money_offences(ast.parse(path.read_text(encoding="utf-8"))) == []
