"""REST client over loopback sockets: signing, endpoints, pagination, errors, retries."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from mmbot.kalshi.errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    KalshiApiError,
    KalshiError,
    NotFoundError,
    PaginationError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from mmbot.kalshi.rest import InvalidQuoteError, KalshiRestClient
from mmbot.mock.scripting import RecordedRequest, Scripting
from mmbot.mock.server import MockExchange
from tests.support.keys import KEY_ID, TestKey
from tests.support.payloads import REST_QUOTE as QUOTE
from tests.support.payloads import rest_rfq as rfq


@pytest.fixture
async def mock(rsa_key: TestKey) -> AsyncIterator[MockExchange]:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        yield srv


@pytest.fixture
def server(mock: MockExchange) -> Scripting:
    """The mock's scripting API: scripted replies and the record of requests."""
    return mock.scripting


@pytest.fixture
async def client(mock: MockExchange, rsa_key: TestKey) -> AsyncIterator[KalshiRestClient]:
    async with KalshiRestClient(mock.rest_url, rsa_key.signer(), retry_deadline_seconds=2.0) as c:
        yield c


async def test_rest_signatures_verify_for_rsa_and_ed25519(any_key: TestKey) -> None:
    async with (
        MockExchange.scripted({KEY_ID: any_key.public}) as mock,
        KalshiRestClient(mock.rest_url, any_key.signer()) as client,
    ):
        srv = mock.scripting
        srv.script("GET", "/communications/rfqs", [(200, {"rfqs": [], "cursor": ""})])
        await client.list_rfqs(status="open", limit=5)
        (call,) = srv.requests
        # The mock verified the signature over /trade-api/v2/communications/rfqs, no query.
        assert call.auth_ok
        assert call.query == {"status": "open", "limit": "5"}
        assert call.headers["KALSHI-ACCESS-KEY"] == KEY_ID


async def test_wrong_key_is_an_auth_error(
    mock: MockExchange, server: Scripting, ed25519_key: TestKey
) -> None:
    async with KalshiRestClient(mock.rest_url, ed25519_key.signer()) as impostor:
        with pytest.raises(AuthError) as err:
            await impostor.get_communications_id()
    assert err.value.status == 401
    # The exchange's own message, passed through.
    assert err.value.message.startswith("invalid KALSHI-ACCESS-SIGNATURE")
    assert len(server.requests) == 1  # auth failures are not retried


async def test_pagination_follows_cursor_across_pages(
    server: Scripting, client: KalshiRestClient
) -> None:
    pages = {"": ("c1", [rfq(1), rfq(2)]), "c1": ("c2", [rfq(3)]), "c2": ("c3", [rfq(4)])}
    pages["c3"] = ("", [rfq(5)])

    def handler(req: RecordedRequest) -> tuple[int, Any]:
        cursor, items = pages[req.query.get("cursor", "")]
        return 200, {"rfqs": items, "cursor": cursor}

    server.route("GET", "/communications/rfqs", handler)
    ids = [r.id async for r in client.iter_rfqs(status="open")]
    assert ids == ["r1", "r2", "r3", "r4", "r5"]
    sent = [c.query.get("cursor") for c in server.calls("GET", "/communications/rfqs")]
    assert sent == [None, "c1", "c2", "c3"]
    assert all(c.query["status"] == "open" for c in server.requests)


async def test_quote_pagination_and_required_creator_filter(
    server: Scripting, client: KalshiRestClient
) -> None:
    def handler(req: RecordedRequest) -> tuple[int, Any]:
        n = int(req.query.get("cursor") or 0)
        return 200, {"quotes": [{**QUOTE, "id": f"q{n}"}], "cursor": str(n + 1) if n < 3 else ""}

    server.route("GET", "/communications/quotes", handler)
    with pytest.raises(ValueError, match="creator filter"):
        await client.list_quotes(status="open", rfq_id="r1")
    assert server.requests == []  # refused before any request
    quotes = [q async for q in client.iter_quotes(user_filter="self", status="open")]
    assert [q.id for q in quotes] == ["q0", "q1", "q2", "q3"]
    assert all(c.query["user_filter"] == "self" for c in server.requests)
    assert quotes[0].yes_bid_dollars == Decimal("0.41")


