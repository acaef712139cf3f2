"""Pure, deterministic simulation logic behind the mock Kalshi exchange.

Nothing here does I/O, reads a clock or touches global random state: time comes in as
arguments and every random draw comes from a :class:`random.Random` the caller owns, so
a seed replays a session exactly. Prices, probabilities used as prices, sizes and money
are :class:`~decimal.Decimal` values or integer micro-units (1e-6); floats appear only
for seconds and rates per second.

Price grids
    A grid is a tuple of :class:`PriceBand` (the ``price_ranges`` of Kalshi's ``Market``).
    Two presets mirror Kalshi's ``price_level_structure`` values: ``"linear_cent"``
    (:data:`CENT_GRID`, one cent everywhere) and ``"tapered_deci_cent"``
    (:data:`DECI_CENT_TAILS_GRID`, a tenth of a cent below 0.10 and above 0.90).
    :func:`on_grid` is plain grid membership, exactly like ``Market.is_on_grid`` (so the
    band ends 0 and 1 count as "on grid"); a quotable price is also strictly inside
    (0, 1), see :func:`is_quotable`.

Side convention
    ``accepted_side="yes"`` hits the maker's ``yes_bid``: the maker buys YES and the
    requester ends up holding NO, paying ``1 - yes_bid`` per contract; ``"no"`` hits the
    ``no_bid`` and leaves the requester holding YES at ``1 - no_bid``. The mapping lives in
    :func:`accept_side_for` and :func:`requester_price` only.
"""

from __future__ import annotations

import bisect
import functools
import math
import random
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Literal

from mmbot.kalshi.models import Side

__all__ = [
    "CENT_GRID",
    "CENT_STRUCTURE",
    "COMBO_EXCHANGE_INDEX",
    "DECI_CENT_TAILS_GRID",
    "DECI_CENT_TAILS_STRUCTURE",
    "FAIR_MAX_MICROS",
    "FAIR_MIN_MICROS",
    "GRIDS",
    "MVE_COLLECTION_TICKER",
    "REQUESTER_PREMIUM_MICROS",
    "Acceptance",
    "Grid",
    "PriceBand",
    "QuoteView",
    "RfqPlan",
    "RfqStream",
    "SimMarket",
    "accept_side_for",
    "choose_quote",
    "generate_markets",
    "grid_prices",
    "is_quotable",
    "micros_to_decimal",
    "on_grid",
    "price_ranges",
    "replan_reservation",
    "requester_price",
    "reservation_from",
    "snap_down",
    "snap_up",
    "tick_at",
]

Wants = Literal["yes", "no"]

_ONE = Decimal(1)
_MICROS_PER_UNIT = 1_000_000
_CONTRACT_QUANTUM = Decimal("0.01")

# --------------------------------------------------------------------------- price grids


@dataclass(frozen=True, slots=True)
class PriceBand:
    """One band of a price grid: every price from ``start`` to ``end`` in ``step`` increments."""

    start: Decimal
    end: Decimal
    step: Decimal

    def __post_init__(self) -> None:
        for name in ("start", "end", "step"):
            if not isinstance(getattr(self, name), Decimal):
                raise TypeError(f"PriceBand.{name} must be a Decimal")
        if not (0 <= self.start < self.end <= 1) or self.step <= 0:
            raise ValueError(f"bad price band {self.start}..{self.end} step {self.step}")
        if (self.end - self.start) % self.step != 0:
            raise ValueError(f"band {self.start}..{self.end} is not a whole number of steps")

    def contains(self, price: Decimal) -> bool:
        """True when ``price`` lies within the band's closed range (on a step or not)."""
        return self.start <= price <= self.end


Grid = tuple[PriceBand, ...]

#: ``price_level_structure`` of the one-cent grid (Kalshi's name for it).
CENT_STRUCTURE = "linear_cent"
#: ``price_level_structure`` of the grid with tenth-of-a-cent steps in both tails.
DECI_CENT_TAILS_STRUCTURE = "tapered_deci_cent"

