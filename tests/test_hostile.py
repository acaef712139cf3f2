"""Hostile input: generated WebSocket frames and REST answers never crash the daemon or corrupt
its state.

1. The frame parser (``parse_message``) returns a typed message or raises
   ``MalformedMessage``, for arbitrary bytes, arbitrary JSON and mutated valid frames; what
   it returns keeps the models' promises (finite Decimals, known sides, the right type).
2. A real ``CommunicationsStream`` on a loopback socket counts the garbage, skips it, and
   still delivers the valid frame that follows; the engine's event dispatch and the quote
   manager keep their books consistent whatever parseable nonsense reaches them.
3. ``KalshiRestClient`` returns a typed value or raises a ``KalshiError`` for any status and
   body; the quote manager and the reconciliation survive hostile answers.

The bugs these tests found are fixed; section 6 keeps a regression test for each.

Every property test is bounded and derandomised so that CI runs the same examples each time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from unittest import mock

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from structlog.testing import capture_logs

from mmbot.kalshi.errors import KalshiError
from mmbot.kalshi.history import HistoryWindows
from mmbot.kalshi.models import (
    ErrorReply,
    MalformedMessage,
    Market,
    MarketPosition,
    Ok,
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
    parse_message,
)
from mmbot.kalshi.rest import KalshiRestClient, Page, PositionsPage
from mmbot.kalshi.ws import CommunicationsStream
from mmbot.mock.server import MockExchange
from mmbot.quoting import QuoteManager
from mmbot.quoting import timing as quoting
from tests.support.keys import KEY_ID, TestKey
from tests.support.payloads import QUOTE_ACCEPTED, QUOTE_EXECUTED, RFQ_CREATED, RFQ_DELETED
from tests.support.quoting import LIMITS, QUOTES, Harness, VirtualTimers, engine_for
from tests.support.strategies_hostile import (
    NUMBER_TEXTS,
    REST_ROWS,
    VALID_FRAMES,
    any_frames,
    field_values,
    mutated,
    near_valid_frames,
    near_valid_objects,
    rest_responses,
)
from tests.support.streams import consuming, until

# Hostile-input fuzzing (hypothesis over every parser and REST call): the chaos side of
# the suite, run in full by CI and left out of the inner loop.
pytestmark = pytest.mark.slow

D = Decimal

# Bounded, reproducible runs: the same examples on every CI run.
FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
ASYNC_FUZZ = settings(FUZZ, max_examples=150)
SOCKET_FUZZ = settings(FUZZ, max_examples=12)

EVENT_CLASSES = (RfqCreated, RfqDeleted, QuoteCreated, QuoteAccepted, QuoteExecuted)
TYPED = {
    "rfq_created": RfqCreated,
    "rfq_deleted": RfqDeleted,
    "quote_created": QuoteCreated,
    "quote_accepted": QuoteAccepted,
    "quote_executed": QuoteExecuted,
    "subscribed": Subscribed,
    "unsubscribed": Unsubscribed,
    "ok": Ok,
    "error": ErrorReply,
}


# =========================================================================== 1. the parser


def assert_model_promises(value: Any, where: str = "") -> None:
    """Every Decimal finite, every side a known side, recursively through models and tuples."""
    if isinstance(value, Decimal):
        assert value.is_finite(), f"{where}: non-finite {value!r}"
    elif isinstance(value, float):
        raise AssertionError(f"{where}: a float leaked into a model: {value!r}")
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            field = getattr(value, name)
            if name in ("accepted_side", "outcome_side") or (name == "side" and field):
                assert field in (None, "yes", "no"), f"{where}.{name}: {field!r}"
            assert_model_promises(field, f"{where}.{name}")
    elif isinstance(value, tuple):
        for i, item in enumerate(value):
            assert_model_promises(item, f"{where}[{i}]")


def parse_checked(frame: str | bytes) -> Any:
    """Parse ``frame``; check what comes back, or the MalformedMessage raised (None then)."""
    refused: MalformedMessage | None = None
    try:
        msg = parse_message(frame)
    except MalformedMessage as exc:
        refused = exc
    if refused is not None:
        assert refused.reason
        assert isinstance(refused.excerpt, str)
        assert len(refused.excerpt) <= 163  # 160 characters and "..."
        assert str(refused)
        return None
    # Anything else raised propagates and fails the test.
    if isinstance(msg, UnknownMessage):
        assert isinstance(msg.type, str)
        assert msg.type not in TYPED, "a known type must be validated, not passed through"
        assert isinstance(msg.raw, dict)
        assert msg.raw.get("type") == msg.type
        return msg
    expected = TYPED[msg.type]
    assert type(msg) is expected, (msg.type, type(msg))
    assert_model_promises(msg, msg.type)
    if isinstance(msg, QuoteAccepted) and msg.msg.accepted_side is not None:
        # The one mapping of an acceptance to a fill either works or says why it cannot.
        try:
            fill = maker_fill_for_accept(msg.msg)
        except ValueError:
            # Refused: no size at all, or a price or size no real fill can have.
            side = msg.msg.accepted_side
            price = msg.msg.yes_bid_dollars if side == "yes" else msg.msg.no_bid_dollars
            offered = (
                msg.msg.yes_contracts_offered_fp
                if side == "yes"
                else msg.msg.no_contracts_offered_fp
            )
            size = msg.msg.contracts_accepted_fp
            size = size if size is not None else offered
            assert size is None or size <= 0 or not 0 < price <= 1
        else:
            assert fill.side == msg.msg.accepted_side
            assert 0 < fill.price <= 1
            assert fill.contracts > 0
    return msg


@pytest.mark.slow  # 400 generated frames: over a second
@FUZZ
@given(frame=any_frames)
def test_parser_returns_a_typed_message_or_raises_malformed_for_any_frame(
    frame: str | bytes,
) -> None:
    parse_checked(frame)


@FUZZ
@given(obj=near_valid_objects, as_bytes=st.booleans())
def test_parser_on_mutated_valid_frames(obj: dict[str, Any], as_bytes: bool) -> None:
    raw = orjson.dumps(obj)
    msg = parse_checked(raw if as_bytes else raw.decode())
    kind = obj.get("type")
    if msg is None:
        # Malformed: only ever for a frame of a known type (or no usable type at all).
        assert not isinstance(kind, str) or kind in TYPED
    elif isinstance(kind, str) and kind not in TYPED:
        assert isinstance(msg, UnknownMessage)


@FUZZ
@given(frame=st.sampled_from(sorted(VALID_FRAMES)), value=field_values)
def test_parser_numeric_fields_are_exact_finite_decimals_or_refused(frame: str, value: Any) -> None:
    """Every price and size field of every message, set to a hostile value."""
    base = VALID_FRAMES[frame]
    numeric = [
        k
        for k in base.get("msg", {})
        if isinstance(base["msg"], dict) and (k.endswith("_fp") or k.endswith("_dollars"))
    ]
    assume(numeric)
    for key in numeric:
        obj = {**base, "msg": {**base["msg"], key: value}}
        msg = parse_checked(orjson.dumps(obj))
        if isinstance(value, (float, bool)):
            assert msg is None, f"{key}={value!r} must be refused"
        if isinstance(value, str):
            try:
                exact = Decimal(value.strip())
            except ArithmeticError:
                exact = None
            if exact is None or not exact.is_finite():
                assert msg is None, f"{key}={value!r} must be refused"
        if msg is not None and value is not None:
            parsed = getattr(msg.msg, key)
            assert isinstance(parsed, Decimal)
            assert parsed == (Decimal(value.strip()) if isinstance(value, str) else value)


@pytest.mark.parametrize("text", NUMBER_TEXTS)
def test_parser_each_hostile_number_in_an_acceptance(text: str) -> None:
    for key in ("yes_bid_dollars", "contracts_accepted_fp"):
        frame = {**QUOTE_ACCEPTED, "msg": {**QUOTE_ACCEPTED["msg"], key: text}}
        parse_checked(orjson.dumps(frame).decode())


def test_parser_accepts_the_documented_examples() -> None:
    # The property tests above would pass on a parser that refuses everything.
    for kind, frame in VALID_FRAMES.items():
        msg = parse_message(orjson.dumps(frame))
        assert type(msg) is TYPED[kind]
    unknown = parse_message(b'{"type": "rfq_repriced", "msg": {}}')
    assert isinstance(unknown, UnknownMessage)


@FUZZ
@given(side=st.one_of(st.text(max_size=10), st.sampled_from(["YES", "No", " yes", "both"])))
def test_parser_refuses_unknown_accepted_sides(side: str) -> None:
    assume(side not in ("yes", "no"))
    frame = {**QUOTE_ACCEPTED, "msg": {**QUOTE_ACCEPTED["msg"], "accepted_side": side}}
    assert parse_checked(orjson.dumps(frame)) is None


# =========================================================================== helpers: the book


def book_state(h: Harness) -> tuple[Any, ...]:
    """Everything garbage must leave alone."""
    return (
        dict(h.risk.positions()),
        dict(h.risk.reserved()),
        h.qm.open_quotes,
        sorted(h.qm.tracked_quote_ids()),
        [(q.quote_id, q.state) for q in h.qm.live()],
        len(h.exchange.calls),
    )


def assert_book_consistent(h: Harness) -> None:
    """The QuotingMachine invariants that must hold after any input at all."""
    qm, risk = h.qm, h.risk
    tracked = qm.tracked_quote_ids()
    # No reservation without a tracked quote (it could never be released).
    assert set(risk.reserved()) <= tracked, (set(risk.reserved()), tracked)
    assert {q.quote_id for q in qm.live() if q.quote_id is not None} >= set(risk.reserved())
    # The running open-quote count is what a recount finds; a quote being withdrawn is
    # open until the exchange says it is gone.
    recount = sum(1 for q in qm._by_rfq.values() if q.state in ("creating", "open"))
    assert qm.open_quotes == recount + len(qm._withdrawals)
    exposure = risk.exposure()
    assert exposure.is_finite()
    assert D(0) <= exposure <= LIMITS.max_exposure_dollars, exposure
    for reservation in risk.reserved().values():
        fill = reservation.fill
        assert fill.side in ("yes", "no")
        assert D(0) <= fill.price <= 1
        assert D(0) <= fill.contracts <= LIMITS.max_contracts_per_rfq
        live = next(q for q in qm.live() if q.quote_id == reservation.quote_id)
        # Executing: its fills are not listed (a hostile frame named an order we never
        # had), so the reservation stays until the exchange's positions settle it.
        assert live.state in ("confirmed", "executing"), live
        assert reservation.market == live.rfq.market_ticker
    for market, position in risk.positions().items():
        assert abs(position.contracts) <= LIMITS.max_position_per_market, market
        assert position.cost >= 0
    for live in qm.live():
        assert live.state in ("creating", "open", "withdrawing", "confirmed", "executing"), live
        if live.state == "open":
            # An open quote always has its expiry armed: otherwise it stays live forever.
            assert h.timers.armed("ttl", live), f"open quote {live.quote_id} will never expire"
        if live.state in ("confirmed", "executing"):
            assert live.fill is not None
            assert live.quote_id in risk.reserved()
        if live.state == "withdrawing":
            assert live.quote_id in qm._withdrawals


async def dispatch(h: Harness, item: Any) -> None:
    """Hand an event to the quote manager exactly as Engine._consume does, and wait for it."""
    qm = h.qm
    if isinstance(item, RfqCreated):
        await qm.on_rfq(item.msg, 0.0)
    elif isinstance(item, QuoteAccepted):
        await qm.on_quote_accepted(item.msg, 0.0)
    elif isinstance(item, QuoteExecuted):
        qm.on_quote_executed(item.msg)
    elif isinstance(item, RfqDeleted):
        await qm.on_rfq_deleted(item.msg.id)
    await qm.wait_idle()


class World:
    """A quote manager with one open quote (M-1) and one confirmed, reserved quote (M-2)."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.open_rfq = Rfq(id="rfq-open", market_ticker="M-1", event_ticker="M")
        self.conf_rfq = Rfq(id="rfq-conf", market_ticker="M-2", event_ticker="M")
        self.open_id = ""
        self.conf_id = ""

    async def build(self) -> World:
        h = self.h
        for rfq in (self.open_rfq, self.conf_rfq):
            rfq = rfq.model_copy(update={"contracts_fp": D(10)})
            h.exchange.add_rfq(rfq)
            await h.qm.on_rfq(rfq)
        self.open_id = str(h.live(self.open_rfq).quote_id)
        self.conf_id = str(h.live(self.conf_rfq).quote_id)
        accept = h.exchange.accept(self.conf_id, "yes", D(4))
        await h.qm.on_quote_accepted(accept)
        assert h.live(self.conf_rfq).state == "confirmed"
        assert self.conf_id in h.risk.reserved()
        return self

    def bases(self) -> list[dict[str, Any]]:
        """Valid frames about this world's quotes and RFQs, for mutation."""
        out = []
        for quote_id, rfq, market in (
            (self.open_id, self.open_rfq, "M-1"),
            (self.conf_id, self.conf_rfq, "M-2"),
            ("q-stranger", Rfq(id="rfq-x", market_ticker="M-3"), "M-3"),
        ):
            ids = {"quote_id": quote_id, "rfq_id": rfq.id, "market_ticker": market}
            out.append({**QUOTE_ACCEPTED, "msg": {**QUOTE_ACCEPTED["msg"], **ids}})
            out.append({**QUOTE_EXECUTED, "msg": {**QUOTE_EXECUTED["msg"], **ids}})
            rfq_ids = {"id": rfq.id, "market_ticker": market, "contracts_fp": "10"}
            out.append({**RFQ_DELETED, "msg": {**RFQ_DELETED["msg"], **rfq_ids}})
        fresh = {"id": "rfq-new", "market_ticker": "M-3", "creator_id": "them"}
        out.append({**RFQ_CREATED, "msg": {**RFQ_CREATED["msg"], **fresh}})
        return out


