"""The mock exchange's WebSocket: signed handshake, commands, visibility, sharding, pings.

Raw aiohttp clients are used where the test needs frames exactly as sent (command
replies, error codes, ping payloads); the project's CommunicationsStream is exercised in
test_mock_server.py and test_mock_faults.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType
from cryptography.hazmat.primitives.asymmetric import ed25519

from mmbot.kalshi.auth import Signer
from mmbot.kalshi.models import parse_message
from mmbot.mock.exchange import User
from mmbot.mock.faults import FaultConfig
from mmbot.mock.server import MockConfig, MockExchange, shard_of
from mmbot.mock.sim import SimMarket
from tests.support.keys import KEY_ID, TestKey
from tests.support.marketfeed import closing, connect, recv, send
from tests.support.mock import now_ms

MAKER_KEY_ID = "maker-key-7c41"
OBSERVER_KEY_ID = "observer-key-19ad"


@pytest.fixture
async def mock(rsa_key: TestKey, ed25519_key: TestKey) -> AsyncIterator[MockExchange]:
    config = MockConfig(seed=2, markets=24, market_step_seconds=0)
    async with MockExchange(config) as server:
        server.register_key(KEY_ID, rsa_key.public)
        server.register_key(MAKER_KEY_ID, ed25519_key.public)
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def subscribe(ws: aiohttp.ClientWebSocketResponse, **params: Any) -> int:
    await send(
        ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["communications"], **params}}
    )
    reply = await recv(ws)
    assert reply["type"] == "subscribed", reply
    sid: int = reply["msg"]["sid"]
    return sid


def markets(mock: MockExchange) -> list[SimMarket]:
    return list(mock.exchange.markets.values())


def quote_body(market: SimMarket, rfq_id: str) -> dict[str, Any]:
    return {
        "rfq_id": rfq_id,
        "yes_bid": str(market.yes_bid()),
        "no_bid": str(market.no_bid()),
        "rest_remainder": False,
    }


# ----------------------------------------------------------------------------- handshake


@pytest.mark.parametrize("case", ["unsigned", "other_key", "stale", "unknown_key_id"])
async def test_a_bad_handshake_is_refused_with_401(
    mock: MockExchange,
    session: aiohttp.ClientSession,
    rsa_key: TestKey,
    ed25519_key: TestKey,
    case: str,
) -> None:
    window_ms = int(mock.config.timestamp_window_seconds * 1000)
    signer = {
        "unsigned": None,
        "other_key": Signer(KEY_ID, ed25519_key.private),
        "stale": Signer(KEY_ID, rsa_key.private, clock_ms=lambda: now_ms() - window_ms - 5000),
        "unknown_key_id": Signer("nobody-registered-this", rsa_key.private),
    }[case]
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await connect(session, mock, signer)
    assert caught.value.status == 401

    # The same request without the upgrade shows the ErrorResponse body sent before it.
    headers = signer.headers("GET", mock.ws_url) if signer is not None else {}
    async with session.get(mock.ws_url.replace("ws://", "http://"), headers=headers) as response:
        assert response.status == 401
        body = await response.json()
    assert body["code"] == "unauthorized"
    assert isinstance(body["message"], str)
    assert mock.ws_connection_count == 0


async def test_a_signed_handshake_is_accepted(
    mock: MockExchange, session: aiohttp.ClientSession, ed25519_key: TestKey
) -> None:
    ws = await connect(session, mock, ed25519_key.signer(MAKER_KEY_ID))
    async with closing(ws):
        assert await subscribe(ws) == 1
        assert mock.ws_connection_count == 1


# ----------------------------------------------------------------------------- commands


async def test_subscribe_list_and_unsubscribe(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    ws = await connect(session, mock, rsa_key.signer())
    async with closing(ws):
        await send(ws, {"id": 7, "cmd": "subscribe", "params": {"channels": ["communications"]}})
        assert await recv(ws) == {
            "id": 7,
            "type": "subscribed",
            "msg": {"channel": "communications", "sid": 1},
        }
        await send(ws, {"id": 8, "cmd": "list_subscriptions"})
        assert await recv(ws) == {
            "id": 8,
            "type": "ok",
            "msg": [{"channel": "communications", "sid": 1}],
        }
        # One event counted on the subscription: the unsubscribe's seq comes after it.
        mock.exchange.create_rfq(
            mock.exchange.users[next(iter(mock.exchange.users))],
            {
                "market_ticker": markets(mock)[0].ticker,
                "contracts_fp": "1",
                "rest_remainder": False,
            },
        )
        assert (await recv(ws))["type"] == "rfq_created"
        await send(ws, {"id": 9, "cmd": "unsubscribe", "params": {"sids": [1]}})
        assert await recv(ws) == {"id": 9, "sid": 1, "seq": 2, "type": "unsubscribed"}
        await send(ws, {"id": 10, "cmd": "list_subscriptions"})
        assert await recv(ws) == {"id": 10, "type": "ok", "msg": []}
        # A fresh subscription gets a fresh sid; an id of 0 means "no id".
        await send(ws, {"id": 0, "cmd": "subscribe", "params": {"channels": ["communications"]}})
        assert await recv(ws) == {
            "type": "subscribed",
            "msg": {"channel": "communications", "sid": 2},
        }


SUBSCRIBE = "subscribe"


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ("{not json", 1),
        ("[1, 2, 3]", 1),
        ({"id": "one", "cmd": SUBSCRIBE, "params": {"channels": ["communications"]}}, 1),
        ({"id": 1, "params": {}}, 1),
        ({"id": 1, "cmd": SUBSCRIBE, "params": ["communications"]}, 1),
        ({"id": 1, "cmd": SUBSCRIBE, "params": {"channels": "communications"}}, 1),
        ({"id": 1, "cmd": SUBSCRIBE}, 2),
        ({"id": 1, "cmd": SUBSCRIBE, "params": {}}, 3),
        ({"id": 1, "cmd": SUBSCRIBE, "params": {"channels": []}}, 3),
        ({"id": 1, "cmd": "unsubscribe", "params": {}}, 4),
        ({"id": 1, "cmd": "unsubscribe"}, 2),
        ({"id": 1, "cmd": "unsubscribe", "params": {"sids": ["1"]}}, 1),
        ({"id": 1, "cmd": "resubscribe", "params": {}}, 5),
        ({"id": 1, "cmd": "unsubscribe", "params": {"sids": [99]}}, 7),
        ({"id": 1, "cmd": SUBSCRIBE, "params": {"channels": ["no_such_channel"]}}, 8),
        ({"id": 1, "cmd": SUBSCRIBE, "params": {"channels": ["trade"]}}, 10),
        ({"id": 1, "cmd": SUBSCRIBE, "params": {"channels": ["communications", "fill"]}}, 10),
        ({"id": 1, "cmd": "update_subscription", "params": {"action": "add_markets"}}, 12),
        ({"id": 1, "cmd": "update_subscription", "params": {"sid": 1}}, 15),
        ({"id": 1, "cmd": "update_subscription"}, 2),
        ({"id": 1, "cmd": "update_subscription", "params": {"sid": 5, "action": "x"}}, 7),
        (
            {
                "id": 1,
                "cmd": SUBSCRIBE,
                "params": {"channels": ["communications"], "shard_factor": 0},
            },
            19,
        ),
        (
            {"id": 1, "cmd": SUBSCRIBE, "params": {"channels": ["communications"], "shard_key": 0}},
            20,
        ),
        (
            {
                "id": 1,
                "cmd": SUBSCRIBE,
                "params": {"channels": ["communications"], "shard_factor": 3, "shard_key": 3},
            },
            21,
        ),
        (
            {
                "id": 1,
                "cmd": SUBSCRIBE,
                "params": {"channels": ["communications"], "shard_factor": 3, "shard_key": -1},
            },
            21,
        ),
        (
            {
                "id": 1,
                "cmd": SUBSCRIBE,
                "params": {"channels": ["communications"], "shard_factor": 101},
            },
            22,
        ),
        (
            {
                "id": 1,
                "cmd": SUBSCRIBE,
                "params": {"channels": ["communications"], "shard_factor": "3"},
            },
            1,
        ),
    ],
)
async def test_command_errors_carry_the_documented_codes(
    mock: MockExchange,
    session: aiohttp.ClientSession,
    rsa_key: TestKey,
    command: Any,
    code: int,
) -> None:
    ws = await connect(session, mock, rsa_key.signer())
    async with closing(ws):
        await send(ws, command)
        reply = await recv(ws)
        assert reply["type"] == "error"
        assert reply["msg"]["code"] == code
        assert isinstance(reply["msg"]["msg"], str)
        assert reply["msg"]["msg"]
        if isinstance(command, dict) and isinstance(command.get("id"), int):
            assert reply["id"] == command["id"]
        else:
            assert "id" not in reply
        # The connection survives a bad command.
        assert await subscribe(ws) == 1


async def test_duplicate_subscription_and_unsupported_update(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    ws = await connect(session, mock, rsa_key.signer())
    async with closing(ws):
        sid = await subscribe(ws)
        await send(ws, {"id": 2, "cmd": "subscribe", "params": {"channels": ["communications"]}})
        assert await recv(ws) == {
            "id": 2,
            "type": "error",
            "msg": {"code": 6, "msg": "already subscribed"},
        }
        update = {
            "id": 3,
            "cmd": "update_subscription",
            "params": {"sid": sid, "action": "add_markets"},
        }
        await send(ws, update)
        reply = await recv(ws)
        assert reply["id"] == 3
        assert reply["msg"]["code"] == 13
        await ws.send_bytes(b"\x00binary")
        assert (await recv(ws))["msg"]["code"] == 1


# ----------------------------------------------------------------------------- events


async def test_quote_events_reach_only_the_two_parties(
    mock: MockExchange,
    session: aiohttp.ClientSession,
    rsa_key: TestKey,
    ed25519_key: TestKey,
) -> None:
    observer_key = ed25519.Ed25519PrivateKey.generate()
    mock.register_key(OBSERVER_KEY_ID, observer_key.public_key())
    requester_ws = await connect(session, mock, rsa_key.signer())
    maker_ws = await connect(session, mock, ed25519_key.signer(MAKER_KEY_ID))
    observer_ws = await connect(session, mock, Signer(OBSERVER_KEY_ID, observer_key))
    async with (
        closing(requester_ws),
        closing(maker_ws),
        closing(observer_ws),
    ):
        for ws in (requester_ws, maker_ws, observer_ws):
            await subscribe(ws)
        requester, maker = users(mock, KEY_ID), users(mock, MAKER_KEY_ID)
        market = markets(mock)[0]
        ex = mock.exchange
        rfq = ex.create_rfq(
            requester,
            {"market_ticker": market.ticker, "contracts_fp": "3", "rest_remainder": False},
        )
        quote = ex.create_quote(maker, quote_body(market, rfq.id))
        ex.accept_quote(requester, quote.id, {"accepted_side": "yes"})
        ex.delete_rfq(requester, rfq.id)

        expected_parties = ["rfq_created", "quote_created", "quote_accepted", "rfq_deleted"]
        for ws in (requester_ws, maker_ws):
            assert [(await recv(ws))["type"] for _ in expected_parties] == expected_parties
        # Frames reach each connection in order: once the observer sees rfq_deleted, any
        # quote event meant for it would already have arrived.
        first, second = await recv(observer_ws), await recv(observer_ws)
        assert [first["type"], second["type"]] == ["rfq_created", "rfq_deleted"]
        assert first["msg"]["id"] == second["msg"]["id"] == rfq.id
        assert first["msg"]["creator_id"] == ""


def users(mock: MockExchange, key_id: str) -> User:
    return next(u for u in mock.exchange.users.values() if u.key_id == key_id)


async def test_shards_split_the_stream_by_rfq(
    mock: MockExchange,
    session: aiohttp.ClientSession,
    rsa_key: TestKey,
    ed25519_key: TestKey,
) -> None:
    factor = 3
    shards = [await connect(session, mock, rsa_key.signer()) for _ in range(factor)]
    async with contextlib.AsyncExitStack() as stack:
        for ws in shards:
            await stack.enter_async_context(closing(ws))
        for key, ws in enumerate(shards):
            await subscribe(ws, shard_factor=factor, shard_key=key)

        requester, maker = users(mock, KEY_ID), users(mock, MAKER_KEY_ID)
        ex = mock.exchange
        rfq_ids = []
        for market in markets(mock)[:12]:
            rfq = ex.create_rfq(
                requester,
                {"market_ticker": market.ticker, "contracts_fp": "2", "rest_remainder": False},
            )
            ex.create_quote(maker, quote_body(market, rfq.id))
            ex.delete_rfq(requester, rfq.id)
            rfq_ids.append(rfq.id)
        per_rfq = 3  # rfq_created, quote_created, rfq_deleted
        expected = {
            key: [r for r in rfq_ids if shard_of(r, factor) == key] for key in range(factor)
        }
        assert sum(1 for ids in expected.values() if ids) >= 2  # the split is not trivial

        received: dict[int, list[tuple[str, str]]] = {}
        for key, ws in enumerate(shards):
            frames = [await recv(ws) for _ in range(per_rfq * len(expected[key]))]
            received[key] = [(f["type"], f["msg"].get("rfq_id") or f["msg"]["id"]) for f in frames]
        everything = [event for events in received.values() for event in events]
        assert len(everything) == per_rfq * len(rfq_ids)
        assert {rfq_id for _, rfq_id in everything} == set(rfq_ids)
        for key, events in received.items():
            # Every event of an RFQ lands on that RFQ's shard, and nowhere else.
            assert {rfq_id for _, rfq_id in events} == set(expected[key])
            for rfq_id in expected[key]:
                kinds = [kind for kind, r in events if r == rfq_id]
                assert kinds == ["rfq_created", "quote_created", "rfq_deleted"]


async def test_a_shard_factor_without_a_key_receives_every_shard(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    ws = await connect(session, mock, rsa_key.signer())
    async with closing(ws):
        await subscribe(ws, shard_factor=5)
        requester = users(mock, KEY_ID)
        ids = [
            mock.exchange.create_rfq(
                requester, {"market_ticker": m.ticker, "contracts_fp": "1", "rest_remainder": False}
            ).id
            for m in markets(mock)[:6]
        ]
        assert [(await recv(ws))["msg"]["id"] for _ in ids] == ids


# ----------------------------------------------------------------------------- keep-alive, overflow


async def test_the_server_pings_with_heartbeat_and_answers_pings(
    session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    async with MockExchange(MockConfig(ping_interval_seconds=0.02)) as mock:
        mock.register_key(KEY_ID, rsa_key.public)
        ws = await connect(session, mock, rsa_key.signer(), autoping=False)
        async with closing(ws):
            async with asyncio.timeout(3):
                msg = await ws.receive()
                while msg.type is not WSMsgType.PING:
                    msg = await ws.receive()
            assert msg.data == b"heartbeat"
            await ws.ping(b"are-you-there")
            async with asyncio.timeout(3):
                msg = await ws.receive()
                while msg.type is not WSMsgType.PONG:
                    msg = await ws.receive()
            assert msg.data == b"are-you-there"
        assert mock.stats.pings_sent >= 1


async def test_a_connection_that_falls_behind_gets_error_25_and_is_closed(
    session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    # Every event becomes three frames (malformed + event + duplicate) against room for two.
    faults = FaultConfig(malformed_fraction=1.0, duplicate_fraction=1.0)
    config = MockConfig(ws_queue_frames=2, faults=faults, market_step_seconds=0)
    async with MockExchange(config) as mock:
        user = mock.register_key(KEY_ID, rsa_key.public)
        ws = await connect(session, mock, rsa_key.signer())
        async with closing(ws):
            await subscribe(ws)
            mock.exchange.create_rfq(
                user,
                {
                    "market_ticker": next(iter(mock.exchange.markets)),
                    "contracts_fp": "1",
                    "rest_remainder": False,
                },
            )
            reply = await recv(ws)
            assert reply == {
                "type": "error",
                "msg": {"code": 25, "msg": "subscription buffer overflow"},
            }
            async with asyncio.timeout(3):
                last = await ws.receive()
            assert last.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        assert mock.stats.ws_overflows == 1
        async with asyncio.timeout(3):
            while mock.ws_connection_count:  # noqa: ASYNC110 - the handler cleans up
                await asyncio.sleep(0.005)


async def test_drop_ws_closes_every_connection(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    sockets = [await connect(session, mock, rsa_key.signer()) for _ in range(2)]
    for ws in sockets:
        await subscribe(ws)
    assert await mock.drop_ws() == 2
    for ws in sockets:
        async with asyncio.timeout(3):
            msg = await ws.receive()
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        await ws.close()
    assert mock.ws_connection_count == 0


# ----------------------------------------------------------------------------- envelopes


async def test_events_carry_a_per_subscription_seq_and_the_send_time(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    ws = await connect(session, mock, rsa_key.signer())
    async with closing(ws):
        sid = await subscribe(ws)
        user = users(mock, KEY_ID)
        for market in markets(mock)[:3]:
            mock.exchange.create_rfq(
                user, {"market_ticker": market.ticker, "contracts_fp": "1", "rest_remainder": False}
            )
        # recv() has already checked and removed each frame's sending_ts_ms.
        frames = [await recv(ws) for _ in range(3)]
        assert [(f["sid"], f["seq"]) for f in frames] == [(sid, 1), (sid, 2), (sid, 3)]
        await send(ws, {"id": 5, "cmd": "unsubscribe", "params": {"sids": [sid]}})
        assert (await recv(ws))["seq"] == 4


async def test_every_frame_is_stamped_with_the_exchange_send_time(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey
) -> None:
    ws = await connect(session, mock, rsa_key.signer())
    async with closing(ws):
        before_ms = now_ms()
        await send(ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["communications"]}})
        await send(ws, {"id": 2, "cmd": "no_such_command"})
        await send(ws, {"id": 3, "cmd": "list_subscriptions"})
        stamps = []
        for _ in range(3):
            async with asyncio.timeout(2):
                msg = await ws.receive()
            frame = orjson.loads(msg.data)
            stamps.append(frame["sending_ts_ms"])
            # Our own client's parser reads the stamped frame and ignores the stamp.
            assert parse_message(msg.data).type == frame["type"]
        assert stamps == sorted(stamps)
        assert stamps[0] >= before_ms


async def test_user_filter_self_keeps_only_ones_own_rfqs(
    mock: MockExchange, session: aiohttp.ClientSession, rsa_key: TestKey, ed25519_key: TestKey
) -> None:
    mine = await connect(session, mock, rsa_key.signer())
    everyone = await connect(session, mock, ed25519_key.signer(MAKER_KEY_ID))
    async with closing(mine), closing(everyone):
        await send(
            mine,
            {
                "id": 1,
                "cmd": "subscribe",
                "params": {"channels": ["communications"], "user_filter": "bogus"},
            },
        )
        assert (await recv(mine))["msg"]["code"] == 11
        await subscribe(mine, user_filter="self")
        await subscribe(everyone, user_filter="")
        me, other = users(mock, KEY_ID), users(mock, MAKER_KEY_ID)
        first, second = markets(mock)[:2]
        body = {"contracts_fp": "1", "rest_remainder": False}
        theirs = mock.exchange.create_rfq(other, {**body, "market_ticker": first.ticker})
        own = mock.exchange.create_rfq(me, {**body, "market_ticker": second.ticker})
        got = await recv(mine)
        assert (got["type"], got["msg"]["id"]) == ("rfq_created", own.id)
        # The creator sees its own communications id; others see the anonymous "".
        assert got["msg"]["creator_id"] == me.communications_id
        seen = [await recv(everyone) for _ in range(2)]
        assert [f["msg"]["id"] for f in seen] == [theirs.id, own.id]
        assert [f["msg"]["creator_id"] for f in seen] == [other.communications_id, ""]
        # Quote events are unchanged by the filter.
        quote = mock.exchange.create_quote(me, quote_body(first, theirs.id))
        got = await recv(mine)
        assert (got["type"], got["msg"]["quote_id"]) == ("quote_created", quote.id)
