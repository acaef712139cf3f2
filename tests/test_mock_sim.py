"""Mock exchange simulation: price grids, market walks, requester streams and choices."""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbot.kalshi.models import Market, PriceRange, QuoteAcceptedMsg, maker_fill_for_accept
from mmbot.mock.sim import (
    CENT_GRID,
    CENT_STRUCTURE,
    DECI_CENT_TAILS_GRID,
    DECI_CENT_TAILS_STRUCTURE,
    FAIR_MAX_MICROS,
    FAIR_MIN_MICROS,
    GRIDS,
    MVE_COLLECTION_TICKER,
    Acceptance,
    PriceBand,
    QuoteView,
    RfqPlan,
    RfqStream,
    SimMarket,
    accept_side_for,
    choose_quote,
    generate_markets,
    grid_prices,
    is_quotable,
    micros_to_decimal,
    on_grid,
    price_ranges,
    replan_reservation,
    requester_price,
    reservation_from,
    snap_down,
    snap_up,
    tick_at,
)

D = Decimal
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STRUCTURES = st.sampled_from(sorted(GRIDS))


def make_market(
    fair_micros: int = 500_000,
    structure: str = CENT_STRUCTURE,
    half_spread_ticks: int = 1,
    vol: int = 1_000,
) -> SimMarket:
    return SimMarket(
        ticker="MOCK-T01-1",
        event_ticker="MOCK-T01",
        series_ticker="MOCKT",
        title="Test?",
        yes_sub_title="Yes",
        no_sub_title="No",
        hvm=False,
        mve_collection_ticker=None,
        grid=GRIDS[structure],
        price_level_structure=structure,
        fair_micros=fair_micros,
        half_spread_ticks=half_spread_ticks,
        open_time=NOW,
        close_time=NOW.replace(year=2027),
        vol_micros_per_sqrt_s=vol,
    )


# --------------------------------------------------------------------------- grids


def test_preset_grids_have_the_expected_prices() -> None:
    cent = grid_prices(CENT_GRID)
    assert len(cent) == 99
    assert (cent[0], cent[-1]) == (D("0.01"), D("0.99"))
    tails = grid_prices(DECI_CENT_TAILS_GRID)
    # 99 + 99 tail prices, 0.10 and 0.90 once each, 79 cent prices strictly between.
    assert len(tails) == 99 + 99 + 2 + 79
    assert (tails[0], tails[-1]) == (D("0.001"), D("0.999"))
    assert list(tails) == sorted(set(tails))
    for grid in GRIDS.values():
        points = grid_prices(grid)
        assert {D(1) - p for p in points} == set(points)


@pytest.mark.parametrize(
    ("price", "grid", "expected"),
    [
        ("0.37", CENT_GRID, True),
        ("0.370000", CENT_GRID, True),
        ("0.375", CENT_GRID, False),
        ("0.001", CENT_GRID, False),
        ("0", CENT_GRID, True),
        ("1", CENT_GRID, True),
        ("1.01", CENT_GRID, False),
        ("-0.01", CENT_GRID, False),
        ("0.005", DECI_CENT_TAILS_GRID, True),
        ("0.1", DECI_CENT_TAILS_GRID, True),
        ("0.105", DECI_CENT_TAILS_GRID, False),
        ("0.11", DECI_CENT_TAILS_GRID, True),
        ("0.505", DECI_CENT_TAILS_GRID, False),
        ("0.9", DECI_CENT_TAILS_GRID, True),
        ("0.955", DECI_CENT_TAILS_GRID, True),
        ("0.9555", DECI_CENT_TAILS_GRID, False),
        ("NaN", CENT_GRID, False),
        ("Infinity", CENT_GRID, False),
    ],
)
def test_on_grid(price: str, grid: tuple[PriceBand, ...], expected: bool) -> None:
    assert on_grid(D(price), grid) is expected


def test_band_ends_are_on_grid_but_not_quotable() -> None:
    for grid in GRIDS.values():
        assert on_grid(D(0), grid)
        assert on_grid(D(1), grid)
        assert not is_quotable(D(0), grid)
        assert not is_quotable(D(1), grid)
    assert is_quotable(D("0.999"), DECI_CENT_TAILS_GRID)
    assert not is_quotable(D("0.999"), CENT_GRID)


