"""AiohttpTransport over real loopback sockets: the mock exchange and scripted servers.

The mock exchange checks the transport with the project's own client (signed GET, POST,
PUT and DELETE, error bodies). Scripted asyncio servers on random 127.0.0.1 ports cover
what the mock cannot be made to do: chunked and unframed bodies, 1xx, servers that drop
idle connections, reset, stall or answer garbage, and TLS with a self-signed certificate.

Most of all they pin the retry-safety contract rest.py relies on: ``ConnectError``,
``ConnectTimeout`` and ``PoolTimeout`` only when the request was certainly not sent, any
other transport error once it may have reached the server, and no request ever sent
twice by the transport (rest.py alone decides retries, and is checked doing so).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import ipaddress
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mmbot.kalshi.errors import NotFoundError, ServerError, TransportError
from mmbot.kalshi.http import AiohttpTransport
from mmbot.kalshi.rest import KalshiRestClient
from mmbot.mock.server import MockConfig, MockExchange
from tests.support.factories import cent_market
from tests.support.keys import KEY_ID, TestKey
from tests.support.net import free_port

MAKER_KEY_ID = "maker-key-transport"
#: The errors after which rest.py treats a request as certainly not sent.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


# ----------------------------------------------------------------------------- the mock


@pytest.fixture
async def mock(rsa_key: TestKey, ed25519_key: TestKey) -> AsyncIterator[MockExchange]:
    config = MockConfig(seed=3, time_scale=0.02, market_step_seconds=0)
    async with MockExchange(config) as server:
        server.register_key(KEY_ID, rsa_key.public)
        server.register_key(MAKER_KEY_ID, ed25519_key.public)
        yield server


def _client(mock: MockExchange, signer: object, transport: AiohttpTransport) -> KalshiRestClient:
    # No retries: every failure must surface as the transport reported it.
    return KalshiRestClient(
        mock.rest_url,
        signer,  # type: ignore[arg-type]
        retry_deadline_seconds=0.0,
        transport=transport,
    )


async def test_rest_client_get_post_put_delete_through_the_mock(
    mock: MockExchange, rsa_key: TestKey, ed25519_key: TestKey
) -> None:
    market = cent_market(mock)
    async with (
        _client(mock, rsa_key.signer(), AiohttpTransport()) as requester,
        _client(mock, ed25519_key.signer(MAKER_KEY_ID), AiohttpTransport()) as maker,
    ):
        rfq_id = await requester.create_rfq(market.ticker, contracts=Decimal(10))  # POST
        assert (await maker.get_rfq(rfq_id)).id == rfq_id  # GET
        first = await maker.create_quote(rfq_id, market.yes_bid(), market.no_bid())
        await maker.delete_quote(first)  # DELETE, 204 without a body
        quote_id = await maker.create_quote(rfq_id, market.yes_bid(), market.no_bid())
        await requester.accept_quote(quote_id, "yes", rfq_id=rfq_id)  # PUT
        quote = await maker.get_quote(quote_id)
        assert quote.status == "accepted"
        assert mock.exchange.quotes[first].status != "open"


async def test_the_rest_client_uses_this_transport_by_default() -> None:
    client = KalshiRestClient("http://127.0.0.1:9/trade-api/v2")
    assert isinstance(client._transport, AiohttpTransport)
    await client.aclose()


async def test_error_statuses_keep_their_bodies(mock: MockExchange, rsa_key: TestKey) -> None:
    async with _client(mock, rsa_key.signer(), AiohttpTransport()) as client:
        with pytest.raises(NotFoundError) as not_found:
            await client.get_rfq("no-such-rfq")
        assert "no-such-rfq" in str(not_found.value)
        async with httpx.AsyncClient(transport=AiohttpTransport()) as http:
            unsigned = await http.get(mock.rest_url + "/communications/rfqs")
            assert unsigned.status_code == 401
            assert "missing" in unsigned.text
            faults = await http.post(
                mock.base_url + "/_mock/faults",
                json={"write_5xx_fraction": 1.0},
                headers=mock.control_headers,
            )
            assert faults.status_code == 200
        with pytest.raises(ServerError):
            await client.create_rfq(next(iter(mock.exchange.markets)), contracts=Decimal(1))


async def test_concurrent_signed_requests_share_a_small_pool(
    mock: MockExchange, rsa_key: TestKey
) -> None:
    async with _client(mock, rsa_key.signer(), AiohttpTransport(max_connections=3)) as client:
        ids = await asyncio.gather(*(client.get_communications_id() for _ in range(30)))
    assert len(set(ids)) == 1


# ----------------------------------------------------------------------------- scripted servers


@dataclass
class Seen:
    """One request as the scripted server parsed it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int


