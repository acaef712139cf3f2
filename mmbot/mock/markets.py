"""Market data on the wire: the ``Market`` schema and the lifecycle ``status`` filter."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from mmbot.mock.sim import SimMarket
from mmbot.mock.wire import bad_request, wire_count, wire_dollars, wire_ts

__all__ = ["market_status", "market_status_matches", "market_wire"]

_ONE = Decimal(1)
_ZERO = Decimal(0)

_MARKET_QUERY_STATUS = {
    "open": "active",
    "unopened": "initialized",
    "paused": "inactive",
    "closed": "closed",
    "settled": "finalized",
}


def market_wire(market: SimMarket, now: datetime) -> dict[str, Any]:
    """The ``Market`` schema for a simulated market, quoting around its hidden fair value."""
    yes_bid, yes_ask = market.yes_bid(), market.yes_ask()
    out: dict[str, Any] = {
        "ticker": market.ticker,
        "event_ticker": market.event_ticker,
        "market_type": "binary",
        "title": market.title,
        "yes_sub_title": market.yes_sub_title,
        "no_sub_title": market.no_sub_title,
        "created_time": wire_ts(market.open_time),
        "updated_time": wire_ts(market.open_time),
        "open_time": wire_ts(market.open_time),
        "close_time": wire_ts(market.close_time),
        "latest_expiration_time": wire_ts(market.close_time),
        "settlement_timer_seconds": 300,
        "status": market_status(market, now),
        "notional_value_dollars": wire_dollars(_ONE),
        "yes_bid_dollars": wire_dollars(yes_bid),
        "yes_ask_dollars": wire_dollars(yes_ask),
        "no_bid_dollars": wire_dollars(_ONE - yes_ask),
        "no_ask_dollars": wire_dollars(_ONE - yes_bid),
        "yes_bid_size_fp": wire_count(Decimal(100)),
        "yes_ask_size_fp": wire_count(Decimal(100)),
        "last_price_dollars": wire_dollars(yes_bid),
        "previous_yes_bid_dollars": wire_dollars(yes_bid),
        "previous_yes_ask_dollars": wire_dollars(yes_ask),
        "previous_price_dollars": wire_dollars(yes_bid),
        "volume_fp": wire_count(_ZERO),
        "volume_24h_fp": wire_count(_ZERO),
        "open_interest_fp": wire_count(_ZERO),
        "result": market.result,
        "can_close_early": False,
        "expiration_value": market.result,
        "rules_primary": f"Resolves YES if {market.title}. (mmbot mock exchange)",
        "rules_secondary": "",
        "price_level_structure": market.price_level_structure,
        "price_ranges": [
            {
                "start": wire_dollars(b.start),
                "end": wire_dollars(b.end),
                "step": wire_dollars(b.step),
            }
            for b in market.grid
        ],
        "exchange_index": market.exchange_index,
        "settlement_bounds_type": "default" if market.settlement_floor is None else "floor",
    }
    if market.settlement_floor is not None:
        out["settlement_floor_dollars"] = wire_dollars(market.settlement_floor)
    if market.settled_time is not None:
        out["settlement_ts"] = wire_ts(market.settled_time)
        out["settlement_value_dollars"] = wire_dollars(_ONE if market.result == "yes" else _ZERO)
    if market.mve_collection_ticker:
        out["mve_collection_ticker"] = market.mve_collection_ticker
    return out


def market_status(market: SimMarket, now: datetime) -> str:
    """The market's lifecycle ``status``: active, closed, or finalized once settled."""
    if market.settled:
        return "finalized"
    return "active" if market.close_time > now else "closed"


def market_status_matches(market: SimMarket, status: str, now: datetime) -> bool:
    """Apply the ``status`` filter of ``GET /markets`` (open, closed, ...) to a market."""
    wanted = _MARKET_QUERY_STATUS.get(status)
    if wanted is None:
        raise bad_request(f"status must be one of {', '.join(_MARKET_QUERY_STATUS)}")
    return market_status(market, now) == wanted
