"""Client for Kalshi's ``communications`` WebSocket channel (RFQs and quotes).

:class:`CommunicationsStream` owns one connection at a time. It signs the
handshake, subscribes, turns frames into typed events and reconnects with
jittered backoff whenever the connection ends, for as long as the consumer
iterates :meth:`CommunicationsStream.events`.

The channel has no sequence numbers, so a reconnect can silently lose events.
Every re-established subscription is therefore announced with a
:class:`Reconnected` marker, yielded before any event of the new connection;
the consumer answers it by reconciling its state over REST.

Consume with ``contextlib.aclosing`` so that leaving the loop early closes the
socket at once rather than when the generator is garbage-collected::

    async with contextlib.aclosing(stream.events()) as events:
        async for item in events:
            ...
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import orjson
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.uri import parse_uri

from mmbot.kalshi.auth import Signer
from mmbot.kalshi.backoff import Backoff
from mmbot.kalshi.errors import KalshiError
from mmbot.kalshi.models import (
    ErrorReply,
    MalformedMessage,
    Message,
    Ok,
    QuoteAccepted,
    QuoteCreated,
    QuoteExecuted,
    RfqCreated,
    RfqDeleted,
    Subscribed,
    UnknownMessage,
    Unsubscribed,
    load_frame,
    message_from_json,
)

__all__ = [
    "CHANNEL",
    "CommunicationsStream",
    "Event",
    "Reconnected",
    "SubscriptionError",
    "WsStats",
    "open_connection",
]

log = structlog.get_logger("mmbot.kalshi.ws")

CHANNEL: Final = "communications"

Event: TypeAlias = (
    RfqCreated | RfqDeleted | QuoteCreated | QuoteAccepted | QuoteExecuted | UnknownMessage
)

_EVENT_CLASSES: Final = (RfqCreated, RfqDeleted, QuoteCreated, QuoteAccepted, QuoteExecuted)

# Error codes from the docs that a reconnect cannot fix: the request itself is wrong
# (8 unknown channel, 11 invalid parameter, 19-22 shard parameters) or the account may
# not use the channel (9). Retrying them would only hammer the exchange.
_FATAL_CODES: Final = frozenset({8, 9, 11, 19, 20, 21, 22})
_ALREADY_SUBSCRIBED: Final = 6
# The exchange dropped events for us; only a fresh subscription plus a REST
# reconciliation restores a consistent view.
_BUFFER_OVERFLOW: Final = 25

# Communications frames are well under a kilobyte; anything near this limit is not one.
_MAX_FRAME_BYTES: Final = 1 << 20
# A healthy peer answers a close frame within one round trip. A dead one never does, and
# close() (and dead-connection detection, which ends in a close) should not hang on it
# for long.
_CLOSE_TIMEOUT_SECONDS: Final = 1.0
_AUTH_HINT: Final = "check kalshi.key_id / private key / clock"
_MAX_REPORTED_UNKNOWN_TYPES: Final = 64


@dataclass(frozen=True, slots=True)
class Reconnected:
    """Yielded after a drop once the connection is back and resubscribed.

    Events may have been missed in between (the channel has no sequence numbers), so a
    consumer reconciles over REST when it sees this.
    """

    attempts: int  # connection attempts it took
    downtime_seconds: float  # from the drop to the new subscription being confirmed
    reason: str  # why the previous connection ended (short, no secrets)


@dataclass(slots=True)
class WsStats:
    """Plain counters for the metrics layer.

    ``events`` counts well-formed event frames as received, ``errors`` every ``error``
    reply except "already subscribed", and ``reconnects`` the Reconnected markers yielded.
    """

    frames: int = 0
    events: int = 0
    malformed: int = 0
    unknown: int = 0
    reconnects: int = 0
    errors: int = 0
    connected: bool = False


class SubscriptionError(KalshiError):
    """The exchange refused the subscription for a reason retrying cannot fix."""


class _Drop(Exception):
    """The current connection is unusable; reconnect after a backoff delay."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Closing(Exception):
    """close() was called while a connection attempt was in flight."""


