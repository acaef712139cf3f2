"""The mock exchange's rules, one test per documented rule, on a manual clock (no sockets)."""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbot.mock.exchange import (
    MAX_OPEN_RFQS,
    Exchange,
    ExchangeEvent,
    MockApiError,
    User,
    market_wire,
    partial_fill_size,
)
from mmbot.mock.sim import CENT_GRID, COMBO_EXCHANGE_INDEX, SimMarket, generate_markets

START = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@dataclass
class _Handle:
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class ManualScheduler:
    """Runs callbacks when the test advances time, never on its own."""

    now: float = 0.0
    _queue: list[tuple[float, int, Callable[[], None], _Handle]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Handle:
        handle = _Handle()
        heapq.heappush(self._queue, (self.now + delay, next(self._order), callback, handle))
        return handle

    def advance(self, seconds: float) -> None:
        until = self.now + seconds
        while self._queue and self._queue[0][0] <= until:
            when, _, callback, handle = heapq.heappop(self._queue)
            self.now = when
            if not handle.cancelled:
                callback()
        self.now = until

    def clock(self) -> datetime:
        return START + timedelta(seconds=self.now)


class World:
    """An exchange with two registered users, a requester and a maker, and an event log."""

    def __init__(self, markets: int = 8, *, time_scale: float = 1.0) -> None:
        self.scheduler = ManualScheduler()
        self.markets = generate_markets(
            markets, random.Random(7), hvm_fraction=0.25, now=START - timedelta(days=1)
        )
        self.exchange = Exchange(
            self.markets,
            scheduler=self.scheduler,
            clock=self.scheduler.clock,
            time_scale=time_scale,
            seed=1,
        )
        self.requester = self.exchange.add_user(key_id="req")
        self.maker = self.exchange.add_user(key_id="mkr")
        self.events: list[ExchangeEvent] = []
        self.exchange.listeners.append(self.events.append)

    def market(self, *, hvm: bool = False) -> SimMarket:
        return next(m for m in self.markets if m.hvm == hvm and m.grid == CENT_GRID)

    def rfq(self, user: User | None = None, **body: Any) -> str:
        body = {"market_ticker": self.market().ticker, "rest_remainder": False, **body}
        if not {"contracts", "contracts_fp", "target_cost_dollars"} & body.keys():
            body["contracts_fp"] = "10.00"
        return self.exchange.create_rfq(user or self.requester, body).id

    def quote(
        self, rfq_id: str, yes: str = "0.40", no: str = "0.55", user: User | None = None
    ) -> str:
        body = {"rfq_id": rfq_id, "yes_bid": yes, "no_bid": no, "rest_remainder": False}
        return self.exchange.create_quote(user or self.maker, body).id

    def kinds(self) -> list[str]:
        return [e.type for e in self.events]


@contextmanager
def rejects(status: int, match: str, code: str | None = None) -> Iterator[None]:
    """Expect a MockApiError with this status, message fragment and (optionally) code."""
    with pytest.raises(MockApiError) as err:
        yield
    assert err.value.status == status, err.value
    assert match in err.value.message, err.value
    if code is not None:
        assert err.value.code == code
    assert set(err.value.body()) <= {"code", "message", "details"}


# ----------------------------------------------------------------------------- RFQs


def test_rfq_sized_by_contracts_or_target_cost_not_both() -> None:
    w = World()
    rfq = w.exchange.rfq(w.rfq(contracts=25))
    assert rfq.contracts == Decimal(25)
    w2 = World()
    by_cost = w2.exchange.rfq(w2.rfq(target_cost_dollars="150.00"))
    assert (by_cost.contracts, by_cost.target_cost) == (None, Decimal("150.00"))
    for body in (
        {"contracts_fp": "10", "target_cost_dollars": "5"},
        {"contracts_fp": None},
        {"contracts": 10, "contracts_fp": "11.00"},
        {"contracts_fp": "1.005"},
        {"contracts_fp": "-3"},
        {"contracts": True},
    ):
        with rejects(400, ""):
            World().rfq(**body)


def test_rfq_requires_rest_remainder_and_a_known_market() -> None:
    w = World()
    with rejects(400, "rest_remainder"):
        w.exchange.create_rfq(w.requester, {"market_ticker": w.market().ticker, "contracts": 1})
    with rejects(400, "exactly one"):
        w.exchange.create_rfq(
            w.requester, {"market_ticker": w.market().ticker, "rest_remainder": True}
        )
    with rejects(400, "not found"):
        w.rfq(market_ticker="NOPE-1")


def test_second_open_rfq_on_a_market_is_a_409_unless_replacing() -> None:
    w = World()
    first = w.rfq()
    with rejects(409, "already exists"):
        w.rfq()
    second = w.rfq(replace_existing=True)
    assert w.exchange.rfq(first).status == "closed"
    assert w.exchange.rfq(second).status == "open"
    assert w.kinds() == ["rfq_created", "rfq_deleted", "rfq_created"]
    # Another user may have its own open RFQ on the same market.
    w.rfq(user=w.maker)


def test_at_most_100_open_rfqs_per_user() -> None:
    w = World(markets=MAX_OPEN_RFQS + 1)
    for market in w.markets[:MAX_OPEN_RFQS]:
        w.rfq(market_ticker=market.ticker)
    with rejects(400, "at most 100"):
        w.rfq(market_ticker=w.markets[MAX_OPEN_RFQS].ticker)


def test_rfq_events_are_public_and_anonymous_on_creation() -> None:
    w = World()
    rfq_id = w.rfq()
    (created,) = w.events
    assert created.type == "rfq_created"
    # Every subscriber, and the creator (which sees its own id, per the newer page).
    assert list(created.messages) == [None, w.requester.user_id]
    assert created.messages[None]["creator_id"] == ""
    assert created.messages[w.requester.user_id]["creator_id"] == w.requester.communications_id
    assert created.messages[None]["contracts_fp"] == "10.00"
    assert created.rfq_creator == w.requester.user_id
    w.exchange.delete_rfq(w.requester, rfq_id)
    deleted = w.events[-1]
    assert (deleted.type, list(deleted.messages)) == ("rfq_deleted", [None])


def test_only_the_creator_deletes_an_open_rfq_and_its_quotes_die_with_it() -> None:
    w = World()
    rfq_id = w.rfq()
    quote_id = w.quote(rfq_id)
    with rejects(404, "not found"):
        w.exchange.delete_rfq(w.maker, rfq_id)
    w.exchange.delete_rfq(w.requester, rfq_id)
    assert w.exchange.quotes[quote_id].status == "cancelled"
    with rejects(404, "closed"):
        w.exchange.delete_rfq(w.requester, rfq_id)


def test_a_confirmed_trade_cannot_be_withdrawn() -> None:
    w = World()
    rfq_id = w.rfq()
    quote_id = w.quote(rfq_id)
    w.exchange.accept_quote(w.requester, quote_id, {"accepted_side": "yes"})
    w.exchange.confirm_quote(w.maker, quote_id)
    with rejects(400, "cannot be withdrawn", code="rfq_locked"):
        w.exchange.delete_rfq(w.requester, rfq_id)
    with rejects(400, "cannot be withdrawn", code="rfq_locked"):
        w.rfq(replace_existing=True)
    with rejects(404, "not found"):
        w.exchange.delete_quote(w.maker, quote_id)
    w.scheduler.advance(20)
    assert w.exchange.quotes[quote_id].status == "executed"
    assert w.kinds().count("rfq_deleted") == 1


def test_deleting_an_rfq_voids_an_unconfirmed_acceptance() -> None:
    w = World()
    rfq_id = w.rfq()
    quote_id = w.quote(rfq_id)
    w.exchange.accept_quote(w.requester, quote_id, {"accepted_side": "yes"})
    w.exchange.delete_rfq(w.requester, rfq_id)
    assert w.exchange.quotes[quote_id].status == "cancelled"
    with rejects(400, "not accepted"):
        w.exchange.confirm_quote(w.maker, quote_id)


# ----------------------------------------------------------------------------- quotes


def test_new_quote_replaces_the_makers_previous_one() -> None:
    w = World()
    rfq_id = w.rfq()
    first = w.quote(rfq_id, "0.40", "0.55")
    second = w.quote(rfq_id, "0.41", "0.55")
    old, new = w.exchange.quotes[first], w.exchange.quotes[second]
    assert (old.status, old.cancellation_reason) == ("cancelled", "replaced by a new quote")
    assert new.status == "open"
    # Another maker's quote is independent.
    other = w.exchange.add_user(key_id="other")
    w.quote(rfq_id, user=other)
    assert new.status == "open"


@pytest.mark.parametrize(
    ("yes", "no", "message"),
    [
        ("0.60", "0.41", "must not exceed 1"),
        ("0.405", "0.50", "not on the market's price grid"),
        ("0", "0", "cannot both be 0"),
        ("0.00", "0.0000", "cannot both be 0"),
        ("1.01", "0", "between 0 and 1"),
        ("-0.01", "0.5", "between 0 and 1"),
        ("0.40001", "0.5", "at most 4 decimal"),
        ("abc", "0.5", "not a number"),
        ("1", "0", "not on the market's price grid"),
    ],
)
def test_quote_price_rules(yes: str, no: str, message: str) -> None:
    w = World()
    rfq_id = w.rfq()
    with rejects(400, message):
        w.quote(rfq_id, yes, no)


def test_zero_declines_one_side_only() -> None:
    w = World()
    rfq_id = w.rfq()
    quote = w.exchange.quotes[w.quote(rfq_id, "0", "0.55")]
    assert (quote.yes_contracts, quote.no_contracts) == (Decimal(0), Decimal(10))
    with rejects(400, "declined the yes side"):
        w.exchange.accept_quote(w.requester, quote.id, {"accepted_side": "yes"})


def test_numbers_must_be_strings() -> None:
    w = World()
    rfq_id = w.rfq()
    with rejects(400, "fixed-point dollar string"):
        w.exchange.create_quote(
            w.maker, {"rfq_id": rfq_id, "yes_bid": 0.4, "no_bid": "0.5", "rest_remainder": False}
        )


def test_cannot_quote_own_or_closed_rfq() -> None:
    w = World()
    rfq_id = w.rfq()
    with rejects(400, "own RFQ"):
        w.quote(rfq_id, user=w.requester)
    w.exchange.delete_rfq(w.requester, rfq_id)
    with rejects(400, "closed", code="RFQ_CLOSED"):
        w.quote(rfq_id)


def test_target_cost_rfq_offers_what_the_budget_buys_per_side() -> None:
    w = World()
    rfq_id = w.rfq(target_cost_dollars="100.00")
    quote = w.exchange.quotes[w.quote(rfq_id, "0.30", "0.65")]
    assert quote.yes_contracts == Decimal(333)  # floor(100 / 0.30)
    assert quote.no_contracts == Decimal(153)  # floor(100 / 0.65)


def test_quote_events_go_only_to_the_two_parties() -> None:
    w = World()
    rfq_id = w.rfq()
    w.quote(rfq_id)
    created = w.events[-1]
    assert created.type == "quote_created"
    assert set(created.messages) == {w.requester.user_id, w.maker.user_id}


def test_quotes_are_private_to_their_two_parties() -> None:
    w = World()
    quote_id = w.quote(w.rfq())
    stranger = w.exchange.add_user(key_id="stranger")
    assert w.exchange.quote(w.requester, quote_id).id == quote_id
    with rejects(404, "not found"):
        w.exchange.quote(stranger, quote_id)
    with rejects(400, "is required"):
        w.exchange.list_quotes(w.maker, {"status": "open"})
    mine, _ = w.exchange.list_quotes(w.maker, {"user_filter": "self"})
    theirs, _ = w.exchange.list_quotes(stranger, {"user_filter": "self"})
    on_my_rfqs, _ = w.exchange.list_quotes(w.requester, {"rfq_user_filter": "self"})
    assert [q.id for q in mine] == [quote_id] == [q.id for q in on_my_rfqs]
    assert theirs == []


def test_only_the_maker_deletes_its_quote() -> None:
    w = World()
    rfq_id = w.rfq()
    quote_id = w.quote(rfq_id)
    with rejects(404, "not found"):
        w.exchange.delete_quote(w.requester, quote_id)
    with rejects(404, "not found"):
        w.exchange.delete_quote(w.maker, quote_id, rfq_id="some-other-rfq")
    w.exchange.delete_quote(w.maker, quote_id, rfq_id=rfq_id)
    with rejects(400, "not open"):
        w.exchange.accept_quote(w.requester, quote_id, {"accepted_side": "no"})


# ----------------------------------------------------------------------------- accept/confirm


@pytest.mark.parametrize(("hvm", "window"), [(False, 30.0), (True, 3.0)])
@pytest.mark.parametrize("scale", [1.0, 0.01])
def test_unconfirmed_acceptance_is_voided_when_the_window_closes(
    hvm: bool, window: float, scale: float
) -> None:
    w = World(time_scale=scale)
    rfq_id = w.rfq(market_ticker=w.market(hvm=hvm).ticker)
    quote_id = w.quote(rfq_id)
    w.exchange.accept_quote(w.requester, quote_id, {"accepted_side": "yes"})
    w.scheduler.advance(window * scale * 0.99)
    assert w.exchange.quotes[quote_id].status == "accepted"
    w.scheduler.advance(window * scale * 0.02)
    quote = w.exchange.quotes[quote_id]
    assert quote.status == "cancelled"
    assert "confirmation window" in (quote.cancellation_reason or "")
    with rejects(400, "not accepted"):
        w.exchange.confirm_quote(w.maker, quote_id)
    # The RFQ stays open for another quote.
    assert w.exchange.rfq(rfq_id).status == "open"


@pytest.mark.parametrize(("hvm", "timer"), [(False, 15.0), (True, 1.0)])
def test_confirm_starts_the_execution_timer_then_the_trade_executes(
    hvm: bool, timer: float
) -> None:
    w = World()
    rfq_id = w.rfq(market_ticker=w.market(hvm=hvm).ticker, contracts_fp="10.00")
    quote_id = w.quote(rfq_id, "0.40", "0.55")
    other_maker = w.exchange.add_user(key_id="other")
    losing = w.quote(rfq_id, "0.39", "0.55", user=other_maker)
    accepted = w.exchange.accept_quote(w.requester, quote_id, {"accepted_side": "yes"})
    assert w.events[-1].type == "quote_accepted"
    assert w.events[-1].messages[w.maker.user_id]["contracts_accepted_fp"] == "10.00"
    w.exchange.confirm_quote(w.maker, quote_id)
    w.scheduler.advance(timer * 0.99)
    assert accepted.status == "confirmed"
    assert not w.exchange.fills

    w.scheduler.advance(timer * 0.02)
    assert accepted.status == "executed"
    executed = next(e for e in w.events if e.type == "quote_executed")
    maker_msg = executed.messages[w.maker.user_id]
    requester_msg = executed.messages[w.requester.user_id]
    # Each party is told its own order, and that order has its fill.
    assert maker_msg["order_id"] == accepted.creator_order_id
    assert requester_msg["order_id"] == accepted.rfq_creator_order_id
    assert maker_msg["order_id"] != requester_msg["order_id"]
    assert w.kinds()[-1] == "rfq_deleted"
    assert w.exchange.rfq(rfq_id).status == "closed"
    assert w.exchange.quotes[losing].status == "cancelled"

    maker_fills, _ = w.exchange.list_fills(w.maker, {})
    requester_fills, _ = w.exchange.list_fills(w.requester, {})
    assert [f.order_id for f in maker_fills] == [maker_msg["order_id"]]
    (mf,), (rf,) = maker_fills, requester_fills
    # accepted_side "yes": the maker bought YES at its yes_bid; the requester took NO.
    assert (mf.outcome_side, mf.yes_price, mf.is_taker) == ("yes", Decimal("0.40"), False)
    assert (rf.outcome_side, rf.yes_price, rf.is_taker) == ("no", Decimal("0.40"), True)
    # Kalshi's fees: the maker's 0.0175 x 10 x 0.40 x 0.60 = 0.042 and the taker's
    # 0.07 x 10 x 0.60 x 0.40 = 0.168, each rounded up to the cent by the rounding fee.
    assert (mf.fee, rf.fee) == (Decimal("0.05"), Decimal("0.17"))
    assert mf.wire()["fee_cost"] == "0.0500"
    assert w.maker.balance == w.exchange.starting_balance - Decimal("4.00") - Decimal("0.05")
    assert w.requester.balance == w.exchange.starting_balance - Decimal("6.00") - Decimal("0.17")
    (maker_pos,), _, _ = w.exchange.list_positions(w.maker, {})
    (req_pos,), _, _ = w.exchange.list_positions(w.requester, {})
    assert (maker_pos.contracts, maker_pos.cost) == (Decimal(10), Decimal("4.00"))
    assert (req_pos.contracts, req_pos.cost) == (Decimal(-10), Decimal("6.00"))


def test_no_side_acceptance_maker_buys_no() -> None:
    w = World()
    quote_id = w.quote(w.rfq(contracts_fp="4"), "0.40", "0.55")
    w.exchange.accept_quote(w.requester, quote_id, {"accepted_side": "no"})
    w.exchange.confirm_quote(w.maker, quote_id)
    w.scheduler.advance(20)
    (fill,), _ = w.exchange.list_fills(w.maker, {})
    assert (fill.outcome_side, fill.yes_price) == ("no", Decimal("0.45"))
    # Maker fee 0.0175 x 4 x 0.55 x 0.45 = 0.017325, rounded up to the cent.
    assert fill.fee == Decimal("0.02")
    assert w.maker.balance == w.exchange.starting_balance - Decimal("2.20") - Decimal("0.02")


def test_partial_acceptance() -> None:
    w = World()
    quote_id = w.quote(w.rfq(contracts_fp="10"))
    w.exchange.accept_quote(w.requester, quote_id, {"accepted_side": "no"}, contracts=Decimal(3))
    assert w.events[-1].messages[w.maker.user_id]["contracts_accepted_fp"] == "3.00"
    w2 = World()
    whole = w2.quote(w2.rfq(contracts_fp="10"))
    with rejects(400, "cannot accept"):
        w2.exchange.accept_quote(
            w2.requester, whole, {"accepted_side": "no"}, contracts=Decimal(11)
        )


def test_accept_rules() -> None:
    w = World()
    rfq_id = w.rfq()
    quote_id = w.quote(rfq_id)
    with rejects(400, "accepted_side"):
        w.exchange.accept_quote(w.requester, quote_id, {"accepted_side": "maybe"})
    with rejects(404, "not found"):
        w.exchange.accept_quote(w.maker, quote_id, {"accepted_side": "yes"})
    other = w.exchange.add_user(key_id="other")
    second = w.quote(rfq_id, user=other)
    w.exchange.accept_quote(w.requester, quote_id, {"accepted_side": "yes"})
    with rejects(400, "already accepted"):
        w.exchange.accept_quote(w.requester, second, {"accepted_side": "yes"})
    with rejects(404, "not found"):
        w.exchange.confirm_quote(w.requester, quote_id)
    with rejects(400, "already accepted"):
        w.quote(rfq_id, "0.41", "0.55")  # an accepted quote cannot be replaced


def test_insufficient_balance() -> None:
    w = World()
    quote_id = w.quote(w.rfq(contracts_fp="1000"), "0.40", "0.55")
    w.requester.balance = Decimal("1")
    with rejects(400, "balance", code="INSUFFICIENT_BALANCE"):
        w.exchange.accept_quote(w.requester, quote_id, {"accepted_side": "yes"})
    w.requester.balance = Decimal("100000")
    w.exchange.accept_quote(w.requester, quote_id, {"accepted_side": "yes"})
    w.maker.balance = Decimal("1")
    with rejects(400, "balance", code="INSUFFICIENT_BALANCE"):
        w.exchange.confirm_quote(w.maker, quote_id)


# ----------------------------------------------------------------------------- listing


def test_keyset_pagination_is_stable_while_items_are_added() -> None:
    w = World(markets=12)
    for market in w.markets[:7]:
        w.rfq(market_ticker=market.ticker)
    page1, cursor = w.exchange.list_rfqs(w.maker, {"limit": "3"})
    w.rfq(market_ticker=w.markets[8].ticker)  # arrives between pages
    page2, cursor2 = w.exchange.list_rfqs(w.maker, {"limit": "3", "cursor": cursor})
    page3, cursor3 = w.exchange.list_rfqs(w.maker, {"limit": "3", "cursor": cursor2})
    seen = [r.id for r in page1 + page2 + page3]
    assert len(seen) == len(set(seen)) == 7
    assert cursor3 == ""
    with rejects(400, "cursor"):
        w.exchange.list_rfqs(w.maker, {"cursor": "garbage!"})
    with rejects(400, "limit"):
        w.exchange.list_rfqs(w.maker, {"limit": "101"})


def test_rfq_filters() -> None:
    w = World()
    a = w.rfq(market_ticker=w.markets[0].ticker)
    b = w.rfq(market_ticker=w.markets[1].ticker, user=w.maker)
    w.exchange.delete_rfq(w.requester, a)

    def ids(**query: str) -> list[str]:
        return [r.id for r in w.exchange.list_rfqs(w.requester, query)[0]]

    assert ids(status="open") == [b]
    assert ids(status="closed") == [a]
    assert ids(market_ticker=w.markets[1].ticker) == [b]
    assert ids(event_ticker=w.markets[0].event_ticker)[-1] == a
    assert ids(user_filter="self") == [a]
    assert ids(creator_user_id=w.maker.user_id) == [b]


# ----------------------------------------------------------------------------- invariants


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["yes", "no"]),
            st.integers(min_value=1, max_value=99),
            st.integers(min_value=1, max_value=50),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_every_contract_has_a_counterparty_and_cash_is_conserved(
    trades: list[tuple[str, int, int, bool]],
) -> None:
    w = World(markets=3)
    market = w.market()
    for side, cents, size, swap in trades:
        requester, maker = (w.maker, w.requester) if swap else (w.requester, w.maker)
        rfq = w.exchange.create_rfq(
            requester,
            {"market_ticker": market.ticker, "contracts_fp": str(size), "rest_remainder": False},
        )
        price = f"0.{cents:02d}"
        yes, no = (price, "0") if side == "yes" else ("0", price)
        quote = w.exchange.create_quote(
            maker, {"rfq_id": rfq.id, "yes_bid": yes, "no_bid": no, "rest_remainder": False}
        )
        w.exchange.accept_quote(requester, quote.id, {"accepted_side": side})
        w.exchange.confirm_quote(maker, quote.id)
        w.scheduler.advance(20)
        assert quote.status == "executed"
    positions = [
        w.exchange.positions.get((u.user_id, market.ticker)) for u in (w.maker, w.requester)
    ]
    held = [p.contracts if p else Decimal(0) for p in positions]
    # Zero-sum: one side's YES is the other's NO.
    assert sum(held) == 0
    # Cash leaves only into positions that will pay $1 per YES/NO pair, and into fees.
    total_cash = w.maker.balance + w.requester.balance
    fees = sum((f.fee for f in w.exchange.fills), Decimal(0))
    assert total_cash + abs(held[0]) + fees == 2 * w.exchange.starting_balance


