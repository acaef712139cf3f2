"""Scripted answers and a record of what arrived: the mock exchange's in-process test API.

Client tests need server behaviour the exchange's rules never produce on their own: a 429
then a 201, a 500 to a write, a success body of the wrong shape, a frame that is not JSON,
a subscribe that is never answered. :class:`Scripting`, reachable as
``MockExchange.scripting``, provides it on the real server::

    async with MockExchange.scripted({"key-id": public_key}) as mock:
        mock.scripting.script("POST", "/communications/quotes", [(429, {}), (201, {"id": "q"})])
        ... client.create_quote(...) ...
        assert [c.auth_ok for c in mock.scripting.calls("POST", "/communications/quotes")]

REST
    ``script(method, path, replies)`` answers the next calls of METHOD PATH with
    ``replies`` in order, then lets the real endpoint answer again (with
    ``repeat_last=True`` the last reply keeps answering instead). ``route(method, path,
    handler)`` answers every call with ``handler(recorded_request)`` until ``unroute``. A
    reply is ``(status, body)`` or ``(status, body, headers)``: a body of ``None`` is sent
    empty, ``bytes`` as they are (as ``application/json`` unless the headers say
    otherwise), anything else as JSON; a handler may also return an aiohttp response.
    Scripted calls go first, then the route, then the real endpoint.

    A scripted answer stands in for the endpoint itself, behind the gates in front of it:
    a signed endpoint still answers 401 to a bad signature, a public one still checks the
    credentials that are sent, and the write rate limit and fault knobs still apply.
    Paths are below ``/trade-api/v2``, match exactly (``/communications/rfqs/r1``, not a
    pattern) and must be ones the mock serves: any other path is 404 before scripting is
    consulted.

WebSocket
    ``send(frame)`` queues a frame exactly as given (text, bytes, or a JSON object
    serialised as is, with no ``sid`` or ``sending_ts_ms`` added) on every connection,
    subscribed or not, behind whatever that connection already has queued.
    ``on_ws_command`` is a hook that receives each client command (a JSON object) as a
    :class:`WsCommand` instead of the mock: it may ``send`` frames, call ``handle()`` to
    let the mock answer as usual, or do neither so the command goes unanswered.
    ``wait_subscribed(n)`` waits until ``n`` subscribe commands arrived in all.

Record
    With ``recording`` on (``MockExchange.scripted`` turns it on), ``requests`` holds every
    REST request as received (:class:`RecordedRequest`: method, path below
    ``/trade-api/v2``, query, headers, JSON-decoded body, and whether its signature
    verified against the registered keys), ``calls(method, path)`` those of one
    endpoint, ``ws_handshakes`` every WebSocket handshake (path ``/trade-api/ws/v2``) and
    ``ws_commands`` every client command. Recording is off by default because it keeps
    everything and verifies each signature a second time.

Cost
    With nothing scripted, the request path pays one empty-dict test per signed request
    (and one per public request); with recording off, one boolean test per request.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import orjson
from aiohttp import web

from mmbot.mock.auth import Authenticator
from mmbot.mock.http_util import REST_PREFIX, Endpoint
from mmbot.mock.wire import MockApiError
from mmbot.mock.ws import Connection

__all__ = [
    "Handler",
    "RecordedRequest",
    "Reply",
    "Scripting",
    "WsCommand",
    "WsCommandHook",
]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the mock received it."""

    method: str
    #: Below ``/trade-api/v2`` for REST (``/communications/quotes``); the full WebSocket path.
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    #: The decoded JSON body; the text when it is not JSON; None when empty.
    body: Any
    #: Whether the signed headers verified against a registered key.
    auth_ok: bool
    at: float = field(default_factory=time.monotonic)


#: ``(status, body)`` or ``(status, body, headers)``.
Reply: TypeAlias = tuple[int, Any] | tuple[int, Any, Mapping[str, str]]
_Answer: TypeAlias = Reply | web.StreamResponse
Handler: TypeAlias = Callable[[RecordedRequest], _Answer | Awaitable[_Answer]]

_RECORD: Final = web.RequestKey("mmbot_mock_recorded", RecordedRequest)