class _NoDebugLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Passes websockets' own records on, except DEBUG ones."""

    # At DEBUG, websockets logs every handshake header (the KALSHI-ACCESS-* ones
    # included) and every frame; the latter would also cost time on the hot path.
    def isEnabledFor(self, level: int) -> bool:
        """Report DEBUG as disabled whatever the logging configuration says."""
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_LIB_LOGGER: Final = _NoDebugLogger(logging.getLogger("websockets.client"), {})


class _ConnectNoRedirect(connect):
    """``websockets`` connect that refuses redirects."""

    # The signed headers are valid for one path only, and a cross-origin redirect would
    # hand the key id and a live signature to another host.
    def process_redirect(self, exc: Exception) -> Exception | str:
        """Never follow a redirect: report the response as the failure it is."""
        return exc


async def open_connection(
    url: str,
    headers: dict[str, str] | None,
    *,
    open_timeout: float,
    ping_interval: float,
    ping_timeout: float,
) -> ClientConnection:
    """Open a WebSocket to Kalshi: no redirects, no compression, no DEBUG header logging."""
    return await _ConnectNoRedirect(
        url,
        additional_headers=headers,
        open_timeout=open_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=_CLOSE_TIMEOUT_SECONDS,
        max_size=_MAX_FRAME_BYTES,
        logger=_LIB_LOGGER,
        # No permessage-deflate: frames are a few hundred bytes, and inflating each one
        # (and the server deflating it) costs latency on every frame for bandwidth we do
        # not need.
        compression=None,
    )