def test_opposite_positions_net_off_and_realise_pnl() -> None:
    w = World()

    def trade(side: str, price: str, size: str) -> None:
        yes, no = (price, "0") if side == "yes" else ("0", price)
        quote = w.quote(w.rfq(contracts_fp=size, replace_existing=True), yes, no)
        w.exchange.accept_quote(w.requester, quote, {"accepted_side": side})
        w.exchange.confirm_quote(w.maker, quote)
        w.scheduler.advance(20)

    trade("yes", "0.40", "10")  # maker: +10 YES at 0.40
    trade("no", "0.55", "4")  # maker buys 4 NO at 0.55: 4 pairs pay $1 each
    (position,), _, _ = w.exchange.list_positions(w.maker, {})
    assert position.contracts == Decimal(6)
    assert position.cost == Decimal("2.40")
    assert position.realized_pnl == Decimal("0.20")  # 4 x (1 - 0.40 - 0.55)
    # Kalshi reports fees apart from the realised P&L: maker fees of 0.05 and 0.02.
    assert position.fees_paid == Decimal("0.07")
    assert position.wire()["fees_paid_dollars"] == "0.0700"
    assert w.maker.balance == w.exchange.starting_balance - Decimal("4.00") - Decimal(
        "2.20"
    ) + Decimal(4) - Decimal("0.07")


