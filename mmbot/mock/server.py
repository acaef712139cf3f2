"""The mock Kalshi exchange over real sockets: REST, the ``communications`` WebSocket, faults.

:class:`MockExchange` serves the state machine of :mod:`mmbot.mock.exchange` the way Kalshi
serves its own: REST under ``/trade-api/v2`` (every path of the RFQ-relevant OpenAPI
document, including the deprecated bare quote paths) and the WebSocket at
``/trade-api/ws/v2``. This layer only authenticates, parses, routes and fans out; every
trading rule lives in the exchange. The simulation (markets, requesters) runs in
:mod:`mmbot.mock.driver`. Use it as an async context manager::

    async with MockExchange(MockConfig(time_scale=0.01)) as mock:
        user = mock.register_key("my-key-id", public_key)
        ... KalshiRestClient(mock.rest_url, signer) ...

Authentication
    Exactly as documented: ``KALSHI-ACCESS-KEY``, ``KALSHI-ACCESS-TIMESTAMP`` (ms, within
    ``timestamp_window_seconds`` of now either way) and ``KALSHI-ACCESS-SIGNATURE``, the
    base64 RSA-PSS or Ed25519 signature of ``timestamp + METHOD + path`` (the raw request
    path, ``/trade-api/v2`` included, query excluded). The WebSocket handshake signs
    ``GET /trade-api/ws/v2``. Failures answer 401 with an ErrorResponse saying what was
    wrong. ``GET /markets``, ``GET /markets/{ticker}`` and ``GET /exchange/status`` carry
    no ``security`` in the OpenAPI document and need no signature; the two market
    endpoints document a 401, so credentials sent to them must still be valid. The
    ``clock_skew_seconds`` fault moves the exchange's clock ahead for this check only.

Schema
    Bodies follow the current pages rather than the older merged document alone: markets
    carry ``settlement_bounds_type`` (``default``; ``floor`` markets add
    ``settlement_floor_dollars``) and ``exchange_index`` (combos live on shard 1, every
    other market on shard 0), and once settled ``status: finalized``, ``result``,
    ``settlement_value_dollars`` and ``settlement_ts``; fills and positions carry their
    market's ``exchange_index``; ``GET /exchange/status`` has the per-shard breakdown.
    ``GET /portfolio/fills`` and ``GET /portfolio/positions`` accept ``exchange_index``,
    ``GET /markets`` ``min_settled_ts`` / ``max_settled_ts``. A resting order (the
    remainder of a ``rest_remainder`` quote) adds its contracts to the orderbook.

WebSocket
    Commands ``subscribe``, ``unsubscribe``, ``list_subscriptions`` and
    ``update_subscription`` with the documented error codes. Only the ``communications``
    channel is served; other documented channels answer error 10. RFQ events go to every
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

Control endpoints (for tests and operators)
    Every path under ``/_mock/`` requires ``Authorization: Bearer <control token>``; a
    request without it, or with a wrong token, answers 401 with an ErrorResponse. The token
    is :attr:`MockConfig.control_token`, or a random one generated per instance when that is
    unset; in-process callers read it from :attr:`MockExchange.control_token` (or send
    :attr:`MockExchange.control_headers`), and ``mmbot mock-exchange`` prints it. The server
    listens on 127.0.0.1 unless another ``host`` is given explicitly.

    ``GET /_mock/faults``
        the current :class:`~mmbot.mock.faults.FaultConfig` as JSON.
    ``POST /_mock/faults``
        a JSON object of knobs to change (``{"write_429_fraction": 0.5}``); an unknown
        knob or a bad value answers 400. Answers the resulting configuration. The knobs
        (see :mod:`mmbot.mock.faults` for each): ``write_429_fraction``,
        ``write_5xx_fraction``, ``latency_ms``, ``refuse_handshakes_seconds``,
        ``malformed_fraction``, ``duplicate_fraction``, ``reorder_fraction``,
        ``partial_fill_fraction`` (that share of executions fills half the size, floored
        to whole contracts, at least one), ``fill_listing_delay_seconds`` (fills reach
        ``GET /portfolio/fills`` that much later), ``delete_503_seconds`` (quote DELETEs,
        bare and RFQ-scoped, answer 503 for that long from now), ``clock_skew_seconds``
        (the authentication clock runs that far ahead: past ``timestamp_window_seconds``
        good signatures get 401 "KALSHI-ACCESS-TIMESTAMP is too old"), and
        ``tamper_accept_price_fraction`` / ``tamper_accept_size_fraction`` /
        ``tamper_accept_market_fraction`` (that share of ``quote_accepted`` frames sent to
        the maker shows the accepted side's bid as ``"0.0100"``, nine times the accepted
        size in ``contracts_accepted_fp`` and that side's ``*_contracts_offered_fp``, or
        another market's ticker; the exchange's record is untouched; counted in
        ``stats.tampered_price`` / ``tampered_size`` / ``tampered_market``).
    ``POST /_mock/drop_ws``
        closes every WebSocket connection (clients should reconnect); answers
        ``{"dropped": n}``.
    ``POST /_mock/rfqs``
        a simulated requester creates an RFQ now. Body: ``market_ticker``, one of
        ``contracts_fp`` / ``target_cost_dollars`` (strings), and optionally ``wants``
        (``"yes"`` or ``"no"``, default ``"yes"``), ``reservation`` (highest price per
        contract it will pay, e.g. ``"0.60"``; default: the market's fair value plus a
        premium, followed as the market moves), ``partial_fraction`` (e.g. ``"0.5"``),
        ``rest_remainder``, ``lifetime_seconds`` (default 60) and
        ``decision_delay_seconds`` (default 0.5), both scaled by ``time_scale``. Answers
        201 ``{"id": rfq_id}``; the requester then decides on quotes and deletes the RFQ
        when its lifetime ends, like any simulated requester.
    ``GET /_mock/state``
        counts of users, RFQs, quotes, fills and orders (``orders_by_status``,
        ``resting_orders``), the ``settled_markets``, server and driver counters, and the
        fault configuration with how long handshakes and quote deletes are still refused.
    ``POST /_mock/settle``
        ``{"market_ticker": T, "result": "yes" | "no"}`` settles the market (see
        :meth:`MockExchange.settle`): its status becomes ``finalized`` with ``result`` set,
        open RFQs on it close (``rfq_deleted``), pending quotes and resting orders on it are
        cancelled, and every position pays $1 per winning contract into its owner's
        balance, booking the realised P&L and leaving the position at zero (still listed,
        as ``GET /portfolio/positions`` documents no settlement filter; ``count_filter=
        position`` drops it). Settling twice, or an unknown market or result, answers 400.
        Answers ``{"market": <Market>, "positions_settled": n}``.
    ``POST /_mock/frames``
        sends the body, a JSON object, as one raw frame to every ``communications``
        subscription, or only to the connections of the user whose ``user_id`` is given in
        the body's ``to_user_id`` (removed before sending; an unknown one answers 400). The
        subscription's ``sid`` is filled in when the frame has none; nothing else is added
        (not even ``sending_ts_ms``) and no fault applies. Answers ``{"sent": n}``.
    ``GET /_mock/rate_limit``, ``POST /_mock/rate_limit``
        the per-user write token bucket: ``{"write_tokens_per_second": R,
        "write_bucket_capacity": C}`` (0 turns it off, the default) and the 429s it answered
        per user. Costs are Kalshi's: creating or deleting a quote takes 2 tokens, every other
        write 10; a write the bucket cannot pay for is answered 429.
    ``POST /_mock/bench/start``, ``POST /_mock/bench/stop``, ``POST /_mock/bench/reset``,
    ``GET /_mock/bench``
        the benchmark: start a fixed-rate RFQ source (body: ``rate``, optional
        ``accept_fraction``, ``lifetime_seconds``, ``seed``, ``keep_samples``), stop it
        emitting (open RFQs still expire on schedule), clear the samples
        and counters (after a warm-up), and fetch them. See :class:`BenchProbe`.

Benchmark timing
    While the probe is enabled the server stamps, with ``time.perf_counter_ns()`` on its
    own clock: each ``rfq_created`` and ``quote_accepted`` frame as it is handed to a
    maker's socket, and each create-quote and confirm request as it enters the server
    (before authentication). The first successful quote per RFQ and the confirm of each
    accepted quote are paired with their frame; the differences are the samples.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import itertools
import math
import random
import secrets
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import orjson
import structlog
from aiohttp import WSMsgType, web

from mmbot.kalshi.auth import (
    ACCESS_KEY_HEADER,
    ACCESS_SIGNATURE_HEADER,
    ACCESS_TIMESTAMP_HEADER,
    PublicKey,
    signing_message,
    verify_signature,
)
from mmbot.mock.driver import BenchPlan, BenchSource, SimulationDriver, rfq_body
from mmbot.mock.exchange import (
    Exchange,
    ExchangeEvent,
    MockApiError,
    User,
    market_status_matches,
    market_wire,
    paginate,
    parse_count,
    parse_dollars,
    wire_count,
    wire_dollars,
)
from mmbot.mock.faults import FaultConfig, FaultConfigError, Faults
from mmbot.mock.sim import RfqPlan, generate_markets, grid_prices, reservation_from

__all__ = [
    "CONTROL_PREFIX",
    "DOCUMENTED_CHANNELS",
    "REST_PREFIX",
    "WS_PATH",
    "MockConfig",
    "MockExchange",
    "MockStats",
    "shard_of",
]

_AUTH_HEADERS = (ACCESS_KEY_HEADER, ACCESS_TIMESTAMP_HEADER, ACCESS_SIGNATURE_HEADER)
log = structlog.get_logger("mmbot.mock")

REST_PREFIX: Final = "/trade-api/v2"
WS_PATH: Final = "/trade-api/ws/v2"
CONTROL_PREFIX: Final = "/_mock"
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
_WRITE_METHODS: Final = frozenset({"POST", "PUT", "DELETE"})
_MAX_SHARD_FACTOR: Final = 100
_MAX_ORDERBOOK_DEPTH: Final = 100
_MAX_MARKETS_LIMIT: Final = 1000
_DEFAULT_MARKETS_LIMIT: Final = 100
# A held-back (reordered) event goes out after this long if no later event pushes it out.
_REORDER_HOLD_SECONDS: Final = 0.05
# How long a closing handshake may take before the socket is simply dropped.
_CLOSE_TIMEOUT_SECONDS: Final = 1.0
_RATE_LIMITED_BODY: Final = b'{"error": "too many requests"}'
_HEARTBEAT: Final = b"heartbeat"
_MAX_WS_FRAME_BYTES: Final = 1 << 20
# When a request entered the server (perf_counter_ns), for the benchmark probe.
_RECEIVED_NS: Final = web.RequestKey("mmbot_received_ns", int)


def shard_of(rfq_id: str, shard_factor: int) -> int:
    """The shard key whose subscription receives the events of ``rfq_id``."""
    return zlib.crc32(rfq_id.encode()) % shard_factor


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class MockConfig:
    """How to run the mock exchange; the defaults suit tests (no simulated RFQ flow)."""

    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 0
    markets: int = 20
    #: RFQs per second from the simulated requesters; 0 disables the arrival stream.
    rfq_rate: float = 0.0
    hvm_fraction: float = 0.2
    #: Multiplies confirmation windows, execution timers, requester lifetimes and delays.
    time_scale: float = 1.0
    ping_interval_seconds: float = 10.0
    #: How far a request's timestamp may be from the server clock, either way.
    timestamp_window_seconds: float = 30.0
    requesters: int = 5
    #: Frames (events, replies, pings) a WebSocket connection may have waiting to be sent.
    ws_queue_frames: int = 1000
    market_step_seconds: float = 1.0
    faults: FaultConfig = field(default_factory=FaultConfig)
    #: Per-user write token bucket refill (tokens/s); 0 turns rate limiting off.
    write_tokens_per_second: float = 0.0
    #: Per-user write bucket size in tokens (defaults to one second of refill when 0).
    write_bucket_capacity: float = 0.0
    #: Bearer token the ``/_mock/`` control endpoints require; None: a random one per
    #: :class:`MockExchange` (read it from :attr:`MockExchange.control_token`).
    control_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        token = self.control_token
        if token is not None and (len(token) < 8 or not all("!" <= c <= "~" for c in token)):
            raise ValueError("control_token must be at least 8 printable ASCII characters")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be within 0..65535, got {self.port}")
        if self.markets < 0:
            raise ValueError("markets cannot be negative")
        if self.requesters < 0:
            raise ValueError("requesters cannot be negative")
        if self.ws_queue_frames < 1:
            raise ValueError("ws_queue_frames must be at least 1")
        if not 0 <= self.hvm_fraction <= 1:
            raise ValueError("hvm_fraction must be within [0, 1]")
        for name in (
            "rfq_rate",
            "market_step_seconds",
            "write_tokens_per_second",
            "write_bucket_capacity",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0")
        for name in ("time_scale", "ping_interval_seconds", "timestamp_window_seconds"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0")


@dataclass(slots=True)
class MockStats:
    """Server-side counters: what was served and which faults were injected."""

    requests: int = 0
    rate_limited_429: int = 0
    auth_failures: int = 0
    internal_errors: int = 0
    injected_429: int = 0
    injected_5xx: int = 0
    injected_503: int = 0
    delayed_responses: int = 0
    injected_latency_ms: float = 0.0
    ws_handshakes: int = 0
    ws_refused: int = 0
    ws_overflows: int = 0
    frames_sent: int = 0
    events_sent: int = 0
    malformed_sent: int = 0
    duplicates_sent: int = 0
    reordered: int = 0
    pings_sent: int = 0
    tampered_price: int = 0
    tampered_size: int = 0
    tampered_market: int = 0
    injected_frames: int = 0

    def to_dict(self) -> dict[str, float]:
        """The counters as a JSON-ready mapping."""
        return asdict(self)


# --------------------------------------------------------------------------- helpers


def _json(status: int, payload: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


def _no_content() -> web.Response:
    return web.Response(status=204)


def _error(status: int, code: str, message: str) -> web.Response:
    return _json(status, MockApiError(status, code, message).body())


def _unauthorized(message: str) -> MockApiError:
    return MockApiError(401, "unauthorized", message)


def _bad_request(message: str, code: str = "invalid_parameters") -> MockApiError:
    return MockApiError(400, code, message)


async def _body(request: web.Request, *, required: bool) -> dict[str, Any]:
    """The request's JSON object body; ``{}`` when empty and not required."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise _bad_request("a JSON request body is required", code="invalid_body")
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad_request("request body is not valid JSON", code="invalid_body") from None
    if not isinstance(data, dict):
        raise _bad_request("request body must be a JSON object", code="invalid_body")
    return data


