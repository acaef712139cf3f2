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

The rest lives in modules of its own, each documenting its part of the protocol:

* :mod:`mmbot.mock.auth`: the signed API-key headers and the control token;
* :mod:`mmbot.mock.rest_handlers`: the trade API endpoints;
* :mod:`mmbot.mock.ws`: the ``communications`` WebSocket, its commands and sharding;
* :mod:`mmbot.mock.marketfeed`: the ``orderbook_delta`` and ``ticker`` channels, driven
  by the simulated fair values;
* :mod:`mmbot.mock.control`: the ``/_mock/`` control endpoints (faults, settlement, frames,
  rate limit, benchmark), for tests and operators;
* :mod:`mmbot.mock.ratelimit`: the per-user write token bucket and Kalshi's token costs;
* :mod:`mmbot.mock.scripting`: the in-process test API (``MockExchange.scripting``):
  scripted REST replies and routes, raw WebSocket frames, command hooks, a request record;
* :mod:`mmbot.mock.bench_probe`: benchmark timing on the exchange's clock.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import structlog
from aiohttp import WSMsgType, web

from mmbot.kalshi.auth import PublicKey
from mmbot.mock.auth import Authenticator, control_authorized
from mmbot.mock.bench_probe import RECEIVED_NS, BenchProbe
from mmbot.mock.config import MockConfig, MockStats
from mmbot.mock.control import ControlHandlers, is_control_path
from mmbot.mock.driver import BenchSource, SimulationDriver
from mmbot.mock.exchange import Exchange
from mmbot.mock.faults import Faults
from mmbot.mock.http_util import (
    CONTROL_PREFIX,
    REST_PREFIX,
    WS_PATH,
    AuthedHandler,
    Endpoint,
    error_response,
    json_response,
)
from mmbot.mock.marketfeed import MarketFeed
from mmbot.mock.markets import market_wire
from mmbot.mock.ratelimit import DEFAULT_WRITE_COST, QUOTE_WRITE_COST, TokenBucket, write_cost
from mmbot.mock.records import ExchangeEvent, User
from mmbot.mock.rest_handlers import RestHandlers
from mmbot.mock.scripting import Scripting
from mmbot.mock.sim import generate_markets
from mmbot.mock.wire import MockApiError, bad_request, wire_count
from mmbot.mock.ws import (
    CLOSE_TIMEOUT_SECONDS,
    DOCUMENTED_CHANNELS,
    MAX_WS_FRAME_BYTES,
    Connection,
    shard_of,
)

# Names re-exported from the modules this one was split into keep their old import path.
__all__ = [
    "CONTROL_PREFIX",
    "DOCUMENTED_CHANNELS",
    "REST_PREFIX",
    "WS_PATH",
    "BenchProbe",
    "MockConfig",
    "MockExchange",
    "MockStats",
    "TokenBucket",
    "shard_of",
    "write_cost",
]

log = structlog.get_logger("mmbot.mock")

_WRITE_METHODS: Final = frozenset({"POST", "PUT", "DELETE"})
_RATE_LIMITED_BODY: Final = b'{"error": "too many requests"}'
# What the accepted side's bid becomes in a price-tampered quote_accepted frame.
_TAMPERED_PRICE: Final = "0.0100"
# How many times the real size a size-tampered quote_accepted frame claims.
_TAMPERED_SIZE_FACTOR: Final = Decimal(9)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


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