# ----------------------------------------------------------------------------- current schema


def test_target_cost_rfq_events_report_zero_contracts_like_the_rest_view() -> None:
    w = World()
    rfq_id = w.rfq(target_cost_dollars="50.00")
    rest_view = w.exchange.rfq(rfq_id).wire(w.maker)
    w.exchange.delete_rfq(w.requester, rfq_id)
    created, deleted = w.events[0].messages[None], w.events[-1].messages[None]
    for msg in (created, deleted, rest_view):
        assert (msg["contracts_fp"], msg["target_cost_dollars"]) == ("0.00", "50.0000")


def test_quote_events_carry_each_partys_own_subaccount_only() -> None:
    w = World()
    body = {"market_ticker": w.market().ticker, "contracts_fp": "5", "rest_remainder": False}
    rfq = w.exchange.create_rfq(w.requester, {**body, "subaccount": 2})
    quote = w.exchange.create_quote(
        w.maker,
        {
            "rfq_id": rfq.id,
            "yes_bid": "0.40",
            "no_bid": "0",
            "rest_remainder": False,
            "subaccount": 7,
        },
    )
    w.exchange.accept_quote(w.requester, quote.id, {"accepted_side": "yes"})
    w.exchange.confirm_quote(w.maker, quote.id)
    w.scheduler.advance(20)
    for kind in ("quote_created", "quote_accepted", "quote_executed"):
        event = next(e for e in w.events if e.type == kind)
        assert event.messages[w.maker.user_id]["subaccount"] == 7, kind
        assert event.messages[w.requester.user_id]["subaccount"] == 2, kind
    (fill,), _ = w.exchange.list_fills(w.maker, {})
    assert fill.wire()["subaccount_number"] == 7
    assert w.exchange.list_fills(w.maker, {"subaccount": "0"})[0] == []
    plain = World()
    quote_id = plain.quote(plain.rfq())
    created = next(e for e in plain.events if e.type == "quote_created")
    assert all("subaccount" not in msg for msg in created.messages.values())
    assert plain.exchange.quotes[quote_id].wire(plain.maker).get("creator_subaccount") is None