async def test_repeated_cursor_is_an_error_not_a_loop(
    server: Scripting, client: KalshiRestClient
) -> None:
    server.script(
        "GET", "/portfolio/fills", [(200, {"fills": [], "cursor": "same"})], repeat_last=True
    )
    with pytest.raises(PaginationError):
        _ = [f async for f in client.iter_fills()]
    assert len(server.requests) == 2


async def test_429_then_200_is_retried_and_succeeds(
    server: Scripting, client: KalshiRestClient
) -> None:
    server.script(
        "POST",
        "/communications/quotes",
        [(429, {"error": "too many requests"}), (201, {"id": "q-new"})],
    )
    assert await client.create_quote("r1", Decimal("0.41"), "0.55") == "q-new"
    calls = server.calls("POST", "/communications/quotes")
    assert len(calls) == 2
    # Each attempt is signed afresh.
    assert all(c.auth_ok for c in calls)


async def test_create_rfq_is_not_retried_after_an_ambiguous_500(
    server: Scripting, client: KalshiRestClient
) -> None:
    server.script("POST", "/communications/rfqs", [(500, {"code": "internal", "message": "boom"})])
    with pytest.raises(ServerError) as err:
        await client.create_rfq("M-1", contracts=10)
    assert (err.value.status, err.value.code, err.value.message) == (500, "internal", "boom")
    assert len(server.requests) == 1
    assert server.requests[0].body == {
        "market_ticker": "M-1",
        "rest_remainder": False,
        "contracts_fp": "10.00",
    }


async def test_reads_retry_5xx_until_the_deadline(
    mock: MockExchange, server: Scripting, rsa_key: TestKey
) -> None:
    server.script("GET", "/exchange/status", [(503, {"message": "maintenance"})], repeat_last=True)
    async with KalshiRestClient(
        mock.rest_url, rsa_key.signer(), retry_deadline_seconds=0.3
    ) as client:
        with pytest.raises(ServerError, match="maintenance"):
            await client.get_exchange_status()
    assert len(server.requests) > 1


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, BadRequestError), (404, NotFoundError), (409, ConflictError), (418, KalshiApiError)],
)
async def test_errors_are_typed_with_status_code_and_message(
    server: Scripting, client: KalshiRestClient, status: int, error: type[Exception]
) -> None:
    server.script(
        "PUT",
        "/communications/rfqs/r1/quotes/q1/confirm",
        [(status, {"code": "invalid_parameters", "message": "RFQ already closed", "details": "x"})],
    )
    with pytest.raises(error) as err:
        await client.confirm_quote("q1", rfq_id="r1")
    exc = err.value
    assert isinstance(exc, KalshiApiError)
    assert (exc.status, exc.code, exc.message, exc.details) == (
        status,
        "invalid_parameters",
        "RFQ already closed",
        "x",
    )
    assert "PUT /communications/rfqs/r1/quotes/q1/confirm" in str(exc)
    assert len(server.requests) == 1


async def test_rate_limited_error_after_deadline(
    mock: MockExchange, server: Scripting, rsa_key: TestKey
) -> None:
    server.script(
        "GET", "/portfolio/balance", [(429, {"error": "too many requests"})], repeat_last=True
    )
    async with KalshiRestClient(
        mock.rest_url, rsa_key.signer(), retry_deadline_seconds=0.2
    ) as client:
        with pytest.raises(RateLimitedError, match="too many requests"):
            await client.get_balance()