class CommunicationsStream:
    """A ``communications`` subscription that survives drops and yields typed events."""

    def __init__(
        self,
        url: str,
        signer: Signer | None,
        *,
        shard_factor: int | None = None,
        shard_key: int | None = None,
        ping_interval_seconds: float = 10.0,
        ping_timeout_seconds: float = 10.0,
        reconnect_min_seconds: float = 0.5,
        reconnect_max_seconds: float = 30.0,
        open_timeout_seconds: float = 10.0,
        subscribe_timeout_seconds: float = 10.0,
        rng: random.Random | None = None,
        on_malformed: Callable[[MalformedMessage], None] | None = None,
        on_feed_delay: Callable[[float], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        # Configuration errors surface at startup rather than as an endless reconnect loop
        # or a fatal reply minutes later.
        parse_uri(url)
        if shard_key is not None and shard_factor is None:
            raise ValueError("shard_key requires shard_factor")
        if shard_factor is not None and not 1 <= shard_factor <= 100:
            raise ValueError("shard_factor must be between 1 and 100")
        if shard_key is not None and shard_factor is not None and not 0 <= shard_key < shard_factor:
            raise ValueError("shard_key must be >= 0 and < shard_factor")
        for name, value in (
            ("ping_interval_seconds", ping_interval_seconds),
            ("ping_timeout_seconds", ping_timeout_seconds),
            ("reconnect_max_seconds", reconnect_max_seconds),
            ("open_timeout_seconds", open_timeout_seconds),
            ("subscribe_timeout_seconds", subscribe_timeout_seconds),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0")
        if not 0 <= reconnect_min_seconds <= reconnect_max_seconds:
            raise ValueError("reconnect_min_seconds must be >= 0 and <= reconnect_max_seconds")

        self._url = url
        self._signer = signer
        self._params: dict[str, Any] = {"channels": [CHANNEL]}
        if shard_factor is not None:
            self._params["shard_factor"] = shard_factor
        if shard_key is not None:
            self._params["shard_key"] = shard_key
        self._ping_interval = ping_interval_seconds
        self._ping_timeout = ping_timeout_seconds
        self._reconnect_min = reconnect_min_seconds
        self._reconnect_max = reconnect_max_seconds
        self._open_timeout = open_timeout_seconds
        self._subscribe_timeout = subscribe_timeout_seconds
        self._rng = rng
        self._on_malformed = on_malformed
        #: Told, for every frame whose envelope carries an integer ``sending_ts_ms``, our
        #: wall-clock receive time minus that stamp, in seconds: the exchange-to-daemon
        #: delay. Raw: negative when the exchange's clock is ahead of ours (the observer
        #: decides what to make of skew). May be set after construction.
        self.on_feed_delay = on_feed_delay
        self._wall_clock = wall_clock

        self.stats = WsStats()
        # Mirrors stats.connected, for callers that wait for a subscription to stand.
        self._subscribed = asyncio.Event()
        #: Why the last handshake was refused (status and the exchange's words), until the
        #: next subscription stands: readiness shows it.
        self.last_refusal: str | None = None
        self._ws: ClientConnection | None = None
        self._closing = False
        # Resolved by close(); waited on instead of an Event so that no helper task is needed.
        self._stop: asyncio.Future[None] | None = None
        self._running = False
        self._unknown_types: set[str] = set()
        # time.monotonic() when the frame behind the event just yielded was read off the
        # socket: a consumer reads it on receiving the event to time what follows.
        self.last_frame_at = 0.0

    # ------------------------------------------------------------------ public API

    async def events(self) -> AsyncGenerator[Event | Reconnected, None]:
        """Yield events until :meth:`close` (then end) or a fatal error (then raise)."""
        if self._running:
            raise RuntimeError("events() is already being iterated")
        self._running = True
        self._stop = asyncio.get_running_loop().create_future()
        if self._closing:
            self._stop.set_result(None)
        backoff = Backoff(
            base=self._reconnect_min,
            cap=self._reconnect_max,
            rng=self._rng or random.Random(),  # noqa: S311 - jitter, not cryptography
        )
        retrying = False
        attempts = 0
        # Set when a confirmed subscription is lost; None until then, so that the first
        # subscription is not announced as a reconnect.
        dropped_at: float | None = None
        drop_reason = ""
        try:
            while not self._closing:
                if retrying:
                    delay = backoff.next_delay()
                    log.debug("ws_backoff", delay_seconds=round(delay, 3), attempt=attempts + 1)
                    if await self._sleep(delay):
                        return
                retrying = True
                attempts += 1
                try:
                    ws = await self._connect()
                except _Closing:
                    return
                except _Drop:
                    continue

                self._ws = ws
                subscribed = False
                reason = ""
                try:
                    if self._closing:
                        return
                    sid, pending = await self._subscribe(ws)
                    subscribed = True
                    backoff.reset()
                    self.stats.connected = True
                    self.last_refusal = None
                    self._subscribed.set()
                    if dropped_at is None:
                        log.info("ws_subscribed", channel=CHANNEL, sid=sid, attempts=attempts)
                    else:
                        marker = Reconnected(
                            attempts=attempts,
                            downtime_seconds=time.monotonic() - dropped_at,
                            reason=drop_reason,
                        )
                        self.stats.reconnects += 1
                        log.info(
                            "ws_resubscribed",
                            channel=CHANNEL,
                            sid=sid,
                            attempts=marker.attempts,
                            downtime_seconds=round(marker.downtime_seconds, 3),
                            reason=marker.reason,
                        )
                        yield marker
                    attempts = 0
                    for event in pending:
                        if self._closing:
                            return
                        # Held back until the subscription was confirmed: their latency is
                        # measured from now, a slight undercount for a handful of events.
                        self.last_frame_at = time.monotonic()
                        yield event
                    # The hot path, inline rather than in a nested generator: one fewer
                    # resume per frame, and nothing left suspended when we are closed.
                    while True:
                        try:
                            frame = await ws.recv(decode=False)
                        except ConnectionClosed as exc:
                            raise _Drop(_close_reason(exc)) from None
                        self.last_frame_at = time.monotonic()
                        if self._closing:
                            return
                        msg = self._parse(frame)
                        if msg is None:
                            continue
                        if isinstance(msg, _EVENT_CLASSES):
                            self.stats.events += 1
                            yield msg
                        elif isinstance(msg, UnknownMessage):
                            self._note_unknown(msg)
                            yield msg
                        else:
                            self._control(msg)
                except _Drop as exc:
                    reason = exc.reason
                finally:
                    self.stats.connected = False
                    self._subscribed.clear()
                    self._ws = None
                    await ws.close()
                if self._closing:
                    return
                log.warning("ws_disconnected", reason=reason, was_subscribed=subscribed)
                if subscribed:
                    dropped_at = time.monotonic()
                    drop_reason = reason
        finally:
            self._running = False
            if self._closing:
                log.info("ws_closed")

    @property
    def subscribed(self) -> bool:
        """True while a subscription stands."""
        return self._subscribed.is_set()

    async def wait_subscribed(self) -> None:
        """Wait until a subscription stands (at once if one does)."""
        await self._subscribed.wait()

    async def close(self) -> None:
        """Stop: the iterator of :meth:`events` ends cleanly and the connection is closed."""
        self._closing = True
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(None)
        ws = self._ws
        if ws is not None:
            # Makes a pending recv() in events() raise, which is how a wait for frames ends.
            await ws.close()

    # ------------------------------------------------------------------ connection

    async def _sleep(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; return True at once if close() is called meanwhile."""
        assert self._stop is not None
        await asyncio.wait((self._stop,), timeout=delay)
        return self._closing

    async def _open(self, headers: dict[str, str] | None) -> ClientConnection:
        return await open_connection(
            self._url,
            headers,
            open_timeout=self._open_timeout,
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_timeout,
        )

    async def _connect(self) -> ClientConnection:
        """Open a signed connection, or raise _Drop (logged) or _Closing."""
        assert self._stop is not None
        # Signed per attempt: the exchange rejects stale timestamps.
        headers = self._signer.headers("GET", self._url) if self._signer is not None else None
        handshake = asyncio.create_task(self._open(headers))
        try:
            await asyncio.wait((handshake, self._stop), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await _discard(handshake)
            raise
        if self._closing:
            await _discard(handshake)
            raise _Closing
        try:
            return handshake.result()
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = exc.response.body or b""
            # Loud on purpose: a refused handshake usually means a configuration problem
            # the operator must fix, even though the loop keeps retrying.
            log.error(
                "ws_handshake_refused",
                status=status,
                body=body[:200].decode("utf-8", "replace"),
                hint=_AUTH_HINT
                if status in (401, 403)
                else "the exchange refused the connection; retrying with backoff",
            )
            text = body[:200].decode("utf-8", "replace").strip()
            self.last_refusal = f"handshake refused: HTTP {status}" + (f" ({text})" if text else "")
            raise _Drop(f"handshake refused: HTTP {status}") from None
        except (OSError, WebSocketException) as exc:
            # TimeoutError (open_timeout) is an OSError.
            detail = str(exc)[:200] or type(exc).__name__
            log.warning("ws_connect_failed", error=type(exc).__name__, detail=detail)
            raise _Drop(f"connect failed: {type(exc).__name__}") from None

    async def _subscribe(self, ws: ClientConnection) -> tuple[int | None, list[Event]]:
        """Subscribe on a fresh connection; return the sid and events that arrived first."""
        cmd_id = 1  # the first command of this session; ids are per connection
        command = {"id": cmd_id, "cmd": "subscribe", "params": self._params}
        pending: list[Event] = []
        try:
            await ws.send(orjson.dumps(command).decode())
            async with asyncio.timeout(self._subscribe_timeout):
                while True:
                    msg = self._parse(await ws.recv(decode=False))
                    if msg is None:
                        continue
                    if isinstance(msg, _EVENT_CLASSES):
                        self.stats.events += 1
                        pending.append(msg)
                    elif isinstance(msg, UnknownMessage):
                        self._note_unknown(msg)
                        pending.append(msg)
                    elif isinstance(msg, Subscribed) and msg.id in (cmd_id, None):
                        return msg.msg.sid, pending
                    elif isinstance(msg, ErrorReply) and msg.id in (cmd_id, None, 0):
                        if msg.msg.code == _ALREADY_SUBSCRIBED:
                            log.info("ws_already_subscribed", channel=CHANNEL)
                            return None, pending
                        self._subscribe_error(msg)
                    else:
                        self._control(msg)
        except (ConnectionClosed, TimeoutError, _Drop) as exc:
            if isinstance(exc, ConnectionClosed):
                reason = _close_reason(exc)
            elif isinstance(exc, TimeoutError):
                reason = f"no subscribed reply within {self._subscribe_timeout:g}s"
            else:
                reason = exc.reason
            if pending and not self._closing:
                # They cannot be yielded: on a reconnect they would precede the Reconnected
                # marker. The marker that follows the next subscription covers them.
                log.warning("ws_events_discarded", count=len(pending), reason=reason)
            raise _Drop(reason) from None

    # ------------------------------------------------------------------ frames

    def _parse(self, frame: str | bytes) -> Message | None:
        """Parse one frame; count and report it and return None if it is malformed."""
        self.stats.frames += 1
        try:
            data = load_frame(frame)
            observe = self.on_feed_delay
            if observe is not None and type(data) is dict:
                # The envelope is already decoded: one dict lookup, and a float when the
                # stamp is there. Anything but an integer (absent, text, float) is skipped.
                sent_ms = data.get("sending_ts_ms")
                if type(sent_ms) is int:
                    self._feed_delay(observe, sent_ms)
            return message_from_json(data, frame)
        except MalformedMessage as exc:
            self.stats.malformed += 1
            log.warning("ws_malformed_frame", reason=exc.reason, excerpt=exc.excerpt)
            if self._on_malformed is not None:
                try:
                    self._on_malformed(exc)
                except Exception:
                    log.exception("ws_on_malformed_failed")
            return None

    def _feed_delay(self, observe: Callable[[float], None], sent_ms: int) -> None:
        try:
            observe(self._wall_clock() - sent_ms / 1000)
        except Exception:
            # Metrics must never cost us the stream.
            log.exception("ws_on_feed_delay_failed")

    def _note_unknown(self, msg: UnknownMessage) -> None:
        self.stats.unknown += 1
        # Once per type: a new message type is worth telling the operator about, a
        # stream of them is not worth a line each.
        if (
            msg.type not in self._unknown_types
            and len(self._unknown_types) < _MAX_REPORTED_UNKNOWN_TYPES
        ):
            self._unknown_types.add(msg.type)
            log.info("ws_unknown_message_type", type=msg.type)

    def _control(self, msg: Message) -> None:
        """Handle a reply that is not an event on a live (or subscribing) connection."""
        if isinstance(msg, ErrorReply):
            code = msg.msg.code
            self.stats.errors += 1
            if code == _BUFFER_OVERFLOW:
                log.warning("ws_buffer_overflow", code=code, msg=msg.msg.msg)
                raise _Drop("subscription buffer overflow (error 25)")
            log.warning("ws_error_reply", code=code, msg=msg.msg.msg, id=msg.id)
        elif isinstance(msg, Ok | Unsubscribed | Subscribed):
            log.debug("ws_reply", type=msg.type, id=msg.id)

    def _subscribe_error(self, msg: ErrorReply) -> None:
        """Act on an error answering our subscribe command: raise SubscriptionError or _Drop."""
        code = msg.msg.code
        text = msg.msg.msg
        self.stats.errors += 1
        if code in _FATAL_CODES:
            log.error("ws_subscription_refused", channel=CHANNEL, code=code, msg=text)
            raise SubscriptionError(text or f"error {code}", code=str(code))
        # Retryable (internal error, command timeout, rate limit...): waiting for a reply
        # that will not come would only add the subscribe timeout to the outage.
        log.warning("ws_subscribe_failed", channel=CHANNEL, code=code, msg=text)
        raise _Drop(f"subscribe failed: error {code}")


async def _discard(handshake: asyncio.Task[ClientConnection]) -> None:
    """Cancel a handshake task and close the connection if it completed anyway."""
    handshake.cancel()
    await asyncio.wait((handshake,))
    if not handshake.cancelled() and handshake.exception() is None:
        await handshake.result().close()


def _close_reason(exc: ConnectionClosed) -> str:
    """A short reason for a closed connection, from the close frames exchanged."""
    # Whoever sent the first close frame ended the connection; the other side's frame is
    # only the echo (and a server's echo usually says 1000, which would hide e.g. a
    # keepalive timeout on our side).
    if exc.rcvd is not None and (exc.sent is None or exc.rcvd_then_sent):
        text = f"closed by server: code {exc.rcvd.code}"
        return f"{text} {exc.rcvd.reason[:80]}" if exc.rcvd.reason else text
    if exc.sent is not None:
        text = f"closed by client: code {exc.sent.code}"
        return f"{text} {exc.sent.reason[:80]}" if exc.sent.reason else text
    cause = exc.__cause__
    return f"connection lost: {type(cause).__name__}" if cause is not None else "connection lost"
