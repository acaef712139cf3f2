"""KeepAliveTransport over real loopback sockets: the mock exchange and scripted servers.

The mock exchange checks the transport with the project's own client (signed GET, POST,
PUT and DELETE, error bodies). A scripted asyncio server covers what the mock cannot be
made to do: chunked and unframed bodies, 1xx, servers that drop idle connections or
stall, malformed responses, and TLS with a self-signed certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
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

from mmbot.kalshi.errors import NotFoundError, ServerError
from mmbot.kalshi.rest import KalshiRestClient
from mmbot.kalshi.transport import KeepAliveTransport
from mmbot.mock.server import MockConfig, MockExchange
from mmbot.mock.sim import CENT_GRID
from tests.conftest import KEY_ID, TestKey

MAKER_KEY_ID = "maker-key-transport"


# ----------------------------------------------------------------------------- the mock


@pytest.fixture
async def mock(rsa_key: TestKey, ed25519_key: TestKey) -> AsyncIterator[MockExchange]:
    config = MockConfig(seed=3, time_scale=0.02, market_step_seconds=0)
    async with MockExchange(config) as server:
        server.register_key(KEY_ID, rsa_key.public)
        server.register_key(MAKER_KEY_ID, ed25519_key.public)
        yield server


def _client(mock: MockExchange, signer: object, transport: KeepAliveTransport) -> KalshiRestClient:
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
    market = next(m for m in mock.exchange.markets.values() if not m.hvm and m.grid == CENT_GRID)
    async with (
        _client(mock, rsa_key.signer(), KeepAliveTransport()) as requester,
        _client(mock, ed25519_key.signer(MAKER_KEY_ID), KeepAliveTransport()) as maker,
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


async def test_error_statuses_keep_their_bodies(mock: MockExchange, rsa_key: TestKey) -> None:
    async with _client(mock, rsa_key.signer(), KeepAliveTransport()) as client:
        with pytest.raises(NotFoundError) as not_found:
            await client.get_rfq("no-such-rfq")
        assert "no-such-rfq" in str(not_found.value)
        async with httpx.AsyncClient(transport=KeepAliveTransport()) as http:
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
    transport = KeepAliveTransport(max_connections=3)
    async with _client(mock, rsa_key.signer(), transport) as client:
        ids = await asyncio.gather(*(client.get_communications_id() for _ in range(30)))
    assert len(set(ids)) == 1
    assert all(len(idle) <= 3 for idle in transport._idle.values())


# ----------------------------------------------------------------------------- scripted server


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


@dataclass
class Scripted:
    """A loopback HTTP/1.1 server whose answers a test scripts."""

    script: Script
    url: str = ""
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0


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


@contextlib.asynccontextmanager
async def scripted(script: Script, tls: ssl.SSLContext | None = None) -> AsyncIterator[Scripted]:
    """Serve ``script`` on 127.0.0.1; yield the server with its URL."""
    state = Scripted(script)
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        number = state.connections
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while (seen := await _read_request(reader, number)) is not None:
                state.requests.append(seen)
                if not await state.script(seen, writer):
                    break
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            # Cancelled only by this fixture's teardown: ending normally keeps asyncio's
            # start_server callback from logging the cancellation as an error.
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
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


def client(
    url: str, transport: KeepAliveTransport | None = None, **kw: object
) -> httpx.AsyncClient:
    """An httpx client over a fresh KeepAliveTransport."""
    return httpx.AsyncClient(base_url=url, transport=transport or KeepAliveTransport(), **kw)  # type: ignore[arg-type]


async def test_keep_alive_reuses_one_connection_for_every_method() -> None:
    async with (
        scripted(replying(answer(201, b'{"id":"q1"}'))) as server,
        client(server.url) as http,
    ):
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            response = await http.request(method, "/x?a=1&b=%20", json={"k": method})
            assert response.status_code == 201
            assert response.json() == {"id": "q1"}
    assert server.connections == 1
    assert [r.method for r in server.requests] == ["GET", "POST", "PUT", "DELETE", "PATCH"]
    assert server.requests[0].target == "/x?a=1&b=%20"
    assert server.requests[1].body == b'{"k":"POST"}'
    assert server.requests[1].headers["content-length"] == "12"
    assert server.requests[1].headers["host"] == server.url.removeprefix("http://")


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
        answer(200, b"ignored"),  # answered to HEAD: the body must not be read
    )
    # The server writes a body for HEAD although it must not; drop it from the reply.
    head_reply = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
    async with scripted(replying(*responses[:3], head_reply)) as server, client(server.url) as http:
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
        await http.get("/")
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


async def test_idle_expiry_and_early_closed_streams_are_not_reused() -> None:
    transport = KeepAliveTransport(keepalive_expiry=0.05)
    async with (
        scripted(replying(answer(200, b"x" * 100))) as server,
        client(server.url, transport) as http,
    ):
        await http.get("/")
        await asyncio.sleep(0.1)
        await http.get("/")  # the first connection expired: a second one
        async with http.stream("GET", "/") as partial:
            assert partial.status_code == 200  # body left unread: connection dropped
        await http.get("/")
        idle = [conn for conns in transport._idle.values() for conn in conns]
        assert len(idle) == 1
    assert server.connections == 3
    assert transport._idle == {}  # aclose closed the idle connection
    assert idle[0].transport is not None
    assert idle[0].transport.is_closing()


async def test_idle_connection_closed_by_the_server_is_replaced() -> None:
    # Keep-alive response, then the server closes the idle connection: the FIN arrives
    # while idle, so the next request (a POST, not retryable) opens a fresh connection.
    async with scripted(replying(answer(), keep=False)) as server, client(server.url) as http:
        assert (await http.post("/", content=b"1")).status_code == 200
        await asyncio.sleep(0.05)
        assert (await http.post("/", content=b"2")).status_code == 200
    assert server.connections == 2
    assert [r.body for r in server.requests] == [b"1", b"2"]


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


async def test_safe_request_is_resent_once_after_a_dropped_keep_alive() -> None:
    async with (
        scripted(_drop_second_request_on_each_connection()) as server,
        client(server.url) as http,
    ):
        assert (await http.get("/")).content == b"GET"
        assert (await http.get("/")).content == b"GET"  # resent on a fresh connection
    assert server.connections == 2
    assert len(server.requests) == 3


async def test_safe_retry_skips_other_stale_idle_connections() -> None:
    async with (
        scripted(_drop_second_request_on_each_connection()) as server,
        client(server.url) as http,
    ):
        # Two connections go idle; each will drop its next request unanswered.
        await asyncio.gather(http.get("/"), http.get("/"))
        assert server.connections == 2
        assert (await http.get("/")).content == b"GET"
    assert server.connections == 3


async def test_unsafe_request_on_a_dropped_keep_alive_is_ambiguous_not_resent() -> None:
    async with (
        scripted(_drop_second_request_on_each_connection()) as server,
        client(server.url) as http,
    ):
        assert (await http.post("/", content=b"q")).content == b"POST"
        with pytest.raises(httpx.RemoteProtocolError) as info:
            await http.post("/", content=b"q")
        assert info.value.request.method == "POST"
        # The server did see it: the error must not read as "never sent".
        assert len(server.requests) == 2
        assert not isinstance(info.value, httpx.ConnectError | httpx.ConnectTimeout)
        # The pool recovers.
        assert (await http.post("/", content=b"q")).content == b"POST"


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
        b"HTTP/1.1 200 OK\r\n folded: header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
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
    assert server.requests == []


async def test_connect_refused_is_connect_error() -> None:
    sock_server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = sock_server.sockets[0].getsockname()[1]
    sock_server.close()
    await sock_server.wait_closed()
    async with client(f"http://127.0.0.1:{port}") as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/")


async def test_connect_timeout_is_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()

    async def hang(*args: object, **kwargs: object) -> None:
        await asyncio.sleep(10)

    monkeypatch.setattr(loop, "create_connection", hang)
    async with client("http://127.0.0.1:9", timeout=0.05) as http:
        with pytest.raises(httpx.ConnectTimeout):
            await http.get("/")


async def test_unsupported_scheme() -> None:
    async with httpx.AsyncClient(transport=KeepAliveTransport()) as http:
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.get("ftp://127.0.0.1/")


async def test_pool_timeout_when_every_slot_is_busy() -> None:
    async with (
        scripted(replying(answer(200, b"x" * 10))) as server,
        client(server.url, KeepAliveTransport(max_connections=1)) as http,
    ):
        async with http.stream("GET", "/"):
            with pytest.raises(httpx.PoolTimeout):
                await http.get("/", timeout=httpx.Timeout(5.0, pool=0.05))
        assert (await http.get("/")).status_code == 200  # the slot came back


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
        client(server.url, KeepAliveTransport(max_connections=4)) as http,
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
        client(server.url, KeepAliveTransport(max_connections=1)) as http,
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
        async with client(server.url, KeepAliveTransport(verify=client_ctx)) as http:
            for _ in range(3):
                response = await http.post("/", content=b"x")
                assert (response.status_code, response.content) == (201, b"secure")
        assert server.connections == 1
        # The default context (public CAs) must refuse the self-signed certificate.
        async with client(server.url) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get("/")
