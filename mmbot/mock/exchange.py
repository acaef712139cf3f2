"""The mock exchange's state machine: users, RFQs, quotes, orders, fills and positions.

Everything here is synchronous and deterministic: time comes from an injected
clock, timers from an injected scheduler (``loop.call_later`` in the server, a
manual scheduler in tests), ids from a seeded generator. The HTTP and WebSocket
layer (:mod:`mmbot.mock.server`) only authenticates, parses and routes; every
documented rule is enforced here, so it can be tested without sockets.

Rules, from Kalshi's RFQ documentation:

* an RFQ is sized by contracts or by target cost, never both; at most 100 open
  RFQs per user and one open RFQ per user per market (409 otherwise);
* a quote has ``yes_bid`` and ``no_bid`` in [0, 1] on the market's price grid;
  ``"0"`` declines a side, not both; ``yes_bid + no_bid <= 1``; a maker's new
  quote on an RFQ replaces its previous one;
* accepting opens the confirmation window (30 s, 3 s on High Volatility
  Markets); an unconfirmed acceptance is voided when it closes;
* confirming starts the execution timer (15 s, 1 s on HVM); when it ends, the
  trade executes: orders and fills are recorded, positions and balances move,
  both parties get ``quote_executed`` and the RFQ closes;
* an execution may fill only part of the accepted size (the ``partial_fill`` hook,
  driven by the server's ``partial_fill_fraction`` fault); the part of a
  ``rest_remainder`` quote's offer that did not trade rests as the maker's order
  (:class:`OrderRecord`), and the part of a ``rest_remainder`` RFQ's accepted size a
  partial fill left over rests as the requester's;
* settling a market (:meth:`Exchange.settle_market`) closes its open RFQs, cancels
  its pending quotes and resting orders, pays $1 per winning contract and books the
  realised P&L on each position, which stays listed with a zero position.

Windows and timers are multiplied by ``time_scale`` so tests can run them fast.

Side convention (one place, shared with the client): ``accepted_side="yes"``
hits the maker's ``yes_bid``: the maker buys YES at ``yes_bid`` and the
requester takes NO at ``1 - yes_bid``; ``"no"`` is the mirror image.
"""

from __future__ import annotations

import base64
import binascii
import random
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any, Literal, Protocol, TypeVar

from mmbot.mock.sim import SimMarket, is_quotable

__all__ = [
    "CONFIRM_WINDOW_SECONDS",
    "EXECUTION_TIMER_SECONDS",
    "MAX_OPEN_RFQS",
    "Exchange",
    "ExchangeEvent",
    "MockApiError",
    "OrderRecord",
    "Scheduler",
    "User",
    "market_status",
    "partial_fill_size",
]

Side = Literal["yes", "no"]

#: Confirmation window after an acceptance: (standard, High Volatility Market), seconds.
CONFIRM_WINDOW_SECONDS = (30.0, 3.0)
#: Execution timer after a confirmation: (standard, High Volatility Market), seconds.
EXECUTION_TIMER_SECONDS = (15.0, 1.0)
MAX_OPEN_RFQS = 100

_ONE = Decimal(1)
_ZERO = Decimal(0)
_PRICE_DECIMALS = 4
_COUNT_DECIMALS = 2
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


def _bad(message: str, code: str = "invalid_parameters") -> MockApiError:
    return MockApiError(400, code, message)


def _not_found(what: str) -> MockApiError:
    return MockApiError(404, "not_found", f"{what} not found")


class Cancellable(Protocol):
    """A scheduled callback that can be cancelled (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None:
        """Cancel the callback if it has not run."""


class Scheduler(Protocol):
    """Runs callbacks later (``asyncio`` event loops are schedulers)."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        """Run ``callback`` after ``delay`` seconds."""
        ...


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


def _decimals(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def parse_dollars(value: Any, name: str, *, max_decimals: int = _PRICE_DECIMALS) -> Decimal:
    """Parse a FixedPointDollars request field, refusing anything but a decimal string."""
    if not isinstance(value, str):
        raise _bad(f"{name} must be a fixed-point dollar string")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise _bad(f"{name} is not a number: {value[:20]!r}") from None
    if not amount.is_finite():
        raise _bad(f"{name} must be finite")
    if _decimals(amount) > max_decimals:
        raise _bad(f"{name} accepts at most {max_decimals} decimal places")
    return amount


def parse_count(value: Any, name: str) -> Decimal:
    """Parse a FixedPointCount request field (0-2 decimals, positive)."""
    if not isinstance(value, str):
        raise _bad(f"{name} must be a fixed-point count string")
    try:
        count = Decimal(value)
    except InvalidOperation:
        raise _bad(f"{name} is not a number: {value[:20]!r}") from None
    if not count.is_finite() or count <= 0:
        raise _bad(f"{name} must be a positive number")
    if _decimals(count) > _COUNT_DECIMALS:
        raise _bad(f"{name} accepts at most {_COUNT_DECIMALS} decimal places")
    return count


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
            "fee_cost": wire_dollars(_ZERO),
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
            "fees_paid_dollars": wire_dollars(_ZERO),
            "last_updated_ts": wire_ts(self.updated),
        }


OrderStatus = Literal["resting", "cancelled", "executed"]


@dataclass(eq=False)
class OrderRecord:
    """An order an RFQ execution placed: filled at once, and resting for what did not trade.

    ``side`` is the outcome the order buys and ``price`` what it pays per contract of it.
    Nothing on the mock's simulated book trades against a resting order on its own; tests
    fill one with :meth:`Exchange.fill_resting_order` or cancel it with
    :meth:`Exchange.cancel_order`.
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
        raise _bad("invalid cursor") from None


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


