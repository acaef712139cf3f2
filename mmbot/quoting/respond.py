"""RFQ to quote: create, requote when the market moves, withdraw at TTL or with the RFQ.

For each RFQ the routed strategy prices a quote through :func:`~.pricing.price_quote` and
one post-only quote goes out. A quote is withdrawn after its TTL, closed with its RFQ, and
replaced when the reference mid moves more than ``quotes.requote_threshold``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol

import structlog

from mmbot.config import QuotesSettings
from mmbot.journal import Journal
from mmbot.kalshi.errors import KalshiError
from mmbot.kalshi.models import Rfq
from mmbot.kalshi.ratelimit import Shed
from mmbot.kalshi.rest import InvalidQuoteError
from mmbot.logs import log_context
from mmbot.marketdata import MarketData
from mmbot.quoting import timing
from mmbot.quoting.book import LiveQuote, QuoteBook
from mmbot.quoting.gateway import QuoteGateway
from mmbot.quoting.pricing import Decline, Priced, expected_value, price_quote, sized
from mmbot.quoting.stats import Counters, LatencyObserver, count_reason
from mmbot.quoting.withdraw import Spawn, Withdrawer
from mmbot.risk import RiskBook
from mmbot.strategy import MarketView, Strategy, StrategyRouter
from mmbot.strategy_failures import FAILING_STREAK, strategy_failure

__all__ = ["DecisionObserver", "Responder"]


class DecisionObserver(Protocol):
    """Told of every RFQ and of how it was priced (the research recorder is one).

    Both calls are on the hot path: an observer keeps references and does its work
    elsewhere.
    """

    def seen(self, rfq: Rfq) -> None:
        """An RFQ arrived."""

    def priced(
        self,
        rfq: Rfq,
        strategy: str,
        view: MarketView | None,
        open_quotes: int,
        result: Priced | Decline,
    ) -> None:
        """The strategy priced ``rfq`` on ``view``: the prices, or why there are none."""


log = structlog.get_logger("mmbot.quoting")

_RECENT_RFQS = 10_000


def _log_strategy_error(strategy: Strategy[Any], decline: Decline) -> None:
    """Log a strategy's failure: a traceback the first time at each place, loud when it persists."""
    if decline.reason != "strategy_error":
        return
    failure = strategy_failure(strategy)
    if failure is None:
        log.warning("strategy_error", strategy=strategy.name, error=decline.detail)
        return
    if failure.exception is not None:
        # First failure at this place in the strategy's code: the traceback, once. Repeats
        # log only file:line, so a strategy failing on every RFQ formats nothing per RFQ.
        exception, failure.exception = failure.exception, None
        log.warning(
            "strategy_error",
            strategy=strategy.name,
            error=failure.error,
            at=failure.site,
            exc_info=exception,
        )
    else:
        log.warning("strategy_error", strategy=strategy.name, error=failure.error, at=failure.site)
    if failure.streak >= FAILING_STREAK and not failure.streak_reported:
        failure.streak_reported = True
        log.error(
            "strategy_failing",
            strategy=strategy.name,
            failures=failure.streak,
            last_error=failure.error,
            at=failure.site,
        )


