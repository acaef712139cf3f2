"""The WebSocket: one client's subscriptions, commands and send queue.

Protocol
    Commands ``subscribe``, ``unsubscribe``, ``list_subscriptions`` and
    ``update_subscription`` with the documented error codes. The ``communications``
    channel is served here, the market-data channels ``orderbook_delta`` and ``ticker``
    by :mod:`mmbot.mock.marketfeed` (snapshots and deltas with a per-sid ``seq``, tickers,
    ``add_markets`` / ``delete_markets`` / ``get_snapshot``; see there); other documented
    channels answer error 10. One ``subscribe`` may name several channels: each gets its
    own ``subscribed`` reply and sid. RFQ events go to every
    subscriber (only one's own RFQs with ``user_filter: "self"``), quote events only to the
    RFQ's creator and the quote's creator, each with its own ``subaccount`` when it used
    one. An ``rfq_created`` shows ``creator_id`` "" to others and the creator its own id.
    Every frame carries ``sending_ts_ms`` (integer ms, stamped as it is handed to the
    socket; frames injected through ``/_mock/frames`` excepted), and every event the
    subscription's ``seq`` (1, 2, ... per subscription). The server pings every
    ``ping_interval_seconds`` with payload ``heartbeat`` and answers pings. Frames go
    through a bounded queue per connection; a client too slow to drain it gets error 25
    (subscription buffer overflow) and is disconnected.

Sharding
    A subscription with ``shard_factor`` F and ``shard_key`` K receives exactly the events
    whose RFQ id hashes to K: ``zlib.crc32(rfq_id.encode()) % F == K``. Every event of one
    RFQ (created, quotes, accepted, executed, deleted) therefore lands on the same shard,
    and F connections with keys 0..F-1 split the stream without overlap or gaps. A
    ``shard_factor`` without a ``shard_key`` receives every shard.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson
import structlog
from aiohttp import web

from mmbot.mock.marketfeed import MARKET_CHANNELS, MarketDataCommandError
from mmbot.mock.records import ExchangeEvent, User

if TYPE_CHECKING:
    from mmbot.mock.server import MockExchange

__all__ = [
    "CLOSE_TIMEOUT_SECONDS",
    "COMMUNICATIONS",
    "DOCUMENTED_CHANNELS",
    "MAX_WS_FRAME_BYTES",
    "Connection",
    "shard_of",
]

log = structlog.get_logger("mmbot.mock")

COMMUNICATIONS: Final = "communications"
#: Every channel name the WebSocket documentation lists for ``subscribe``.
DOCUMENTED_CHANNELS: Final = frozenset(
    {
        "orderbook_delta",
        "ticker",
        "trade",
        "fill",
        "market_positions",
        "market_lifecycle_v2",
        "multivariate_market_lifecycle",
        "communications",
        "order_group_updates",
        "user_orders",
        "cfbenchmarks_value",
        "pyth_value",
    }
)
_MAX_SHARD_FACTOR: Final = 100
# A held-back (reordered) event goes out after this long if no later event pushes it out.
_REORDER_HOLD_SECONDS: Final = 0.05
# How long a closing handshake may take before the socket is simply dropped.
CLOSE_TIMEOUT_SECONDS: Final = 1.0
_HEARTBEAT: Final = b"heartbeat"
MAX_WS_FRAME_BYTES: Final = 1 << 20


def shard_of(rfq_id: str, shard_factor: int) -> int:
    """The shard key whose subscription receives the events of ``rfq_id``."""
    return zlib.crc32(rfq_id.encode()) % shard_factor


class _CommandError(Exception):
    """A command failed with one of the documented WebSocket error codes."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass(slots=True)