def test_order_ids_on_quotes_are_private_to_their_party() -> None:
    w = World()
    quote_id = w.quote(w.rfq(contracts_fp="3"))
    quote = w.exchange.quotes[quote_id]
    for viewer in (w.maker, w.requester):
        view = quote.wire(viewer)
        assert "creator_order_id" not in view
        assert "rfq_creator_order_id" not in view
    w.exchange.accept_quote(w.requester, quote_id, {"accepted_side": "yes"})
    w.exchange.confirm_quote(w.maker, quote_id)
    w.scheduler.advance(20)
    maker_view, requester_view = quote.wire(w.maker), quote.wire(w.requester)
    assert maker_view["creator_order_id"] == quote.creator_order_id
    assert "rfq_creator_order_id" not in maker_view
    assert requester_view["rfq_creator_order_id"] == quote.rfq_creator_order_id
    assert "creator_order_id" not in requester_view
    # The documented way to find one's fills: by that order id.
    (fill,), _ = w.exchange.list_fills(w.maker, {"order_id": maker_view["creator_order_id"]})
    assert fill.count == Decimal(3)


def test_markets_carry_shard_and_settlement_bounds() -> None:
    w = World(markets=16)
    standard, combo = w.market(), next(m for m in w.markets if m.is_combo)
    assert market_wire(standard, START)["exchange_index"] == 0
    assert market_wire(combo, START)["exchange_index"] == COMBO_EXCHANGE_INDEX
    body = market_wire(standard, START)
    assert body["settlement_bounds_type"] == "default"
    assert "settlement_floor_dollars" not in body
    floored = dataclasses.replace(standard, settlement_floor=Decimal("0.30"))
    body = market_wire(floored, START)
    assert (body["settlement_bounds_type"], body["settlement_floor_dollars"]) == (
        "floor",
        "0.3000",
    )
    status = w.exchange.status_wire()
    assert [s["exchange_index"] for s in status["exchange_index_statuses"]] == [0, 1]
    assert status["intra_exchange_transfers_active"] is True


