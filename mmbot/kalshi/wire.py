"""Request values in Kalshi's wire format: fixed-point prices and counts, query strings.

Checked here, before a request is built, so that a quote the exchange would refuse costs
no write tokens and no round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from mmbot.kalshi.models import parse_fixed_point

__all__ = [
    "InvalidQuoteError",
    "decimal_places",
    "fixed_point",
    "format_count",
    "query_params",
    "validate_quote_prices",
]

_PRICE_MAX_DECIMALS = 4
_COUNT_MAX_DECIMALS = 2


class InvalidQuoteError(ValueError):
    """A quote that the exchange would reject, caught before any request is sent."""


def fixed_point(value: Decimal | str | int, name: str) -> Decimal:
    """``value`` as a Decimal; floats are a TypeError, unparsable text an InvalidQuoteError."""
    # Floats are refused outright: 0.1 + 0.2 != 0.3 is not a bug we want in a price.
    if isinstance(value, float | bool):
        raise TypeError(f"{name} must be a Decimal or a fixed-point string, not {type(value)}")
    try:
        return parse_fixed_point(value)
    except ValueError as exc:
        raise InvalidQuoteError(f"{name}: {exc}") from None


def decimal_places(value: Decimal) -> int:
    """How many digits ``value`` has after the point, trailing zeros ignored."""
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def validate_quote_prices(
    yes_bid: Decimal | str | int, no_bid: Decimal | str | int
) -> tuple[str, str]:
    """Check a quote's prices as the exchange would and return their wire strings."""
    prices = {"yes_bid": fixed_point(yes_bid, "yes_bid"), "no_bid": fixed_point(no_bid, "no_bid")}
    for name, price in prices.items():
        if not Decimal(0) <= price <= Decimal(1):
            raise InvalidQuoteError(f"{name} {price} is outside [0, 1]")
        if decimal_places(price) > _PRICE_MAX_DECIMALS:
            raise InvalidQuoteError(f"{name} {price} has more than {_PRICE_MAX_DECIMALS} decimals")
    yes, no = prices["yes_bid"], prices["no_bid"]
    if yes == 0 and no == 0:
        raise InvalidQuoteError("yes_bid and no_bid are both 0; a quote must bid on one side")
    if yes + no > 1:
        raise InvalidQuoteError(f"yes_bid + no_bid = {yes + no} exceeds 1")
    return f"{yes:.4f}", f"{no:.4f}"


def format_count(value: Decimal | str | int, name: str) -> str:
    """A positive contract count with at most two decimals, as its wire string."""
    count = fixed_point(value, name)
    if count <= 0:
        raise ValueError(f"{name} must be positive, got {count}")
    if decimal_places(count) > _COUNT_MAX_DECIMALS:
        raise ValueError(f"{name} {count} has more than {_COUNT_MAX_DECIMALS} decimals")
    return f"{count:.2f}"


def query_params(params: Mapping[str, Any]) -> dict[str, str | int]:
    """Query parameters as Kalshi reads them: None left out, booleans and lists spelled out."""
    out: dict[str, str | int] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, list | tuple):
            out[key] = ",".join(str(v) for v in value)
        else:
            out[key] = value
    return out
