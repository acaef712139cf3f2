"""Contract tests: every response of every mock endpoint validates against Kalshi's OpenAPI.

``tests/contract/kalshi-openapi.yaml`` is Kalshi's merged OpenAPI document, copied
unchanged from the project's reference material. Each request below goes over a real
socket to the mock exchange; its response (status, content type, body) is validated by
openapi-core against the operation it belongs to. The mock answers a few statuses the
document does not list for an operation (a 400 for a quote listing without a creator
filter, 429 from the rate-limit fault); those bodies must still be the documented
ErrorResponse. The last test checks that every operation in the document was exercised
and every documented 2xx/4xx status was produced.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema_path import SchemaPath
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_schema_validator import OAS30Validator

from mmbot.kalshi.auth import KalshiAuth, Signer
from mmbot.mock.server import MockConfig, MockExchange
from mmbot.mock.sim import CENT_GRID
from tests.conftest import KEY_ID, TestKey

SPEC_PATH = Path(__file__).parent / "contract" / "kalshi-openapi.yaml"
SPEC = OpenAPI.from_file_path(str(SPEC_PATH))
SPEC_DOC = SchemaPath.from_file_path(str(SPEC_PATH))
ERROR_SCHEMA = SPEC_DOC / "components" / "schemas" / "ErrorResponse"
# The server the document names; requests are validated as if sent there.
SPEC_HOST = "https://api.elections.kalshi.com"
PREFIX = "/trade-api/v2"


def _documented() -> dict[tuple[str, str], set[int]]:
    """(METHOD, path template) -> documented status codes."""
    out: dict[tuple[str, str], set[int]] = {}
    with (SPEC_DOC / "paths").open() as paths:
        for template, item in paths.items():
            for method, operation in item.items():
                codes = {int(code) for code in operation.get("responses", {})}
                out[(method.upper(), template)] = codes
    return out


DOCUMENTED = _documented()
# Statuses a test could only produce by breaking the mock on purpose; the 5xx of writes
# are produced through the fault knob below.
NOT_REQUIRED = {500, 503, 504}


class Contract:
    """Sends requests to the mock and validates every response against the document."""

    def __init__(self, mock: MockExchange) -> None:
        self.mock = mock
        self.base = mock.rest_url
        self.seen: set[tuple[str, str, int]] = set()
        self.undocumented: list[tuple[str, str, int]] = []

    async def call(
        self,
        signer: Signer | None,
        method: str,
        template: str,
        *,
        path_params: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        body: Any = None,
        raw_body: bytes | None = None,
    ) -> tuple[int, Any]:
        path = template.format(**(path_params or {}))
        content = (
            raw_body
            if raw_body is not None
            else (json.dumps(body).encode() if body is not None else None)
        )
        headers = {"Content-Type": "application/json"} if content is not None else {}
        async with httpx.AsyncClient(auth=KalshiAuth(signer) if signer else None) as http:
            response = await http.request(
                method, self.base + path, params=params, content=content, headers=headers
            )
        self._validate(method, template, path, params, content, response)
        data = response.json() if response.content else None
        return response.status_code, data

    def _validate(
        self,
        method: str,
        template: str,
        path: str,
        params: dict[str, str] | None,
        content: bytes | None,
        response: httpx.Response,
    ) -> None:
        status = response.status_code
        assert (method, template) in DOCUMENTED, f"{method} {template} is not in the document"
        self.seen.add((method, template, status))
        if status == 204:
            assert response.content == b""
        if status in DOCUMENTED[(method, template)]:
            request = MockRequest(
                SPEC_HOST,
                method.lower(),
                PREFIX + path,
                args=params or {},
                data=content or b"",
                content_type="application/json" if content else None,
            )
            mock_response = MockResponse(
                response.content,
                status_code=status,
                content_type=response.headers.get("content-type", "application/json").split(";")[0],
            )
            SPEC.validate_response(request, mock_response)
        else:
            # Not listed for this operation: it must still be an error in the documented shape.
            assert status >= 400, f"{method} {template} answered undocumented {status}"
            with ERROR_SCHEMA.open() as schema:
                OAS30Validator(dict(schema)).validate(response.json())
            self.undocumented.append((method, template, status))
        if status >= 400:
            body = response.json()
            # ErrorResponse requires no field, so the schema alone would accept any object.
            if status == 429:
                assert body == {"error": "too many requests"}  # the rate-limit doc's body
            else:
                assert isinstance(body.get("code"), str), body
                assert isinstance(body.get("message"), str), body


@pytest.fixture
async def contract(rsa_key: TestKey, ed25519_key: TestKey) -> AsyncIterator[Contract]:
    async with MockExchange(MockConfig(seed=3, markets=12, time_scale=0.05)) as mock:
        mock.register_key(KEY_ID, rsa_key.public)
        mock.register_key("maker-key", ed25519_key.public)
        yield Contract(mock)


async def test_every_endpoint_matches_the_document(
    contract: Contract, rsa_key: TestKey, ed25519_key: TestKey
) -> None:
    requester = rsa_key.signer()
    maker = ed25519_key.signer("maker-key")
    stranger = Signer("unknown-key", rsa_key.private)
    c = contract.call

    # Exchange and market data (public).
    assert (await c(None, "GET", "/exchange/status"))[0] == 200
    status, markets = await c(None, "GET", "/markets", params={"limit": "2"})
    assert status == 200
    # Standard cent-grid markets: prices formatted to 2 decimals are on the grid, and the
    # confirmation window (30 s x 0.01) leaves time for the confirm.
    ticker, other, third_ticker = [
        m.ticker
        for m in contract.mock.exchange.markets.values()
        if m.grid == CENT_GRID and not m.hvm
    ][:3]
    assert markets["cursor"]
    assert (await c(None, "GET", "/markets", params={"cursor": markets["cursor"]}))[0] == 200
    assert (await c(None, "GET", "/markets", params={"status": "bogus"}))[0] == 400
    assert (await c(None, "GET", "/markets/{ticker}", path_params={"ticker": ticker}))[0] == 200
    assert (await c(None, "GET", "/markets/{ticker}", path_params={"ticker": "NOPE"}))[0] == 404
    # Credentials are optional on market data, but bad ones are refused.
    assert (await c(stranger, "GET", "/markets"))[0] == 401
    assert (await c(stranger, "GET", "/markets/{ticker}", path_params={"ticker": ticker}))[0] == 401
    book = "/markets/{ticker}/orderbook"
    assert (await c(requester, "GET", book, path_params={"ticker": ticker}))[0] == 200
    assert (await c(requester, "GET", book, path_params={"ticker": "NOPE"}))[0] == 404
    assert (await c(None, "GET", book, path_params={"ticker": ticker}))[0] == 401

    # Identity.
    assert (await c(requester, "GET", "/communications/id"))[0] == 200
    assert (await c(stranger, "GET", "/communications/id"))[0] == 401

    # RFQs.
    rfq_body = {"market_ticker": ticker, "contracts_fp": "10.00", "rest_remainder": False}
    status, created = await c(requester, "POST", "/communications/rfqs", body=rfq_body)
    assert status == 201
    rfq_id = created["id"]
    assert (await c(requester, "POST", "/communications/rfqs", body=rfq_body))[0] == 409
    bad = {"market_ticker": ticker, "rest_remainder": False}
    assert (await c(requester, "POST", "/communications/rfqs", body=bad))[0] == 400
    assert (await c(None, "POST", "/communications/rfqs", body=rfq_body))[0] == 401
    assert (await c(maker, "GET", "/communications/rfqs", params={"status": "open"}))[0] == 200
    assert (await c(None, "GET", "/communications/rfqs"))[0] == 401
    one = "/communications/rfqs/{rfq_id}"
    assert (await c(maker, "GET", one, path_params={"rfq_id": rfq_id}))[0] == 200
    assert (await c(maker, "GET", one, path_params={"rfq_id": "nope"}))[0] == 404
    assert (await c(None, "GET", one, path_params={"rfq_id": rfq_id}))[0] == 401

    # Quotes.
    market = contract.mock.exchange.markets[ticker]
    yes, no = market.yes_bid(), market.no_bid()
    quote_body = {
        "rfq_id": rfq_id,
        "yes_bid": f"{yes:.2f}",
        "no_bid": f"{no:.2f}",
        "rest_remainder": False,
        "post_only": True,
    }
    status, quote = await c(maker, "POST", "/communications/quotes", body=quote_body)
    assert status == 201
    quote_id = quote["id"]
    over = {**quote_body, "yes_bid": "0.90", "no_bid": "0.20"}
    assert (await c(maker, "POST", "/communications/quotes", body=over))[0] == 400
    assert (await c(None, "POST", "/communications/quotes", body=quote_body))[0] == 401
    mine = {"user_filter": "self"}
    assert (await c(maker, "GET", "/communications/quotes", params=mine))[0] == 200
    assert (await c(maker, "GET", "/communications/quotes", params={"status": "open"}))[0] == 400
    assert (await c(None, "GET", "/communications/quotes", params=mine))[0] == 401
    ids = {"rfq_id": rfq_id, "quote_id": quote_id}
    bare, scoped = (
        "/communications/quotes/{quote_id}",
        "/communications/rfqs/{rfq_id}/quotes/{quote_id}",
    )
    assert (await c(maker, "GET", bare, path_params=ids))[0] == 200
    assert (await c(requester, "GET", scoped, path_params=ids))[0] == 200
    assert (await c(maker, "GET", bare, path_params={"quote_id": "nope"}))[0] == 404
    assert (await c(maker, "GET", scoped, path_params={**ids, "rfq_id": "nope"}))[0] == 404
    assert (await c(None, "GET", bare, path_params=ids))[0] == 401
    assert (await c(None, "GET", scoped, path_params=ids))[0] == 401

    # Accept, confirm (deprecated bare paths on one quote, rfq-scoped on another).
    accept, accept_scoped = bare + "/accept", scoped + "/accept"
    confirm, confirm_scoped = bare + "/confirm", scoped + "/confirm"
    assert (await c(requester, "PUT", accept, path_params=ids, body={"accepted_side": "x"}))[
        0
    ] == 400
    assert (
        await c(
            requester,
            "PUT",
            accept,
            path_params={"quote_id": "nope"},
            body={"accepted_side": "yes"},
        )
    )[0] == 404
    assert (await c(None, "PUT", accept, path_params=ids, body={"accepted_side": "yes"}))[0] == 401
    assert (await c(maker, "PUT", confirm, path_params={"quote_id": "nope"}, body={}))[0] == 404
    assert (await c(None, "PUT", confirm, path_params=ids, body={}))[0] == 401
    assert (await c(None, "PUT", confirm_scoped, path_params=ids, body={}))[0] == 401
    assert (
        await c(maker, "PUT", confirm_scoped, path_params={**ids, "quote_id": "nope"}, body={})
    )[0] == 404
    assert (await c(requester, "PUT", accept, path_params=ids, body={"accepted_side": "yes"}))[
        0
    ] == 204
    # Confirm at once: the confirmation window is scaled down with the mock's timers.
    assert (await c(maker, "PUT", confirm, path_params=ids, body={}))[0] == 204
    assert (
        await c(requester, "PUT", accept_scoped, path_params=ids, body={"accepted_side": "yes"})
    )[0] == 400  # already accepted
    assert (
        await c(
            requester,
            "PUT",
            accept_scoped,
            path_params={**ids, "quote_id": "nope"},
            body={"accepted_side": "yes"},
        )
    )[0] == 404
    assert (await c(None, "PUT", accept_scoped, path_params=ids, body={"accepted_side": "yes"}))[
        0
    ] == 401

    # Second RFQ/quote for the rfq-scoped confirm and for the deletes.
    _, second = await c(
        requester, "POST", "/communications/rfqs", body={**rfq_body, "market_ticker": other}
    )
    other_market = contract.mock.exchange.markets[other]
    second_quote = {
        **quote_body,
        "rfq_id": second["id"],
        "yes_bid": f"{other_market.yes_bid():.2f}",
        "no_bid": "0",
    }
    _, q2 = await c(maker, "POST", "/communications/quotes", body=second_quote)
    ids2 = {"rfq_id": second["id"], "quote_id": q2["id"]}
    assert (
        await c(requester, "PUT", accept_scoped, path_params=ids2, body={"accepted_side": "yes"})
    )[0] == 204
    assert (await c(maker, "PUT", confirm_scoped, path_params=ids2, body={}))[0] == 204

    # Deletes: bare and scoped quote deletes, then the RFQ.
    _, third = await c(
        maker, "POST", "/communications/rfqs", body={**rfq_body, "market_ticker": third_ticker}
    )
    third_market = contract.mock.exchange.markets[third_ticker]
    q_body = {
        **quote_body,
        "rfq_id": third["id"],
        "yes_bid": f"{third_market.yes_bid():.2f}",
        "no_bid": "0",
    }
    _, q3 = await c(requester, "POST", "/communications/quotes", body=q_body)
    ids3 = {"rfq_id": third["id"], "quote_id": q3["id"]}
    assert (await c(maker, "DELETE", scoped, path_params=ids3))[0] == 404  # not the maker
    assert (await c(None, "DELETE", scoped, path_params=ids3))[0] == 401
    assert (await c(requester, "DELETE", scoped, path_params=ids3))[0] == 204
    _, q4 = await c(requester, "POST", "/communications/quotes", body=q_body)
    assert (await c(None, "DELETE", bare, path_params={"quote_id": q4["id"]}))[0] == 401
    assert (await c(requester, "DELETE", bare, path_params={"quote_id": q4["id"]}))[0] == 204
    assert (await c(requester, "DELETE", bare, path_params={"quote_id": q4["id"]}))[0] == 404
    assert (await c(requester, "DELETE", one, path_params={"rfq_id": third["id"]}))[0] == 404
    assert (await c(None, "DELETE", one, path_params={"rfq_id": third["id"]}))[0] == 401
    assert (await c(maker, "DELETE", one, path_params={"rfq_id": third["id"]}))[0] == 204

    # Portfolio: after the executions above, fills and positions exist.
    settled = asyncio.Event()

    def check_settled(_: object = None) -> None:
        if len(contract.mock.exchange.fills) >= 4:  # two trades, two parties each
            settled.set()

    contract.mock.exchange.listeners.append(check_settled)
    check_settled()
    async with asyncio.timeout(5):
        await settled.wait()
    for path in ("/portfolio/positions", "/portfolio/fills", "/portfolio/balance"):
        assert (await c(maker, "GET", path))[0] == 200
        assert (await c(None, "GET", path))[0] == 401
    positions = await c(maker, "GET", "/portfolio/positions", params={"count_filter": "nonsense"})
    assert positions[0] == 400
    assert (await c(maker, "GET", "/portfolio/fills", params={"limit": "5000"}))[0] == 400

    # Faults: writes answered with 500 (documented) and 429 (not documented per operation).
    async with httpx.AsyncClient(headers=contract.mock.control_headers) as http:
        await http.post(
            contract.mock.rest_url.replace(PREFIX, "") + "/_mock/faults",
            json={"write_5xx_fraction": 1.0},
        )
    assert (await c(maker, "POST", "/communications/rfqs", body=rfq_body))[0] == 500
    assert (await c(requester, "POST", "/communications/quotes", body=q_body))[0] == 500
    async with httpx.AsyncClient(headers=contract.mock.control_headers) as http:
        await http.post(
            contract.mock.rest_url.replace(PREFIX, "") + "/_mock/faults",
            json={"write_5xx_fraction": 0.0, "write_429_fraction": 1.0},
        )
    assert (await c(maker, "POST", "/communications/rfqs", body=rfq_body))[0] == 429

    missing_ops = {op for op in DOCUMENTED if not any((m, t) == op for m, t, _ in contract.seen)}
    assert missing_ops == set(), f"operations never exercised: {sorted(missing_ops)}"
    missing_statuses = {
        (method, template, code)
        for (method, template), codes in DOCUMENTED.items()
        for code in codes - NOT_REQUIRED
        if (method, template, code) not in contract.seen
    }
    assert missing_statuses == set(), (
        f"documented statuses never produced: {sorted(missing_statuses)}"
    )
    assert {status for *_, status in contract.undocumented} <= {400, 429}