# ----------------------------------------------------------------------------- partial fills


@pytest.mark.parametrize(
    ("size", "filled"),
    [("10", "5"), ("7", "3"), ("3", "1"), ("2", "1"), ("1", "1"), ("2.5", "1"), ("0.5", "0.5")],
)
def test_partial_fill_size_is_half_in_whole_contracts_at_least_one(size: str, filled: str) -> None:
    assert partial_fill_size(Decimal(size)) == Decimal(filled)


def execute(w: World, quote_id: str, side: str = "yes", contracts: Decimal | None = None) -> None:
    w.exchange.accept_quote(w.requester, quote_id, {"accepted_side": side}, contracts=contracts)
    w.exchange.confirm_quote(w.maker, quote_id)
    w.scheduler.advance(20)


def test_a_partial_fill_moves_only_the_filled_part() -> None:
    w = World()
    w.exchange.partial_fill = lambda: True
    quote_id = w.quote(w.rfq(contracts_fp="10"), "0.40", "0.55")
    execute(w, quote_id)
    quote = w.exchange.quotes[quote_id]
    assert quote.status == "executed"
    assert quote.contracts_accepted == Decimal(10)  # the record keeps what was accepted
    maker_query = {"order_id": quote.creator_order_id or ""}
    (maker_fill,), _ = w.exchange.list_fills(w.maker, maker_query)
    (req_fill,), _ = w.exchange.list_fills(w.requester, {})
    assert maker_fill.count == req_fill.count == Decimal(5)
    # Fees on what filled: the maker's 0.021 and the taker's 0.084, each up to the cent.
    assert (maker_fill.fee, req_fill.fee) == (Decimal("0.03"), Decimal("0.09"))
    assert w.maker.balance == w.exchange.starting_balance - Decimal("2.00") - Decimal("0.03")
    assert w.requester.balance == w.exchange.starting_balance - Decimal("3.00") - Decimal("0.09")
    (position,), _, _ = w.exchange.list_positions(w.maker, {})
    assert position.contracts == Decimal(5)
    # Neither party asked to rest: the unfilled part is cancelled, nothing rests.
    maker_order = w.exchange.orders[quote.creator_order_id or ""]
    assert (maker_order.filled, maker_order.status) == (Decimal(5), "cancelled")
    assert w.exchange.resting_orders() == []


