"""Execution to booking: a confirmed quote's fills are looked up and booked.

``quote_executed`` is booked from the fills the exchange lists under the execution's
``order_id``: a partial fill books what filled and releases the rest; fills that never show
up are left to the next reconciliation, which holds the reservation until the exchange's
positions include them. An execution event that never comes is asked for over REST, less
often each time.

Each execution's fee is the sum of its fills' ``fee_cost``; when a fill does not report
one, the whole execution is priced with :attr:`Executions.fee_model` instead. The fee is
charged to the risk book and journalled with the execution, net of which the realised
P&L is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

import structlog

from mmbot.fees import FeeModel
from mmbot.journal import Journal
from mmbot.kalshi.errors import KalshiError
from mmbot.kalshi.models import (
    MakerFill,
    Quote,
    QuoteExecutedMsg,
    Rfq,
    accepted_bid,
)
from mmbot.marketdata import MarketData
from mmbot.quoting import timing
from mmbot.quoting.book import LiveQuote, QuoteBook
from mmbot.quoting.gateway import QuoteGateway
from mmbot.quoting.pricing import contracts_for
from mmbot.quoting.stats import Counters
from mmbot.quoting.withdraw import Spawn, Withdrawer
from mmbot.risk import RiskBook
from mmbot.strategy import FillInfo, Strategy

__all__ = ["Executions"]

log = structlog.get_logger("mmbot.quoting")

_ZERO = Decimal(0)
#: Seconds a fill lookup reaches before the RFQ's creation: the exchange's clock may differ.
_FILL_CLOCK_SLACK_SECONDS = 300


class Executions:
    """Books the executions of our confirmed quotes from the fills the exchange lists."""

    def __init__(
        self,
        rest: QuoteGateway,
        risk: RiskBook,
        journal: Journal,
        book: QuoteBook,
        counters: Counters,
        withdrawer: Withdrawer,
        market_data: MarketData,
        *,
        spawn: Spawn,
        schedule_execution_check: Callable[[LiveQuote, float], None],
        sleep: Callable[[float], Coroutine[Any, Any, None]],
    ) -> None:
        """Look up fills through ``rest`` for the quotes ``book`` tracks."""
        self._rest = rest
        self._risk = risk
        self._journal = journal
        self._book = book
        self._counters = counters
        self._withdrawer = withdrawer
        self._market_data = market_data
        self._spawn = spawn
        self._schedule_execution_check = schedule_execution_check
        self._sleep = sleep
        #: Our communications id: executions naming another maker as the quote's creator
        #: are not ours to book. None until the engine knows it.
        self.me: str | None = None
        #: Asked for a reconciliation with the exchange when only its positions can settle
        #: an execution (its fills never showed).
        self.on_reconcile_needed: Callable[[str], None] | None = None
        #: Prices the fee of an execution whose fills do not report theirs. Kalshi's
        #: published schedule by default, which the ``fees`` settings default to as well.
        self.fee_model = FeeModel()

    def _ours(self, creator_id: str | None) -> bool:
        """Whether an event names us as the quote's creator (always, before we know who)."""
        return self.me is None or creator_id == self.me

    # ------------------------------------------------------------------ execution

    def on_quote_executed(self, msg: QuoteExecutedMsg) -> None:
        """A confirmed quote executed: book it from the fills of its order."""
        if not self._ours(msg.quote_creator_id):
            return
        live = self._book.by_quote.get(msg.quote_id)
        if live is None or live.fill is None or live.state != "confirmed":
            # Unknown here (e.g. confirmed by an earlier run), or settled already: positions
            # are reconciled from the exchange instead.
            log.info("execution_of_untracked_quote", quote_id=msg.quote_id)
            return
        self._book.set_state(live, "executing")
        live.order_id = msg.order_id
        self._spawn(self._book_execution(live), "execution")

    async def _book_execution(self, live: LiveQuote) -> None:
        """Look up the execution's fills (they may trail the event) and book them."""
        filled: tuple[Decimal, Decimal | None] | None = None
        order_id = live.order_id
        for delay in timing._FILL_LOOKUP_DELAYS:
            if delay:
                await self._sleep(delay)
            if live.state != "executing":
                return  # settled meanwhile (by a reconciliation)
            filled = await self._filled(live, order_id)
            if filled is not None:
                break
        if live.state != "executing":
            return
        if filled is None:
            # The reservation stays held: the fill may be real. Only the exchange's
            # positions can settle it now.
            log.error(
                "execution_fills_missing",
                quote_id=live.quote_id,
                order_id=order_id,
                lookups=len(timing._FILL_LOOKUP_DELAYS),
            )
            if self.on_reconcile_needed is not None:
                self.on_reconcile_needed("fills_missing")
            return
        self._executed(live, order_id=order_id, filled=filled[0], fee=filled[1])

    async def _filled(
        self, live: LiveQuote, order_id: str | None
    ) -> tuple[Decimal, Decimal | None] | None:
        """Contracts filled under ``order_id`` and their fee (None: not reported); None if none.

        None as a whole when the exchange lists no fill (yet).
        """
        fill = live.fill
        assert fill is not None
        if not order_id:
            return None
        # The fill cannot predate the RFQ: listing from its creation (less clock slack) is one
        # small window instead of the whole lookback. Unknown creation: the lookback.
        created = live.rfq.created_ts
        since = None if created is None else int(created.timestamp()) - _FILL_CLOCK_SLACK_SECONDS
        try:
            fills = [f async for f in self._rest.iter_fills(order_id=order_id, min_ts=since)]
        except KalshiError as exc:
            log.warning("fills_lookup_failed", quote_id=live.quote_id, error=str(exc))
            return None
        mine = [f for f in fills if f.order_id == order_id]
        if not mine:
            return None
        for f in mine:
            price = f.yes_price_dollars if fill.side == "yes" else f.no_price_dollars
            side = f.outcome_side or f.side
            if price != fill.price or (side is not None and side != fill.side):
                # Booked at our price all the same (what we quoted is what we confirmed);
                # the position reconciliation takes the exchange's cost.
                log.error(
                    "fill_differs_from_quote",
                    quote_id=live.quote_id,
                    order_id=order_id,
                    fill_side=side,
                    fill_price=str(price),
                    side=fill.side,
                    price=str(fill.price),
                )
        fees = [f.fee_cost for f in mine]
        reported = None if None in fees else sum((f for f in fees if f is not None), _ZERO)
        return sum((f.count_fp for f in mine), _ZERO), reported

    def _executed(
        self, live: LiveQuote, *, order_id: str | None, filled: Decimal, fee: Decimal | None
    ) -> None:
        fill = live.fill
        assert fill is not None
        assert live.quote_id is not None
        market = live.rfq.market_ticker
        if filled > fill.contracts:
            log.error(
                "fill_exceeds_confirmed",
                quote_id=live.quote_id,
                filled=str(filled),
                confirmed=str(fill.contracts),
            )
        before = self._risk.positions().get(market)
        realized_before = before.realized_pnl if before else _ZERO
        applied = self._risk.commit(live.quote_id, filled)
        if applied is None:
            # No reservation to turn into a position: nothing to book on top of what the
            # exchange reports at the next reconciliation.
            log.error("execution_without_reservation", quote_id=live.quote_id)
            applied = MakerFill(fill.side, fill.price, min(filled, fill.contracts))
        if fee is None:
            # We are the maker of every RFQ trade, and each execution is one fill of a
            # fresh order: the model's single-fill fee is what the exchange charges.
            fee = self.fee_model.fill_fee(applied.price, applied.contracts, maker=True)
        self._risk.record_fee(fee)
        after = self._risk.positions().get(market)
        self._counters.executions += 1
        self._counters.contracts_traded += applied.contracts
        partial = applied.contracts < fill.contracts
        self._journal.record_execution(
            rfq_id=live.rfq.id,
            quote_id=live.quote_id,
            market=market,
            side=applied.side,
            price=applied.price,
            contracts=applied.contracts,
            order_id=order_id or "",
            detail={"confirmed": fill.contracts, "partial": True} if partial else None,
            fee=fee,
        )
        self._journal.record_position_changed(
            market=market,
            contracts=after.contracts if after else _ZERO,
            realized_pnl_change=(after.realized_pnl if after else _ZERO) - realized_before - fee,
            fee=fee,
            quote_id=live.quote_id,
        )
        log.info(
            "quote_executed",
            quote_id=live.quote_id,
            market=market,
            side=applied.side,
            contracts=str(applied.contracts),
            confirmed=str(fill.contracts),
            fee=str(fee),
        )
        try:
            live.strategy.on_fill(
                FillInfo(
                    quote_id=live.quote_id,
                    rfq_id=live.rfq.id,
                    market_ticker=market,
                    side=applied.side,
                    price=applied.price,
                    contracts=applied.contracts,
                )
            )
        except Exception:
            log.exception("strategy_on_fill_failed", strategy=live.strategy.name)
        self._withdrawer.forget(live)

    async def check_execution(self, live: LiveQuote) -> None:
        """The execution event is late: ask the exchange what became of the quote."""
        if live.state != "confirmed" or live.quote_id is None:
            return
        try:
            quote = await self._rest.get_quote(live.quote_id, rfq_id=live.rfq.id)
        except KalshiError as exc:
            log.warning("execution_check_failed", quote_id=live.quote_id, error=str(exc))
        else:
            await self.settle_from_rest(live, quote)
        if live.state == "confirmed":
            # Not settled yet (still confirmed or accepted, or the look-up failed). Checking
            # only once left its reservation held until the next reconciliation, which may
            # never come while the stream stays up: look again, less often each time.
            live.execution_checks += 1
            delay = timing._EXECUTION_GRACE_SECONDS * 2 ** min(live.execution_checks - 1, 8)
            self._schedule_execution_check(live, min(delay, timing._EXECUTION_CHECK_MAX_SECONDS))

    async def settle_from_rest(self, live: LiveQuote, quote: Quote) -> None:
        """Apply a quote's REST state to a confirmed quote whose execution event was missed."""
        if live.state != "confirmed":
            return
        if quote.status == Quote.EXECUTED:
            self._book.set_state(live, "executing")
            live.order_id = quote.creator_order_id
            await self.settle_execution(live)
        elif quote.status == Quote.CANCELLED:
            assert live.quote_id is not None
            self._risk.release(live.quote_id)
            self._withdrawer.forget(live)

    async def settle_execution(self, live: LiveQuote) -> bool:
        """Book an executed quote from its fills now; False (still held) if none are listed."""
        if live.state != "executing":
            return True
        order_id = live.order_id
        filled = await self._filled(live, order_id)
        if live.state != "executing":
            return True
        if filled is None:
            if self.on_reconcile_needed is not None:
                self.on_reconcile_needed("fills_missing")
            return False
        self._executed(live, order_id=order_id, filled=filled[0], fee=filled[1])
        return True

    def release_unbooked(self, live: LiveQuote) -> None:
        """Drop an executed quote whose fills never showed: the exchange's positions hold it.

        Only the reconciliation calls this, right after loading positions that include the
        fill; until then the reservation kept the fill counted against every limit.
        """
        if live.state != "executing" or live.quote_id is None:
            return
        log.warning("execution_settled_by_positions", quote_id=live.quote_id)
        self._risk.release(live.quote_id)
        self._withdrawer.forget(live)

    # ------------------------------------------------------------------ adoption

    def adopt_confirmed(
        self, quote: Quote, strategy: Strategy[Any] | None, event_ticker: str = ""
    ) -> bool:
        """Track a confirmed quote found on the exchange (an earlier run confirmed it)."""
        if quote.id in self._book.by_quote or quote.accepted_side is None or strategy is None:
            return False
        side = quote.accepted_side
        price = accepted_bid(side, quote.yes_bid_dollars, quote.no_bid_dollars)
        # The size the exchange offered on the accepted side; the acceptance may have taken
        # less, but holding more is the safe side until the fills say what traded. A budget
        # sized RFQ reports contracts_fp "0.00": its size is what the budget buys.
        offered = accepted_bid(side, quote.yes_contracts_fp, quote.no_contracts_fp)
        rfq = Rfq(
            id=quote.rfq_id,
            market_ticker=quote.market_ticker,
            event_ticker=event_ticker or None,
            contracts_fp=quote.contracts_fp,
            target_cost_dollars=quote.rfq_target_cost_dollars,
        )
        contracts = offered if offered is not None and offered > 0 else contracts_for(rfq, price)
        fill = MakerFill(side=side, price=price, contracts=contracts)
        live = LiveQuote(
            rfq=rfq,
            strategy=strategy,
            yes_bid=quote.yes_bid_dollars,
            no_bid=quote.no_bid_dollars,
            reference=None,
            hvm=False,
            quote_id=quote.id,
            state="confirmed",
            fill=fill,
            adopted=True,
        )
        decision = self._risk.reserve(quote.id, quote.market_ticker, fill)
        if not decision.ok:
            # Confirmed is final: the exposure exists whatever the limit says, so it is held
            # anyway and nothing new may be added on top of it until it clears.
            self._risk.hold(quote.id, quote.market_ticker, fill)
            log.warning("confirmed_quote_over_limit", quote_id=quote.id, reason=decision.reason)
        # Forgetting a quote its RFQ index holds unwatches its market, so adopting one there
        # must watch it: otherwise the unwatch takes another live quote's watch away.
        if self._book.adopt(live):
            self._market_data.watch(quote.market_ticker)
        return True
