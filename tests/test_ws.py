"""CommunicationsStream against real loopback sockets (the mock exchange, small custom servers)."""

from __future__ import annotations

import asyncio
import base64
import random
from decimal import Decimal
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType, web
from structlog.testing import capture_logs

from mmbot.kalshi.auth import (
    ACCESS_SIGNATURE_HEADER,
    ACCESS_TIMESTAMP_HEADER,
    Signer,
    signing_message,
    verify_signature,
)
from mmbot.kalshi.models import (
    MalformedMessage,
    QuoteAccepted,
    QuoteCreated,
    QuoteExecuted,
    RfqCreated,
    RfqDeleted,
    UnknownMessage,
)
from mmbot.kalshi.ws import (
    CommunicationsStream,
    Event,
    Reconnected,
    SubscriptionError,
)
from mmbot.mock.http_util import WS_PATH
from mmbot.mock.scripting import WsCommand
from mmbot.mock.server import MockExchange
from tests.support.keys import KEY_ID, TestKey
from tests.support.payloads import (
    QUOTE_ACCEPTED,
    QUOTE_CREATED,
    QUOTE_EXECUTED,
    RFQ_CREATED,
    RFQ_DELETED,
)
from tests.support.streams import Consumer, consuming, until


def rfq_created(rfq_id: str) -> dict[str, Any]:
    return {**RFQ_CREATED, "msg": {**RFQ_CREATED["msg"], "id": rfq_id}}


def error_frame(code: int, text: str, cmd_id: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "msg": {"code": code, "msg": text}}
    if cmd_id is not None:
        frame["id"] = cmd_id
    return frame


# ----------------------------------------------------------------------------- helpers


def stream_for(url: str, signer: Signer | None, **overrides: Any) -> CommunicationsStream:
    """A stream with test-sized delays: reconnects in tens of milliseconds."""
    options: dict[str, Any] = {
        "reconnect_min_seconds": 0.01,
        "reconnect_max_seconds": 0.05,
        "open_timeout_seconds": 2.0,
        "subscribe_timeout_seconds": 2.0,
    }
    options.update(overrides)
    return CommunicationsStream(url, signer, **options)


def stream_tasks() -> list[asyncio.Task[Any]]:
    """Tasks started by the stream that are still alive (there should be none)."""
    return [
        task
        for task in asyncio.all_tasks()
        if "CommunicationsStream" in getattr(task.get_coro(), "__qualname__", "")
    ]


def header(recorded_headers: dict[str, str], name: str) -> str:
    lowered = {k.lower(): v for k, v in recorded_headers.items()}
    return lowered[name.lower()]


class CountingSigner(Signer):
    """A real signer that remembers every signing call."""

    def __init__(self, key: TestKey) -> None:
        super().__init__(KEY_ID, key.private)
        self.calls: list[tuple[str, str]] = []

    def headers(self, method: str, url_or_path: str) -> dict[str, str]:
        self.calls.append((method, url_or_path))
        return super().headers(method, url_or_path)


