"""HTTP plumbing shared by the mock's endpoints: URL layout, JSON responses, request parsing."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import orjson
from aiohttp import web

from mmbot.mock.records import User
from mmbot.mock.wire import MockApiError, bad_request

__all__ = [
    "CONTROL_PREFIX",
    "REST_PREFIX",
    "WS_PATH",
    "AuthedHandler",
    "Endpoint",
    "error_response",
    "int_param",
    "json_response",
    "no_content",
    "query_params",
    "read_body",
    "seconds_param",
    "unauthorized",
]

REST_PREFIX: Final = "/trade-api/v2"
WS_PATH: Final = "/trade-api/ws/v2"
CONTROL_PREFIX: Final = "/_mock"

Endpoint = Callable[[web.Request], Awaitable[web.StreamResponse]]
AuthedHandler = Callable[[web.Request, User], Awaitable[web.StreamResponse]]


def json_response(status: int, payload: Any) -> web.Response:
    """``payload`` as a JSON response with ``status``."""
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


def no_content() -> web.Response:
    """An empty 204."""
    return web.Response(status=204)


def error_response(status: int, code: str, message: str) -> web.Response:
    """An ErrorResponse body with ``status``."""
    return json_response(status, MockApiError(status, code, message).body())


def unauthorized(message: str) -> MockApiError:
    """A 401 saying what was wrong with the credentials."""
    return MockApiError(401, "unauthorized", message)


async def read_body(request: web.Request, *, required: bool) -> dict[str, Any]:
    """The request's JSON object body; ``{}`` when empty and not required."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise bad_request("a JSON request body is required", code="invalid_body")
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("request body is not valid JSON", code="invalid_body") from None
    if not isinstance(data, dict):
        raise bad_request("request body must be a JSON object", code="invalid_body")
    return data


def query_params(request: web.Request) -> dict[str, str]:
    """The query parameters, one value each."""
    # The first value wins when a parameter repeats, as most HTTP frameworks do.
    out: dict[str, str] = {}
    for key, value in request.query.items():
        out.setdefault(key, value)
    return out


def int_param(query: Mapping[str, str], name: str) -> int | None:
    """The optional integer query parameter ``name`` (None when absent or empty), or 400."""
    if name not in query or query[name] == "":
        return None
    try:
        return int(query[name])
    except ValueError:
        raise bad_request(f"{name} must be an integer") from None


def seconds_param(body: Mapping[str, Any], name: str, default: float) -> float:
    """The body field ``name`` as a finite number of seconds >= 0 (``default`` if absent)."""
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"{name} must be a number of seconds")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise bad_request(f"{name} must be a finite number >= 0")
    return seconds