def run_in_loop(body: Callable[[Harness], Coroutine[Any, Any, None]]) -> None:
    """Run ``body`` on a fresh event loop with a fresh harness; fail on any leaked task error."""

    async def main() -> None:
        timers = VirtualTimers(asyncio.get_running_loop())
        timers.install()
        try:
            with capture_logs() as logs:
                await body(Harness(timers))
            failures = [e for e in logs if e["event"] in ("task_failed", "background_task_failed")]
            assert failures == [], failures
        finally:
            timers.uninstall()
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

    asyncio.run(main())


# =========================================================================== 2. manager and stream

# The mutations applied to a world's frames: index into World.bases(), then a mutation.
world_frames = st.lists(
    st.tuples(st.integers(min_value=0, max_value=9), st.data()), min_size=1, max_size=6
)


@pytest.mark.slow  # 150 generated event sequences, each on a fresh loop: over a second
@ASYNC_FUZZ
@given(picks=world_frames)
def test_quote_manager_keeps_its_books_under_hostile_events(
    picks: list[tuple[int, st.DataObject]],
) -> None:
    async def body(h: Harness) -> None:
        world = await World(h).build()
        bases = world.bases()
        assert_book_consistent(h)
        for index, data in picks:
            obj = data.draw(mutated(bases[index % len(bases)]))
            item = parse_checked(orjson.dumps(obj))
            before = book_state(h)
            confirms_before = len(h.exchange.calls_to("confirm_quote"))
            if item is None:
                event("malformed")
                # Garbage never reaches the manager (the stream drops it): nothing moves.
                assert book_state(h) == before
                continue
            note(f"dispatching {item!r}")
            event(type(item).__name__)
            await dispatch(h, item)
            assert_book_consistent(h)
            confirms = h.exchange.calls_to("confirm_quote")[confirms_before:]
            if confirms:
                event("confirm sent")
                # A confirm goes out only for a complete acceptance of our open quote.
                assert isinstance(item, QuoteAccepted)
                assert item.msg.accepted_side is not None
                assert [c["quote_id"] for c in confirms] == [world.open_id]
                assert before[2] >= 1
            if not isinstance(item, QuoteExecuted):
                assert dict(h.risk.positions()) == before[0], "positions moved without a fill"

    run_in_loop(body)