@given(
    thousandths=st.integers(min_value=-100, max_value=1_100),
    structure=STRUCTURES,
)
def test_on_grid_agrees_with_the_wire_model(thousandths: int, structure: str) -> None:
    grid = GRIDS[structure]
    price = D(thousandths).scaleb(-3)
    market = Market(
        ticker="X",
        price_ranges=tuple(PriceRange.model_validate(r) for r in price_ranges(grid)),
    )
    assert on_grid(price, grid) is market.is_on_grid(price)


@pytest.mark.parametrize(
    ("price", "grid", "down", "up"),
    [
        ("0.375", CENT_GRID, "0.37", "0.38"),
        ("0.37", CENT_GRID, "0.37", "0.37"),
        ("0", CENT_GRID, "0.01", "0.01"),
        ("1", CENT_GRID, "0.99", "0.99"),
        ("-3", CENT_GRID, "0.01", "0.01"),
        ("7", CENT_GRID, "0.99", "0.99"),
        ("0.005", CENT_GRID, "0.01", "0.01"),
        ("0.995", CENT_GRID, "0.99", "0.99"),
        ("0", DECI_CENT_TAILS_GRID, "0.001", "0.001"),
        ("0.0004", DECI_CENT_TAILS_GRID, "0.001", "0.001"),
        ("1", DECI_CENT_TAILS_GRID, "0.999", "0.999"),
        ("0.9996", DECI_CENT_TAILS_GRID, "0.999", "0.999"),
        ("0.0995", DECI_CENT_TAILS_GRID, "0.099", "0.100"),
        ("0.1", DECI_CENT_TAILS_GRID, "0.100", "0.100"),
        ("0.1005", DECI_CENT_TAILS_GRID, "0.100", "0.110"),
        ("0.8999", DECI_CENT_TAILS_GRID, "0.890", "0.900"),
        ("0.9005", DECI_CENT_TAILS_GRID, "0.900", "0.901"),
        ("0.5", DECI_CENT_TAILS_GRID, "0.50", "0.50"),
    ],
)
def test_snapping(price: str, grid: tuple[PriceBand, ...], down: str, up: str) -> None:
    assert snap_down(D(price), grid) == D(down)
    assert snap_up(D(price), grid) == D(up)


@given(micros=st.integers(min_value=-200_000, max_value=1_200_000), structure=STRUCTURES)
def test_snapped_prices_are_the_nearest_quotable_neighbours(micros: int, structure: str) -> None:
    grid = GRIDS[structure]
    price = micros_to_decimal(micros)
    down, up = snap_down(price, grid), snap_up(price, grid)
    assert is_quotable(down, grid)
    assert is_quotable(up, grid)
    assert down <= up
    points = grid_prices(grid)
    if points[0] <= price <= points[-1]:
        assert down <= price <= up
        assert not any(down < p < up for p in points)
        assert (down == up) is on_grid(price, grid)


def test_snapping_refuses_non_finite_prices() -> None:
    with pytest.raises(ValueError, match="finite"):
        snap_down(D("NaN"), CENT_GRID)
    with pytest.raises(ValueError, match="finite"):
        snap_up(D("-Infinity"), CENT_GRID)


@pytest.mark.parametrize(
    ("price", "grid", "tick"),
    [
        ("0.50", CENT_GRID, "0.01"),
        ("0.01", CENT_GRID, "0.01"),
        ("0.05", DECI_CENT_TAILS_GRID, "0.001"),
        ("0.50", DECI_CENT_TAILS_GRID, "0.01"),
        ("0.10", DECI_CENT_TAILS_GRID, "0.001"),
        ("0.90", DECI_CENT_TAILS_GRID, "0.001"),
        ("0.95", DECI_CENT_TAILS_GRID, "0.001"),
    ],
)
def test_tick_at(price: str, grid: tuple[PriceBand, ...], tick: str) -> None:
    assert tick_at(D(price), grid) == D(tick)


def test_tick_at_outside_the_grid_is_an_error() -> None:
    with pytest.raises(ValueError, match="outside"):
        tick_at(D("1.5"), CENT_GRID)


@pytest.mark.parametrize(
    ("start", "end", "step"),
    [("0.5", "0.5", "0.01"), ("0", "1", "0"), ("0", "1", "0.03"), ("-0.1", "1", "0.1")],
)
def test_bad_bands_are_refused(start: str, end: str, step: str) -> None:
    with pytest.raises(ValueError, match="band"):
        PriceBand(D(start), D(end), D(step))


