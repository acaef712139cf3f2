"""The control endpoints under ``/_mock/``: faults, state, settlement, frames, rate limit, bench.

Every path under ``/_mock/`` requires ``Authorization: Bearer <control token>``; a
request without it, or with a wrong token, answers 401 with an ErrorResponse. The token
is :attr:`~mmbot.mock.config.MockConfig.control_token`, or a random one generated per
instance when that is unset; in-process callers read it from
:attr:`~mmbot.mock.server.MockExchange.control_token` (or send
:attr:`~mmbot.mock.server.MockExchange.control_headers`), and ``mmbot mock-exchange``
prints it. The server listens on 127.0.0.1 unless another ``host`` is given explicitly.

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
    ``stats.tampered_price`` / ``tampered_size`` / ``tampered_market``), and for the
    market-data channels (:mod:`mmbot.mock.marketfeed`) ``market_updates_per_second``
    (when > 0, the fair values of the subscribed markets are moved round-robin, one grid
    point at a time, alternately up and down, so that about that many top-of-book changes
    a second reach ``orderbook_delta`` and ``ticker`` on top of the random walk; counted in
    ``stats.md_forced_moves``) and ``md_gap_fraction`` (that share of ``orderbook_delta``
    messages spends its ``seq`` but is not sent, counted in ``stats.md_gaps_injected``);
    ``malformed_fraction`` also sends a cut-off copy before that share of market-data
    frames.
``POST /_mock/md_gap``
    the next ``orderbook_delta`` message (to whichever subscription comes first) spends its
    ``seq`` but is not sent: a one-shot sequence gap. Answers ``{"pending_gaps": n}``.
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
    The market-data counters are in ``stats``: ``md_updates_published`` (market-data
    frames queued, one per subscription: snapshots, deltas, tickers),
    ``md_snapshots_sent``, ``md_deltas_sent``, ``md_tickers_sent``, ``md_book_changes``
    (changes of a watched market's book or ticker), ``md_forced_moves``,
    ``md_forced_moves_dropped``, ``md_gaps_injected`` and ``md_malformed_sent``.
``POST /_mock/settle``
    ``{"market_ticker": T, "result": "yes" | "no"}`` settles the market (see
    :meth:`~mmbot.mock.server.MockExchange.settle`): its status becomes ``finalized``
    with ``result`` set, open RFQs on it close (``rfq_deleted``), pending quotes and
    resting orders on it are cancelled, and every position pays $1 per winning contract
    into its owner's balance, booking the realised P&L and leaving the position at zero
    (still listed, as ``GET /portfolio/positions`` documents no settlement filter;
    ``count_filter=position`` drops it). Settling twice, or an unknown market or result,
    answers 400.
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
    and counters (after a warm-up), and fetch them. See
    :class:`~mmbot.mock.bench_probe.BenchProbe`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from mmbot.mock.driver import BenchPlan, BenchSource, rfq_body
from mmbot.mock.faults import FaultConfigError
from mmbot.mock.http_util import CONTROL_PREFIX, json_response, read_body, seconds_param
from mmbot.mock.records import User
from mmbot.mock.sim import RfqPlan, reservation_from
from mmbot.mock.wire import bad_request, parse_count, parse_dollars

if TYPE_CHECKING:
    from mmbot.mock.server import MockExchange

__all__ = ["ControlHandlers", "is_control_path"]

log = structlog.get_logger("mmbot.mock")


def is_control_path(path: str) -> bool:
    """Whether ``path`` is under the control prefix (and so needs the control token)."""
    # Also matches "/_mock" itself and any unrouted path below it: nothing under the prefix
    # answers (not even 404) without the token.
    return path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/")


class ControlHandlers:
    """The ``/_mock/`` endpoints of one :class:`~mmbot.mock.server.MockExchange`."""

    def __init__(self, server: MockExchange) -> None:
        self._server = server

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register every control endpoint on ``router``."""
        router.add_route("GET", CONTROL_PREFIX + "/faults", self._control_get_faults)
        router.add_route("POST", CONTROL_PREFIX + "/faults", self._control_set_faults)
        router.add_route("POST", CONTROL_PREFIX + "/drop_ws", self._control_drop_ws)
        router.add_route("POST", CONTROL_PREFIX + "/md_gap", self._control_md_gap)
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

    async def _control_get_faults(self, request: web.Request) -> web.Response:
        return json_response(200, self._server.faults.config.to_dict())

    async def _control_set_faults(self, request: web.Request) -> web.Response:
        body = await read_body(request, required=True)
        try:
            config = self._server.faults.update(body)
        except FaultConfigError as exc:
            raise bad_request(str(exc), code="invalid_fault") from None
        log.info("mock_faults_changed", **config.to_dict())
        return json_response(200, config.to_dict())

    async def _control_drop_ws(self, request: web.Request) -> web.Response:
        return json_response(200, {"dropped": await self._server.drop_ws()})

    async def _control_md_gap(self, request: web.Request) -> web.Response:
        return json_response(200, {"pending_gaps": self._server.market_feed.skip_next_delta()})

    async def _control_state(self, request: web.Request) -> web.Response:
        return json_response(200, self._server.state())

    async def _control_settle(self, request: web.Request) -> web.Response:
        body = await read_body(request, required=True)
        ticker = body.get("market_ticker")
        if not isinstance(ticker, str) or ticker not in self._server.exchange.markets:
            raise bad_request(f"market_ticker must name a market, got {str(ticker)[:60]!r}")
        result = body.get("result")
        if result not in ("yes", "no"):
            raise bad_request("result must be 'yes' or 'no'")
        return json_response(200, self._server.settle(ticker, result))

    async def _control_frames(self, request: web.Request) -> web.Response:
        frame = await read_body(request, required=True)
        target = frame.pop("to_user_id", None)
        user: User | None = None
        if target is not None:
            user = self._server.exchange.users.get(target) if isinstance(target, str) else None
            if user is None:
                raise bad_request(f"to_user_id must name a user, got {str(target)[:60]!r}")
        return json_response(200, {"sent": self._server.inject_frame(frame, user)})

    async def _control_get_rate_limit(self, request: web.Request) -> web.Response:
        return json_response(200, self._server.rate_limit_state())

    async def _control_set_rate_limit(self, request: web.Request) -> web.Response:
        body = await read_body(request, required=True)
        current = self._server.rate_limit_state()["write_tokens_per_second"]
        rate = seconds_param(body, "write_tokens_per_second", current)
        capacity = seconds_param(body, "write_bucket_capacity", 0.0)
        self._server.set_write_limit(rate, capacity)
        return json_response(200, self._server.rate_limit_state())

    async def _control_bench(self, request: web.Request) -> web.Response:
        return json_response(200, self._server.bench_state())

    async def _control_bench_start(self, request: web.Request) -> web.Response:
        body = await read_body(request, required=True)
        keep = body.get("keep_samples", True)
        if not isinstance(keep, bool):
            raise bad_request("keep_samples must be a boolean")
        seed = body.get("seed", self._server.config.seed)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise bad_request("seed must be an integer")
        try:
            plan = BenchPlan(
                rate=seconds_param(body, "rate", 0.0),
                accept_fraction=seconds_param(body, "accept_fraction", 0.1),
                lifetime_seconds=seconds_param(body, "lifetime_seconds", 1.0),
                seed=seed,
            )
            source = BenchSource(self._server.exchange, plan)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        if self._server.bench_source is not None:
            self._server.bench_source.stop()
        self._server.bench_source = source
        self._server.bench.enabled = True
        self._server.bench.keep_samples = keep
        self._server.bench_reset()
        source.start()
        log.info("mock_bench_started", rate=plan.rate, requesters=source.requester_count)
        return json_response(200, self._server.bench_state())

    async def _control_bench_stop(self, request: web.Request) -> web.Response:
        # Pausing rather than stopping: open RFQs expire on their schedule instead of all
        # being deleted at once (a burst that would overflow the maker's frame queue).
        if self._server.bench_source is not None:
            self._server.bench_source.pause()
        return json_response(200, self._server.bench_state())

    async def _control_bench_reset(self, request: web.Request) -> web.Response:
        self._server.bench.enabled = True
        self._server.bench_reset()
        return json_response(200, self._server.bench_state())

    async def _control_create_rfq(self, request: web.Request) -> web.Response:
        body = await read_body(request, required=True)
        plan, fixed = self._control_plan(body)
        requester = next(u for u in self._server.driver.requesters if u.user_id == plan.requester)
        rfq = self._server.exchange.create_rfq(requester, rfq_body(plan))
        self._server.driver.track(rfq, plan, fixed_reservation=fixed)
        return json_response(201, {"id": rfq.id})

    def _control_plan(self, body: Mapping[str, Any]) -> tuple[RfqPlan, bool]:
        ticker = body.get("market_ticker")
        if not isinstance(ticker, str) or ticker not in self._server.exchange.markets:
            raise bad_request(f"market_ticker must name a market, got {str(ticker)[:60]!r}")
        market = self._server.exchange.markets[ticker]
        contracts = body.get("contracts_fp")
        target = body.get("target_cost_dollars")
        if (contracts is None) == (target is None):
            raise bad_request("give exactly one of contracts_fp or target_cost_dollars")
        wants = body.get("wants", "yes")
        if wants not in ("yes", "no"):
            raise bad_request("wants must be 'yes' or 'no'")
        rest_remainder = body.get("rest_remainder", False)
        if not isinstance(rest_remainder, bool):
            raise bad_request("rest_remainder must be a boolean")
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
                lifetime_seconds=seconds_param(body, "lifetime_seconds", 60.0),
                decision_delay_seconds=seconds_param(body, "decision_delay_seconds", 0.5),
                partial_fraction=(
                    parse_dollars(partial, "partial_fraction", max_decimals=6)
                    if partial is not None
                    else None
                ),
            )
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        # Chosen only once the request is known to be valid, so a bad one adds no one.
        requester = self._server.driver.open_requester_for(ticker)
        if requester is None:
            requester = self._server.exchange.add_user(simulated=True)
            self._server.driver.add_requester(requester)
        plan = dataclasses.replace(plan, requester=requester.user_id)
        return plan, fixed