async def _through_socket(frames: list[str | bytes], key: TestKey) -> None:
    """Frames over a real WebSocket, through CommunicationsStream and Engine._consume."""
    timers = VirtualTimers(asyncio.get_running_loop())
    timers.install()
    h = Harness(timers)
    engine = engine_for(h)  # its quote manager replaces the harness's
    assert engine.quotes is h.qm
    world = await World(h).build()
    positions = dict(h.risk.positions())
    sentinel = {**RFQ_CREATED, "msg": {**RFQ_CREATED["msg"], "id": "sentinel"}}
    sentinel["msg"]["market_ticker"] = "M-3"
    expected = [parse_message(f) if _parses(f) else None for f in frames]
    try:
        with capture_logs() as logs:
            async with MockExchange.scripted({KEY_ID: key.public}) as srv:
                stream = CommunicationsStream(
                    srv.ws_url,
                    key.signer(),
                    reconnect_min_seconds=0.01,
                    reconnect_max_seconds=0.05,
                )
                engine.stream = stream
                stop = asyncio.Event()
                consume = asyncio.create_task(engine._consume(stop))
                await srv.scripting.wait_subscribed(1)
                await until(lambda: stream.stats.connected)
                for frame in frames:
                    srv.scripting.send(frame)
                srv.scripting.send(sentinel)
                await until(
                    lambda: any(
                        c["rfq_id"] == "sentinel" for c in h.exchange.calls_to("create_quote")
                    )
                )
                await h.qm.wait_idle()
                assert not consume.done(), consume
                assert not stop.is_set()
                await stream.close()
                await asyncio.wait_for(consume, 3)
        assert engine.failure is None
        failures = [
            e
            for e in logs
            if e["event"] in ("task_failed", "event_stream_failed", "background_task_failed")
        ]
        assert failures == [], failures
        stats = stream.stats
        assert stats.malformed == sum(1 for m in expected if m is None)
        assert stats.frames == len(frames) + 2  # the subscribed reply and the sentinel
        assert stats.events == sum(1 for m in expected if isinstance(m, EVENT_CLASSES)) + 1
        assert stats.unknown == sum(1 for m in expected if isinstance(m, UnknownMessage))
        assert stats.reconnects == 0
        assert_book_consistent(h)
        executed = [m for m in expected if isinstance(m, QuoteExecuted)]
        if not executed:
            assert dict(h.risk.positions()) == positions
        assert world.open_id
    finally:
        timers.uninstall()


