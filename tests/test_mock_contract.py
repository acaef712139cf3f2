"""Contract tests: every response and frame of the mock validates against Kalshi's documents.

``tests/contract/kalshi-openapi.yaml`` is Kalshi's merged OpenAPI document and
``tests/contract/kalshi-asyncapi.yaml`` its WebSocket AsyncAPI document, both copied
unchanged from the project's reference material. ``tests/contract/required-overlay.yaml``
lists fields that newer documentation pages (or Kalshi's SDK) require beyond them, each
with its source; they are merged into the schemas' ``required`` lists before anything is
validated, so the mock cannot drop a field the current API requires.

Each request below goes over a real socket to the mock exchange; its response (status,
content type, body) is validated by openapi-core against the operation it belongs to.
The mock answers a few statuses the document does not list for an operation (a 400 for a
quote listing without a creator filter, 429 from the rate-limit fault); those bodies must
still be the documented ErrorResponse. The REST test also checks that every operation in
the document was exercised and every documented 2xx/4xx status was produced. The
WebSocket test drives every event type the mock emits, and every command reply, and
validates each frame against its AsyncAPI message schema.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import pytest
import yaml
from aiohttp import WSMsgType
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema_path import SchemaPath
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_core.validation.response.exceptions import InvalidData
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from mmbot.kalshi.auth import KalshiAuth, Signer
from mmbot.kalshi.models import MalformedMessage, UnknownMessage, parse_message
from mmbot.mock.server import MockConfig, MockExchange
from mmbot.mock.sim import CENT_GRID
from tests.support.keys import KEY_ID, TestKey
from tests.support.polling import eventually


def _recent() -> dict[str, str]:
    """A ``min_ts``/``max_ts`` window over the last hour: the mock refuses unbounded history."""
    now = int(time.time())
    return {"min_ts": str(now - 3600), "max_ts": str(now + 60)}


CONTRACT_DIR = Path(__file__).parent / "contract"
SPEC_PATH = CONTRACT_DIR / "kalshi-openapi.yaml"
ASYNCAPI_PATH = CONTRACT_DIR / "kalshi-asyncapi.yaml"
OVERLAY_PATH = CONTRACT_DIR / "required-overlay.yaml"
# The server the document names; requests are validated as if sent there.
SPEC_HOST = "https://api.elections.kalshi.com"
PREFIX = "/trade-api/v2"


@dataclass(frozen=True)
class Requirement:
    """One overlay entry: ``field`` must be present in ``schema`` (at path ``at``)."""

    document: str
    schema: str
    at: tuple[str, ...]
    field: str
    property: dict[str, Any] | None
    source: str

    def __str__(self) -> str:
        return f"{self.document}:{'.'.join((self.schema, *self.at, self.field))}"


def load_overlay() -> list[Requirement]:
    """The entries of ``required-overlay.yaml``, checked for shape."""
    entries = yaml.safe_load(OVERLAY_PATH.read_text())
    out = []
    for entry in entries:
        assert set(entry) <= {"document", "schema", "at", "field", "property", "source"}, entry
        assert entry["document"] in ("openapi", "asyncapi"), entry
        assert str(entry.get("source", "")).strip(), f"overlay entry without a source: {entry}"
        out.append(
            Requirement(
                entry["document"],
                entry["schema"],
                tuple(entry.get("at") or ()),
                entry["field"],
                entry.get("property"),
                " ".join(str(entry["source"]).split()),
            )
        )
    return out


def _holder(document: dict[str, Any], req: Requirement) -> dict[str, Any]:
    node: dict[str, Any] = document["components"]["schemas"][req.schema]
    for name in req.at:
        node = node["properties"][name]
    return node


def with_overlay(
    document: dict[str, Any], kind: str, overlay: Iterable[Requirement]
) -> dict[str, Any]:
    """A copy of ``document`` whose schemas also require the overlay's fields."""
    out = copy.deepcopy(document)
    for req in overlay:
        if req.document != kind:
            continue
        holder = _holder(out, req)
        required = holder.setdefault("required", [])
        if req.field not in required:
            required.append(req.field)
        if req.property is not None:
            holder.setdefault("properties", {}).setdefault(req.field, req.property)
    return out


OVERLAY = load_overlay()
BASE_SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
BASE_ASYNCAPI: dict[str, Any] = yaml.safe_load(ASYNCAPI_PATH.read_text())
SPEC_DICT = with_overlay(BASE_SPEC, "openapi", OVERLAY)
SPEC = OpenAPI.from_dict(SPEC_DICT)
SPEC_DOC = SchemaPath.from_dict(SPEC_DICT)
ERROR_SCHEMA = SPEC_DOC / "components" / "schemas" / "ErrorResponse"
ASYNCAPI = with_overlay(BASE_ASYNCAPI, "asyncapi", OVERLAY)
_ASYNCAPI_URI = "urn:kalshi-asyncapi"