class _Subscription:
    sid: int
    shard_factor: int | None
    shard_key: int | None
    #: The subscriber's user id when it asked for its own RFQs only (``user_filter: "self"``).
    own_rfqs_of: str | None = None
    sent: int = 0

    def wants(self, rfq_id: str) -> bool:
        if self.shard_factor is None or self.shard_key is None:
            return True
        return shard_of(rfq_id, self.shard_factor) == self.shard_key

    def wants_event(self, event: ExchangeEvent) -> bool:
        someone_elses_rfq = event.type in _RFQ_EVENTS and event.rfq_creator != self.own_rfqs_of
        if self.own_rfqs_of is not None and someone_elses_rfq:
            return False
        return self.wants(event.rfq_id)


class _Ping:
    """Queue item: send a ``heartbeat`` ping."""


@dataclass(frozen=True, slots=True)
class _Close:
    """Queue item: close the connection with this code and reason."""

    code: int
    message: bytes


@dataclass(frozen=True, slots=True)
class _Timed:
    """Queue item: a text frame the benchmark probe stamps as it is handed to the socket."""

    text: str
    kind: str
    key: str


@dataclass(frozen=True, slots=True)
class _Raw:
    """Queue item: a frame sent exactly as given (no ``sending_ts_ms``); bytes go as binary."""

    text: str | bytes


_PING: Final = _Ping()
# What a connection's writer sends: a text frame, a ping, or the closing handshake.
_Item = str | _Timed | _Raw | _Ping | _Close
_RFQ_EVENTS: Final = frozenset({"rfq_created", "rfq_deleted"})


def _stamped(text: str) -> str:
    """``text`` with ``sending_ts_ms`` (now, ms) as its first key, if it is a JSON object."""
    if not text.startswith("{"):
        return text
    rest = text[1:]
    separator = "" if rest.startswith("}") else ","
    return f'{{"sending_ts_ms":{time.time_ns() // 1_000_000}{separator}{rest}'


# Events whose frames the benchmark probe stamps, and the message field that keys them.
_TIMED_EVENTS: Final = {"rfq_created": "id", "quote_accepted": "quote_id"}