def _query(request: web.Request) -> dict[str, str]:
    # The first value wins when a parameter repeats, as most HTTP frameworks do.
    out: dict[str, str] = {}
    for key, value in request.query.items():
        out.setdefault(key, value)
    return out


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    if name not in query or query[name] == "":
        return None
    try:
        return int(query[name])
    except ValueError:
        raise _bad_request(f"{name} must be an integer") from None


def _seconds(body: Mapping[str, Any], name: str, default: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad_request(f"{name} must be a number of seconds")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise _bad_request(f"{name} must be a finite number >= 0")
    return seconds


def _with_orders(
    levels: list[tuple[Decimal, Decimal]], orders: list[tuple[Decimal, Decimal]]
) -> list[tuple[Decimal, Decimal]]:
    """Book levels (ascending) with resting orders' contracts added at their prices."""
    book = dict(levels)
    for price, count in orders:
        book[price] = book.get(price, Decimal(0)) + count
    return sorted(book.items())


def _is_control(path: str) -> bool:
    # Also matches "/_mock" itself and any unrouted path below it: nothing under the prefix
    # answers (not even 404) without the token.
    return path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


#: Tokens a quote create or delete costs, per Kalshi's endpoint documentation.
QUOTE_WRITE_COST: Final = 2
#: Tokens every other write costs.
DEFAULT_WRITE_COST: Final = 10


def write_cost(method: str, path: str) -> int:
    """Tokens a write to ``path`` (under the REST prefix) costs."""
    tail = path.removeprefix(REST_PREFIX)
    if method == "POST" and tail == "/communications/quotes":
        return QUOTE_WRITE_COST
    if method == "DELETE" and "/quotes/" in tail:
        return QUOTE_WRITE_COST
    return DEFAULT_WRITE_COST


class TokenBucket:
    """A token bucket refilled continuously on the monotonic clock."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = time.monotonic()

    def take(self, cost: float, now: float | None = None) -> bool:
        """Spend ``cost`` tokens if the bucket holds them; False (nothing spent) otherwise."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


# Unmatched frame stamps kept at most; the oldest go first (RFQs nobody quoted).
_MAX_PENDING_STAMPS: Final = 200_000


class BenchProbe:
    """Benchmark timestamps on the exchange's clock: O(1) work per event.

    ``rfq_to_quote_ns`` holds, per RFQ, the time from its ``rfq_created`` frame being
    handed to the maker's socket to the first create-quote request for it that the
    exchange accepted entering the server; ``accept_to_confirm_ns`` the same from a
    ``quote_accepted`` frame to its confirm request.
    """

    def __init__(self) -> None:
        self.enabled = False
        #: When false, frames and requests are still paired (and counted) but no samples kept.
        self.keep_samples = True
        self._rfq_sent: dict[str, int] = {}
        self._accept_sent: dict[str, int] = {}
        self.rfq_to_quote_ns: list[int] = []
        self.accept_to_confirm_ns: list[int] = []
        self.rfq_frames = 0
        self.accept_frames = 0
        self.quotes_matched = 0
        self.confirms_matched = 0

    def reset(self) -> None:
        """Forget every stamp and sample (the start of a measured window)."""
        self._rfq_sent.clear()
        self._accept_sent.clear()
        self.rfq_to_quote_ns = []
        self.accept_to_confirm_ns = []
        self.rfq_frames = self.accept_frames = 0
        self.quotes_matched = self.confirms_matched = 0

    def frame_sent(self, kind: str, key: str) -> None:
        """Stamp an event frame handed to a maker's socket (first stamp per key wins)."""
        now = time.perf_counter_ns()
        if kind == "rfq_created":
            pending = self._rfq_sent
            self.rfq_frames += 1
        else:
            pending = self._accept_sent
            self.accept_frames += 1
        if key in pending:
            return
        pending[key] = now
        if len(pending) > _MAX_PENDING_STAMPS:
            del pending[next(iter(pending))]

    def quote_received(self, rfq_id: str, received_ns: int) -> None:
        """Pair an accepted create-quote request with its RFQ's frame (first quote only)."""
        sent = self._rfq_sent.pop(rfq_id, None)
        if sent is None:
            return
        self.quotes_matched += 1
        if self.keep_samples:
            self.rfq_to_quote_ns.append(received_ns - sent)

    def confirm_received(self, quote_id: str, received_ns: int) -> None:
        """Pair an accepted confirm request with its ``quote_accepted`` frame."""
        sent = self._accept_sent.pop(quote_id, None)
        if sent is None:
            return
        self.confirms_matched += 1
        if self.keep_samples:
            self.accept_to_confirm_ns.append(received_ns - sent)

    def snapshot(self) -> dict[str, Any]:
        """Samples and counters as JSON-ready data."""
        return {
            "enabled": self.enabled,
            "rfq_frames": self.rfq_frames,
            "accept_frames": self.accept_frames,
            "quotes_matched": self.quotes_matched,
            "confirms_matched": self.confirms_matched,
            "rfq_to_quote_ns": self.rfq_to_quote_ns,
            "accept_to_confirm_ns": self.accept_to_confirm_ns,
        }


class _Timer:
    """A cancellable exchange timer that forgets itself once it has run or been cancelled."""

    __slots__ = ("_callback", "_handle", "_owner")

    def __init__(
        self, owner: _TrackingScheduler, delay: float, callback: Callable[[], None]
    ) -> None:
        self._owner = owner
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            delay, self._run
        )

    def _run(self) -> None:
        self._handle = None
        self._owner.forget(self)
        self._callback()

    def cancel(self) -> None:
        """Cancel the callback if it has not run."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._owner.forget(self)


class _TrackingScheduler:
    """The running loop as the exchange's scheduler, remembering timers to cancel at shutdown."""

    def __init__(self) -> None:
        self._timers: set[_Timer] = set()

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        """Run ``callback`` after ``delay`` seconds on the running loop."""
        timer = _Timer(self, delay, callback)
        self._timers.add(timer)
        return timer

    def forget(self, timer: _Timer) -> None:
        """Drop a timer that has run or been cancelled."""
        self._timers.discard(timer)

    def cancel_all(self) -> None:
        """Cancel every pending timer."""
        for timer in list(self._timers):
            timer.cancel()

    def __len__(self) -> int:
        return len(self._timers)


