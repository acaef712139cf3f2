"""The exchange's state and its money side: accounts, orders, fills, positions, balances.

:class:`Ledger` holds every piece of the mock exchange's state and the plumbing (ids,
sequence numbers, events) the RFQ and quote lifecycle of
:class:`~mmbot.mock.exchange.Exchange` builds on, and books what an execution trades:
orders, fills, positions, realised P&L and balances. Like the rest of the state machine
it is synchronous and deterministic (see :mod:`mmbot.mock.exchange`).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from mmbot.fees import FeeAccumulator, FeeModel
from mmbot.mock.records import (
    ExchangeEvent,
    FillRecord,
    OrderRecord,
    PositionRecord,
    QuoteRecord,
    RfqRecord,
    Scheduler,
    Side,
    User,
)
from mmbot.mock.sim import SimMarket
from mmbot.mock.wire import (
    COUNT_DECIMALS,
    bad_request,
    decimal_places,
    not_found,
    paginate,
    query_int,
    query_limit,
    wire_count,
    wire_dollars,
)

__all__ = ["Ledger"]

_ONE = Decimal(1)
_ZERO = Decimal(0)
# Names from the sharding page: shard 0 is the catch-all, shard 1 holds combos.
_SHARD_DESCRIPTIONS = {0: "Default", 1: "Combos"}


class Ledger:
    """The exchange's state, accounts and money; the RFQ layer subclasses it."""

    def __init__(
        self,
        markets: Iterable[SimMarket],
        *,
        scheduler: Scheduler,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        time_scale: float = 1.0,
        seed: int = 0,
        starting_balance: Decimal = Decimal("100000"),
        fee_model: FeeModel | None = None,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.markets: dict[str, SimMarket] = {m.ticker: m for m in markets}
        self.scheduler = scheduler
        self.clock = clock
        self.time_scale = time_scale
        self.starting_balance = starting_balance
        #: Kalshi's documented fee schedule and rounding, charged on every fill.
        self.fee_model = fee_model if fee_model is not None else FeeModel()
        # Rounding fees accumulate per order, as the exchange's fee accumulator does.
        self._fee_accumulators: dict[str, FeeAccumulator] = {}
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
            raise not_found(f"market {ticker}")
        return market

    # ------------------------------------------------------------------ trades

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
        accumulator = self._fee_accumulators.setdefault(
            order.id, FeeAccumulator(self.fee_model.balance_precision)
        )
        fee = self.fee_model.charge(price, count, accumulator, maker=not is_taker).net_fee
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
                fee=fee,
            )
        )
        user.balance -= price * count + fee
        position = self.positions.get((user.user_id, market.ticker))
        if position is None:
            position = PositionRecord(market, self._next_seq())
            self.positions[(user.user_id, market.ticker)] = position
        signed = count if order.side == "yes" else -count
        position.total_traded += price * count
        position.fees_paid += fee
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
            raise not_found(f"resting order {order_id}")
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
            raise not_found(f"resting order {order_id}")
        count = order.remaining if contracts is None else contracts
        if not _ZERO < count <= order.remaining or decimal_places(count) > COUNT_DECIMALS:
            raise bad_request(f"cannot fill {count} of {order.remaining} resting contracts")
        self._fill(order, count, is_taker=False, now=self.clock())
        return order

    # ------------------------------------------------------------------ portfolio

    def list_fills(self, user: User, query: Mapping[str, str]) -> tuple[list[FillRecord], str]:
        """``GET /portfolio/fills``."""
        limit = query_limit(query, default=100, maximum=1000)
        now = self.clock()
        items = [f for f in self.fills if f.user is user and f.visible_at <= now]
        if ticker := query.get("ticker"):
            items = [f for f in items if f.market.ticker == ticker]
        if "exchange_index" in query:
            shard = query_int(query, "exchange_index")
            items = [f for f in items if f.market.exchange_index == shard]
        if "subaccount" in query:
            sub = query_int(query, "subaccount")
            items = [f for f in items if (f.subaccount or 0) == sub]
        if order_id := query.get("order_id"):
            items = [f for f in items if f.order_id == order_id]
        if "min_ts" in query:
            low = query_int(query, "min_ts")
            items = [f for f in items if f.created.timestamp() >= low]
        if "max_ts" in query:
            high = query_int(query, "max_ts")
            items = [f for f in items if f.created.timestamp() <= high]
        return paginate(items, lambda f: f.seq, limit=limit, cursor=query.get("cursor"))

    def positions_of(self, user: User) -> list[PositionRecord]:
        """Every market position the user has traded, in first-trade order."""
        return [p for (uid, _), p in self.positions.items() if uid == user.user_id]

    def list_positions(
        self, user: User, query: Mapping[str, str]
    ) -> tuple[list[PositionRecord], list[dict[str, Any]], str]:
        """``GET /portfolio/positions``: a page of market positions plus event aggregates."""
        limit = query_limit(query, default=100, maximum=1000)
        items = self.positions_of(user)
        if ticker := query.get("ticker"):
            items = [p for p in items if p.market.ticker == ticker]
        if event := query.get("event_ticker"):
            items = [p for p in items if p.market.event_ticker == event]
        if "exchange_index" in query:
            shard = query_int(query, "exchange_index")
            items = [p for p in items if p.market.exchange_index == shard]
        if count_filter := query.get("count_filter"):
            wanted = {part.strip() for part in count_filter.split(",") if part.strip()}
            if not wanted <= {"position", "total_traded"}:
                raise bad_request("count_filter accepts position and total_traded")
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
                "fees_paid_dollars": wire_dollars(sum((p.fees_paid for p in group), _ZERO)),
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
