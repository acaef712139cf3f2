"""Typed errors for everything the Kalshi API layer can report.

Every error carries what an operator needs to act on it: the HTTP status, the
exchange's error code and message, and which call failed. None of them ever
carries a header, a key or a signature.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "AuthError",
    "BadRequestError",
    "ConflictError",
    "KalshiApiError",
    "KalshiError",
    "NotFoundError",
    "PaginationError",
    "RateLimitedError",
    "ServerError",
    "ShadowWriteRefused",
    "TransportError",
    "error_for_status",
    "parse_error_body",
]


class KalshiError(Exception):
    """Base class of every error raised by ``mmbot.kalshi``."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        method: str | None = None,
        path: str | None = None,
        details: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.method = method
        self.path = path
        self.details = details

    def __str__(self) -> str:
        where = f"{self.method} {self.path}: " if self.method and self.path else ""
        status = f"HTTP {self.status} " if self.status is not None else ""
        code = f"[{self.code}] " if self.code else ""
        details = f" ({self.details})" if self.details else ""
        return f"{where}{status}{code}{self.message}{details}"


class TransportError(KalshiError):
    """The request never got an HTTP answer: connection refused, reset, timed out."""

    def __init__(self, message: str, *, sent: bool, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        # False only when the request certainly never reached the server (connect failed),
        # which makes even a non-idempotent call safe to retry.
        self.sent = sent


class PaginationError(KalshiError):
    """The server returned a cursor it had already returned, which would loop forever."""


class KalshiApiError(KalshiError):
    """The exchange answered with an HTTP error status."""


class BadRequestError(KalshiApiError):
    """400: the exchange rejected the request's content (off-grid price, closed RFQ...)."""


class AuthError(KalshiApiError):
    """401/403: the signature, key or permissions were refused."""


class NotFoundError(KalshiApiError):
    """404: the RFQ, quote or market does not exist (or no longer does)."""


class ConflictError(KalshiApiError):
    """409: the resource already exists or cannot be modified in its current state."""


class RateLimitedError(KalshiApiError):
    """429: the exchange's token bucket for this lane was empty."""


class ServerError(KalshiApiError):
    """5xx: the exchange failed; the request may or may not have taken effect."""


class ShadowWriteRefused(RuntimeError):
    """A write was attempted through a read-only (shadow mode) client: a programming error.

    Deliberately not a :class:`KalshiError`: callers catch those as the
    exchange's refusals or transport failures (journal them, retry, skip the RFQ), and a
    write path that shadow mode forgot to skip must crash its task loudly instead.
    """

    def __init__(self, method: str, path: str) -> None:
        super().__init__(f"{method} {path} refused: this client is read-only (shadow mode)")
        self.method = method
        self.path = path


_BY_STATUS: dict[int, type[KalshiApiError]] = {
    400: BadRequestError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitedError,
}


def parse_error_body(body: bytes) -> tuple[str | None, str | None, str | None]:
    """Extract ``(code, message, details)`` from an error body in any shape Kalshi uses."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        text = body[:200].decode("utf-8", "replace").strip()
        return None, text or None, None
    # Documented shape: {"code", "message", "details"}; also seen: {"error": {...}} and
    # the rate limiter's {"error": "too many requests"}.
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        data = data["error"]
    if not isinstance(data, dict):
        return None, None, None
    code = data.get("code")
    message = data.get("message") or data.get("msg")
    if message is None and isinstance(data.get("error"), str):
        message = data["error"]
    details = data.get("details")
    return (
        str(code) if code is not None else None,
        str(message) if message is not None else None,
        str(details) if details else None,
    )


def error_for_status(status: int, body: bytes, *, method: str, path: str) -> KalshiApiError:
    """Build the typed error for an HTTP error response."""
    code, message, details = parse_error_body(body)
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else KalshiApiError)
    return cls(
        message or f"HTTP {status}",
        status=status,
        code=code,
        method=method,
        path=path,
        details=details,
    )
