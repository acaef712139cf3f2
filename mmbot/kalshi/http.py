"""httpx transport over one aiohttp ``ClientSession``: httpx's API, aiohttp's HTTP/1.1.

Retry-safety contract (rest.py relies on it): ``ConnectError``, ``ConnectTimeout`` and
``PoolTimeout`` mean "certainly not sent": a failed DNS lookup, TCP connect or TLS
handshake, or no slot free in our pool. Once connected, every failure may have reached the
server (``_ERRORS``), even an accept-then-close: the request was handed over. aiohttp's
silent resend of idempotent requests (PUT, DELETE too) is turned off, so nothing is ever
sent twice here; rest.py decides retries. Idle connections the server closed are dropped
before use. Timeouts: pool is our semaphore, connect aiohttp's connect and sock_connect,
read its sock_read, and request plus response head is capped at connect + write + read
(aiohttp has no write timeout). No redirects, cookies, proxies or environment settings;
TLS verified against certifi's CAs, as httpx does; bodies raw, so httpx decodes them.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
import certifi
import httpx
from yarl import URL

__all__ = ["AiohttpTransport"]

#: httpx sends these when it means to; aiohttp must not add its own.
_NO_AUTO_HEADERS: Final = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
#: aiohttp error -> httpx error, first match wins (a connect timeout is also a TimeoutError).
_ERRORS: Final[tuple[tuple[type[BaseException], type[httpx.TransportError]], ...]] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # DNS, refused, TLS handshake
    (TimeoutError, httpx.ReadTimeout),  # sock_read: no byte for the read timeout
    (aiohttp.ClientConnectionResetError, httpx.WriteError),  # writing to a closed socket
    (aiohttp.ClientOSError, httpx.ReadError),  # reset
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),  # closed, no answer
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),  # truncated body
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # unparsable response
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),  # refused before connecting
    (aiohttp.ClientError, httpx.ReadError),
    (ValueError, httpx.LocalProtocolError),  # a header aiohttp refuses before writing
)
#: certifi's CA bundle, which httpx itself verifies against; loaded once.
_default_tls = functools.cache(lambda: ssl.create_default_context(cafile=certifi.where()))


class _NoResend(Exception):
    """An attempt's failure (``args[0]``), wrapped so that aiohttp's resend loop lets it by."""


async def _no_resend(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """aiohttp middleware: a failed attempt is raised, never resent by aiohttp."""
    try:
        return await handler(request)
    except aiohttp.ClientConnectorError:
        raise  # never resent by aiohttp, and must keep its class
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise _NoResend(exc) from exc


def _mapped(exc: BaseException, request: httpx.Request) -> httpx.TransportError | None:
    """The httpx error for an aiohttp failure, or None for one that is not aiohttp's."""
    cause = exc.args[0] if isinstance(exc, _NoResend) else exc
    kind = next((kind for source, kind in _ERRORS if isinstance(cause, source)), None)
    return None if kind is None else kind(f"{type(cause).__name__}: {cause}", request=request)


class _Body(httpx.AsyncByteStream):
    """A response body read from aiohttp as httpx iterates it; frees the slot on close."""

    def __init__(
        self, response: aiohttp.ClientResponse, request: httpx.Request, slots: asyncio.Semaphore
    ) -> None:
        self._response = response
        self._request = request
        self._slots: asyncio.Semaphore | None = slots

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Yield the body as it arrives (de-chunked, still content-encoded)."""
        try:
            while chunk := await self._response.content.readany():
                yield chunk
        except Exception as exc:
            self._response.close()
            error = _mapped(exc, self._request)
            if error is None:
                raise
            raise error from exc

    async def aclose(self) -> None:
        """Pool the connection if the body was read whole (aiohttp closes it otherwise)."""
        slots, self._slots = self._slots, None
        if slots is not None:
            self._response.release()
            slots.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx transport over one lazily created aiohttp session; see the module doc."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        max_connections: int = 20,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self._verify = verify
        self._keepalive_expiry = keepalive_expiry
        # Our bound, not aiohttp's: its connect timeout also covers waiting for a slot.
        self._slots = asyncio.Semaphore(max_connections)
        self._session: aiohttp.ClientSession | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` on a pooled connection; the body streams as httpx reads it."""
        session = self._session
        if session is None:  # created once, inside the running loop
            tls = self._verify
            tls = tls if isinstance(tls, ssl.SSLContext) else _default_tls() if tls else False
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0, keepalive_timeout=self._keepalive_expiry, ssl=tls
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=_NO_AUTO_HEADERS,
                timeout=aiohttp.ClientTimeout(total=None),
                middlewares=(_no_resend,),
            )
        timeouts = request.extensions.get("timeout", {})
        slots = self._slots
        try:
            async with asyncio.timeout(timeouts.get("pool") if slots.locked() else None):
                await slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no free connection slot", request=request) from None
        try:
            response = await self._send(session, request, timeouts)
        except BaseException:
            slots.release()
            raise
        version = response.version or aiohttp.HttpVersion11
        stream = _Body(response, request, slots)
        extensions = {"http_version": b"HTTP/%d.%d" % version}
        return httpx.Response(
            response.status, headers=response.raw_headers, stream=stream, extensions=extensions
        )

    async def _send(
        self, session: aiohttp.ClientSession, request: httpx.Request, timeouts: dict[str, float]
    ) -> aiohttp.ClientResponse:
        connect, read, write = timeouts.get("connect"), timeouts.get("read"), timeouts.get("write")
        cap = None if connect is None or read is None or write is None else connect + read + write
        encoding = request.headers.encoding
        headers = [(k.decode(encoding), v.decode(encoding)) for k, v in request.headers.raw]
        data: bytes | httpx.AsyncByteStream | None
        try:
            data = request.content or None
        except httpx.RequestNotRead:  # a stream: aiohttp frames it chunked itself
            data = request.stream  # type: ignore[assignment]
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        url = URL(str(request.url), encoded=True)  # httpx quoted it: yarl must not again
        # connect bounds DNS + TCP + TLS only: aiohttp's own pool is unbounded, never waits.
        timeout = aiohttp.ClientTimeout(connect=connect, sock_connect=connect, sock_read=read)
        options: dict[str, Any] = {"headers": headers, "data": data, "timeout": timeout}
        options["allow_redirects"] = False  # httpx follows redirects itself when asked to
        timer = asyncio.timeout(cap)
        try:
            async with timer:
                return await session.request(request.method, url, **options)
        except Exception as exc:
            error = _mapped(exc, request)
            if timer.expired():
                error = httpx.WriteTimeout("timed out sending the request", request=request)
            if error is None:
                raise
            raise error from exc

    async def aclose(self) -> None:
        """Close the session and every connection (a later request would open a new one)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
