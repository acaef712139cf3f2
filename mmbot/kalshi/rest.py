"""Async client for Kalshi's REST API, on one long-lived ``httpx.AsyncClient``.

Every call goes through :meth:`KalshiRestClient._call`, which

* takes tokens from the local Read or Write bucket (writes by priority:
  confirm, then delete, then create);
* signs the request (:class:`~mmbot.kalshi.auth.KalshiAuth`, at send time, so a
  retry carries a fresh timestamp);
* turns HTTP errors into typed exceptions with the exchange's code and message;
* retries 429, 5xx and transport failures with capped exponential backoff and
  full jitter, under a deadline, for the calls where a retry is safe. Each
  endpoint states its retry policy and why.

Built with ``read_only=True`` (shadow mode) the client refuses every request that is not
a GET with :class:`ShadowWriteRefused`, before any token is taken or byte is sent.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any, Final, Literal, TypeVar

import httpx
import orjson
import structlog
from pydantic import BaseModel, ValidationError

from mmbot.kalshi.auth import Signer
from mmbot.kalshi.backoff import Backoff
from mmbot.kalshi.errors import (
    AuthError,
    KalshiApiError,
    KalshiError,
    ServerError,
    ShadowWriteRefused,
    TransportError,
    error_for_status,
)
from mmbot.kalshi.history import HistoryWindows, Page, fill_key, iter_history, paginate
from mmbot.kalshi.http import AiohttpTransport
from mmbot.kalshi.models import (
    Balance,
    EventPosition,
    ExchangeStatus,
    Fill,
    Market,
    MarketPosition,
    Orderbook,
    Quote,
    Rfq,
    Side,
)
from mmbot.kalshi.ratelimit import DEFAULT_COST, QUOTE_COST, Priority, TokenBucket
from mmbot.kalshi.wire import (
    InvalidQuoteError,
    decimal_places,
    fixed_point,
    format_count,
    query_params,
    validate_quote_prices,
)

__all__ = [
    "DEFAULT_COST",
    "QUOTE_COST",
    "InvalidQuoteError",
    "KalshiRestClient",
    "Page",
    "PositionsPage",
    "ResponseObserver",
    "Retry",
    "ShadowWriteRefused",
]

log = structlog.get_logger("mmbot.kalshi.rest")

#: Sent with every request (httpx adds Host and Content-Length). gzip and deflate only:
#: httpx decodes those without optional packages.
_BASE_HEADERS: Final = (
    ("Accept", "application/json"),
    ("Accept-Encoding", "gzip, deflate"),
    ("User-Agent", "mmbot"),
)
_JSON_CONTENT: Final = ("Content-Type", "application/json")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class Retry(Enum):
    """When a failed call may be sent again."""

    #: Never: the call is not safe to repeat.
    NEVER = "never"
    #: Only when the request certainly did not take effect: a 429 (rejected before any
    #: processing) or a connection that failed before the request was sent.
    UNPROCESSED = "unprocessed"
    #: Also after 5xx and ambiguous transport failures: repeating the call cannot do more
    #: than doing it once.
    SAFE = "safe"


#: Called once per HTTP attempt with the endpoint's name (``create_quote``), the HTTP
#: status as text (``"201"``) or ``"error"`` for a transport failure, and the seconds taken.
ResponseObserver = Callable[[str, str, float], None]


class _Lane(Enum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class PositionsPage:
    """One page of ``GET /portfolio/positions``."""

    market_positions: list[MarketPosition]
    event_positions: list[EventPosition]
    cursor: str | None


class KalshiRestClient:
    """Kalshi REST API client. Create once, share everywhere, close on shutdown."""

    def __init__(
        self,
        base_url: str,
        signer: Signer | None = None,
        *,
        read_tokens_per_second: float = 200,
        read_bucket_capacity: float = 400,
        write_tokens_per_second: float = 100,
        write_bucket_capacity: float = 100,
        write_reserve_tokens: float = 0,
        max_queued_quotes: int = 16,
        timeout_seconds: float = 10.0,
        retry_deadline_seconds: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_response: ResponseObserver | None = None,
        read_only: bool = False,
        history: HistoryWindows | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        #: Shadow mode: every request but a GET raises ShadowWriteRefused.
        self.read_only = read_only
        # Told of every attempt (endpoint, HTTP status or "error", seconds): the metrics hook.
        self.on_response = on_response
        self.read_bucket = TokenBucket(read_tokens_per_second, read_bucket_capacity, name="read")
        self.write_bucket = TokenBucket(
            write_tokens_per_second,
            write_bucket_capacity,
            name="write",
            reserve=write_reserve_tokens,
            max_sheddable=max_queued_quotes,
        )
        self._retry_deadline = retry_deadline_seconds
        self.history = history or HistoryWindows()  # bounds of iter_quotes and iter_fills
        #: The last 401/403 the exchange answered, until a later request succeeds: a clock
        #: that drifted past the signing window fails every request this way.
        self.auth_failure: KalshiApiError | None = None
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._sleep = sleep
        # httpx's Request, Response and transport interface, without AsyncClient on top:
        # its request building, auth generator and redirect loop cost about 100 us of CPU
        # per request (benchmarks/README.md), and this client uses none of them. Tests may
        # pass any httpx transport.
        self._transport = transport if transport is not None else AiohttpTransport()
        self._signer = signer
        self._timeout = {"timeout": httpx.Timeout(timeout_seconds).as_dict()}
        self._headers: list[tuple[str, str]] = [*_BASE_HEADERS]

    def _refuse_write(self, method: str, path: str) -> None:
        """Raise ShadowWriteRefused, logged at ERROR, if read-only and ``method`` writes."""
        if self.read_only and method != "GET":
            log.error("shadow_write_refused", method=method, path=path)
            raise ShadowWriteRefused(method, path)

    async def __aenter__(self) -> KalshiRestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the underlying connection pool."""
        await self._transport.aclose()

    async def _send(
        self, method: str, url: str, query: Any, content: bytes | None
    ) -> httpx.Response:
        """One attempt: a freshly signed request, the whole body read; httpx errors raise."""
        self._refuse_write(method, url)  # again: a path bypassing _call cannot write either
        target = httpx.URL(url, params=query)
        headers = self._headers.copy()
        if content is not None:
            headers.append(_JSON_CONTENT)
        if self._signer is not None:
            # Signed per attempt, so a retry carries a fresh timestamp. The signature covers
            # the path as sent (percent-encoded), without the query.
            path = target.raw_path.split(b"?", 1)[0].decode("ascii")
            headers.extend(self._signer.headers(method, path).items())
        request = httpx.Request(
            method, target, headers=headers, content=content, extensions=self._timeout
        )
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    # ------------------------------------------------------------------ the one request path

    async def _call(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        lane: _Lane,
        retry: Retry,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        cost: int = DEFAULT_COST,
        priority: Priority = Priority.READ,
        deadline_seconds: float | None = None,
        gone_is_done: bool = False,
        value: Decimal | None = None,
        shed_at: float | None = None,
    ) -> Any:
        """Send one logical call (with its retries) and return the decoded JSON body, if any.

        ``gone_is_done``: for deletes, a 404 after an ambiguous failure means an earlier
        attempt did the work, so it counts as success.
        """
        # First, before a token is taken: a refused write must cost the budget nothing.
        self._refuse_write(method, path)
        bucket = self.read_bucket if lane is _Lane.READ else self.write_bucket
        deadline = time.monotonic() + (
            self._retry_deadline if deadline_seconds is None else deadline_seconds
        )
        backoff = Backoff(base=0.02, cap=1.0, rng=self._rng)
        url = f"{self.base_url}/{path.lstrip('/')}"
        content = orjson.dumps(body) if body is not None else None
        query = query_params(params) if params else None
        ambiguous_before = False
        while True:
            # Raises Shed (not retried: the caller decided it may give way) for a
            # sheddable call that more valuable ones crowd out or that waits past shed_at.
            await bucket.acquire(cost, priority, value=value, deadline=shed_at)
            error: KalshiError
            started = time.perf_counter()
            try:
                response = await self._send(method, url, query, content)
            except httpx.TransportError as exc:
                self._observe(endpoint, "error", started)
                # A failed connect (or waiting for a pooled one) means nothing was sent.
                sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                sent = sent and not isinstance(exc, httpx.PoolTimeout)
                error = TransportError(
                    f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                    sent=sent,
                    method=method,
                    path=path,
                )
                retryable = retry is Retry.SAFE or (retry is Retry.UNPROCESSED and not sent)
                ambiguous_before = ambiguous_before or sent
            else:
                status = response.status_code
                self._observe(endpoint, str(status), started)
                if status < 400:
                    self.auth_failure = None
                    return self._decode(response, method, path)
                error = error_for_status(status, response.content, method=method, path=path)
                if isinstance(error, AuthError):
                    self.auth_failure = error
                if status == 404 and gone_is_done and ambiguous_before:
                    log.info("delete_already_done", method=method, path=path)
                    return None
                if status == 429:
                    # Our mirror thought there were tokens; the exchange disagrees. Trust it.
                    bucket.drain()
                    retryable = retry is not Retry.NEVER
                else:
                    retryable = isinstance(error, ServerError) and retry is Retry.SAFE
                    ambiguous_before = ambiguous_before or isinstance(error, ServerError)
            delay = backoff.next_delay()
            if not retryable or time.monotonic() + delay > deadline:
                raise error
            # INFO, not WARNING: a retry that then succeeds is the mechanism working. A call
            # that finally fails raises, and its caller reports that.
            log.info(
                "request_retry",
                method=method,
                path=path,
                status=error.status,
                code=error.code,
                reason=error.message,
                attempt=backoff.attempt,
                delay_ms=round(delay * 1000, 1),
            )
            await self._sleep(delay)

    def _observe(self, endpoint: str, status: str, started: float) -> None:
        observer = self.on_response
        if observer is None:
            return
        try:
            observer(endpoint, status, time.perf_counter() - started)
        except Exception:
            # Metrics must never cost a request its answer.
            log.exception("response_observer_failed", endpoint=endpoint)

    @staticmethod
    def _decode(response: httpx.Response, method: str, path: str) -> Any:
        if response.status_code == 204 or not response.content:
            return None
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise KalshiError(
                "response is not valid JSON", status=response.status_code, method=method, path=path
            ) from None

    async def _get(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        endpoint: str,
        cost: int = DEFAULT_COST,
    ) -> Any:
        # Reads change nothing, so every failure mode is safe to retry.
        return await self._call(
            "GET",
            path,
            endpoint=endpoint,
            lane=_Lane.READ,
            retry=Retry.SAFE,
            params=params,
            cost=cost,
        )

    @staticmethod
    def _model(model: type[M], data: Any, what: str) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise KalshiError(
                f"unexpected {what} in response: {exc.error_count()} problem(s)"
            ) from exc

    @staticmethod
    def _field(data: Any, key: str) -> Any:
        """``data[key]`` of a JSON object body; a body that is not an object is an error."""
        if data is None:
            return None
        if not isinstance(data, dict):
            raise KalshiError(f"unexpected response: a {type(data).__name__}, not an object")
        return data.get(key)

    def _models(self, model: type[M], data: Any, key: str) -> list[M]:
        rows = data.get(key) if isinstance(data, dict) else None
        if rows is None:
            return []
        if not isinstance(rows, list):
            raise KalshiError(f"unexpected response: {key!r} is not a list")
        return [self._model(model, row, key) for row in rows]

    @staticmethod
    def _cursor(data: Any) -> str | None:
        cursor = data.get("cursor") if isinstance(data, dict) else None
        return str(cursor) if cursor else None

    _paginate = staticmethod(paginate)

    @staticmethod
    def _quote_path(quote_id: str, rfq_id: str | None, suffix: str = "") -> str:
        # The rfq-scoped paths are current; the bare quote paths are deprecated but still served.
        if rfq_id is not None:
            return f"/communications/rfqs/{rfq_id}/quotes/{quote_id}{suffix}"
        return f"/communications/quotes/{quote_id}{suffix}"

    # ------------------------------------------------------------------ communications

    async def get_communications_id(self) -> str:
        """Return this account's public communications id (``GET /communications/id``)."""
        data = await self._get("/communications/id", endpoint="get_communications_id")
        if not isinstance(data, dict) or not data.get("communications_id"):
            raise KalshiError("unexpected response: no communications_id")
        return str(data["communications_id"])

    async def list_rfqs(
        self,
        *,
        status: str | None = None,
        market_ticker: str | None = None,
        event_ticker: str | None = None,
        subaccount: int | None = None,
        user_filter: Literal["self"] | None = None,
        creator_user_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Rfq]:
        """Return one page of RFQs (``GET /communications/rfqs``)."""
        data = await self._get(
            "/communications/rfqs",
            {
                "status": status,
                "market_ticker": market_ticker,
                "event_ticker": event_ticker,
                "subaccount": subaccount,
                "user_filter": user_filter,
                "creator_user_id": creator_user_id,
                "limit": limit,
                "cursor": cursor,
            },
            endpoint="list_rfqs",
        )
        return Page(self._models(Rfq, data, "rfqs"), self._cursor(data))

    def iter_rfqs(self, **filters: Any) -> AsyncIterator[Rfq]:
        """Iterate over every RFQ matching ``filters`` (the arguments of :meth:`list_rfqs`)."""
        return self._paginate(lambda cursor: self.list_rfqs(cursor=cursor, **filters))

    async def get_rfq(self, rfq_id: str) -> Rfq:
        """Return one RFQ (``GET /communications/rfqs/{rfq_id}``)."""
        data = await self._get(f"/communications/rfqs/{rfq_id}", endpoint="get_rfq")
        return self._model(Rfq, self._field(data, "rfq"), "rfq")

    async def create_rfq(
        self,
        market_ticker: str,
        *,
        contracts: Decimal | str | int | None = None,
        target_cost_dollars: Decimal | str | None = None,
        rest_remainder: bool = False,
        replace_existing: bool = False,
        subaccount: int | None = None,
    ) -> str:
        """Create an RFQ sized by contracts or by target cost; return its id."""
        if (contracts is None) == (target_cost_dollars is None):
            raise ValueError("give exactly one of contracts or target_cost_dollars")
        body: dict[str, Any] = {"market_ticker": market_ticker, "rest_remainder": rest_remainder}
        if contracts is not None:
            body["contracts_fp"] = format_count(contracts, "contracts")
        else:
            assert target_cost_dollars is not None
            cost = fixed_point(target_cost_dollars, "target_cost_dollars")
            if cost <= 0:
                raise ValueError("target_cost_dollars must be positive")
            body["target_cost_dollars"] = f"{cost:.4f}" if decimal_places(cost) <= 4 else str(cost)
        if replace_existing:
            body["replace_existing"] = True
        if subaccount is not None:
            body["subaccount"] = subaccount
        # Only retried when certainly unprocessed: after an ambiguous failure a retry could
        # meet a 409 (one open RFQ per market) from our own first attempt and lose its id.
        data = await self._call(
            "POST",
            "/communications/rfqs",
            endpoint="create_rfq",
            lane=_Lane.WRITE,
            retry=Retry.UNPROCESSED,
            body=body,
            priority=Priority.CREATE,
        )
        return self._created_id(data)

    async def delete_rfq(self, rfq_id: str) -> None:
        """Delete one of our RFQs (``DELETE /communications/rfqs/{rfq_id}``)."""
        # Deleting is idempotent: a repeat finds the RFQ gone, which is the goal.
        await self._call(
            "DELETE",
            f"/communications/rfqs/{rfq_id}",
            endpoint="delete_rfq",
            lane=_Lane.WRITE,
            retry=Retry.SAFE,
            priority=Priority.DELETE,
            gone_is_done=True,
        )

    async def list_quotes(
        self,
        *,
        user_filter: Literal["self"] | None = None,
        rfq_user_filter: Literal["self"] | None = None,
        quote_creator_user_id: str | None = None,
        rfq_creator_user_id: str | None = None,
        rfq_id: str | None = None,
        status: str | None = None,
        min_ts: int | None = None,
        max_ts: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Quote]:
        """Return one page of quotes (``GET /communications/quotes``); needs a creator filter."""
        if not (user_filter or rfq_user_filter or quote_creator_user_id or rfq_creator_user_id):
            # The exchange refuses unfiltered quote listings; fail before spending tokens.
            raise ValueError(
                "list_quotes needs a creator filter: user_filter='self', "
                "rfq_user_filter='self', quote_creator_user_id or rfq_creator_user_id"
            )
        data = await self._get(
            "/communications/quotes",
            {
                "user_filter": user_filter,
                "rfq_user_filter": rfq_user_filter,
                "quote_creator_user_id": quote_creator_user_id,
                "rfq_creator_user_id": rfq_creator_user_id,
                "rfq_id": rfq_id,
                "status": status,
                "min_ts": min_ts,
                "max_ts": max_ts,
                "limit": limit,
                "cursor": cursor,
            },
            endpoint="list_quotes",
        )
        return Page(self._models(Quote, data, "quotes"), self._cursor(data))

    def iter_quotes(self, **filters: Any) -> AsyncIterator[Quote]:
        """Every quote matching ``filters`` (see :meth:`list_quotes`), in bounded windows."""
        return iter_history(
            self.list_quotes, filters, self.history, key=lambda q: q.id, sleep=self._sleep
        )

    async def get_quote(self, quote_id: str, *, rfq_id: str | None = None) -> Quote:
        """Return one quote, through the rfq-scoped path when ``rfq_id`` is known."""
        data = await self._get(
            self._quote_path(quote_id, rfq_id), endpoint="get_quote", cost=QUOTE_COST
        )
        return self._model(Quote, self._field(data, "quote"), "quote")

    async def create_quote(
        self,
        rfq_id: str,
        yes_bid: Decimal | str,
        no_bid: Decimal | str,
        *,
        rest_remainder: bool = False,
        post_only: bool = True,
        subaccount: int | None = None,
        deadline_seconds: float | None = None,
        value: Decimal | None = None,
        shed_at: float | None = None,
    ) -> str:
        """Quote on an RFQ and return the new quote's id; prices are checked before sending.

        With a ``value`` (expected value in dollars) the call is sheddable while it waits
        for write budget: it raises :class:`~mmbot.kalshi.ratelimit.Shed` when more
        valuable quotes fill the queue or when ``time.monotonic()`` passes ``shed_at``.
        """
        yes, no = validate_quote_prices(yes_bid, no_bid)
        body: dict[str, Any] = {
            "rfq_id": rfq_id,
            "yes_bid": yes,
            "no_bid": no,
            "rest_remainder": rest_remainder,
            "post_only": post_only,
        }
        if subaccount is not None:
            body["subaccount"] = subaccount
        # Safe to repeat: a maker's new quote on an RFQ replaces its previous one, so a
        # duplicate leaves exactly one live quote at these same prices.
        data = await self._call(
            "POST",
            "/communications/quotes",
            endpoint="create_quote",
            lane=_Lane.WRITE,
            retry=Retry.SAFE,
            body=body,
            cost=QUOTE_COST,
            priority=Priority.CREATE,
            deadline_seconds=deadline_seconds,
            value=value,
            shed_at=shed_at,
        )
        return self._created_id(data)

    async def delete_quote(
        self, quote_id: str, *, rfq_id: str | None = None, deadline_seconds: float | None = None
    ) -> None:
        """Withdraw one of our quotes so it can no longer be accepted."""
        # Idempotent: a repeat finds the quote gone, which is the goal.
        await self._call(
            "DELETE",
            self._quote_path(quote_id, rfq_id),
            endpoint="delete_quote",
            lane=_Lane.WRITE,
            retry=Retry.SAFE,
            cost=QUOTE_COST,
            priority=Priority.DELETE,
            deadline_seconds=deadline_seconds,
            gone_is_done=True,
        )

    async def accept_quote(
        self, quote_id: str, accepted_side: Side, *, rfq_id: str | None = None
    ) -> None:
        """Accept one side of a quote on our own RFQ (requester side)."""
        if accepted_side not in ("yes", "no"):
            raise ValueError(f"accepted_side must be 'yes' or 'no', got {accepted_side!r}")
        # Safe to repeat: acceptance moves the quote to one fixed state; a second accept
        # cannot accept it twice.
        await self._call(
            "PUT",
            self._quote_path(quote_id, rfq_id, "/accept"),
            endpoint="accept_quote",
            lane=_Lane.WRITE,
            retry=Retry.SAFE,
            body={"accepted_side": accepted_side},
            priority=Priority.CONFIRM,
        )

    async def confirm_quote(
        self, quote_id: str, *, rfq_id: str | None = None, deadline_seconds: float | None = None
    ) -> None:
        """Confirm an accepted quote, locking the trade; served first in the write lane."""
        # Safe to repeat: confirmation moves an accepted quote to one fixed state and the
        # size was fixed by the acceptance, so a duplicate cannot enlarge the trade. Give a
        # deadline inside the confirmation window (3 s on High Volatility Markets).
        await self._call(
            "PUT",
            self._quote_path(quote_id, rfq_id, "/confirm"),
            endpoint="confirm_quote",
            lane=_Lane.WRITE,
            retry=Retry.SAFE,
            body={},
            priority=Priority.CONFIRM,
            deadline_seconds=deadline_seconds,
        )

    @staticmethod
    def _created_id(data: Any) -> str:
        if not isinstance(data, dict) or not data.get("id"):
            raise KalshiError("unexpected response: no id for the created object")
        return str(data["id"])

    # ------------------------------------------------------------------ markets

    async def get_market(self, ticker: str) -> Market:
        """Return one market, with its price grid (``GET /markets/{ticker}``)."""
        data = await self._get(f"/markets/{ticker}", endpoint="get_market")
        return self._model(Market, self._field(data, "market"), "market")

    async def list_markets(
        self,
        *,
        status: str | None = None,
        event_ticker: str | None = None,
        series_ticker: str | None = None,
        tickers: Sequence[str] | None = None,
        mve_filter: Literal["only", "exclude"] | None = None,
        min_close_ts: int | None = None,
        max_close_ts: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Market]:
        """Return one page of markets (``GET /markets``)."""
        data = await self._get(
            "/markets",
            {
                "status": status,
                "event_ticker": event_ticker,
                "series_ticker": series_ticker,
                "tickers": list(tickers) if tickers else None,
                "mve_filter": mve_filter,
                "min_close_ts": min_close_ts,
                "max_close_ts": max_close_ts,
                "limit": limit,
                "cursor": cursor,
            },
            endpoint="list_markets",
        )
        return Page(self._models(Market, data, "markets"), self._cursor(data))

    def iter_markets(self, **filters: Any) -> AsyncIterator[Market]:
        """Iterate over every market matching ``filters`` (see :meth:`list_markets`)."""
        return self._paginate(lambda cursor: self.list_markets(cursor=cursor, **filters))

    async def get_orderbook(self, ticker: str, *, depth: int | None = None) -> Orderbook:
        """Return a market's resting bids (``GET /markets/{ticker}/orderbook``)."""
        data = await self._get(
            f"/markets/{ticker}/orderbook", {"depth": depth}, endpoint="get_orderbook"
        )
        try:
            return Orderbook.from_response(data if isinstance(data, dict) else {})
        except (ValueError, ValidationError) as exc:
            raise KalshiError(f"unexpected orderbook in response: {exc}") from exc

    # ------------------------------------------------------------------ portfolio and exchange

    async def list_positions(
        self,
        *,
        ticker: str | None = None,
        event_ticker: str | None = None,
        count_filter: str | None = None,
        subaccount: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> PositionsPage:
        """Return one page of positions (``GET /portfolio/positions``)."""
        data = await self._get(
            "/portfolio/positions",
            {
                "ticker": ticker,
                "event_ticker": event_ticker,
                "count_filter": count_filter,
                "subaccount": subaccount,
                "limit": limit,
                "cursor": cursor,
            },
            endpoint="list_positions",
        )
        return PositionsPage(
            self._models(MarketPosition, data, "market_positions"),
            self._models(EventPosition, data, "event_positions"),
            self._cursor(data),
        )

    def iter_positions(self, **filters: Any) -> AsyncIterator[MarketPosition]:
        """Iterate over every market position (the arguments of :meth:`list_positions`)."""

        async def fetch(cursor: str | None) -> Page[MarketPosition]:
            page = await self.list_positions(cursor=cursor, **filters)
            return Page(page.market_positions, page.cursor)

        return self._paginate(fetch)

    async def list_fills(
        self,
        *,
        ticker: str | None = None,
        order_id: str | None = None,
        min_ts: int | None = None,
        max_ts: int | None = None,
        subaccount: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Fill]:
        """Return one page of fills (``GET /portfolio/fills``)."""
        data = await self._get(
            "/portfolio/fills",
            {
                "ticker": ticker,
                "order_id": order_id,
                "min_ts": min_ts,
                "max_ts": max_ts,
                "subaccount": subaccount,
                "limit": limit,
                "cursor": cursor,
            },
            endpoint="list_fills",
        )
        return Page(self._models(Fill, data, "fills"), self._cursor(data))

    def iter_fills(self, **filters: Any) -> AsyncIterator[Fill]:
        """Every fill matching ``filters`` (see :meth:`list_fills`), in bounded windows."""
        return iter_history(self.list_fills, filters, self.history, key=fill_key, sleep=self._sleep)

    async def get_balance(self, *, subaccount: int | None = None) -> Balance:
        """Return available balance and portfolio value (``GET /portfolio/balance``)."""
        data = await self._get(
            "/portfolio/balance", {"subaccount": subaccount}, endpoint="get_balance"
        )
        return self._model(Balance, data, "balance")

    async def get_exchange_status(self) -> ExchangeStatus:
        """Return whether the exchange is active and trading (``GET /exchange/status``)."""
        data = await self._get("/exchange/status", endpoint="get_exchange_status")
        return self._model(ExchangeStatus, data, "exchange status")
