"""The quote lifecycle: create, replace, expire, confirm, delete.

One :class:`QuoteManager` owns every quote the daemon has on the exchange. It is a facade
over the parts of the lifecycle, which share one :class:`~.book.QuoteBook`:

* :mod:`.respond`: for each RFQ the routed strategy's prices go through
  :func:`~.pricing.price_quote` (rounded down to the market's grid, ``yes_bid + no_bid <=
  1 - quotes.min_edge``, any side the risk book could not confirm declined) and one
  post-only quote goes out. A quote is deleted after its TTL and when its RFQ goes away,
  and replaced when the reference mid moves more than ``quotes.requote_threshold``.
* :mod:`.withdraw`: a quote is ours until the exchange says it is gone; a withdrawal keeps
  it tracked, counted as open and in every sweep, and retries the DELETE with backoff.
* :mod:`.accept`: an acceptance is judged against our own record of the quote, reserved
  by the risk book and confirmed inside the confirmation window, or declined and withdrawn.
* :mod:`.execution`: an execution is booked from the fills listed under its order.

The manager starts the per-event tasks and the timers (a quote's TTL, a late execution's
check) and tracks every task, so shutdown can wait for them; the engine runs the
long-lived loops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import structlog

from mmbot.config import QuotesSettings
from mmbot.fees import FeeModel
from mmbot.journal import Journal
from mmbot.kalshi.models import Quote
from mmbot.marketdata import MarketData
from mmbot.quoting.accept import Acceptances
from mmbot.quoting.book import LiveQuote, QuoteBook, Withdrawal
from mmbot.quoting.execution import Executions
from mmbot.quoting.gateway import QuoteGateway
from mmbot.quoting.respond import DecisionObserver, Responder
from mmbot.quoting.stats import Counters, LatencyObserver
from mmbot.quoting.withdraw import Withdrawer
from mmbot.risk import RiskBook
from mmbot.strategy import StrategyRouter
from mmbot.tasks import TaskSupervisor

__all__ = ["QuoteManager"]

log = structlog.get_logger("mmbot.quoting")


class QuoteManager:
    """Owns every quote of the daemon on the exchange."""

    def __init__(
        self,
        rest: QuoteGateway,
        market_data: MarketData,
        router: StrategyRouter,
        risk: RiskBook,
        journal: Journal,
        settings: QuotesSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        latency: LatencyObserver | None = None,
        sleep: Callable[[float], Coroutine[Any, Any, None]] = asyncio.sleep,
        on_reconcile_needed: Callable[[str], None] | None = None,
        tasks: TaskSupervisor | None = None,
        shadow: bool = False,
        observer: DecisionObserver | None = None,
        fee_model: FeeModel | None = None,
    ) -> None:
        """Quote through ``rest`` on ``market_data``, as ``router`` and ``risk`` allow.

        Its handlers run as tasks of ``tasks``, the engine's supervisor (a private one if
        None, as in unit tests). In ``shadow`` mode RFQs are priced, not quoted.
        ``observer`` (the research recorder) is told of every RFQ and its pricing, shadow or
        not. ``fee_model`` prices a fill the exchange reports no fee for.
        """
        self._settings = settings
        self.counters = Counters()
        self._book = book = QuoteBook()
        #: Where every handler of this manager runs; the engine waits for it at shutdown.
        self.tasks = tasks if tasks is not None else TaskSupervisor()
        #: Run a coroutine as a supervised task (the supervisor's own bound method).
        self.spawn = self.tasks.spawn
        counters = self.counters
        self._withdrawer = withdrawer = Withdrawer(
            rest, book, market_data, journal, counters, spawn=self.spawn, sleep=sleep
        )
        self._respond = Responder(
            rest,
            market_data,
            router,
            risk,
            journal,
            settings,
            book,
            counters,
            withdrawer,
            spawn=self.spawn,
            arm_expiry=self._arm_expiry,
            clock=clock,
            latency=latency,
            shadow=shadow,
            observer=observer,
        )
        self._accept = Acceptances(
            rest,
            market_data,
            risk,
            journal,
            settings,
            book,
            counters,
            withdrawer,
            schedule_execution_check=self._schedule_execution_check,
            latency=latency,
            clock=clock,
        )
        self._execution = Executions(
            rest,
            risk,
            journal,
            book,
            counters,
            withdrawer,
            market_data,
            spawn=self.spawn,
            schedule_execution_check=self._schedule_execution_check,
            sleep=sleep,
        )
        if fee_model is not None:
            self._execution.fee_model = fee_model
        self.on_reconcile_needed = on_reconcile_needed
        # The flows' own methods, bound here rather than wrapped: an event (the hot path
        # from a WebSocket frame to a quote request) costs no extra call.
        #: Quote an RFQ (``received_at``: when its frame arrived, for the latency histogram).
        self.on_rfq = self._respond.on_rfq
        #: The RFQ went away: our quote on it goes with it.
        self.on_rfq_deleted = self._respond.on_rfq_deleted
        #: A refreshed market: requote where the reference moved (MarketData's on_refresh).
        self.on_market = self._respond.on_market
        #: A requester accepted our quote: reserve and confirm, or decline and withdraw.
        self.on_quote_accepted = self._accept.on_quote_accepted
        #: A confirmed quote executed: book it from the fills of its order.
        self.on_quote_executed = self._execution.on_quote_executed
        #: Track an open or accepted quote found on the exchange, so its acceptance is judged.
        self.adopt = self._accept.adopt
        #: Track a confirmed quote found on the exchange (an earlier run confirmed it).
        self.adopt_confirmed = self._execution.adopt_confirmed
        #: Apply a quote's REST state to a confirmed quote whose execution event was missed.
        self.settle_from_rest = self._execution.settle_from_rest
        #: Book an executed quote from its fills now; False (still held) if none are listed.
        self.settle_execution = self._execution.settle_execution
        #: Drop an executed quote whose fills never showed: the exchange's positions hold it.
        self.release_unbooked = self._execution.release_unbooked
        #: Withdraw every open quote; wait (up to ``within`` seconds) until all are gone.
        self.cancel_all = withdrawer.cancel_all

    # ------------------------------------------------------------------ settings of a run

    @property
    def quoting(self) -> bool:
        """False once the daemon stops: no new quote, no requote, every acceptance declined."""
        return self._respond.quoting

    @quoting.setter
    def quoting(self, value: bool) -> None:
        self._respond.quoting = value
        self._accept.quoting = value

    @property
    def me(self) -> str | None:
        """Our communications id: events naming another creator are not ours to act on.

        None (every event is taken as ours) until the engine knows it.
        """
        return self._accept.me

    @me.setter
    def me(self, value: str | None) -> None:
        self._accept.me = value
        self._execution.me = value

    @property
    def on_reconcile_needed(self) -> Callable[[str], None] | None:
        """Asked for a reconciliation when only the exchange's positions can settle something."""
        return self._execution.on_reconcile_needed

    @on_reconcile_needed.setter
    def on_reconcile_needed(self, value: Callable[[str], None] | None) -> None:
        self._execution.on_reconcile_needed = value
        self._withdrawer.on_reconcile_needed = value

    # Test seams, under the names they had when the manager did everything itself: a test
    # swaps the exchange, or the sleep of retries and look-ups, of a manager already built.

    @property
    def _rest(self) -> QuoteGateway:
        return self._respond._rest

    @_rest.setter
    def _rest(self, rest: QuoteGateway) -> None:
        self._respond._rest = rest
        self._accept._rest = rest
        self._execution._rest = rest
        self._withdrawer._rest = rest

    @property
    def _sleep(self) -> Callable[[float], Coroutine[Any, Any, None]]:
        return self._withdrawer._sleep

    @_sleep.setter
    def _sleep(self, sleep: Callable[[float], Coroutine[Any, Any, None]]) -> None:
        self._withdrawer._sleep = sleep
        self._execution._sleep = sleep

    @property
    def _by_rfq(self) -> Mapping[str, LiveQuote]:
        return self._book.by_rfq

    @property
    def _by_quote(self) -> Mapping[str, LiveQuote]:
        return self._book.by_quote

    @property
    def _withdrawals(self) -> Mapping[str, Withdrawal]:
        return self._book.withdrawals

    # ------------------------------------------------------------------ bookkeeping

    @property
    def open_quotes(self) -> int:
        """Quotes live on the exchange: sent, or being withdrawn and not yet gone."""
        return self._book.open_quotes

    def live(self) -> list[LiveQuote]:
        """Every tracked quote."""
        return self._book.live()

    def tracked_quote_ids(self) -> set[str]:
        """Ids of every quote the manager tracks, those being withdrawn included."""
        return self._book.tracked_quote_ids()

    def withdraw_untracked(self, quote: Quote, reason: str) -> None:
        """Withdraw an open quote of ours that nothing tracks (found by a reconciliation)."""
        self._withdrawer.withdraw(quote.id, quote.rfq_id, quote.market_ticker, reason)

    # ------------------------------------------------------------------ tasks and timers

    @property
    def tasks_in_flight(self) -> int:
        """Handlers running now (each RFQ, acceptance and withdrawal runs as one)."""
        return self.tasks.in_flight

    async def wait_idle(self) -> None:
        """Wait for every supervised task started so far."""
        await self.tasks.wait_idle()

    def _arm_expiry(self, live: LiveQuote) -> None:
        if live.expiry is not None:
            live.expiry.cancel()
        ttl = live.ttl if live.ttl is not None else self._settings.ttl_seconds
        live.expiry = asyncio.get_running_loop().call_later(
            ttl, lambda: self.spawn(self._respond.expire(live), "quote-expiry")
        )

    def _schedule_execution_check(self, live: LiveQuote, delay: float) -> None:
        asyncio.get_running_loop().call_later(
            delay, lambda: self.spawn(self._execution.check_execution(live), "execution-check")
        )
