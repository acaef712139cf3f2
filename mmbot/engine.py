"""The daemon: events in, handlers out, reconciliation, supervision, clean shutdown.

:class:`Engine` wires the WebSocket stream to the quote manager. Each event is
handled in its own supervised task, so a slow quote creation never holds up a
confirmation. On start, once the first subscription stands, after every
``Reconnected`` marker and every ``reconcile.interval_seconds`` it reconciles with the
exchange over REST, because the ``communications`` channel has no sequence numbers and
events may have been missed:

* confirmed quotes are settled from REST first (executed ones booked from their fills);
* positions are reloaded from ``GET /portfolio/positions`` (the exchange is the truth);
  a position the exchange closed without us seeing it (settlement) is realised at the
  market's settlement value, or at its worst case when the market does not say;
* executions whose fills never showed are released: the positions just loaded hold them;
* own open quotes the daemon does not track are withdrawn (with retries, like any other);
* own quotes accepted but not confirmed are re-examined: one this journal created is
  judged from the journal's record of it (and declined if the market moved against it);
  any other is declined and withdrawn;
* own confirmed quotes are tracked until they execute;
* open RFQs created while disconnected are quoted if still fresh.

At start-up it refuses to trade when the account holds open or accepted quotes this
journal did not create (another daemon on the same key), unless told to adopt them
(``--adopt-orphans``: they are declined and withdrawn). Today's realised P&L is rebuilt
from the journal, so a restart does not reset the daily loss limit.

On stop (SIGTERM, SIGINT or ``--duration``) it stops quoting, withdraws every own open
quote within ``shutdown.timeout_seconds``, flushes the journal and reports how many quotes
it could not confirm gone (:attr:`Engine.left_open`), which makes the exit code non-zero.

Shadow mode (``run.shadow``, read-only REST client) prices RFQs as live and writes nothing:
no quote, confirm, decline, withdrawal, orphan refusal or sweep; account quotes are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog

from mmbot.config import Settings
from mmbot.journal import CreatedQuote, Journal, JournalError
from mmbot.kalshi.errors import KalshiError
from mmbot.kalshi.models import (
    MarketPosition,
    Quote,
    QuoteAccepted,
    QuoteExecuted,
    RfqCreated,
    RfqDeleted,
    accepted_msg_from_rest,
)
from mmbot.kalshi.rest import KalshiRestClient
from mmbot.kalshi.ws import CommunicationsStream, Reconnected, SubscriptionError
from mmbot.logs import configured_format, json_event_line
from mmbot.marketdata import MarketData, settlement_value
from mmbot.observability import Health, State
from mmbot.quoting import QuoteManager
from mmbot.risk import RiskBook
from mmbot.status import Snapshot
from mmbot.strategy import Strategy, StrategyRouter
from mmbot.tasks import TaskSupervisor

__all__ = ["Engine", "ReconcileRequests", "Snapshot", "StartupRefused"]

_LOG_NAME = "mmbot.engine"
log = structlog.get_logger(_LOG_NAME)

_ZERO = Decimal(0)
_ONE = Decimal(1)
_KILL_SWITCH_POLL_SECONDS = 0.5
# How long a kill-switch sweep waits for its withdrawals before the watcher looks again.
_KILL_SWITCH_SWEEP_SECONDS = 2.0
_RESTART_DELAY_SECONDS = 1.0
# A crashed run's last journal rows may be lost with it: a quote created this soon after
# its last row is taken for one of its own.
_CRASH_GRACE = timedelta(seconds=5)


class StartupRefused(Exception):
    """The account is in a state this daemon must not start trading on; the text says why."""


class ReconcileRequests:
    """Asks for a reconciliation soon; the engine's reconcile loop answers.

    Built before the engine and handed to whatever may ask (the quote manager, when only
    the exchange's records can settle something), so nothing needs the engine to exist first.
    """

    def __init__(self) -> None:
        """No request yet."""
        self.wanted = asyncio.Event()

    def __call__(self, reason: str) -> None:
        """Ask for a reconciliation soon (something only the exchange's records can settle)."""
        log.info("reconcile_requested", reason=reason)
        self.wanted.set()


class Engine:
    """Runs the market maker until told to stop.

    Built by :func:`mmbot.daemon.build_engine` from parts already wired to one another; it
    runs them and supervises the long-lived loops, but rewires none of them.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        rest: KalshiRestClient,
        stream: CommunicationsStream,
        journal: Journal,
        risk: RiskBook,
        router: StrategyRouter,
        market_data: MarketData,
        quotes: QuoteManager,
        reconcile_requests: ReconcileRequests | None = None,
        tasks: TaskSupervisor | None = None,
        status: Callable[[str], None] | None = None,
        adopt_orphans: bool = False,
    ) -> None:
        """Run ``quotes`` on ``stream``'s events, reconciling when ``reconcile_requests`` asks.

        Every event's handler runs as a task of ``tasks`` (by default the supervisor the
        quote manager was given), which shutdown waits for.
        """
        self.settings = settings
        self.rest = rest
        self.stream = stream
        self.journal = journal
        self.risk = risk
        self.router = router
        self.market_data = market_data
        self.quotes = quotes
        self.tasks = tasks if tasks is not None else quotes.tasks
        self._status = status
        self.communications_id: str | None = None
        self.failure: BaseException | None = None
        self._reconciling = asyncio.Lock()
        self.reconciliations = 0
        self.adopt_orphans = adopt_orphans
        self._shadow = settings.run.shadow
        self._reconcile_requests = reconcile_requests or ReconcileRequests()
        self._reconcile_wanted = self._reconcile_requests.wanted
        # Readiness: set once the start-up reconciliation is done, and from shutdown on.
        self._started = False
        self._stopping = False
        # The last kill-switch look that failed, so a failing stat is logged once, not twice
        # a second.
        self._kill_switch_error: str | None = None
        #: After shutdown: quotes of ours the exchange did not confirm gone, and whether the
        #: account could be listed to check for quotes nothing tracked.
        self.left_open = 0
        self.cleanup_verified = False
        self._since: int | None = None  # this run's start (Unix s, less clock slack)

    # ------------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set (or the stream fails for good); return an exit code."""
        self._since = int(time.time()) - 300
        for strategy in self.router.strategies():
            strategy.on_start()
        self.communications_id = await self.rest.get_communications_id()
        self.quotes.me = self.communications_id
        markets = await self.market_data.prime()
        await self._rebuild_daily_pnl()
        kill_switch_file = self.settings.risk.kill_switch_file
        log.info(
            "daemon_started",
            markets=markets,
            strategies=len(self.router.strategies()),
            kill_switch_file=str(kill_switch_file) if kill_switch_file is not None else None,
        )
        # Read the kill switch before the first reconciliation: it quotes the open RFQs it
        # finds and confirms acceptances an earlier run left, and the watcher's first look
        # would only come after those quotes and confirmations went out.
        if await self._kill_switch_file_present():
            self.risk.kill_switch = True
            self._log_kill_switch("kill_switch_on", file=str(kill_switch_file))
        # Not through reconcile(): a refusal must stop the start, not be logged and skipped.
        async with self._reconciling:
            counts = await self._reconcile("start")
            self.reconciliations += 1
            self.journal.record_reconciled(trigger="start", counts=counts)
            log.info("reconciled", why="start", **counts)
        self._started = True
        # Everything allocated so far (modules, models, schemas, the markets) lives as
        # long as the process. Frozen, the collector stops rescanning it, and the full
        # collections that used to stall an RFQ for milliseconds scan only what is new.
        gc.collect()
        gc.freeze()
        background = [
            asyncio.create_task(self._supervise("market_data", self.market_data.run)),
            asyncio.create_task(self._supervise("kill_switch", self._watch_kill_switch)),
            asyncio.create_task(self._consume(stop), name="consume"),
            asyncio.create_task(self._supervise("catch_up", self._reconcile_once_subscribed)),
            asyncio.create_task(self._supervise("reconcile", self._reconcile_periodically)),
        ]
        feed = self.market_data.feed
        if feed is not None:
            background.append(asyncio.create_task(self._supervise("orderbook_feed", feed.run)))
        if self._status is not None:
            background.append(asyncio.create_task(self._supervise("status", self._report)))
        try:
            await stop.wait()
        finally:
            await self.shutdown(background)
        if self.failure is not None or self.left_open or not self.cleanup_verified:
            return 1
        return 0

    async def _rebuild_daily_pnl(self) -> None:
        """Start today's realised P&L from the journal: a restart must not reset the limit."""
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        # Net of fees, as the risk book counted it while it ran.
        realized = await asyncio.to_thread(self.journal.realized_pnl_since, midnight)
        fees = await asyncio.to_thread(self.journal.fees_since, midnight)
        self.risk.set_realized_today(realized, fees=fees)
        if realized or fees:
            log.info("daily_pnl_rebuilt", realized_today=str(realized), fees_today=str(fees))

    async def _supervise(self, name: str, body: Callable[[], Any]) -> None:
        """Run a background loop forever, restarting it after an error."""
        while True:
            try:
                await body()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background_task_failed", task=name)
                await asyncio.sleep(_RESTART_DELAY_SECONDS)

    async def _consume(self, stop: asyncio.Event) -> None:
        quotes = self.quotes
        spawn = self.tasks.spawn
        stream = self.stream
        try:
            async with contextlib.aclosing(stream.events()) as events:
                async for item in events:
                    if isinstance(item, RfqCreated):
                        spawn(quotes.on_rfq(item.msg, stream.last_frame_at), "rfq")
                    # In shadow mode it is another process's quote: judging it would write.
                    elif isinstance(item, QuoteAccepted) and not self._shadow:
                        spawn(quotes.on_quote_accepted(item.msg, stream.last_frame_at), "accept")
                    elif isinstance(item, QuoteExecuted):
                        quotes.on_quote_executed(item.msg)
                    elif isinstance(item, RfqDeleted):
                        spawn(quotes.on_rfq_deleted(item.msg.id), "rfq-deleted")
                    elif isinstance(item, Reconnected):
                        log.warning("ws_reconnected", downtime=round(item.downtime_seconds, 3))
                        spawn(self.reconcile("reconnect"), "reconcile")
        except SubscriptionError as exc:
            # The exchange refuses our subscription for good: nothing to trade on.
            log.error("subscription_refused", code=exc.code, reason=exc.message)
            self.failure = exc
            stop.set()
        except Exception as exc:
            log.exception("event_stream_failed")
            self.failure = exc
            stop.set()

    async def _reconcile_once_subscribed(self) -> None:
        # The start reconciliation runs before the stream is subscribed, and the stream
        # announces only re-subscriptions (Reconnected), not the first one. Whatever was
        # published in between (an RFQ, an acceptance) reached nobody: catch up once, as
        # after a reconnect, as soon as the first subscription stands.
        await self.stream.wait_subscribed()
        await self.reconcile("subscribed")

    async def _reconcile_periodically(self) -> None:
        # Reconnects are not the only way to miss an event: a dropped frame on a live
        # connection leaves no trace. A timer bounds how long the book can be wrong.
        interval = self.settings.reconcile.interval_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reconcile_wanted.wait(), interval)
            why = "requested" if self._reconcile_wanted.is_set() else "timer"
            self._reconcile_wanted.clear()
            await self.reconcile(why)

    def request_reconcile(self, reason: str) -> None:
        """Ask for a reconciliation soon (something only the exchange's records can settle)."""
        self._reconcile_requests(reason)

    async def _kill_switch_file_present(self) -> bool:
        """Whether the kill-switch file exists; a file that cannot be looked at counts as on."""
        path = self.settings.risk.kill_switch_file
        if path is None:
            return False
        try:
            # A stat, off the event loop: cheap and never on the hot path.
            await asyncio.to_thread(os.stat, path)
        except (FileNotFoundError, NotADirectoryError):
            self._kill_switch_error = None
            return False
        except OSError as exc:
            # EACCES, EIO, a stale mount: we cannot tell whether the operator asked us to
            # stop, so we stop.
            error = exc.strerror or type(exc).__name__
            if error != self._kill_switch_error:
                log.error("kill_switch_unreadable", file=str(path), error=error, taken_as="on")
            self._kill_switch_error = error
            return True
        self._kill_switch_error = None
        return True

    def _log_kill_switch(self, event: str, **fields: Any) -> None:
        """Log a kill-switch event: a warning when the operator made the file, else an error.

        A file that exists is a deliberate stop, the system working as asked. One that could
        not be looked at (``kill_switch_unreadable``) is a fault the daemon failed closed on.
        """
        if self._kill_switch_error is None:
            log.warning(event, cause="file_present", **fields)
        else:
            log.error(event, cause="file_unreadable", error=self._kill_switch_error, **fields)

    async def _watch_kill_switch(self) -> None:
        path = self.settings.risk.kill_switch_file
        if path is None:
            return
        while True:
            present = await self._kill_switch_file_present()
            if present and not self.risk.kill_switch:
                self.risk.kill_switch = True
                self._log_kill_switch("kill_switch_on", file=str(path))
                if not self._shadow:  # shadow mode has no quote to cancel, and sends nothing
                    deleted = await self.quotes.cancel_all(
                        "kill_switch", within=_KILL_SWITCH_SWEEP_SECONDS
                    )
                    self._log_kill_switch(
                        "kill_switch_cancelled_quotes",
                        deleted=deleted,
                        still_open=self.quotes.open_quotes,
                    )
            elif present and not self._shadow:
                # A quote whose creation was in flight when the switch went on was not yet
                # open for cancel_all, and lands open afterwards; a withdrawal may still be
                # retrying. Sweep on every look while the switch stays on (a no-op when
                # nothing is open).
                late = await self.quotes.cancel_all(
                    "kill_switch", within=_KILL_SWITCH_SWEEP_SECONDS
                )
                if late:
                    self._log_kill_switch(
                        "kill_switch_cancelled_quotes",
                        deleted=late,
                        still_open=self.quotes.open_quotes,
                    )
            elif not present and self.risk.kill_switch:
                self.risk.kill_switch = False
                log.warning("kill_switch_off", file=str(path))
            await asyncio.sleep(_KILL_SWITCH_POLL_SECONDS)

    async def _report(self) -> None:
        interval = self.settings.run.status_interval_seconds
        while True:
            await asyncio.sleep(interval)
            self.report_status()

    def report_status(self, *, final: bool = False) -> None:
        """Give the ``status`` callback the snapshot: a JSON ``status`` event or a human line.

        With JSON logs (``log.format``, the default when output is not a terminal) the line
        is a JSON event shaped like the log lines (run_id, level, timestamp...), so a log
        pipeline sees a single format; on a terminal it stays today's human line. It goes
        where the status always went, whatever the log level.
        """
        if self._status is None:
            return
        snapshot = self.snapshot()
        if configured_format() == "json":
            fields = snapshot.event_fields()
            self._status(json_event_line("status", logger=_LOG_NAME, final=final, **fields))
        else:
            self._status(snapshot.line())

    # ------------------------------------------------------------------ reconciliation

    async def reconcile(self, why: str) -> None:
        """Bring local state in line with the exchange (see the module docstring)."""
        async with self._reconciling:
            try:
                counts = await self._reconcile(why)
            except (KalshiError, JournalError) as exc:
                log.warning("reconcile_failed", why=why, error=str(exc))
                return
            self.reconciliations += 1
            self.journal.record_reconciled(trigger=why, counts=counts)
            log.info("reconciled", why=why, **counts)

    async def _reconcile(self, why: str) -> dict[str, int]:
        counts = {
            "positions": 0,
            "untracked_deleted": 0,
            "accepted": 0,
            "confirmed": 0,
            "rfqs": 0,
            "settled": 0,
        }
        quotes = self.quotes
        # Settle our confirmed quotes *before* loading positions: a fill that executed while
        # its quote_executed event was lost (a WS drop) is already inside the position the
        # exchange reports, and settling it afterwards would commit it a second time on top
        # (RiskBook.set_position's contract). Settled first, its commit is then overwritten
        # by the exchange's figure.
        unbooked = []
        for live in quotes.live():
            if live.quote_id is None:
                continue
            if live.state == "confirmed":
                with contextlib.suppress(KalshiError):
                    quote = await self.rest.get_quote(live.quote_id, rfq_id=live.rfq.id)
                    await quotes.settle_from_rest(live, quote)
            if live.state == "executing" and not await quotes.settle_execution(live):
                unbooked.append(live)
        listed: set[str] = set()
        async for position in self.rest.iter_positions():
            listed.add(position.ticker)
            counts["positions"] += 1
            if position.position_fp == 0 and self.risk.position(position.ticker) != 0:
                counts["settled"] += await self._position_closed(position.ticker)
            else:
                self._load_position(
                    position.ticker, position.position_fp, _plausible_cost(position)
                )
        # The exchange is the truth for markets it stops listing too (a settled market
        # drops out of the default listing): set_position only touches the markets named,
        # so a position kept here would count against limits forever.
        for market in set(self.risk.positions()) - listed:
            counts["settled"] += await self._position_closed(market)
        # Executions whose fills never showed are inside the positions just loaded: only now
        # may their reservations go, or the fill would count nowhere in between.
        for live in unbooked:
            quotes.release_unbooked(live)

        # At start-up the whole lookback; later only this run's quotes: fewer windows to read.
        mine = {"user_filter": "self", "min_ts": None if why == "start" else self._since}
        open_quotes = [q async for q in self.rest.iter_quotes(status="open", **mine)]
        accepted = [q async for q in self.rest.iter_quotes(status="accepted", **mine)]
        if self._shadow and (open_quotes or accepted):
            # Another process's (shadow quotes nothing): not ours to refuse, withdraw or judge.
            log.info("shadow_ignores_account_quotes", open=len(open_quotes), accepted=len(accepted))
            open_quotes, accepted = [], []
        # What the journal says we quoted: the record an acceptance is judged against, and
        # at start-up the test of whether these quotes are ours at all.
        records = await asyncio.to_thread(
            self.journal.quotes_created, [q.id for q in open_quotes + accepted]
        )
        if why == "start":
            await self._refuse_orphans(open_quotes + accepted, records)

        for quote in open_quotes:
            # Judged against what is tracked now, after the listing, not before it: RFQ
            # handlers run meanwhile (after a reconnect events flow during reconciliation),
            # and a quote created while the listing was in flight is ours. One whose create
            # answer is still on its way is not in tracked_quote_ids() yet, but its RFQ is
            # tracked (state "creating"); any open quote of ours on a tracked RFQ is that
            # quote, since a new quote on an RFQ replaces our previous one.
            tracked = quotes.tracked_quote_ids()
            tracked_rfqs = {live.rfq.id for live in quotes.live()}
            if quote.id not in tracked and quote.rfq_id not in tracked_rfqs:
                quotes.withdraw_untracked(quote, "reconcile_untracked")
                counts["untracked_deleted"] += 1

        for quote in accepted:
            counts["accepted"] += 1
            record = records.get(quote.id)
            if quote.id not in quotes.tracked_quote_ids() and record is not None:
                strategy, event = await self._route(record.market)
                if strategy is not None:
                    quotes.adopt(quote, strategy, record, event)
            # Judged like any acceptance: from our record, by risk, and declined (and
            # withdrawn) when there is no record of it to judge it by.
            self.tasks.spawn(quotes.on_quote_accepted(accepted_msg_from_rest(quote)), "re-accept")

        async for quote in self.rest.iter_quotes(status="confirmed", **mine):
            strategy, event = await self._route(quote.market_ticker)
            if quotes.adopt_confirmed(quote, strategy, event):
                counts["confirmed"] += 1

        max_age = self.settings.quotes.max_rfq_age_seconds
        now = datetime.now(UTC)
        async for rfq in self.rest.iter_rfqs(status="open"):
            if rfq.creator_id and rfq.creator_id == self.communications_id:
                continue
            created = rfq.created_ts
            if created is not None and (now - created).total_seconds() <= max_age:
                counts["rfqs"] += 1
                self.tasks.spawn(quotes.on_rfq(rfq), "rfq-catch-up")
        return counts

    async def _route(self, market: str) -> tuple[Strategy[Any] | None, str]:
        """The strategy for ``market`` and its event ticker (routes may match on either)."""
        cached = self.market_data.market(market) or await self.market_data.ensure_fresh(market)
        event = (cached.event_ticker or "") if cached is not None else ""
        return self.router.route(market, event), event

    async def _refuse_orphans(self, found: list[Quote], records: dict[str, CreatedQuote]) -> None:
        """Refuse to start beside quotes this journal did not create, unless adopting them."""
        orphans = [q for q in found if q.id not in records]
        if not orphans:
            return
        runs = await asyncio.to_thread(self.journal.runs)
        previous = [run for run in runs if run.run_id != self.journal.run_id]
        last = previous[-1] if previous else None
        if last is not None and last.stopped_at is None:
            # The last run crashed: rows it had not written yet died with it. A quote
            # created while it ran, or just after its last row, is taken for its own.
            until = last.last_at + _CRASH_GRACE
            orphans = [
                q
                for q in orphans
                if q.created_ts is None or not (last.started_at <= q.created_ts <= until)
            ]
        if not orphans:
            return
        if self.adopt_orphans:
            log.warning("adopting_orphan_quotes", quotes=len(orphans), action="withdraw")
            return
        raise StartupRefused(
            f"{len(orphans)} open or accepted quote(s) on this account were not created by "
            f"the journal {self.journal.path}: another mmbot may be trading with the same key. "
            "Stop it, or start with --adopt-orphans to take the quotes over and withdraw them."
        )

    def _load_position(self, market: str, contracts: Decimal, cost: Decimal) -> None:
        """Take the exchange's position for ``market``; journal it when it is news to us.

        A fill that executed while we were down (or while events were lost) reaches the
        book here and nowhere else, so without this row the journal's positions would lag
        the exchange's until the market's next execution.
        """
        before = self.risk.position(market)
        self.risk.set_position(market, contracts, cost)
        if contracts != before:
            self.journal.record_position_changed(
                market=market,
                contracts=contracts,
                realized_pnl_change=_ZERO,
                reason="reconciled",
                detail={"before": before},
            )

    async def _position_closed(self, market: str) -> int:
        """The exchange no longer holds a position we hold: realise it; 1 if settled.

        A settled market pays its settlement value, and that P&L counts against today's
        loss limit. When the market answers without saying what it paid, the worst case is
        taken (the position's whole cost is lost) and the operator is told; when it cannot
        be asked, the position stays until the next reconciliation.
        """
        state = self.risk.positions().get(market)
        if state is None or (state.contracts == 0 and state.cost == 0):
            self.risk.set_position(market, _ZERO, _ZERO)
            return 0
        try:
            settled = settlement_value(await self.rest.get_market(market))
        except KalshiError as exc:
            # A failed look-up says nothing about the market: keep the position (it still
            # counts against every limit) and ask again at the next reconciliation, rather
            # than book a loss that may never have happened.
            log.warning("settlement_lookup_failed", market=market, error=str(exc))
            return 0
        if settled is None:
            log.error(
                "position_closed_unseen",
                market=market,
                contracts=str(state.contracts),
                cost=str(state.cost),
                assumed="the whole cost is lost",
            )
            # Worthless to whoever holds it: YES settles at 0 for a YES holder, 1 for NO.
            value = _ZERO if state.contracts > 0 else _ONE
            reason = "closed_unseen"
        else:
            value, reason = settled, "settled"
        realized = self.risk.settle(market, value)
        self.journal.record_position_changed(
            market=market,
            contracts=_ZERO,
            realized_pnl_change=realized,
            reason=reason,
            detail={"before": state.contracts, "cost": state.cost, "yes_value": value},
        )
        log.info("position_settled", market=market, realized=str(realized), reason=reason)
        return 1 if settled is not None else 0

    # ------------------------------------------------------------------ status and shutdown

    def snapshot(self) -> Snapshot:
        """Current counters, exposure and P&L."""
        counters = self.quotes.counters
        fees = self.risk.fees_paid
        positions = self.risk.positions().values()
        realized = sum((state.realized_pnl for state in positions), _ZERO) - fees
        # The risk book's own marks: the figure shown is the one the daily loss limit reads.
        unrealized = self.risk.unrealized_pnl()
        return Snapshot(
            rfqs_seen=counters.rfqs_seen,
            rfqs_quoted=counters.rfqs_quoted,
            rfqs_skipped=counters.rfqs_skipped,
            skipped=dict(counters.skipped_by_reason),
            accepts=counters.accepts,
            confirms=counters.confirms,
            declines=counters.declines,
            executions=counters.executions,
            open_quotes=self.quotes.open_quotes,
            exposure=self.risk.exposure(),
            realized_pnl=realized,
            unrealized_pnl=unrealized,
            fees=fees,
            shadow=self._shadow,
        )

    def health(self) -> Health:
        """Ready while started, not stopping, subscribed, and market data is being fetched."""
        reasons: list[str] = []
        if self._stopping:
            reasons.append("shutting down")
        elif not self._started:
            reasons.append("starting: loading markets and reconciling with the exchange")
        subscribed = self.stream.subscribed
        if not subscribed:
            refusal = self.stream.last_refusal
            reasons.append(
                f"websocket not subscribed: {refusal}" if refusal else "websocket not subscribed"
            )
        refused = self.rest.auth_failure
        if refused is not None:
            reasons.append(
                f"the exchange refuses our requests: {refused.message} (HTTP {refused.status}); "
                "if it says the timestamp is too old or in the future, this host's clock is "
                "off: check NTP"
            )
        if not self.journal.healthy:
            reasons.append(f"journal unhealthy, no new risk: {self.journal.last_error}")
        age = self.market_data.last_success_age()
        config = self.settings.marketdata
        # A refresh is due every refresh_seconds and keeps data younger than ttl_seconds;
        # no successful fetch for a whole interval past the TTL means fetching is failing.
        limit = config.ttl_seconds + config.refresh_seconds
        if age is None:
            reasons.append("no market data yet")
        elif age > limit:
            reasons.append(f"market data stale: last fetched {age:.1f} s ago (limit {limit} s)")
        return Health(
            ready=not reasons,
            reasons=tuple(reasons),
            websocket_subscribed=subscribed,
            market_data_age_seconds=age,
            kill_switch=self.risk.kill_switch,
        )

    def state(self) -> State:
        """Everything the metrics read at a scrape, computed once."""
        snapshot = self.snapshot()
        stats = self.stream.stats
        return State(
            open_quotes=snapshot.open_quotes,
            exposure=snapshot.exposure,
            exposure_limit=self.settings.risk.max_exposure_dollars,
            daily_loss_limit=self.settings.risk.max_daily_loss_dollars,
            realized_pnl=snapshot.realized_pnl,
            unrealized_pnl=snapshot.unrealized_pnl,
            daily_pnl=self.risk.daily_pnl(),
            realized_pnl_today=self.risk.realized_pnl_today(),
            fees_today=self.risk.fees_today,
            ws_frames=stats.frames,
            ws_invalid=stats.malformed,
            ws_unknown=stats.unknown,
            ws_reconnects=stats.reconnects,
            md=self.market_data.feed.stats if self.market_data.feed is not None else None,
            journal_backlog=self.journal.backlog,
            journal_lost=self.journal.lost,
            journal_healthy=self.journal.healthy,
            quote_queue_depth=self.rest.write_bucket.sheddable_waiting,
            quote_queue_peak=self.rest.write_bucket.peak_sheddable,
            read_waiters=self.rest.read_bucket.waiting,
            write_waiters=self.rest.write_bucket.waiting,
            tasks_in_flight=self.tasks.in_flight,
            positions={market: p.contracts for market, p in self.risk.positions().items()},
            health=self.health(),
            shadow=self._shadow,
        )

    async def shutdown(self, background: list[asyncio.Task[Any]]) -> None:
        """Stop quoting, withdraw every open quote in time, flush the journal."""
        started = time.monotonic()
        self._stopping = True
        # Back to ordinary collection: the process may go on (an embedding, a test).
        gc.unfreeze()
        timeout = self.settings.shutdown.timeout_seconds
        self.quotes.quoting = False
        await self.stream.close()
        if self.market_data.feed is not None:
            await self.market_data.feed.close()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        deleted = 0
        verified = False
        try:
            async with asyncio.timeout(timeout):
                # Handlers already past their "still quoting?" check (an RFQ waiting for its
                # market data, say) may still send a quote. Let them finish before the sweep
                # below looks for open quotes, or such a quote is left open once we exit.
                # Bounded to half the budget so the sweep itself always gets its turn.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout / 2):
                        await self.tasks.wait_idle()
                deleted = await self._sweep_on_shutdown()
                verified = True
        except TimeoutError:
            log.error("shutdown_timeout", seconds=timeout, still_open=self.quotes.open_quotes)
        except KalshiError as exc:
            log.error("shutdown_cleanup_failed", error=str(exc))
        self.left_open = self.quotes.open_quotes
        self.cleanup_verified = verified and self.left_open == 0
        if not self.cleanup_verified:
            log.error(
                "shutdown_left_quotes_open",
                quotes=self.left_open,
                verified=verified,
                fix="mmbot quotes cancel-all",
            )
        snapshot = self.snapshot()
        self.journal.record_run_stopped(
            reason="shutdown",
            detail={
                "deleted_quotes": deleted,
                "left_open": self.left_open,
                "cleanup_verified": self.cleanup_verified,
                "exposure": snapshot.exposure,
                "realized_pnl": snapshot.realized_pnl,
            },
        )
        remaining = max(0.5, timeout - (time.monotonic() - started))
        if not await self.journal.flush(remaining):
            log.error("journal_flush_incomplete")
        log.info(
            "daemon_stopped", deleted_quotes=deleted, seconds=round(time.monotonic() - started, 3)
        )

    async def _sweep_on_shutdown(self) -> int:
        """Withdraw every quote of ours still open, tracked or not; how many went."""
        if self._shadow:
            # Nothing of ours is open; what the account holds is another process's.
            return 0
        deleted = await self.quotes.cancel_all("shutdown")
        # Anything of ours still open on the exchange, tracked or not.
        # Older quotes were reconciled at start-up: this run's keep it short inside the timeout.
        mine = {"user_filter": "self", "min_ts": self._since}
        leftovers = [q async for q in self.rest.iter_quotes(status="open", **mine)]
        tracked = self.quotes.tracked_quote_ids()
        for quote in leftovers:
            if quote.id not in tracked:
                self.quotes.withdraw_untracked(quote, "shutdown_untracked")
        deleted += await self.quotes.cancel_all("shutdown")
        return deleted


def _plausible_cost(position: MarketPosition) -> Decimal:
    """The position's cost as the exchange reports it, or its worst case if that is absurd.

    A contract costs between $0 and $1, so a position's cost lies in [0, |contracts|]. A
    figure outside that is corrupt; the risk limits then count the most it could be,
    never less, and the operator is told.
    """
    cost = position.market_exposure_dollars or _ZERO
    ceiling = abs(position.position_fp)
    if _ZERO <= cost <= ceiling:
        return cost
    log.error(
        "position_cost_implausible",
        market=position.ticker,
        contracts=str(position.position_fp),
        reported=str(cost),
        assumed=str(ceiling),
    )
    return ceiling
