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

from collections.abc import Iterable, Mapping
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Literal

from mmbot.mock.ledger import Ledger
from mmbot.mock.markets import market_status, market_wire
from mmbot.mock.records import (
    ExchangeEvent,
    OrderRecord,
    PositionRecord,
    QuoteRecord,
    RfqRecord,
    Scheduler,
    Side,
    User,
)
from mmbot.mock.sim import SimMarket, is_quotable
from mmbot.mock.wire import (
    COUNT_DECIMALS,
    MockApiError,
    bad_request,
    check_self_filter,
    decimal_places,
    not_found,
    paginate,
    parse_count,
    parse_dollars,
    parse_subaccount,
    query_int,
    query_limit,
    wire_ts,
)

# The records, errors and market schema moved to their own modules; importers of this
# module keep finding them here.
__all__ = [
    "CONFIRM_WINDOW_SECONDS",
    "EXECUTION_TIMER_SECONDS",
    "MAX_OPEN_RFQS",
    "Exchange",
    "ExchangeEvent",
    "MockApiError",
    "OrderRecord",
    "QuoteRecord",
    "RfqRecord",
    "Scheduler",
    "User",
    "market_status",
    "market_wire",
    "partial_fill_size",
]

#: Confirmation window after an acceptance: (standard, High Volatility Market), seconds.
CONFIRM_WINDOW_SECONDS = (30.0, 3.0)
#: Execution timer after a confirmation: (standard, High Volatility Market), seconds.
EXECUTION_TIMER_SECONDS = (15.0, 1.0)
MAX_OPEN_RFQS = 100

_ONE = Decimal(1)
_ZERO = Decimal(0)


