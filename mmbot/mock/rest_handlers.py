"""The trade API under ``/trade-api/v2``: RFQs, quotes, markets, orderbooks and the portfolio.

Each handler parses the request, calls :class:`~mmbot.mock.exchange.Exchange` (where every
trading rule lives) and serialises the answer; authentication, faults and the rate limit
are applied around them by :class:`~mmbot.mock.server.MockExchange`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal
from typing import Final

from aiohttp import web

from mmbot.mock.bench_probe import RECEIVED_NS, BenchProbe
from mmbot.mock.config import MockConfig
from mmbot.mock.exchange import Exchange
from mmbot.mock.http_util import (
    REST_PREFIX,
    AuthedHandler,
    Endpoint,
    int_param,
    json_response,
    no_content,
    query_params,
    read_body,
)
from mmbot.mock.markets import market_status_matches, market_wire
from mmbot.mock.records import User
from mmbot.mock.sim import grid_prices
from mmbot.mock.wire import MockApiError, bad_request, paginate, wire_count, wire_dollars

__all__ = ["RestHandlers"]

_MAX_ORDERBOOK_DEPTH: Final = 100
_MAX_MARKETS_LIMIT: Final = 1000
_DEFAULT_MARKETS_LIMIT: Final = 100


def _with_orders(
    levels: list[tuple[Decimal, Decimal]], orders: list[tuple[Decimal, Decimal]]
) -> list[tuple[Decimal, Decimal]]:
    """Book levels (ascending) with resting orders' contracts added at their prices."""
    book = dict(levels)
    for price, count in orders:
        book[price] = book.get(price, Decimal(0)) + count
    return sorted(book.items())


