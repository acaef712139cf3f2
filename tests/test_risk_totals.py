"""The risk book's running totals equal a recount from scratch, whatever happened before.

Every check reads the total cost of the positions and their marked-to-market P&L; the
book keeps both up to date as positions and marks change rather than summing every market
per check. Any sequence of marks, fills, settlements and reconciliations must leave them
exactly where a full recount puts them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from mmbot.kalshi.models import MakerFill
from mmbot.risk import RiskBook, RiskLimits

MARKETS = ("A", "B", "C")
PRICES = st.integers(min_value=1, max_value=99).map(lambda c: Decimal(c) / 100)
SIZES = st.integers(min_value=1, max_value=500).map(Decimal)

_ops = st.one_of(
    st.tuples(st.just("mark"), st.sampled_from(MARKETS), PRICES),
    st.tuples(
        st.just("fill"), st.sampled_from(MARKETS), st.sampled_from(("yes", "no")), PRICES, SIZES
    ),
    st.tuples(st.just("settle"), st.sampled_from(MARKETS), st.sampled_from((0, 1))),
    st.tuples(
        st.just("set"),
        st.sampled_from(MARKETS),
        st.integers(min_value=-300, max_value=300).map(Decimal),
        PRICES,
    ),
)


def _book() -> RiskBook:
    limits = RiskLimits(
        max_contracts_per_rfq=Decimal(1000),
        max_position_per_market=Decimal(10**6),
        max_exposure_dollars=Decimal(10**7),
        max_open_quotes=100,
        max_daily_loss_dollars=Decimal(10**7),
    )
    return RiskBook(limits, clock=lambda: datetime(2026, 12, 3, tzinfo=UTC))


def _recount(book: RiskBook) -> tuple[Decimal, Decimal]:
    cost = Decimal(0)
    marked = Decimal(0)
    marks = book.marks()
    for market, state in book.positions().items():
        cost += state.cost
        mark = marks.get(market)
        if mark is None or state.contracts == 0:
            value = Decimal(0)
        elif state.contracts > 0:
            value = state.contracts * mark
        else:
            value = -state.contracts * (1 - mark)
        marked += value - state.cost
    return cost, marked


@settings(max_examples=300, deadline=None)
@given(st.lists(_ops, max_size=40))
def test_running_totals_equal_a_recount_after_any_sequence(ops: list[tuple]) -> None:
    book = _book()
    for number, op in enumerate(ops):
        kind, market = op[0], op[1]
        if kind == "mark":
            book.mark(market, op[2])
        elif kind == "fill":
            _, _, side, price, size = op
            quote_id = f"q{number}"
            assert book.reserve(
                quote_id, market, MakerFill(side=side, price=price, contracts=size)
            ).ok
            book.commit(quote_id)
        elif kind == "settle":
            book.settle(market, Decimal(op[2]))
        else:
            contracts, price = op[2], op[3]
            book.set_position(market, contracts, abs(contracts) * price)
        cost, marked = _recount(book)
        assert book.unrealized_pnl() == marked
        assert book.exposure() == cost