async def test_delete_404_after_ambiguous_failure_counts_as_done(
    server: Scripting, client: KalshiRestClient
) -> None:
    server.script(
        "DELETE",
        "/communications/rfqs/r1/quotes/q1",
        [(502, {"message": "bad gateway"}), (404, {"message": "not found"})],
    )
    await client.delete_quote("q1", rfq_id="r1")
    assert len(server.requests) == 2
    server.script("DELETE", "/communications/quotes/q2", [(404, {"message": "not found"})])
    with pytest.raises(NotFoundError):
        await client.delete_quote("q2")


async def test_connection_refused_is_a_transport_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port now.
    async with KalshiRestClient(
        f"http://127.0.0.1:{port}/trade-api/v2", retry_deadline_seconds=0.2
    ) as client:
        with pytest.raises(TransportError) as err:
            await client.get_market("M-1")
    assert err.value.sent is False
    assert err.value.status is None


@pytest.mark.parametrize(
    ("yes", "no", "message"),
    [
        ("1.01", "0", "outside"),
        ("-0.01", "0.5", "outside"),
        ("0.12345", "0.5", "more than 4 decimals"),
        ("0", "0.0000", "both 0"),
        ("0.60", "0.41", "exceeds 1"),
        ("abc", "0.4", "yes_bid"),
    ],
)
async def test_create_quote_validates_before_sending(
    server: Scripting, client: KalshiRestClient, yes: str, no: str, message: str
) -> None:
    with pytest.raises(InvalidQuoteError, match=message):
        await client.create_quote("r1", yes, no)
    assert server.requests == []


async def test_create_quote_refuses_floats(client: KalshiRestClient) -> None:
    with pytest.raises(TypeError, match="Decimal"):
        await client.create_quote("r1", 0.4, "0.5")  # type: ignore[arg-type]


async def test_create_quote_wire_format(server: Scripting, client: KalshiRestClient) -> None:
    server.script("POST", "/communications/quotes", [(201, {"id": "q9"})])
    assert await client.create_quote("r1", Decimal("0.4"), "0") == "q9"
    assert server.requests[0].body == {
        "rfq_id": "r1",
        "yes_bid": "0.4000",
        "no_bid": "0.0000",
        "rest_remainder": False,
        "post_only": True,
    }


async def test_confirm_overtakes_queued_creates_when_write_bucket_is_exhausted(
    mock: MockExchange, server: Scripting, rsa_key: TestKey
) -> None:
    server.script("POST", "/communications/quotes", [(201, {"id": "q"})], repeat_last=True)
    server.script("PUT", "/communications/rfqs/r0/quotes/q0/confirm", [(204, None)])
    async with KalshiRestClient(
        mock.rest_url,
        rsa_key.signer(),
        write_tokens_per_second=100,
        write_bucket_capacity=10,
    ) as client:
        assert client.write_bucket.try_acquire(10)  # exhaust the write lane
        creates = [
            asyncio.create_task(client.create_quote(f"r{i}", "0.40", "0.50")) for i in range(1, 6)
        ]
        await asyncio.sleep(0)  # the creates are queued first...
        confirm = asyncio.create_task(client.confirm_quote("q0", rfq_id="r0"))
        async with asyncio.timeout(5):
            await asyncio.gather(confirm, *creates)
    order = [(r.method, r.path) for r in server.requests]
    # ...and the confirm still reaches the exchange before any of them.
    assert order[0] == ("PUT", "/communications/rfqs/r0/quotes/q0/confirm")
    assert len(order) == 6


