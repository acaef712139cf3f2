"""Authentication: Kalshi's signed API-key headers, and the control endpoints' bearer token.

Exactly as documented: ``KALSHI-ACCESS-KEY``, ``KALSHI-ACCESS-TIMESTAMP`` (ms, within
``timestamp_window_seconds`` of now either way) and ``KALSHI-ACCESS-SIGNATURE``, the
base64 RSA-PSS or Ed25519 signature of ``timestamp + METHOD + path`` (the raw request
path, ``/trade-api/v2`` included, query excluded). The WebSocket handshake signs
``GET /trade-api/ws/v2``. Failures answer 401 with an ErrorResponse saying what was
wrong. ``GET /markets``, ``GET /markets/{ticker}`` and ``GET /exchange/status`` carry
no ``security`` in the OpenAPI document and need no signature; the two market
endpoints document a 401, so credentials sent to them must still be valid. The
``clock_skew_seconds`` fault moves the exchange's clock ahead for this check only.
"""

from __future__ import annotations

import hmac
import time

from aiohttp import web

from mmbot.kalshi.auth import (
    ACCESS_KEY_HEADER,
    ACCESS_SIGNATURE_HEADER,
    ACCESS_TIMESTAMP_HEADER,
    PublicKey,
    signing_message,
    verify_signature,
)
from mmbot.mock.config import MockConfig
from mmbot.mock.faults import Faults
from mmbot.mock.http_util import Endpoint, unauthorized
from mmbot.mock.records import User

__all__ = ["AUTH_HEADERS", "Authenticator", "control_authorized"]

AUTH_HEADERS = (ACCESS_KEY_HEADER, ACCESS_TIMESTAMP_HEADER, ACCESS_SIGNATURE_HEADER)


class Authenticator:
    """Checks a request's signed API-key headers against the registered keys."""

    def __init__(self, config: MockConfig, faults: Faults) -> None:
        self.config = config
        self.faults = faults
        #: Registered API key ids: the public key that verifies them and the account.
        self.keys: dict[str, tuple[PublicKey, User]] = {}

    def authenticate(self, request: web.Request) -> User:
        """The account whose key signed ``request``; 401 when the signature does not hold."""
        headers = request.headers
        missing = [name for name in AUTH_HEADERS if not headers.get(name)]
        if missing:
            raise unauthorized(f"missing {', '.join(missing)} header(s)")
        entry = self.keys.get(headers[ACCESS_KEY_HEADER])
        if entry is None:
            raise unauthorized("unknown API key id (KALSHI-ACCESS-KEY)")
        public_key, user = entry
        timestamp = headers[ACCESS_TIMESTAMP_HEADER]
        if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 18:
            raise unauthorized(
                "KALSHI-ACCESS-TIMESTAMP must be the request time in milliseconds since the epoch"
            )
        # The clock_skew_seconds fault moves the exchange's clock ahead of everyone's.
        exchange_ms = time.time_ns() // 1_000_000 + round(
            self.faults.config.clock_skew_seconds * 1000
        )
        skew_ms = int(timestamp) - exchange_ms
        window_ms = self.config.timestamp_window_seconds * 1000
        if skew_ms < -window_ms:
            raise unauthorized(
                f"KALSHI-ACCESS-TIMESTAMP is too old: {-skew_ms / 1000:.1f}s behind the "
                f"exchange clock (allowed: {self.config.timestamp_window_seconds:g}s)"
            )
        if skew_ms > window_ms:
            raise unauthorized(
                f"KALSHI-ACCESS-TIMESTAMP is in the future: {skew_ms / 1000:.1f}s ahead of the "
                f"exchange clock (allowed: {self.config.timestamp_window_seconds:g}s)"
            )
        path = request.raw_path.split("?", 1)[0]
        message = signing_message(timestamp, request.method, path)
        if not verify_signature(public_key, headers[ACCESS_SIGNATURE_HEADER], message):
            raise unauthorized(
                f"invalid KALSHI-ACCESS-SIGNATURE: it does not verify for "
                f"timestamp + {request.method} + {path[:200]} with this key"
            )
        return user

    def optionally_authed(self, handler: Endpoint) -> Endpoint:
        """``handler`` with credentials optional, but checked when any are sent."""

        async def endpoint(request: web.Request) -> web.StreamResponse:
            if any(request.headers.get(name) for name in AUTH_HEADERS):
                self.authenticate(request)
            return await handler(request)

        return endpoint


def control_authorized(request: web.Request, secret: bytes) -> bool:
    """Whether ``request`` carries ``Authorization: Bearer <secret>``."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    given = token.strip().encode("utf-8", "replace")
    # compare_digest on every request, so the time taken says nothing about the token.
    matches = hmac.compare_digest(given, secret)
    return matches and scheme.lower() == "bearer"
