"""Hypothesis strategies for hostile exchange input: WebSocket frames and REST bodies.

Everything here is built from the valid examples in :mod:`tests.support.payloads` and then broken
in the ways a buggy or hostile exchange (or a proxy in between) could break it: fields
dropped or retyped, sizes huge, negative, NaN, infinite or written with absurd exponents,
prices outside [0, 1], unknown sides and message types, nested garbage, very long strings
and odd unicode.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
from hypothesis import strategies as st

from tests.support.payloads import (
    QUOTE_ACCEPTED,
    QUOTE_CREATED,
    QUOTE_EXECUTED,
    REST_QUOTE,
    RFQ_CREATED,
    RFQ_DELETED,
    rest_rfq,
)

VALID_FRAMES: dict[str, dict[str, Any]] = {
    "rfq_created": RFQ_CREATED,
    "rfq_deleted": RFQ_DELETED,
    "quote_created": QUOTE_CREATED,
    "quote_accepted": QUOTE_ACCEPTED,
    "quote_executed": QUOTE_EXECUTED,
    "subscribed": {"type": "subscribed", "id": 1, "msg": {"channel": "communications", "sid": 7}},
    "ok": {"type": "ok", "id": 2, "sid": 7, "seq": 3, "msg": {"market_tickers": ["A"]}},
    "error": {"type": "error", "id": 3, "msg": {"code": 2, "msg": "params required"}},
    "unsubscribed": {"type": "unsubscribed", "id": 4, "sid": 7, "seq": 1},
}

MESSAGE_TYPES = sorted(VALID_FRAMES)

# Sizes and prices as the exchange writes them (strings), broken.
NUMBER_TEXTS = [
    "0",
    "-0",
    "-5",
    "-0.01",
    "1.0001",
    "1",
    "100.00",
    "1e999",
    "1e-999",
    "-1e999",
    "1E+999999999",
    "1e-999999999",
    "9" * 60,
    "0." + "0" * 40 + "1",
    "NaN",
    "nan",
    "sNaN",
    "-NaN",
    "Infinity",
    "-inf",
    "inf",
    " 0.35 ",
    "0.35\n",
    "0,35",
    "$0.35",
    "",
    "   ",
    "0x10",
    "1_000",
    "½",
    "٣",  # an Arabic-Indic digit: Decimal() accepts it
]

hostile_texts = st.one_of(
    st.sampled_from(NUMBER_TEXTS),
    st.sampled_from(["yes", "no", "YES", "No", "maybe", "both", "", "null", "true"]),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=8).map(lambda s: s * 500),
)

hostile_numbers = st.one_of(
    st.integers(min_value=-1000, max_value=1000),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 1, 2**53, -(2**63), 2**64 - 1, 0.35, -0.01, 1.0001, 1e300]),
)

json_scalars = st.one_of(st.none(), st.booleans(), hostile_numbers, hostile_texts)

json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=12), children, max_size=4),
    ),
    max_leaves=12,
)

field_values = st.one_of(
    hostile_texts,
    hostile_numbers,
    st.none(),
    st.booleans(),
    st.lists(json_scalars, max_size=3),
    st.dictionaries(st.text(max_size=8), json_scalars, max_size=3),
)


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a JSON object, possibly with an object under ``msg``) with a few mutations."""
    frame = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        target = frame
        if isinstance(frame.get("msg"), dict) and draw(st.booleans()):
            target = frame["msg"]
        keys = sorted(target)
        op = draw(st.sampled_from(["drop", "replace", "replace", "replace", "add", "retype"]))
        if op == "drop" and keys:
            del target[draw(st.sampled_from(keys))]
        elif op == "replace" and keys:
            target[draw(st.sampled_from(keys))] = draw(field_values)
        elif op == "add":
            target[draw(st.text(max_size=20))] = draw(json_values)
        elif op == "retype":
            frame["type"] = draw(
                st.one_of(st.sampled_from(MESSAGE_TYPES), st.text(max_size=20), json_scalars)
            )
    return frame


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