def test_a_one_contract_trade_fills_whole_even_when_partial() -> None:
    w = World()
    w.exchange.partial_fill = lambda: True
    quote_id = w.quote(w.rfq(contracts_fp="1"))
    execute(w, quote_id)
    (fill,), _ = w.exchange.list_fills(w.maker, {})
    assert fill.count == Decimal(1)
    order_id = w.exchange.quotes[quote_id].creator_order_id or ""
    assert w.exchange.orders[order_id].status == "executed"


def test_rest_remainder_rests_the_unaccepted_part_of_the_offer() -> None:
    w = World()
    rfq_id = w.rfq(contracts_fp="10")
    body = {"rfq_id": rfq_id, "yes_bid": "0.40", "no_bid": "0.55", "rest_remainder": True}
    quote = w.exchange.create_quote(w.maker, body)
    execute(w, quote.id, "no", contracts=Decimal(4))
    assert quote.creator_order_id is not None
    order = w.exchange.orders[quote.creator_order_id]
    assert (order.user, order.side, order.price) == (w.maker, "no", Decimal("0.55"))
    assert (order.initial, order.filled, order.remaining) == (Decimal(10), Decimal(4), Decimal(6))
    assert order.status == "resting"
    assert w.exchange.resting_orders(quote.rfq.market) == [order]
    # The requester accepted 4 and got 4: its order is done.
    assert w.exchange.orders[quote.rfq_creator_order_id or ""].status == "executed"
    assert w.exchange.positions[(w.maker.user_id, quote.rfq.market.ticker)].contracts == -4

    with rejects(404, "resting order"):
        w.exchange.cancel_order(w.requester, order.id)
    w.exchange.fill_resting_order(order.id, Decimal(2))
    assert (order.filled, order.remaining, order.status) == (Decimal(6), Decimal(4), "resting")
    assert w.exchange.positions[(w.maker.user_id, quote.rfq.market.ticker)].contracts == -6
    fills, _ = w.exchange.list_fills(w.maker, {"order_id": order.id})
    assert sorted(f.count for f in fills) == [Decimal(2), Decimal(4)]
    assert w.exchange.cancel_order(w.maker, order.id).status == "cancelled"
    assert order.remaining == 0
    assert w.exchange.resting_orders() == []
    with rejects(404, "resting order"):
        w.exchange.cancel_order(w.maker, order.id)


