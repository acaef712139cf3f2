"""A lean HTTP/1.1 keep-alive transport for httpx, for the quote hot path.

httpx's default transport (httpcore over anyio) spends about a millisecond of CPU on each
request (encode/httpx#3215); one signed quote must cost far less. :class:`KeepAliveTransport`
plugs in under ``httpx.AsyncClient(transport=...)``, so the code keeps httpx's API, and
talks HTTP/1.1 over a pool of asyncio connections with a plain :class:`asyncio.Protocol`.

What it does: Content-Length and chunked bodies both ways, reading to EOF when a response
has neither, 1xx responses skipped, keep-alive with a LIFO pool per origin, idle expiry,
TLS through an :class:`ssl.SSLContext`, and httpx's four timeouts. Errors are httpx's:
``ConnectError``/``ConnectTimeout`` only when nothing was sent, ``PoolTimeout`` while
waiting for a connection slot, ``WriteError``/``WriteTimeout``, ``ReadError``/
``ReadTimeout`` and ``RemoteProtocolError`` once the request may have reached the server.

Retries: a kept-alive connection the server closed while idle is normally seen (EOF
already received) and discarded before use. If the close races the request and the server
answers nothing at all, a GET, HEAD or OPTIONS is sent once more on a fresh connection;
any other method raises ``RemoteProtocolError``, because the server may have acted on it.

What it does not: HTTP/2, proxies, ``Expect: 100-continue``, upgrades (101). A cancelled
request closes its connection, since the next response on it could be this one's.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import AsyncIterator
from typing import Final

import httpx

__all__ = ["KeepAliveTransport"]

_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
#: Largest response head (status line plus headers) accepted; more is a protocol error.
_MAX_HEAD: Final = 64 * 1024
#: Largest chunk-size or trailer line in a chunked body.
_MAX_LINE: Final = 8 * 1024
#: Stop reading from the socket while this much is buffered and unread (a big body).
_HIGH_WATER: Final = 256 * 1024
_READ_PIECE: Final = 64 * 1024
#: An HTTP token (method, header name), RFC 9110 section 5.6.2.
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class _Closed(Exception):
    """The peer closed the connection (EOF) before the bytes being read arrived."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: a receive buffer with awaitable reads, and write flow control."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buffer = bytearray()
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused_reading = False
        self.transport: asyncio.Transport | None = None
        #: Bytes received since the current request was written (0: the server sent nothing).
        self.received = 0
        #: When the connection last went back to the pool (loop time).
        self.idle_since = 0.0

    # -- asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        """Buffer the bytes and wake the reader."""
        self._buffer += data
        self.received += len(data)
        if len(self._buffer) > _HIGH_WATER and self.transport is not None:
            # Back-pressure: a large body waits in the kernel, not in our memory.
            self.transport.pause_reading()
            self._paused_reading = True
        self._wake()

    def eof_received(self) -> bool:
        """The server half-closed: no more responses can come, so let asyncio close it."""
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Remember why, and wake any reader or writer."""
        self._eof = True
        self._error = exc
        self._wake()
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        """The kernel buffer is full: writers wait in :meth:`drain`."""
        if self._drain is None:
            self._drain = self._loop.create_future()

    def resume_writing(self) -> None:
        """The kernel buffer drained: release waiting writers."""
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- state

    @property
    def reusable(self) -> bool:
        """Open, not half-closed by the server, and nothing unread (no stray bytes)."""
        transport = self.transport
        return (
            transport is not None
            and not transport.is_closing()
            and not self._eof
            and not self._buffer
        )

    def close(self) -> None:
        """Close the socket now (pending writes are dropped)."""
        if self.transport is not None:
            self.transport.abort()

    # -- I/O

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        if self._paused_reading and len(self._buffer) < _HIGH_WATER // 2:
            # Resume here too: a body consumed from the buffer without waiting would
            # otherwise leave a pooled connection that never reads again.
            self._paused_reading = False
            if self.transport is not None:
                self.transport.resume_reading()
        return data

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, max_wait: float | None) -> None:
        # Raise at EOF; otherwise wait for more bytes, at most `max_wait` (TimeoutError).
        if self._eof:
            if self._error is not None:
                raise self._error
            raise _Closed
        if self._paused_reading and self.transport is not None:
            self._paused_reading = False
            self.transport.resume_reading()
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(max_wait, _expire, waiter) if max_wait is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def read_until(self, separator: bytes, limit: int, max_wait: float | None) -> bytes:
        """Return the bytes up to and including ``separator``; at most ``limit`` bytes."""
        start = 0
        while True:
            index = self._buffer.find(separator, start)
            if 0 <= index <= limit:
                return self._take(index + len(separator))
            if index > limit or len(self._buffer) > limit:
                raise httpx.RemoteProtocolError(f"response line or head over {limit} bytes")
            start = max(0, len(self._buffer) - len(separator) + 1)
            await self._wait(max_wait)

    async def read_exactly(self, size: int, max_wait: float | None) -> bytes:
        """Return exactly ``size`` bytes."""
        while len(self._buffer) < size:
            await self._wait(max_wait)
        return self._take(size)

    async def read_some(self, limit: int, max_wait: float | None) -> bytes:
        """Return up to ``limit`` buffered bytes (waiting for some); b"" at a clean EOF."""
        if not self._buffer:
            try:
                await self._wait(max_wait)
            except _Closed:
                return b""
            if not self._buffer:  # woken by EOF
                return await self.read_some(limit, max_wait)
        return self._take(limit)

    async def write(self, data: bytes, max_wait: float | None) -> None:
        """Send ``data``, waiting (at most ``max_wait``) while the kernel buffer is full."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("connection closed")
        transport.write(data)
        drain = self._drain
        if drain is not None:
            async with asyncio.timeout(max_wait):
                await asyncio.shield(drain)
            if self._error is not None:
                raise self._error


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Body(httpx.AsyncByteStream):
    """A response body read off the connection as httpx iterates it; frees the slot on close."""

    def __init__(
        self,
        owner: KeepAliveTransport,
        origin: tuple[str, str, int],
        conn: _Connection,
        request: httpx.Request,
        *,
        length: int | None,
        chunked: bool,
        keep_alive: bool,
        timeout: float | None,
    ) -> None:
        self._owner = owner
        self._origin = origin
        self._conn: _Connection | None = conn
        self._request = request
        self._length = length
        self._chunked = chunked
        self._keep_alive = keep_alive
        self._timeout = timeout
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Yield the body's bytes, de-framed."""
        conn = self._conn
        if conn is None or self._done:
            return
        try:
            if self._chunked:
                async for piece in self._read_chunked(conn):
                    yield piece
            elif self._length is not None:
                remaining = self._length
                while remaining:
                    piece = await conn.read_some(min(remaining, _READ_PIECE), self._timeout)
                    if not piece:
                        raise _Closed
                    remaining -= len(piece)
                    yield piece
            else:
                # No framing: the body runs to EOF and the connection cannot be reused.
                while piece := await conn.read_some(_READ_PIECE, self._timeout):
                    yield piece
            self._done = True
        except BaseException as exc:
            self._release(reuse=False)
            if isinstance(exc, Exception):
                raise _read_error(exc, self._request) from exc
            raise

    async def _read_chunked(self, conn: _Connection) -> AsyncIterator[bytes]:
        while True:
            line = await conn.read_until(b"\r\n", _MAX_LINE, self._timeout)
            size_text = line[:-2].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise httpx.RemoteProtocolError(f"bad chunk size {size_text[:20]!r}") from None
            if size < 0:
                raise httpx.RemoteProtocolError("negative chunk size")
            if size == 0:
                # Trailer fields (ignored) up to the blank line that ends the message.
                while await conn.read_until(b"\r\n", _MAX_LINE, self._timeout) != b"\r\n":
                    pass
                return
            data = await conn.read_exactly(size + 2, self._timeout)
            if data[-2:] != b"\r\n":
                raise httpx.RemoteProtocolError("chunk not followed by CRLF")
            yield data[:-2]

    async def aclose(self) -> None:
        """Give the connection back if the body was read whole, else close it."""
        self._release(reuse=self._done and self._keep_alive)

    def _release(self, *, reuse: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._owner._release(self._origin, conn, reuse=reuse)


def _read_error(exc: Exception, request: httpx.Request) -> httpx.TransportError:
    # The request was (or may have been) sent: every failure from here on is ambiguous.
    if isinstance(exc, httpx.TransportError):
        _attach(exc, request)
        return exc
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout("timed out reading the response", request=request)
    if isinstance(exc, _Closed):
        return httpx.RemoteProtocolError(
            "server closed the connection before the response was complete", request=request
        )
    return httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request)