async def test_every_endpoint_uses_the_documented_method_and_path(
    server: Scripting, client: KalshiRestClient
) -> None:
    market = {
        "ticker": "M-1",
        "yes_bid_dollars": "0.40",
        "price_ranges": [{"start": "0", "end": "1", "step": "0.01"}],
    }
    replies: dict[tuple[str, str], tuple[int, Any]] = {
        ("GET", "/communications/id"): (200, {"communications_id": "comm-1"}),
        ("GET", "/communications/rfqs/r1"): (200, {"rfq": rfq(1)}),
        ("POST", "/communications/rfqs"): (201, {"id": "r-new"}),
        ("DELETE", "/communications/rfqs/r1"): (204, None),
        ("GET", "/communications/quotes/q1"): (200, {"quote": QUOTE}),
        ("GET", "/communications/rfqs/r1/quotes/q1"): (200, {"quote": QUOTE}),
        ("DELETE", "/communications/quotes/q1"): (204, None),
        ("PUT", "/communications/quotes/q1/accept"): (204, None),
        ("PUT", "/communications/rfqs/r1/quotes/q1/accept"): (204, None),
        ("PUT", "/communications/quotes/q1/confirm"): (204, None),
        ("GET", "/markets/M-1"): (200, {"market": market}),
        ("GET", "/markets"): (200, {"markets": [market], "cursor": ""}),
        ("GET", "/markets/M-1/orderbook"): (
            200,
            {"orderbook_fp": {"yes_dollars": [["0.40", "5.00"]], "no_dollars": []}},
        ),
        ("GET", "/portfolio/positions"): (
            200,
            {
                "market_positions": [{"ticker": "M-1", "position_fp": "-3.00"}],
                "event_positions": [],
                "cursor": "",
            },
        ),
        ("GET", "/portfolio/fills"): (200, {"fills": [], "cursor": ""}),
        ("GET", "/portfolio/balance"): (
            200,
            {"balance": 12345, "balance_dollars": "123.4500", "portfolio_value": 0},
        ),
        ("GET", "/exchange/status"): (200, {"exchange_active": True, "trading_active": True}),
    }
    for (method, path), reply in replies.items():
        server.script(method, path, [reply])

    assert await client.get_communications_id() == "comm-1"
    assert (await client.get_rfq("r1")).market_ticker == "M-1"
    assert await client.create_rfq("M-1", target_cost_dollars="25", rest_remainder=True) == "r-new"
    await client.delete_rfq("r1")
    assert (await client.get_quote("q1")).id == "q1"
    assert (await client.get_quote("q1", rfq_id="r1")).id == "q1"
    await client.delete_quote("q1")
    await client.accept_quote("q1", "yes")
    await client.accept_quote("q1", "no", rfq_id="r1")
    await client.confirm_quote("q1")
    assert (await client.get_market("M-1")).is_on_grid(Decimal("0.55"))
    assert [m.ticker async for m in client.iter_markets(status="open")] == ["M-1"]
    book = await client.get_orderbook("M-1", depth=5)
    assert book.yes[0].count == Decimal(5)
    assert [p.position_fp async for p in client.iter_positions()] == [Decimal(-3)]
    assert [f async for f in client.iter_fills(ticker="M-1")] == []
    assert (await client.get_balance()).balance_dollars == Decimal("123.45")
    assert (await client.get_exchange_status()).trading_active

    seen = [(r.method, r.path) for r in server.requests]
    assert set(seen) == set(replies)
    assert all(r.auth_ok for r in server.requests)
    bodies = {(r.method, r.path): r.body for r in server.requests if r.body is not None}
    assert bodies[("POST", "/communications/rfqs")] == {
        "market_ticker": "M-1",
        "rest_remainder": True,
        "target_cost_dollars": "25.0000",
    }
    assert bodies[("PUT", "/communications/quotes/q1/accept")] == {"accepted_side": "yes"}
    assert bodies[("PUT", "/communications/rfqs/r1/quotes/q1/accept")] == {"accepted_side": "no"}
    assert server.calls("GET", "/markets/M-1/orderbook")[0].query == {"depth": "5"}


async def test_malformed_success_body_is_a_clear_error(
    server: Scripting, client: KalshiRestClient
) -> None:
    server.script("GET", "/communications/rfqs/r1", [(200, {"rfq": {"id": "r1"}})])
    with pytest.raises(KalshiError, match="unexpected rfq"):
        await client.get_rfq("r1")