# --------------------------------------------------------------------------- the server


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
        requesters = [
            self._exchange.add_user(simulated=True) for _ in range(self.config.requesters)
        ]
        self.driver = SimulationDriver(
            self._exchange,
            requesters,
            seed=self.config.seed,
            rfq_rate=self.config.rfq_rate,
            step_interval_seconds=self.config.market_step_seconds,
            informed_fraction=self.config.informed_fraction,
            informed_move_threshold=self.config.informed_move_threshold,
        )
        self._auth = Authenticator(self.config, self.faults)
        self._connections: set[Connection] = set()
        #: Scripted replies, raw frames and the request record, for client tests.
        self.scripting = Scripting(self._auth, lambda: self._connections)
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
        # Listing order is generation order: the first market carries the highest sequence
        # number because paginate() pages newest (highest) first.
        market_seq = {m.ticker: len(markets) - i for i, m in enumerate(markets)}
        self._rest = RestHandlers(self._exchange, self.bench, self.config, market_seq)
        self._control = ControlHandlers(self)
        #: The market-data channels (``orderbook_delta``, ``ticker``).
        self.market_feed = MarketFeed(self)
        self._exchange.listeners.append(self._broadcast)
        self._exchange.partial_fill = self.faults.partial_fill
        self._exchange.fill_listing_delay = self.faults.fill_listing_delay

    @classmethod
    def scripted(
        cls, public_keys: Mapping[str, PublicKey] | None = None, config: MockConfig | None = None
    ) -> MockExchange:
        """A mock for client tests: ``public_keys`` registered, every request recorded."""
        mock = cls(config)
        for key_id, public_key in (public_keys or {}).items():
            mock.register_key(key_id, public_key)
        mock.scripting.recording = True
        return mock

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
        self.market_feed.start()
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
        await self.market_feed.stop()
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
        existing = self._auth.keys.get(key_id)
        user = existing[1] if existing is not None else self._exchange.add_user(key_id=key_id)
        self._auth.keys[key_id] = (public_key, user)
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
            "registered_users": len(self._auth.keys),
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
            "stats": {**self.stats.to_dict(), **self.market_feed.stats.to_dict()},
            "driver": self.driver.stats.to_dict(),
            "rate_limit": self.rate_limit_state(),
        }

    # ------------------------------------------------------------------ HTTP plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Endpoint) -> web.StreamResponse:
        # First thing on entry, before authentication: the benchmark's "request received".
        request[RECEIVED_NS] = time.perf_counter_ns()
        is_rest = request.path.startswith(REST_PREFIX + "/") or request.path == REST_PREFIX
        if request.method != "GET" and not is_control_path(request.path):
            self.stats.non_get_requests += 1
        if (
            not is_rest
            and is_control_path(request.path)
            and not control_authorized(request, self._control_secret)
        ):
            response = error_response(
                401,
                "unauthorized",
                "control endpoints require the header Authorization: Bearer <control token>",
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="mock control"'
            return response
        try:
            if is_rest:
                self.stats.requests += 1
                if self.scripting.recording:
                    await self.scripting.record_request(request)
                latency_ms = self.faults.config.latency_ms
                if latency_ms > 0:
                    self.stats.delayed_responses += 1
                    self.stats.injected_latency_ms += latency_ms
                    await asyncio.sleep(latency_ms / 1000)
            return await handler(request)
        except MockApiError as exc:
            if exc.status == 401:
                self.stats.auth_failures += 1
            return json_response(exc.status, exc.body())
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if exc.status == 404:
                return error_response(404, "not_found", f"no such path: {request.path[:200]}")
            if exc.status == 405:
                return error_response(
                    405, "method_not_allowed", f"{request.method} is not allowed here"
                )
            return error_response(exc.status, "http_error", exc.reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.internal_errors += 1
            log.exception("mock_request_failed", method=request.method, path=request.path)
            return error_response(500, "internal_error", f"internal error ({type(exc).__name__})")

    def _authed(self, handler: AuthedHandler) -> Endpoint:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            user = self._auth.authenticate(request)
            if (
                request.method == "DELETE"
                and "/quotes/" in request.path
                and self.faults.refusing_quote_deletes()
            ):
                self.stats.injected_503 += 1
                return error_response(
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
                    return error_response(500, "internal_error", "injected failure (mock fault)")
            if self.scripting.answers:
                scripted = await self.scripting.answer(request)
                if scripted is not None:
                    return scripted
            return await handler(request, user)

        return endpoint

    def _add_routes(self, app: web.Application) -> None:
        router = app.router
        scripting = self.scripting
        self._rest.add_routes(
            router,
            authed=self._authed,
            optionally_authed=lambda h: self._auth.optionally_authed(scripting.wrap(h)),
            unsigned=scripting.wrap,
        )
        router.add_route("GET", WS_PATH, self._websocket)
        self._control.add_routes(router)

    # ------------------------------------------------------------------ rate limit and benchmark

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

    # ------------------------------------------------------------------ WebSocket

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        self.stats.ws_handshakes += 1
        if self.scripting.recording:
            self.scripting.record_handshake(request)
        if self._closing:
            return error_response(503, "service_unavailable", "the mock exchange is shutting down")
        if self.faults.refusing_handshakes():
            self.stats.ws_refused += 1
            return error_response(
                503, "service_unavailable", "WebSocket handshakes are refused (mock fault)"
            )
        user = self._auth.authenticate(request)
        ws = web.WebSocketResponse(
            autoping=True, timeout=CLOSE_TIMEOUT_SECONDS, max_msg_size=MAX_WS_FRAME_BYTES
        )
        if not ws.can_prepare(request).ok:
            raise bad_request("expected a WebSocket upgrade request", code="bad_request")
        await ws.prepare(request)
        conn = Connection(self, ws, request, user)
        self._connections.add(conn)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    if self.scripting.watching_ws:
                        self.scripting.handle_ws_text(conn, msg.data)
                    else:
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
                    await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT_SECONDS)
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