def message_validator(schema: str, document: dict[str, Any] = ASYNCAPI) -> Draft202012Validator:
    """A validator for one AsyncAPI payload schema, its references resolved in ``document``."""
    registry: Registry[Any] = Registry().with_resource(
        _ASYNCAPI_URI, Resource(contents=document, specification=DRAFT202012)
    )
    return Draft202012Validator(
        {"$ref": f"{_ASYNCAPI_URI}#/components/schemas/{schema}"}, registry=registry
    )


#: The AsyncAPI payload schema of each frame type the mock sends (``ok`` only answers
#: ``list_subscriptions``: every ``update_subscription`` is an error on this channel).
FRAME_SCHEMAS = {
    "rfq_created": "rfqCreatedPayload",
    "rfq_deleted": "rfqDeletedPayload",
    "quote_created": "quoteCreatedPayload",
    "quote_accepted": "quoteAcceptedPayload",
    "quote_executed": "quoteExecutedPayload",
    "subscribed": "subscribedResponsePayload",
    "unsubscribed": "unsubscribedResponsePayload",
    "ok": "listSubscriptionsResponsePayload",
    "error": "errorResponsePayload",
}
VALIDATORS = {kind: message_validator(schema) for kind, schema in FRAME_SCHEMAS.items()}


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


@pytest.mark.slow  # every endpoint of the document over sockets
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
    # History listings must be bounded (Kalshi times out on long history): unbounded is a 500.
    unbounded = {"user_filter": "self"}
    assert (await c(maker, "GET", "/communications/quotes", params=unbounded))[0] == 500
    mine = {"user_filter": "self", **_recent()}
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
        window = _recent() if path == "/portfolio/fills" else None
        assert (await c(maker, "GET", path, params=window))[0] == 200
        assert (await c(None, "GET", path))[0] == 401
    assert (await c(maker, "GET", "/portfolio/fills"))[0] == 500  # unbounded history
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


# ----------------------------------------------------------------------------- the overlay


def test_overlay_entries_name_real_schemas_and_are_not_yet_in_the_documents() -> None:
    assert OVERLAY
    bases = {"openapi": BASE_SPEC, "asyncapi": BASE_ASYNCAPI}
    overlaid = {"openapi": SPEC_DICT, "asyncapi": ASYNCAPI}
    for req in OVERLAY:
        base_holder = _holder(bases[req.document], req)  # KeyError: a schema that is gone
        assert req.field not in base_holder.get("required", []), (
            f"{req} is now required by the document itself; drop it from the overlay"
        )
        holder = _holder(overlaid[req.document], req)
        assert req.field in holder["required"]
        assert req.field in holder.get("properties", {}), f"{req}: give its property schema"


# Where to find a live instance of each overlaid OpenAPI schema: a GET path template and
# the keys leading from its body to the instance.
_REST_SAMPLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "Market": ("/markets/{ticker}", ("market",))
}


async def test_overlay_fields_are_required_in_rest_bodies() -> None:
    async with MockExchange(MockConfig(seed=3, markets=6)) as mock, httpx.AsyncClient() as http:
        ticker = next(iter(mock.exchange.markets))
        base_spec = OpenAPI.from_dict(BASE_SPEC)
        for req in (r for r in OVERLAY if r.document == "openapi"):
            assert req.schema in _REST_SAMPLES, f"{req}: add a sample to _REST_SAMPLES"
            template, keys = _REST_SAMPLES[req.schema]
            path = PREFIX + template.format(ticker=ticker)
            body = (await http.get(mock.base_url + path)).json()
            request = MockRequest(SPEC_HOST, "get", path)

            def response(data: Any) -> MockResponse:
                return MockResponse(orjson.dumps(data), content_type="application/json")

            SPEC.validate_response(request, response(body))
            instance = body
            for key in keys:
                instance = instance[key]
            assert req.field in instance, req
            del instance[req.field]
            # The older document alone lets the field go missing; the overlay does not.
            base_spec.validate_response(request, response(body))
            with pytest.raises(InvalidData, match=re.escape(f"'{req.field}' is a required")):
                SPEC.validate_response(request, response(body))


# ----------------------------------------------------------------------------- WebSocket


async def _connect(
    session: aiohttp.ClientSession, mock: MockExchange, signer: Signer
) -> aiohttp.ClientWebSocketResponse:
    ws: aiohttp.ClientWebSocketResponse = await session.ws_connect(
        mock.ws_url, headers=signer.headers("GET", mock.ws_url)
    )
    return ws