def _parses(frame: str | bytes) -> bool:
    try:
        parse_message(frame)
    except MalformedMessage:
        return False
    return True


def _socket_safe(frame: str | bytes) -> bool:
    """Frames that legitimately end the subscription stay out."""
    if not _parses(frame):
        return True
    msg = parse_message(frame)
    # Error 25, "buffer overflow", ends the subscription by design: a reconnect.
    return not (isinstance(msg, ErrorReply) and msg.msg.code == 25)


@SOCKET_FUZZ
@given(
    frames=st.lists(
        st.one_of(any_frames, near_valid_frames).filter(_socket_safe), min_size=5, max_size=25
    )
)
def test_stream_and_engine_survive_hostile_frames_over_a_real_socket(
    frames: list[str | bytes], ed25519_key: TestKey
) -> None:
    asyncio.run(_through_socket(frames, ed25519_key))


async def test_garbage_frames_are_counted_and_the_next_valid_frame_is_delivered(
    ed25519_key: TestKey,
) -> None:
    # A fixed sample: every kind of garbage at once, then one valid RFQ.
    garbage: list[str | bytes] = [
        b"\x00\x01\xff",
        "",
        "null",
        "[]",
        '{"type": 7}',
        '{"type": "quote_accepted", "msg": "x"}',
        '{"type": "rfq_created", "msg": {"id": 1, "market_ticker": "M"}}',
        orjson.dumps({**QUOTE_ACCEPTED, "msg": {**QUOTE_ACCEPTED["msg"], "yes_bid_dollars": 0.5}}),
        orjson.dumps({**QUOTE_ACCEPTED, "msg": {**QUOTE_ACCEPTED["msg"], "accepted_side": "x"}}),
        orjson.dumps({**RFQ_CREATED, "msg": {**RFQ_CREATED["msg"], "contracts_fp": "NaN"}}),
        orjson.dumps(QUOTE_ACCEPTED).decode().replace('"50.00"', "1e999"),
        "{" * 5000,
    ]
    async with MockExchange.scripted({KEY_ID: ed25519_key.public}) as srv:
        stream = CommunicationsStream(srv.ws_url, ed25519_key.signer(), reconnect_min_seconds=0.01)
        with capture_logs():
            async with consuming(stream) as consumer:
                await srv.scripting.wait_subscribed(1)
                for frame in garbage:
                    srv.scripting.send(frame)
                srv.scripting.send(RFQ_CREATED)
                item = await consumer.next()
        assert isinstance(item, RfqCreated)
        assert item.msg.id == RFQ_CREATED["msg"]["id"]
        assert stream.stats.malformed == len(garbage)
        assert stream.stats.events == 1
        assert stream.stats.reconnects == 0