class Responder:
    """Quotes RFQs, and keeps each quote priced, or withdrawn, while its RFQ stands."""

    def __init__(
        self,
        rest: QuoteGateway,
        market_data: MarketData,
        router: StrategyRouter,
        risk: RiskBook,
        journal: Journal,
        settings: QuotesSettings,
        book: QuoteBook,
        counters: Counters,
        withdrawer: Withdrawer,
        *,
        spawn: Spawn,
        arm_expiry: Callable[[LiveQuote], None],
        clock: Callable[[], float],
        latency: LatencyObserver | None,
        shadow: bool = False,
        observer: DecisionObserver | None = None,
    ) -> None:
        """Quote through ``rest``, tracking each quote in ``book`` (``shadow``: price only)."""
        self._rest = rest
        self._market_data = market_data
        self._router = router
        self._risk = risk
        self._journal = journal
        self._settings = settings
        self._book = book
        self._counters = counters
        self._withdrawer = withdrawer
        self._spawn = spawn
        self._arm_expiry = arm_expiry
        self._clock = clock
        self._latency = latency
        self._shadow = shadow
        self._observer = observer
        #: False once the daemon stops: no new quote, no requote.
        self.quoting = True
        # RFQs that went away while their quote was being created, and RFQs already handled.
        self._deleted_rfqs: dict[str, None] = {}
        # RFQs whose rfq_seen row is not written yet (see on_rfq).
        self._unjournaled: dict[str, Rfq] = {}
        self._seen_rfqs: dict[str, None] = {}

    def _remember(self, seen: dict[str, None], rfq_id: str) -> None:
        seen[rfq_id] = None
        if len(seen) > _RECENT_RFQS:
            seen.pop(next(iter(seen)))

    def _skip(self, rfq: Rfq, reason: str, detail: str = "") -> None:
        self._journal_seen(rfq.id)
        self._counters.rfqs_skipped += 1
        count_reason(self._counters.skipped_by_reason, reason)
        self._journal.record_rfq_skipped(
            rfq_id=rfq.id, market=rfq.market_ticker, reason=reason, detail=detail
        )
        log.debug("rfq_skipped", reason=reason, detail=detail)

    # ------------------------------------------------------------------ RFQ -> quote

    async def on_rfq(self, rfq: Rfq, received_at: float | None = None) -> None:
        """Quote an RFQ if a strategy wants it and risk allows it.

        ``received_at`` is when its frame arrived (``time.monotonic()``), for the latency
        histogram; None for an RFQ found over REST.
        """
        if rfq.id in self._seen_rfqs:
            return  # a duplicate event, or an RFQ reconciliation already handled
        self._remember(self._seen_rfqs, rfq.id)
        self._counters.rfqs_seen += 1
        if self._observer is not None:
            try:
                self._observer.seen(rfq)
            except Exception:
                # What records the flow must never stop the pricing it records.
                log.exception("decision_observer_failed")
        # The rfq_seen row is written once the quote request is on its way (or as soon as
        # anything else about this RFQ is journaled, whichever comes first): building it
        # cost a seventh of the time from frame to request. Row order is unchanged.
        self._unjournaled[rfq.id] = rfq
        try:
            with log_context(rfq_id=rfq.id, market=rfq.market_ticker):
                await self._quote_rfq(rfq, received_at)
        finally:
            self._journal_seen(rfq.id)

    def _journal_seen(self, rfq_id: str) -> None:
        """Write the rfq_seen row of ``rfq_id`` if it is still owed."""
        rfq = self._unjournaled.pop(rfq_id, None)
        if rfq is not None:
            self._journal.record_rfq_seen(
                rfq_id=rfq.id,
                market=rfq.market_ticker,
                contracts=rfq.contracts_fp,
                target_cost=rfq.target_cost_dollars,
            )

    async def _quote_rfq(self, rfq: Rfq, received_at: float | None) -> None:
        if not self.quoting:
            return self._skip(rfq, "stopping")
        if self._risk.kill_switch:
            return self._skip(rfq, "kill_switch")
        if not self._journal.healthy:
            # No record, no new risk: what we quote and fill must be written down.
            return self._skip(rfq, "journal_unhealthy")
        if not sized(rfq):
            return self._skip(rfq, "invalid_size")
        # Frames carry the event ticker; only RFQs listed over REST need a look-up.
        event = rfq.event_ticker or await self._event_of(rfq)
        strategy = self._router.route(rfq.market_ticker, event)
        if strategy is None:
            return self._skip(rfq, "unrouted_market")
        market = await self._market_data.ensure_fresh(rfq.market_ticker)
        if market is None:
            return self._skip(rfq, "unknown_market")
        view = self._market_data.view(rfq.market_ticker, self._risk.position(rfq.market_ticker))
        open_quotes = self._book.open_quotes
        priced = price_quote(
            rfq,
            strategy,
            view,
            self._risk,
            open_quotes=open_quotes,
            min_edge=self._settings.min_edge,
        )
        if self._observer is not None:
            try:
                self._observer.priced(rfq, strategy.name, view, open_quotes, priced)
            except Exception:
                log.exception("decision_observer_failed")
        if isinstance(priced, Decline):
            _log_strategy_error(strategy, priced)
            return self._skip(rfq, priced.reason)
        yes, no, view, ttl = priced
        if self._shadow:
            # Priced exactly as live, then nothing sent: no book entry, no risk reserved.
            return self._shadow_quote(rfq, yes, no, view)
        if rfq.id in self._deleted_rfqs or rfq.id in self._book.by_rfq:
            return None
        live = LiveQuote(
            rfq=rfq,
            strategy=strategy,
            yes_bid=yes,
            no_bid=no,
            reference=view.mid,
            hvm=view.hvm or rfq.is_combo,
            ttl=ttl,
            received_at=received_at,
        )
        self._book.track_rfq(live)
        self._market_data.watch(rfq.market_ticker)
        if not await self._send(live, yes, no, view.mid, ttl):
            self._withdrawer.forget(live)
            return None
        self._counters.rfqs_quoted += 1
        if rfq.id in self._deleted_rfqs:
            # The RFQ went away while the quote was in flight.
            await self._withdrawer.delete(live, "rfq_deleted")

    def _shadow_quote(self, rfq: Rfq, yes: Decimal, no: Decimal, view: MarketView) -> None:
        """Count the quote a live run would have sent (the observer already has its prices)."""
        self._skip(rfq, "shadow", f"yes_bid={yes} no_bid={no}")
        log.debug("shadow_quote", yes_bid=str(yes), no_bid=str(no), reference=str(view.mid))

    async def _event_of(self, rfq: Rfq) -> str:
        """The event ticker of an RFQ listed over REST (which carries none): its market's."""
        # Routed with no event, an RFQ caught up after a reconnect missed every route that
        # matches on its event.
        market = self._market_data.market(rfq.market_ticker)
        if market is None:
            market = await self._market_data.ensure_fresh(rfq.market_ticker)
        return (market.event_ticker or "") if market is not None else ""

    async def _send(
        self,
        live: LiveQuote,
        yes: Decimal,
        no: Decimal,
        reference: Decimal | None,
        ttl: float | None,
    ) -> bool:
        """Send (or re-send, replacing) the quote at ``yes``/``no``; False if it is not ours.

        ``live`` keeps the prices of the quote the exchange holds until the new one is
        acknowledged: an acceptance of the old quote meanwhile is judged at its own prices.
        """
        replacing = live.state == "open"
        value: Decimal | None = None
        shed_at: float | None = None
        if not replacing:
            # A new quote may give way to more valuable ones when the write budget runs
            # short. A replacement may not: the quote it replaces stands at stale prices.
            value = expected_value(live)
            arrived = live.received_at if live.received_at is not None else time.monotonic()
            shed_at = arrived + self._settings.max_queue_seconds
            # Runs once this task waits for the answer, so after the request is written.
            asyncio.get_running_loop().call_soon(self._journal_seen, live.rfq.id)
        try:
            quote_id = await self._rest.create_quote(
                live.rfq.id,
                yes,
                no,
                rest_remainder=self._settings.rest_remainder,
                post_only=True,
                deadline_seconds=timing._CREATE_DEADLINE_SECONDS,
                value=value,
                shed_at=shed_at,
            )
        except Shed as shed:
            self._skip(live.rfq, f"shed_{shed.reason}")
            return False
        except (KalshiError, InvalidQuoteError) as exc:
            self._journal_seen(live.rfq.id)  # refused before the request went out, maybe
            self._counters.quote_errors += 1
            code = exc.code if isinstance(exc, KalshiError) else "invalid_quote"
            log.warning(
                "quote_rejected",
                rfq_id=live.rfq.id,
                status=getattr(exc, "status", None),
                code=code,
                reason=getattr(exc, "message", str(exc)),
            )
            self._journal.record_quote_failed(
                rfq_id=live.rfq.id,
                market=live.rfq.market_ticker,
                code=code or "",
                message=getattr(exc, "message", str(exc)),
            )
            return False
        self._journal_seen(live.rfq.id)
        if replacing and live.state != "open":
            # The quote this one replaces was accepted, expired or withdrawn while the
            # replacement was in flight. `live` must keep following that quote (an accepted
            # one is confirmed, executed and settled under its own id; re-pointing `live`
            # stranded its reservation and resurrected expired quotes), so the replacement
            # is nobody's: withdraw it.
            await Withdrawer.wait(
                self._withdrawer.withdraw(
                    quote_id, live.rfq.id, live.rfq.market_ticker, "requote_orphaned"
                )
            )
            return False
        live.yes_bid, live.no_bid, live.reference, live.ttl = yes, no, reference, ttl
        previous = self._book.opened(live, quote_id)
        live.sent_at = self._clock()
        self._arm_expiry(live)
        contracts = live.rfq.contracts_fp
        if previous is None:
            if live.received_at is not None and self._latency is not None:
                # Wall time, not self._clock: this is a measurement, not a schedule.
                self._latency.rfq_to_quote(time.monotonic() - live.received_at)
            self._counters.quotes_created += 1
            self._journal.record_quote_created(
                rfq_id=live.rfq.id,
                quote_id=quote_id,
                market=live.rfq.market_ticker,
                yes_bid=live.yes_bid,
                no_bid=live.no_bid,
                contracts=contracts,
                strategy=live.strategy.name,
                reference=reference,
            )
        else:
            self._counters.quotes_replaced += 1
            self._journal.record_quote_replaced(
                rfq_id=live.rfq.id,
                old_quote_id=previous,
                quote_id=quote_id,
                market=live.rfq.market_ticker,
                yes_bid=live.yes_bid,
                no_bid=live.no_bid,
                contracts=contracts,
                strategy=live.strategy.name,
                reference=reference,
            )
        log.info(
            "quote_sent",
            rfq_id=live.rfq.id,
            quote_id=quote_id,
            market=live.rfq.market_ticker,
            yes_bid=str(live.yes_bid),
            no_bid=str(live.no_bid),
            replaced=previous,
        )
        return True

    async def expire(self, live: LiveQuote) -> None:
        """The quote's time to live is up: withdraw it if it is still open."""
        live.expiry = None
        if live.state == "open":
            await self._withdrawer.delete(live, "ttl")

    # ------------------------------------------------------------------ RFQ gone, market moved

    async def on_rfq_deleted(self, rfq_id: str) -> None:
        """The RFQ was withdrawn, expired or filled: our quote on it goes with it."""
        self._remember(self._deleted_rfqs, rfq_id)
        # The exchange closes an RFQ's open and accepted quotes with it: a withdrawal still
        # retrying on this RFQ has nothing left to withdraw.
        for withdrawal in [w for w in self._book.withdrawals.values() if w.rfq_id == rfq_id]:
            self._withdrawer.withdrawn(withdrawal, "rfq_deleted")
        live = self._book.by_rfq.get(rfq_id)
        if live is None or live.state != "open" or live.quote_id is None:
            return
        # No DELETE: nobody can accept a quote on an RFQ that is gone, and the exchange
        # closes the RFQ's quotes with it. Sending one anyway cost a write per RFQ, which
        # under load halved the quotes the budget could carry. (A quote still in flight
        # when the RFQ goes is deleted when its answer comes, in _quote_rfq.)
        quote_id = live.quote_id
        self._withdrawer.forget(live)
        self._counters.quotes_deleted += 1
        self._journal.record_quote_deleted(
            rfq_id=rfq_id, quote_id=quote_id, market=live.rfq.market_ticker, reason="rfq_deleted"
        )

    def on_market(self, ticker: str, mid: Decimal | None) -> None:
        """A market's reference moved to ``mid``: replace quotes it moved past the threshold."""
        quotes = self._book.by_market.get(ticker)
        if not quotes:
            return  # the common case on the stream: a market with no quote of ours
        for live in list(quotes.values()):
            if live.state != "open":
                continue
            moved = (
                mid is None
                or live.reference is None
                or (abs(mid - live.reference) > self._settings.requote_threshold)
            )
            if moved:
                self._spawn(self._requote(live), "requote")

    async def _requote(self, live: LiveQuote) -> None:
        if live.state != "open" or not self.quoting:
            return
        rfq = live.rfq
        # RiskBook counts open quotes "not counting the one being checked (nor one it
        # replaces)": a replacement's own quote is already in open_quotes, and counting it
        # made every requote at max_open_quotes delete the quote instead of replacing it.
        priced = price_quote(
            rfq,
            live.strategy,
            self._market_data.view(rfq.market_ticker, self._risk.position(rfq.market_ticker)),
            self._risk,
            open_quotes=self._book.open_quotes - 1,
            min_edge=self._settings.min_edge,
        )
        if isinstance(priced, Decline):
            _log_strategy_error(live.strategy, priced)
            await self._withdrawer.delete(live, f"requote_{priced.reason}")
            return
        yes, no, view, ttl = priced
        # A new quote on the same RFQ replaces the previous one on the exchange.
        if not await self._send(live, yes, no, view.mid, ttl):
            await self._withdrawer.delete(live, "requote_failed")