CENT_GRID: Grid = (PriceBand(Decimal("0.00"), Decimal("1.00"), Decimal("0.01")),)
DECI_CENT_TAILS_GRID: Grid = (
    PriceBand(Decimal("0.000"), Decimal("0.100"), Decimal("0.001")),
    PriceBand(Decimal("0.100"), Decimal("0.900"), Decimal("0.01")),
    PriceBand(Decimal("0.900"), Decimal("1.000"), Decimal("0.001")),
)
#: Every preset grid by its ``price_level_structure`` name.
GRIDS: Mapping[str, Grid] = MappingProxyType(
    {CENT_STRUCTURE: CENT_GRID, DECI_CENT_TAILS_STRUCTURE: DECI_CENT_TAILS_GRID}
)


@functools.lru_cache(maxsize=64)
def _interior_prices(bands: Grid) -> tuple[Decimal, ...]:
    if not bands:
        raise ValueError("a price grid needs at least one band")
    # One exponent for the whole grid, so 0.37 prints the same whichever band produced it.
    finest = min(
        int(value.as_tuple().exponent) for band in bands for value in (band.start, band.step)
    )
    exponent = Decimal(1).scaleb(finest)
    points: set[Decimal] = set()
    for band in bands:
        steps = int((band.end - band.start) // band.step)
        for k in range(steps + 1):
            price = band.start + k * band.step
            if 0 < price < 1:
                points.add(price.quantize(exponent))
    if len(points) < 2:
        raise ValueError("a price grid needs at least two prices strictly inside (0, 1)")
    return tuple(sorted(points))


def grid_prices(bands: Sequence[PriceBand]) -> tuple[Decimal, ...]:
    """Every quotable price of the grid (strictly inside (0, 1)), ascending, without repeats."""
    return _interior_prices(tuple(bands))


def _check_finite(price: Decimal) -> None:
    if not isinstance(price, Decimal) or not price.is_finite():
        raise ValueError(f"expected a finite Decimal price, got {price!r}")


def on_grid(price: Decimal, bands: Sequence[PriceBand]) -> bool:
    """True when ``price`` sits on a step of some band (same rule as ``Market.is_on_grid``)."""
    if not isinstance(price, Decimal) or not price.is_finite():
        return False
    return any(band.contains(price) and (price - band.start) % band.step == 0 for band in bands)


def is_quotable(price: Decimal, bands: Sequence[PriceBand]) -> bool:
    """True when ``price`` is on the grid and strictly inside (0, 1), i.e. a real bid price."""
    return on_grid(price, bands) and 0 < price < 1


def snap_down(price: Decimal, bands: Sequence[PriceBand]) -> Decimal:
    """Largest grid price <= ``price``, clamped into the grid's quotable range."""
    _check_finite(price)
    points = grid_prices(bands)
    index = bisect.bisect_right(points, price) - 1
    return points[max(index, 0)]


def snap_up(price: Decimal, bands: Sequence[PriceBand]) -> Decimal:
    """Smallest grid price >= ``price``, clamped into the grid's quotable range."""
    _check_finite(price)
    points = grid_prices(bands)
    index = bisect.bisect_left(points, price)
    return points[min(index, len(points) - 1)]


def tick_at(price: Decimal, bands: Sequence[PriceBand]) -> Decimal:
    """Step of the band holding ``price``; on a boundary shared by two bands, the finer step."""
    _check_finite(price)
    steps = [band.step for band in bands if band.contains(price)]
    if not steps:
        raise ValueError(f"price {price} is outside every band of the grid")
    return min(steps)


def price_ranges(bands: Sequence[PriceBand]) -> list[dict[str, str]]:
    """The grid as the wire's ``price_ranges`` array of ``PriceRange`` objects."""
    return [{"start": str(b.start), "end": str(b.end), "step": str(b.step)} for b in bands]


@functools.lru_cache(maxsize=64)
def _is_symmetric(bands: Grid) -> bool:
    points = _interior_prices(bands)
    return {_ONE - p for p in points} == set(points)


def micros_to_decimal(micros: int) -> Decimal:
    """An integer amount of millionths as a 6-decimal Decimal (``523417`` -> ``0.523417``)."""
    return Decimal(micros).scaleb(-6)


# --------------------------------------------------------------------------- markets

#: Bounds of a market's hidden fair probability, in millionths.
FAIR_MIN_MICROS = 10_000
FAIR_MAX_MICROS = 990_000
# Inside this zone the walk is pulled back toward the middle, so markets do not sit glued
# to the hard bounds where a one-sided book makes quoting degenerate.
_SOFT_MIN_MICROS = 50_000
_SOFT_MAX_MICROS = 950_000
# Share of the distance back to the soft zone recovered per second (as a fraction of 1e6).
_PULL_PER_SECOND_MICROS = 50_000

#: Collection ticker carried by every generated combo (MVE) market.
MVE_COLLECTION_TICKER = "KXMVE-MOCK"
#: ``exchange_index`` of generated combo markets; every other market is on shard 0.
COMBO_EXCHANGE_INDEX = 1

# Approximate standard normal draw: the sum of three uniform integers on [-1000, 1000]
# has variance 3 * (2001**2 - 1) / 12 = 1_001_001, so dividing by 1000 gives std ~1.0005.
_SHOCK_TERMS = 3
_SHOCK_HALF_RANGE = 1_000
_SHOCK_SCALE = 1_000


def _div_round(numerator: int, denominator: int) -> int:
    # Round half away from zero: floor division would bias every negative shock downward.
    magnitude = (abs(numerator) + denominator // 2) // denominator
    return magnitude if numerator >= 0 else -magnitude


@functools.lru_cache(maxsize=4096)
def _level_sizes(ticker: str, side: str, count: int) -> tuple[Decimal, ...]:
    """Contracts resting at each of ``count`` grid prices on one side of a market's book."""
    sizes = []
    for index in range(count):
        # A hash rather than a draw: the size at a price must not change as the fair value
        # moves. Lower prices (deeper on either side) rest more, as far from the touch.
        base = 1 + zlib.crc32(f"{ticker}:{side}:{index}".encode()) % 50
        depth_factor = 1 + (count - 1 - index) * 4 // max(count, 1)
        sizes.append(Decimal(base * depth_factor).quantize(_CONTRACT_QUANTUM))
    return tuple(sizes)


@dataclass(slots=True)
class SimMarket:
    """A simulated market with a hidden fair value that random-walks over time."""

    ticker: str
    event_ticker: str
    series_ticker: str
    title: str
    yes_sub_title: str
    no_sub_title: str
    hvm: bool
    mve_collection_ticker: str | None
    grid: Grid
    price_level_structure: str
    fair_micros: int
    half_spread_ticks: int
    open_time: datetime
    close_time: datetime
    #: Volatility of the fair value: standard deviation in millionths per sqrt(second).
    vol_micros_per_sqrt_s: int = 1_000
    #: The exchange shard the market lives on (``exchange_index``).
    exchange_index: int = 0
    #: ``settlement_floor_dollars`` of a market whose ``settlement_bounds_type`` is
    #: ``floor``; None for a ``default`` market, which never gets a floor.
    settlement_floor: Decimal | None = None
    #: ``"yes"`` or ``"no"`` once the market has settled, "" before.
    result: str = ""
    settled_time: datetime | None = None

    def __post_init__(self) -> None:
        self.grid = tuple(self.grid)
        if self.exchange_index < 0:
            raise ValueError(f"{self.ticker}: exchange_index cannot be negative")
        if self.settlement_floor is not None and not 0 <= self.settlement_floor < 1:
            raise ValueError(f"{self.ticker}: a settlement floor must be within [0, 1)")
        if self.result not in ("", "yes", "no"):
            raise ValueError(f"{self.ticker}: result must be 'yes', 'no' or empty")
        if not FAIR_MIN_MICROS <= self.fair_micros <= FAIR_MAX_MICROS:
            raise ValueError(f"{self.ticker}: fair_micros {self.fair_micros} out of bounds")
        if self.half_spread_ticks < 1:
            raise ValueError(f"{self.ticker}: half_spread_ticks must be at least 1")
        if self.vol_micros_per_sqrt_s < 0:
            raise ValueError(f"{self.ticker}: volatility cannot be negative")
        if self.mve_collection_ticker is not None and not self.hvm:
            raise ValueError(f"{self.ticker}: combo markets are always High Volatility Markets")
        # no_bid = 1 - yes_ask only lands on the grid when the grid mirrors around 0.50.
        if not _is_symmetric(self.grid):
            raise ValueError(f"{self.ticker}: the price grid must be symmetric around 0.50")

    @property
    def is_combo(self) -> bool:
        """True for combo (multivariate event) markets."""
        return self.mve_collection_ticker is not None

    @property
    def settled(self) -> bool:
        """True once the market has a result and its positions were paid out."""
        return self.result != ""

    @property
    def confirmation_window_seconds(self) -> float:
        """How long the maker has to confirm an accepted quote (3 s on HVM, else 30 s)."""
        return 3.0 if self.hvm else 30.0

    @property
    def execution_timer_seconds(self) -> float:
        """Delay between confirmation and orders reaching the book (1 s on HVM, else 15 s)."""
        return 1.0 if self.hvm else 15.0

    def fair(self) -> Decimal:
        """The hidden fair probability of YES as a 6-decimal Decimal."""
        return micros_to_decimal(self.fair_micros)

    def _quote_indices(self) -> tuple[int, int]:
        points = grid_prices(self.grid)
        fair = self.fair()
        count = len(points)
        below = bisect.bisect_right(points, fair) - 1  # largest grid price <= fair, or -1
        h = self.half_spread_ticks
        if below >= 0 and points[below] == fair:
            bid, ask = below - h, below + h
        else:
            bid, ask = below - (h - 1), below + h
        bid = max(0, min(bid, count - 2))
        ask = min(count - 1, max(ask, bid + 1))
        return bid, ask

    def yes_bid(self) -> Decimal:
        """Best YES bid: ``half_spread_ticks`` grid steps below fair (always < yes_ask)."""
        return grid_prices(self.grid)[self._quote_indices()[0]]

    def yes_ask(self) -> Decimal:
        """Best YES ask: ``half_spread_ticks`` grid steps above fair (always > yes_bid)."""
        return grid_prices(self.grid)[self._quote_indices()[1]]

    def no_bid(self) -> Decimal:
        """Best NO bid, the complement of the YES ask."""
        return _ONE - self.yes_ask()

    def no_ask(self) -> Decimal:
        """Best NO ask, the complement of the YES bid."""
        return _ONE - self.yes_bid()

    def orderbook(
        self, depth: int, rng: random.Random
    ) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """YES and NO bid levels as (price, contracts), ascending so the best price is last.

        Up to ``depth`` levels per side on consecutive grid prices. A level's size is a
        fixed function of the market, side and price (``rng`` is accepted for callers but
        not drawn from): when the touch moves one tick only the level it crosses appears or
        disappears, as on a real book, so the market-data feed
        (:mod:`mmbot.mock.marketfeed`) sends a couple of deltas per move, not a new book.
        """
        points = grid_prices(self.grid)
        bid_index, ask_index = self._quote_indices()
        # The grid is symmetric, so the NO price 1 - points[i] is points[n - 1 - i].
        no_index = len(points) - 1 - ask_index
        return (
            self._levels(points, bid_index, depth, _level_sizes(self.ticker, "yes", len(points))),
            self._levels(points, no_index, depth, _level_sizes(self.ticker, "no", len(points))),
        )

    @staticmethod
    def _levels(
        points: tuple[Decimal, ...], best: int, depth: int, sizes: tuple[Decimal, ...]
    ) -> list[tuple[Decimal, Decimal]]:
        lowest = max(0, best - max(depth, 0) + 1)
        return [(points[index], sizes[index]) for index in range(lowest, best + 1)]

    def step(self, rng: random.Random, dt_seconds: float) -> None:
        """Advance the fair value by ``dt_seconds`` of random walk (integer arithmetic only).

        A positive ``dt_seconds`` always consumes exactly three ``randint`` draws; zero or a
        negative interval changes nothing and draws nothing.
        """
        if not dt_seconds > 0:
            return
        dt_micro_s = round(dt_seconds * 1_000_000)
        shock = sum(rng.randint(-_SHOCK_HALF_RANGE, _SHOCK_HALF_RANGE) for _ in range(_SHOCK_TERMS))
        # sqrt(dt) in millionths of sqrt(second): isqrt(dt_us * 1e6) = sqrt(dt_s) * 1e6.
        root_dt = math.isqrt(dt_micro_s * _MICROS_PER_UNIT)
        sigma = _div_round(self.vol_micros_per_sqrt_s * root_dt, _MICROS_PER_UNIT)
        move = _div_round(sigma * shock, _SHOCK_SCALE)
        fair = self.fair_micros
        pull_share = min(_MICROS_PER_UNIT, _PULL_PER_SECOND_MICROS * dt_micro_s // 1_000_000)
        if fair < _SOFT_MIN_MICROS:
            move += (_SOFT_MIN_MICROS - fair) * pull_share // _MICROS_PER_UNIT
        elif fair > _SOFT_MAX_MICROS:
            move -= (fair - _SOFT_MAX_MICROS) * pull_share // _MICROS_PER_UNIT
        fair += move
        # Reflect off the hard bounds rather than pile up on them, then clamp in case a
        # huge step overshot the far side too.
        if fair < FAIR_MIN_MICROS:
            fair = 2 * FAIR_MIN_MICROS - fair
        elif fair > FAIR_MAX_MICROS:
            fair = 2 * FAIR_MAX_MICROS - fair
        self.fair_micros = min(FAIR_MAX_MICROS, max(FAIR_MIN_MICROS, fair))


_TOPICS: tuple[tuple[str, str, str], ...] = (
    # (series code, title stem, unit)
    ("CPI", "CPI year-over-year above", "%"),
    ("FED", "Fed funds upper bound above", "%"),
    ("RAIN", "Central Park rainfall above", " in"),
    ("GDP", "GDP growth above", "%"),
    ("JOBS", "Nonfarm payrolls above", "k"),
    ("OIL", "WTI crude close above", " $"),
    ("BTC", "Bitcoin close above", "k $"),
    ("TEMP", "NYC high temperature above", "°F"),
)
_COMBO_LEGS: tuple[str, ...] = ("Chiefs win", "Eagles win", "Over 47.5", "Mahomes 2+ TD", "OT")


def _standard_event(rng: random.Random, number: int, size: int, now: datetime) -> list[SimMarket]:
    code, stem, unit = _TOPICS[rng.randrange(len(_TOPICS))]
    structure = CENT_STRUCTURE if rng.randrange(2) == 0 else DECI_CENT_TAILS_STRUCTURE
    event_ticker = f"MOCK-{code}{number:02d}"
    open_time = now - timedelta(hours=rng.randint(1, 240))
    close_time = now + timedelta(days=rng.randint(1, 45), hours=rng.randint(0, 23))
    strike = rng.randint(1, 50)
    strike_step = rng.randint(1, 5)
    # A strike ladder: "above X" gets less likely as X rises, like Kalshi's T-markets.
    fair = rng.randint(600_000, 985_000)
    markets = []
    for n in range(1, size + 1):
        markets.append(
            SimMarket(
                ticker=f"{event_ticker}-{n}",
                event_ticker=event_ticker,
                series_ticker=f"MOCK{code}",
                title=f"{stem} {strike}{unit}?",
                yes_sub_title=f"Above {strike}{unit}",
                no_sub_title=f"{strike}{unit} or below",
                hvm=False,
                mve_collection_ticker=None,
                grid=GRIDS[structure],
                price_level_structure=structure,
                fair_micros=fair,
                half_spread_ticks=rng.choice((1, 1, 2, 2, 3, 4)),
                open_time=open_time,
                close_time=close_time,
                vol_micros_per_sqrt_s=rng.randint(500, 1_500),
            )
        )
        strike += strike_step
        fair = max(FAIR_MIN_MICROS + 5_000, fair - rng.randint(40_000, 220_000))
    return markets


def _combo_event(rng: random.Random, number: int, size: int, now: datetime) -> list[SimMarket]:
    event_ticker = f"MOCK-MVE{number:02d}"
    close_time = now + timedelta(hours=rng.randint(2, 72))
    markets = []
    for n in range(1, size + 1):
        structure = CENT_STRUCTURE if rng.randrange(2) == 0 else DECI_CENT_TAILS_STRUCTURE
        legs = rng.sample(_COMBO_LEGS, rng.randint(2, 4))
        title = " and ".join(legs)
        markets.append(
            SimMarket(
                ticker=f"{event_ticker}-{n}",
                event_ticker=event_ticker,
                series_ticker=MVE_COLLECTION_TICKER,
                title=f"{title}?",
                yes_sub_title=title,
                no_sub_title=f"Not ({title})",
                hvm=True,
                mve_collection_ticker=MVE_COLLECTION_TICKER,
                grid=GRIDS[structure],
                price_level_structure=structure,
                # Parlays multiply leg probabilities, so combos mostly trade cheap.
                fair_micros=rng.randint(FAIR_MIN_MICROS + 5_000, 400_000),
                half_spread_ticks=rng.choice((2, 3, 3, 5)),
                open_time=now - timedelta(minutes=rng.randint(1, 600)),
                close_time=close_time,
                vol_micros_per_sqrt_s=rng.randint(2_000, 4_000),
                # Kalshi moved combos to their own shard in August 2026.
                exchange_index=COMBO_EXCHANGE_INDEX,
            )
        )
    return markets


def generate_markets(
    count: int, rng: random.Random, *, hvm_fraction: float, now: datetime
) -> list[SimMarket]:
    """``count`` markets in events of 3-8 strikes; ``round(count * hvm_fraction)`` are combos.

    Tickers are ``MOCK-<EVENT>-<n>`` (``MOCK-CPI03-2``; combos ``MOCK-MVE05-1``). All
    markets of a standard event share one grid; combos pick theirs one by one. The result
    depends only on ``count``, ``hvm_fraction``, ``now`` and the state of ``rng``.
    """
    if count < 0:
        raise ValueError("count cannot be negative")
    if not 0 <= hvm_fraction <= 1:
        raise ValueError("hvm_fraction must be within [0, 1]")
    combos = round(count * hvm_fraction)
    events: list[tuple[bool, int]] = []
    for is_combo, remaining in ((False, count - combos), (True, combos)):
        while remaining > 0:
            size = min(rng.randint(3, 8), remaining)
            events.append((is_combo, size))
            remaining -= size
    rng.shuffle(events)
    markets: list[SimMarket] = []
    for number, (is_combo, size) in enumerate(events, start=1):
        build = _combo_event if is_combo else _standard_event
        markets.extend(build(rng, number, size, now))
    return markets


# --------------------------------------------------------------------------- requesters


def accept_side_for(wants: Wants) -> Side:
    """The ``accepted_side`` a requester sends to end up holding ``wants``.

    Accepting ``"yes"`` hits the maker's ``yes_bid`` (maker buys YES, requester gets NO);
    accepting ``"no"`` hits the ``no_bid`` (maker buys NO, requester gets YES).
    """
    if wants == "yes":
        return "no"
    if wants == "no":
        return "yes"
    raise ValueError(f"wants must be 'yes' or 'no', got {wants!r}")


def requester_price(side: Side, yes_bid: Decimal, no_bid: Decimal) -> Decimal:
    """Per-contract price the requester pays when accepting ``side`` of a quote.

    The requester takes the opposite of what the maker buys, so it pays the complement of
    the bid it hits: ``1 - yes_bid`` for side ``"yes"``, ``1 - no_bid`` for side ``"no"``.
    """
    if side == "yes":
        bid = yes_bid
    elif side == "no":
        bid = no_bid
    else:
        raise ValueError(f"side must be 'yes' or 'no', got {side!r}")
    if not 0 < bid < 1:
        raise ValueError(f"the {side} side of this quote is declined (bid {bid})")
    return _ONE - bid


#: Requesters pay over fair for the immediacy an RFQ buys them: two cents, about what a
#: maker quoting a couple of cents around the mid needs to get some of its quotes hit.
REQUESTER_PREMIUM_MICROS = 20_000
_NOISE_HALF_RANGE_MICROS = 25_000


def reservation_from(wants: Wants, fair_micros: int, noise_micros: int) -> Decimal:
    """Requester's top per-contract price: its outcome's fair value plus noise, in (0, 1)."""
    base = fair_micros if wants == "yes" else _MICROS_PER_UNIT - fair_micros
    value = base + noise_micros + REQUESTER_PREMIUM_MICROS
    return micros_to_decimal(min(_MICROS_PER_UNIT - 1, max(1, value)))


@dataclass(frozen=True, slots=True)
class RfqPlan:
    """What a simulated requester will ask for and how it will behave on its RFQ."""

    requester: str
    market_ticker: str
    contracts: Decimal | None
    target_cost_dollars: Decimal | None
    rest_remainder: bool
    wants: Wants
    reservation: Decimal
    lifetime_seconds: float
    decision_delay_seconds: float
    partial_fraction: Decimal | None
    #: Seed-deterministic offset of ``reservation`` from the outcome's fair value
    #: (premium excluded), kept so the reservation can be recomputed at a later fair.
    valuation_noise_micros: int = 0
    #: An informed requester ignores ``reservation`` and waits to pick off a quote the
    #: market has moved past (see :mod:`mmbot.mock.informed`).
    informed: bool = False

    def __post_init__(self) -> None:
        if (self.contracts is None) == (self.target_cost_dollars is None):
            raise ValueError("exactly one of contracts and target_cost_dollars must be set")
        if self.wants not in ("yes", "no"):
            raise ValueError(f"wants must be 'yes' or 'no', got {self.wants!r}")
        if not 0 < self.reservation < 1:
            raise ValueError(f"reservation {self.reservation} must be inside (0, 1)")
        if self.partial_fraction is not None and not 0 < self.partial_fraction <= 1:
            raise ValueError(f"partial_fraction {self.partial_fraction} must be in (0, 1]")


def replan_reservation(plan: RfqPlan, fair_micros: int) -> RfqPlan:
    """The same plan with its reservation recomputed from a newer fair value."""
    reservation = reservation_from(plan.wants, fair_micros, plan.valuation_noise_micros)
    return replace(plan, reservation=reservation)


# (low, high, weight): heavy-tailed menus, most RFQs small, a few very large.
_CONTRACT_BRACKETS: tuple[tuple[int, int, int], ...] = (
    (1, 9, 35),
    (10, 49, 30),
    (50, 199, 20),
    (200, 499, 10),
    (500, 1_000, 5),
)
_TARGET_COST_CENTS_BRACKETS: tuple[tuple[int, int, int], ...] = (
    (1_000, 4_999, 40),
    (5_000, 19_999, 30),
    (20_000, 49_999, 18),
    (50_000, 200_000, 12),
)
_TARGET_COST_PERCENT = 20
_REST_REMAINDER_PERCENT = 30
_PARTIAL_PERCENT = 20


def _bracket_draw(rng: random.Random, brackets: tuple[tuple[int, int, int], ...]) -> int:
    # Integer weights and randrange keep the draw free of floats and of version drift in
    # random.choices.
    pick = rng.randrange(sum(weight for _, _, weight in brackets))
    for low, high, weight in brackets:
        if pick < weight:
            return rng.randint(low, high)
        pick -= weight
    raise AssertionError("unreachable: pick is below the total weight")


class RfqStream:
    """Deterministic Poisson stream of RFQ plans from simulated requesters.

    The stream owns ``random.Random(seed)`` and shares it with nothing. Given the same
    seed and the same ``len(markets)`` and ``requesters`` (in order), every field of every
    plan is identical across runs, whatever else the simulation does, except
    ``reservation``: that is the chosen market's fair value *at the moment*
    :meth:`next_arrival` is called plus the seed-deterministic ``valuation_noise_micros``.
    The fields fixed by the seed are the gap, ``requester``, ``market_ticker`` (when the
    markets keep their order), ``contracts``, ``target_cost_dollars``, ``rest_remainder``,
    ``wants``, ``lifetime_seconds``, ``decision_delay_seconds``, ``partial_fraction`` and
    ``valuation_noise_micros``; the market walk never changes how many draws a plan takes.
    ``informed`` (true for about ``informed_fraction`` of plans) comes from a second
    generator seeded from ``seed``, so turning it on leaves every other field unchanged.
    """

    def __init__(
        self,
        seed: int,
        rate_per_second: float,
        markets: Sequence[SimMarket],
        requesters: Sequence[str],
        *,
        informed_fraction: float = 0.0,
    ) -> None:
        if math.isnan(rate_per_second) or math.isinf(rate_per_second):
            raise ValueError("rate_per_second must be finite")
        if not 0 <= informed_fraction <= 1:
            raise ValueError("informed_fraction must be within [0, 1]")
        self._rng = random.Random(seed)  # noqa: S311 - simulation, not security
        self._informed_rng = random.Random(f"mmbot-mock-informed:{seed}")  # noqa: S311
        self._informed_fraction = informed_fraction
        self._rate = rate_per_second
        # Kept by reference: the exchange walks these markets, and the reservation must
        # read their fair value at arrival time.
        self._markets = markets
        self._requesters = tuple(requesters)

    @property
    def enabled(self) -> bool:
        """False when the stream will never produce an RFQ (rate <= 0, no markets or no one)."""
        return self._rate > 0 and bool(self._markets) and bool(self._requesters)

    def next_arrival(self) -> tuple[float, RfqPlan] | None:
        """Seconds until the next RFQ (exponential, mean 1/rate) and its plan; None if disabled."""
        if not self.enabled:
            return None
        rng = self._rng
        gap = rng.expovariate(self._rate)
        requester = self._requesters[rng.randrange(len(self._requesters))]
        market = self._markets[rng.randrange(len(self._markets))]
        contracts: Decimal | None = None
        target_cost: Decimal | None = None
        if rng.randrange(100) < _TARGET_COST_PERCENT:
            target_cost = Decimal(_bracket_draw(rng, _TARGET_COST_CENTS_BRACKETS)).scaleb(-2)
        else:
            whole = _bracket_draw(rng, _CONTRACT_BRACKETS)
            contracts = Decimal(whole).quantize(_CONTRACT_QUANTUM)
        rest_remainder = rng.randrange(100) < _REST_REMAINDER_PERCENT
        wants: Wants = "yes" if rng.randrange(2) == 0 else "no"
        lifetime = rng.uniform(5.0, 60.0)
        decision_delay = rng.uniform(0.2, 3.0)
        partial: Decimal | None = None
        if rng.randrange(100) < _PARTIAL_PERCENT:
            partial = Decimal(rng.randint(25, 90)).scaleb(-2)
        # Two uniform terms: a triangular spread of +-5 cents, denser near the middle.
        noise = rng.randint(-_NOISE_HALF_RANGE_MICROS, _NOISE_HALF_RANGE_MICROS) + rng.randint(
            -_NOISE_HALF_RANGE_MICROS, _NOISE_HALF_RANGE_MICROS
        )
        plan = RfqPlan(
            requester=requester,
            market_ticker=market.ticker,
            contracts=contracts,
            target_cost_dollars=target_cost,
            rest_remainder=rest_remainder,
            wants=wants,
            reservation=reservation_from(wants, market.fair_micros, noise),
            lifetime_seconds=lifetime,
            decision_delay_seconds=decision_delay,
            partial_fraction=partial,
            valuation_noise_micros=noise,
            # One draw per plan whatever the fraction, so the flags replay under the seed.
            informed=self._informed_rng.random() < self._informed_fraction,
        )
        return gap, plan


# --------------------------------------------------------------------------- acceptance


@dataclass(frozen=True, slots=True)
class QuoteView:
    """The part of a live quote a requester looks at when choosing."""

    quote_id: str
    yes_bid: Decimal
    no_bid: Decimal
    created_seq: int


@dataclass(frozen=True, slots=True)
class Acceptance:
    """A requester's decision: accept ``accepted_side`` of a quote, maybe only in part."""

    quote_id: str
    accepted_side: Side
    #: None accepts the full size; otherwise the share of the size to accept.
    contracts_fraction: Decimal | None


def choose_quote(plan: RfqPlan, quotes: Sequence[QuoteView]) -> Acceptance | None:
    """The cheapest acceptable quote for the requester, or None if none is within reservation.

    Cheapest means the lowest :func:`requester_price` on the side the requester needs;
    ties go to the earliest ``created_seq``. Quotes declining that side are skipped.
    """
    side = accept_side_for(plan.wants)
    best: QuoteView | None = None
    best_key: tuple[Decimal, int] | None = None
    for quote in quotes:
        bid = quote.yes_bid if side == "yes" else quote.no_bid
        if not 0 < bid < 1:
            continue
        key = (requester_price(side, quote.yes_bid, quote.no_bid), quote.created_seq)
        if best_key is None or key < best_key:
            best, best_key = quote, key
    if best is None or best_key is None or best_key[0] > plan.reservation:
        return None
    return Acceptance(
        quote_id=best.quote_id, accepted_side=side, contracts_fraction=plan.partial_fraction
    )
