"""Wire models: exact decimals, legacy fallbacks, tolerance of unknowns, the side mapping."""

from __future__ import annotations

import contextlib
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmbot.kalshi.models import (
    ErrorReply,
    Fill,
    MalformedMessage,
    Market,
    MarketPosition,
    Ok,
    Orderbook,
    Quote,
    QuoteAccepted,
    QuoteAcceptedMsg,
    QuoteCreated,
    QuoteExecuted,
    Rfq,
    RfqCreated,
    RfqDeleted,
    Subscribed,
    UnknownMessage,
    Unsubscribed,
    maker_fill_for_accept,
    parse_fixed_point,
    parse_message,
)
from tests.support.payloads import (
    QUOTE_ACCEPTED,
    QUOTE_CREATED,
    QUOTE_EXECUTED,
    RFQ_CREATED,
    RFQ_DELETED,
)


def test_rfq_created_parses_exact_decimals() -> None:
    event = parse_message(orjson.dumps(RFQ_CREATED))
    assert isinstance(event, RfqCreated)
    assert event.msg.contracts_fp == Decimal("100.00")
    assert isinstance(event.msg.contracts_fp, Decimal)
    assert event.msg.target_cost_dollars == Decimal("0.35")
    assert event.msg.created_ts is not None


def test_all_five_events_and_controls_parse() -> None:
    frames = [
        RFQ_CREATED,
        RFQ_DELETED,
        QUOTE_CREATED,
        QUOTE_ACCEPTED,
        QUOTE_EXECUTED,
        {"id": 1, "type": "subscribed", "msg": {"channel": "communications", "sid": 1}},
        {"id": 102, "sid": 2, "seq": 7, "type": "unsubscribed"},
        {"id": 123, "sid": 456, "seq": 222, "type": "ok", "msg": {"market_tickers": ["A"]}},
        {"id": 123, "type": "error", "msg": {"code": 6, "msg": "Already subscribed"}},
    ]
    kinds = [type(parse_message(orjson.dumps(f))) for f in frames]
    assert kinds == [
        RfqCreated,
        RfqDeleted,
        QuoteCreated,
        QuoteAccepted,
        QuoteExecuted,
        Subscribed,
        Unsubscribed,
        Ok,
        ErrorReply,
    ]


def test_legacy_integer_fields_are_used_only_when_fixed_point_is_absent() -> None:
    legacy = {
        "type": "quote_accepted",
        "sid": 1,
        "msg": {
            "quote_id": "q",
            "rfq_id": "r",
            "quote_creator_id": "c",
            "market_ticker": "M",
            "yes_bid": 35,
            "no_bid": 65,
            "accepted_side": "no",
            "contracts_accepted": 50,
            "rfq_target_cost": 3500,
        },
    }
    msg = parse_message(orjson.dumps(legacy)).msg  # type: ignore[union-attr]
    assert msg.yes_bid_dollars == Decimal("0.35")
    assert msg.no_bid_dollars == Decimal("0.65")
    assert msg.contracts_accepted_fp == Decimal(50)
    # target costs were centi-cents: 3500 -> $0.35
    assert msg.rfq_target_cost_dollars == Decimal("0.35")

    both = {**legacy, "msg": {**legacy["msg"], "yes_bid_dollars": "0.3512"}}
    assert parse_message(orjson.dumps(both)).msg.yes_bid_dollars == Decimal("0.3512")  # type: ignore[union-attr]


def test_float_prices_are_refused() -> None:
    bad = {**QUOTE_ACCEPTED, "msg": {**QUOTE_ACCEPTED["msg"], "yes_bid_dollars": 0.35}}
    with pytest.raises(MalformedMessage, match="yes_bid_dollars"):
        parse_message(orjson.dumps(bad))
    with pytest.raises(ValueError, match="fixed-point"):
        parse_fixed_point(0.1)
    with pytest.raises(ValueError, match="finite"):
        parse_fixed_point("NaN")