class RestHandlers:
    """The REST endpoints of the trade API, over one exchange."""

    def __init__(
        self,
        exchange: Exchange,
        bench: BenchProbe,
        config: MockConfig,
        market_seq: dict[str, int],
    ) -> None:
        self._exchange = exchange
        self.bench = bench
        self.config = config
        self._market_seq = market_seq

    def add_routes(
        self,
        router: web.UrlDispatcher,
        *,
        authed: Callable[[AuthedHandler], Endpoint],
        optionally_authed: Callable[[Endpoint], Endpoint],
        unsigned: Callable[[Endpoint], Endpoint],
    ) -> None:
        """Register every REST endpoint, wrapping each in the authentication it needs."""
        signed: list[tuple[str, str, AuthedHandler]] = [
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
            ("GET", "/markets", optionally_authed(self._list_markets)),
            ("GET", "/markets/{ticker}", optionally_authed(self._get_market)),
            ("GET", "/exchange/status", unsigned(self._exchange_status)),
        ]
        for method, path, authed_handler in signed:
            router.add_route(method, REST_PREFIX + path, authed(authed_handler))
        for method, path, handler in public:
            router.add_route(method, REST_PREFIX + path, handler)

    # ------------------------------------------------------------------ communications

    async def _communications_id(self, request: web.Request, user: User) -> web.Response:
        return json_response(200, {"communications_id": user.communications_id})

    async def _list_rfqs(self, request: web.Request, user: User) -> web.Response:
        items, cursor = self._exchange.list_rfqs(user, query_params(request))
        return json_response(200, {"rfqs": [r.wire(user) for r in items], "cursor": cursor})

    async def _create_rfq(self, request: web.Request, user: User) -> web.Response:
        body = await read_body(request, required=True)
        rfq = self._exchange.create_rfq(user, body)
        return json_response(201, {"id": rfq.id})

    async def _get_rfq(self, request: web.Request, user: User) -> web.Response:
        rfq = self._exchange.rfq(request.match_info["rfq_id"])
        return json_response(200, {"rfq": rfq.wire(user)})

    async def _delete_rfq(self, request: web.Request, user: User) -> web.Response:
        self._exchange.delete_rfq(user, request.match_info["rfq_id"])
        return no_content()

    def _check_history_window(self, query: dict[str, str]) -> None:
        """500, as Kalshi answers a history query it cannot bound: both ends, not too far apart."""
        low, high = int_param(query, "min_ts"), int_param(query, "max_ts")
        limit = self.config.max_history_window_seconds
        if low is None or high is None or high - low > limit:
            raise MockApiError(
                500,
                "internal_server_error",
                f"history query timed out: give min_ts and max_ts at most {limit:g}s apart",
            )

    async def _list_quotes(self, request: web.Request, user: User) -> web.Response:
        query = query_params(request)
        # Parameters are checked first (a 400 stays a 400); only the query itself times out.
        items, cursor = self._exchange.list_quotes(user, query)
        self._check_history_window(query)
        return json_response(200, {"quotes": [q.wire(user) for q in items], "cursor": cursor})

    async def _create_quote(self, request: web.Request, user: User) -> web.Response:
        body = await read_body(request, required=True)
        quote = self._exchange.create_quote(user, body)
        if self.bench.enabled:
            self.bench.quote_received(quote.rfq.id, request[RECEIVED_NS])
        return json_response(201, {"id": quote.id})

    async def _get_quote(self, request: web.Request, user: User) -> web.Response:
        info = request.match_info
        quote = self._exchange.quote(user, info["quote_id"], info.get("rfq_id"))
        return json_response(200, {"quote": quote.wire(user)})

    async def _delete_quote(self, request: web.Request, user: User) -> web.Response:
        info = request.match_info
        self._exchange.delete_quote(user, info["quote_id"], info.get("rfq_id"))
        return no_content()

    async def _accept_quote(self, request: web.Request, user: User) -> web.Response:
        body = await read_body(request, required=True)
        info = request.match_info
        self._exchange.accept_quote(user, info["quote_id"], body, rfq_id=info.get("rfq_id"))
        return no_content()

    async def _confirm_quote(self, request: web.Request, user: User) -> web.Response:
        # The body is optional (an EmptyResponse object) but must be JSON when present.
        await read_body(request, required=False)
        info = request.match_info
        quote = self._exchange.confirm_quote(user, info["quote_id"], info.get("rfq_id"))
        if self.bench.enabled:
            self.bench.confirm_received(quote.id, request[RECEIVED_NS])
        return no_content()

    # ------------------------------------------------------------------ markets

    async def _list_markets(self, request: web.Request) -> web.Response:
        query = query_params(request)
        limit = int_param(query, "limit")
        if limit is not None and not 0 <= limit <= _MAX_MARKETS_LIMIT:
            raise bad_request(f"limit must be between 0 and {_MAX_MARKETS_LIMIT}")
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
                raise bad_request("mve_filter must be 'only' or 'exclude'")
            items = [m for m in items if (m.mve_collection_ticker is not None) == (mve == "only")]
        min_close = int_param(query, "min_close_ts")
        if min_close is not None:
            items = [m for m in items if m.close_time.timestamp() > min_close]
        max_close = int_param(query, "max_close_ts")
        if max_close is not None:
            items = [m for m in items if m.close_time.timestamp() < max_close]
        min_settled = int_param(query, "min_settled_ts")
        if min_settled is not None:
            items = [
                m for m in items if m.settled_time and m.settled_time.timestamp() > min_settled
            ]
        max_settled = int_param(query, "max_settled_ts")
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
        return json_response(
            200, {"markets": [market_wire(m, now) for m in page], "cursor": cursor}
        )

    async def _get_market(self, request: web.Request) -> web.Response:
        market = self._exchange.market(request.match_info["ticker"])
        return json_response(200, {"market": market_wire(market, self._exchange.clock())})

    async def _orderbook(self, request: web.Request, user: User) -> web.Response:
        market = self._exchange.market(request.match_info["ticker"])
        depth = int_param(query_params(request), "depth") or 0
        if depth > _MAX_ORDERBOOK_DEPTH:
            raise bad_request(f"depth must be between 0 and {_MAX_ORDERBOOK_DEPTH}")
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

        return json_response(
            200, {"orderbook_fp": {"yes_dollars": rows(yes), "no_dollars": rows(no)}}
        )

    # ------------------------------------------------------------------ portfolio and status

    async def _positions(self, request: web.Request, user: User) -> web.Response:
        positions, events, cursor = self._exchange.list_positions(user, query_params(request))
        return json_response(
            200,
            {
                "market_positions": [p.wire() for p in positions],
                "event_positions": events,
                "cursor": cursor,
            },
        )

    async def _fills(self, request: web.Request, user: User) -> web.Response:
        query = query_params(request)
        fills, cursor = self._exchange.list_fills(user, query)
        self._check_history_window(query)
        return json_response(200, {"fills": [f.wire() for f in fills], "cursor": cursor})

    async def _balance(self, request: web.Request, user: User) -> web.Response:
        return json_response(200, self._exchange.balance_wire(user))

    async def _exchange_status(self, request: web.Request) -> web.Response:
        return json_response(200, self._exchange.status_wire())