# --------------------------------------------------------------------------- the exchange


class Exchange:
    """In-memory Kalshi RFQ exchange."""

    def __init__(
        self,
        markets: Iterable[SimMarket],
        *,
        scheduler: Scheduler,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        time_scale: float = 1.0,
        seed: int = 0,
        starting_balance: Decimal = Decimal("100000"),
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.markets: dict[str, SimMarket] = {m.ticker: m for m in markets}
        self.scheduler = scheduler
        self.clock = clock
        self.time_scale = time_scale
        self.starting_balance = starting_balance
        self.users: dict[str, User] = {}
        self.rfqs: dict[str, RfqRecord] = {}
        self.quotes: dict[str, QuoteRecord] = {}
        self.fills: list[FillRecord] = []
        self.positions: dict[tuple[str, str], PositionRecord] = {}
        #: Every order an execution placed, by order id (resting, executed or cancelled).
        self.orders: dict[str, OrderRecord] = {}
        self.exchange_active = True
        self.trading_active = True
        self.listeners: list[Callable[[ExchangeEvent], None]] = []
        #: Asked once per execution: True fills only part of it (see partial_fill_size).
        self.partial_fill: Callable[[], bool] = lambda: False
        #: Seconds a new fill stays out of ``GET /portfolio/fills``.
        self.fill_listing_delay: Callable[[], float] = lambda: 0.0
        # Indexes so that per-RFQ and per-user lookups stay O(1) however many RFQs the
        # exchange has seen (the benchmark pushes millions through). Entries are filtered by
        # status when read, so a stale entry is harmless.
        self._open_rfqs: dict[str, dict[str, RfqRecord]] = {}
        self._quotes_of: dict[str, list[QuoteRecord]] = {}
        # Ids come from their own generator so that a seed fixes them without coupling them
        # to the market or requester simulations.
        self._ids = random.Random(seed)  # noqa: S311 - reproducible ids, not secrets
        self._seq = 0

    # ------------------------------------------------------------------ plumbing

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    def _emit(self, event: ExchangeEvent) -> None:
        for listener in list(self.listeners):
            listener(event)

    def _scaled(self, pair: tuple[float, float], market: SimMarket) -> float:
        return (pair[1] if market.hvm else pair[0]) * self.time_scale

    def add_user(self, *, key_id: str | None = None, simulated: bool = False) -> User:
        """Create an account (one per API key; simulated requesters have none)."""
        user = User(
            user_id=self._new_id(),
            communications_id="comm_" + self._new_id().replace("-", "")[:16],
            balance=self.starting_balance,
            key_id=key_id,
            simulated=simulated,
        )
        self.users[user.user_id] = user
        return user

    def market(self, ticker: str) -> SimMarket:
        """Return a market or raise 404."""
        market = self.markets.get(ticker)
        if market is None:
            raise _not_found(f"market {ticker}")
        return market

    # ------------------------------------------------------------------ RFQs

    def open_rfqs_of(self, user: User) -> list[RfqRecord]:
        """RFQs of ``user`` that are still open."""
        mine = self._open_rfqs.get(user.user_id, {})
        return [r for r in mine.values() if r.status == "open"]

    def quotes_on(self, rfq: RfqRecord) -> list[QuoteRecord]:
        """Every quote ever made on ``rfq``, oldest first."""
        return self._quotes_of.get(rfq.id, [])

    def forget_rfq(self, rfq_id: str) -> bool:
        """Drop a closed RFQ and its quotes from memory; False while anything is pending.

        Long benchmark runs call this so the exchange's memory stays flat. An RFQ that is
        open, or has a quote with a timer still running, is kept.
        """
        rfq = self.rfqs.get(rfq_id)
        if rfq is None:
            return True
        quotes = self._quotes_of.get(rfq_id, [])
        if rfq.status == "open" or any(q.timer is not None for q in quotes):
            return False
        del self.rfqs[rfq_id]
        self._quotes_of.pop(rfq_id, None)
        self._open_rfqs.get(rfq.creator.user_id, {}).pop(rfq_id, None)
        for quote in quotes:
            self.quotes.pop(quote.id, None)
        return True

    def create_rfq(self, user: User, body: Mapping[str, Any]) -> RfqRecord:
        """``POST /communications/rfqs``."""
        ticker = body.get("market_ticker")
        if not isinstance(ticker, str) or not ticker:
            raise _bad("market_ticker is required")
        rest_remainder = body.get("rest_remainder")
        if not isinstance(rest_remainder, bool):
            raise _bad("rest_remainder is required and must be a boolean")
        contracts = self._rfq_contracts(body)
        target_cost = self._rfq_target_cost(body)
        if (contracts is None) == (target_cost is None):
            raise _bad("give exactly one of contracts/contracts_fp or target_cost_dollars")
        subaccount = _subaccount(body.get("subaccount"))
        market = self.markets.get(ticker)
        if market is None:
            raise _bad(f"market {ticker} not found")
        if market.settled:
            raise _bad(f"market {ticker} has settled", code="MARKET_INACTIVE")
        if not self.trading_active:
            raise _bad("trading is paused", code="trading_paused")

        same_market = [r for r in self.open_rfqs_of(user) if r.market is market]
        if same_market and body.get("replace_existing") is True:
            for old in same_market:
                self._refuse_if_locked(old)
            for old in same_market:
                self._close_rfq(old, "replaced by a new RFQ")
        elif same_market:
            raise MockApiError(409, "conflict", f"an open RFQ already exists on market {ticker}")
        if len(self.open_rfqs_of(user)) >= MAX_OPEN_RFQS:
            raise _bad(f"at most {MAX_OPEN_RFQS} open RFQs are allowed", code="too_many_open_rfqs")

        now = self.clock()
        rfq = RfqRecord(
            id=self._new_id(),
            seq=self._next_seq(),
            creator=user,
            market=market,
            contracts=contracts,
            target_cost=target_cost,
            rest_remainder=rest_remainder,
            created_ts=now,
            updated_ts=now,
            subaccount=subaccount,
        )
        self.rfqs[rfq.id] = rfq
        self._open_rfqs.setdefault(user.user_id, {})[rfq.id] = rfq
        messages = {
            None: rfq.event_msg("rfq_created"),
            user.user_id: rfq.event_msg("rfq_created", for_creator=True),
        }
        self._emit(ExchangeEvent("rfq_created", rfq.id, messages, rfq_creator=user.user_id))
        return rfq

    @staticmethod
    def _rfq_contracts(body: Mapping[str, Any]) -> Decimal | None:
        whole = body.get("contracts")
        fp = body.get("contracts_fp")
        if whole is not None and (isinstance(whole, bool) or not isinstance(whole, int)):
            raise _bad("contracts must be an integer")
        if whole is not None and whole <= 0:
            raise _bad("contracts must be positive")
        count = parse_count(fp, "contracts_fp") if fp is not None else None
        if whole is not None and count is not None and Decimal(whole) != count:
            raise _bad("contracts and contracts_fp must match")
        return count if count is not None else (Decimal(whole) if whole is not None else None)

    @staticmethod
    def _rfq_target_cost(body: Mapping[str, Any]) -> Decimal | None:
        dollars = body.get("target_cost_dollars")
        centi_cents = body.get("target_cost_centi_cents")
        if dollars is not None and centi_cents is not None:
            raise _bad("give target_cost_dollars or target_cost_centi_cents, not both")
        if centi_cents is not None:
            if isinstance(centi_cents, bool) or not isinstance(centi_cents, int):
                raise _bad("target_cost_centi_cents must be an integer")
            cost = Decimal(centi_cents).scaleb(-4)
        elif dollars is not None:
            cost = parse_dollars(dollars, "target_cost_dollars")
        else:
            return None
        if cost <= 0:
            raise _bad("the target cost must be positive")
        return cost

    def rfq(self, rfq_id: str) -> RfqRecord:
        """Return an RFQ or raise 404 (RFQs are visible to every member)."""
        rfq = self.rfqs.get(rfq_id)
        if rfq is None:
            raise _not_found(f"RFQ {rfq_id}")
        return rfq

    def delete_rfq(self, user: User, rfq_id: str) -> None:
        """``DELETE /communications/rfqs/{rfq_id}``: only the creator, only while open."""
        rfq = self.rfqs.get(rfq_id)
        if rfq is None or rfq.creator is not user:
            raise _not_found(f"RFQ {rfq_id}")
        if rfq.status != "open":
            raise MockApiError(404, "RFQ_CLOSED", f"RFQ {rfq_id} is already closed")
        self._refuse_if_locked(rfq)
        self._close_rfq(rfq, "deleted by creator")

    def _refuse_if_locked(self, rfq: RfqRecord) -> None:
        # Once a quote is confirmed neither party can withdraw: the trade will execute.
        if any(q.status == "confirmed" for q in self.quotes_on(rfq)):
            raise _bad(
                f"RFQ {rfq.id} has a confirmed quote awaiting execution; it cannot be withdrawn",
                code="rfq_locked",
            )

    def _close_rfq(
        self, rfq: RfqRecord, reason: str, *, executed: QuoteRecord | None = None
    ) -> None:
        now = self.clock()
        rfq.status = "closed"
        rfq.updated_ts = rfq.cancelled_ts = now
        rfq.cancellation_reason = reason
        self._open_rfqs.get(rfq.creator.user_id, {}).pop(rfq.id, None)
        for quote in self.quotes_on(rfq):
            if quote is not executed and quote.status in ("open", "accepted"):
                self._cancel_quote(quote, "RFQ closed")
        self._emit(
            ExchangeEvent(
                "rfq_deleted",
                rfq.id,
                {None: rfq.event_msg("rfq_deleted")},
                rfq_creator=rfq.creator.user_id,
            )
        )

    def list_rfqs(self, user: User, query: Mapping[str, str]) -> tuple[list[RfqRecord], str]:
        """``GET /communications/rfqs`` with its filters and pagination."""
        limit = _limit(query, default=100, maximum=100)
        items: Iterable[RfqRecord] = self.rfqs.values()
        if status := query.get("status"):
            items = [r for r in items if r.status == status]
        if ticker := query.get("market_ticker"):
            items = [r for r in items if r.market.ticker == ticker]
        if event := query.get("event_ticker"):
            items = [r for r in items if r.market.event_ticker == event]
        if query.get("user_filter"):
            _self_filter(query["user_filter"], "user_filter")
            items = [r for r in items if r.creator is user]
        if creator := query.get("creator_user_id"):
            items = [r for r in items if r.creator.user_id == creator]
        if "subaccount" in query:
            sub = _int_query(query, "subaccount")
            items = [r for r in items if r.creator is user and (r.subaccount or 0) == sub]
        return paginate(list(items), lambda r: r.seq, limit=limit, cursor=query.get("cursor"))

    # ------------------------------------------------------------------ quotes

    def create_quote(self, user: User, body: Mapping[str, Any]) -> QuoteRecord:
        """``POST /communications/quotes``; replaces the maker's previous quote on the RFQ."""
        rfq_id = body.get("rfq_id")
        if not isinstance(rfq_id, str) or not rfq_id:
            raise _bad("rfq_id is required")
        if "yes_bid" not in body or "no_bid" not in body:
            raise _bad("yes_bid and no_bid are required")
        rest_remainder = body.get("rest_remainder")
        if not isinstance(rest_remainder, bool):
            raise _bad("rest_remainder is required and must be a boolean")
        post_only = body.get("post_only", False)
        if not isinstance(post_only, bool):
            raise _bad("post_only must be a boolean")
        subaccount = _subaccount(body.get("subaccount"))
        yes_bid = parse_dollars(body["yes_bid"], "yes_bid")
        no_bid = parse_dollars(body["no_bid"], "no_bid")

        rfq = self.rfqs.get(rfq_id)
        if rfq is None:
            raise _bad(f"RFQ {rfq_id} not found")
        if rfq.status != "open":
            raise _bad(f"RFQ {rfq_id} is closed", code="RFQ_CLOSED")
        if rfq.creator is user:
            raise _bad("cannot quote on your own RFQ")
        self.validate_prices(rfq.market, yes_bid, no_bid)
        yes_contracts, no_contracts = self._offered(rfq, yes_bid, no_bid)

        previous = [
            q
            for q in self.quotes_on(rfq)
            if q.creator is user and q.status in ("open", "accepted", "confirmed")
        ]
        if any(q.status != "open" for q in previous):
            raise _bad("your quote on this RFQ was already accepted; it cannot be replaced")
        for old in previous:
            self._cancel_quote(old, "replaced by a new quote")

        now = self.clock()
        quote = QuoteRecord(
            id=self._new_id(),
            seq=self._next_seq(),
            rfq=rfq,
            creator=user,
            yes_bid=yes_bid,
            no_bid=no_bid,
            yes_contracts=yes_contracts,
            no_contracts=no_contracts,
            rest_remainder=rest_remainder,
            post_only=post_only,
            created_ts=now,
            updated_ts=now,
            subaccount=subaccount,
        )
        self.quotes[quote.id] = quote
        self._quotes_of.setdefault(rfq.id, []).append(quote)
        self._emit_quote_event(quote, "quote_created")
        return quote

    @staticmethod
    def validate_prices(market: SimMarket, yes_bid: Decimal, no_bid: Decimal) -> None:
        """Apply the documented price rules, raising 400 with the reason."""
        for name, price in (("yes_bid", yes_bid), ("no_bid", no_bid)):
            if not _ZERO <= price <= _ONE:
                raise _bad(f"{name} must be between 0 and 1")
            # "0" declines the side; any other price must sit on the market's grid.
            if price != 0 and not is_quotable(price, market.grid):
                raise _bad(f"{name} {price} is not on the market's price grid")
        if yes_bid == 0 and no_bid == 0:
            raise _bad("yes_bid and no_bid cannot both be 0")
        if yes_bid + no_bid > _ONE:
            raise _bad("yes_bid + no_bid must not exceed 1")

    @staticmethod
    def _offered(rfq: RfqRecord, yes_bid: Decimal, no_bid: Decimal) -> tuple[Decimal, Decimal]:
        """Contracts offered per side: the RFQ size, or what the target cost buys at the bid."""
        if rfq.contracts is not None:
            return (
                rfq.contracts if yes_bid > 0 else _ZERO,
                rfq.contracts if no_bid > 0 else _ZERO,
            )
        budget = rfq.target_cost
        assert budget is not None

        def buys(price: Decimal) -> Decimal:
            # Whole contracts only, as Kalshi still requires for now.
            if price <= 0:
                return _ZERO
            return (budget / price).to_integral_value(rounding=ROUND_FLOOR)

        yes, no = buys(yes_bid), buys(no_bid)
        if yes == 0 and no == 0:
            raise _bad("the RFQ's target cost buys no whole contract at these prices")
        return yes, no

    def _visible_quote(self, user: User, quote_id: str, rfq_id: str | None) -> QuoteRecord:
        quote = self.quotes.get(quote_id)
        # Quotes are private between the requester and the maker: others get a 404.
        if (
            quote is None
            or (rfq_id is not None and quote.rfq.id != rfq_id)
            or user not in (quote.creator, quote.rfq.creator)
        ):
            raise _not_found(f"quote {quote_id}")
        return quote

    def quote(self, user: User, quote_id: str, rfq_id: str | None = None) -> QuoteRecord:
        """``GET`` a quote the user made or received."""
        return self._visible_quote(user, quote_id, rfq_id)

    def delete_quote(self, user: User, quote_id: str, rfq_id: str | None = None) -> None:
        """``DELETE`` one of the user's own open (or accepted, unconfirmed) quotes."""
        quote = self._visible_quote(user, quote_id, rfq_id)
        if quote.creator is not user or quote.status not in ("open", "accepted"):
            raise _not_found(f"open quote {quote_id}")
        self._cancel_quote(quote, "deleted by creator")

    def _cancel_quote(self, quote: QuoteRecord, reason: str) -> None:
        now = self.clock()
        if quote.timer is not None:
            quote.timer.cancel()
            quote.timer = None
        quote.status = "cancelled"
        quote.updated_ts = quote.cancelled_ts = now
        quote.cancellation_reason = reason

    def list_quotes(self, user: User, query: Mapping[str, str]) -> tuple[list[QuoteRecord], str]:
        """``GET /communications/quotes``: needs a creator filter; shows only one's own deals."""
        limit = _limit(query, default=500, maximum=500)
        filters = ("quote_creator_user_id", "rfq_creator_user_id", "user_filter", "rfq_user_filter")
        if not any(query.get(name) for name in filters):
            raise _bad(
                "one of quote_creator_user_id, rfq_creator_user_id, user_filter or "
                "rfq_user_filter is required"
            )
        items = [q for q in self.quotes.values() if user in (q.creator, q.rfq.creator)]
        if query.get("user_filter"):
            _self_filter(query["user_filter"], "user_filter")
            items = [q for q in items if q.creator is user]
        if query.get("rfq_user_filter"):
            _self_filter(query["rfq_user_filter"], "rfq_user_filter")
            items = [q for q in items if q.rfq.creator is user]
        if creator := query.get("quote_creator_user_id"):
            items = [q for q in items if q.creator.user_id == creator]
        if creator := query.get("rfq_creator_user_id"):
            items = [q for q in items if q.rfq.creator.user_id == creator]
        if rfq_id := query.get("rfq_id"):
            items = [q for q in items if q.rfq.id == rfq_id]
        if status := query.get("status"):
            items = [q for q in items if q.status == status]
        if "min_ts" in query:
            low = _int_query(query, "min_ts")
            items = [q for q in items if q.updated_ts.timestamp() >= low]
        if "max_ts" in query:
            high = _int_query(query, "max_ts")
            items = [q for q in items if q.updated_ts.timestamp() <= high]
        return paginate(items, lambda q: q.seq, limit=limit, cursor=query.get("cursor"))

    def _emit_quote_event(
        self, quote: QuoteRecord, kind: Literal["quote_created", "quote_accepted"]
    ) -> None:
        msg = quote.event_msg(kind)
        # Only the two parties hear about a quote, each with its own subaccount only.
        recipients: dict[str | None, dict[str, Any]] = {
            quote.creator.user_id: _with_subaccount(msg, quote.subaccount),
            quote.rfq.creator.user_id: _with_subaccount(msg, quote.rfq.subaccount),
        }
        self._emit(ExchangeEvent(kind, quote.rfq.id, recipients, quote.rfq.creator.user_id))

    # ------------------------------------------------------------------ accept, confirm, execute

    def accept_quote(
        self,
        user: User,
        quote_id: str,
        body: Mapping[str, Any],
        *,
        rfq_id: str | None = None,
        contracts: Decimal | None = None,
    ) -> QuoteRecord:
        """Requester accepts one side; opens the confirmation window.

        ``contracts`` (simulated requesters only: the REST body has no size) accepts part of
        the quote.
        """
        side = body.get("accepted_side")
        if side not in ("yes", "no"):
            raise _bad("accepted_side must be 'yes' or 'no'")
        quote = self._visible_quote(user, quote_id, rfq_id)
        if quote.rfq.creator is not user:
            raise _not_found(f"quote {quote_id}")
        if quote.rfq.status != "open":
            raise _bad(f"RFQ {quote.rfq.id} is closed", code="RFQ_CLOSED")
        if quote.status != "open":
            raise _bad(f"quote {quote_id} is {quote.status}, not open", code="quote_not_open")
        if any(q.status in ("accepted", "confirmed") for q in self.quotes_on(quote.rfq)):
            raise _bad("another quote on this RFQ is already accepted", code="quote_not_open")
        price = quote.yes_bid if side == "yes" else quote.no_bid
        if price == 0:
            raise _bad(f"the maker declined the {side} side of this quote")
        offered = quote.yes_contracts if side == "yes" else quote.no_contracts
        size = offered if contracts is None else contracts
        if not _ZERO < size <= offered or _decimals(size) > _COUNT_DECIMALS:
            raise _bad(f"cannot accept {size} contracts of {offered} offered")
        if user.balance < (_ONE - price) * size:
            raise _bad("not enough balance for this trade", code="INSUFFICIENT_BALANCE")

        now = self.clock()
        quote.status = "accepted"
        quote.accepted_side = side
        quote.contracts_accepted = size
        quote.accepted_ts = quote.updated_ts = now
        quote.timer = self.scheduler.call_later(
            self._scaled(CONFIRM_WINDOW_SECONDS, quote.rfq.market), lambda: self._void(quote)
        )
        self._emit_quote_event(quote, "quote_accepted")
        return quote

    def _void(self, quote: QuoteRecord) -> None:
        quote.timer = None
        if quote.status == "accepted":
            self._cancel_quote(quote, "not confirmed within the confirmation window")

    def confirm_quote(self, user: User, quote_id: str, rfq_id: str | None = None) -> QuoteRecord:
        """Maker confirms an accepted quote; starts the execution timer."""
        quote = self._visible_quote(user, quote_id, rfq_id)
        if quote.creator is not user:
            raise _not_found(f"quote {quote_id}")
        if quote.status != "accepted":
            # After the window closes the acceptance is void and the quote is cancelled.
            raise _bad(
                f"quote {quote_id} is {quote.status}, not accepted", code="quote_not_accepted"
            )
        assert quote.accepted_side is not None
        assert quote.contracts_accepted is not None
        price = quote.yes_bid if quote.accepted_side == "yes" else quote.no_bid
        if user.balance < price * quote.contracts_accepted:
            raise _bad("not enough balance for this trade", code="INSUFFICIENT_BALANCE")
        if quote.timer is not None:
            quote.timer.cancel()
        quote.status = "confirmed"
        quote.confirmed_ts = quote.updated_ts = self.clock()
        quote.timer = self.scheduler.call_later(
            self._scaled(EXECUTION_TIMER_SECONDS, quote.rfq.market), lambda: self._execute(quote)
        )
        return quote

    def _execute(self, quote: QuoteRecord) -> None:
        quote.timer = None
        if quote.status != "confirmed":
            return
        assert quote.accepted_side is not None
        assert quote.contracts_accepted is not None
        now = self.clock()
        side = quote.accepted_side
        size = quote.contracts_accepted
        filled = partial_fill_size(size) if self.partial_fill() else size
        maker_price = quote.yes_bid if side == "yes" else quote.no_bid
        requester_side: Side = "no" if side == "yes" else "yes"
        offered = quote.yes_contracts if side == "yes" else quote.no_contracts
        maker, requester = quote.creator, quote.rfq.creator
        market = quote.rfq.market

        # A rest_remainder maker's order is for its whole offer, so whatever a partial
        # acceptance or a partial fill left over rests; the requester's is for what it
        # accepted. Without rest_remainder the unfilled part is cancelled.
        maker_order = self._place_order(
            maker,
            market,
            side,
            maker_price,
            offered if quote.rest_remainder else size,
            quote=quote,
            subaccount=quote.subaccount,
            now=now,
            # The changelog's maker format: "quote:<8-character hash>:<quote id>".
            client_order_id=f"quote:{self._new_id().replace('-', '')[:8]}:{quote.id}",
        )
        requester_order = self._place_order(
            requester,
            market,
            requester_side,
            _ONE - maker_price,
            size,
            quote=quote,
            subaccount=quote.rfq.subaccount,
            now=now,
        )
        quote.creator_order_id = maker_order.id
        quote.rfq_creator_order_id = requester_order.id
        self._fill(maker_order, filled, is_taker=False, now=now)
        self._fill(requester_order, filled, is_taker=True, now=now)
        for order, rests in (
            (maker_order, quote.rest_remainder),
            (requester_order, quote.rfq.rest_remainder),
        ):
            if order.status == "resting" and not rests:
                self._cancel_order(order)
        quote.status = "executed"
        quote.executed_ts = quote.updated_ts = now

        base = {
            "quote_id": quote.id,
            "rfq_id": quote.rfq.id,
            "quote_creator_id": maker.communications_id,
            "rfq_creator_id": requester.communications_id,
            "market_ticker": market.ticker,
            "executed_ts": wire_ts(now),
        }
        # Each party is told its own order, to match against its own fills.
        messages: dict[str | None, dict[str, Any]] = {
            order.user.user_id: _with_subaccount(
                {**base, "order_id": order.id, "client_order_id": order.client_order_id},
                order.subaccount,
            )
            for order in (maker_order, requester_order)
        }
        self._emit(ExchangeEvent("quote_executed", quote.rfq.id, messages, requester.user_id))
        self._close_rfq(quote.rfq, "executed", executed=quote)

    def _place_order(
        self,
        user: User,
        market: SimMarket,
        side: Side,
        price: Decimal,
        count: Decimal,
        *,
        quote: QuoteRecord,
        subaccount: int | None,
        now: datetime,
        client_order_id: str | None = None,
    ) -> OrderRecord:
        order = OrderRecord(
            id=self._new_id(),
            seq=self._next_seq(),
            user=user,
            market=market,
            side=side,
            price=price,
            initial=count,
            filled=_ZERO,
            remaining=count,
            status="resting",
            created=now,
            updated=now,
            client_order_id=client_order_id or self._new_id(),
            quote_id=quote.id,
            subaccount=subaccount,
        )
        self.orders[order.id] = order
        return order

    def _fill(self, order: OrderRecord, count: Decimal, *, is_taker: bool, now: datetime) -> None:
        """Trade ``count`` contracts of ``order``: a fill, the position and the balance."""
        user, market, price = order.user, order.market, order.price
        order.filled += count
        order.remaining -= count
        order.updated = now
        if order.remaining <= 0:
            order.remaining = _ZERO
            order.status = "executed"
        yes_price = price if order.side == "yes" else _ONE - price
        delay = max(0.0, self.fill_listing_delay())
        self.fills.append(
            FillRecord(
                fill_id=self._new_id(),
                seq=self._next_seq(),
                user=user,
                order_id=order.id,
                market=market,
                outcome_side=order.side,
                count=count,
                yes_price=yes_price,
                is_taker=is_taker,
                created=now,
                visible_at=now + timedelta(seconds=delay),
                subaccount=order.subaccount,
            )
        )
        user.balance -= price * count
        position = self.positions.get((user.user_id, market.ticker))
        if position is None:
            position = PositionRecord(market, self._next_seq())
            self.positions[(user.user_id, market.ticker)] = position
        signed = count if order.side == "yes" else -count
        position.total_traded += price * count
        held = position.contracts
        if held == 0 or (held > 0) == (signed > 0):
            position.contracts += signed
            position.cost += price * count
        else:
            # Opposite outcomes net off: each YES+NO pair pays out $1 at once.
            netted = min(abs(held), count)
            average = position.cost / abs(held)
            pair_cost = netted * (average + price)
            position.realized_pnl += netted - pair_cost
            user.balance += netted
            position.cost -= average * netted
            position.contracts += signed
            leftover = count - netted
            if position.contracts != 0 and abs(held) == netted:
                position.cost = price * leftover
        position.updated = now

    # ------------------------------------------------------------------ orders

    def resting_orders(self, market: SimMarket | None = None) -> list[OrderRecord]:
        """Orders still resting, oldest first (on ``market`` only, when given)."""
        return [
            o
            for o in self.orders.values()
            if o.status == "resting" and (market is None or o.market is market)
        ]

    def cancel_order(self, user: User, order_id: str) -> OrderRecord:
        """Cancel one of ``user``'s resting orders; 404 for anyone else's or a finished one."""
        order = self.orders.get(order_id)
        if order is None or order.user is not user or order.status != "resting":
            raise _not_found(f"resting order {order_id}")
        self._cancel_order(order)
        return order

    def _cancel_order(self, order: OrderRecord) -> None:
        order.status = "cancelled"
        order.remaining = _ZERO
        order.updated = self.clock()

    def fill_resting_order(self, order_id: str, contracts: Decimal | None = None) -> OrderRecord:
        """Trade ``contracts`` (default: all that rests) of a resting order against the book.

        The counterparty is the simulated book, which has no account; the owner gets a
        maker fill and its position and balance move as with any fill.
        """
        order = self.orders.get(order_id)
        if order is None or order.status != "resting":
            raise _not_found(f"resting order {order_id}")
        count = order.remaining if contracts is None else contracts
        if not _ZERO < count <= order.remaining or _decimals(count) > _COUNT_DECIMALS:
            raise _bad(f"cannot fill {count} of {order.remaining} resting contracts")
        self._fill(order, count, is_taker=False, now=self.clock())
        return order

    # ------------------------------------------------------------------ settlement

    def settle_market(self, ticker: str, result: str) -> list[PositionRecord]:
        """Settle ``ticker`` as ``result`` ("yes"/"no") and return the positions it paid out.

        Open RFQs on the market close (``rfq_deleted``), quotes still pending on them are
        cancelled, resting orders are cancelled, and every position is paid $1 per
        winning contract into its owner's balance; the difference to what the position
        cost is booked as realised P&L and the position is left flat.
        """
        if result not in ("yes", "no"):
            raise _bad("result must be 'yes' or 'no'")
        market = self.market(ticker)
        if market.settled:
            raise _bad(f"market {ticker} has already settled", code="MARKET_INACTIVE")
        now = self.clock()
        market.result = result
        market.settled_time = now
        for rfq in [r for r in self.rfqs.values() if r.market is market and r.status == "open"]:
            for quote in self.quotes_on(rfq):
                # Even a confirmed quote: its orders would reach a book that no longer trades.
                if quote.status in ("open", "accepted", "confirmed"):
                    self._cancel_quote(quote, "market settled")
            self._close_rfq(rfq, "market settled")
        for order in self.resting_orders(market):
            self._cancel_order(order)
        paid: list[PositionRecord] = []
        for (user_id, position_ticker), position in self.positions.items():
            if position_ticker != ticker:
                continue
            held = position.contracts
            wins = (held > 0 and result == "yes") or (held < 0 and result == "no")
            payout = abs(held) if wins else _ZERO
            self.users[user_id].balance += payout
            position.realized_pnl += payout - position.cost
            position.contracts = position.cost = _ZERO
            position.settlement_payout = payout
            position.settled_time = position.updated = now
            paid.append(position)
        return paid

    # ------------------------------------------------------------------ portfolio

    def list_fills(self, user: User, query: Mapping[str, str]) -> tuple[list[FillRecord], str]:
        """``GET /portfolio/fills``."""
        limit = _limit(query, default=100, maximum=1000)
        now = self.clock()
        items = [f for f in self.fills if f.user is user and f.visible_at <= now]
        if ticker := query.get("ticker"):
            items = [f for f in items if f.market.ticker == ticker]
        if "exchange_index" in query:
            shard = _int_query(query, "exchange_index")
            items = [f for f in items if f.market.exchange_index == shard]
        if "subaccount" in query:
            sub = _int_query(query, "subaccount")
            items = [f for f in items if (f.subaccount or 0) == sub]
        if order_id := query.get("order_id"):
            items = [f for f in items if f.order_id == order_id]
        if "min_ts" in query:
            low = _int_query(query, "min_ts")
            items = [f for f in items if f.created.timestamp() >= low]
        if "max_ts" in query:
            high = _int_query(query, "max_ts")
            items = [f for f in items if f.created.timestamp() <= high]
        return paginate(items, lambda f: f.seq, limit=limit, cursor=query.get("cursor"))

    def positions_of(self, user: User) -> list[PositionRecord]:
        """Every market position the user has traded, in first-trade order."""
        return [p for (uid, _), p in self.positions.items() if uid == user.user_id]

    def list_positions(
        self, user: User, query: Mapping[str, str]
    ) -> tuple[list[PositionRecord], list[dict[str, Any]], str]:
        """``GET /portfolio/positions``: a page of market positions plus event aggregates."""
        limit = _limit(query, default=100, maximum=1000)
        items = self.positions_of(user)
        if ticker := query.get("ticker"):
            items = [p for p in items if p.market.ticker == ticker]
        if event := query.get("event_ticker"):
            items = [p for p in items if p.market.event_ticker == event]
        if "exchange_index" in query:
            shard = _int_query(query, "exchange_index")
            items = [p for p in items if p.market.exchange_index == shard]
        if count_filter := query.get("count_filter"):
            wanted = {part.strip() for part in count_filter.split(",") if part.strip()}
            if not wanted <= {"position", "total_traded"}:
                raise _bad("count_filter accepts position and total_traded")
            items = [
                p
                for p in items
                if ("position" in wanted and p.contracts != 0)
                or ("total_traded" in wanted and p.total_traded != 0)
            ]
        page, cursor = paginate(items, lambda p: p.seq, limit=limit, cursor=query.get("cursor"))
        return page, self._event_positions(items), cursor

    @staticmethod
    def _event_positions(positions: Sequence[PositionRecord]) -> list[dict[str, Any]]:
        by_event: dict[str, list[PositionRecord]] = {}
        for position in positions:
            by_event.setdefault(position.market.event_ticker, []).append(position)
        return [
            {
                "event_ticker": event,
                "total_cost_dollars": wire_dollars(sum((p.total_traded for p in group), _ZERO)),
                "total_cost_shares_fp": wire_count(sum((abs(p.contracts) for p in group), _ZERO)),
                "event_exposure_dollars": wire_dollars(sum((p.cost for p in group), _ZERO)),
                "realized_pnl_dollars": wire_dollars(sum((p.realized_pnl for p in group), _ZERO)),
                "fees_paid_dollars": wire_dollars(_ZERO),
            }
            for event, group in by_event.items()
        ]

    def balance_wire(self, user: User) -> dict[str, Any]:
        """``GET /portfolio/balance``: cash, and positions marked at the bid."""
        value = _ZERO
        for position in self.positions_of(user):
            bid = position.market.yes_bid() if position.contracts > 0 else position.market.no_bid()
            value += abs(position.contracts) * bid

        def cents(amount: Decimal) -> int:
            return int((amount * 100).to_integral_value(rounding=ROUND_FLOOR))

        return {
            "balance": cents(user.balance),
            "balance_dollars": wire_dollars(user.balance),
            "portfolio_value": cents(value),
            "updated_ts": int(self.clock().timestamp()),
        }

    def status_wire(self) -> dict[str, Any]:
        """``GET /exchange/status``, with the per-shard breakdown the newer page documents."""
        shards = sorted({0, *(m.exchange_index for m in self.markets.values())})
        return {
            "exchange_active": self.exchange_active,
            "trading_active": self.trading_active,
            "intra_exchange_transfers_active": self.exchange_active,
            "exchange_estimated_resume_time": None,
            "exchange_index_statuses": [
                {
                    "exchange_index": shard,
                    "description": _SHARD_DESCRIPTIONS.get(shard, f"Shard {shard}"),
                    "exchange_active": self.exchange_active,
                    "trading_active": self.trading_active,
                    "intra_exchange_transfers_active": self.exchange_active,
                }
                for shard in shards
            ],
        }


def partial_fill_size(size: Decimal) -> Decimal:
    """Half of ``size`` floored to whole contracts, at least one: what a partial fill trades."""
    half = (size / 2).to_integral_value(rounding=ROUND_FLOOR)
    return min(max(half, _ONE), size)


def _with_subaccount(msg: dict[str, Any], subaccount: int | None) -> dict[str, Any]:
    # Documented as present only when the recipient's own side used a subaccount.
    return msg if subaccount is None else {**msg, "subaccount": subaccount}


# --------------------------------------------------------------------------- market data


# Names from the sharding page: shard 0 is the catch-all, shard 1 holds combos.
_SHARD_DESCRIPTIONS = {0: "Default", 1: "Combos"}

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
        raise _bad(f"status must be one of {', '.join(_MARKET_QUERY_STATUS)}")
    return market_status(market, now) == wanted


# --------------------------------------------------------------------------- query helpers


def _limit(query: Mapping[str, str], *, default: int, maximum: int, minimum: int = 1) -> int:
    if "limit" not in query:
        return default
    value = _int_query(query, "limit")
    if not minimum <= value <= maximum:
        raise _bad(f"limit must be between {minimum} and {maximum}")
    return value


def _int_query(query: Mapping[str, str], name: str) -> int:
    try:
        return int(query[name])
    except ValueError:
        raise _bad(f"{name} must be an integer") from None


def _self_filter(value: str, name: str) -> None:
    if value != "self":
        raise _bad(f"{name} accepts only 'self'")


def _subaccount(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_SUBACCOUNT:
        raise _bad(f"subaccount must be an integer from 0 to {_MAX_SUBACCOUNT}")
    return value