def test_unknown_fields_are_tolerated_and_unknown_types_are_values() -> None:
    extra = {**RFQ_CREATED, "future": 1, "msg": {**RFQ_CREATED["msg"], "new_field": {"a": 1}}}
    assert isinstance(parse_message(orjson.dumps(extra)), RfqCreated)
    unknown = parse_message(b'{"type": "rfq_repriced", "msg": {}}')
    assert unknown == UnknownMessage(type="rfq_repriced", raw={"type": "rfq_repriced", "msg": {}})


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"msg": {}}', "missing message type"),
        (b'{"type": "quote_accepted", "msg": {"quote_id": "q"}}', "invalid quote_accepted"),
    ],
)
def test_malformed_frames_raise_with_reason_and_excerpt(frame: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage) as err:
        parse_message(frame)
    assert err.value.reason.startswith(reason)
    assert err.value.excerpt == frame.decode()


def test_excerpt_is_short() -> None:
    with pytest.raises(MalformedMessage) as err:
        parse_message("{" + "x" * 10_000)
    assert len(err.value.excerpt) < 200


@given(st.binary(max_size=300))
def test_parse_message_never_raises_anything_but_malformed(frame: bytes) -> None:
    with contextlib.suppress(MalformedMessage):
        parse_message(frame)


@pytest.mark.parametrize(
    ("side", "price", "contracts"),
    [("yes", Decimal("0.35"), Decimal("50.00")), ("no", Decimal("0.65"), Decimal("50.00"))],
)
def test_maker_fill_side_mapping(side: str, price: Decimal, contracts: Decimal) -> None:
    msg = QuoteAcceptedMsg.model_validate({**QUOTE_ACCEPTED["msg"], "accepted_side": side})
    fill = maker_fill_for_accept(msg)
    assert (fill.side, fill.price, fill.contracts) == (side, price, contracts)
    assert fill.max_loss == price * contracts


def test_maker_fill_falls_back_to_offered_size_of_the_hit_side() -> None:
    data = {k: v for k, v in QUOTE_ACCEPTED["msg"].items() if k != "contracts_accepted_fp"}
    no_side = maker_fill_for_accept(
        QuoteAcceptedMsg.model_validate({**data, "accepted_side": "no"})
    )
    assert no_side.contracts == Decimal("200.00")
    with pytest.raises(ValueError, match="accepted_side"):
        maker_fill_for_accept(QuoteAcceptedMsg.model_validate({**data, "accepted_side": None}))


def test_rest_shapes() -> None:
    quote = Quote.model_validate(
        {
            "id": "q",
            "rfq_id": "r",
            "creator_id": "c",
            "rfq_creator_id": "rc",
            "market_ticker": "M",
            "contracts_fp": "10.00",
            "yes_bid_dollars": "0.4100",
            "no_bid_dollars": "0.5500",
            "created_ts": "2026-01-01T00:00:00Z",
            "updated_ts": "2026-01-01T00:00:00Z",
            "status": "open",
        }
    )
    assert quote.yes_bid_dollars + quote.no_bid_dollars == Decimal("0.96")
    market = Market.model_validate(
        {
            "ticker": "M",
            "yes_bid_dollars": "0.40",
            "price_ranges": [
                {"start": "0.00", "end": "0.10", "step": "0.001"},
                {"start": "0.10", "end": "0.90", "step": "0.01"},
            ],
        }
    )
    assert market.is_on_grid(Decimal("0.005"))
    assert market.is_on_grid(Decimal("0.42"))
    assert not market.is_on_grid(Decimal("0.425"))
    assert not market.is_on_grid(Decimal("0.95"))
    book = Orderbook.from_response(
        {"orderbook_fp": {"yes_dollars": [["0.1500", "100.00"]], "no_dollars": []}}
    )
    assert book.yes[0].price == Decimal("0.15")
    legacy_book = Orderbook.from_response({"orderbook": {"yes": [[15, 100]], "no": None}})
    assert legacy_book.yes[0].price == Decimal("0.15")
    pos = MarketPosition.model_validate({"ticker": "M", "position": -5, "market_exposure": 250})
    assert (pos.position_fp, pos.market_exposure_dollars) == (Decimal(-5), Decimal("2.50"))
    fill = Fill.model_validate(
        {
            "order_id": "o",
            "ticker": "M",
            "count_fp": "3.00",
            "yes_price_dollars": "0.41",
            "no_price_dollars": "0.59",
            "outcome_side": "yes",
        }
    )
    assert fill.market == "M"
    assert Rfq.model_validate(
        {"id": "r", "market_ticker": "M", "mve_collection_ticker": "C"}
    ).is_combo
