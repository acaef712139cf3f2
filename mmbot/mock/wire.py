"""The mock exchange's wire: errors, fixed-point fields, query parameters and pagination.

Shared by the state machine (:mod:`mmbot.mock.exchange`) and the HTTP layer
(:mod:`mmbot.mock.server`); nothing here knows about sockets.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

__all__ = [
    "COUNT_DECIMALS",
    "MockApiError",
    "bad_request",
    "check_self_filter",
    "decimal_places",
    "not_found",
    "paginate",
    "parse_count",
    "parse_dollars",
    "parse_subaccount",
    "query_int",
    "query_limit",
    "wire_count",
    "wire_dollars",
    "wire_ts",
]

_PRICE_DECIMALS = 4
#: Decimal places a fixed-point contract count may have.
COUNT_DECIMALS = 2
_MAX_SUBACCOUNT = 63


class MockApiError(Exception):
    """An error the exchange answers with: HTTP status and an ErrorResponse body."""

    def __init__(self, status: int, code: str, message: str, details: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        """The documented ``ErrorResponse`` body."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


def bad_request(message: str, code: str = "invalid_parameters") -> MockApiError:
    """A 400 with ``code`` (``invalid_parameters`` unless given)."""
    return MockApiError(400, code, message)


def not_found(what: str) -> MockApiError:
    """A 404 saying ``what`` was not found."""
    return MockApiError(404, "not_found", f"{what} not found")


# --------------------------------------------------------------------------- wire formatting


def wire_ts(moment: datetime) -> str:
    """RFC 3339 timestamp with a ``Z`` suffix, as Kalshi emits them."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def wire_dollars(amount: Decimal) -> str:
    """Fixed-point dollars: four decimals, six when sub-centi-cent precision is needed."""
    if amount == amount.quantize(Decimal("0.0001")):
        return f"{amount:.4f}"
    return f"{amount.quantize(Decimal('0.000001')):.6f}"


def wire_count(count: Decimal) -> str:
    """Fixed-point contract count: always two decimals in responses."""
    return f"{count:.2f}"


def decimal_places(value: Decimal) -> int:
    """How many decimal places ``value`` is written with."""
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def parse_dollars(value: Any, name: str, *, max_decimals: int = _PRICE_DECIMALS) -> Decimal:
    """Parse a FixedPointDollars request field, refusing anything but a decimal string."""
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a fixed-point dollar string")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise bad_request(f"{name} is not a number: {value[:20]!r}") from None
    if not amount.is_finite():
        raise bad_request(f"{name} must be finite")
    if decimal_places(amount) > max_decimals:
        raise bad_request(f"{name} accepts at most {max_decimals} decimal places")
    return amount


def parse_count(value: Any, name: str) -> Decimal:
    """Parse a FixedPointCount request field (0-2 decimals, positive)."""
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a fixed-point count string")
    try:
        count = Decimal(value)
    except InvalidOperation:
        raise bad_request(f"{name} is not a number: {value[:20]!r}") from None
    if not count.is_finite() or count <= 0:
        raise bad_request(f"{name} must be a positive number")
    if decimal_places(count) > COUNT_DECIMALS:
        raise bad_request(f"{name} accepts at most {COUNT_DECIMALS} decimal places")
    return count


# --------------------------------------------------------------------------- pagination


T = TypeVar("T")


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("s"):
            raise ValueError(raw)
        return int(raw[1:])
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise bad_request("invalid cursor") from None


def paginate(
    items: Sequence[T], seq_of: Callable[[T], int], *, limit: int, cursor: str | None
) -> tuple[list[T], str]:
    """Return one page of ``items`` (newest first) and the next cursor, "" on the last page.

    The cursor is the sequence number of the last item returned, so items created while a
    client pages through do not shift the pages it has not read yet.
    """
    ordered = sorted(items, key=seq_of, reverse=True)
    if cursor:
        after = _decode_cursor(cursor)
        ordered = [item for item in ordered if seq_of(item) < after]
    page = ordered[:limit]
    more = len(ordered) > limit
    return page, _encode_cursor(seq_of(page[-1])) if more and page else ""


# --------------------------------------------------------------------------- query parameters


def query_limit(query: Mapping[str, str], *, default: int, maximum: int, minimum: int = 1) -> int:
    """The ``limit`` query parameter within ``[minimum, maximum]``, ``default`` if absent."""
    if "limit" not in query:
        return default
    value = query_int(query, "limit")
    if not minimum <= value <= maximum:
        raise bad_request(f"limit must be between {minimum} and {maximum}")
    return value


def query_int(query: Mapping[str, str], name: str) -> int:
    """The integer query parameter ``name``, or 400."""
    try:
        return int(query[name])
    except ValueError:
        raise bad_request(f"{name} must be an integer") from None


def check_self_filter(value: str, name: str) -> None:
    """Refuse any value of a ``*user_filter`` parameter but ``self``."""
    if value != "self":
        raise bad_request(f"{name} accepts only 'self'")


def parse_subaccount(value: Any) -> int | None:
    """A ``subaccount`` body field: None, or an integer in the documented range."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_SUBACCOUNT:
        raise bad_request(f"subaccount must be an integer from 0 to {_MAX_SUBACCOUNT}")
    return value