# =========================================================================== 3. REST


async def _no_sleep(_: float) -> None:
    return None


def hostile_client(
    answer: Callable[[httpx.Request], httpx.Response],
) -> KalshiRestClient:
    return KalshiRestClient(
        "http://exchange.invalid/trade-api/v2",
        read_tokens_per_second=1e6,
        read_bucket_capacity=1e6,
        write_tokens_per_second=1e6,
        write_bucket_capacity=1e6,
        retry_deadline_seconds=0.0,
        transport=httpx.MockTransport(answer),
        sleep=_no_sleep,
        # No patience either for a history window that keeps failing: without sleeps, a
        # 30 s deadline would be 30 s of instant retries for every 5xx example.
        history=HistoryWindows(deadline_seconds=0.0),
    )


def _response(spec: tuple[int, dict[str, str], bytes]) -> Callable[[httpx.Request], httpx.Response]:
    status, headers, body = spec

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, content=body)

    return answer


async def _collect(iterator: Any) -> list[Any]:
    return [item async for item in iterator]


def _check_quote(value: Any) -> None:
    assert isinstance(value, Quote)
    assert_model_promises(value)


def _check_page(model: type[BaseModel]) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        assert isinstance(value, Page)
        assert value.cursor is None or isinstance(value.cursor, str)
        for item in value.items:
            assert isinstance(item, model)
            assert_model_promises(item)

    return check


def _check_list(model: type[BaseModel]) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        for item in value:
            assert isinstance(item, model)
            assert_model_promises(item)

    return check


def _check_id(value: Any) -> None:
    assert isinstance(value, str)
    assert value


def _check_none(value: Any) -> None:
    assert value is None


def _check_positions(value: Any) -> None:
    assert isinstance(value, PositionsPage)
    for item in value.market_positions:
        assert isinstance(item, MarketPosition)
        assert_model_promises(item)


def _check_market(value: Any) -> None:
    assert isinstance(value, Market)
    assert_model_promises(value)


# name -> (call, check, envelope key for its body, row to mutate)
RestCall = Callable[[KalshiRestClient], Awaitable[Any]]
REST_CALLS: dict[str, tuple[RestCall, Callable[[Any], None], str | None, Any]] = {
    "create_quote": (
        lambda c: c.create_quote("r1", D("0.40"), D("0.50")),
        _check_id,
        None,
        {"id": "q1"},
    ),
    "confirm_quote": (lambda c: c.confirm_quote("q1", rfq_id="r1"), lambda v: None, None, {}),
    "delete_quote": (lambda c: c.delete_quote("q1", rfq_id="r1"), lambda v: None, None, {}),
    "get_quote": (lambda c: c.get_quote("q1", rfq_id="r1"), _check_quote, "quote", None),
    "list_quotes": (
        lambda c: c.list_quotes(user_filter="self", status="open"),
        _check_page(Quote),
        "quotes",
        None,
    ),
    "iter_quotes": (
        lambda c: _collect(c.iter_quotes(user_filter="self", status="accepted")),
        _check_list(Quote),
        "quotes",
        None,
    ),
    "list_positions": (lambda c: c.list_positions(), _check_positions, "market_positions", None),
    "iter_positions": (
        lambda c: _collect(c.iter_positions()),
        _check_list(MarketPosition),
        "market_positions",
        None,
    ),
    "get_market": (lambda c: c.get_market("M-1"), _check_market, "market", None),
    "list_markets": (lambda c: c.list_markets(status="open"), _check_page(Market), "markets", None),
    "list_rfqs": (lambda c: c.list_rfqs(status="open"), _check_page(Rfq), "rfqs", None),
    "get_communications_id": (
        lambda c: c.get_communications_id(),
        _check_id,
        "communications_id",
        None,
    ),
}