def _attach(exc: BaseException, request: httpx.Request) -> None:
    # httpx errors raised deep in parsing have no request yet; callers may read `.request`.
    if isinstance(exc, httpx.RequestError):
        try:
            exc.request  # noqa: B018 - raises RuntimeError when unset
        except RuntimeError:
            exc.request = request


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """httpx transport over pooled keep-alive HTTP/1.1 connections; see the module doc."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        max_connections: int = 20,
        max_keepalive_connections: int = 20,
        keepalive_expiry: float = 5.0,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._verify = verify
        self._ssl: ssl.SSLContext | None = verify if isinstance(verify, ssl.SSLContext) else None
        self._max_keepalive = max_keepalive_connections
        self._keepalive_expiry = keepalive_expiry
        # Bounds the connections in use (one per in-flight request); idle ones sit in _idle.
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._closed = False

    # -- pool

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            if self._verify:
                import certifi  # httpx's own dependency: the same CA bundle httpx uses

                self._ssl = ssl.create_default_context(cafile=certifi.where())
            else:
                self._ssl = ssl.create_default_context()
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        return self._ssl

    def _take_idle(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # LIFO: the warmest connection first
            if conn.reusable and now - conn.idle_since <= self._keepalive_expiry:
                return conn
            conn.close()
        return None

    def _release(self, origin: tuple[str, str, int], conn: _Connection, *, reuse: bool) -> None:
        # Called exactly once per request that got a connection: frees its slot.
        self._slots.release()
        if not reuse or self._closed or not conn.reusable:
            conn.close()
            return
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= self._max_keepalive:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def _connect(
        self, request: httpx.Request, origin: tuple[str, str, int], max_wait: float | None
    ) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        server_hostname: str | None = None
        if scheme == "https":
            tls = self._ssl_context()
            sni = request.extensions.get("sni_hostname")
            server_hostname = sni.decode() if isinstance(sni, bytes) else (sni or host)
        try:
            async with asyncio.timeout(max_wait):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=server_hostname,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port}", request=request) from None
        except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (SSLError)
            raise httpx.ConnectError(f"{host}:{port}: {exc}", request=request) from exc
        return conn

    # -- the request

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` on a pooled connection and return its response (body streamed)."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        origin = (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])
        timeouts = request.extensions.get("timeout", {})
        message, close = await _encode(request)

        slots = self._slots
        if slots.locked():
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection slot", request=request) from None
        else:
            await slots.acquire()  # free: returns without suspending
        conn: _Connection | None = None
        try:
            retry = request.method in _SAFE_METHODS
            fresh = False
            while True:
                conn = None if fresh else self._take_idle(origin)
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(request, origin, timeouts.get("connect"))
                try:
                    return await self._exchange(
                        request, origin, conn, message, close=close, timeouts=timeouts
                    )
                except _Stale as stale:
                    conn.close()
                    conn = None
                    if not (reused and retry):
                        raise stale.error from stale.__cause__
                    # A safe request on a connection the server dropped while idle: once
                    # more, on a new connection (other idle ones may be just as stale).
                    retry = False
                    fresh = True
        except BaseException as exc:
            # Failed or cancelled before a response was handed over: the connection's state
            # is unknown, so it is closed, and the slot freed.
            if conn is not None:
                conn.close()
            slots.release()
            _attach(exc, request)
            raise

    async def _exchange(
        self,
        request: httpx.Request,
        origin: tuple[str, str, int],
        conn: _Connection,
        message: bytes,
        *,
        close: bool,
        timeouts: dict[str, float | None],
    ) -> httpx.Response:
        read_timeout = timeouts.get("read")
        conn.received = 0
        try:
            await conn.write(message, timeouts.get("write"))
        except TimeoutError:
            raise httpx.WriteTimeout("timed out sending the request", request=request) from None
        except OSError as exc:
            error = httpx.WriteError(f"{type(exc).__name__}: {exc}", request=request)
            raise _Stale(error) from exc
        while True:
            try:
                head = await conn.read_until(b"\r\n\r\n", _MAX_HEAD, read_timeout)
            except (_Closed, OSError) as exc:
                if conn.received == 0:
                    raise _Stale(_read_error(exc, request)) from exc
                raise _read_error(exc, request) from exc
            except TimeoutError:
                raise _read_error(TimeoutError(), request) from None
            status, reason, version, headers = _parse_head(head, request)
            if not 100 <= status < 200:
                break
            if status == 101:
                raise httpx.RemoteProtocolError("protocol upgrades are not supported")
            # 1xx informational (103 Early Hints...): the real response follows.

        keep_alive = not close and _keep_alive(version, headers)
        length: int | None = None
        chunked = False
        if request.method == "HEAD" or status in (204, 304):
            length = 0
        else:
            chunked, length = _framing(headers, request)
            if not chunked and length is None:
                keep_alive = False  # body runs to EOF
        stream = _Body(
            self,
            origin,
            conn,
            request,
            length=length,
            chunked=chunked,
            keep_alive=keep_alive,
            timeout=read_timeout,
        )
        return httpx.Response(
            status,
            headers=headers,
            stream=stream,
            request=request,
            extensions={"http_version": version, "reason_phrase": reason},
        )

    async def aclose(self) -> None:
        """Close every idle connection; in-use ones close when their responses do."""
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


class _Stale(Exception):
    """The connection failed before the server sent a single byte; ``error`` says how."""

    def __init__(self, error: httpx.TransportError) -> None:
        super().__init__(str(error))
        self.error = error


async def _encode(request: httpx.Request) -> tuple[bytes, bool]:
    """The request's bytes on the wire, and whether it asks to close the connection after."""
    try:
        body = request.content
    except httpx.RequestNotRead:
        # A streamed request body: buffer it, so a retry can send it again.
        body = await request.aread()
    raw = request.headers.raw
    # One regex over all names and one count over the whole block instead of a check per
    # header: CR or LF in a name or value would let a header smuggle in another request.
    names = b"".join(name for name, _ in raw)
    if _TOKEN.fullmatch(request.method.encode("ascii")) is None or _TOKEN.fullmatch(names) is None:
        raise httpx.LocalProtocolError("illegal character in the method or a header name")
    block = b"".join([b"%s: %s\r\n" % pair for pair in raw])
    if block.count(b"\n") != len(raw) or block.count(b"\r") != len(raw):
        raise httpx.LocalProtocolError("CR or LF inside a header value")
    chunked = close = False
    lowered = names.lower()
    if b"transfer-encoding" in lowered or b"connection" in lowered:
        for name, value in raw:
            name = name.lower()
            if name == b"transfer-encoding":
                chunked = value.lower().rstrip().endswith(b"chunked")
            elif name == b"connection":
                close = close or b"close" in value.lower()
    head = b"%s %s HTTP/1.1\r\n%s\r\n" % (request.method.encode(), request.url.raw_path, block)
    if chunked:
        # httpx asked for chunked framing (a stream of unknown length): send it as one chunk.
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    return head + body, close


