"""The Journal: the one object the daemon records through and reads back from.

It composes the parts of the package: ``files`` (start-up checks, the lock), ``schema``
(opening and migrating the database), ``writer`` (the queue and the thread that commits
it) and ``readers``. The ``record_*`` methods build an immutable row (redacting free-form
text and ``detail``), hand it to the writer and return without touching the disk.

Every row carries the ``run_id`` of the Journal object that recorded it; ``start()`` records
``run_started`` as the run's first row and ``close()`` records ``run_stopped`` unless
``record_run_stopped`` already did, so a run without ``run_stopped`` is one that crashed.
A replacement is one ``quote_replaced`` row for the new quote (never also ``quote_created``),
naming the quote it replaced in ``detail``; the old one gets no ``quote_deleted`` row, since
the exchange withdraws it when the new quote arrives. A requote that withdraws the quote
instead (the strategy or the risk check says no) is a ``quote_deleted`` row whose reason
starts with ``requote_``.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import secrets
import sqlite3
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from mmbot import __version__
from mmbot.journal.files import check_path, file_identity, release_lock, take_lock
from mmbot.journal.model import (
    CreatedQuote,
    Detail,
    ExecutionRow,
    Kind,
    Listener,
    RunRow,
    Side,
    Summary,
    Synchronous,
)
from mmbot.journal.readers import Reader
from mmbot.journal.report import format_summary
from mmbot.journal.schema import Row, format_ts, open_writer
from mmbot.journal.writer import Writer
from mmbot.logs import get_logger, redact_event, redact_text

__all__ = ["Journal"]

_log = get_logger("mmbot.journal")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _dec(value: Decimal | None) -> str | None:
    if value is None:
        return None
    # bool is an int; a float would carry binary rounding into a money column.
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"journal amounts must be Decimal, got {type(value).__name__}")
    exact = Decimal(value)
    if not exact.is_finite():
        raise ValueError(f"journal amounts must be finite, got {exact}")
    # "f" keeps every fractional digit given ("0.3500") and never uses an exponent.
    return format(exact, "f")


def _text(value: str | None) -> str | None:
    # str() turns StrEnum members into plain strings; redaction runs on every text column
    # so a secret passed in the wrong argument still never reaches the file.
    return None if value is None else redact_text(str(value))


def _detail(detail: Detail, own: Mapping[str, Any] | None = None) -> str | None:
    merged: dict[str, Any]
    if isinstance(detail, str):
        merged = {"note": detail} if detail else {}
    else:
        merged = dict(detail) if detail else {}
    if own:
        merged.update({key: value for key, value in own.items() if value is not None})
    if not merged:
        return None
    # The same rule as the logs: secret-named keys, PEM blocks and registered secrets go;
    # everything that is not plain JSON becomes a (redacted) string, so Decimals stay exact.
    clean = redact_event(None, "journal", merged)
    try:
        return orjson.dumps(clean, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        # orjson rejects e.g. integers beyond 64 bits; losing the row would be worse.
        return json.dumps(clean, default=str)


# Journals still open at interpreter exit are closed by one atexit hook, so a daemon that
# forgot close() (or died of an exception) still drains its queue. A strong set, from
# start() to close(): the writer thread holds only the Writer, so nothing else keeps an
# unreferenced, unclosed Journal alive until exit.
_open_journals: set[Journal] = set()


def _close_open_journals() -> None:
    for journal in list(_open_journals):
        journal.close(reason="interpreter_exit", timeout=5.0)


atexit.register(_close_open_journals)


class Journal:
    """Append-only SQLite record of what the daemon saw, decided and traded."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Synchronous = "NORMAL",
        clock: Callable[[], datetime] = _utc_now,
        run_id: str | None = None,
        batch_interval: float = 0.05,
        batch_rows: int = 500,
        busy_timeout: float = 5.0,
        retry_attempts: int = 3,
        retry_backoff: float = 0.05,
        max_outage_backoff: float = 30.0,
    ) -> None:
        """Prepare a journal at ``path``; nothing touches the disk before ``start()``."""
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        if batch_rows < 1 or retry_attempts < 1:
            raise ValueError("batch_rows and retry_attempts must be at least 1")
        self._path = Path(path)
        # WAL with synchronous=NORMAL fsyncs only at checkpoints, not at every commit: a
        # commit survives the process being killed (it is in the OS page cache), but a power
        # loss or kernel crash can lose the last commits before the next checkpoint. The
        # database itself is never corrupted either way. FULL fsyncs the WAL at every commit
        # (at most one per batch, ~20/s), so committed rows also survive a power loss; pick
        # it where the disk's fsync is cheap or the host is not on protected power.
        self._synchronous: Synchronous = synchronous
        self._clock = clock
        self._run_id = run_id if run_id is not None else self._new_run_id()
        self._busy_timeout = busy_timeout
        self._writer = Writer(
            self._path,
            batch_interval=batch_interval,
            batch_rows=batch_rows,
            retry_attempts=retry_attempts,
            retry_backoff=retry_backoff,
            max_outage_backoff=max_outage_backoff,
        )
        self._reader = Reader(self._path, busy_timeout=busy_timeout)
        self._listeners: list[Listener] = []
        self._row_listeners: list[Callable[[Row], None]] = []

    # ------------------------------------------------------------------ lifecycle

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def run_id(self) -> str:
        """This daemon run's id, stamped on every row it records."""
        return self._run_id

    @property
    def healthy(self) -> bool:
        """True while started, not closed, the file still in place and the last write good."""
        return self._writer.healthy

    @property
    def last_error(self) -> str | None:
        """The most recent write error (kept after recovery, for the record)."""
        return self._writer.last_error

    @property
    def backlog(self) -> int:
        """Rows recorded but not yet committed (including any given up on at close)."""
        return self._writer.backlog

    @property
    def written(self) -> int:
        """Rows committed by this Journal object."""
        return self._writer.written

    @property
    def lost(self) -> int:
        """Rows that could not be written before close and were logged instead."""
        return self._writer.lost

    def start(self, *, detail: Detail = None) -> None:
        """Lock and open (or create) the database, migrate it, record ``run_started``, start.

        Raises ``JournalLocked`` if another Journal holds the file, and ``JournalError``
        (one line: the path and the reason) if the file cannot be used.
        """
        if not self._writer.can_start():
            raise RuntimeError("a Journal can be started once, and not after close()")
        check_path(self._path)
        lock_fd = take_lock(self._path)
        conn: sqlite3.Connection | None = None
        try:
            conn = open_writer(
                self._path,
                busy_timeout=self._busy_timeout,
                synchronous=self._synchronous,
                clock=self._clock,
            )
            identity = file_identity(self._path)
            started = self._row(
                Kind.RUN_STARTED,
                detail=_detail(
                    detail,
                    {
                        "pid": os.getpid(),
                        "version": __version__,
                        "python": sys.version.split()[0],
                        "synchronous": self._synchronous,
                    },
                ),
            )
        except BaseException:
            if conn is not None:
                conn.close()
            release_lock(lock_fd)
            raise
        self._writer.start(conn, identity=identity, lock_fd=lock_fd, first_row=started)
        _open_journals.add(self)
        _log.info("journal_started", path=str(self._path), run_id=self._run_id)

    def close(self, *, reason: str = "shutdown", timeout: float = 10.0) -> bool:
        """Record ``run_stopped``, drain, commit, checkpoint and close; True if nothing was lost.

        Blocks for up to ``timeout`` seconds (plus one write attempt) while the disk is
        failing; rows still unwritten then are logged as ``journal_record_lost``.
        """
        closed = self._writer.close(
            timeout, stop_row=lambda: self._row(Kind.RUN_STOPPED, reason=_text(reason))
        )
        _open_journals.discard(self)
        return closed

    # A timeout argument rather than asyncio.timeout(): the outcome is a bool the caller
    # logs, not an exception that would unwind a shutdown sequence.
    async def aclose(self, *, reason: str = "shutdown", timeout: float = 10.0) -> bool:  # noqa: ASYNC109
        """``close()`` without blocking the event loop."""
        return await asyncio.to_thread(self.close, reason=reason, timeout=timeout)

    async def flush(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until everything recorded so far is committed; False on timeout."""
        return await self._writer.flush(timeout)

    # ------------------------------------------------------------------ recording

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(kind, reason)`` for every row recorded from now on.

        It runs on the recording thread, inline: it must be quick and must not block. The
        metrics count the journal's rows this way, so the two never disagree.
        """
        self._listeners.append(listener)

    def add_row_listener(self, listener: Callable[[Row], None]) -> None:
        """Call ``listener(row)`` with every whole row recorded from now on.

        Like :meth:`add_listener`, inline on the recording thread: the research recorder
        keeps the row and does its work elsewhere.
        """
        self._row_listeners.append(listener)

    def record_run_stopped(self, *, reason: str = "shutdown", detail: Detail = None) -> None:
        """Record a clean stop with final figures; ``close()`` records one if this was not."""
        if not self._writer.claim_stop_row():
            return
        self._record(Kind.RUN_STOPPED, reason=reason, detail=_detail(detail))

    def record_rfq_seen(
        self,
        *,
        rfq_id: str,
        market: str,
        contracts: Decimal | None,
        target_cost: Decimal | None,
        detail: Detail = None,
    ) -> None:
        """An RFQ arrived; its size is ``contracts``, or ``target_cost`` (stored in ``amount``)."""
        self._record(
            Kind.RFQ_SEEN,
            rfq_id=rfq_id,
            market=market,
            contracts=_dec(contracts),
            amount=_dec(target_cost),
            detail=_detail(detail),
        )

    def record_rfq_skipped(
        self, *, rfq_id: str, market: str, reason: str, detail: Detail = None
    ) -> None:
        """An RFQ was not quoted, and why (see ``SkipReason``)."""
        self._record(
            Kind.RFQ_SKIPPED, rfq_id=rfq_id, market=market, reason=reason, detail=_detail(detail)
        )

    def record_quote_created(
        self,
        *,
        rfq_id: str,
        quote_id: str,
        market: str,
        yes_bid: Decimal,
        no_bid: Decimal,
        contracts: Decimal | None,
        strategy: str,
        reference: Decimal | None = None,
        detail: Detail = None,
    ) -> None:
        """A fresh quote is live; ``price`` holds yes_bid, detail the bids, strategy, reference.

        ``reference`` is the mid the quote was priced against (kept only if given).
        """
        self._record(
            Kind.QUOTE_CREATED,
            rfq_id=rfq_id,
            quote_id=quote_id,
            market=market,
            price=_dec(yes_bid),
            contracts=_dec(contracts),
            detail=_detail(
                detail,
                {
                    "yes_bid": _dec(yes_bid),
                    "no_bid": _dec(no_bid),
                    "strategy": strategy,
                    "reference": _dec(reference),
                },
            ),
        )

    def record_quote_replaced(
        self,
        *,
        rfq_id: str,
        quote_id: str,
        old_quote_id: str,
        market: str,
        yes_bid: Decimal,
        no_bid: Decimal,
        contracts: Decimal | None = None,
        strategy: str | None = None,
        reason: str | None = None,
        reference: Decimal | None = None,
        detail: Detail = None,
    ) -> None:
        """New quote ``quote_id`` is live in place of ``old_quote_id``; not also "created"."""
        self._record(
            Kind.QUOTE_REPLACED,
            rfq_id=rfq_id,
            quote_id=quote_id,
            market=market,
            price=_dec(yes_bid),
            contracts=_dec(contracts),
            reason=reason,
            detail=_detail(
                detail,
                {
                    "old_quote_id": old_quote_id,
                    "yes_bid": _dec(yes_bid),
                    "no_bid": _dec(no_bid),
                    "strategy": strategy,
                    "reference": _dec(reference),
                },
            ),
        )

    def record_quote_deleted(
        self,
        *,
        quote_id: str,
        rfq_id: str | None,
        market: str | None,
        reason: str,
        detail: Detail = None,
    ) -> None:
        """A quote was withdrawn (or found gone), and why (see ``DeleteReason``)."""
        self._record(
            Kind.QUOTE_DELETED,
            rfq_id=rfq_id,
            quote_id=quote_id,
            market=market,
            reason=reason,
            detail=_detail(detail),
        )

    def record_quote_failed(
        self,
        *,
        rfq_id: str | None,
        market: str | None,
        code: str | None,
        message: str,
        status: int | None = None,
        quote_id: str | None = None,
        action: str = "create",
        detail: Detail = None,
    ) -> None:
        """The exchange refused a quote request (``action``); ``reason`` holds its error code."""
        self._record(
            Kind.QUOTE_FAILED,
            rfq_id=rfq_id,
            quote_id=quote_id,
            market=market,
            reason=code or None,
            detail=_detail(detail, {"message": message, "status": status, "action": action}),
        )

    def record_accept_received(
        self,
        *,
        quote_id: str,
        rfq_id: str,
        market: str,
        side: Side,
        price: Decimal,
        contracts: Decimal,
        detail: Detail = None,
    ) -> None:
        """A requester accepted; side, price and contracts are what the maker would buy."""
        self._record_fill_kind(
            Kind.ACCEPT_RECEIVED, quote_id, rfq_id, market, side, price, contracts, None, detail
        )

    def record_confirm_sent(
        self,
        *,
        quote_id: str,
        rfq_id: str,
        market: str,
        side: Side,
        price: Decimal,
        contracts: Decimal,
        detail: Detail = None,
    ) -> None:
        """The maker confirmed an accepted quote (its risk is reserved)."""
        self._record_fill_kind(
            Kind.CONFIRM_SENT, quote_id, rfq_id, market, side, price, contracts, None, detail
        )

    def record_confirm_declined(
        self,
        *,
        quote_id: str,
        rfq_id: str,
        market: str,
        side: Side | None,
        price: Decimal | None,
        contracts: Decimal | None,
        reason: str,
        detail: Detail = None,
    ) -> None:
        """The maker did not confirm; ``reason`` is e.g. the risk rule that said no."""
        self._record_fill_kind(
            Kind.CONFIRM_DECLINED, quote_id, rfq_id, market, side, price, contracts, reason, detail
        )

    def record_confirm_failed(
        self,
        *,
        quote_id: str,
        rfq_id: str,
        market: str,
        code: str | None,
        message: str,
        status: int | None = None,
        side: Side | None = None,
        price: Decimal | None = None,
        contracts: Decimal | None = None,
        detail: Detail = None,
    ) -> None:
        """The exchange refused a confirm; ``reason`` holds its error code."""
        self._record(
            Kind.CONFIRM_FAILED,
            rfq_id=rfq_id,
            quote_id=quote_id,
            market=market,
            side=side,
            price=_dec(price),
            contracts=_dec(contracts),
            reason=code or None,
            detail=_detail(detail, {"message": message, "status": status}),
        )

    def record_execution(
        self,
        *,
        quote_id: str,
        rfq_id: str,
        market: str,
        side: Side,
        price: Decimal,
        contracts: Decimal,
        order_id: str | None,
        detail: Detail = None,
        fee: Decimal | None = None,
    ) -> None:
        """A fill: the maker bought ``contracts`` of ``side`` at ``price``, paying ``fee``.

        The fee (dollars) is the row's ``amount``; None for a fill recorded without one.
        """
        self._record(
            Kind.EXECUTION,
            rfq_id=rfq_id,
            quote_id=quote_id,
            market=market,
            side=side,
            price=_dec(price),
            contracts=_dec(contracts),
            amount=_dec(fee),
            detail=_detail(detail, {"order_id": order_id or None}),
        )

    def record_position_changed(
        self,
        *,
        market: str,
        contracts: Decimal,
        realized_pnl_change: Decimal,
        quote_id: str | None = None,
        reason: str | None = None,
        detail: Detail = None,
        fee: Decimal | None = None,
    ) -> None:
        """``market``'s net position is now ``contracts``; realised P&L moved by ``amount``.

        ``realized_pnl_change`` is net of ``fee``, the fee of the fill that moved it. The fee
        is kept in the row's detail: the rows the daemon rebuilds today's P&L from are the
        ones archiving keeps, so today's fees are rebuilt from the same rows.
        """
        self._record(
            Kind.POSITION_CHANGED,
            quote_id=quote_id,
            market=market,
            contracts=_dec(contracts),
            amount=_dec(realized_pnl_change),
            reason=reason,
            detail=_detail(detail, {"fee": _dec(fee)}),
        )

    def record_reconciled(
        self, *, trigger: str, counts: Mapping[str, int], detail: Detail = None
    ) -> None:
        """A reconciliation with the exchange finished; ``reason`` is what triggered it."""
        self._record(
            Kind.RECONCILED, reason=trigger, detail=_detail(detail, {"counts": dict(counts)})
        )

    def _record_fill_kind(
        self,
        kind: Kind,
        quote_id: str,
        rfq_id: str,
        market: str,
        side: Side | None,
        price: Decimal | None,
        contracts: Decimal | None,
        reason: str | None,
        detail: Detail,
    ) -> None:
        self._record(
            kind,
            rfq_id=rfq_id,
            quote_id=quote_id,
            market=market,
            side=side,
            price=_dec(price),
            contracts=_dec(contracts),
            reason=reason,
            detail=_detail(detail),
        )

    def _record(
        self,
        kind: Kind,
        *,
        rfq_id: str | None = None,
        quote_id: str | None = None,
        market: str | None = None,
        side: str | None = None,
        price: str | None = None,
        contracts: str | None = None,
        amount: str | None = None,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        row = self._row(
            kind,
            rfq_id=_text(rfq_id),
            quote_id=_text(quote_id),
            market=_text(market),
            side=_text(side),
            price=price,
            contracts=contracts,
            amount=amount,
            reason=_text(reason),
            detail=detail,
        )
        for listener in self._listeners:
            try:
                listener(row.kind, row.reason)
            except Exception:
                # A listener's bug must not cost the journal its row.
                _log.exception("journal_listener_failed", kind=row.kind)
        for row_listener in self._row_listeners:
            try:
                row_listener(row)
            except Exception:
                _log.exception("journal_listener_failed", kind=row.kind)
        if not self._writer.put(row):
            self._writer.report_lost([row], why="journal closed")

    def _row(
        self,
        kind: Kind,
        *,
        rfq_id: str | None = None,
        quote_id: str | None = None,
        market: str | None = None,
        side: str | None = None,
        price: str | None = None,
        contracts: str | None = None,
        amount: str | None = None,
        reason: str | None = None,
        detail: str | None = None,
    ) -> Row:
        return Row(
            format_ts(self._clock()),
            self._run_id,
            kind.value,
            rfq_id,
            quote_id,
            market,
            side,
            price,
            contracts,
            amount,
            reason,
            detail,
        )

    # ------------------------------------------------------------------ writer thread

    def _new_run_id(self) -> str:
        return f"{self._clock().astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"

    # ------------------------------------------------------------------ reading
    # Each read opens its own read-only connection and blocks; see mmbot.journal.readers.

    def summary(self, run_id: str | None = None) -> Summary:
        """Counts and totals for one run, or over all runs when ``run_id`` is None."""
        return self._reader.summary(run_id)

    def executions(self, since: datetime | None = None) -> list[ExecutionRow]:
        """Every execution (at or after ``since``, if given), oldest first."""
        return self._reader.executions(since)

    def last_positions(self) -> dict[str, Decimal]:
        """The latest recorded net position of every market, over all runs."""
        return self._reader.last_positions()

    def quotes_created(self, quote_ids: Iterable[str]) -> dict[str, CreatedQuote]:
        """How each given quote went live (any run); ids with no such record are absent.

        The record is the quote's ``quote_created`` or ``quote_replaced`` row (the latest, if
        the file somehow has more than one).
        """
        return self._reader.quotes_created(quote_ids)

    def realized_pnl_since(self, since: datetime) -> Decimal:
        """The exact sum of realised P&L recorded at or after ``since``, net of fees."""
        return self._reader.realized_pnl_since(since)

    def fees_since(self, since: datetime) -> Decimal:
        """The exact sum of the fees recorded at or after ``since``, over all runs."""
        return self._reader.fees_since(since)

    def format_summary(self, summary: Summary) -> str:
        """Same as the module-level ``format_summary``."""
        return format_summary(summary)

    def runs(self) -> list[RunRow]:
        """Every run in the file, oldest first, with its start, clean stop (if any) and size."""
        return self._reader.runs()