class MaxRandom(random.Random):
    """Makes full jitter deterministic: always the longest allowed delay."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def expect_event(consumer: Consumer, kind: type[Any]) -> Any:
    item = await consumer.next()
    assert isinstance(item, kind), item
    return item


# ----------------------------------------------------------------------------- 1. handshake


async def test_handshake_signed_and_subscribes_to_communications(any_key: TestKey) -> None:
    async with MockExchange.scripted({KEY_ID: any_key.public}) as srv:
        stream = stream_for(srv.ws_url, any_key.signer())
        async with consuming(stream) as consumer:
            await srv.scripting.wait_subscribed(1)
            srv.scripting.send(RFQ_CREATED)
            await expect_event(consumer, RfqCreated)
            assert stream.stats.connected

        shake = srv.scripting.ws_handshakes[0]
        assert shake.auth_ok
        assert shake.path == WS_PATH == "/trade-api/ws/v2"
        # Check the signature independently of the server: it covers timestamp + GET + path.
        timestamp = header(shake.headers, ACCESS_TIMESTAMP_HEADER)
        signature = header(shake.headers, ACCESS_SIGNATURE_HEADER)
        assert base64.b64decode(signature)
        message = signing_message(timestamp, "GET", "/trade-api/ws/v2")
        assert verify_signature(any_key.public, signature, message)

        (command,) = srv.scripting.ws_commands
        assert command == {"id": 1, "cmd": "subscribe", "params": {"channels": ["communications"]}}


async def test_shard_parameters_are_sent_only_when_set(rsa_key: TestKey) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, rsa_key.signer(), shard_factor=4, shard_key=3)
        async with consuming(stream) as consumer:
            await srv.scripting.wait_subscribed(1)
            srv.scripting.send(RFQ_CREATED)
            await expect_event(consumer, RfqCreated)
        assert srv.scripting.ws_commands[0]["params"] == {
            "channels": ["communications"],
            "shard_factor": 4,
            "shard_key": 3,
        }


@pytest.mark.parametrize(
    ("factor", "key"),
    [(None, 0), (0, None), (101, None), (4, 4), (4, -1)],
)
def test_invalid_shard_parameters_are_refused_at_construction(
    factor: int | None, key: int | None
) -> None:
    with pytest.raises(ValueError, match="shard"):
        CommunicationsStream(
            "ws://127.0.0.1:1/trade-api/ws/v2", None, shard_factor=factor, shard_key=key
        )


# ----------------------------------------------------------------------------- 2. typed events


async def test_all_five_event_types_arrive_typed_and_in_order(ed25519_key: TestKey) -> None:
    async with MockExchange.scripted({KEY_ID: ed25519_key.public}) as srv:
        stream = stream_for(srv.ws_url, ed25519_key.signer())
        async with consuming(stream) as consumer:
            await srv.scripting.wait_subscribed(1)
            for frame in (RFQ_CREATED, QUOTE_CREATED, QUOTE_ACCEPTED, QUOTE_EXECUTED, RFQ_DELETED):
                srv.scripting.send(frame)

            created = await expect_event(consumer, RfqCreated)
            quote = await expect_event(consumer, QuoteCreated)
            accepted = await expect_event(consumer, QuoteAccepted)
            executed = await expect_event(consumer, QuoteExecuted)
            deleted = await expect_event(consumer, RfqDeleted)

        assert created.msg.id == "rfq_123"
        assert created.msg.contracts_fp == Decimal("100.00")
        assert isinstance(created.msg.contracts_fp, Decimal)
        assert created.msg.target_cost_dollars == Decimal("0.35")
        assert quote.msg.yes_bid_dollars == Decimal("0.35")
        assert quote.msg.no_bid_dollars == Decimal("0.65")
        assert quote.msg.no_contracts_offered_fp == Decimal("200.00")
        assert accepted.msg.accepted_side == "yes"
        assert accepted.msg.contracts_accepted_fp == Decimal("50.00")
        assert isinstance(accepted.msg.yes_bid_dollars, Decimal)
        assert executed.msg.order_id == "order_789"
        assert executed.msg.client_order_id == "my_client_order_123"
        assert deleted.msg.deleted_ts is not None
        assert stream.stats.events == 5
        assert stream.stats.frames == 6  # the five events and the subscribed reply


async def test_events_sent_before_the_subscribed_reply_are_not_lost(rsa_key: TestKey) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:

        def events_first(command: WsCommand) -> None:
            command.send(rfq_created("early-1"))
            command.send(rfq_created("early-2"))
            command.handle()

        srv.scripting.on_ws_command = events_first
        stream = stream_for(srv.ws_url, rsa_key.signer())
        async with consuming(stream) as consumer:
            await srv.scripting.wait_subscribed(1)
            srv.scripting.send(rfq_created("late"))
            ids = [(await expect_event(consumer, RfqCreated)).msg.id for _ in range(3)]
        assert ids == ["early-1", "early-2", "late"]


# ----------------------------------------------------------------------------- 3, 4. bad frames


async def test_malformed_frames_are_counted_reported_and_skipped(rsa_key: TestKey) -> None:
    seen: list[MalformedMessage] = []
    incomplete_accept = {"type": "quote_accepted", "sid": 1, "msg": {"quote_id": "q1"}}
    float_price = {
        **QUOTE_CREATED,
        "msg": {**QUOTE_CREATED["msg"], "yes_bid_dollars": 0.35},
    }
    huge_garbage = "x" * 50_000
    bad_frames: list[str | bytes] = [
        "{not json",
        "[1, 2, 3]",
        orjson.dumps(incomplete_accept).decode(),
        orjson.dumps(float_price).decode(),
        b"\xff\xfe\x00binary",
        huge_garbage,
    ]
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, rsa_key.signer(), on_malformed=seen.append)
        with capture_logs() as logs:
            async with consuming(stream) as consumer:
                await srv.scripting.wait_subscribed(1)
                for frame in bad_frames:
                    srv.scripting.send(frame)
                srv.scripting.send(rfq_created("after-the-junk"))
                event = await expect_event(consumer, RfqCreated)
                assert event.msg.id == "after-the-junk"

    assert stream.stats.malformed == len(bad_frames)
    assert len(seen) == len(bad_frames)
    assert all(isinstance(exc, MalformedMessage) for exc in seen)
    reasons = [exc.reason for exc in seen]
    assert reasons[0] == "invalid JSON"
    assert reasons[1] == "not a JSON object"
    assert reasons[2].startswith("invalid quote_accepted")
    assert "yes_bid_dollars" in reasons[3]
    assert reasons[4] == "invalid JSON"

    warnings = [entry for entry in logs if entry["event"] == "ws_malformed_frame"]
    assert len(warnings) == len(bad_frames)
    assert all(entry["log_level"] == "warning" for entry in warnings)
    assert all({"reason", "excerpt"} <= entry.keys() for entry in warnings)
    # Only a short excerpt of a frame is ever logged.
    assert len(warnings[-1]["excerpt"]) < 200
    assert huge_garbage not in str(logs)


async def test_a_failing_on_malformed_callback_does_not_end_the_stream(rsa_key: TestKey) -> None:
    def explode(_: MalformedMessage) -> None:
        raise RuntimeError("callback bug")

    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, rsa_key.signer(), on_malformed=explode)
        async with consuming(stream) as consumer:
            await srv.scripting.wait_subscribed(1)
            srv.scripting.send("{oops")
            srv.scripting.send(RFQ_CREATED)
            await expect_event(consumer, RfqCreated)
        assert stream.stats.malformed == 1


async def test_unknown_message_type_is_yielded_and_counted(rsa_key: TestKey) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, rsa_key.signer())
        async with consuming(stream) as consumer:
            await srv.scripting.wait_subscribed(1)
            srv.scripting.send({"type": "rfq_repriced", "sid": 1, "msg": {"id": "rfq_9"}})
            srv.scripting.send(RFQ_CREATED)
            unknown = await expect_event(consumer, UnknownMessage)
            await expect_event(consumer, RfqCreated)
        assert unknown.type == "rfq_repriced"
        assert unknown.raw["msg"] == {"id": "rfq_9"}
        assert stream.stats.unknown == 1
        assert stream.stats.events == 1


async def test_replies_are_not_yielded(rsa_key: TestKey) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, rsa_key.signer())
        async with consuming(stream) as consumer:
            await srv.scripting.wait_subscribed(1)
            srv.scripting.send({"id": 7, "type": "ok", "sid": 1, "msg": {"market_tickers": []}})
            srv.scripting.send({"id": 8, "type": "unsubscribed", "sid": 1})
            srv.scripting.send(RFQ_CREATED)
            await expect_event(consumer, RfqCreated)
        assert stream.stats.frames == 4
        assert stream.stats.errors == 0


# ----------------------------------------------------------------------------- 5. reconnect


async def test_server_drop_reconnects_resubscribes_and_marks_the_gap(rsa_key: TestKey) -> None:
    signer = CountingSigner(rsa_key)
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, signer)
        with capture_logs() as logs:
            async with consuming(stream) as consumer:
                await srv.scripting.wait_subscribed(1)
                srv.scripting.send(rfq_created("before"))
                assert (await expect_event(consumer, RfqCreated)).msg.id == "before"

                await srv.drop_ws(code=1011, message=b"server restart")
                await srv.scripting.wait_subscribed(2)
                marker = await expect_event(consumer, Reconnected)
                srv.scripting.send(rfq_created("after"))
                assert (await expect_event(consumer, RfqCreated)).msg.id == "after"

    assert marker.attempts == 1
    assert "1011" in marker.reason
    assert "server restart" in marker.reason
    assert marker.downtime_seconds > 0
    assert stream.stats.reconnects == 1
    # A new, freshly signed handshake and a new subscribe (ids restart per session).
    assert len(srv.scripting.ws_handshakes) == 2
    assert all(shake.auth_ok for shake in srv.scripting.ws_handshakes)
    assert len(signer.calls) == 2
    assert [c["cmd"] for c in srv.scripting.ws_commands] == ["subscribe", "subscribe"]
    assert [c["id"] for c in srv.scripting.ws_commands] == [1, 1]
    # Nothing from the handshake headers reaches the logs.
    logged = str(logs)
    assert KEY_ID not in logged
    for shake in srv.scripting.ws_handshakes:
        assert header(shake.headers, ACCESS_SIGNATURE_HEADER) not in logged
    assert any(e["event"] == "ws_disconnected" and "1011" in e["reason"] for e in logs)


async def test_events_before_the_resubscribe_reply_come_after_the_marker(
    rsa_key: TestKey,
) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, rsa_key.signer())
        async with consuming(stream) as consumer:
            await srv.scripting.wait_subscribed(1)

            def event_first(command: WsCommand) -> None:
                command.send(rfq_created("raced-the-reply"))
                command.handle()

            srv.scripting.on_ws_command = event_first
            await srv.drop_ws(code=1011, message=b"server restart")
            await expect_event(consumer, Reconnected)
            event = await expect_event(consumer, RfqCreated)
        assert event.msg.id == "raced-the-reply"


async def test_reconnected_counts_every_attempt_of_the_outage(rsa_key: TestKey) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, rsa_key.signer())
        async with consuming(stream) as consumer:
            await srv.scripting.wait_subscribed(1)
            srv.faults.update({"refuse_handshakes_seconds": 3600.0})
            await srv.drop_ws(code=1011, message=b"server restart")
            await until(lambda: len(srv.scripting.ws_handshakes) >= 4)
            srv.faults.update({"refuse_handshakes_seconds": 0.0})
            marker = await expect_event(consumer, Reconnected)
        assert marker.attempts == len(srv.scripting.ws_handshakes) - 1 >= 3
        assert stream.stats.reconnects == 1


async def test_subscribe_timeout_leads_to_a_new_connection(rsa_key: TestKey) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        calls = 0

        def ignore_first(command: WsCommand) -> None:
            nonlocal calls
            calls += 1
            if calls > 1:
                command.handle()

        srv.scripting.on_ws_command = ignore_first
        stream = stream_for(srv.ws_url, rsa_key.signer(), subscribe_timeout_seconds=0.2)
        async with consuming(stream) as consumer:
            await srv.scripting.wait_subscribed(2)
            srv.scripting.send(RFQ_CREATED)
            # The first subscription never existed, so there is no gap to announce.
            await expect_event(consumer, RfqCreated)
        assert len(srv.scripting.ws_handshakes) == 2
        assert stream.stats.reconnects == 0


# ----------------------------------------------------------------------------- 6. refusals


async def test_refused_handshakes_are_retried_until_the_exchange_recovers(
    rsa_key: TestKey,
) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        srv.faults.update({"refuse_handshakes_seconds": 3600.0})
        stream = stream_for(srv.ws_url, rsa_key.signer())
        with capture_logs() as logs:
            async with consuming(stream) as consumer:
                await until(lambda: len(srv.scripting.ws_handshakes) >= 3)
                assert not consumer.task.done()
                srv.faults.update({"refuse_handshakes_seconds": 0.0})
                await srv.scripting.wait_subscribed(1)
                srv.scripting.send(RFQ_CREATED)
                await expect_event(consumer, RfqCreated)

    refusals = [e for e in logs if e["event"] == "ws_handshake_refused"]
    assert len(refusals) >= 2
    assert all(e["log_level"] == "error" and e["status"] == 503 for e in refusals)


async def test_unauthenticated_client_keeps_being_refused_without_crashing(
    rsa_key: TestKey,
) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, None)
        with capture_logs() as logs:
            async with consuming(stream) as consumer:
                # Counted on the client side: the server records a handshake before the
                # client has read the refusal.
                await until(lambda: sum(e["event"] == "ws_handshake_refused" for e in logs) >= 3)
                assert not consumer.task.done()
            await consumer.finished()  # ended cleanly by close(), no exception

    assert not any(shake.auth_ok for shake in srv.scripting.ws_handshakes)
    assert srv.scripting.ws_commands == []
    refusals = [e for e in logs if e["event"] == "ws_handshake_refused"]
    assert len(refusals) >= 3
    assert all(e["log_level"] == "error" and e["status"] == 401 for e in refusals)
    assert all("kalshi.key_id" in e["hint"] for e in refusals)


# ----------------------------------------------------------------------------- 7. errors


@pytest.mark.parametrize("code", [8, 9, 11, 19, 20, 21, 22])
async def test_fatal_subscribe_error_raises(rsa_key: TestKey, code: int) -> None:
    text = "shard_key must be >= 0 and < shard_factor" if code == 21 else f"error {code}"
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:

        def refuse(command: WsCommand) -> None:
            command.send(error_frame(code, text, command.id))

        srv.scripting.on_ws_command = refuse
        stream = stream_for(srv.ws_url, rsa_key.signer())
        consumer = Consumer(stream)
        with pytest.raises(SubscriptionError) as caught:
            await consumer.next()
        # No retry: the error is about the request, not the moment.
        assert len(srv.scripting.ws_handshakes) == 1
        assert caught.value.code == str(code)
        assert text in str(caught.value)
        await until(lambda: srv.ws_connection_count == 0)
        assert not stream.stats.connected


async def test_already_subscribed_counts_as_subscribed(rsa_key: TestKey) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:

        def already(command: WsCommand) -> None:
            command.send(error_frame(6, "Already subscribed", command.id))

        srv.scripting.on_ws_command = already
        stream = stream_for(srv.ws_url, rsa_key.signer())
        async with consuming(stream) as consumer:
            await srv.scripting.wait_subscribed(1)
            srv.scripting.send(RFQ_CREATED)
            await expect_event(consumer, RfqCreated)
            assert stream.stats.connected
        assert len(srv.scripting.ws_handshakes) == 1


async def test_retryable_subscribe_error_reconnects(rsa_key: TestKey) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        calls = 0

        def fail_first(command: WsCommand) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                command.send(error_frame(17, "Internal error", command.id))
            else:
                command.handle()

        srv.scripting.on_ws_command = fail_first
        stream = stream_for(srv.ws_url, rsa_key.signer())
        async with consuming(stream) as consumer:
            await srv.scripting.wait_subscribed(2)
            srv.scripting.send(RFQ_CREATED)
            await expect_event(consumer, RfqCreated)
        assert len(srv.scripting.ws_handshakes) == 2
        assert stream.stats.errors == 1


async def test_buffer_overflow_forces_a_reconnect(rsa_key: TestKey) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, rsa_key.signer())
        async with consuming(stream) as consumer:
            await srv.scripting.wait_subscribed(1)
            srv.scripting.send(error_frame(25, "Subscription buffer overflow"))
            marker = await expect_event(consumer, Reconnected)
            await srv.scripting.wait_subscribed(2)
            srv.scripting.send(RFQ_CREATED)
            await expect_event(consumer, RfqCreated)
        assert "25" in marker.reason
        assert len(srv.scripting.ws_handshakes) == 2
        assert stream.stats.reconnects == 1
        assert stream.stats.errors == 1


async def test_other_errors_are_counted_and_the_stream_goes_on(rsa_key: TestKey) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, rsa_key.signer())
        with capture_logs() as logs:
            async with consuming(stream) as consumer:
                await srv.scripting.wait_subscribed(1)
                srv.scripting.send(error_frame(17, "Internal error", 42))
                srv.scripting.send(RFQ_CREATED)
                await expect_event(consumer, RfqCreated)
        assert stream.stats.errors == 1
        assert len(srv.scripting.ws_handshakes) == 1
        (entry,) = [e for e in logs if e["event"] == "ws_error_reply"]
        assert entry["code"] == 17
        assert entry["msg"] == "Internal error"


# ----------------------------------------------------------------------------- 9. close()


async def test_close_ends_the_iterator_while_waiting_for_frames(rsa_key: TestKey) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, rsa_key.signer())
        consumer = Consumer(stream)
        await srv.scripting.wait_subscribed(1)
        await until(lambda: stream.stats.connected)
        await asyncio.sleep(0.05)  # the consumer is now parked in recv()

        await stream.close()
        # Far shorter than the wait close() must cut short (a hang, a 30 s backoff, a
        # 60 s handshake timeout), so finishing at all proves it was interrupted.
        await consumer.finished(within=5.0)
        assert consumer.items.empty()
        assert not stream.stats.connected
        await until(lambda: srv.ws_connection_count == 0)
        assert stream_tasks() == []


async def test_close_ends_the_iterator_while_in_backoff(rsa_key: TestKey) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        srv.faults.update({"refuse_handshakes_seconds": 3600.0})
        # Every delay is the full 30 s: the stream is certainly asleep when close() comes.
        stream = stream_for(
            srv.ws_url,
            rsa_key.signer(),
            reconnect_min_seconds=30.0,
            reconnect_max_seconds=30.0,
            rng=MaxRandom(),
        )
        consumer = Consumer(stream)
        await until(lambda: len(srv.scripting.ws_handshakes) == 1)
        await asyncio.sleep(0.05)

        await stream.close()
        # Far shorter than the wait close() must cut short (a hang, a 30 s backoff, a
        # 60 s handshake timeout), so finishing at all proves it was interrupted.
        await consumer.finished(within=5.0)
        assert len(srv.scripting.ws_handshakes) == 1


async def test_close_ends_the_iterator_during_a_hanging_handshake(rsa_key: TestKey) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        stream = stream_for(
            f"ws://127.0.0.1:{port}{WS_PATH}", rsa_key.signer(), open_timeout_seconds=60.0
        )
        consumer = Consumer(stream)
        await until(lambda: bool(accepted))
        await asyncio.sleep(0.05)

        await stream.close()
        # Far shorter than the wait close() must cut short (a hang, a 30 s backoff, a
        # 60 s handshake timeout), so finishing at all proves it was interrupted.
        await consumer.finished(within=5.0)
        await asyncio.sleep(0)  # let the cancelled handshake task finish
        assert stream_tasks() == []
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_close_before_iterating_yields_nothing(rsa_key: TestKey) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, rsa_key.signer())
        await stream.close()
        async with asyncio.timeout(1):
            items = [item async for item in stream.events()]
        assert items == []
        assert srv.scripting.ws_handshakes == []


async def test_cancelling_the_consumer_closes_the_connection(rsa_key: TestKey) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, rsa_key.signer())
        consumer = Consumer(stream)
        await srv.scripting.wait_subscribed(1)
        await until(lambda: stream.stats.connected)

        consumer.task.cancel()
        async with asyncio.timeout(2):
            await asyncio.wait({consumer.task})
        assert consumer.task.cancelled()
        assert not stream.stats.connected
        await until(lambda: srv.ws_connection_count == 0)
        assert stream_tasks() == []


async def test_events_cannot_be_iterated_twice_at_once(rsa_key: TestKey) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, rsa_key.signer())
        async with consuming(stream):
            await srv.scripting.wait_subscribed(1)
            with pytest.raises(RuntimeError, match="already"):
                await anext(stream.events())


# ----------------------------------------------------------------------------- 10. dead peers


class NoPongServer:
    """A tiny WebSocket server whose first connection never answers pings."""

    def __init__(self) -> None:
        self.connections = 0
        self.pings_ignored = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> NoPongServer:
        app = web.Application()
        app.router.add_route("GET", WS_PATH, self._ws)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{WS_PATH}"

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        self.connections += 1
        silent = self.connections == 1
        # autoping=False hands PING frames to this loop instead of answering them.
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.PING:
                if silent:
                    self.pings_ignored += 1
                else:
                    await ws.pong(msg.data)
            elif msg.type is WSMsgType.TEXT:
                command = orjson.loads(msg.data)
                reply = {
                    "id": command["id"],
                    "type": "subscribed",
                    "msg": {"channel": "communications", "sid": self.connections},
                }
                await ws.send_str(orjson.dumps(reply).decode())
        return ws


async def test_unanswered_pings_are_detected_and_lead_to_a_reconnect() -> None:
    async with NoPongServer() as srv:
        stream = stream_for(srv.url, None, ping_interval_seconds=0.1, ping_timeout_seconds=0.25)
        async with consuming(stream) as consumer:
            marker = await expect_event(consumer, Reconnected)
            # The second connection answers pings, so it stays up across several rounds.
            await asyncio.sleep(0.5)
            assert stream.stats.connected
            assert srv.connections == 2
        assert srv.pings_ignored >= 1
        assert "keepalive ping timeout" in marker.reason
        assert marker.downtime_seconds < 1.0


class Blackhole:
    """A TCP relay to the mock exchange; a frozen link silently drops bytes both ways."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.links: list[dict[str, bool]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Blackhole:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{WS_PATH}"

    def freeze_all(self) -> None:
        for link in self.links:
            link["frozen"] = True

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [client_w, server_w]
        link = {"frozen": False}
        self.links.append(link)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if not link["frozen"]:
                        dst.write(data)
                        await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        tasks = [
            asyncio.create_task(pump(client_r, server_w)),
            asyncio.create_task(pump(server_r, client_w)),
        ]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.slow  # a ping timeout, then a real reconnect: over a second