@pytest.mark.parametrize("name", sorted(REST_CALLS))
def test_rest_calls_return_typed_values_or_raise_kalshi_errors(name: str) -> None:
    call, check, key, row = REST_CALLS[name]
    row = row if row is not None else REST_ROWS.get(key or "")

    @settings(FUZZ, max_examples=120)
    @given(spec=rest_responses(key, row))
    def run(spec: tuple[int, dict[str, str], bytes]) -> None:
        async def go() -> None:
            client = hostile_client(_response(spec))
            try:
                value = await call(client)
            except KalshiError as exc:
                event(type(exc).__name__)
            else:
                assert spec[0] < 400, f"HTTP {spec[0]} returned {value!r}"
                event("returned")
                check(value)
            finally:
                await client.aclose()

        asyncio.run(go())

    run()


@pytest.mark.parametrize("status", [200, 201, 400, 404, 409, 429, 500, 503])
async def test_rest_error_statuses_with_garbage_bodies_raise_kalshi_errors(status: int) -> None:
    bodies = [b"", b"<html>", b"null", b"[1]", b'{"error": 5}', b'{"code": {"x": 1}}', b"\xff"]
    for body in bodies:
        client = hostile_client(_response((status, {}, body)))
        try:
            if status < 400:
                # 2xx garbage where an object is due: a KalshiError, never a raw one.
                with pytest.raises(KalshiError):
                    await client.create_quote("r1", D("0.40"), D("0.50"))
            else:
                with pytest.raises(KalshiError) as info:
                    await client.confirm_quote("q1", rfq_id="r1")
                assert info.value.status == status
        finally:
            await client.aclose()


# =========================================================================== 4. daemon and REST


def manager_over(h: Harness, client: KalshiRestClient) -> QuoteManager:
    """A quote manager that talks to ``client`` but reads markets from the harness."""
    qm = QuoteManager(client, h.market_data, h.router, h.risk, h.journal, QUOTES)
    h.qm = qm
    return qm


@contextlib.contextmanager
def instant_deadlines() -> Any:
    """No retry waits longer than zero: each hostile answer is final at once."""
    with (
        mock.patch.object(quoting, "_CREATE_DEADLINE_SECONDS", 0.0),
        mock.patch.object(quoting, "_DELETE_DEADLINE_SECONDS", 0.0),
        mock.patch.object(quoting, "_CONFIRM_SHARE", 0.0),
    ):
        yield


def _accept_msg(quote_id: str, rfq: Rfq) -> QuoteAcceptedMsg:
    return QuoteAcceptedMsg(
        quote_id=quote_id,
        rfq_id=rfq.id,
        quote_creator_id="me",
        market_ticker=rfq.market_ticker,
        yes_bid_dollars=D("0.48"),
        no_bid_dollars=D("0.48"),
        accepted_side="yes",
        contracts_accepted_fp=D(5),
    )