# --------------------------------------------------------------------------- WebSocket


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
    """Queue item: a text frame sent exactly as given (no ``sending_ts_ms`` is added)."""

    text: str


_PING: Final = _Ping()
# What a connection's writer sends: a text frame, a ping, or the closing handshake.
_Item = str | _Timed | _Raw | _Ping | _Close
_RFQ_EVENTS: Final = frozenset({"rfq_created", "rfq_deleted"})
# What the accepted side's bid becomes in a price-tampered quote_accepted frame.
_TAMPERED_PRICE: Final = "0.0100"
# How many times the real size a size-tampered quote_accepted frame claims.
_TAMPERED_SIZE_FACTOR: Final = Decimal(9)


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


class _Connection:
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
            _CLOSE_TIMEOUT_SECONDS * 2, self.abort
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
                        _CLOSE_TIMEOUT_SECONDS,
                    )
                    return
                elif isinstance(item, _Timed):
                    self.server.bench.frame_sent(item.kind, item.key)
                    await self.ws.send_str(_stamped(item.text))
                    self.server.stats.frames_sent += 1
                elif isinstance(item, _Raw):
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
                self._update(params)
            else:
                raise _CommandError(5, f"unknown command {cmd[:40]!r}")
        except _CommandError as exc:
            self._put(_error_frame(cmd_id, exc.code, exc.text))

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
            if channel != COMMUNICATIONS:
                raise _CommandError(10, f"channel {channel} not supported by the mock")
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
        for sid in sids:
            if sid not in self.subscriptions:
                raise _CommandError(7, f"unknown subscription id {sid}")
        for sid in dict.fromkeys(sids):
            sub = self.subscriptions.pop(sid)
            self.reply(_with_id(cmd_id, {"sid": sid, "seq": sub.sent + 1, "type": "unsubscribed"}))

    def _list(self, cmd_id: int | None) -> None:
        listed = [{"channel": COMMUNICATIONS, "sid": sid} for sid in self.subscriptions]
        self.reply(_with_id(cmd_id, {"type": "ok", "msg": listed}))

    def _update(self, params: dict[str, Any] | None) -> None:
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
            await asyncio.wait_for(
                self.ws.close(code=code, message=message), _CLOSE_TIMEOUT_SECONDS
            )
        except Exception:
            self.abort()

    async def stop_tasks(self) -> None:
        """Stop the writer and pinger and every pending timer of this connection."""
        self.closing = True
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