def test_bands_refuse_floats() -> None:
    with pytest.raises(TypeError, match="Decimal"):
        PriceBand(0.0, D(1), D("0.01"))  # type: ignore[arg-type]


def test_price_ranges_are_wire_strings() -> None:
    assert price_ranges(DECI_CENT_TAILS_GRID)[1] == {
        "start": "0.100",
        "end": "0.900",
        "step": "0.01",
    }


def test_structure_names() -> None:
    assert GRIDS[CENT_STRUCTURE] is CENT_GRID
    assert GRIDS[DECI_CENT_TAILS_STRUCTURE] is DECI_CENT_TAILS_GRID
    assert CENT_STRUCTURE == "linear_cent"


# --------------------------------------------------------------------------- markets


def assert_quotes_sane(market: SimMarket) -> None:
    bid, ask = market.yes_bid(), market.yes_ask()
    assert D(0) < bid < ask < D(1)
    assert is_quotable(bid, market.grid)
    assert is_quotable(ask, market.grid)
    assert market.no_bid() == D(1) - ask
    assert market.no_ask() == D(1) - bid
    assert is_quotable(market.no_bid(), market.grid)
    assert is_quotable(market.no_ask(), market.grid)
    assert FAIR_MIN_MICROS <= market.fair_micros <= FAIR_MAX_MICROS


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    structure=STRUCTURES,
    fair=st.integers(min_value=FAIR_MIN_MICROS, max_value=FAIR_MAX_MICROS),
    half_spread=st.integers(min_value=1, max_value=6),
    vol=st.sampled_from([0, 1_000, 20_000, 300_000]),
    dts=st.lists(st.sampled_from([0.0, 0.001, 0.1, 1.0, 7.5, 60.0, 3600.0]), max_size=40),
)
def test_quotes_stay_sane_along_random_walks(
    seed: int, structure: str, fair: int, half_spread: int, vol: int, dts: list[float]
) -> None:
    market = make_market(fair, structure, half_spread, vol)
    rng = random.Random(seed)
    assert_quotes_sane(market)
    for dt in dts:
        market.step(rng, dt)
        assert isinstance(market.fair_micros, int)
        assert_quotes_sane(market)


@pytest.mark.parametrize("structure", sorted(GRIDS))
@pytest.mark.parametrize("fair", [FAIR_MIN_MICROS, 10_500, 500_000, 989_500, FAIR_MAX_MICROS])
@pytest.mark.parametrize("half_spread", [1, 3, 50])
def test_quotes_at_the_edges(structure: str, fair: int, half_spread: int) -> None:
    assert_quotes_sane(make_market(fair, structure, half_spread))


def test_quotes_straddle_fair() -> None:
    on = make_market(500_000, CENT_STRUCTURE, 2)
    assert (on.yes_bid(), on.yes_ask()) == (D("0.48"), D("0.52"))
    between = make_market(503_000, CENT_STRUCTURE, 1)
    assert (between.yes_bid(), between.yes_ask()) == (D("0.50"), D("0.51"))
    tail = make_market(45_500, DECI_CENT_TAILS_STRUCTURE, 2)
    assert (tail.yes_bid(), tail.yes_ask()) == (D("0.044"), D("0.047"))
    assert tail.fair() == D("0.045500")


