"""The mock exchange's records: users, RFQs, quotes, fills, positions, orders and events.

Plain data with the Kalshi schemas they serialise to (``wire``, ``event_msg``); the rules
that move them between states live in :mod:`mmbot.mock.exchange` and
:mod:`mmbot.mock.ledger`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from mmbot.mock.sim import SimMarket
from mmbot.mock.wire import wire_count, wire_dollars, wire_ts

__all__ = [
    "Cancellable",
    "ExchangeEvent",
    "FillRecord",
    "OrderRecord",
    "OrderStatus",
    "PositionRecord",
    "QuoteRecord",
    "RfqRecord",
    "Scheduler",
    "Side",
    "User",
]

Side = Literal["yes", "no"]

_ONE = Decimal(1)
_ZERO = Decimal(0)


class Cancellable(Protocol):
    """A scheduled callback that can be cancelled (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None:
        """Cancel the callback if it has not run."""


class Scheduler(Protocol):
    """Runs callbacks later (``asyncio`` event loops are schedulers)."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        """Run ``callback`` after ``delay`` seconds."""
        ...


# --------------------------------------------------------------------------- records


@dataclass(eq=False)
class User:
    """An account: one per registered API key, plus the simulated requesters."""

    user_id: str
    communications_id: str
    balance: Decimal
    key_id: str | None = None
    simulated: bool = False


@dataclass(eq=False)
class RfqRecord:
    """One RFQ and its lifecycle."""

    id: str
    seq: int
    creator: User
    market: SimMarket
    contracts: Decimal | None
    target_cost: Decimal | None
    rest_remainder: bool
    created_ts: datetime
    updated_ts: datetime
    subaccount: int | None = None
    status: Literal["open", "closed"] = "open"
    cancelled_ts: datetime | None = None
    cancellation_reason: str | None = None

    def wire(self, viewer: User | None) -> dict[str, Any]:
        """The ``RFQ`` schema as ``viewer`` may see it (private fields only for the creator)."""
        out: dict[str, Any] = {
            "id": self.id,
            "creator_id": self.creator.communications_id,
            "market_ticker": self.market.ticker,
            "contracts_fp": wire_count(self.contracts or _ZERO),
            "status": self.status,
            "created_ts": wire_ts(self.created_ts),
            "updated_ts": wire_ts(self.updated_ts),
            "rest_remainder": self.rest_remainder,
        }
        if self.target_cost is not None:
            out["target_cost_dollars"] = wire_dollars(self.target_cost)
        if self.market.mve_collection_ticker:
            out["mve_collection_ticker"] = self.market.mve_collection_ticker
        if self.cancelled_ts is not None:
            out["cancelled_ts"] = wire_ts(self.cancelled_ts)
        if self.cancellation_reason:
            out["cancellation_reason"] = self.cancellation_reason
        if viewer is self.creator:
            out["creator_user_id"] = self.creator.user_id
            if self.subaccount is not None:
                out["creator_subaccount"] = self.subaccount
        return out

    def event_msg(
        self, kind: Literal["rfq_created", "rfq_deleted"], *, for_creator: bool = False
    ) -> dict[str, Any]:
        """The ``msg`` of an ``rfq_created`` / ``rfq_deleted`` event (``for_creator``: its own)."""
        # The older page documents creator_id as "currently empty for rfq_created events",
        # so requesters stay anonymous until they deal; the newer one says the creator sees
        # its own id.
        anonymous = kind == "rfq_created" and not for_creator
        out: dict[str, Any] = {
            "id": self.id,
            "creator_id": "" if anonymous else self.creator.communications_id,
            "market_ticker": self.market.ticker,
            "event_ticker": self.market.event_ticker,
            # Like the REST RFQ: "0.00" when the RFQ is sized by target cost.
            "contracts_fp": wire_count(self.contracts or _ZERO),
        }
        if self.target_cost is not None:
            out["target_cost_dollars"] = wire_dollars(self.target_cost)
        if kind == "rfq_created":
            out["created_ts"] = wire_ts(self.created_ts)
        else:
            out["deleted_ts"] = wire_ts(self.cancelled_ts or self.updated_ts)
        if self.market.mve_collection_ticker:
            out["mve_collection_ticker"] = self.market.mve_collection_ticker
        return out


@dataclass(eq=False)
class QuoteRecord:
    """One quote and its lifecycle: open, accepted, confirmed, executed or cancelled."""

    id: str
    seq: int
    rfq: RfqRecord
    creator: User
    yes_bid: Decimal
    no_bid: Decimal
    yes_contracts: Decimal
    no_contracts: Decimal
    rest_remainder: bool
    post_only: bool
    created_ts: datetime
    updated_ts: datetime
    subaccount: int | None = None
    status: Literal["open", "accepted", "confirmed", "executed", "cancelled"] = "open"
    accepted_side: Side | None = None
    contracts_accepted: Decimal | None = None
    accepted_ts: datetime | None = None
    confirmed_ts: datetime | None = None
    executed_ts: datetime | None = None
    cancelled_ts: datetime | None = None
    cancellation_reason: str | None = None
    creator_order_id: str | None = None
    rfq_creator_order_id: str | None = None
    timer: Cancellable | None = None

    def contracts(self) -> Decimal:
        """The quote's size: the RFQ's contracts, or what its target cost buys on a side."""
        if self.rfq.contracts is not None:
            return self.rfq.contracts
        return self.yes_contracts if self.yes_bid > 0 else self.no_contracts

    def wire(self, viewer: User | None) -> dict[str, Any]:
        """The ``Quote`` schema as ``viewer`` may see it."""
        out: dict[str, Any] = {
            "id": self.id,
            "rfq_id": self.rfq.id,
            "creator_id": self.creator.communications_id,
            "rfq_creator_id": self.rfq.creator.communications_id,
            "market_ticker": self.rfq.market.ticker,
            "contracts_fp": wire_count(self.contracts()),
            "yes_bid_dollars": wire_dollars(self.yes_bid),
            "no_bid_dollars": wire_dollars(self.no_bid),
            "created_ts": wire_ts(self.created_ts),
            "updated_ts": wire_ts(self.updated_ts),
            "status": self.status,
            "rest_remainder": self.rest_remainder,
            "yes_contracts_fp": wire_count(self.yes_contracts),
            "no_contracts_fp": wire_count(self.no_contracts),
        }
        if self.rfq.target_cost is not None:
            out["rfq_target_cost_dollars"] = wire_dollars(self.rfq.target_cost)
        for name in ("accepted_ts", "confirmed_ts", "executed_ts", "cancelled_ts"):
            moment = getattr(self, name)
            if moment is not None:
                out[name] = wire_ts(moment)
        if self.accepted_side is not None:
            out["accepted_side"] = self.accepted_side
        if self.cancellation_reason:
            out["cancellation_reason"] = self.cancellation_reason
        if viewer is self.creator:
            out["post_only"] = self.post_only
            out["creator_user_id"] = self.creator.user_id
            if self.creator_order_id:
                out["creator_order_id"] = self.creator_order_id
            if self.subaccount is not None:
                out["creator_subaccount"] = self.subaccount
        if viewer is self.rfq.creator:
            out["rfq_creator_user_id"] = self.rfq.creator.user_id
            if self.rfq_creator_order_id:
                out["rfq_creator_order_id"] = self.rfq_creator_order_id
            if self.rfq.subaccount is not None:
                out["rfq_creator_subaccount"] = self.rfq.subaccount
        return out

    def event_msg(self, kind: Literal["quote_created", "quote_accepted"]) -> dict[str, Any]:
        """The ``msg`` of a ``quote_created`` / ``quote_accepted`` event."""
        out: dict[str, Any] = {
            "quote_id": self.id,
            "rfq_id": self.rfq.id,
            "quote_creator_id": self.creator.communications_id,
            "rfq_creator_id": self.rfq.creator.communications_id,
            "market_ticker": self.rfq.market.ticker,
            "event_ticker": self.rfq.market.event_ticker,
            "yes_bid_dollars": wire_dollars(self.yes_bid),
            "no_bid_dollars": wire_dollars(self.no_bid),
            "yes_contracts_offered_fp": wire_count(self.yes_contracts),
            "no_contracts_offered_fp": wire_count(self.no_contracts),
        }
        if self.rfq.target_cost is not None:
            out["rfq_target_cost_dollars"] = wire_dollars(self.rfq.target_cost)
        if kind == "quote_created":
            out["created_ts"] = wire_ts(self.created_ts)
        else:
            assert self.accepted_side is not None
            assert self.contracts_accepted is not None
            out["accepted_side"] = self.accepted_side
            out["contracts_accepted_fp"] = wire_count(self.contracts_accepted)
        return out


@dataclass(eq=False)
class FillRecord:
    """One fill of one user's order."""

    fill_id: str
    seq: int
    user: User
    order_id: str
    market: SimMarket
    outcome_side: Side
    count: Decimal
    yes_price: Decimal
    is_taker: bool
    created: datetime
    #: When the fill starts to appear in ``GET /portfolio/fills`` (a fault can delay it).
    visible_at: datetime
    subaccount: int | None = None
    #: The net fee charged for the fill (dollars), as ``fee_cost`` reports it.
    fee: Decimal = _ZERO

    def wire(self) -> dict[str, Any]:
        """The ``Fill`` schema."""
        return {
            "fill_id": self.fill_id,
            "trade_id": self.fill_id,
            "exchange_index": self.market.exchange_index,
            "order_id": self.order_id,
            "ticker": self.market.ticker,
            "market_ticker": self.market.ticker,
            "side": self.outcome_side,
            "action": "buy",
            "outcome_side": self.outcome_side,
            "book_side": "bid" if self.outcome_side == "yes" else "ask",
            "count_fp": wire_count(self.count),
            "yes_price_dollars": wire_dollars(self.yes_price),
            "no_price_dollars": wire_dollars(_ONE - self.yes_price),
            "is_taker": self.is_taker,
            "fee_cost": wire_dollars(self.fee),
            "created_time": wire_ts(self.created),
            "ts": int(self.created.timestamp()),
            "subaccount_number": self.subaccount or 0,
        }


@dataclass(eq=False)
class PositionRecord:
    """A user's net position in one market: > 0 YES contracts, < 0 NO contracts."""

    market: SimMarket
    seq: int
    contracts: Decimal = _ZERO
    # Cost of the open contracts; realised P&L moves out of it as positions net off.
    cost: Decimal = _ZERO
    total_traded: Decimal = _ZERO
    realized_pnl: Decimal = _ZERO
    #: Fees of every fill in the market; the realised P&L does not include them.
    fees_paid: Decimal = _ZERO
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: Set when the market settled: what the position paid out, and when.
    settled_time: datetime | None = None
    settlement_payout: Decimal | None = None

    def wire(self) -> dict[str, Any]:
        """The ``MarketPosition`` schema."""
        return {
            "ticker": self.market.ticker,
            "exchange_index": self.market.exchange_index,
            "total_traded_dollars": wire_dollars(self.total_traded),
            "position_fp": wire_count(self.contracts),
            "market_exposure_dollars": wire_dollars(self.cost),
            "realized_pnl_dollars": wire_dollars(self.realized_pnl),
            "fees_paid_dollars": wire_dollars(self.fees_paid),
            "last_updated_ts": wire_ts(self.updated),
        }


OrderStatus = Literal["resting", "cancelled", "executed"]


@dataclass(eq=False)
class OrderRecord:
    """An order an RFQ execution placed: filled at once, and resting for what did not trade.

    ``side`` is the outcome the order buys and ``price`` what it pays per contract of it.
    Nothing on the mock's simulated book trades against a resting order on its own; tests
    fill one with :meth:`~mmbot.mock.exchange.Exchange.fill_resting_order` or cancel it with
    :meth:`~mmbot.mock.exchange.Exchange.cancel_order`.
    """

    id: str
    seq: int
    user: User
    market: SimMarket
    side: Side
    price: Decimal
    #: Contracts the order was placed for: what traded plus what rests.
    initial: Decimal
    filled: Decimal
    remaining: Decimal
    status: OrderStatus
    created: datetime
    updated: datetime
    client_order_id: str
    quote_id: str | None = None
    subaccount: int | None = None

    def snapshot(self) -> dict[str, Any]:
        """The order as JSON-ready data (for the control endpoints and logs)."""
        return {
            "order_id": self.id,
            "user_id": self.user.user_id,
            "market_ticker": self.market.ticker,
            "side": self.side,
            "price_dollars": wire_dollars(self.price),
            "initial_count_fp": wire_count(self.initial),
            "fill_count_fp": wire_count(self.filled),
            "remaining_count_fp": wire_count(self.remaining),
            "status": self.status,
            "client_order_id": self.client_order_id,
            "quote_id": self.quote_id,
        }


@dataclass(frozen=True)
class ExchangeEvent:
    """A ``communications`` event to publish.

    ``messages`` maps a recipient's user id to its own ``msg`` (``quote_executed`` differs
    per party); the key ``None`` means "every subscriber" (RFQ events are public).
    ``rfq_creator`` is the user id of the RFQ's creator, for subscriptions that asked for
    their own RFQs only (``user_filter: "self"``).
    """

    type: str
    rfq_id: str
    messages: Mapping[str | None, dict[str, Any]]
    rfq_creator: str | None = None
