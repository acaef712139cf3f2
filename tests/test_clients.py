"""Settings reach the clients: one factory per client, fed from the documented keys."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from mmbot.clients import build_communications_stream, build_rest_client, build_signer
from mmbot.config import KalshiSettings
from mmbot.kalshi.models import RfqCreated
from mmbot.mock.server import MockExchange
from tests.support.keys import KEY_ID, TestKey


@pytest.fixture
async def server(ed25519_key: TestKey) -> AsyncIterator[MockExchange]:
    async with MockExchange.scripted({KEY_ID: ed25519_key.public}) as srv:
        yield srv


def settings_for(srv: MockExchange, key: TestKey, **extra: object) -> KalshiSettings:
    return KalshiSettings.model_validate(
        {
            "key_id": KEY_ID,
            "private_key": key.pkcs8_pem.decode(),
            "rest_url": srv.rest_url,
            "ws_url": srv.ws_url,
            **extra,
        }
    )


async def test_rest_client_from_settings(server: MockExchange, ed25519_key: TestKey) -> None:
    settings = settings_for(
        server, ed25519_key, write_tokens_per_second=300, write_bucket_capacity=600
    )
    server.scripting.script("GET", "/communications/id", [(200, {"communications_id": "comm-1"})])
    async with build_rest_client(settings, build_signer(settings)) as client:
        assert (client.write_bucket.rate, client.write_bucket.capacity) == (300, 600)
        assert await client.get_communications_id() == "comm-1"
    assert server.scripting.requests[0].auth_ok


async def test_stream_from_settings(server: MockExchange, ed25519_key: TestKey) -> None:
    settings = settings_for(server, ed25519_key, shard_factor=4, shard_key=3)
    stream = build_communications_stream(settings, build_signer(settings))
    async with contextlib.aclosing(stream.events()) as events:
        # The generator connects only once iterated.
        pending = asyncio.ensure_future(anext(events))
        await server.scripting.wait_subscribed(1)
        server.scripting.send(
            {
                "type": "rfq_created",
                "sid": 1,
                "msg": {
                    "id": "r1",
                    "creator_id": "",
                    "market_ticker": "M",
                    "contracts_fp": "5.00",
                    "created_ts": "2026-01-01T00:00:00Z",
                },
            }
        )
        async with asyncio.timeout(5):
            first = await pending
        await stream.close()
    assert isinstance(first, RfqCreated)
    assert server.scripting.ws_handshakes[0].auth_ok
    params = server.scripting.ws_commands[0]["params"]
    assert (params["shard_factor"], params["shard_key"]) == (4, 3)