def test_a_partial_fill_rests_the_rest_for_whoever_asked() -> None:
    w = World()
    w.exchange.partial_fill = lambda: True
    rfq_id = w.rfq(contracts_fp="10", rest_remainder=True)
    body = {"rfq_id": rfq_id, "yes_bid": "0.40", "no_bid": "0.55", "rest_remainder": True}
    quote = w.exchange.create_quote(w.maker, body)
    execute(w, quote.id)
    maker_order = w.exchange.orders[quote.creator_order_id or ""]
    requester_order = w.exchange.orders[quote.rfq_creator_order_id or ""]
    assert (maker_order.remaining, maker_order.status) == (Decimal(5), "resting")
    assert (requester_order.side, requester_order.price) == ("no", Decimal("0.60"))
    assert (requester_order.remaining, requester_order.status) == (Decimal(5), "resting")


def test_fills_can_be_listed_late_while_positions_move_at_once() -> None:
    w = World()
    w.exchange.fill_listing_delay = lambda: 30.0
    quote_id = w.quote(w.rfq(contracts_fp="2"))
    execute(w, quote_id)  # executes 15 s in, then 5 s more pass
    assert len(w.exchange.fills) == 2
    assert w.exchange.list_fills(w.maker, {})[0] == []
    (position,), _, _ = w.exchange.list_positions(w.maker, {})
    assert position.contracts == Decimal(2)
    w.scheduler.advance(24.9)
    assert w.exchange.list_fills(w.maker, {})[0] == []
    w.scheduler.advance(0.1)
    (fill,), _ = w.exchange.list_fills(w.maker, {})
    assert fill.order_id == w.exchange.quotes[quote_id].creator_order_id


# ----------------------------------------------------------------------------- settlement