async def test_a_silent_network_path_is_detected_and_leads_to_a_reconnect(
    rsa_key: TestKey,
) -> None:
    async with (
        MockExchange.scripted({KEY_ID: rsa_key.public}) as srv,
        Blackhole(srv.port) as hole,
    ):
        stream = stream_for(
            hole.url, rsa_key.signer(), ping_interval_seconds=0.1, ping_timeout_seconds=0.25
        )
        async with consuming(stream) as consumer:
            await srv.scripting.wait_subscribed(1)
            await until(lambda: stream.stats.connected)
            hole.freeze_all()  # nothing gets through any more, not even a close frame
            marker = await expect_event(consumer, Reconnected)
            await srv.scripting.wait_subscribed(2)
            srv.scripting.send(RFQ_CREATED)
            await expect_event(consumer, RfqCreated)
        assert "keepalive ping timeout" in marker.reason
        assert stream.stats.reconnects == 1


async def test_close_from_inside_the_consuming_loop(rsa_key: TestKey) -> None:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, rsa_key.signer())
        seen: list[Event | Reconnected] = []

        async def consume() -> None:
            async for item in stream.events():
                seen.append(item)
                await stream.close()

        task = asyncio.create_task(consume())
        await srv.scripting.wait_subscribed(1)
        srv.scripting.send(rfq_created("first"))
        srv.scripting.send(rfq_created("never-delivered"))
        async with asyncio.timeout(2):
            await task
        assert [item.msg.id for item in seen if isinstance(item, RfqCreated)] == ["first"]
        await until(lambda: srv.ws_connection_count == 0)
