"""Taking our quotes off the exchange, and forgetting quotes that are over.

A quote is ours until the exchange says it is gone. Withdrawing one (TTL, a failed requote,
a declined acceptance, the kill switch, shutdown) keeps it tracked, counted as open and in
every sweep, and retries the DELETE with backoff until the exchange answers 204 or 404 (or
closes its RFQ).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from mmbot.journal import Journal
from mmbot.kalshi.backoff import Backoff
from mmbot.kalshi.errors import BadRequestError, ConflictError, KalshiError, NotFoundError
from mmbot.kalshi.models import Quote
from mmbot.marketdata import MarketData
from mmbot.quoting import timing
from mmbot.quoting.book import LiveQuote, QuoteBook, Withdrawal
from mmbot.quoting.gateway import QuoteGateway
from mmbot.quoting.stats import Counters

__all__ = ["Spawn", "Withdrawer"]

log = structlog.get_logger("mmbot.quoting")

_GONE = "gone"

#: Starts a tracked background task (see :meth:`QuoteManager.spawn`).
Spawn = Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]]


class Withdrawer:
    """Withdraws quotes until the exchange confirms them gone; forgets quotes that are over."""

    def __init__(
        self,
        rest: QuoteGateway,
        book: QuoteBook,
        market_data: MarketData,
        journal: Journal,
        counters: Counters,
        *,
        spawn: Spawn,
        sleep: Callable[[float], Coroutine[Any, Any, None]],
    ) -> None:
        """Withdraw through ``rest``, tracking each withdrawal in ``book``."""
        self._rest = rest
        self._book = book
        self._market_data = market_data
        self._journal = journal
        self._counters = counters
        self._spawn = spawn
        self._sleep = sleep
        #: Asked for a reconciliation when a quote being withdrawn turns out confirmed.
        self.on_reconcile_needed: Callable[[str], None] | None = None

    def forget(self, live: LiveQuote) -> None:
        """Stop tracking ``live`` for good (gone, executed or voided)."""
        if live.expiry is not None:
            live.expiry.cancel()
            live.expiry = None
        if self._book.forget(live):
            self._market_data.unwatch(live.rfq.market_ticker)

    async def delete(self, live: LiveQuote, reason: str) -> None:
        """Withdraw an open quote; return once the exchange says it is gone."""
        withdrawal = self.start(live, reason)
        if withdrawal is not None:
            await self.wait(withdrawal)

    def start(self, live: LiveQuote, reason: str) -> Withdrawal | None:
        """Begin withdrawing ``live``'s quote; it stays tracked and counted until gone."""
        if live.state not in ("open", "creating") or live.quote_id is None:
            return None
        if live.expiry is not None:
            live.expiry.cancel()
            live.expiry = None
        # Out of the RFQ and market indexes (no requote, no refresh for it), but still found
        # by its id: an acceptance that beats the DELETE must be declined, not adopted.
        if self._book.withdrawing(live):
            self._market_data.unwatch(live.rfq.market_ticker)
        return self.withdraw(live.quote_id, live.rfq.id, live.rfq.market_ticker, reason, live)

    def withdraw(
        self,
        quote_id: str,
        rfq_id: str,
        market: str,
        reason: str,
        live: LiveQuote | None = None,
    ) -> Withdrawal:
        """Withdraw ``quote_id`` until the exchange confirms it; one withdrawal per quote."""
        withdrawal = self._book.withdrawals.get(quote_id)
        if withdrawal is None:
            withdrawal = Withdrawal(quote_id, rfq_id, market, reason, live)
            self._book.add_withdrawal(withdrawal)
            withdrawal.task = self._spawn(self._run(withdrawal), "withdraw")
        return withdrawal

    @staticmethod
    async def wait(withdrawal: Withdrawal) -> None:
        """Wait until the exchange says the quote is gone."""
        # Shielded: a caller cancelled while waiting must not cancel the withdrawal itself.
        if withdrawal.task is not None:
            await asyncio.shield(withdrawal.task)

    async def cancel_all(self, reason: str, *, within: float | None = None) -> int:
        """Withdraw every open quote; wait (up to ``within`` seconds) until all are gone.

        Quotes already being withdrawn are waited for too. Returns how many withdrawals the
        exchange confirmed meanwhile.
        """
        for live in [q for q in self._book.by_rfq.values() if q.state == "open"]:
            self.start(live, reason)
        tasks = [w.task for w in self._book.withdrawals.values() if w.task is not None]
        before = self._counters.quotes_deleted
        if tasks:
            await asyncio.wait(tasks, timeout=within)
        return self._counters.quotes_deleted - before

    async def _run(self, withdrawal: Withdrawal) -> None:
        """DELETE until the exchange says the quote is gone (204, or 404, or not open)."""
        backoff = Backoff(
            base=timing._WITHDRAW_RETRY_BASE_SECONDS, cap=timing._WITHDRAW_RETRY_CAP_SECONDS
        )
        quote_id = withdrawal.quote_id
        while quote_id in self._book.withdrawals:
            withdrawal.attempts += 1
            try:
                await self._rest.delete_quote(
                    quote_id,
                    rfq_id=withdrawal.rfq_id,
                    deadline_seconds=timing._DELETE_DEADLINE_SECONDS,
                )
            except NotFoundError:
                break  # gone: withdrawn by an earlier attempt, or closed with its RFQ
            except (BadRequestError, ConflictError) as exc:
                # Refused, but not "not found": only the quote's own state says whether it
                # is still live.
                status = await self._status_on_exchange(withdrawal)
                if status in (Quote.CANCELLED, Quote.EXECUTED, _GONE):
                    break
                if status == Quote.CONFIRMED:
                    # Confirmed is a trade, not a quote: nothing to withdraw any more, and
                    # only the exchange's records can say whose it is.
                    log.error("withdrawn_quote_confirmed", quote_id=quote_id)
                    self._book.pop_withdrawal(quote_id)
                    live = withdrawal.live
                    if live is not None and live.state == "withdrawing":
                        # Left behind, it would stay "withdrawing" and tracked for good.
                        self.forget(live)
                    if self.on_reconcile_needed is not None:
                        self.on_reconcile_needed("withdrawn_quote_confirmed")
                    return
                self._delete_failed(withdrawal, exc)
            except KalshiError as exc:
                # 5xx, timeouts, a stale-timestamp 401: the quote may still be live.
                self._delete_failed(withdrawal, exc)
            else:
                break
            await self._sleep(backoff.next_delay())
        self.withdrawn(withdrawal)

    def _delete_failed(self, withdrawal: Withdrawal, exc: KalshiError) -> None:
        log.warning(
            "quote_delete_failed",
            quote_id=withdrawal.quote_id,
            rfq_id=withdrawal.rfq_id,
            reason=withdrawal.reason,
            attempt=withdrawal.attempts,
            status=exc.status,
            code=exc.code,
            error=exc.message,
        )

    async def _status_on_exchange(self, withdrawal: Withdrawal) -> str | None:
        """The quote's status on the exchange; _GONE if unknown there, None if unreadable."""
        try:
            quote = await self._rest.get_quote(withdrawal.quote_id, rfq_id=withdrawal.rfq_id)
        except NotFoundError:
            return _GONE
        except KalshiError:
            return None
        return quote.status

    def withdrawn(self, withdrawal: Withdrawal, reason: str | None = None) -> None:
        """The exchange says the quote is gone: stop tracking it, count and journal it."""
        if self._book.pop_withdrawal(withdrawal.quote_id) is None:
            return  # settled already (its RFQ went away meanwhile)
        live = withdrawal.live
        if live is not None and live.state == "withdrawing":
            self.forget(live)
        self._counters.quotes_deleted += 1
        self._journal.record_quote_deleted(
            rfq_id=withdrawal.rfq_id,
            quote_id=withdrawal.quote_id,
            market=withdrawal.market,
            reason=reason or withdrawal.reason,
            detail={"attempts": withdrawal.attempts} if withdrawal.attempts > 1 else None,
        )
