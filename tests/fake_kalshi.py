"""A scriptable loopback stand-in for Kalshi, for client tests.

It is deliberately small: it verifies ``KALSHI-ACCESS-*`` signatures exactly as
the docs describe, records every request, and answers from handlers the test
installs. The full-fidelity mock exchange lives in ``mmbot.mock``; this one
exists so API-layer tests can script precise server behaviour (a 429 then a
200, a dropped WebSocket, a malformed frame).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from mmbot.kalshi.auth import (
    ACCESS_KEY_HEADER,
    ACCESS_SIGNATURE_HEADER,
    ACCESS_TIMESTAMP_HEADER,
    PublicKey,
    signing_message,
    verify_signature,
)

REST_PREFIX = "/trade-api/v2"
WS_PATH = "/trade-api/ws/v2"


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str  # path below /trade-api/v2, e.g. "/communications/quotes"
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    auth_ok: bool
    at: float = field(default_factory=time.monotonic)


Reply = tuple[int, Any] | web.StreamResponse
Handler = Callable[[Recorded], Awaitable[Reply] | Reply]


class FakeKalshi:
    """Loopback HTTP + WebSocket server speaking enough of Kalshi's protocol for client tests."""

    def __init__(self, public_keys: dict[str, PublicKey] | None = None) -> None:
        self.public_keys = dict(public_keys or {})
        self.requests: list[Recorded] = []
        self.handlers: dict[tuple[str, str], Handler] = {}
        self.ws_connections: list[web.WebSocketResponse] = []
        self.ws_commands: list[dict[str, Any]] = []
        self.ws_handshakes: list[Recorded] = []
        self.ws_connected = asyncio.Event()
        self._command_seen = asyncio.Event()
        # Called for every client command; default answers subscribe with "subscribed".
        self.on_ws_command: Callable[[web.WebSocketResponse, dict[str, Any]], Awaitable[None]] = (
            self._default_command
        )
        self.refuse_handshakes = False
        self._sids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> FakeKalshi:
        app = web.Application()
        app.router.add_route("GET", WS_PATH, self._ws)
        app.router.add_route("*", REST_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        assert server.sockets
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drop_ws()
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{REST_PREFIX}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{WS_PATH}"

    # ------------------------------------------------------------------ scripting

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Answer ``method path`` (path below /trade-api/v2) with ``handler``."""
        self.handlers[(method.upper(), path)] = handler

    def script(self, method: str, path: str, replies: list[tuple[int, Any]]) -> None:
        """Answer successive calls with ``replies`` in order; the last one repeats."""
        queue = list(replies)

        def handler(_: Recorded) -> Reply:
            return queue.pop(0) if len(queue) > 1 else queue[0]

        self.route(method, path, handler)

    def calls(self, method: str, path: str) -> list[Recorded]:
        """Requests received for ``method path``."""
        return [r for r in self.requests if r.method == method.upper() and r.path == path]

    # ------------------------------------------------------------------ auth

    def _verify(self, headers: Any, method: str, path: str) -> bool:
        key_id = headers.get(ACCESS_KEY_HEADER)
        timestamp = headers.get(ACCESS_TIMESTAMP_HEADER)
        signature = headers.get(ACCESS_SIGNATURE_HEADER)
        public = self.public_keys.get(key_id or "")
        if public is None or not timestamp or not signature:
            return False
        if not timestamp.isdigit() or abs(int(timestamp) - time.time() * 1000) > 30_000:
            return False
        return verify_signature(public, signature, signing_message(timestamp, method, path))

    # ------------------------------------------------------------------ REST

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        # Sign-check the exact path on the wire, query excluded, as the docs require.
        auth_ok = self._verify(request.headers, request.method, request.raw_path.split("?")[0])
        path = request.path[len(REST_PREFIX) :]
        rec = Recorded(
            request.method, path, dict(request.query), body, dict(request.headers), auth_ok
        )
        self.requests.append(rec)
        if self.public_keys and not auth_ok:
            return _json(401, {"code": "unauthorized", "message": "invalid signature"})
        handler = self.handlers.get((request.method, path))
        if handler is None:
            return _json(404, {"code": "not_found", "message": f"no route {path}"})
        reply = handler(rec)
        if asyncio.iscoroutine(reply):
            reply = await reply
        if isinstance(reply, web.StreamResponse):
            return reply
        status, payload = reply
        return _json(status, payload)

    # ------------------------------------------------------------------ WebSocket

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        auth_ok = self._verify(request.headers, "GET", request.path)
        rec = Recorded(
            "GET", request.path, dict(request.query), None, dict(request.headers), auth_ok
        )
        self.ws_handshakes.append(rec)
        if self.refuse_handshakes:
            return _json(503, {"code": "unavailable", "message": "try later"})
        if self.public_keys and not auth_ok:
            return _json(401, {"code": "unauthorized", "message": "invalid signature"})
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws_connections.append(ws)
        self.ws_connected.set()
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                command = orjson.loads(msg.data)
                self.ws_commands.append(command)
                self._command_seen.set()
                await self.on_ws_command(ws, command)
        finally:
            if ws in self.ws_connections:
                self.ws_connections.remove(ws)
        return ws

    async def _default_command(self, ws: web.WebSocketResponse, command: dict[str, Any]) -> None:
        if command.get("cmd") == "subscribe":
            for channel in command.get("params", {}).get("channels", []):
                await ws.send_str(
                    orjson.dumps(
                        {
                            "id": command.get("id"),
                            "type": "subscribed",
                            "msg": {"channel": channel, "sid": next(self._sids)},
                        }
                    ).decode()
                )

    async def send(self, frame: str | bytes | dict[str, Any]) -> None:
        """Send one frame to every connected WebSocket client."""
        if isinstance(frame, dict):
            frame = orjson.dumps(frame).decode()
        for ws in list(self.ws_connections):
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)

    async def drop_ws(self) -> None:
        """Close every WebSocket connection from the server side."""
        self.ws_connected.clear()
        for ws in list(self.ws_connections):
            await ws.close(code=1011, message=b"server restart")
        self.ws_connections.clear()

    async def wait_subscribed(self, count: int = 1, within: float = 5.0) -> None:
        """Wait until ``count`` subscribe commands have been received in total."""

        async def wait() -> None:
            while sum(1 for c in self.ws_commands if c.get("cmd") == "subscribe") < count:
                # No await between the check and clear(), so no wake-up can be lost.
                self._command_seen.clear()
                await self._command_seen.wait()

        await asyncio.wait_for(wait(), within)


def _json(status: int, payload: Any) -> web.Response:
    if status == 204:
        return web.Response(status=204)
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")