def _parse_head(
    head: bytes, request: httpx.Request
) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    """Status, reason, HTTP version and headers from a response head."""
    lines = head[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise httpx.RemoteProtocolError(f"bad status line {lines[0][:60]!r}", request=request)
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b"\n" in line or b"\r" in line:
            # Folded or malformed header lines are how response splitting starts: refuse.
            raise httpx.RemoteProtocolError(f"bad header line {line[:60]!r}", request=request)
        headers.append((name, value.strip(b" \t")))
    return int(code), reason, version, headers


def _framing(headers: list[tuple[bytes, bytes]], request: httpx.Request) -> tuple[bool, int | None]:
    """(chunked, content length) of a response body, per RFC 9112 section 6.3."""
    lengths: set[bytes] = set()
    encodings: list[bytes] = []
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding":
            encodings.extend(v.strip().lower() for v in value.split(b","))
        elif lower == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
    if encodings:
        # Transfer-Encoding wins over Content-Length; only a final "chunked" is framed.
        if encodings[-1] != b"chunked":
            return False, None
        return True, None
    if not lengths:
        return False, None
    if len(lengths) != 1 or not next(iter(lengths)).isdigit():
        raise httpx.RemoteProtocolError("bad or conflicting Content-Length", request=request)
    return False, int(next(iter(lengths)))


def _keep_alive(version: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the response lets the connection carry another request."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(v.strip().lower() for v in value.split(b","))
    if b"close" in tokens:
        return False
    return version == b"HTTP/1.1" or b"keep-alive" in tokens
