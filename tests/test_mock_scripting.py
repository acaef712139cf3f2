"""The mock exchange's scripting API: scripted replies, routes, raw frames, the request record."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import orjson
import pytest

from mmbot.kalshi.errors import AuthError, ServerError
from mmbot.kalshi.rest import KalshiRestClient
from mmbot.mock.scripting import RecordedRequest, WsCommand
from mmbot.mock.server import MockExchange
from tests.support.keys import KEY_ID, TestKey


@pytest.fixture
async def mock(rsa_key: TestKey) -> AsyncIterator[MockExchange]:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as server:
        yield server


@pytest.fixture
async def client(mock: MockExchange, rsa_key: TestKey) -> AsyncIterator[KalshiRestClient]:
    async with KalshiRestClient(mock.rest_url, rsa_key.signer(), retry_deadline_seconds=0) as c:
        yield c


async def signed_get(mock: MockExchange, key: TestKey, path: str) -> httpx.Response:
    """A signed GET of ``path`` (below /trade-api/v2), answered as it came."""
    url = mock.rest_url + path
    async with httpx.AsyncClient() as http:
        return await http.get(url, headers=key.signer().headers("GET", url))


# ----------------------------------------------------------------------------- REST


async def test_scripted_replies_are_served_in_order_then_the_real_handler_resumes(
    mock: MockExchange, client: KalshiRestClient
) -> None:
    scripts = mock.scripting
    scripts.script(
        "GET",
        "/communications/id",
        [(200, {"communications_id": "scripted-1"}), (200, {"communications_id": "scripted-2"})],
    )
    assert await client.get_communications_id() == "scripted-1"
    assert await client.get_communications_id() == "scripted-2"
    real = await client.get_communications_id()
    assert real not in ("scripted-1", "scripted-2")
    assert await client.get_communications_id() == real
    # Used up, the script is gone: the hot path sees nothing scripted again.
    assert scripts.answers == {}
    assert len(scripts.calls("GET", "/communications/id")) == 4


async def test_repeat_last_keeps_answering(mock: MockExchange, client: KalshiRestClient) -> None:
    mock.scripting.script(
        "GET", "/exchange/status", [(503, {"message": "maintenance"})], repeat_last=True
    )
    for _ in range(3):
        with pytest.raises(ServerError, match="maintenance"):
            await client.get_exchange_status()
    assert len(mock.scripting.calls("GET", "/exchange/status")) == 3


async def test_a_reply_may_be_raw_bytes_with_headers(mock: MockExchange, rsa_key: TestKey) -> None:
    mock.scripting.script(
        "GET", "/portfolio/balance", [(200, b"{not json", {"X-Scripted": "yes"}), (204, None)]
    )
    first = await signed_get(mock, rsa_key, "/portfolio/balance")
    assert (first.status_code, first.content) == (200, b"{not json")
    assert first.headers["content-type"].startswith("application/json")
    assert first.headers["x-scripted"] == "yes"
    second = await signed_get(mock, rsa_key, "/portfolio/balance")
    assert (second.status_code, second.content) == (204, b"")


async def test_a_route_handler_sees_the_request(
    mock: MockExchange, client: KalshiRestClient
) -> None:
    seen: list[RecordedRequest] = []

    async def created(request: RecordedRequest) -> tuple[int, Any]:
        seen.append(request)
        return 201, {"id": f"routed-{len(seen)}"}

    mock.scripting.route("POST", "/communications/rfqs", created)
    assert await client.create_rfq("M-1", contracts=10) == "routed-1"
    assert await client.create_rfq("M-1", contracts=10) == "routed-2"
    (request, _) = seen
    assert (request.method, request.path) == ("POST", "/communications/rfqs")
    assert request.body == {
        "market_ticker": "M-1",
        "rest_remainder": False,
        "contracts_fp": "10.00",
    }
    assert request.headers["KALSHI-ACCESS-KEY"] == KEY_ID
    assert request.auth_ok

    mock.scripting.unroute("POST", "/communications/rfqs")
    assert mock.scripting.answers == {}


async def test_scripts_go_before_the_route(mock: MockExchange, client: KalshiRestClient) -> None:
    mock.scripting.route("GET", "/communications/id", lambda _: (200, {"communications_id": "r"}))
    mock.scripting.script("GET", "/communications/id", [(200, {"communications_id": "s"})])
    ids = [await client.get_communications_id() for _ in range(3)]
    assert ids == ["s", "r", "r"]


async def test_the_record_holds_the_signature_check(
    mock: MockExchange, rsa_key: TestKey, ed25519_key: TestKey
) -> None:
    mock.scripting.script(
        "GET", "/communications/id", [(200, {"communications_id": "x"})], repeat_last=True
    )
    async with KalshiRestClient(mock.rest_url, rsa_key.signer()) as good:
        assert await good.get_communications_id() == "x"
    async with KalshiRestClient(mock.rest_url, ed25519_key.signer()) as impostor:
        # A scripted endpoint keeps the real one's signature gate.
        with pytest.raises(AuthError):
            await impostor.get_communications_id()
    records = mock.scripting.calls("get", "/communications/id")
    assert [r.auth_ok for r in records] == [True, False]
    assert records[0].query == {}
    assert records[0].body is None


async def test_nothing_is_recorded_unless_asked(rsa_key: TestKey) -> None:
    async with MockExchange() as mock:
        mock.register_key(KEY_ID, rsa_key.public)
        async with KalshiRestClient(mock.rest_url, rsa_key.signer()) as client:
            await client.get_communications_id()
        assert mock.scripting.requests == []
        with pytest.raises(RuntimeError, match="recording"):
            await mock.scripting.wait_subscribed(1, within=0.1)


def test_bad_scripts_are_refused_at_once() -> None:
    scripts = MockExchange().scripting
    with pytest.raises(ValueError, match="below"):
        scripts.script("GET", "/trade-api/v2/communications/id", [(200, {})])
    with pytest.raises(ValueError, match="status, body"):
        scripts.script("GET", "/communications/id", [({}, 200)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="repeat_last"):
        scripts.script("GET", "/communications/id", [], repeat_last=True)
    assert scripts.answers == {}


# ----------------------------------------------------------------------------- WebSocket


async def test_frames_go_out_exactly_as_given_and_commands_can_be_hooked(
    mock: MockExchange, rsa_key: TestKey
) -> None:
    hooked: list[dict[str, Any]] = []

    def hook(command: WsCommand) -> None:
        hooked.append(command.command)
        command.send(b"\x00before")
        command.handle()

    mock.scripting.on_ws_command = hook
    signer = rsa_key.signer()
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(mock.ws_url, headers=signer.headers("GET", mock.ws_url)) as ws,
    ):
        await ws.send_str(
            '{"id": 3, "cmd": "subscribe", "params": {"channels": ["communications"]}}'
        )
        await mock.scripting.wait_subscribed(1)
        assert mock.scripting.send("{not json") == 1
        assert mock.scripting.send({"type": "custom"}) == 1
        async with asyncio.timeout(3):
            before = await ws.receive()
            subscribed = orjson.loads((await ws.receive()).data)
            raw = await ws.receive()
            custom = await ws.receive()
    assert (before.type, before.data) == (aiohttp.WSMsgType.BINARY, b"\x00before")
    assert subscribed["type"] == "subscribed"
    assert subscribed["id"] == 3
    # Nothing added: no sid, no sending_ts_ms.
    assert (raw.type, raw.data) == (aiohttp.WSMsgType.TEXT, "{not json")
    assert custom.data == '{"type":"custom"}'
    assert (
        hooked
        == mock.scripting.ws_commands
        == [{"id": 3, "cmd": "subscribe", "params": {"channels": ["communications"]}}]
    )
    (handshake,) = mock.scripting.ws_handshakes
    assert (handshake.path, handshake.auth_ok) == ("/trade-api/ws/v2", True)