def test_fair_stays_in_bounds_after_many_wild_steps() -> None:
    rng = random.Random(11)
    for structure in GRIDS:
        market = make_market(500_000, structure, 1, vol=400_000)
        seen = set()
        for _ in range(5_000):
            market.step(rng, rng.choice([0.01, 1.0, 100.0]))
            assert FAIR_MIN_MICROS <= market.fair_micros <= FAIR_MAX_MICROS
            seen.add(market.fair_micros // 100_000)
        assert len(seen) >= 8  # the walk really roams the whole range


def test_the_walk_is_pulled_away_from_the_edges() -> None:
    low = make_market(FAIR_MIN_MICROS, vol=0)
    high = make_market(FAIR_MAX_MICROS, vol=0)
    rng = random.Random(0)
    for _ in range(100):
        low.step(rng, 1.0)
        high.step(rng, 1.0)
    assert 40_000 < low.fair_micros <= 50_000
    assert 950_000 <= high.fair_micros < 960_000


def test_step_scales_with_sqrt_dt() -> None:
    def spread(dt: float) -> float:
        market = make_market(500_000, vol=1_000)
        rng = random.Random(5)
        moves = []
        for _ in range(3_000):
            before = market.fair_micros
            market.step(rng, dt)
            moves.append(market.fair_micros - before)
            market.fair_micros = 500_000
        return math.sqrt(sum(m * m for m in moves) / len(moves))

    one, four = spread(1.0), spread(4.0)
    assert 900 < one < 1_100
    assert 1.8 < four / one < 2.2


def test_step_is_deterministic_and_zero_dt_draws_nothing() -> None:
    a, b = make_market(), make_market()
    rng_a, rng_b = random.Random(3), random.Random(3)
    for _ in range(200):
        a.step(rng_a, 2.0)
        b.step(rng_b, 2.0)
    assert a.fair_micros == b.fair_micros
    state = rng_a.getstate()
    before = a.fair_micros
    a.step(rng_a, 0.0)
    a.step(rng_a, -1.0)
    assert rng_a.getstate() == state
    assert a.fair_micros == before


@pytest.mark.parametrize("structure", sorted(GRIDS))
@pytest.mark.parametrize("fair", [FAIR_MIN_MICROS, 37_000, 412_345, 500_000, FAIR_MAX_MICROS])
def test_orderbook_levels(structure: str, fair: int) -> None:
    market = make_market(fair, structure, 2)
    yes, no = market.orderbook(5, random.Random(9))
    assert (yes, no) == market.orderbook(5, random.Random(9))
    for levels, best in ((yes, market.yes_bid()), (no, market.no_bid())):
        assert 1 <= len(levels) <= 5
        prices = [price for price, _ in levels]
        assert prices == sorted(set(prices))
        assert prices[-1] == best
        points = grid_prices(market.grid)
        top = points.index(best)
        assert prices == list(points[top - len(prices) + 1 : top + 1])
        for price, contracts in levels:
            assert is_quotable(price, market.grid)
            assert contracts > 0
            assert contracts == contracts.to_integral_value()
    assert yes[-1][0] + no[-1][0] < 1  # the book does not cross
    assert market.orderbook(0, random.Random(9)) == ([], [])


def test_orderbook_depth_is_cut_at_the_grid_edge() -> None:
    market = make_market(FAIR_MIN_MICROS, CENT_STRUCTURE, 1)
    yes, no = market.orderbook(10, random.Random(1))
    assert [p for p, _ in yes] == [D("0.01")]
    assert len(no) == 10


@pytest.mark.parametrize(
    "changes",
    [
        {"fair_micros": FAIR_MIN_MICROS - 1},
        {"fair_micros": FAIR_MAX_MICROS + 1},
        {"half_spread_ticks": 0},
        {"mve_collection_ticker": "KXMVE-X"},
        {"grid": (PriceBand(D("0"), D("0.5"), D("0.01")),)},
    ],
)
def test_market_validation(changes: dict[str, object]) -> None:
    base = make_market()
    fields = {name: getattr(base, name) for name in SimMarket.__dataclass_fields__}
    fields.update(changes)
    with pytest.raises(ValueError, match=r"fair_micros|half_spread|High Volatility|symmetric"):
        SimMarket(**fields)


def test_timing_windows_follow_hvm() -> None:
    market = make_market()
    assert (market.confirmation_window_seconds, market.execution_timer_seconds) == (30.0, 15.0)
    market.hvm = True
    assert (market.confirmation_window_seconds, market.execution_timer_seconds) == (3.0, 1.0)


# --------------------------------------------------------------------------- generation


def test_generate_markets_is_deterministic() -> None:
    first = generate_markets(60, random.Random(7), hvm_fraction=0.3, now=NOW)
    again = generate_markets(60, random.Random(7), hvm_fraction=0.3, now=NOW)
    other = generate_markets(60, random.Random(8), hvm_fraction=0.3, now=NOW)
    assert first == again
    assert first != other


def test_generate_markets_shape() -> None:
    markets = generate_markets(100, random.Random(1), hvm_fraction=0.3, now=NOW)
    assert len(markets) == 100
    tickers = [m.ticker for m in markets]
    assert len(set(tickers)) == 100
    for m in markets:
        assert re.fullmatch(r"MOCK-[A-Z]+\d{2}-\d+", m.ticker)
        assert m.ticker.startswith(m.event_ticker + "-")
        assert GRIDS[m.price_level_structure] == m.grid
        assert m.open_time < NOW < m.close_time
        assert_quotes_sane(m)
        if m.hvm:
            assert m.mve_collection_ticker == MVE_COLLECTION_TICKER
        else:
            assert m.mve_collection_ticker is None
    hvm = sum(m.hvm for m in markets)
    assert 15 <= hvm <= 45
    per_event = Counter(m.event_ticker for m in markets)
    assert 100 / 8 <= len(per_event) < 100 / 2
    assert all(size <= 8 for size in per_event.values())
    assert all(len({m.hvm for m in markets if m.event_ticker == e}) == 1 for e in per_event)
    assert {m.price_level_structure for m in markets} == set(GRIDS)
    assert len({m.fair_micros for m in markets}) > 80
    assert len({m.half_spread_ticks for m in markets}) >= 3


@pytest.mark.parametrize(("fraction", "expected"), [(0.0, 0), (1.0, 25), (0.5, 12)])
def test_generate_markets_hvm_extremes(fraction: float, expected: int) -> None:
    markets = generate_markets(25, random.Random(2), hvm_fraction=fraction, now=NOW)
    assert sum(m.hvm for m in markets) == expected


def test_generate_markets_edge_arguments() -> None:
    assert generate_markets(0, random.Random(0), hvm_fraction=0.5, now=NOW) == []
    with pytest.raises(ValueError, match="count"):
        generate_markets(-1, random.Random(0), hvm_fraction=0.5, now=NOW)
    with pytest.raises(ValueError, match="hvm_fraction"):
        generate_markets(5, random.Random(0), hvm_fraction=1.5, now=NOW)


# --------------------------------------------------------------------------- RFQ stream


def markets_for_stream() -> list[SimMarket]:
    return generate_markets(30, random.Random(4), hvm_fraction=0.3, now=NOW)


REQUESTERS = ("req-a", "req-b", "req-c")


def draw(stream: RfqStream, n: int) -> list[tuple[float, RfqPlan]]:
    out = []
    for _ in range(n):
        arrival = stream.next_arrival()
        assert arrival is not None
        out.append(arrival)
    return out


def test_same_seed_same_stream() -> None:
    a = draw(RfqStream(42, 3.0, markets_for_stream(), REQUESTERS), 200)
    b = draw(RfqStream(42, 3.0, markets_for_stream(), REQUESTERS), 200)
    c = draw(RfqStream(43, 3.0, markets_for_stream(), REQUESTERS), 200)
    assert a == b
    assert [gap for gap, _ in a] != [gap for gap, _ in c]
    assert [plan for _, plan in a] != [plan for _, plan in c]


def test_stream_ignores_the_market_walk_and_global_random() -> None:
    still, walking = markets_for_stream(), markets_for_stream()
    quiet = RfqStream(42, 3.0, still, REQUESTERS)
    busy = RfqStream(42, 3.0, walking, REQUESTERS)
    walk_rng = random.Random(99)
    for _ in range(200):
        random.random()  # perturbing the global generator must not matter
        for market in walking:
            market.step(walk_rng, 30.0)
        (gap_q, plan_q), (gap_b, plan_b) = draw(quiet, 1)[0], draw(busy, 1)[0]
        assert gap_q == gap_b
        fair = next(m.fair_micros for m in walking if m.ticker == plan_b.market_ticker)
        assert plan_b.reservation == reservation_from(
            plan_b.wants, fair, plan_b.valuation_noise_micros
        )
        # Everything but the reservation is fixed by the seed alone.
        assert replan_reservation(plan_b, 500_000) == replan_reservation(plan_q, 500_000)


def test_plan_fields() -> None:
    markets = markets_for_stream()
    tickers = {m.ticker for m in markets}
    plans = [plan for _, plan in draw(RfqStream(1, 5.0, markets, REQUESTERS), 3_000)]
    by_cost = [p for p in plans if p.target_cost_dollars is not None]
    partial = [p for p in plans if p.partial_fraction is not None]
    assert 0.15 < len(by_cost) / len(plans) < 0.25
    assert 0.15 < len(partial) / len(plans) < 0.25
    assert {p.wants for p in plans} == {"yes", "no"}
    assert {p.requester for p in plans} == set(REQUESTERS)
    assert {p.rest_remainder for p in plans} == {True, False}
    assert len({p.market_ticker for p in plans}) == len(tickers)
    sizes = []
    for p in plans:
        assert (p.contracts is None) != (p.target_cost_dollars is None)
        assert p.market_ticker in tickers
        if p.contracts is not None:
            assert D(1) <= p.contracts <= D(1000)
            assert p.contracts == p.contracts.to_integral_value()
            sizes.append(p.contracts)
        else:
            assert p.target_cost_dollars is not None
            assert D(10) <= p.target_cost_dollars <= D(2000)
            assert p.target_cost_dollars == p.target_cost_dollars.quantize(D("0.01"))
        assert D(0) < p.reservation < D(1)
        assert p.reservation == p.reservation.quantize(D("0.000001"))
        assert 5.0 <= p.lifetime_seconds <= 60.0
        assert 0.2 <= p.decision_delay_seconds <= 3.0
        if p.partial_fraction is not None:
            assert D("0.25") <= p.partial_fraction <= D("0.90")
            assert p.partial_fraction == p.partial_fraction.quantize(D("0.01"))
    # Heavy tail: mostly small requests, yet some very large ones.
    assert sum(s < 10 for s in sizes) > len(sizes) // 4
    assert any(s >= 500 for s in sizes)


def test_reservation_tracks_the_wanted_outcome() -> None:
    assert reservation_from("yes", 300_000, 0) == D("0.320000")
    assert reservation_from("no", 300_000, 0) == D("0.720000")
    assert reservation_from("yes", 990_000, 50_000) == D("0.999999")
    assert reservation_from("no", 990_000, -50_000) == D("0.000001")


@pytest.mark.parametrize("rate", [4.0, 0.2])
def test_mean_gap_matches_the_rate(rate: float) -> None:
    stream = RfqStream(2024, rate, markets_for_stream(), REQUESTERS)
    gaps = [gap for gap, _ in draw(stream, 20_000)]
    assert all(gap >= 0 for gap in gaps)
    mean = sum(gaps) / len(gaps)
    # The standard error of the mean is (1/rate)/sqrt(20000), about 0.7%; allow 3%.
    assert abs(mean * rate - 1) < 0.03


@pytest.mark.parametrize("rate", [0.0, -1.0])
def test_zero_rate_means_no_rfqs(rate: float) -> None:
    stream = RfqStream(1, rate, markets_for_stream(), REQUESTERS)
    assert not stream.enabled
    assert stream.next_arrival() is None


def test_stream_needs_markets_requesters_and_a_finite_rate() -> None:
    assert RfqStream(1, 1.0, [], REQUESTERS).next_arrival() is None
    assert RfqStream(1, 1.0, markets_for_stream(), []).next_arrival() is None
    with pytest.raises(ValueError, match="finite"):
        RfqStream(1, float("nan"), markets_for_stream(), REQUESTERS)


# --------------------------------------------------------------------------- sides and choice


def test_accept_side_for() -> None:
    assert accept_side_for("yes") == "no"
    assert accept_side_for("no") == "yes"
    with pytest.raises(ValueError, match="wants"):
        accept_side_for("maybe")  # type: ignore[arg-type]


def test_requester_price() -> None:
    assert requester_price("yes", D("0.40"), D("0.55")) == D("0.60")
    assert requester_price("no", D("0.40"), D("0.55")) == D("0.45")
    with pytest.raises(ValueError, match="declined"):
        requester_price("yes", D("0"), D("0.55"))
    with pytest.raises(ValueError, match="declined"):
        requester_price("no", D("0.40"), D("0"))


@pytest.mark.parametrize("wants", ["yes", "no"])
def test_side_mapping_matches_the_maker_view(wants: str) -> None:
    side = accept_side_for(wants)  # type: ignore[arg-type]
    yes_bid, no_bid = D("0.41"), D("0.55")
    msg = QuoteAcceptedMsg(
        quote_id="q1",
        rfq_id="r1",
        quote_creator_id="maker",
        market_ticker="MOCK-T01-1",
        yes_bid_dollars=yes_bid,
        no_bid_dollars=no_bid,
        accepted_side=side,
        contracts_accepted_fp=D("10"),
    )
    fill = maker_fill_for_accept(msg)
    # The maker buys the outcome the requester does not want; together they pay $1.
    assert fill.side != wants
    assert fill.price + requester_price(side, yes_bid, no_bid) == D(1)


def plan(wants: str = "yes", reservation: str = "0.60", partial: str | None = None) -> RfqPlan:
    return RfqPlan(
        requester="req-a",
        market_ticker="MOCK-T01-1",
        contracts=D("100"),
        target_cost_dollars=None,
        rest_remainder=False,
        wants=wants,  # type: ignore[arg-type]
        reservation=D(reservation),
        lifetime_seconds=30.0,
        decision_delay_seconds=1.0,
        partial_fraction=None if partial is None else D(partial),
    )


def quote(quote_id: str, yes_bid: str, no_bid: str, seq: int) -> QuoteView:
    return QuoteView(quote_id=quote_id, yes_bid=D(yes_bid), no_bid=D(no_bid), created_seq=seq)


def test_choose_the_cheapest_quote_for_a_yes_buyer() -> None:
    quotes = [
        quote("a", "0.38", "0.55", 1),
        quote("b", "0.30", "0.58", 2),
        quote("c", "0.40", "0.50", 3),
    ]
    # A YES buyer hits no_bid and pays 1 - no_bid: "b" costs 0.42.
    assert choose_quote(plan("yes", "0.60"), quotes) == Acceptance("b", "no", None)


def test_choose_the_cheapest_quote_for_a_no_buyer() -> None:
    quotes = [
        quote("a", "0.38", "0.55", 1),
        quote("b", "0.30", "0.58", 2),
        quote("c", "0.40", "0.50", 3),
    ]
    # A NO buyer hits yes_bid and pays 1 - yes_bid: "c" costs 0.60.
    assert choose_quote(plan("no", "0.60", "0.5"), quotes) == Acceptance("c", "yes", D("0.5"))


def test_ties_go_to_the_earliest_quote() -> None:
    quotes = [quote("late", "0.40", "0.55", 9), quote("early", "0.41", "0.55", 4)]
    assert choose_quote(plan("yes"), quotes) == Acceptance("early", "no", None)
    assert choose_quote(plan("yes"), list(reversed(quotes))) == Acceptance("early", "no", None)


def test_declined_side_is_skipped() -> None:
    quotes = [quote("declines-no", "0.45", "0", 1), quote("ok", "0.30", "0.50", 2)]
    assert choose_quote(plan("yes"), quotes) == Acceptance("ok", "no", None)
    assert choose_quote(plan("yes"), [quotes[0]]) is None
    assert choose_quote(plan("no", "0.99"), [quote("declines-yes", "0", "0.6", 1)]) is None


def test_reservation_is_respected() -> None:
    quotes = [quote("a", "0.30", "0.40", 1)]  # a YES buyer would pay 0.60
    assert choose_quote(plan("yes", "0.60"), quotes) == Acceptance("a", "no", None)
    assert choose_quote(plan("yes", "0.599999"), quotes) is None
    assert choose_quote(plan("yes"), []) is None


@given(
    wants=st.sampled_from(["yes", "no"]),
    reservation=st.integers(min_value=1, max_value=99),
    bids=st.lists(
        st.tuples(st.integers(min_value=0, max_value=99), st.integers(min_value=0, max_value=99)),
        max_size=8,
    ),
)
def test_choice_is_the_cheapest_affordable_price(
    wants: str, reservation: int, bids: list[tuple[int, int]]
) -> None:
    quotes = [
        QuoteView(f"q{i}", D(y).scaleb(-2), D(n).scaleb(-2), created_seq=i)
        for i, (y, n) in enumerate(bids)
    ]
    p = plan(wants, str(D(reservation).scaleb(-2)))
    side = accept_side_for(p.wants)
    prices = [
        requester_price(side, q.yes_bid, q.no_bid)
        for q in quotes
        if (q.yes_bid if side == "yes" else q.no_bid) > 0
    ]
    chosen = choose_quote(p, quotes)
    if not prices or min(prices) > p.reservation:
        assert chosen is None
        return
    assert chosen is not None
    assert chosen.accepted_side == side
    picked = next(q for q in quotes if q.quote_id == chosen.quote_id)
    assert requester_price(side, picked.yes_bid, picked.no_bid) == min(prices)


def test_plans_hold_exactly_one_size() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        RfqPlan("r", "M", D(1), D(10), False, "yes", D("0.5"), 10.0, 1.0, None)
    with pytest.raises(ValueError, match="exactly one"):
        RfqPlan("r", "M", None, None, False, "yes", D("0.5"), 10.0, 1.0, None)
    with pytest.raises(ValueError, match="reservation"):
        RfqPlan("r", "M", D(1), None, False, "yes", D("1"), 10.0, 1.0, None)