def test_settlement_pays_winners_books_pnl_and_closes_the_market() -> None:
    w = World()
    market = w.market()
    traded = w.quote(w.rfq(contracts_fp="10"), "0.40", "0.55")
    execute(w, traded)  # maker +10 YES at 0.40, requester 10 NO at 0.60
    rest_body = {
        "rfq_id": w.rfq(contracts_fp="10"),
        "yes_bid": "0.40",
        "no_bid": "0",
        "rest_remainder": True,
    }
    resting_quote = w.exchange.create_quote(w.maker, rest_body)
    execute(w, resting_quote.id, contracts=Decimal(1))
    open_rfq = w.rfq(contracts_fp="3")
    pending = w.quote(open_rfq)
    maker_cash, requester_cash = w.maker.balance, w.requester.balance
    w.events.clear()

    paid = w.exchange.settle_market(market.ticker, "yes")

    assert len(paid) == 2
    assert w.maker.balance == maker_cash + 11  # 11 YES contracts pay $1 each
    assert w.requester.balance == requester_cash  # NO lost
    maker_pos = w.exchange.positions[(w.maker.user_id, market.ticker)]
    requester_pos = w.exchange.positions[(w.requester.user_id, market.ticker)]
    assert (maker_pos.contracts, maker_pos.cost) == (Decimal(0), Decimal(0))
    assert maker_pos.realized_pnl == Decimal(11) - Decimal("4.40")
    assert requester_pos.realized_pnl == Decimal("-6.60")
    assert maker_pos.settlement_payout == Decimal(11)
    assert [e.type for e in w.events] == ["rfq_deleted"]
    assert w.exchange.rfq(open_rfq).cancellation_reason == "market settled"
    assert w.exchange.quotes[pending].status == "cancelled"
    assert w.exchange.resting_orders() == []
    body = market_wire(market, w.scheduler.clock())
    assert (body["status"], body["result"], body["settlement_value_dollars"]) == (
        "finalized",
        "yes",
        "1.0000",
    )
    assert body["settlement_ts"] == "2026-11-21T12:00:40Z"  # two trades, 20 s each
    # get-positions.md has no settlement filter: the flat position stays listed, with its
    # realised P&L, and only count_filter=position drops it.
    listed, events, _ = w.exchange.list_positions(w.maker, {})
    assert [p.wire()["position_fp"] for p in listed] == ["0.00"]
    assert events[0]["realized_pnl_dollars"] == "6.6000"
    assert w.exchange.list_positions(w.maker, {"count_filter": "position"})[0] == []
    assert w.exchange.balance_wire(w.maker)["portfolio_value"] == 0

    with rejects(400, "settled", code="MARKET_INACTIVE"):
        w.rfq(contracts_fp="1")
    with rejects(400, "already settled"):
        w.exchange.settle_market(market.ticker, "no")
    with rejects(400, "result"):
        w.exchange.settle_market(w.markets[1].ticker, "maybe")
    with rejects(404, "not found"):
        w.exchange.settle_market("NOPE", "no")


def test_settling_no_pays_the_no_side_and_voids_a_confirmed_quote() -> None:
    w = World()
    market = w.market()
    execute(w, w.quote(w.rfq(contracts_fp="4"), "0.40", "0.55"))
    confirmed = w.quote(w.rfq(contracts_fp="2"), "0.40", "0.55")
    w.exchange.accept_quote(w.requester, confirmed, {"accepted_side": "yes"})
    w.exchange.confirm_quote(w.maker, confirmed)
    requester_cash = w.requester.balance
    w.exchange.settle_market(market.ticker, "no")
    assert w.requester.balance == requester_cash + 4
    assert w.exchange.quotes[confirmed].status == "cancelled"
    w.scheduler.advance(60)  # the execution timer it had finds nothing to execute
    assert len(w.exchange.fills) == 2
    assert market_wire(market, w.scheduler.clock())["settlement_value_dollars"] == "0.0000"


def test_the_makers_client_order_id_has_the_documented_format() -> None:
    w = World()
    quote_id = w.quote(w.rfq(contracts_fp="2"))
    execute(w, quote_id)
    executed = next(e for e in w.events if e.type == "quote_executed")
    prefix, digest, suffix = executed.messages[w.maker.user_id]["client_order_id"].split(":")
    assert (prefix, len(digest), suffix) == ("quote", 8, quote_id)
    assert executed.messages[w.requester.user_id]["client_order_id"]


def test_fills_and_positions_filter_by_exchange_index() -> None:
    w = World(markets=16)
    combo = next(m for m in w.markets if m.is_combo and m.grid == CENT_GRID)
    execute(w, w.quote(w.rfq(contracts_fp="2")))
    execute(w, w.quote(w.rfq(market_ticker=combo.ticker, contracts_fp="3"), "0.05", "0.90"))
    for shard, ticker in ((0, w.market().ticker), (COMBO_EXCHANGE_INDEX, combo.ticker)):
        query = {"exchange_index": str(shard)}
        fills, _ = w.exchange.list_fills(w.maker, query)
        positions, _, _ = w.exchange.list_positions(w.maker, query)
        assert [f.market.ticker for f in fills] == [ticker]
        assert [p.wire()["exchange_index"] for p in positions] == [shard]
        assert fills[0].wire()["exchange_index"] == shard
    with rejects(400, "exchange_index"):
        w.exchange.list_fills(w.maker, {"exchange_index": "x"})