def _opt_int(params: Mapping[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _CommandError(1, f"{name} must be an integer")
    return value


class Connection:
    """One authenticated WebSocket client: its subscriptions, send queue and writer."""

    def __init__(
        self,
        server: MockExchange,
        ws: web.WebSocketResponse,
        request: web.Request,
        user: User,
    ) -> None:
        self.server = server
        self.ws = ws
        self.user = user
        self._transport = request.transport
        self.subscriptions: dict[int, _Subscription] = {}
        self._sids = itertools.count(1)
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(server.config.ws_queue_frames)
        self._held: list[_Item] | None = None
        self._held_timer: asyncio.TimerHandle | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        # Set once the connection is being closed: nothing more is queued.
        self.closing = False
        loop = asyncio.get_running_loop()
        self._writer = loop.create_task(self._write(), name="mock-ws-writer")
        self._pinger = loop.create_task(self._ping(), name="mock-ws-pinger")

    # ------------------------------------------------------------------ sending

    def _put(self, item: _Item) -> bool:
        if self.closing:
            return False
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._overflow()
            return False
        return True

    def _overflow(self) -> None:
        self.closing = True
        self.server.stats.ws_overflows += 1
        log.warning(
            "mock_ws_buffer_overflow",
            user=self.user.communications_id,
            queued=self._queue.qsize(),
        )
        self._drop_held()
        while not self._queue.empty():
            self._queue.get_nowait()
        # The queue was just emptied, so these two always fit.
        self._queue.put_nowait(_error_frame(None, 25, "subscription buffer overflow"))
        self._queue.put_nowait(_Close(1008, b"subscription buffer overflow"))
        # A client that reads nothing at all would keep the writer stuck; cut it off.
        self._watchdog = asyncio.get_running_loop().call_later(
            CLOSE_TIMEOUT_SECONDS * 2, self.abort
        )

    async def _write(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _Ping):
                    await self.ws.ping(_HEARTBEAT)
                    self.server.stats.pings_sent += 1
                elif isinstance(item, _Close):
                    await asyncio.wait_for(
                        self.ws.close(code=item.code, message=item.message),
                        CLOSE_TIMEOUT_SECONDS,
                    )
                    return
                elif isinstance(item, _Timed):
                    self.server.bench.frame_sent(item.kind, item.key)
                    await self.ws.send_str(_stamped(item.text))
                    self.server.stats.frames_sent += 1
                elif isinstance(item, _Raw):
                    if isinstance(item.text, bytes):
                        await self.ws.send_bytes(item.text)
                    else:
                        await self.ws.send_str(item.text)
                    self.server.stats.frames_sent += 1
                else:
                    # Stamped here rather than when queued: it is the exchange's send time.
                    await self.ws.send_str(_stamped(item))
                    self.server.stats.frames_sent += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The peer went away mid-send; the reader notices and cleans up.
            log.debug("mock_ws_write_failed", error=type(exc).__name__)
            self.abort()

    async def _ping(self) -> None:
        interval = self.server.config.ping_interval_seconds
        while True:
            await asyncio.sleep(interval)
            # A ping never overflows the queue: when it is full the client is already
            # in trouble, and the next event will say so.
            if not self.closing and not self._queue.full():
                self._queue.put_nowait(_PING)

    def reply(self, frame: dict[str, Any]) -> None:
        """Queue a command reply."""
        self._put(orjson.dumps(frame).decode())

    def send_event(self, event: ExchangeEvent, sub: _Subscription, msg: dict[str, Any]) -> None:
        """Queue one event for one subscription, applying the configured frame faults."""
        if self.closing:
            return
        stats = self.server.stats
        faults = self.server.faults
        config = faults.config
        sub.sent += 1
        if event.type == "quote_accepted" and msg.get("quote_creator_id") == (
            self.user.communications_id
        ):
            msg = self.server.tamper_acceptance(msg)
        frame = orjson.dumps(
            {"type": event.type, "sid": sub.sid, "seq": sub.sent, "msg": msg}
        ).decode()
        before: list[_Item] = []
        if faults.draw(config.malformed_fraction):
            before.append(_malformed(frame, event.type, sub.sid, faults.choose(2)))
            stats.malformed_sent += 1
        item: _Item = frame
        key_field = _TIMED_EVENTS.get(event.type)
        if key_field is not None and self.server.bench.enabled and not self.user.simulated:
            item = _Timed(frame, event.type, str(msg.get(key_field, "")))
        frames = [item]
        if faults.draw(config.duplicate_fraction):
            frames.append(item)
            stats.duplicates_sent += 1
        stats.events_sent += 1
        for item in before:
            if not self._put(item):
                return
        if self._held is None and faults.draw(config.reorder_fraction):
            stats.reordered += 1
            self._held = frames
            self._held_timer = asyncio.get_running_loop().call_later(
                _REORDER_HOLD_SECONDS, self._release_held
            )
            return
        for item in frames:
            if not self._put(item):
                return
        self._release_held()

    def send_raw(self, frame: dict[str, Any]) -> int:
        """Queue ``frame`` as given to every subscription (its sid filled in when missing)."""
        sent = 0
        for sub in list(self.subscriptions.values()):
            text = orjson.dumps(frame if "sid" in frame else {**frame, "sid": sub.sid}).decode()
            if not self._put(_Raw(text)):
                break
            sent += 1
        return sent

    def send_market_data(self, text: str) -> bool:
        """Queue one market-data frame (stamped with ``sending_ts_ms`` as it is sent)."""
        return self._put(text)

    def send_exact(self, data: str | bytes) -> bool:
        """Queue ``data`` as one frame, exactly as given, whatever this connection subscribed."""
        return self._put(_Raw(data))

    def _release_held(self) -> None:
        held = self._held
        self._drop_held()
        for item in held or ():
            if not self._put(item):
                return

    def _drop_held(self) -> None:
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        self._held = None

    # ------------------------------------------------------------------ commands

    def handle_text(self, text: str) -> None:
        """Parse and run one client command, replying on this connection."""
        cmd_id: int | None = None
        try:
            try:
                command = orjson.loads(text)
            except orjson.JSONDecodeError:
                raise _CommandError(1, "unable to process message: invalid JSON") from None
            if not isinstance(command, dict):
                raise _CommandError(1, "unable to process message: expected a JSON object")
            raw_id = command.get("id")
            if raw_id is not None and (
                isinstance(raw_id, bool) or not isinstance(raw_id, int) or raw_id < 0
            ):
                raise _CommandError(1, "id must be a non-negative integer")
            # The docs: an id of 0 is treated as no id at all.
            cmd_id = raw_id or None
            cmd = command.get("cmd")
            if not isinstance(cmd, str):
                raise _CommandError(1, "cmd must be a string")
            params = command.get("params")
            if params is not None and not isinstance(params, dict):
                raise _CommandError(1, "params must be an object")
            if cmd == "subscribe":
                self._subscribe(cmd_id, params)
            elif cmd == "unsubscribe":
                self._unsubscribe(cmd_id, params)
            elif cmd == "list_subscriptions":
                self._list(cmd_id)
            elif cmd == "update_subscription":
                self._update(cmd_id, params)
            else:
                raise _CommandError(5, f"unknown command {cmd[:40]!r}")
        except _CommandError as exc:
            self._put(_error_frame(cmd_id, exc.code, exc.text))
        except MarketDataCommandError as exc:
            self._put(_error_frame(cmd_id, exc.code, exc.text, exc.market_ticker))

    def _subscribe(self, cmd_id: int | None, params: dict[str, Any] | None) -> None:
        if params is None:
            raise _CommandError(2, "params required")
        channels = params.get("channels")
        if channels is None or channels == []:
            raise _CommandError(3, "channels required")
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise _CommandError(1, "channels must be a list of channel names")
        for channel in channels:
            if channel not in DOCUMENTED_CHANNELS:
                raise _CommandError(8, f"unknown channel name {channel[:40]!r}")
        for channel in channels:
            if channel != COMMUNICATIONS and channel not in MARKET_CHANNELS:
                raise _CommandError(10, f"channel {channel} not supported by the mock")
        feed = self.server.market_feed
        # Every channel is validated before any subscription is made.
        plans = feed.plan(
            self, [c for c in dict.fromkeys(channels) if c in MARKET_CHANNELS], params
        )
        if COMMUNICATIONS not in channels:
            for channel, tickers in plans:
                feed.open(self, cmd_id, next(self._sids), channel, tickers, params)
            return
        shard_factor = _opt_int(params, "shard_factor")
        shard_key = _opt_int(params, "shard_key")
        if shard_factor is not None and shard_factor <= 0:
            raise _CommandError(19, "shard_factor must be > 0")
        if shard_factor is not None and shard_factor > _MAX_SHARD_FACTOR:
            raise _CommandError(22, f"shard_factor must be <= {_MAX_SHARD_FACTOR}")
        if shard_key is not None and shard_factor is None:
            raise _CommandError(20, "shard_factor is required when shard_key is set")
        if shard_key is not None and shard_factor is not None and not 0 <= shard_key < shard_factor:
            raise _CommandError(21, "shard_key must be >= 0 and < shard_factor")
        user_filter = params.get("user_filter")
        if user_filter not in (None, "", "self"):
            raise _CommandError(11, "user_filter must be empty or 'self'")
        if self.subscriptions:
            raise _CommandError(6, "already subscribed")
        own = self.user.user_id if user_filter == "self" else None
        sub = _Subscription(next(self._sids), shard_factor, shard_key, own)
        self.subscriptions[sub.sid] = sub
        self.reply(
            _with_id(
                cmd_id, {"type": "subscribed", "msg": {"channel": COMMUNICATIONS, "sid": sub.sid}}
            )
        )
        for channel, tickers in plans:
            feed.open(self, cmd_id, next(self._sids), channel, tickers, params)

    def _unsubscribe(self, cmd_id: int | None, params: dict[str, Any] | None) -> None:
        if params is None:
            raise _CommandError(2, "params required")
        sids = params.get("sids")
        if sids is None or sids == []:
            raise _CommandError(4, "subscription ids required")
        if not isinstance(sids, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in sids
        ):
            raise _CommandError(1, "sids must be a list of integers")
        # All or nothing: an unknown sid leaves every subscription in place.
        market = self.server.market_feed.subscriptions_of(self)
        for sid in sids:
            if sid not in self.subscriptions and sid not in market:
                raise _CommandError(7, f"unknown subscription id {sid}")
        for sid in dict.fromkeys(sids):
            if sid in market:
                seq = self.server.market_feed.close(self, sid).seq + 1
            else:
                seq = self.subscriptions.pop(sid).sent + 1
            self.reply(_with_id(cmd_id, {"sid": sid, "seq": seq, "type": "unsubscribed"}))

    def _list(self, cmd_id: int | None) -> None:
        channels = {sid: COMMUNICATIONS for sid in self.subscriptions}
        for sid, sub in self.server.market_feed.subscriptions_of(self).items():
            channels[sid] = sub.channel
        listed = [{"channel": channels[sid], "sid": sid} for sid in sorted(channels)]
        self.reply(_with_id(cmd_id, {"type": "ok", "msg": listed}))

    def _update(self, cmd_id: int | None, params: dict[str, Any] | None) -> None:
        if params is None:
            raise _CommandError(2, "params required")
        action = params.get("action")
        if action is None or action == "":
            raise _CommandError(15, "action required")
        if not isinstance(action, str):
            raise _CommandError(1, "action must be a string")
        sids: list[Any] = []
        if "sid" in params:
            sids.append(params["sid"])
        if isinstance(params.get("sids"), list):
            sids.extend(params["sids"])
        if len(sids) != 1:
            raise _CommandError(12, "exactly one subscription id is required")
        sid = sids[0]
        if isinstance(sid, bool) or not isinstance(sid, int):
            raise _CommandError(1, "sid must be an integer")
        market = self.server.market_feed.subscriptions_of(self).get(sid)
        if market is not None:
            self.server.market_feed.update(self, cmd_id, market, action, params)
            return
        if sid not in self.subscriptions:
            raise _CommandError(7, f"unknown subscription id {sid}")
        raise _CommandError(
            13, f"unsupported action {action[:40]!r} for the communications channel"
        )

    # ------------------------------------------------------------------ closing

    def abort(self) -> None:
        """Drop the TCP connection at once, without a closing handshake."""
        self.closing = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()

    async def close(self, code: int, message: bytes) -> None:
        """Close from the server side (drop_ws, shutdown)."""
        self.closing = True
        await self.stop_tasks()
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=message), CLOSE_TIMEOUT_SECONDS)
        except Exception:
            self.abort()

    async def stop_tasks(self) -> None:
        """Stop the writer and pinger and every pending timer of this connection."""
        self.closing = True
        self.server.market_feed.forget(self)
        self._drop_held()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        tasks = [t for t in (self._writer, self._pinger) if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _with_id(cmd_id: int | None, frame: dict[str, Any]) -> dict[str, Any]:
    return {"id": cmd_id, **frame} if cmd_id is not None else frame


def _error_frame(cmd_id: int | None, code: int, text: str, market_ticker: str | None = None) -> str:
    msg: dict[str, Any] = {"code": code, "msg": text}
    if market_ticker is not None:
        msg["market_ticker"] = market_ticker
    return orjson.dumps(_with_id(cmd_id, {"type": "error", "msg": msg})).decode()


def _malformed(frame: str, event_type: str, sid: int, variant: int) -> str:
    """A frame a client must reject: cut-off JSON, or the event with a schema-breaking body."""
    if variant == 0:
        return frame[: max(1, len(frame) // 2)]
    return orjson.dumps(
        {"type": event_type, "sid": sid, "msg": {"id": 0, "mock_fault": "malformed"}}
    ).decode()