def _error_frame(cmd_id: int | None, code: int, text: str) -> str:
    return orjson.dumps(
        _with_id(cmd_id, {"type": "error", "msg": {"code": code, "msg": text}})
    ).decode()


def _malformed(frame: str, event_type: str, sid: int, variant: int) -> str:
    """A frame a client must reject: cut-off JSON, or the event with a schema-breaking body."""
    if variant == 0:
        return frame[: max(1, len(frame) // 2)]
    return orjson.dumps(
        {"type": event_type, "sid": sid, "msg": {"id": 0, "mock_fault": "malformed"}}
    ).decode()


# --------------------------------------------------------------------------- the server


Endpoint = Callable[[web.Request], Awaitable[web.StreamResponse]]
AuthedHandler = Callable[[web.Request, User], Awaitable[web.StreamResponse]]


class MockExchange:
    """A Kalshi-compatible exchange on loopback sockets, with a simulated RFQ flow."""

    def __init__(self, config: MockConfig | None = None) -> None:
        self.config = config or MockConfig()
        self.stats = MockStats()
        self.faults = Faults(self.config.faults, seed=self.config.seed)
        self._scheduler = _TrackingScheduler()
        markets = generate_markets(
            self.config.markets,
            random.Random(self.config.seed),  # noqa: S311 - simulation, not security
            hvm_fraction=self.config.hvm_fraction,
            now=datetime.now(UTC),
        )
        self._exchange = Exchange(
            markets,
            scheduler=self._scheduler,
            time_scale=self.config.time_scale,
            seed=self.config.seed,
        )
        # Listing order is generation order: the first market carries the highest sequence
        # number because paginate() pages newest (highest) first.
        self._market_seq = {m.ticker: len(markets) - i for i, m in enumerate(markets)}
        requesters = [
            self._exchange.add_user(simulated=True) for _ in range(self.config.requesters)
        ]
        self.driver = SimulationDriver(
            self._exchange,
            requesters,
            seed=self.config.seed,
            rfq_rate=self.config.rfq_rate,
            step_interval_seconds=self.config.market_step_seconds,
        )
        self._keys: dict[str, tuple[PublicKey, User]] = {}
        self._connections: set[_Connection] = set()
        self.bench = BenchProbe()
        self.bench_source: BenchSource | None = None
        self._write_rate = self.config.write_tokens_per_second
        self._write_capacity = self.config.write_bucket_capacity or self._write_rate
        self._buckets: dict[str, TokenBucket] = {}
        #: 429s the write bucket answered, per user (API key id, else user id).
        self.rate_limited_by_user: dict[str, int] = {}
        self._control_token = self.config.control_token or secrets.token_urlsafe(24)
        self._control_secret = self._control_token.encode()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._closing = False
        self._exchange.listeners.append(self._broadcast)
        self._exchange.partial_fill = self.faults.partial_fill
        self._exchange.fill_listing_delay = self.faults.fill_listing_delay

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> MockExchange:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> MockExchange:
        """Bind the socket, start serving and start the simulation."""
        if self._runner is not None or self._closing:
            raise RuntimeError("a mock exchange can be started once")
        app = web.Application(middlewares=[self._middleware], client_max_size=1 << 20)
        self._add_routes(app)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self._port = int(address[1])
        self.driver.start()
        log.info("mock_exchange_started", rest_url=self.rest_url, ws_url=self.ws_url)
        return self

    async def close(self) -> None:
        """Stop the simulation, close every WebSocket and the listening socket; idempotent."""
        runner, self._runner = self._runner, None
        self._closing = True
        if self.bench_source is not None:
            self.bench_source.stop()
            self.bench_source = None
        await self.driver.stop()
        await self.drop_ws(code=1001, message=b"mock exchange shutting down")
        if runner is not None:
            await runner.cleanup()
        self._scheduler.cancel_all()
        if runner is not None:
            log.info("mock_exchange_stopped")

    # ------------------------------------------------------------------ public API

    @property
    def exchange(self) -> Exchange:
        """The state machine behind the server."""
        return self._exchange

    @property
    def port(self) -> int:
        """The port the server listens on (known once started)."""
        if self._port is None:
            raise RuntimeError("the mock exchange is not running")
        return self._port

    @property
    def rest_url(self) -> str:
        """Base URL of the REST API, e.g. ``http://127.0.0.1:PORT/trade-api/v2``."""
        return f"http://{_url_host(self.config.host)}:{self.port}{REST_PREFIX}"

    @property
    def ws_url(self) -> str:
        """URL of the WebSocket API, e.g. ``ws://127.0.0.1:PORT/trade-api/ws/v2``."""
        return f"ws://{_url_host(self.config.host)}:{self.port}{WS_PATH}"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``: the root the control endpoints live under."""
        return f"http://{_url_host(self.config.host)}:{self.port}"

    @property
    def control_token(self) -> str:
        """The bearer token every ``/_mock/`` control endpoint requires."""
        return self._control_token

    @property
    def control_headers(self) -> dict[str, str]:
        """Headers that authorize a request to the control endpoints."""
        return {"Authorization": f"Bearer {self._control_token}"}

    @property
    def ws_connection_count(self) -> int:
        """WebSocket connections currently open."""
        return len(self._connections)

    def register_key(self, key_id: str, public_key: PublicKey) -> User:
        """Accept requests signed by ``key_id``; each key is its own account (and comms id)."""
        if not key_id:
            raise ValueError("key id must not be empty")
        existing = self._keys.get(key_id)
        user = existing[1] if existing is not None else self._exchange.add_user(key_id=key_id)
        self._keys[key_id] = (public_key, user)
        return user

    async def drop_ws(
        self, *, code: int = 1012, message: bytes = b"mock: connection dropped"
    ) -> int:
        """Close every WebSocket connection from the server side; return how many."""
        connections = list(self._connections)
        self._connections.clear()
        if connections:
            await asyncio.gather(*(c.close(code, message) for c in connections))
        return len(connections)

    def settle(self, ticker: str, result: str) -> dict[str, Any]:
        """Settle a market as ``result`` ("yes"/"no"); see :meth:`Exchange.settle_market`."""
        paid = self._exchange.settle_market(ticker, result)
        market = self._exchange.markets[ticker]
        log.info("mock_market_settled", market=ticker, result=result, positions=len(paid))
        return {
            "market": market_wire(market, self._exchange.clock()),
            "positions_settled": len(paid),
        }

    def inject_frame(self, frame: Mapping[str, Any], user: User | None = None) -> int:
        """Send ``frame`` as given to every communications subscription (or ``user``'s only).

        The subscription's ``sid`` is filled in when the frame has none; nothing else is
        added or checked, so tests can hand clients hostile frames. Returns frames queued.
        """
        sent = 0
        for conn in list(self._connections):
            if user is None or conn.user is user:
                sent += conn.send_raw(dict(frame))
        self.stats.injected_frames += sent
        return sent

    def tamper_acceptance(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Apply the ``tamper_accept_*`` faults to a ``quote_accepted`` msg bound for its maker.

        Only the copy on the wire changes; the exchange's record of the quote stays true.
        """
        config = self.faults.config
        side = msg.get("accepted_side")
        out = msg
        if side in ("yes", "no") and self.faults.draw(config.tamper_accept_price_fraction):
            out = {**out, f"{side}_bid_dollars": _TAMPERED_PRICE}
            self.stats.tampered_price += 1
        accepted = msg.get("contracts_accepted_fp")
        if (
            side in ("yes", "no")
            and isinstance(accepted, str)
            and self.faults.draw(config.tamper_accept_size_fraction)
        ):
            forged = wire_count(Decimal(accepted) * _TAMPERED_SIZE_FACTOR)
            out = {**out, "contracts_accepted_fp": forged, f"{side}_contracts_offered_fp": forged}
            self.stats.tampered_size += 1
        if self.faults.draw(config.tamper_accept_market_fraction):
            others = [t for t in self._exchange.markets if t != msg.get("market_ticker")]
            if others:
                out = {**out, "market_ticker": others[self.faults.choose(len(others))]}
                self.stats.tampered_market += 1
        return out

    def state(self) -> dict[str, Any]:
        """Counts and counters, as ``GET /_mock/state`` reports them."""
        ex = self._exchange
        by_status: dict[str, int] = {}
        for quote in ex.quotes.values():
            by_status[quote.status] = by_status.get(quote.status, 0) + 1
        orders_by_status: dict[str, int] = {}
        for order in ex.orders.values():
            orders_by_status[order.status] = orders_by_status.get(order.status, 0) + 1
        return {
            "users": len(ex.users),
            "registered_users": len(self._keys),
            "simulated_requesters": len(self.driver.requesters),
            "markets": len(ex.markets),
            "rfqs": len(ex.rfqs),
            "open_rfqs": sum(1 for r in ex.rfqs.values() if r.status == "open"),
            "quotes": len(ex.quotes),
            "quotes_by_status": by_status,
            "fills": len(ex.fills),
            "orders": len(ex.orders),
            "orders_by_status": orders_by_status,
            "resting_orders": orders_by_status.get("resting", 0),
            "settled_markets": sorted(t for t, m in ex.markets.items() if m.settled),
            "ws_connections": len(self._connections),
            "pending_timers": len(self._scheduler),
            "faults": self.faults.config.to_dict(),
            "refusing_handshakes_for_seconds": round(self.faults.refusal_remaining_seconds(), 3),
            "refusing_quote_deletes_for_seconds": round(
                self.faults.delete_503_remaining_seconds(), 3
            ),
            "stats": self.stats.to_dict(),
            "driver": self.driver.stats.to_dict(),
            "rate_limit": self.rate_limit_state(),
        }

    # ------------------------------------------------------------------ HTTP plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Endpoint) -> web.StreamResponse:
        # First thing on entry, before authentication: the benchmark's "request received".
        request[_RECEIVED_NS] = time.perf_counter_ns()
        is_rest = request.path.startswith(REST_PREFIX + "/") or request.path == REST_PREFIX
        if not is_rest and _is_control(request.path) and not self._control_authorized(request):
            response = _error(
                401,
                "unauthorized",
                "control endpoints require the header Authorization: Bearer <control token>",
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="mock control"'
            return response
        try:
            if is_rest:
                self.stats.requests += 1
                latency_ms = self.faults.config.latency_ms
                if latency_ms > 0:
                    self.stats.delayed_responses += 1
                    self.stats.injected_latency_ms += latency_ms
                    await asyncio.sleep(latency_ms / 1000)
            return await handler(request)
        except MockApiError as exc:
            if exc.status == 401:
                self.stats.auth_failures += 1
            return _json(exc.status, exc.body())
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if exc.status == 404:
                return _error(404, "not_found", f"no such path: {request.path[:200]}")
            if exc.status == 405:
                return _error(405, "method_not_allowed", f"{request.method} is not allowed here")
            return _error(exc.status, "http_error", exc.reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.internal_errors += 1
            log.exception("mock_request_failed", method=request.method, path=request.path)
            return _error(500, "internal_error", f"internal error ({type(exc).__name__})")

    def _control_authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        given = token.strip().encode("utf-8", "replace")
        # compare_digest on every request, so the time taken says nothing about the token.
        matches = hmac.compare_digest(given, self._control_secret)
        return matches and scheme.lower() == "bearer"

    def _authenticate(self, request: web.Request) -> User:
        headers = request.headers
        missing = [name for name in _AUTH_HEADERS if not headers.get(name)]
        if missing:
            raise _unauthorized(f"missing {', '.join(missing)} header(s)")
        entry = self._keys.get(headers[ACCESS_KEY_HEADER])
        if entry is None:
            raise _unauthorized("unknown API key id (KALSHI-ACCESS-KEY)")
        public_key, user = entry
        timestamp = headers[ACCESS_TIMESTAMP_HEADER]
        if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 18:
            raise _unauthorized(
                "KALSHI-ACCESS-TIMESTAMP must be the request time in milliseconds since the epoch"
            )
        # The clock_skew_seconds fault moves the exchange's clock ahead of everyone's.
        exchange_ms = time.time_ns() // 1_000_000 + round(
            self.faults.config.clock_skew_seconds * 1000
        )
        skew_ms = int(timestamp) - exchange_ms
        window_ms = self.config.timestamp_window_seconds * 1000
        if skew_ms < -window_ms:
            raise _unauthorized(
                f"KALSHI-ACCESS-TIMESTAMP is too old: {-skew_ms / 1000:.1f}s behind the "
                f"exchange clock (allowed: {self.config.timestamp_window_seconds:g}s)"
            )
        if skew_ms > window_ms:
            raise _unauthorized(
                f"KALSHI-ACCESS-TIMESTAMP is in the future: {skew_ms / 1000:.1f}s ahead of the "
                f"exchange clock (allowed: {self.config.timestamp_window_seconds:g}s)"
            )
        path = request.raw_path.split("?", 1)[0]
        message = signing_message(timestamp, request.method, path)
        if not verify_signature(public_key, headers[ACCESS_SIGNATURE_HEADER], message):
            raise _unauthorized(
                f"invalid KALSHI-ACCESS-SIGNATURE: it does not verify for "
                f"timestamp + {request.method} + {path[:200]} with this key"
            )
        return user

    def _optionally_authed(self, handler: Endpoint) -> Endpoint:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            if any(request.headers.get(name) for name in _AUTH_HEADERS):
                self._authenticate(request)
            return await handler(request)

        return endpoint

    def _authed(self, handler: AuthedHandler) -> Endpoint:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            user = self._authenticate(request)
            if (
                request.method == "DELETE"
                and "/quotes/" in request.path
                and self.faults.refusing_quote_deletes()
            ):
                self.stats.injected_503 += 1
                return _error(
                    503, "service_unavailable", "quote deletes are unavailable (mock fault)"
                )
            if request.method in _WRITE_METHODS:
                if self._write_rate > 0 and not self._take_write(user, request):
                    return web.Response(
                        status=429, body=_RATE_LIMITED_BODY, content_type="application/json"
                    )
                fault = self.faults.write_fault()
                if fault == 429:
                    self.stats.injected_429 += 1
                    return web.Response(
                        status=429, body=_RATE_LIMITED_BODY, content_type="application/json"
                    )
                if fault == 500:
                    self.stats.injected_5xx += 1
                    return _error(500, "internal_error", "injected failure (mock fault)")
            return await handler(request, user)

        return endpoint

    def _add_routes(self, app: web.Application) -> None:
        authed: list[tuple[str, str, AuthedHandler]] = [
            ("GET", "/communications/id", self._communications_id),
            ("GET", "/communications/rfqs", self._list_rfqs),
            ("POST", "/communications/rfqs", self._create_rfq),
            ("GET", "/communications/rfqs/{rfq_id}", self._get_rfq),
            ("DELETE", "/communications/rfqs/{rfq_id}", self._delete_rfq),
            ("GET", "/communications/quotes", self._list_quotes),
            ("POST", "/communications/quotes", self._create_quote),
            ("GET", "/communications/quotes/{quote_id}", self._get_quote),
            ("DELETE", "/communications/quotes/{quote_id}", self._delete_quote),
            ("PUT", "/communications/quotes/{quote_id}/accept", self._accept_quote),
            ("PUT", "/communications/quotes/{quote_id}/confirm", self._confirm_quote),
            ("GET", "/communications/rfqs/{rfq_id}/quotes/{quote_id}", self._get_quote),
            ("DELETE", "/communications/rfqs/{rfq_id}/quotes/{quote_id}", self._delete_quote),
            ("PUT", "/communications/rfqs/{rfq_id}/quotes/{quote_id}/accept", self._accept_quote),
            ("PUT", "/communications/rfqs/{rfq_id}/quotes/{quote_id}/confirm", self._confirm_quote),
            ("GET", "/markets/{ticker}/orderbook", self._orderbook),
            ("GET", "/portfolio/positions", self._positions),
            ("GET", "/portfolio/fills", self._fills),
            ("GET", "/portfolio/balance", self._balance),
        ]
        public: list[tuple[str, str, Endpoint]] = [
            # The market endpoints document a 401: credentials are optional there, but
            # credentials that are sent must be valid.
            ("GET", "/markets", self._optionally_authed(self._list_markets)),
            ("GET", "/markets/{ticker}", self._optionally_authed(self._get_market)),
            ("GET", "/exchange/status", self._exchange_status),
        ]
        router = app.router
        for method, path, authed_handler in authed:
            router.add_route(method, REST_PREFIX + path, self._authed(authed_handler))
        for method, path, handler in public:
            router.add_route(method, REST_PREFIX + path, handler)
        router.add_route("GET", WS_PATH, self._websocket)
        router.add_route("GET", CONTROL_PREFIX + "/faults", self._control_get_faults)
        router.add_route("POST", CONTROL_PREFIX + "/faults", self._control_set_faults)
        router.add_route("POST", CONTROL_PREFIX + "/drop_ws", self._control_drop_ws)
        router.add_route("POST", CONTROL_PREFIX + "/rfqs", self._control_create_rfq)
        router.add_route("GET", CONTROL_PREFIX + "/state", self._control_state)
        router.add_route("POST", CONTROL_PREFIX + "/settle", self._control_settle)
        router.add_route("POST", CONTROL_PREFIX + "/frames", self._control_frames)
        router.add_route("GET", CONTROL_PREFIX + "/rate_limit", self._control_get_rate_limit)
        router.add_route("POST", CONTROL_PREFIX + "/rate_limit", self._control_set_rate_limit)
        router.add_route("GET", CONTROL_PREFIX + "/bench", self._control_bench)
        router.add_route("POST", CONTROL_PREFIX + "/bench/start", self._control_bench_start)
        router.add_route("POST", CONTROL_PREFIX + "/bench/stop", self._control_bench_stop)
        router.add_route("POST", CONTROL_PREFIX + "/bench/reset", self._control_bench_reset)

    # ------------------------------------------------------------------ communications

    async def _communications_id(self, request: web.Request, user: User) -> web.Response:
        return _json(200, {"communications_id": user.communications_id})

    async def _list_rfqs(self, request: web.Request, user: User) -> web.Response:
        items, cursor = self._exchange.list_rfqs(user, _query(request))
        return _json(200, {"rfqs": [r.wire(user) for r in items], "cursor": cursor})

    async def _create_rfq(self, request: web.Request, user: User) -> web.Response:
        body = await _body(request, required=True)
        rfq = self._exchange.create_rfq(user, body)
        return _json(201, {"id": rfq.id})

    async def _get_rfq(self, request: web.Request, user: User) -> web.Response:
        rfq = self._exchange.rfq(request.match_info["rfq_id"])
        return _json(200, {"rfq": rfq.wire(user)})

    async def _delete_rfq(self, request: web.Request, user: User) -> web.Response:
        self._exchange.delete_rfq(user, request.match_info["rfq_id"])
        return _no_content()

    async def _list_quotes(self, request: web.Request, user: User) -> web.Response:
        items, cursor = self._exchange.list_quotes(user, _query(request))
        return _json(200, {"quotes": [q.wire(user) for q in items], "cursor": cursor})

    async def _create_quote(self, request: web.Request, user: User) -> web.Response:
        body = await _body(request, required=True)
        quote = self._exchange.create_quote(user, body)
        if self.bench.enabled:
            self.bench.quote_received(quote.rfq.id, request[_RECEIVED_NS])
        return _json(201, {"id": quote.id})

    async def _get_quote(self, request: web.Request, user: User) -> web.Response:
        info = request.match_info
        quote = self._exchange.quote(user, info["quote_id"], info.get("rfq_id"))
        return _json(200, {"quote": quote.wire(user)})

    async def _delete_quote(self, request: web.Request, user: User) -> web.Response:
        info = request.match_info
        self._exchange.delete_quote(user, info["quote_id"], info.get("rfq_id"))
        return _no_content()

    async def _accept_quote(self, request: web.Request, user: User) -> web.Response:
        body = await _body(request, required=True)
        info = request.match_info
        self._exchange.accept_quote(user, info["quote_id"], body, rfq_id=info.get("rfq_id"))
        return _no_content()

    async def _confirm_quote(self, request: web.Request, user: User) -> web.Response:
        # The body is optional (an EmptyResponse object) but must be JSON when present.
        await _body(request, required=False)
        info = request.match_info
        quote = self._exchange.confirm_quote(user, info["quote_id"], info.get("rfq_id"))
        if self.bench.enabled:
            self.bench.confirm_received(quote.id, request[_RECEIVED_NS])
        return _no_content()

    # ------------------------------------------------------------------ markets

    async def _list_markets(self, request: web.Request) -> web.Response:
        query = _query(request)
        limit = _int_param(query, "limit")
        if limit is not None and not 0 <= limit <= _MAX_MARKETS_LIMIT:
            raise _bad_request(f"limit must be between 0 and {_MAX_MARKETS_LIMIT}")
        now = self._exchange.clock()
        items = list(self._exchange.markets.values())
        if status := query.get("status"):
            items = [m for m in items if market_status_matches(m, status, now)]
        if event := query.get("event_ticker"):
            items = [m for m in items if m.event_ticker == event]
        if series := query.get("series_ticker"):
            items = [m for m in items if m.series_ticker == series]
        if tickers := query.get("tickers"):
            wanted = {t.strip() for t in tickers.split(",") if t.strip()}
            items = [m for m in items if m.ticker in wanted]
        if mve := query.get("mve_filter"):
            if mve not in ("only", "exclude"):
                raise _bad_request("mve_filter must be 'only' or 'exclude'")
            items = [m for m in items if (m.mve_collection_ticker is not None) == (mve == "only")]
        min_close = _int_param(query, "min_close_ts")
        if min_close is not None:
            items = [m for m in items if m.close_time.timestamp() > min_close]
        max_close = _int_param(query, "max_close_ts")
        if max_close is not None:
            items = [m for m in items if m.close_time.timestamp() < max_close]
        min_settled = _int_param(query, "min_settled_ts")
        if min_settled is not None:
            items = [
                m for m in items if m.settled_time and m.settled_time.timestamp() > min_settled
            ]
        max_settled = _int_param(query, "max_settled_ts")
        if max_settled is not None:
            items = [
                m for m in items if m.settled_time and m.settled_time.timestamp() < max_settled
            ]
        page, cursor = paginate(
            items,
            lambda m: self._market_seq[m.ticker],
            limit=limit or _DEFAULT_MARKETS_LIMIT,
            cursor=query.get("cursor"),
        )
        return _json(200, {"markets": [market_wire(m, now) for m in page], "cursor": cursor})

    async def _get_market(self, request: web.Request) -> web.Response:
        market = self._exchange.market(request.match_info["ticker"])
        return _json(200, {"market": market_wire(market, self._exchange.clock())})

    async def _orderbook(self, request: web.Request, user: User) -> web.Response:
        market = self._exchange.market(request.match_info["ticker"])
        depth = _int_param(_query(request), "depth") or 0
        if depth > _MAX_ORDERBOOK_DEPTH:
            raise _bad_request(f"depth must be between 0 and {_MAX_ORDERBOOK_DEPTH}")
        # The whole book from a generator seeded by the market's state, then cut to depth:
        # the same book, whatever the depth asked, until the fair value moves.
        rng = random.Random(  # noqa: S311 - simulation, not security
            f"mmbot-mock-book:{self.config.seed}:{market.ticker}:{market.fair_micros}"
        )
        yes, no = market.orderbook(len(grid_prices(market.grid)), rng)
        resting = self._exchange.resting_orders(market)
        if resting:
            yes = _with_orders(yes, [(o.price, o.remaining) for o in resting if o.side == "yes"])
            no = _with_orders(no, [(o.price, o.remaining) for o in resting if o.side == "no"])
        if depth > 0:
            yes, no = yes[-depth:], no[-depth:]

        def rows(levels: list[tuple[Decimal, Decimal]]) -> list[list[str]]:
            return [[wire_dollars(price), wire_count(count)] for price, count in levels]

        return _json(200, {"orderbook_fp": {"yes_dollars": rows(yes), "no_dollars": rows(no)}})

    # ------------------------------------------------------------------ portfolio and status

    async def _positions(self, request: web.Request, user: User) -> web.Response:
        positions, events, cursor = self._exchange.list_positions(user, _query(request))
        return _json(
            200,
            {
                "market_positions": [p.wire() for p in positions],
                "event_positions": events,
                "cursor": cursor,
            },
        )

    async def _fills(self, request: web.Request, user: User) -> web.Response:
        fills, cursor = self._exchange.list_fills(user, _query(request))
        return _json(200, {"fills": [f.wire() for f in fills], "cursor": cursor})

    async def _balance(self, request: web.Request, user: User) -> web.Response:
        return _json(200, self._exchange.balance_wire(user))

    async def _exchange_status(self, request: web.Request) -> web.Response:
        return _json(200, self._exchange.status_wire())

    # ------------------------------------------------------------------ control endpoints

    async def _control_get_faults(self, request: web.Request) -> web.Response:
        return _json(200, self.faults.config.to_dict())

    async def _control_set_faults(self, request: web.Request) -> web.Response:
        body = await _body(request, required=True)
        try:
            config = self.faults.update(body)
        except FaultConfigError as exc:
            raise _bad_request(str(exc), code="invalid_fault") from None
        log.info("mock_faults_changed", **config.to_dict())
        return _json(200, config.to_dict())

    async def _control_drop_ws(self, request: web.Request) -> web.Response:
        return _json(200, {"dropped": await self.drop_ws()})

    async def _control_state(self, request: web.Request) -> web.Response:
        return _json(200, self.state())

    async def _control_settle(self, request: web.Request) -> web.Response:
        body = await _body(request, required=True)
        ticker = body.get("market_ticker")
        if not isinstance(ticker, str) or ticker not in self._exchange.markets:
            raise _bad_request(f"market_ticker must name a market, got {str(ticker)[:60]!r}")
        result = body.get("result")
        if result not in ("yes", "no"):
            raise _bad_request("result must be 'yes' or 'no'")
        return _json(200, self.settle(ticker, result))

    async def _control_frames(self, request: web.Request) -> web.Response:
        frame = await _body(request, required=True)
        target = frame.pop("to_user_id", None)
        user: User | None = None
        if target is not None:
            user = self._exchange.users.get(target) if isinstance(target, str) else None
            if user is None:
                raise _bad_request(f"to_user_id must name a user, got {str(target)[:60]!r}")
        return _json(200, {"sent": self.inject_frame(frame, user)})

    def _take_write(self, user: User, request: web.Request) -> bool:
        """Charge the user's write bucket; count and refuse when it cannot pay."""
        bucket = self._buckets.get(user.user_id)
        if bucket is None:
            bucket = self._buckets[user.user_id] = TokenBucket(
                self._write_rate, self._write_capacity
            )
        if bucket.take(write_cost(request.method, request.path)):
            return True
        self.stats.rate_limited_429 += 1
        who = user.key_id or user.user_id
        self.rate_limited_by_user[who] = self.rate_limited_by_user.get(who, 0) + 1
        return False

    def set_write_limit(self, tokens_per_second: float, capacity: float) -> None:
        """Change the per-user write bucket (0 tokens/s turns it off); buckets start full."""
        for name, value in (
            ("write_tokens_per_second", tokens_per_second),
            ("write_bucket_capacity", capacity),
        ):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0")
        self._write_rate = tokens_per_second
        self._write_capacity = capacity or tokens_per_second
        self._buckets.clear()

    def rate_limit_state(self) -> dict[str, Any]:
        """The write bucket settings and the 429s answered per user."""
        return {
            "write_tokens_per_second": self._write_rate,
            "write_bucket_capacity": self._write_capacity,
            "quote_write_cost": QUOTE_WRITE_COST,
            "default_write_cost": DEFAULT_WRITE_COST,
            "rate_limited_429": self.stats.rate_limited_429,
            "rate_limited_by_user": dict(self.rate_limited_by_user),
        }

    def bench_reset(self) -> None:
        """Start a measured window: clear samples, source counters, 429 counts; refill buckets."""
        self.bench.reset()
        self.rate_limited_by_user.clear()
        self.stats.rate_limited_429 = 0
        self._buckets.clear()
        if self.bench_source is not None:
            self.bench_source.reset_counters()

    def bench_state(self) -> dict[str, Any]:
        """What ``GET /_mock/bench`` answers: samples, source counters and 429s."""
        source = self.bench_source
        return {
            **self.bench.snapshot(),
            "clock": "time.perf_counter_ns",
            "source": None
            if source is None
            else {
                "running": source.running,
                "rate": source.plan.rate,
                "accept_fraction": source.plan.accept_fraction,
                "lifetime_seconds": source.plan.lifetime_seconds,
                "requesters": source.requester_count,
                "elapsed_seconds": round(source.elapsed_seconds(), 6),
                **source.counters.to_dict(),
            },
            "rate_limit": self.rate_limit_state(),
            "exchange": {"rfqs": len(self._exchange.rfqs), "quotes": len(self._exchange.quotes)},
        }

    async def _control_get_rate_limit(self, request: web.Request) -> web.Response:
        return _json(200, self.rate_limit_state())

    async def _control_set_rate_limit(self, request: web.Request) -> web.Response:
        body = await _body(request, required=True)
        rate = _seconds(body, "write_tokens_per_second", self._write_rate)
        capacity = _seconds(body, "write_bucket_capacity", 0.0)
        self.set_write_limit(rate, capacity)
        return _json(200, self.rate_limit_state())

    async def _control_bench(self, request: web.Request) -> web.Response:
        return _json(200, self.bench_state())

    async def _control_bench_start(self, request: web.Request) -> web.Response:
        body = await _body(request, required=True)
        keep = body.get("keep_samples", True)
        if not isinstance(keep, bool):
            raise _bad_request("keep_samples must be a boolean")
        seed = body.get("seed", self.config.seed)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise _bad_request("seed must be an integer")
        try:
            plan = BenchPlan(
                rate=_seconds(body, "rate", 0.0),
                accept_fraction=_seconds(body, "accept_fraction", 0.1),
                lifetime_seconds=_seconds(body, "lifetime_seconds", 1.0),
                seed=seed,
            )
            source = BenchSource(self._exchange, plan)
        except ValueError as exc:
            raise _bad_request(str(exc)) from None
        if self.bench_source is not None:
            self.bench_source.stop()
        self.bench_source = source
        self.bench.enabled = True
        self.bench.keep_samples = keep
        self.bench_reset()
        source.start()
        log.info("mock_bench_started", rate=plan.rate, requesters=source.requester_count)
        return _json(200, self.bench_state())

    async def _control_bench_stop(self, request: web.Request) -> web.Response:
        # Pausing rather than stopping: open RFQs expire on their schedule instead of all
        # being deleted at once (a burst that would overflow the maker's frame queue).
        if self.bench_source is not None:
            self.bench_source.pause()
        return _json(200, self.bench_state())

    async def _control_bench_reset(self, request: web.Request) -> web.Response:
        self.bench.enabled = True
        self.bench_reset()
        return _json(200, self.bench_state())

    async def _control_create_rfq(self, request: web.Request) -> web.Response:
        body = await _body(request, required=True)
        plan, fixed = self._control_plan(body)
        requester = next(u for u in self.driver.requesters if u.user_id == plan.requester)
        rfq = self._exchange.create_rfq(requester, rfq_body(plan))
        self.driver.track(rfq, plan, fixed_reservation=fixed)
        return _json(201, {"id": rfq.id})

    def _control_plan(self, body: Mapping[str, Any]) -> tuple[RfqPlan, bool]:
        ticker = body.get("market_ticker")
        if not isinstance(ticker, str) or ticker not in self._exchange.markets:
            raise _bad_request(f"market_ticker must name a market, got {str(ticker)[:60]!r}")
        market = self._exchange.markets[ticker]
        contracts = body.get("contracts_fp")
        target = body.get("target_cost_dollars")
        if (contracts is None) == (target is None):
            raise _bad_request("give exactly one of contracts_fp or target_cost_dollars")
        wants = body.get("wants", "yes")
        if wants not in ("yes", "no"):
            raise _bad_request("wants must be 'yes' or 'no'")
        rest_remainder = body.get("rest_remainder", False)
        if not isinstance(rest_remainder, bool):
            raise _bad_request("rest_remainder must be a boolean")
        fixed = body.get("reservation") is not None
        if fixed:
            reservation = parse_dollars(body["reservation"], "reservation", max_decimals=6)
        else:
            reservation = reservation_from(wants, market.fair_micros, 0)
        partial = body.get("partial_fraction")
        try:
            plan = RfqPlan(
                requester="",
                market_ticker=ticker,
                contracts=parse_count(contracts, "contracts_fp") if contracts is not None else None,
                target_cost_dollars=(
                    parse_dollars(target, "target_cost_dollars") if target is not None else None
                ),
                rest_remainder=rest_remainder,
                wants=wants,
                reservation=reservation,
                lifetime_seconds=_seconds(body, "lifetime_seconds", 60.0),
                decision_delay_seconds=_seconds(body, "decision_delay_seconds", 0.5),
                partial_fraction=(
                    parse_dollars(partial, "partial_fraction", max_decimals=6)
                    if partial is not None
                    else None
                ),
            )
        except ValueError as exc:
            raise _bad_request(str(exc)) from None
        # Chosen only once the request is known to be valid, so a bad one adds no one.
        requester = self.driver.open_requester_for(ticker)
        if requester is None:
            requester = self._exchange.add_user(simulated=True)
            self.driver.add_requester(requester)
        plan = dataclasses.replace(plan, requester=requester.user_id)
        return plan, fixed

    # ------------------------------------------------------------------ WebSocket

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        self.stats.ws_handshakes += 1
        if self._closing:
            return _error(503, "service_unavailable", "the mock exchange is shutting down")
        if self.faults.refusing_handshakes():
            self.stats.ws_refused += 1
            return _error(
                503, "service_unavailable", "WebSocket handshakes are refused (mock fault)"
            )
        user = self._authenticate(request)
        ws = web.WebSocketResponse(
            autoping=True, timeout=_CLOSE_TIMEOUT_SECONDS, max_msg_size=_MAX_WS_FRAME_BYTES
        )
        if not ws.can_prepare(request).ok:
            raise _bad_request("expected a WebSocket upgrade request", code="bad_request")
        await ws.prepare(request)
        conn = _Connection(self, ws, request, user)
        self._connections.add(conn)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    conn.handle_text(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    conn.reply(
                        {
                            "type": "error",
                            "msg": {"code": 1, "msg": "binary frames are not supported"},
                        }
                    )
                elif msg.type is WSMsgType.ERROR:
                    break
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("mock_ws_connection_failed", user=user.communications_id)
        finally:
            self._connections.discard(conn)
            await conn.stop_tasks()
            if not ws.closed:
                try:
                    await asyncio.wait_for(ws.close(), _CLOSE_TIMEOUT_SECONDS)
                except Exception:
                    conn.abort()
        return ws

    def _broadcast(self, event: ExchangeEvent) -> None:
        # Runs inside the exchange's state change: it must never raise, and it only queues.
        try:
            public = event.messages.get(None)
            for conn in list(self._connections):
                msg = event.messages.get(conn.user.user_id, public)
                if msg is None:
                    continue
                for sub in list(conn.subscriptions.values()):
                    if sub.wants_event(event):
                        conn.send_event(event, sub, msg)
        except Exception:
            log.exception("mock_broadcast_failed", event=event.type, rfq_id=event.rfq_id)