async def _frames_until(ws: aiohttp.ClientWebSocketResponse, last_id: int) -> list[dict[str, Any]]:
    """Every text frame up to and including the reply to command ``last_id``."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            assert msg.type is WSMsgType.TEXT, msg
            frame = orjson.loads(msg.data)
            # Our own client must read every frame the mock sends, stamps and all.
            try:
                parsed = parse_message(msg.data)
            except MalformedMessage as exc:  # pragma: no cover - the failure message
                raise AssertionError(f"our parser refused a mock frame: {exc}") from None
            assert not isinstance(parsed, UnknownMessage), frame
            frames.append(frame)
            if frame.get("id") == last_id:
                return frames


async def test_every_frame_the_mock_sends_matches_the_documented_messages(
    rsa_key: TestKey, ed25519_key: TestKey
) -> None:
    config = MockConfig(seed=3, markets=12, time_scale=0.05, market_step_seconds=0)
    async with MockExchange(config) as mock, aiohttp.ClientSession() as session:
        requester = mock.register_key(KEY_ID, rsa_key.public)
        maker = mock.register_key("maker-key", ed25519_key.public)
        sockets = {
            "requester": await _connect(session, mock, rsa_key.signer()),
            "maker": await _connect(session, mock, ed25519_key.signer("maker-key")),
        }
        try:
            for ws in sockets.values():
                await ws.send_json(
                    {"id": 1, "cmd": "subscribe", "params": {"channels": ["communications"]}}
                )
            maker_ws = sockets["maker"]
            await maker_ws.send_json({"id": 2, "cmd": "list_subscriptions"})
            await maker_ws.send_json({"id": 3, "cmd": "no_such_command"})
            await maker_ws.send_json({"id": 4, "cmd": "unsubscribe", "params": {"sids": [42]}})
            await maker_ws.send_json({"id": 5, "cmd": "subscribe", "params": {}})
            ex = mock.exchange
            # Commands are handled as they arrive: wait for the subscriptions before trading.
            await eventually(
                lambda: sum(bool(c.subscriptions) for c in mock._connections) == 2,
                "both subscriptions",
            )
            tickers = [t for t, m in ex.markets.items() if m.grid == CENT_GRID and not m.hvm]

            # A whole trade (contracts), with subaccounts on both sides.
            rfq = ex.create_rfq(
                requester,
                {
                    "market_ticker": tickers[0],
                    "contracts_fp": "5",
                    "rest_remainder": False,
                    "subaccount": 1,
                },
            )
            quote = ex.create_quote(
                maker,
                {
                    "rfq_id": rfq.id,
                    "yes_bid": "0.40",
                    "no_bid": "0.50",
                    "rest_remainder": False,
                    "subaccount": 2,
                },
            )
            ex.accept_quote(requester, quote.id, {"accepted_side": "no"})
            ex.confirm_quote(maker, quote.id)
            await eventually(lambda: quote.status == "executed", "the execution")
            # An RFQ sized by target cost, created and withdrawn.
            by_cost = ex.create_rfq(
                requester,
                {"market_ticker": tickers[1], "target_cost_dollars": "20", "rest_remainder": False},
            )
            ex.delete_rfq(requester, by_cost.id)

            await maker_ws.send_json({"id": 6, "cmd": "unsubscribe", "params": {"sids": [1]}})
            await sockets["requester"].send_json({"id": 6, "cmd": "list_subscriptions"})
            frames = {name: await _frames_until(ws, 6) for name, ws in sockets.items()}
        finally:
            for ws in sockets.values():
                await ws.close()

    seen: dict[str, list[dict[str, Any]]] = {}
    for name, received in frames.items():
        for frame in received:
            kind = frame["type"]
            assert kind in VALIDATORS, f"{name} got a frame of undocumented type: {frame}"
            errors = sorted(VALIDATORS[kind].iter_errors(frame), key=str)
            assert not errors, f"{name}: {kind} breaks its schema: {errors[0].message}\n{frame}"
            seen.setdefault(kind, []).append(frame)
    assert set(seen) == set(FRAME_SCHEMAS), f"never produced: {set(FRAME_SCHEMAS) - set(seen)}"

    # Target-cost RFQ events say contracts_fp "0.00", like the REST RFQ.
    cost_events = [
        f["msg"] for f in seen["rfq_created"] + seen["rfq_deleted"] if f["msg"]["id"] == by_cost.id
    ]
    assert len(cost_events) == 4  # created and deleted, to both parties
    assert {(m["contracts_fp"], m["target_cost_dollars"]) for m in cost_events} == {
        ("0.00", "20.0000")
    }
    # Quote events carry the recipient's own subaccount, never the counterparty's.
    for name, own in (("requester", 1), ("maker", 2)):
        quote_frames = [
            f
            for f in frames[name]
            if f["type"] in ("quote_created", "quote_accepted", "quote_executed")
        ]
        assert [f["msg"]["subaccount"] for f in quote_frames] == [own] * 3, name

    # Each overlaid field is what makes a frame without it fail.
    for req in (r for r in OVERLAY if r.document == "asyncapi"):
        kind = next(k for k, schema in FRAME_SCHEMAS.items() if schema == req.schema)
        frame = copy.deepcopy(seen[kind][0])
        holder = frame
        for key in req.at:
            holder = holder[key]
        del holder[req.field]
        assert not list(message_validator(req.schema, BASE_ASYNCAPI).iter_errors(frame)), req
        with pytest.raises(ValidationError):
            VALIDATORS[kind].validate(frame)
