"""Example payloads shared by the tests, taken from Kalshi's documentation.

WebSocket messages follow the examples in docs/websockets/communications.md and REST
bodies the schemas in openapi.yaml, with fixed-point strings throughout.
"""

from __future__ import annotations

from typing import Any

RFQ_CREATED: dict[str, Any] = {
    "type": "rfq_created",
    "sid": 15,
    "msg": {
        "id": "rfq_123",
        "creator_id": "",
        "market_ticker": "FED-23DEC-T3.00",
        "event_ticker": "FED-23DEC",
        "contracts_fp": "100.00",
        "target_cost_dollars": "0.35",
        "created_ts": "2024-12-01T10:00:00Z",
    },
}
QUOTE_CREATED: dict[str, Any] = {
    "type": "quote_created",
    "sid": 15,
    "msg": {
        "quote_id": "quote_456",
        "rfq_id": "rfq_123",
        "quote_creator_id": "comm_def456",
        "rfq_creator_id": "comm_abc123",
        "market_ticker": "FED-23DEC-T3.00",
        "event_ticker": "FED-23DEC",
        "yes_bid_dollars": "0.35",
        "no_bid_dollars": "0.65",
        "yes_contracts_offered_fp": "100.00",
        "no_contracts_offered_fp": "200.00",
        "rfq_target_cost_dollars": "0.35",
        "created_ts": "2024-12-01T10:02:00Z",
        "subaccount": 3,
    },
}
QUOTE_ACCEPTED: dict[str, Any] = {
    "type": "quote_accepted",
    "sid": 15,
    "msg": {
        "quote_id": "quote_456",
        "rfq_id": "rfq_123",
        "quote_creator_id": "comm_def456",
        "rfq_creator_id": "comm_abc123",
        "market_ticker": "FED-23DEC-T3.00",
        "event_ticker": "FED-23DEC",
        "yes_bid_dollars": "0.35",
        "no_bid_dollars": "0.65",
        "accepted_side": "yes",
        "contracts_accepted_fp": "50.00",
        "yes_contracts_offered_fp": "100.00",
        "no_contracts_offered_fp": "200.00",
        "rfq_target_cost_dollars": "0.35",
        "subaccount": 3,
    },
}
QUOTE_EXECUTED: dict[str, Any] = {
    "type": "quote_executed",
    "sid": 15,
    "msg": {
        "quote_id": "quote_456",
        "rfq_id": "rfq_123",
        "quote_creator_id": "a1b2c3d4e5f6",
        "rfq_creator_id": "f6e5d4c3b2a1",
        "order_id": "order_789",
        "client_order_id": "my_client_order_123",
        "market_ticker": "FED-23DEC-T3.00",
        "executed_ts": "2024-12-01T10:05:00Z",
        "subaccount": 3,
    },
}
RFQ_DELETED: dict[str, Any] = {
    "type": "rfq_deleted",
    "sid": 15,
    "msg": {
        "id": "rfq_123",
        "creator_id": "comm_abc123",
        "market_ticker": "FED-23DEC-T3.00",
        "event_ticker": "FED-23DEC",
        "contracts_fp": "100.00",
        "target_cost_dollars": "0.35",
        "deleted_ts": "2024-12-01T10:05:00Z",
    },
}

REST_QUOTE: dict[str, Any] = {
    "id": "q1",
    "rfq_id": "r1",
    "creator_id": "me",
    "rfq_creator_id": "them",
    "market_ticker": "M-1",
    "contracts_fp": "10.00",
    "yes_bid_dollars": "0.4100",
    "no_bid_dollars": "0.5500",
    "created_ts": "2026-01-01T00:00:00Z",
    "updated_ts": "2026-01-01T00:00:00Z",
    "status": "open",
}


def rest_rfq(i: int) -> dict[str, Any]:
    """An RFQ as ``GET /communications/rfqs`` returns it, numbered ``i``."""
    return {
        "id": f"r{i}",
        "creator_id": "",
        "market_ticker": f"M-{i}",
        "contracts_fp": "10.00",
        "status": "open",
        "created_ts": "2026-01-01T00:00:00Z",
    }
