"""Accept to confirm: an acceptance is judged against our own record, then confirmed.

When a requester accepts, the fill is built from our own record of the quote (our price,
our market, at most our offered size for that side); a frame that disagrees is declined
with its own reason. Then the last look (:mod:`mmbot.lastlook`): stale market data
declines, and the strategy's ``confirm`` judges the fill against the market as it stands
now, by default declining (``last_look``) a side that lost more than
``quotes.last_look_tolerance`` since it was quoted. The risk book reserves the fill
atomically (the event loop is single-threaded and :meth:`RiskBook.reserve` is
synchronous) and the confirm goes out on the write lane's highest priority, with a
deadline inside the confirmation window (30 s, 3 s on High Volatility Markets). An
accept that risk declines is withdrawn and journaled with its reason; so is one of a
quote being withdrawn, never confirmed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import structlog

from mmbot.config import QuotesSettings
from mmbot.journal import CreatedQuote, Journal
from mmbot.kalshi.errors import (
    KalshiApiError,
    KalshiError,
    ServerError,
    TransportError,
)
from mmbot.kalshi.models import (
    MakerFill,
    Quote,
    QuoteAcceptedMsg,
    Rfq,
    Side,
    accepted_bid,
)
from mmbot.lastlook import AcceptInfo, adverse_move, safe_confirm
from mmbot.logs import log_context
from mmbot.marketdata import MarketData
from mmbot.quoting import timing
from mmbot.quoting.book import LiveQuote, QuoteBook, Withdrawal
from mmbot.quoting.gateway import QuoteGateway
from mmbot.quoting.pricing import contracts_for
from mmbot.quoting.stats import Counters, LatencyObserver, count_reason
from mmbot.quoting.withdraw import Withdrawer
from mmbot.risk import RiskBook
from mmbot.strategy import Strategy

__all__ = ["Acceptances"]

log = structlog.get_logger("mmbot.quoting")

_ONE = Decimal(1)


def _fill_from_record(live: LiveQuote, msg: QuoteAcceptedMsg) -> tuple[MakerFill | None, str, str]:
    """The fill an acceptance commits us to, from our own record of the quote.

    Returns the fill, or None with the reason and detail to decline with. Our price and
    market decide; the frame may only name the side and a size up to what we offered.
    """
    side = msg.accepted_side
    if side is None:
        return None, "malformed_accept", f"quote {msg.quote_id}: acceptance without accepted_side"
    ours = live.rfq.market_ticker
    if msg.market_ticker != ours:
        detail = f"the acceptance names market {msg.market_ticker}; we quoted {ours}"
        return None, "accept_market_mismatch", detail
    if msg.rfq_id != live.rfq.id:
        detail = f"the acceptance names RFQ {msg.rfq_id}; we quoted RFQ {live.rfq.id}"
        return None, "accept_rfq_mismatch", detail
    price = accepted_bid(side, live.yes_bid, live.no_bid)
    if price <= 0:
        return None, "accept_of_declined_side", f"we bid nothing on {side}"
    claimed = accepted_bid(side, msg.yes_bid_dollars, msg.no_bid_dollars)
    if claimed != price:
        detail = f"the acceptance says {side} at {claimed}; we quoted {price}"
        return None, "accept_price_mismatch", detail
    offered = contracts_for(live.rfq, price)
    # Field reports: acceptances of budget-sized RFQs may omit the size; it is our offer.
    contracts = msg.contracts_accepted_fp if msg.contracts_accepted_fp is not None else offered
    if contracts <= 0:
        return None, "malformed_accept", f"accepted size {contracts} is not positive"
    if contracts > offered:
        detail = f"{contracts} contracts accepted; we offered {offered} on {side}"
        return None, "accept_size_mismatch", detail
    return MakerFill(side=side, price=price, contracts=contracts), "", ""


def _may_have_landed(exc: KalshiError) -> bool:
    """Whether a request that raised ``exc`` may still have taken effect on the exchange."""
    if isinstance(exc, TransportError):
        return exc.sent
    if isinstance(exc, KalshiApiError):
        # A 4xx answer is a refusal; a 5xx says nothing about whether the write happened.
        return isinstance(exc, ServerError)
    # Anything else (an unreadable answer, say) came after the request went out.
    return True


class Acceptances:
    """Judges each acceptance of our quotes; confirms it, or declines it and withdraws."""

    def __init__(
        self,
        rest: QuoteGateway,
        market_data: MarketData,
        risk: RiskBook,
        journal: Journal,
        settings: QuotesSettings,
        book: QuoteBook,
        counters: Counters,
        withdrawer: Withdrawer,
        *,
        schedule_execution_check: Callable[[LiveQuote, float], None],
        latency: LatencyObserver | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Confirm through ``rest`` the quotes ``book`` tracks (``clock`` as the Responder's)."""
        self._rest = rest
        self._market_data = market_data
        self._risk = risk
        self._journal = journal
        self._settings = settings
        self._book = book
        self._counters = counters
        self._withdrawer = withdrawer
        self._schedule_execution_check = schedule_execution_check
        self._latency = latency
        self._clock = clock
        #: False once the daemon stops: acceptances are declined from then on.
        self.quoting = True
        #: Our communications id: acceptances naming another maker as the quote's creator
        #: are not ours to decline. None until the engine knows it.
        self.me: str | None = None

    # ------------------------------------------------------------------ accept -> confirm

    def _ours(self, creator_id: str | None) -> bool:
        """Whether an event names us as the quote's creator (always, before we know who)."""
        return self.me is None or creator_id == self.me

    async def on_quote_accepted(
        self, msg: QuoteAcceptedMsg, received_at: float | None = None
    ) -> None:
        """A requester accepted our quote: reserve and confirm, or decline and withdraw."""
        with log_context(rfq_id=msg.rfq_id, quote_id=msg.quote_id, market=msg.market_ticker):
            await self._accepted(msg, received_at)

    async def _accepted(self, msg: QuoteAcceptedMsg, received_at: float | None) -> None:
        if not self._ours(msg.quote_creator_id):
            # Another maker's quote: nothing of ours to confirm, decline or delete.
            log.info("accept_of_another_makers_quote", quote_creator_id=msg.quote_creator_id)
            return
        withdrawal = self._book.withdrawals.get(msg.quote_id)
        if withdrawal is not None:
            await self._decline_withdrawing(withdrawal, msg)
            return
        live = self._book.by_quote.get(msg.quote_id)
        if live is None:
            log.warning("accept_for_untracked_quote")
            await self._decline_untracked(msg)
            return
        if live.state != "open":
            return  # a duplicate event
        if live.expiry is not None:
            live.expiry.cancel()
            live.expiry = None
        self._counters.accepts += 1
        fill, reason, detail = _fill_from_record(live, msg)
        if fill is None:
            await self._decline(live, msg, reason, detail)
            return
        live.fill = fill
        market = live.rfq.market_ticker
        self._journal.record_accept_received(
            rfq_id=live.rfq.id,
            quote_id=msg.quote_id,
            market=market,
            side=fill.side,
            price=fill.price,
            contracts=fill.contracts,
        )
        if not self.quoting:
            await self._decline(live, msg, "stopping", "the daemon is shutting down")
            return
        if not self._journal.healthy:
            await self._decline(live, msg, "journal_unhealthy", "the journal cannot be written")
            return
        if self._settings.last_look or live.adopted:
            # A quote found by a reconciliation gets the look even with it off: its
            # acceptance may be old, the market far from where the quote went out.
            verdict = await self._last_look(live, msg, fill)
            if verdict is not None:
                await self._decline(live, msg, *verdict)
                return
        decision = self._risk.reserve(msg.quote_id, market, fill)
        if not decision.ok:
            await self._decline(live, msg, decision.reason or "risk", decision.detail)
            return
        await self._confirm(live, msg, fill, received_at)

    async def _last_look(
        self, live: LiveQuote, msg: QuoteAcceptedMsg, fill: MakerFill
    ) -> tuple[str, str] | None:
        """The decline reason and detail if the market as it stands now refuses the fill.

        Stale or missing data declines (never confirm on blind); then the strategy's
        ``confirm`` decides, by default on how far the accepted side moved since the quote.
        """
        market = live.rfq.market_ticker
        if not self._market_data.is_fresh(market):
            # Fetched only when the stream and the poll both let it go stale: the confirm
            # window (3 s at the shortest) leaves room for one read.
            await self._market_data.ensure_fresh(market)
        view = self._market_data.view(market, self._risk.position(market))
        if view is None or view.stale or view.mid is None:
            return "stale_market_data", f"no fresh reference price for {market}"
        accept = AcceptInfo(
            quote_id=msg.quote_id,
            rfq_id=live.rfq.id,
            market_ticker=market,
            side=fill.side,
            price=fill.price,
            contracts=fill.contracts,
            reference=live.reference,
            quoted_seconds_ago=max(0.0, self._clock() - live.sent_at) if live.sent_at else 0.0,
            tolerance=self._settings.last_look_tolerance,
        )
        if self._latency is not None:
            self._latency.last_look_move(adverse_move(accept, view.mid))
        ok, detail, exc = safe_confirm(live.strategy, accept, view)
        if ok:
            return None
        if exc is not None:
            log.error(
                "strategy_confirm_failed",
                strategy=getattr(live.strategy, "name", "?"),
                error=detail,
                exc_info=exc,
            )
            return "strategy_error", detail
        return "last_look", detail

    async def _confirm(
        self,
        live: LiveQuote,
        msg: QuoteAcceptedMsg,
        fill: MakerFill,
        received_at: float | None = None,
    ) -> None:
        # Confirmed from the moment the confirm leaves, not when its answer is back: the
        # exchange may execute (or void) the quote first, and a reconciliation meanwhile
        # must settle it from REST before reloading positions, like any confirmed quote.
        # (A separate "confirming" state was skipped there, so its execution event was
        # later committed on top of a reloaded position that already held the fill.)
        self._book.set_state(live, "confirmed")
        market = live.rfq.market_ticker
        deadline = timing.confirm_window_seconds(live.hvm) * timing._CONFIRM_SHARE
        try:
            await self._rest.confirm_quote(
                msg.quote_id, rfq_id=live.rfq.id, deadline_seconds=deadline
            )
        except KalshiError as exc:
            self._counters.confirm_failures += 1
            log.warning("confirm_failed", status=exc.status, code=exc.code, reason=exc.message)
            self._journal.record_confirm_failed(
                rfq_id=live.rfq.id,
                quote_id=msg.quote_id,
                market=market,
                code=exc.code or "",
                message=exc.message,
            )
            if live.state != "confirmed":
                return  # settled while the confirm was out: nothing left to undo
            if not _may_have_landed(exc):
                self._risk.release(msg.quote_id)
                self._withdrawer.forget(live)
                return
            # A 5xx or a timeout after sending may hide a confirm that went through. Releasing
            # the reservation then would hide a real fill from every limit until the next
            # reconciliation, so keep it and treat the quote as confirmed: quote_executed, or
            # the execution check over REST (executed / cancelled), settles it either way.
        else:
            if received_at is not None and self._latency is not None:
                self._latency.accept_to_confirm(time.monotonic() - received_at)
            self._counters.confirms += 1
            self._journal.record_confirm_sent(
                rfq_id=live.rfq.id,
                quote_id=msg.quote_id,
                market=market,
                side=fill.side,
                price=fill.price,
                contracts=fill.contracts,
            )
            log.info(
                "quote_confirmed",
                side=fill.side,
                price=str(fill.price),
                contracts=str(fill.contracts),
            )
            if live.state != "confirmed":
                # Settled while the answer was on its way (a retried confirm on a High
                # Volatility Market can outlast its 1 s execution timer): the fill is already
                # committed and forgotten, and an execution check now would settle, count
                # and journal it a second time.
                return
        timer = timing._EXECUTION_TIMER[1] if live.hvm else timing._EXECUTION_TIMER[0]
        self._schedule_execution_check(live, timer + timing._EXECUTION_GRACE_SECONDS)

    def _record_decline(
        self,
        quote_id: str,
        rfq_id: str,
        market: str,
        reason: str,
        detail: str,
        *,
        side: Side | None,
        fill: MakerFill | None = None,
    ) -> None:
        """Count and journal an acceptance we do not confirm."""
        self._counters.declines += 1
        count_reason(self._counters.declined_by_reason, reason)
        self._journal.record_confirm_declined(
            rfq_id=rfq_id,
            quote_id=quote_id,
            market=market,
            side=fill.side if fill else side,
            price=fill.price if fill else None,
            contracts=fill.contracts if fill else None,
            reason=reason,
            detail=detail,
        )

    async def _decline(
        self, live: LiveQuote, msg: QuoteAcceptedMsg, reason: str, detail: str
    ) -> None:
        log.warning("accept_declined", reason=reason, detail=detail)
        self._record_decline(
            msg.quote_id,
            live.rfq.id,
            live.rfq.market_ticker,
            reason,
            detail,
            side=msg.accepted_side,
            fill=live.fill,
        )
        # Not confirming lets the acceptance lapse; withdrawing the quote ends it at once.
        await self._withdrawer.delete(live, "declined_accept")

    async def _decline_withdrawing(self, withdrawal: Withdrawal, msg: QuoteAcceptedMsg) -> None:
        """An acceptance of a quote we are withdrawing: never confirmed, the DELETE goes on."""
        if withdrawal.declined:
            return  # a duplicate event
        withdrawal.declined = True
        reason = "withdrawn"
        detail = f"the quote was being withdrawn ({withdrawal.reason}) when it was accepted"
        log.warning("accept_declined", reason=reason, detail=detail)
        self._record_decline(
            msg.quote_id,
            withdrawal.rfq_id,
            withdrawal.market,
            reason,
            detail,
            side=msg.accepted_side,
        )
        await Withdrawer.wait(withdrawal)

    async def _decline_untracked(self, msg: QuoteAcceptedMsg) -> None:
        self._record_decline(
            msg.quote_id,
            msg.rfq_id,
            msg.market_ticker,
            "untracked_quote",
            "accepted quote is not one this daemon is tracking",
            side=None,
        )
        # Ours (the creator is us) but unknown here: withdraw it like any other, until gone.
        await Withdrawer.wait(
            self._withdrawer.withdraw(
                msg.quote_id, msg.rfq_id, msg.market_ticker, "declined_accept"
            )
        )

    # ------------------------------------------------------------------ adoption

    def adopt(
        self,
        quote: Quote,
        strategy: Strategy[Any],
        record: CreatedQuote,
        event_ticker: str = "",
    ) -> None:
        """Track an open or accepted quote found on the exchange, so its acceptance is judged.

        After a restart the exchange may hold an acceptance of a quote an earlier run sent;
        ``record`` is what the journal says we quoted, and that (not the exchange's copy)
        decides the fill. It gets the same risk check as any other, and a look at the market.
        """
        if self._book.tracks(quote.id):
            return
        rfq = Rfq(
            id=quote.rfq_id,
            market_ticker=record.market,
            event_ticker=event_ticker or None,
            contracts_fp=record.contracts,
            target_cost_dollars=quote.rfq_target_cost_dollars,
        )
        # The confirm deadline must fit the market's window: hvm=False gave an adopted quote
        # on a High Volatility Market a 24 s deadline for a 3 s window. Without market data,
        # assume the short window.
        view = self._market_data.view(rfq.market_ticker, self._risk.position(rfq.market_ticker))
        live = LiveQuote(
            rfq=rfq,
            strategy=strategy,
            yes_bid=record.yes_bid,
            no_bid=record.no_bid,
            reference=record.reference,
            hvm=view.hvm if view is not None else True,
            quote_id=quote.id,
            state="open",
            adopted=True,
        )
        # forget() unwatches only what the RFQ index holds: watching a quote tracked by id
        # alone kept its market refreshed forever.
        if self._book.adopt(live):
            self._market_data.watch(rfq.market_ticker)