#: Given the request, writes the response (or nothing) on the writer; returns False to close.
Script = Callable[[Seen, asyncio.StreamWriter], Awaitable[bool]]
#: Called on each new connection before any request is read; returns False to drop it.
Greeting = Callable[[asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class Scripted:
    """A loopback HTTP/1.1 server whose answers a test scripts."""

    script: Script
    url: str = ""
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    #: Connections the client closed (EOF seen by the server).
    client_closed: int = 0
    listener: asyncio.Server | None = None


async def _read_request(reader: asyncio.StreamReader, connection: int) -> Seen | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Seen(method, target, headers, body, connection)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextlib.asynccontextmanager
async def scripted(
    script: Script,
    tls: ssl.SSLContext | None = None,
    *,
    greeting: Greeting | None = None,
    port: int = 0,
) -> AsyncIterator[Scripted]:
    """Serve ``script`` on 127.0.0.1 (a random port unless given); yield the server."""
    state = Scripted(script)
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        number = state.connections
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            if greeting is not None and not await greeting(writer):
                return
            while (seen := await _read_request(reader, number)) is not None:
                state.requests.append(seen)
                if not await state.script(seen, writer):
                    break
                await writer.drain()
            else:
                state.client_closed += 1
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            # Cancelled only by this fixture's teardown: ending normally keeps asyncio's
            # start_server callback from logging the cancellation as an error.
            pass
        finally:
            writer.close()

    server = state.listener = await asyncio.start_server(handle, "127.0.0.1", port, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    state.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        yield state
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


def answer(status: int = 200, body: bytes = b"ok", *extra: str) -> bytes:
    """A Content-Length framed response."""
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def replying(*responses: bytes, keep: bool = True) -> Script:
    """A script that answers request i with responses[i % len] (and closes if not keep)."""
    count = 0

    async def script(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        nonlocal count
        writer.write(responses[count % len(responses)])
        count += 1
        return keep

    return script


def client(url: str, transport: AiohttpTransport | None = None, **kw: object) -> httpx.AsyncClient:
    """An httpx client over a fresh AiohttpTransport."""
    return httpx.AsyncClient(base_url=url, transport=transport or AiohttpTransport(), **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- HTTP/1.1


async def test_keep_alive_reuses_one_connection_for_every_method() -> None:
    async with (
        scripted(replying(answer(201, b'{"id":"q1"}'))) as server,
        client(server.url) as http,
    ):
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            response = await http.request(method, "/x?a=1&b=%20", json={"k": method})
            assert response.status_code == 201
            assert response.json() == {"id": "q1"}
            assert response.http_version == "HTTP/1.1"
    assert server.connections == 1
    assert [r.method for r in server.requests] == ["GET", "POST", "PUT", "DELETE", "PATCH"]
    assert server.requests[0].target == "/x?a=1&b=%20"
    assert server.requests[1].body == b'{"k":"POST"}'
    assert server.requests[1].headers["content-length"] == "12"
    assert server.requests[1].headers["host"] == server.url.removeprefix("http://")
    # httpx's headers, and none of aiohttp's own.
    assert server.requests[1].headers["user-agent"].startswith("python-httpx/")
    assert server.requests[1].headers["content-type"] == "application/json"


async def test_only_the_headers_httpx_sends_go_out() -> None:
    async with scripted(replying(answer())) as server:
        request = httpx.Request("POST", server.url + "/p?q=%2F", content=b"x")
        transport = AiohttpTransport()
        response = await transport.handle_async_request(request)
        await response.aread()
        await response.aclose()
        await transport.aclose()
    (seen,) = server.requests
    assert set(seen.headers) == {"host", "content-length"}
    assert seen.target == "/p?q=%2F"  # not re-quoted


async def test_chunked_response_with_extensions_and_trailers() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    async with scripted(replying(chunked)) as server, client(server.url) as http:
        for _ in range(3):
            response = await http.get("/")
            assert response.content == b"hello world!"
    assert server.connections == 1


async def test_streamed_request_body_is_sent_chunked() -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"def"

    async with scripted(replying(answer())) as server, client(server.url) as http:
        assert (await http.post("/", content=parts())).status_code == 200
        assert (await http.post("/", content=parts())).status_code == 200
    assert server.requests[0].body == b"abcdef"
    assert server.requests[0].headers["transfer-encoding"] == "chunked"
    assert server.connections == 1


async def test_bodyless_responses_and_informational_ones() -> None:
    responses = (
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + answer(200, b"after"),
    )
    # The server writes no body for HEAD; the client must not wait for the 7 bytes.
    head_reply = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
    async with scripted(replying(*responses, head_reply)) as server, client(server.url) as http:
        assert (await http.get("/")).status_code == 204
        assert (await http.get("/")).content == b""
        after = await http.get("/")
        assert (after.status_code, after.content) == (200, b"after")
        head = await http.head("/")
        assert head.headers["content-length"] == "7"
        assert (await http.delete("/")).status_code == 204
    assert server.connections == 1


async def test_body_without_framing_runs_to_eof_and_is_not_reused() -> None:
    async with (
        scripted(replying(b"HTTP/1.1 200 OK\r\n\r\nuntil close", keep=False)) as server,
        client(server.url) as http,
    ):
        assert (await http.get("/")).content == b"until close"
        assert (await http.get("/")).content == b"until close"
    assert server.connections == 2


async def test_connection_close_and_http10_are_honoured() -> None:
    # The server would keep the connection; the client must not, having been told to close.
    closing = answer(200, b"a", "Connection: close")
    async with scripted(replying(closing)) as server, client(server.url) as http:
        assert (await http.get("/")).content == b"a"
        assert (await http.get("/")).content == b"a"
    assert server.connections == 2
    http10 = b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nz"
    async with scripted(replying(http10)) as server, client(server.url) as http:
        response = await http.get("/")
        assert response.http_version == "HTTP/1.0"
        await http.get("/")
    assert server.connections == 2


async def test_large_body_with_back_pressure_then_reuse() -> None:
    big = bytes(range(256)) * 8192  # 2 MiB: reading pauses and resumes
    async with (
        scripted(replying(answer(200, big), answer(200, b"small"))) as server,
        client(server.url) as http,
    ):
        assert (await http.get("/")).content == big
        assert (await http.get("/")).content == b"small"
        async with http.stream("GET", "/") as streamed:
            assert b"".join([c async for c in streamed.aiter_raw()]) == big
        assert (await http.get("/")).content == b"small"
    assert server.connections == 1


async def test_content_encoding_is_decoded_once_by_httpx() -> None:
    packed = gzip.compress(b'{"id":"z"}')
    reply = answer(200, packed, "Content-Encoding: gzip")
    async with scripted(replying(reply)) as server, client(server.url) as http:
        response = await http.get("/")
        assert response.json() == {"id": "z"}
        assert response.headers["content-encoding"] == "gzip"
        async with http.stream("GET", "/") as raw:
            assert b"".join([c async for c in raw.aiter_raw()]) == packed


async def test_no_redirects_and_no_cookies() -> None:
    # Straight to the transport: httpx's client keeps cookies of its own, aiohttp must not.
    moved = answer(302, b"", "Location: /elsewhere", "Set-Cookie: session=abc; Path=/")
    transport = AiohttpTransport()
    async with scripted(replying(moved)) as server:
        for _ in range(2):
            response = await transport.handle_async_request(httpx.Request("GET", server.url))
            assert response.status_code == 302
            await response.aclose()
        await transport.aclose()
    assert [r.target for r in server.requests] == ["/", "/"]
    assert "cookie" not in server.requests[1].headers


async def test_session_is_lazy_and_aclose_closes_it() -> None:
    transport = AiohttpTransport(keepalive_expiry=30)
    assert transport._session is None  # nothing opened outside a request
    async with scripted(replying(answer())) as server:
        async with client(server.url, transport) as http:
            await http.get("/")
            session = transport._session
            assert session is not None
            await http.get("/")
            assert transport._session is session  # one session, not one per request
        assert session.closed
        for _ in range(100):  # the server sees the idle connection close
            if server.client_closed:
                break
            await asyncio.sleep(0.01)
        assert server.client_closed == 1
    assert transport._session is None


async def test_idle_expiry_and_early_closed_streams_are_not_reused() -> None:
    async def script(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(200, b"x" * (4_000_000 if seen.target == "/big" else 100)))
        return True

    transport = AiohttpTransport(keepalive_expiry=0.05)
    async with scripted(script) as server, client(server.url, transport) as http:
        await http.get("/")
        await asyncio.sleep(0.2)
        await http.get("/")  # the first connection expired: a second one
        async with http.stream("GET", "/big") as partial:
            assert partial.status_code == 200  # body left unread: connection dropped
        await http.get("/")
    assert server.connections == 3


# ----------------------------------------------------------------------------- retry safety


async def test_idle_connection_closed_by_the_server_is_replaced() -> None:
    # Keep-alive response, then the server closes the idle connection: the FIN arrives
    # while idle, so the next request, POST or GET, goes out once on a fresh connection.
    async with scripted(replying(answer(), keep=False)) as server, client(server.url) as http:
        assert (await http.post("/", content=b"1")).status_code == 200
        await asyncio.sleep(0.05)
        assert (await http.post("/", content=b"2")).status_code == 200
        await asyncio.sleep(0.05)
        assert (await http.get("/")).status_code == 200
    assert server.connections == 3
    assert [r.body for r in server.requests] == [b"1", b"2", b""]


def _drop_second_request_on_each_connection() -> Script:
    # Answers the first request on a connection, then drops the connection on receiving
    # the second without answering: the race a server's idle timeout can cause.
    answered: set[int] = set()

    async def script(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.connection in answered:
            return False
        answered.add(seen.connection)
        writer.write(answer(200, seen.method.encode()))
        return True

    return script


def _rest_client(
    url: str, sleep: Callable[[float], Awaitable[None]] | None = None
) -> tuple[KalshiRestClient, list[str]]:
    """A REST client (unsigned, no backoff wait) and the statuses of its attempts."""
    attempts: list[str] = []

    async def no_wait(seconds: float) -> None:
        await asyncio.sleep(0)

    rest = KalshiRestClient(
        url,
        transport=AiohttpTransport(),
        sleep=sleep or no_wait,
        on_response=lambda endpoint, status, seconds: attempts.append(status),
    )
    return rest, attempts


def _fail_first(count: int, fail: Callable[[asyncio.StreamWriter], None]) -> Script:
    """Read each request; ``fail`` the first ``count`` of them, then answer."""
    failed = 0

    async def script(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        nonlocal failed
        if failed < count:
            failed += 1
            fail(writer)
            return False
        if seen.method == "POST":
            writer.write(answer(201, b'{"id":"rfq-1"}'))
        else:
            writer.write(answer(200, b'{"communications_id":"c-1"}'))
        return True

    return script


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH"])
async def test_dropped_keep_alive_is_ambiguous_and_never_resent(method: str) -> None:
    # aiohttp on its own would resend GET, PUT and DELETE here; the transport resends
    # nothing, and says the request may have reached the server (it did).
    async with (
        scripted(_drop_second_request_on_each_connection()) as server,
        client(server.url) as http,
    ):
        assert (await http.request(method, "/", content=b"q")).content == method.encode()
        with pytest.raises(httpx.RemoteProtocolError) as info:
            await http.request(method, "/", content=b"q")
        assert info.value.request.method == method
        assert len(server.requests) == 2  # seen once
        assert not isinstance(info.value, NOT_SENT)
        # The pool recovers.
        assert (await http.request(method, "/", content=b"q")).content == method.encode()
    assert len(server.requests) == 3
    assert server.connections == 2


async def test_rest_retries_a_get_not_create_rfq_after_a_dropped_keep_alive() -> None:
    async def script(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.connection in answered:
            return False
        answered.add(seen.connection)
        writer.write(answer(200, b'{"communications_id":"c-1"}'))
        return True

    answered: set[int] = set()
    async with scripted(script) as server:
        rest, attempts = _rest_client(server.url)
        async with rest:
            assert await rest.get_communications_id() == "c-1"
            assert await rest.get_communications_id() == "c-1"  # dropped, then retried
            assert attempts == ["200", "error", "200"]
            with pytest.raises(TransportError) as err:
                await rest.create_rfq("M-1", contracts=Decimal(1))  # dropped: not retried
            assert err.value.sent is True
            assert attempts == ["200", "error", "200", "error"]
    assert [r.method for r in server.requests] == ["GET", "GET", "GET", "POST"]


async def test_accept_then_close_at_once_is_ambiguous() -> None:
    # The server closes each connection as soon as it is accepted, before reading: the
    # request was still handed to a connected socket, so "may have reached", never "not
    # sent", and it is not resent.
    async def close_at_once(writer: asyncio.StreamWriter) -> bool:
        return False

    async with (
        scripted(replying(answer()), greeting=close_at_once) as server,
        client(server.url) as http,
    ):
        for method in ("POST", "GET"):
            with pytest.raises(httpx.TransportError) as info:
                await http.request(method, "/", content=b"x" if method == "POST" else None)
            assert not isinstance(info.value, NOT_SENT)
        assert server.connections == 2  # each sent once
    assert server.requests == []


async def test_reset_on_accept_is_ambiguous() -> None:
    # RST instead of FIN as soon as the connection is accepted.
    async def rst_at_once(writer: asyncio.StreamWriter) -> bool:
        reset(writer)
        return False

    async with (
        scripted(replying(answer()), greeting=rst_at_once) as server,
        client(server.url) as http,
    ):
        with pytest.raises(httpx.TransportError) as info:
            await http.post("/", content=b"x")
        assert isinstance(
            info.value, httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError
        )
        assert not isinstance(info.value, NOT_SENT)


@pytest.mark.parametrize("fail", [reset, lambda writer: None], ids=["rst", "close"])
async def test_failure_after_the_request_was_written(
    fail: Callable[[asyncio.StreamWriter], None],
) -> None:
    # The server reads the whole request, then resets or closes without answering: the
    # request may have been acted on. create_rfq (retried only when certainly unprocessed)
    # must not be sent again; a GET is retried by rest.py.
    async with scripted(_fail_first(1, fail)) as server:
        async with httpx.AsyncClient(transport=AiohttpTransport()) as http:
            with pytest.raises(httpx.TransportError) as info:
                await http.post(server.url, content=b"x")
            assert isinstance(info.value, httpx.ReadError | httpx.RemoteProtocolError)
        server.script = _fail_first(1, fail)
        rest, attempts = _rest_client(server.url)
        async with rest:
            with pytest.raises(TransportError) as err:
                await rest.create_rfq("M-1", contracts=Decimal(1))
            assert err.value.sent is True
            assert attempts == ["error"]
            assert [r.method for r in server.requests[1:]] == ["POST"]
            server.script = _fail_first(1, fail)
            assert await rest.get_communications_id() == "c-1"
            assert attempts == ["error", "error", "200"]
    assert [r.method for r in server.requests[2:]] == ["GET"] * 2


async def test_connection_refused_is_connect_error_and_rest_retries_a_post() -> None:
    port = free_port()  # nothing listens there
    async with client(f"http://127.0.0.1:{port}") as http:
        with pytest.raises(httpx.ConnectError):
            await http.post("/", content=b"x")
    # create_rfq is retried only when certainly unprocessed, and refused is exactly that:
    # the exchange comes up during the first backoff, and the POST goes through, once.
    servers: list[Scripted] = []
    async with contextlib.AsyncExitStack() as stack:

        async def start_the_exchange(seconds: float) -> None:
            if not servers:
                exchange = scripted(_fail_first(0, reset), port=port)
                servers.append(await stack.enter_async_context(exchange))

        rest, attempts = _rest_client(f"http://127.0.0.1:{port}", sleep=start_the_exchange)
        async with rest:
            assert await rest.create_rfq("M-1", contracts=Decimal(1)) == "rfq-1"
    assert attempts == ["error", "201"]
    assert [r.method for r in servers[0].requests] == ["POST"]


async def test_connect_timeout_on_a_full_listen_backlog() -> None:
    # A listener that never accepts, with a backlog of 0: once one connection waits in
    # its queue, the kernel drops further SYNs, and connecting times out for real.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            async with client(f"http://127.0.0.1:{port}", timeout=0.2) as http:
                with pytest.raises(httpx.ConnectTimeout):
                    await http.post("/", content=b"x")


async def test_read_timeout_then_the_pool_still_works() -> None:
    async def script(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.target == "/slow":
            await asyncio.sleep(1.0)
        writer.write(answer(200, b"fast"))
        return True

    async with scripted(script) as server, client(server.url, timeout=0.1) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/slow")
        assert (await http.get("/fast")).content == b"fast"
    assert server.connections == 2  # the timed-out connection was not reused


async def test_read_timeout_in_the_middle_of_a_body() -> None:
    async def script(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await asyncio.sleep(1.0)
        return False

    async with scripted(script) as server, client(server.url, timeout=0.1) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/")
        async with http.stream("GET", "/") as streamed:
            with pytest.raises(httpx.ReadTimeout):
                await streamed.aread()


async def test_write_timeout_when_the_server_reads_nothing() -> None:
    # The server never reads: a large body fills both socket buffers and sending stalls.
    async def never_read(writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(800):  # 50 MB, far beyond both socket buffers
            yield b"x" * 65536

    timeout = httpx.Timeout(0.2)
    async with (
        scripted(replying(answer()), greeting=never_read) as server,
        client(server.url, timeout=timeout) as http,
    ):
        with pytest.raises(httpx.WriteTimeout):
            await http.post("/", content=upload())


async def test_server_closing_mid_body_is_a_protocol_error() -> None:
    truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"
    for reply in (truncated, chunked):
        async with scripted(replying(reply, keep=False)) as server, client(server.url) as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get("/")


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n",
    ],
)
async def test_malformed_responses_are_protocol_errors(reply: bytes) -> None:
    async with scripted(replying(reply)) as server, client(server.url) as http:
        with pytest.raises(httpx.RemoteProtocolError) as info:
            await http.get("/")
        assert info.value.request.url.path == "/"


async def test_oversized_head_is_refused() -> None:
    reply = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    async with scripted(replying(reply)) as server, client(server.url) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/")


async def test_header_injection_is_refused_before_sending() -> None:
    async with scripted(replying(answer())) as server, client(server.url) as http:
        for headers in ({"X-A": "v\r\nX-Evil: 1"}, {"X-A": "v\nX-Evil: 1"}):
            with pytest.raises(httpx.LocalProtocolError):
                await http.get("/", headers=headers)
        assert (await http.get("/")).status_code == 200
    assert len(server.requests) == 1


async def test_unsupported_scheme() -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport()) as http:
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.get("ftp://127.0.0.1/")


async def test_pool_timeout_when_every_slot_is_busy() -> None:
    async with (
        scripted(replying(answer(200, b"x" * 10))) as server,
        client(server.url, AiohttpTransport(max_connections=1)) as http,
    ):
        async with http.stream("GET", "/"):
            with pytest.raises(httpx.PoolTimeout):
                await http.post("/", content=b"x", timeout=httpx.Timeout(5.0, pool=0.05))
        assert (await http.get("/")).status_code == 200  # the slot came back
    assert [r.method for r in server.requests] == ["GET", "GET"]  # the POST never went out


async def test_concurrent_requests_queue_for_a_bounded_pool() -> None:
    active = peak = 0

    async def script(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        writer.write(answer(200, seen.target.encode()))
        return True

    async with (
        scripted(script) as server,
        client(server.url, AiohttpTransport(max_connections=4)) as http,
    ):
        responses = await asyncio.gather(*(http.get(f"/{i}") for i in range(40)))
    assert [r.content for r in responses] == [f"/{i}".encode() for i in range(40)]
    assert server.connections <= 4
    assert peak <= 4


async def test_cancelled_request_frees_its_slot_and_closes_its_connection() -> None:
    async def script(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.target == "/slow":
            await asyncio.sleep(0.5)
        writer.write(answer(200, seen.target.encode()))
        return True

    async with (
        scripted(script) as server,
        client(server.url, AiohttpTransport(max_connections=1)) as http,
    ):
        task = asyncio.create_task(http.get("/slow"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The late answer to /slow must never be read as the answer to /next.
        assert (await http.get("/next", timeout=2.0)).content == b"/next"
    assert server.connections == 2


# ----------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mmbot test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_with_a_trusted_self_signed_certificate(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with scripted(replying(answer(201, b"secure")), tls=server_ctx) as server:
        async with client(server.url, AiohttpTransport(verify=client_ctx)) as http:
            for _ in range(3):
                response = await http.post("/", content=b"x")
                assert (response.status_code, response.content) == (201, b"secure")
        assert server.connections == 1
        # The default context (public CAs) must refuse the self-signed certificate, and a
        # failed handshake is "not sent": the request was never written.
        async with client(server.url) as http:
            with pytest.raises(httpx.ConnectError):
                await http.post("/", content=b"x")
        assert len(server.requests) == 3