near_valid_objects: st.SearchStrategy[dict[str, Any]] = st.sampled_from(MESSAGE_TYPES).flatmap(
    lambda kind: mutated(VALID_FRAMES[kind])
)

#: JSON-serialisable hostile frames (objects), as text.
near_valid_frames = near_valid_objects.map(lambda obj: _dumps(obj).decode())

#: Anything a socket could hand the parser.
any_frames: st.SearchStrategy[str | bytes] = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    json_values.map(lambda v: _dumps(v).decode()),
    near_valid_frames,
    near_valid_objects.map(_dumps),
    # Truncated valid frames, and valid frames with trailing junk.
    st.tuples(st.sampled_from(MESSAGE_TYPES), st.integers(min_value=0, max_value=400)).map(
        lambda t: _dumps(VALID_FRAMES[t[0]])[: t[1]]
    ),
    st.tuples(st.sampled_from(MESSAGE_TYPES), st.text(min_size=1, max_size=5)).map(
        lambda t: _dumps(VALID_FRAMES[t[0]]).decode() + t[1]
    ),
    # JSON literals orjson refuses, in otherwise valid frames.
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" * 40, "-0"]).map(
        lambda lit: _dumps(QUOTE_ACCEPTED).decode().replace('"50.00"', lit)
    ),
)


# --------------------------------------------------------------------------- REST bodies

REST_MARKET: dict[str, Any] = {
    "ticker": "M-1",
    "event_ticker": "M",
    "status": "active",
    "yes_bid_dollars": "0.48",
    "yes_ask_dollars": "0.52",
    "price_ranges": [{"start": "0", "end": "1", "step": "0.01"}],
}
REST_POSITION: dict[str, Any] = {
    "ticker": "M-1",
    "position_fp": "5.00",
    "market_exposure_dollars": "2.40",
    "realized_pnl_dollars": "0",
}


def rest_bodies_for(key: str | None, row: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    """JSON bodies for an endpoint answering ``{key: row}`` (or ``{key: [row, ...]}``)."""
    rows = (
        st.lists(st.one_of(mutated(row), st.just(row), json_values), max_size=3)
        if row
        else st.just([])
    )
    one = mutated(row) if row else json_values
    shaped: list[st.SearchStrategy[Any]] = [json_values]
    if key is not None:
        shaped += [
            st.builds(lambda r, c: {key: r, "cursor": c}, rows, st.one_of(st.none(), json_scalars)),
            st.builds(lambda r: {key: r}, one),
            st.builds(lambda v: {key: v}, json_values),
            # A long list of valid rows: must not be a problem either.
            st.just({key: [row] * 500}) if row else st.just({key: []}),
        ]
    elif row is not None:
        shaped.append(mutated(row))
    return st.one_of(*shaped)


raw_bodies = st.one_of(
    st.binary(max_size=100),
    st.just(b""),
    st.sampled_from([b"null", b"{", b"<html>502 Bad Gateway</html>", b"\xff\xfe", b"[]", b"0"]),
)


@st.composite
def rest_responses(draw: st.DrawFn, key: str | None, row: dict[str, Any] | None) -> Any:
    """(status, headers, body bytes) for one HTTP answer."""
    status = draw(
        st.one_of(
            st.just(200),  # mostly a success: the body is what is hostile
            st.just(200),
            st.sampled_from([200, 201, 204, 299, 304, 400, 401, 403, 404, 409, 418, 429]),
            st.sampled_from([500, 502, 503, 599]),
            st.integers(min_value=100, max_value=599),
        )
    )
    raw = draw(st.integers(min_value=0, max_value=3)) == 0
    body = draw(raw_bodies) if raw else _dumps(draw(rest_bodies_for(key, row)))
    content_type = draw(
        st.sampled_from(["application/json", "text/html", "text/plain; charset=latin-1", "", "x/y"])
    )
    headers = {"Content-Type": content_type} if content_type else {}
    return status, headers, body


REST_ROWS = {
    "quote": REST_QUOTE,
    "quotes": REST_QUOTE,
    "market": REST_MARKET,
    "markets": REST_MARKET,
    "rfqs": rest_rfq(1),
    "market_positions": REST_POSITION,
}