class WsCommand:
    """A client's WebSocket command, handed to an ``on_ws_command`` hook."""

    __slots__ = ("_conn", "_text", "command")

    def __init__(self, conn: Connection, text: str, command: dict[str, Any]) -> None:
        self._conn = conn
        self._text = text
        self.command = command

    @property
    def id(self) -> Any:
        """The command's ``id`` as the client sent it (None when absent)."""
        return self.command.get("id")

    def send(self, frame: str | bytes | Mapping[str, Any]) -> None:
        """Queue ``frame`` exactly as given on this command's connection."""
        self._conn.send_exact(_frame_data(frame))

    def handle(self) -> None:
        """Let the mock run the command as it would without the hook (replies are queued)."""
        self._conn.handle_text(self._text)


WsCommandHook: TypeAlias = Callable[[WsCommand], None]


@dataclass(slots=True)
class _Script:
    replies: deque[Reply] = field(default_factory=deque)
    repeat_last: bool = False
    handler: Handler | None = None


class Scripting:
    """Scripted REST answers, raw WebSocket frames and command hooks, and a request record."""

    def __init__(
        self, auth: Authenticator, connections: Callable[[], Iterable[Connection]]
    ) -> None:
        self._auth = auth
        self._connections = connections
        #: Record requests, handshakes and commands (off: nothing is kept).
        self.recording = False
        self.requests: list[RecordedRequest] = []
        self.ws_handshakes: list[RecordedRequest] = []
        self.ws_commands: list[dict[str, Any]] = []
        #: Sees each client command (a JSON object) instead of the mock; None: the mock.
        self.on_ws_command: WsCommandHook | None = None
        #: (METHOD, path below /trade-api/v2) -> what answers it; empty unless scripted.
        self.answers: dict[tuple[str, str], _Script] = {}
        self._command_seen = asyncio.Event()

    # ------------------------------------------------------------------ scripting REST

    def script(
        self, method: str, path: str, replies: Sequence[Reply], *, repeat_last: bool = False
    ) -> None:
        """Answer the next calls of ``method path`` with ``replies`` in order.

        Once they are used up the route or the real endpoint answers again, unless
        ``repeat_last``: then the last reply answers every later call. Replaces what is
        left of an earlier script for the same endpoint.
        """
        for reply in replies:
            if not (
                isinstance(reply, tuple) and len(reply) in (2, 3) and isinstance(reply[0], int)
            ):
                raise ValueError(f"a reply is (status, body[, headers]), got {reply!r}")
        if repeat_last and not replies:
            raise ValueError("repeat_last needs at least one reply")
        entry = self.answers.setdefault(_key(method, path), _Script())
        entry.replies = deque(replies)
        entry.repeat_last = repeat_last
        self._prune(_key(method, path))

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Answer every call of ``method path`` with ``handler(request)`` (sync or async)."""
        self.answers.setdefault(_key(method, path), _Script()).handler = handler

    def unroute(self, method: str, path: str) -> None:
        """Remove the route of ``method path``; scripted replies left for it stay."""
        key = _key(method, path)
        entry = self.answers.get(key)
        if entry is not None:
            entry.handler = None
            self._prune(key)

    def reset(self) -> None:
        """Forget every script, route and the WebSocket command hook (the record stays)."""
        self.answers.clear()
        self.on_ws_command = None

    def calls(self, method: str, path: str) -> list[RecordedRequest]:
        """Recorded requests of ``method path`` (path below /trade-api/v2), in arrival order."""
        method, path = _key(method, path)
        return [r for r in self.requests if r.method == method and r.path == path]

    # ------------------------------------------------------------------ the WebSocket

    def send(self, frame: str | bytes | Mapping[str, Any]) -> int:
        """Queue ``frame`` exactly as given on every WebSocket connection; return how many."""
        data = _frame_data(frame)
        return sum(1 for conn in list(self._connections()) if conn.send_exact(data))

    async def wait_subscribed(self, count: int = 1, within: float = 5.0) -> None:
        """Wait until ``count`` subscribe commands have arrived in all (needs ``recording``)."""
        if not self.recording:
            raise RuntimeError("wait_subscribed needs recording on")

        async with asyncio.timeout(within):
            while sum(1 for c in self.ws_commands if c.get("cmd") == "subscribe") < count:
                # No await between the check and clear(), so no wake-up can be lost.
                self._command_seen.clear()
                await self._command_seen.wait()

    # ------------------------------------------------------------------ server hooks

    @property
    def watching_ws(self) -> bool:
        """Whether client commands must pass through :meth:`handle_ws_text`."""
        return self.recording or self.on_ws_command is not None

    async def record_request(self, request: web.Request) -> None:
        """Record a REST request (the server calls this when ``recording``)."""
        record = await self._recorded(request, request.path[len(REST_PREFIX) :])
        request[_RECORD] = record
        self.requests.append(record)

    def record_handshake(self, request: web.Request) -> None:
        """Record a WebSocket handshake (the server calls this when ``recording``)."""
        self.ws_handshakes.append(
            RecordedRequest(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                None,
                self._signature_ok(request),
            )
        )

    async def answer(self, request: web.Request) -> web.StreamResponse | None:
        """The scripted answer to ``request``, or None to let the real endpoint answer."""
        path = request.path[len(REST_PREFIX) :]
        key = (request.method, path)
        entry = self.answers.get(key)
        if entry is None:
            return None
        if entry.replies:
            if entry.repeat_last and len(entry.replies) == 1:
                reply: _Answer = entry.replies[0]
            else:
                reply = entry.replies.popleft()
                self._prune(key)
            return _response(reply)
        if entry.handler is None:
            return None
        record = request.get(_RECORD)
        if record is None:
            record = await self._recorded(request, path)
        result = entry.handler(record)
        if isinstance(result, Awaitable):
            result = await result
        return _response(result)

    def wrap(self, handler: Endpoint) -> Endpoint:
        """``handler`` preceded by the scripted answers, for endpoints not behind ``_authed``."""

        async def endpoint(request: web.Request) -> web.StreamResponse:
            if self.answers:
                scripted = await self.answer(request)
                if scripted is not None:
                    return scripted
            return await handler(request)

        return endpoint

    def handle_ws_text(self, conn: Connection, text: str) -> None:
        """Record a client command and hand it to the hook, or to the connection."""
        try:
            command = orjson.loads(text)
        except orjson.JSONDecodeError:
            command = None
        if not isinstance(command, dict):
            conn.handle_text(text)  # the mock's own error reply
            return
        if self.recording:
            self.ws_commands.append(command)
        hook = self.on_ws_command
        if hook is None:
            conn.handle_text(text)
        else:
            hook(WsCommand(conn, text, command))
        if self.recording:
            self._command_seen.set()

    # ------------------------------------------------------------------ internals

    def _prune(self, key: tuple[str, str]) -> None:
        # An exhausted script without a route goes, so the hot path sees an empty dict again.
        entry = self.answers.get(key)
        if entry is not None and not entry.replies and entry.handler is None:
            del self.answers[key]

    def _signature_ok(self, request: web.Request) -> bool:
        try:
            self._auth.authenticate(request)
        except MockApiError:
            return False
        return True

    async def _recorded(self, request: web.Request, path: str) -> RecordedRequest:
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = raw.decode("utf-8", "replace")
        return RecordedRequest(
            request.method,
            path,
            dict(request.query),
            dict(request.headers),
            body,
            self._signature_ok(request),
        )


def _key(method: str, path: str) -> tuple[str, str]:
    if not path.startswith("/") or path.startswith(REST_PREFIX + "/"):
        raise ValueError(f"paths are below {REST_PREFIX}, e.g. '/communications/quotes': {path!r}")
    return method.upper(), path


def _frame_data(frame: str | bytes | Mapping[str, Any]) -> str | bytes:
    if isinstance(frame, str | bytes):
        return frame
    return orjson.dumps(dict(frame)).decode()


def _response(reply: _Answer) -> web.StreamResponse:
    if isinstance(reply, web.StreamResponse):
        return reply
    status, body = reply[0], reply[1]
    headers = dict(reply[2]) if len(reply) == 3 else {}
    if body is None:
        payload = b""
    elif isinstance(body, bytes | bytearray):
        payload = bytes(body)
    else:
        payload = orjson.dumps(body)
    if payload and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    return web.Response(status=status, body=payload or None, headers=headers)