class Exchange(Ledger):
    """In-memory Kalshi RFQ exchange: the RFQ and quote lifecycle on top of the ledger."""

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
            raise bad_request("market_ticker is required")
        rest_remainder = body.get("rest_remainder")
        if not isinstance(rest_remainder, bool):
            raise bad_request("rest_remainder is required and must be a boolean")
        contracts = self._rfq_contracts(body)
        target_cost = self._rfq_target_cost(body)
        if (contracts is None) == (target_cost is None):
            raise bad_request("give exactly one of contracts/contracts_fp or target_cost_dollars")
        subaccount = parse_subaccount(body.get("subaccount"))
        market = self.markets.get(ticker)
        if market is None:
            raise bad_request(f"market {ticker} not found")
        if market.settled:
            raise bad_request(f"market {ticker} has settled", code="MARKET_INACTIVE")
        if not self.trading_active:
            raise bad_request("trading is paused", code="trading_paused")

        same_market = [r for r in self.open_rfqs_of(user) if r.market is market]
        if same_market and body.get("replace_existing") is True:
            for old in same_market:
                self._refuse_if_locked(old)
            for old in same_market:
                self._close_rfq(old, "replaced by a new RFQ")
        elif same_market:
            raise MockApiError(409, "conflict", f"an open RFQ already exists on market {ticker}")
        if len(self.open_rfqs_of(user)) >= MAX_OPEN_RFQS:
            raise bad_request(
                f"at most {MAX_OPEN_RFQS} open RFQs are allowed", code="too_many_open_rfqs"
            )

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
            raise bad_request("contracts must be an integer")
        if whole is not None and whole <= 0:
            raise bad_request("contracts must be positive")
        count = parse_count(fp, "contracts_fp") if fp is not None else None
        if whole is not None and count is not None and Decimal(whole) != count:
            raise bad_request("contracts and contracts_fp must match")
        return count if count is not None else (Decimal(whole) if whole is not None else None)

    @staticmethod
    def _rfq_target_cost(body: Mapping[str, Any]) -> Decimal | None:
        dollars = body.get("target_cost_dollars")
        centi_cents = body.get("target_cost_centi_cents")
        if dollars is not None and centi_cents is not None:
            raise bad_request("give target_cost_dollars or target_cost_centi_cents, not both")
        if centi_cents is not None:
            if isinstance(centi_cents, bool) or not isinstance(centi_cents, int):
                raise bad_request("target_cost_centi_cents must be an integer")
            cost = Decimal(centi_cents).scaleb(-4)
        elif dollars is not None:
            cost = parse_dollars(dollars, "target_cost_dollars")
        else:
            return None
        if cost <= 0:
            raise bad_request("the target cost must be positive")
        return cost

    def rfq(self, rfq_id: str) -> RfqRecord:
        """Return an RFQ or raise 404 (RFQs are visible to every member)."""
        rfq = self.rfqs.get(rfq_id)
        if rfq is None:
            raise not_found(f"RFQ {rfq_id}")
        return rfq

    def delete_rfq(self, user: User, rfq_id: str) -> None:
        """``DELETE /communications/rfqs/{rfq_id}``: only the creator, only while open."""
        rfq = self.rfqs.get(rfq_id)
        if rfq is None or rfq.creator is not user:
            raise not_found(f"RFQ {rfq_id}")
        if rfq.status != "open":
            raise MockApiError(404, "RFQ_CLOSED", f"RFQ {rfq_id} is already closed")
        self._refuse_if_locked(rfq)
        self._close_rfq(rfq, "deleted by creator")

    def _refuse_if_locked(self, rfq: RfqRecord) -> None:
        # Once a quote is confirmed neither party can withdraw: the trade will execute.
        if any(q.status == "confirmed" for q in self.quotes_on(rfq)):
            raise bad_request(
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
        limit = query_limit(query, default=100, maximum=100)
        items: Iterable[RfqRecord] = self.rfqs.values()
        if status := query.get("status"):
            items = [r for r in items if r.status == status]
        if ticker := query.get("market_ticker"):
            items = [r for r in items if r.market.ticker == ticker]
        if event := query.get("event_ticker"):
            items = [r for r in items if r.market.event_ticker == event]
        if query.get("user_filter"):
            check_self_filter(query["user_filter"], "user_filter")
            items = [r for r in items if r.creator is user]
        if creator := query.get("creator_user_id"):
            items = [r for r in items if r.creator.user_id == creator]
        if "subaccount" in query:
            sub = query_int(query, "subaccount")
            items = [r for r in items if r.creator is user and (r.subaccount or 0) == sub]
        return paginate(list(items), lambda r: r.seq, limit=limit, cursor=query.get("cursor"))

    # ------------------------------------------------------------------ quotes

    def create_quote(self, user: User, body: Mapping[str, Any]) -> QuoteRecord:
        """``POST /communications/quotes``; replaces the maker's previous quote on the RFQ."""
        rfq_id = body.get("rfq_id")
        if not isinstance(rfq_id, str) or not rfq_id:
            raise bad_request("rfq_id is required")
        if "yes_bid" not in body or "no_bid" not in body:
            raise bad_request("yes_bid and no_bid are required")
        rest_remainder = body.get("rest_remainder")
        if not isinstance(rest_remainder, bool):
            raise bad_request("rest_remainder is required and must be a boolean")
        post_only = body.get("post_only", False)
        if not isinstance(post_only, bool):
            raise bad_request("post_only must be a boolean")
        subaccount = parse_subaccount(body.get("subaccount"))
        yes_bid = parse_dollars(body["yes_bid"], "yes_bid")
        no_bid = parse_dollars(body["no_bid"], "no_bid")

        rfq = self.rfqs.get(rfq_id)
        if rfq is None:
            raise bad_request(f"RFQ {rfq_id} not found")
        if rfq.status != "open":
            raise bad_request(f"RFQ {rfq_id} is closed", code="RFQ_CLOSED")
        if rfq.creator is user:
            raise bad_request("cannot quote on your own RFQ")
        self.validate_prices(rfq.market, yes_bid, no_bid)
        yes_contracts, no_contracts = self._offered(rfq, yes_bid, no_bid)

        previous = [
            q
            for q in self.quotes_on(rfq)
            if q.creator is user and q.status in ("open", "accepted", "confirmed")
        ]
        if any(q.status != "open" for q in previous):
            raise bad_request("your quote on this RFQ was already accepted; it cannot be replaced")
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
                raise bad_request(f"{name} must be between 0 and 1")
            # "0" declines the side; any other price must sit on the market's grid.
            if price != 0 and not is_quotable(price, market.grid):
                raise bad_request(f"{name} {price} is not on the market's price grid")
        if yes_bid == 0 and no_bid == 0:
            raise bad_request("yes_bid and no_bid cannot both be 0")
        if yes_bid + no_bid > _ONE:
            raise bad_request("yes_bid + no_bid must not exceed 1")

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
            raise bad_request("the RFQ's target cost buys no whole contract at these prices")
        return yes, no

    def _visible_quote(self, user: User, quote_id: str, rfq_id: str | None) -> QuoteRecord:
        quote = self.quotes.get(quote_id)
        # Quotes are private between the requester and the maker: others get a 404.
        if (
            quote is None
            or (rfq_id is not None and quote.rfq.id != rfq_id)
            or user not in (quote.creator, quote.rfq.creator)
        ):
            raise not_found(f"quote {quote_id}")
        return quote

    def quote(self, user: User, quote_id: str, rfq_id: str | None = None) -> QuoteRecord:
        """``GET`` a quote the user made or received."""
        return self._visible_quote(user, quote_id, rfq_id)

    def delete_quote(self, user: User, quote_id: str, rfq_id: str | None = None) -> None:
        """``DELETE`` one of the user's own open (or accepted, unconfirmed) quotes."""
        quote = self._visible_quote(user, quote_id, rfq_id)
        if quote.creator is not user or quote.status not in ("open", "accepted"):
            raise not_found(f"open quote {quote_id}")
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
        limit = query_limit(query, default=500, maximum=500)
        filters = ("quote_creator_user_id", "rfq_creator_user_id", "user_filter", "rfq_user_filter")
        if not any(query.get(name) for name in filters):
            raise bad_request(
                "one of quote_creator_user_id, rfq_creator_user_id, user_filter or "
                "rfq_user_filter is required"
            )
        items = [q for q in self.quotes.values() if user in (q.creator, q.rfq.creator)]
        if query.get("user_filter"):
            check_self_filter(query["user_filter"], "user_filter")
            items = [q for q in items if q.creator is user]
        if query.get("rfq_user_filter"):
            check_self_filter(query["rfq_user_filter"], "rfq_user_filter")
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
            low = query_int(query, "min_ts")
            items = [q for q in items if q.updated_ts.timestamp() >= low]
        if "max_ts" in query:
            high = query_int(query, "max_ts")
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
            raise bad_request("accepted_side must be 'yes' or 'no'")
        quote = self._visible_quote(user, quote_id, rfq_id)
        if quote.rfq.creator is not user:
            raise not_found(f"quote {quote_id}")
        if quote.rfq.status != "open":
            raise bad_request(f"RFQ {quote.rfq.id} is closed", code="RFQ_CLOSED")
        if quote.status != "open":
            raise bad_request(
                f"quote {quote_id} is {quote.status}, not open", code="quote_not_open"
            )
        if any(q.status in ("accepted", "confirmed") for q in self.quotes_on(quote.rfq)):
            raise bad_request(
                "another quote on this RFQ is already accepted", code="quote_not_open"
            )
        price = quote.yes_bid if side == "yes" else quote.no_bid
        if price == 0:
            raise bad_request(f"the maker declined the {side} side of this quote")
        offered = quote.yes_contracts if side == "yes" else quote.no_contracts
        size = offered if contracts is None else contracts
        if not _ZERO < size <= offered or decimal_places(size) > COUNT_DECIMALS:
            raise bad_request(f"cannot accept {size} contracts of {offered} offered")
        if user.balance < (_ONE - price) * size:
            raise bad_request("not enough balance for this trade", code="INSUFFICIENT_BALANCE")

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
            raise not_found(f"quote {quote_id}")
        if quote.status != "accepted":
            # After the window closes the acceptance is void and the quote is cancelled.
            raise bad_request(
                f"quote {quote_id} is {quote.status}, not accepted", code="quote_not_accepted"
            )
        assert quote.accepted_side is not None
        assert quote.contracts_accepted is not None
        price = quote.yes_bid if quote.accepted_side == "yes" else quote.no_bid
        if user.balance < price * quote.contracts_accepted:
            raise bad_request("not enough balance for this trade", code="INSUFFICIENT_BALANCE")
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

    # ------------------------------------------------------------------ settlement

    def settle_market(self, ticker: str, result: str) -> list[PositionRecord]:
        """Settle ``ticker`` as ``result`` ("yes"/"no") and return the positions it paid out.

        Open RFQs on the market close (``rfq_deleted``), quotes still pending on them are
        cancelled, resting orders are cancelled, and every position is paid $1 per
        winning contract into its owner's balance; the difference to what the position
        cost is booked as realised P&L and the position is left flat.
        """
        if result not in ("yes", "no"):
            raise bad_request("result must be 'yes' or 'no'")
        market = self.market(ticker)
        if market.settled:
            raise bad_request(f"market {ticker} has already settled", code="MARKET_INACTIVE")
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


def partial_fill_size(size: Decimal) -> Decimal:
    """Half of ``size`` floored to whole contracts, at least one: what a partial fill trades."""
    half = (size / 2).to_integral_value(rounding=ROUND_FLOOR)
    return min(max(half, _ONE), size)


def _with_subaccount(msg: dict[str, Any], subaccount: int | None) -> dict[str, Any]:
    # Documented as present only when the recipient's own side used a subaccount.
    return msg if subaccount is None else {**msg, "subaccount": subaccount}