@settings(ASYNC_FUZZ, max_examples=100)
@given(
    create=st.one_of(st.just((201, {}, b'{"id": "q-1"}')), rest_responses(None, {"id": "q-1"})),
    confirm=rest_responses(None, {}),
)
def test_quote_manager_survives_hostile_create_and_confirm_answers(
    create: tuple[int, dict[str, str], bytes], confirm: tuple[int, dict[str, str], bytes]
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/confirm"):
            return _response(confirm)(request)
        if request.method == "POST":
            return _response(create)(request)
        return httpx.Response(204)  # deletes

    async def body(h: Harness) -> None:
        client = hostile_client(answer)
        qm = manager_over(h, client)
        rfq = Rfq(id="rfq-1", market_ticker="M-1", event_ticker="M", contracts_fp=D(10))
        with instant_deadlines():
            await qm.on_rfq(rfq)
            await qm.wait_idle()
            assert_book_consistent(h)
            live = [q for q in qm.live() if q.rfq.id == rfq.id]
            if not live:
                # Refused or unreadable: nothing tracked, nothing reserved, counted.
                event("create failed")
                assert qm.open_quotes == 0
                assert qm.counters.quote_errors == 1
                assert dict(h.risk.reserved()) == {}
                await client.aclose()
                return
            event("created")
            [quote] = live
            assert quote.state == "open"
            assert isinstance(quote.quote_id, str)
            assert quote.quote_id
            await qm.on_quote_accepted(_accept_msg(quote.quote_id, rfq))
            await qm.wait_idle()
        assert_book_consistent(h)
        status = confirm[0]
        if quote.state == "confirmed":
            # Success, or a failure that may hide a landed confirm: the fill stays reserved.
            assert quote.quote_id in h.risk.reserved()
            landed = status < 400 or status >= 500
            event(f"confirmed (HTTP {status})")
            assert landed, f"HTTP {status} left the quote confirmed"
        else:
            event(f"confirm refused (HTTP {status})")
            assert quote.state == "done"
            assert dict(h.risk.reserved()) == {}
            assert 400 <= status < 500
        assert dict(h.risk.positions()) == {}
        await client.aclose()

    run_in_loop(body)


@pytest.mark.slow  # 100 generated listings, each reconciled on a fresh loop: over a second
@settings(ASYNC_FUZZ, max_examples=100)
@given(
    positions=rest_responses("market_positions", REST_ROWS["market_positions"]),
    quotes=rest_responses("quotes", REST_ROWS["quotes"]),
    rfqs=rest_responses("rfqs", REST_ROWS["rfqs"]),
)
def test_reconciliation_survives_hostile_listings(positions: Any, quotes: Any, rfqs: Any) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/portfolio/positions"):
            return _response(positions)(request)
        if path.endswith("/communications/quotes") and request.method == "GET":
            return _response(quotes)(request)
        if path.endswith("/communications/rfqs"):
            return _response(rfqs)(request)
        return httpx.Response(404, json={"code": "not_found"})

    async def body(h: Harness) -> None:
        client = hostile_client(answer)
        engine = engine_for(h)
        engine.rest = client
        engine.quotes._rest = client
        with instant_deadlines():
            await engine.reconcile("reconnect")
            await engine.quotes.wait_idle()
        event(f"positions loaded: {bool(h.risk.positions())}")
        event(f"quotes adopted: {bool(h.qm.live())}")
        # Whatever was listed, the book still adds up.
        exposure = h.risk.exposure()
        assert exposure.is_finite()
        assert exposure >= 0
        recount = sum(1 for q in h.qm._by_rfq.values() if q.state in ("creating", "open"))
        assert h.qm.open_quotes == recount
        assert set(h.risk.reserved()) <= h.qm.tracked_quote_ids()
        await client.aclose()

    run_in_loop(body)


# ================================================================ 6. bugs found, now fixed


# Regression, bug 1: mmbot/quoting.py QuoteManager._accepted passes an acceptance's price/size
# to RiskBook.reserve, whose _validate raises ValueError for a price outside [0, 1] or a
# negative size; the handler dies after cancelling the quote's expiry, so the quote stays
# 'open' forever (never expires, never deleted, counted in open_quotes) and no decline is
# journaled
@pytest.mark.parametrize(("price", "contracts"), [("1.5", "5"), ("-0.01", "5"), ("0.48", "-5")])
async def test_bug_acceptance_with_an_impossible_fill(
    timers: VirtualTimers, price: str, contracts: str
) -> None:
    h = Harness(timers)
    rfq = h.rfq("M-1", "10")
    await h.qm.on_rfq(rfq)
    live = h.live(rfq)
    assert live.quote_id is not None
    msg = _accept_msg(live.quote_id, rfq).model_copy(
        update={"yes_bid_dollars": D(price), "contracts_accepted_fp": D(contracts)}
    )
    with capture_logs():
        await h.qm.on_quote_accepted(msg)
    assert h.exchange.calls_to("confirm_quote") == []
    assert live.state == "done"
    assert h.exchange.calls_to("delete_quote"), "the declined quote must be withdrawn"
    assert_book_consistent(h)


# Regression, bug 2: mmbot/quoting.py QuoteManager._price -> _contracts_for /
# RiskBook.check_quote: an RFQ with a negative contracts_fp or target_cost_dollars raises
# ValueError ('contracts must be >= 0'), one with target_cost_dollars='1E+999999999' raises
# decimal.Overflow; on_rfq dies instead of skipping the RFQ
@pytest.mark.parametrize(
    "sizes",
    [
        {"contracts_fp": "-5"},
        {"contracts_fp": None, "target_cost_dollars": "-3"},
        {"contracts_fp": None, "target_cost_dollars": "1E+999999999"},
    ],
)
async def test_bug_rfq_with_an_impossible_size(
    timers: VirtualTimers, sizes: dict[str, str | None]
) -> None:
    h = Harness(timers)
    frame = {**RFQ_CREATED, "msg": {**RFQ_CREATED["msg"], "market_ticker": "M-1", **sizes}}
    try:
        item = parse_message(orjson.dumps(frame))
    except MalformedMessage:
        # Sizes beyond any real amount are refused at the edge, as a malformed frame.
        assert "1E+999999999" in str(sizes)
        return
    assert isinstance(item, RfqCreated)
    with capture_logs():
        await h.qm.on_rfq(item.msg)
    assert h.exchange.calls_to("create_quote") == []
    assert h.qm.counters.skipped_by_reason == {"invalid_size": 1}


# Regression, bug 3: mmbot/kalshi/rest.py get_quote / get_market (and get_rfq) do `(data or
# {}).get(...)`: a 200 whose JSON body is a list, string or number raises AttributeError
# instead of a KalshiError
@pytest.mark.parametrize("body", [b"[1]", b'"quote"', b"7"])
async def test_bug_get_quote_on_a_non_object_body(body: bytes) -> None:
    client = hostile_client(_response((200, {}, body)))
    try:
        with pytest.raises(KalshiError):
            await client.get_quote("q1", rfq_id="r1")
        with pytest.raises(KalshiError):
            await client.get_market("M-1")
    finally:
        await client.aclose()


def _rest_engine(h: Harness, routes: dict[str, Any]) -> tuple[Any, KalshiRestClient]:
    def answer(request: httpx.Request) -> httpx.Response:
        for suffix, payload in routes.items():
            if request.url.path.endswith(suffix):
                return httpx.Response(200, json=payload)
        return httpx.Response(200, json={})

    client = hostile_client(answer)
    engine = engine_for(h)
    engine.rest = client
    return engine, client


# Regression, bug 4: mmbot/engine.py Engine._reconcile computes (now - rfq.created_ts) with an
# aware `now`; an RFQ listed with a timezone-less created_ts ('2026-01-01T00:00:00') raises
# TypeError, which reconcile() does not catch (only KalshiError): at start-up run() dies
async def test_bug_reconcile_on_an_rfq_without_a_timezone(timers: VirtualTimers) -> None:
    h = Harness(timers)
    rfq = {
        "id": "r9",
        "market_ticker": "M-1",
        "contracts_fp": "1",
        "created_ts": "2026-01-01T00:00:00",
    }
    engine, client = _rest_engine(h, {"/communications/rfqs": {"rfqs": [rfq]}})
    try:
        # A time without a zone is read as UTC (Kalshi stamps UTC), so it compares with `now`.
        [listed] = [item async for item in client.iter_rfqs(status="open")]
        assert listed.created_ts == datetime(2026, 1, 1, tzinfo=UTC)
        with capture_logs() as logs:
            await engine.reconcile("start")
            await engine.quotes.wait_idle()
    finally:
        await client.aclose()
    # Reconciliation completes and is journaled. The RFQ is months older than
    # quotes.max_rfq_age_seconds, so it is not caught up: nothing quoted, nothing tracked.
    assert engine.reconciliations == 1
    assert [e["event"] for e in logs if e["log_level"] in ("warning", "error")] == []
    counts = dict.fromkeys(
        ("positions", "untracked_deleted", "accepted", "confirmed", "rfqs", "settled"), 0
    )
    assert h.journal.of("reconciled") == [{"trigger": "start", "counts": counts}]
    assert h.exchange.calls_to("create_quote") == []
    assert h.qm.live() == []


# Regression, bug 5: mmbot/engine.py Engine._reconcile passes market_exposure_dollars straight
# to RiskBook.set_position, which raises ValueError ('cost must be >= 0') for a negative value;
# reconcile() does not catch it: at start-up run() dies
async def test_bug_reconcile_on_a_negative_exposure(timers: VirtualTimers) -> None:
    h = Harness(timers)
    row = {"ticker": "M-1", "position_fp": "5", "market_exposure_dollars": "-1.00"}
    engine, client = _rest_engine(h, {"/portfolio/positions": {"market_positions": [row]}})
    try:
        with capture_logs():
            await engine.reconcile("start")
        assert h.risk.exposure() >= 0
    finally:
        await client.aclose()


@pytest.fixture
async def timers() -> Any:
    virtual = VirtualTimers(asyncio.get_running_loop())
    virtual.install()
    try:
        yield virtual
    finally:
        virtual.uninstall()


# Regression, bug 6: mmbot/engine.py Engine._reconcile -> RiskBook.set_position accepts a
# listed market_exposure_dollars of '1E+999999999' (finite, so _non_negative passes);
# afterwards RiskBook.exposure() (sum over costs) raises decimal.Overflow, so every check_quote
# (every RFQ handler), Engine.snapshot() and Engine.state() (metrics) raise until the next
# reconciliation
async def test_bug_reconcile_on_an_exposure_beyond_decimal_range(timers: VirtualTimers) -> None:
    h = Harness(timers)
    row = {"ticker": "M-1", "position_fp": "5", "market_exposure_dollars": "1E+999999999"}
    engine, client = _rest_engine(h, {"/portfolio/positions": {"market_positions": [row]}})
    try:
        with capture_logs():
            await engine.reconcile("start")
        assert h.risk.exposure().is_finite()
        engine.snapshot()
    finally:
        await client.aclose()
