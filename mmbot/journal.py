"""The journal: a durable, append-only record of every decision and fill, in SQLite (WAL).

One row per event in the ``events`` table. The daemon calls the ``record_*`` methods from
the event loop; they never touch the disk: each builds an immutable row (redacting free-form
text and ``detail``), puts it on an unbounded queue and returns. One writer thread owns the
write connection and commits the queue in batches. Nothing queued is ever dropped: a failing
disk makes the journal unhealthy (``healthy``, ``last_error``, an ERROR log line) and the
writer keeps retrying; rows that still cannot be written when the journal is closed are
logged one by one as ``journal_record_lost`` so they survive in the logs.

Money, prices and sizes are ``Decimal`` in and ``Decimal`` out, stored as the exact
fixed-point string in TEXT columns; SQL never does arithmetic on them (SQLite would use
floating point), the read methods sum them in Python.

Every row carries the ``run_id`` of the Journal object that recorded it; ``start()`` records
``run_started`` as the run's first row and ``close()`` records ``run_stopped`` unless
``record_run_stopped`` already did, so a run without ``run_stopped`` is one that crashed.
A replacement is one ``quote_replaced`` row for the new quote (never also ``quote_created``),
naming the quote it replaced in ``detail``; the old one gets no ``quote_deleted`` row, since
the exchange withdraws it when the new quote arrives. A requote that withdraws the quote
instead (the strategy or the risk check says no) is a ``quote_deleted`` row whose reason
starts with ``requote_``.

One daemon per journal: ``start()`` takes an exclusive ``flock`` on ``<journal>.lock``
beside the (symlink-resolved) file, writes its pid there and holds it until ``close()``; a
second Journal on the same file, in this process or another, gets ``JournalLocked`` (naming
the pid) instead of interleaving its run with the first one's. The lock file is left in
place, since unlinking it would let a third daemon lock a fresh inode while the second still
holds the old one; the kernel drops the lock when its process dies, so a crash never leaves
the journal locked. ``start()`` also refuses, as one-line ``JournalError``s naming the path
and the reason, a path that is a directory, in a directory this user cannot write, or a
file that is not an SQLite database.

The file vanishing mid-run: SQLite keeps writing into a deleted (or replaced) file's inode,
so every later row would be lost unseen. The writer therefore compares the path's device and
inode with the file it opened after each batch it commits, before each write, and about
once a second while idle. Once they differ the journal is unhealthy for good (one ERROR
line, ``last_error`` says so): it empties its WAL, whose stale pages SQLite would otherwise
replay into whatever database is put at the path next, writes nothing more and does not
recreate the file; rows keep queueing in memory and are logged as ``journal_record_lost``
at close.

Reading (``summary``, ``executions``, ``last_positions``, ``runs``, and for the daemon's
start-up ``quotes_created`` and ``realized_pnl_since``) uses a fresh read-only connection
per call, works while the writer runs and without ``start()``, raises ``JournalError`` for
a file it cannot read, and blocks: call it at start-up or exit, or through
``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import json
import os
import queue
import secrets
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation, localcontext
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import orjson

from mmbot import __version__
from mmbot.logs import get_logger, redact_event, redact_text

__all__ = [
    "SCHEMA_VERSION",
    "CreatedQuote",
    "DeleteReason",
    "Detail",
    "ExecutionRow",
    "Journal",
    "JournalError",
    "JournalLocked",
    "Kind",
    "Listener",
    "RunRow",
    "Side",
    "SkipReason",
    "Summary",
    "Synchronous",
    "format_summary",
]

SCHEMA_VERSION: Final = 1

Side = Literal["yes", "no"]
Synchronous = Literal["NORMAL", "FULL"]
# Free-form context for a row: a mapping (stored as JSON) or a plain note (stored as
# {"note": ...}); redacted either way.
Detail = Mapping[str, Any] | str | None

_log = get_logger("mmbot.journal")


#: Told of each row recorded: its kind and its reason (None for kinds without one).
Listener = Callable[[str, str | None], None]


class JournalError(Exception):
    """The journal file cannot be opened, created or read."""


class JournalLocked(JournalError):
    """Another Journal (in this or another process) holds the journal's lock."""


@dataclass(frozen=True)
class CreatedQuote:
    """A quote as recorded when it went live (``quote_created`` or ``quote_replaced``)."""

    quote_id: str
    rfq_id: str
    market: str
    yes_bid: Decimal
    no_bid: Decimal
    contracts: Decimal | None
    reference: Decimal | None
    strategy: str | None
    run_id: str


class Kind(StrEnum):
    """The ``kind`` of a journal event."""

    RUN_STARTED = "run_started"
    RUN_STOPPED = "run_stopped"
    RFQ_SEEN = "rfq_seen"
    RFQ_SKIPPED = "rfq_skipped"
    QUOTE_CREATED = "quote_created"
    QUOTE_REPLACED = "quote_replaced"
    QUOTE_DELETED = "quote_deleted"
    QUOTE_FAILED = "quote_failed"
    ACCEPT_RECEIVED = "accept_received"
    CONFIRM_SENT = "confirm_sent"
    CONFIRM_DECLINED = "confirm_declined"
    CONFIRM_FAILED = "confirm_failed"
    EXECUTION = "execution"
    POSITION_CHANGED = "position_changed"
    RECONCILED = "reconciled"


class SkipReason(StrEnum):
    """Usual reasons for ``rfq_skipped`` (any string is accepted)."""

    UNROUTED_MARKET = "unrouted_market"
    STALE_DATA = "stale_data"
    NO_MARKET_DATA = "no_market_data"
    RISK = "risk"
    KILL_SWITCH = "kill_switch"
    STRATEGY_DECLINED = "strategy_declined"
    STRATEGY_ERROR = "strategy_error"


class DeleteReason(StrEnum):
    """Usual reasons for ``quote_deleted`` (any string is accepted)."""

    TTL = "ttl"
    RFQ_DELETED = "rfq_deleted"
    REQUOTE_FAILED = "requote_failed"
    SHUTDOWN = "shutdown"
    SHUTDOWN_UNTRACKED = "shutdown_untracked"
    RECONCILE_UNTRACKED = "reconcile_untracked"
    KILL_SWITCH = "kill_switch"
    DECLINED_ACCEPT = "declined_accept"


# Each version's statements run once, in one transaction, and are recorded in
# schema_version; a later mmbot appends version 2 here instead of editing version 1.
# The triggers make the append-only rule hold for every client of the file, not just us.
_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            ts TEXT NOT NULL,
            run_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            rfq_id TEXT,
            quote_id TEXT,
            market TEXT,
            side TEXT,
            price TEXT,
            contracts TEXT,
            amount TEXT,
            reason TEXT,
            detail TEXT
        )""",
        "CREATE INDEX events_kind ON events (kind)",
        "CREATE INDEX events_quote_id ON events (quote_id)",
        "CREATE INDEX events_ts ON events (ts)",
        """CREATE TRIGGER events_append_only_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END""",
        """CREATE TRIGGER events_append_only_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END""",
    ),
}

_INSERT: Final = (
    "INSERT INTO events (ts, run_id, kind, rfq_id, quote_id, market, side, price, contracts,"
    " amount, reason, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class _Row(NamedTuple):
    ts: str
    run_id: str
    kind: str
    rfq_id: str | None
    quote_id: str | None
    market: str | None
    side: str | None
    price: str | None
    contracts: str | None
    amount: str | None
    reason: str | None
    detail: str | None


# Queue control items; anything else on the queue is a _Row.
_FLUSH: Final = object()
_STOP: Final = object()

# How often an idle writer checks that the journal path still names its file.
_FILE_CHECK_INTERVAL: Final = 1.0
_SQLITE_HEADER: Final = b"SQLite format 3\x00"
# Ids per look-up statement: well under SQLite's limit on bound parameters (999 in builds
# before 3.32).
_LOOKUP_CHUNK: Final = 500


@dataclass(frozen=True)
class Summary:
    """Counts and totals over one run (``run_id``) or over every run (``run_id`` None)."""

    run_id: str | None
    runs: int
    first_ts: datetime | None
    last_ts: datetime | None
    rfqs_seen: int
    rfqs_skipped: int
    rfqs_skipped_by_reason: Mapping[str, int]
    quotes_created: int
    quotes_replaced: int
    quotes_failed: int
    quotes_deleted: int
    quotes_deleted_by_reason: Mapping[str, int]
    accepts: int
    confirms: int
    declines: int
    declines_by_reason: Mapping[str, int]
    confirm_failures: int
    executions: int
    contracts_traded: Decimal
    premium_paid: Decimal
    realized_pnl: Decimal


@dataclass(frozen=True)
class ExecutionRow:
    """One ``execution`` event, with its Decimals exactly as recorded."""

    seq: int
    ts: datetime
    run_id: str
    quote_id: str | None
    rfq_id: str | None
    market: str | None
    side: str | None
    price: Decimal
    contracts: Decimal
    order_id: str | None


@dataclass(frozen=True)
class RunRow:
    """One daemon run; ``stopped_at`` None means it never recorded a clean stop (a crash)."""

    run_id: str
    started_at: datetime
    stopped_at: datetime | None
    stop_reason: str | None
    events: int
    #: When the run recorded its last row (for a crashed run: as far as its record goes).
    last_at: datetime


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _format_ts(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"journal timestamps must be timezone-aware, got {moment!r}")
    # Fixed width (always microseconds, always Z) so text order is time order and
    # ``ts >= ?`` comparisons in SQL are correct.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


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


def _dec_out(text: str | None) -> Decimal:
    return Decimal(text) if text is not None else Decimal(0)


def _dec_or_none(value: object) -> Decimal | None:
    # Lenient: a value from ``detail`` may have come from a caller's own detail mapping.
    if not isinstance(value, str):
        return None
    try:
        parsed = Decimal(value)
    except InvalidOperation:
        return None
    return parsed if parsed.is_finite() else None


def _exact_sum(values: Iterable[Decimal]) -> Decimal:
    # Sums of exact values must stay exact: a wide context keeps Decimal from rounding.
    with localcontext() as ctx:
        ctx.prec = 100
        return sum(values, Decimal(0))


def _why(exc: OSError) -> str:
    # "Permission denied" reads better in a one-line error than "[Errno 13] ...: '/x'".
    return exc.strerror or str(exc)


def _lock_path(path: Path) -> Path:
    # Beside the real file, so two spellings of one journal (a symlink, a relative path)
    # still meet at one lock.
    real = path.resolve()
    return real.with_name(real.name + ".lock")


def _lock_holder(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _release_lock(fd: int) -> None:
    try:
        # Blanked while still held, so the file never names a pid that no longer holds it.
        os.ftruncate(fd, 0)
        # Explicit, not just close(): a forked child sharing the descriptor would keep it.
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        pass
    finally:
        os.close(fd)


# Journals still open at interpreter exit are closed by one atexit hook, so a daemon that
# forgot close() (or died of an exception) still drains its queue.
_open_journals: weakref.WeakSet[Journal] = weakref.WeakSet()


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
        self._batch_interval = batch_interval
        self._batch_rows = batch_rows
        self._busy_timeout = busy_timeout
        self._retry_attempts = retry_attempts
        self._retry_backoff = retry_backoff
        self._max_outage_backoff = max_outage_backoff

        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        # Guards the counters, the state flags and the flush waiters; record_* holds it only
        # for a counter increment and a queue put.
        self._lock = threading.Lock()
        self._enqueued = 0
        self._written = 0
        self._lost = 0
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._started = False
        self._closing = False
        self._write_ok = True
        self._last_error: str | None = None
        self._stop_event = threading.Event()
        # Ends the writer's batching window early, for a flush or a stop.
        self._wake = threading.Event()
        self._stop_deadline = float("inf")
        self._close_result = False
        self._stop_recorded = False
        self._listeners: list[Listener] = []

        # The open lock file's descriptor while started; closing it releases the lock.
        self._lock_fd: int | None = None
        # (st_dev, st_ino) of the file the write connection opened.
        self._identity: tuple[int, int] | None = None
        # Why the journal file no longer is at its path; once set, it never clears.
        self._file_gone: str | None = None

        # Owned by the writer thread once it runs.
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        self._pending: list[_Row] = []
        self._stopping = False

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
        thread = self._thread
        return (
            self._started
            and not self._closing
            and self._write_ok
            and self._file_gone is None
            and thread is not None
            and thread.is_alive()
        )

    @property
    def last_error(self) -> str | None:
        """The most recent write error (kept after recovery, for the record)."""
        return self._last_error

    @property
    def backlog(self) -> int:
        """Rows recorded but not yet committed (including any given up on at close)."""
        return self._enqueued - self._written

    @property
    def written(self) -> int:
        """Rows committed by this Journal object."""
        return self._written

    @property
    def lost(self) -> int:
        """Rows that could not be written before close and were logged instead."""
        return self._lost

    def start(self, *, detail: Detail = None) -> None:
        """Lock and open (or create) the database, migrate it, record ``run_started``, start.

        Raises ``JournalLocked`` if another Journal holds the file, and ``JournalError``
        (one line: the path and the reason) if the file cannot be used.
        """
        with self._lock:
            if self._started or self._closing:
                raise RuntimeError("a Journal can be started once, and not after close()")
        self._check_path()
        lock_fd = self._take_lock()
        conn: sqlite3.Connection | None = None
        try:
            conn = self._open_writer()
            identity = self._file_identity()
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
            _release_lock(lock_fd)
            raise
        with self._lock:
            # run_started goes ahead of anything recorded before start().
            self._pending = [started]
            self._enqueued += 1
            self._conn = conn
            self._lock_fd = lock_fd
            self._identity = identity
            self._started = True
            self._thread = threading.Thread(
                target=self._writer_main, name="mmbot-journal", daemon=True
            )
            self._thread.start()
        _open_journals.add(self)
        _log.info("journal_started", path=str(self._path), run_id=self._run_id)

    def close(self, *, reason: str = "shutdown", timeout: float = 10.0) -> bool:
        """Record ``run_stopped``, drain, commit, checkpoint and close; True if nothing was lost.

        Blocks for up to ``timeout`` seconds (plus one write attempt) while the disk is
        failing; rows still unwritten then are logged as ``journal_record_lost``.
        """
        with self._lock:
            if self._closing:
                already = True
            else:
                already = False
                self._closing = True
                self._stop_deadline = time.monotonic() + timeout
                if self._started and not self._stop_recorded:
                    self._stop_recorded = True
                    self._queue.put(self._row(Kind.RUN_STOPPED, reason=_text(reason)))
                    self._enqueued += 1
                self._queue.put(_STOP)
                self._wake.set()
        thread = self._thread
        if already:
            if thread is not None and thread is not threading.current_thread():
                thread.join()
            return self._close_result
        self._stop_event.set()
        if thread is None:
            # Never started: whatever was recorded has nowhere to go but the log.
            self._report_lost(self._drain_nowait(), why="journal closed before start")
        else:
            thread.join()
        # Only now: the writer has closed its connection, so the next daemon may open the file.
        lock_fd, self._lock_fd = self._lock_fd, None
        if lock_fd is not None:
            _release_lock(lock_fd)
        _open_journals.discard(self)
        self._close_result = self.backlog == 0
        return self._close_result

    # A timeout argument rather than asyncio.timeout(): the outcome is a bool the caller
    # logs, not an exception that would unwind a shutdown sequence.
    async def aclose(self, *, reason: str = "shutdown", timeout: float = 10.0) -> bool:  # noqa: ASYNC109
        """``close()`` without blocking the event loop."""
        return await asyncio.to_thread(self.close, reason=reason, timeout=timeout)

    async def flush(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until everything recorded so far is committed; False on timeout."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            target = self._enqueued
            if self._written >= target:
                return True
            waiter = (target, loop, future)
            self._waiters.append(waiter)
            if not self._closing:
                # Ends the writer's batching window so a flush does not wait it out.
                self._queue.put(_FLUSH)
                self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return False
        finally:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return True

    # ------------------------------------------------------------------ recording

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(kind, reason)`` for every row recorded from now on.

        It runs on the recording thread, inline: it must be quick and must not block. The
        metrics count the journal's rows this way, so the two never disagree.
        """
        self._listeners.append(listener)

    def record_run_stopped(self, *, reason: str = "shutdown", detail: Detail = None) -> None:
        """Record a clean stop with final figures; ``close()`` records one if this was not."""
        with self._lock:
            if self._stop_recorded:
                return
            self._stop_recorded = True
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
    ) -> None:
        """A fill: the maker bought ``contracts`` of ``side`` at ``price``."""
        self._record(
            Kind.EXECUTION,
            rfq_id=rfq_id,
            quote_id=quote_id,
            market=market,
            side=side,
            price=_dec(price),
            contracts=_dec(contracts),
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
    ) -> None:
        """``market``'s net position is now ``contracts``; realised P&L moved by ``amount``."""
        self._record(
            Kind.POSITION_CHANGED,
            quote_id=quote_id,
            market=market,
            contracts=_dec(contracts),
            amount=_dec(realized_pnl_change),
            reason=reason,
            detail=_detail(detail),
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
        with self._lock:
            if not self._closing:
                self._queue.put(row)
                self._enqueued += 1
                return
        self._report_lost([row], why="journal closed")

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
    ) -> _Row:
        return _Row(
            _format_ts(self._clock()),
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

    def _check_path(self) -> None:
        """Refuse, saying why, a path SQLite would only fail on with an obscure message."""
        path = self._path
        parent = path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            blocker = next((p for p in (parent, *parent.parents) if p.is_file()), None)
            why = (
                f"{blocker} is not a directory"
                if blocker is not None
                else f"cannot create directory {parent}: {_why(exc)}"
            )
            raise JournalError(f"cannot open journal {path}: {why}") from exc
        if path.is_dir():
            raise JournalError(f"cannot open journal {path}: it is a directory, not a file")
        if not os.access(parent, os.W_OK | os.X_OK):
            # SQLite creates its -wal and -shm files (and we the lock file) beside the journal.
            raise JournalError(
                f"cannot open journal {path}: directory {parent} is not writable by this user"
            )
        if not path.exists():
            return
        if not path.is_file():
            raise JournalError(f"cannot open journal {path}: it is not a regular file")
        if not os.access(path, os.R_OK | os.W_OK):
            raise JournalError(
                f"cannot open journal {path}: the file is not readable and writable by this user"
            )
        try:
            with path.open("rb") as file:
                header = file.read(len(_SQLITE_HEADER))
        except OSError as exc:
            raise JournalError(f"cannot open journal {path}: {_why(exc)}") from exc
        # An empty file is a valid, empty database to SQLite.
        if header and header != _SQLITE_HEADER:
            raise JournalError(f"cannot open journal {path}: it is not an SQLite database")

    def _take_lock(self) -> int:
        """Lock the journal for this Journal alone; the open lock file's descriptor."""
        lock_path = _lock_path(self._path)
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise JournalError(
                f"cannot open journal {self._path}: cannot open lock file {lock_path}: {_why(exc)}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _lock_holder(fd)
            os.close(fd)
            holder = "a process that has not written its pid yet" if pid is None else f"pid {pid}"
            if pid == os.getpid():
                holder += ", this very process"
            raise JournalLocked(
                f"another mmbot is running on this journal: {self._path} is locked by "
                f"{holder} (lock file {lock_path})"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise JournalError(
                f"cannot lock journal {self._path} (lock file {lock_path}): {_why(exc)}"
            ) from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            _release_lock(fd)
            raise JournalError(
                f"cannot open journal {self._path}: cannot write lock file {lock_path}: {_why(exc)}"
            ) from exc
        return fd

    def _file_identity(self) -> tuple[int, int]:
        try:
            found = os.stat(self._path)
        except OSError as exc:
            raise JournalError(f"cannot open journal {self._path}: {_why(exc)}") from exc
        return (found.st_dev, found.st_ino)

    def _open_writer(self) -> sqlite3.Connection:
        try:
            # isolation_level=None: transactions are the explicit BEGIN/COMMIT below, not
            # the sqlite3 module's implicit ones.
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open journal {self._path}: {exc}") from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise JournalError(
                    f"journal {self._path}: SQLite refused WAL mode (got {mode!r}); "
                    "put the journal on a local filesystem"
                )
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            self._migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise JournalError(f"cannot prepare journal {self._path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER NOT NULL, applied_at TEXT NOT NULL)"
            )
            current = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
            if current > SCHEMA_VERSION:
                raise JournalError(
                    f"journal {self._path} has schema version {current}, written by a newer "
                    f"mmbot; this one understands up to {SCHEMA_VERSION}"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, _format_ts(self._clock())),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _writer_main(self) -> None:
        try:
            while True:
                try:
                    self._writer_loop()
                    return
                except Exception as exc:
                    # A bug here must not end the writer: that would lose every later row.
                    _log.exception("journal_writer_error", path=str(self._path))
                    self._note_failure(exc)
                    if self._stopping and time.monotonic() >= self._stop_deadline:
                        self._report_lost(
                            self._pending + self._drain_nowait(), why="journal writer failed"
                        )
                        self._pending = []
                        return
                    self._stop_event.wait(1.0)
        finally:
            self._finish()

    def _writer_loop(self) -> None:
        outage_delay = min(1.0, self._max_outage_backoff)
        while True:
            if self._stopping:
                self._take_nowait()
            else:
                self._collect()
            if self._pending:
                if self._write_with_retries(self._pending):
                    self._pending = []
                    outage_delay = min(1.0, self._max_outage_backoff)
                    continue
                gone = self._file_gone is not None
                if self._stopping and (gone or time.monotonic() >= self._stop_deadline):
                    self._report_lost(
                        self._pending + self._drain_nowait(),
                        why="journal file deleted or replaced"
                        if gone
                        else "journal could not write",
                    )
                    self._pending = []
                    return
                # Keep the rows and try again later; new rows keep queueing meanwhile.
                self._stop_event.wait(outage_delay)
                outage_delay = min(outage_delay * 2, self._max_outage_backoff)
            elif self._stopping:
                return

    def _collect(self) -> None:
        """Fill the pending batch: up to batch_rows, or what batch_interval brings."""
        if not self._pending and not self._accept(self._next_item()):
            return
        # One wake-up per batch, not one per row: every wake of this thread takes the GIL
        # from the event loop, and waking for each row put a thread switch (up to the 5 ms
        # switch interval) in the way of every RFQ. A flush or stop ends the wait early.
        if self._queue.qsize() < self._batch_rows:
            self._wake.wait(self._batch_interval)
            self._wake.clear()
        while len(self._pending) < self._batch_rows:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if not self._accept(item):
                return

    def _next_item(self) -> object:
        """Wait for the next queue item, checking the journal file now and then meanwhile."""
        while True:
            try:
                return self._queue.get(timeout=_FILE_CHECK_INTERVAL)
            except queue.Empty:
                # Idle: without this, a file deleted while nothing is recorded would go
                # unnoticed until the next row.
                self._check_file()

    def _accept(self, item: object) -> bool:
        """Add a row to the batch; False for a control item that ends the batching window."""
        if isinstance(item, _Row):
            self._pending.append(item)
            return True
        if item is _STOP:
            self._stopping = True
        return False

    def _take_nowait(self) -> None:
        while len(self._pending) < self._batch_rows:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            self._accept(item)

    def _drain_nowait(self) -> list[_Row]:
        rows: list[_Row] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return rows
            if isinstance(item, _Row):
                rows.append(item)

    def _write_with_retries(self, rows: list[_Row]) -> bool:
        conn = self._conn
        assert conn is not None
        if not self._check_file():
            # Written now, the rows would land in a file nobody can find: keep them.
            return False
        error: BaseException | None = None
        for attempt in range(self._retry_attempts):
            if attempt:
                if self._stopping and time.monotonic() >= self._stop_deadline:
                    break
                time.sleep(self._retry_backoff * 2 ** (attempt - 1))
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(_INSERT, rows)
                conn.execute("COMMIT")
            except Exception as exc:
                error = exc
                self._rollback(conn)
                continue
            self._note_written(len(rows))
            self._check_file()
            return True
        assert error is not None
        self._note_failure(error)
        _log.error(
            "journal_write_failed",
            path=str(self._path),
            error=self._last_error,
            rows=len(rows),
            backlog=self.backlog,
            attempts=self._retry_attempts,
        )
        return False

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            # SQLite may already have rolled back (e.g. after SQLITE_FULL); nothing to undo.
            pass

    def _note_written(self, count: int) -> None:
        recovered = False
        with self._lock:
            self._written += count
            if not self._write_ok:
                self._write_ok = True
                recovered = True
            done = [w for w in self._waiters if w[0] <= self._written]
            for waiter in done:
                self._waiters.remove(waiter)
        for _, loop, future in done:
            # RuntimeError: that event loop is closed, so nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future)
        if recovered:
            _log.warning("journal_write_recovered", path=str(self._path), backlog=self.backlog)

    def _note_failure(self, error: BaseException) -> None:
        self._write_ok = False
        self._last_error = f"{type(error).__name__}: {redact_text(str(error))}"

    def _check_file(self) -> bool:
        """True while the journal path still names the file the writer has open."""
        if self._file_gone is not None:
            return False
        try:
            found = os.stat(self._path)
        except (FileNotFoundError, NotADirectoryError):
            now = "nothing is at that path now"
        except OSError:
            # Cannot tell (e.g. a directory made unsearchable); a real loss of the file
            # shows up at the next check that can.
            return True
        else:
            if (found.st_dev, found.st_ino) == self._identity:
                return True
            now = "another file is at that path now"
        message = (
            f"journal file {self._path} was deleted or replaced while in use ({now}); "
            "no more rows are written to it, they are logged at close instead"
        )
        # Before the journal reads unhealthy, so whoever reacts to that finds the WAL empty.
        self._empty_wal()
        with self._lock:
            self._file_gone = message
            self._last_error = message
        _log.error("journal_file_lost", path=str(self._path), error=message, backlog=self.backlog)
        return False

    def _empty_wal(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            # SQLite would replay the WAL's pages (they stay beside the path) into whatever
            # database is put there next, a restored copy or a new journal, corrupting it.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            _log.warning("journal_checkpoint_failed", path=str(self._path), error=str(exc))

    def _report_lost(self, rows: list[_Row], *, why: str) -> None:
        if not rows:
            return
        with self._lock:
            self._lost += len(rows)
        # The log is the last durable place these rows can go; one line each, every column.
        _log.error("journal_records_lost", path=str(self._path), rows=len(rows), why=why)
        for row in rows:
            _log.error("journal_record_lost", why=why, **row._asdict())

    def _finish(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            # Folds the WAL into the main file so the next start (or a copy of the file)
            # does not depend on the -wal sidecar.
            self._empty_wal()
        finally:
            conn.close()
            self._conn = None

    # ------------------------------------------------------------------ reading

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        if not self._path.exists():
            raise JournalError(f"no journal at {self._path}")
        uri = self._path.resolve().as_uri() + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self._busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read journal {self._path}: {exc}") from exc
        try:
            # One read transaction: every query of a call sees the same snapshot.
            conn.execute("BEGIN")
            try:
                version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            except sqlite3.Error as exc:
                raise JournalError(f"{self._path} is not an mmbot journal: {exc}") from exc
            if version is None or version > SCHEMA_VERSION:
                raise JournalError(
                    f"journal {self._path} has schema version {version}; "
                    f"this mmbot reads versions 1 to {SCHEMA_VERSION}"
                )
            yield conn
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read journal {self._path}: {exc}") from exc
        finally:
            conn.close()

    def summary(self, run_id: str | None = None) -> Summary:
        """Counts and totals for one run, or over all runs when ``run_id`` is None."""
        where, params = ("WHERE run_id = ?", (run_id,)) if run_id is not None else ("", ())
        also = "AND run_id = ?" if run_id is not None else ""
        with self._reader() as conn:
            counts: dict[tuple[str, str | None], int] = {
                (kind, reason): count
                for kind, reason, count in conn.execute(
                    f"SELECT kind, reason, COUNT(*) FROM events {where} GROUP BY kind, reason",  # noqa: S608
                    params,
                )
            }
            runs, first, last = conn.execute(
                f"SELECT COUNT(DISTINCT run_id), MIN(ts), MAX(ts) FROM events {where}",  # noqa: S608
                params,
            ).fetchone()
            fills = conn.execute(
                f"SELECT price, contracts FROM events WHERE kind = ? {also}",  # noqa: S608
                (Kind.EXECUTION.value, *params),
            ).fetchall()
            pnl = conn.execute(
                f"SELECT amount FROM events WHERE kind = ? {also}",  # noqa: S608
                (Kind.POSITION_CHANGED.value, *params),
            ).fetchall()

        def total(kind: Kind) -> int:
            return sum(n for (k, _), n in counts.items() if k == kind.value)

        def by_reason(kind: Kind) -> dict[str, int]:
            found: dict[str, int] = {}
            for (k, reason), n in counts.items():
                if k == kind.value:
                    key = reason if reason is not None else "(none)"
                    found[key] = found.get(key, 0) + n
            # Most frequent first, so the table reads as "what mostly happened".
            return dict(sorted(found.items(), key=lambda item: (-item[1], item[0])))

        # Sums of exact values must stay exact: a wide context keeps Decimal from rounding.
        with localcontext() as ctx:
            ctx.prec = 100
            contracts_traded = sum((_dec_out(c) for _, c in fills), Decimal(0))
            premium = sum((_dec_out(p) * _dec_out(c) for p, c in fills), Decimal(0))
            realized = sum((_dec_out(a) for (a,) in pnl), Decimal(0))
        return Summary(
            run_id=run_id,
            runs=runs,
            first_ts=_parse_ts(first) if first is not None else None,
            last_ts=_parse_ts(last) if last is not None else None,
            rfqs_seen=total(Kind.RFQ_SEEN),
            rfqs_skipped=total(Kind.RFQ_SKIPPED),
            rfqs_skipped_by_reason=by_reason(Kind.RFQ_SKIPPED),
            quotes_created=total(Kind.QUOTE_CREATED),
            quotes_replaced=total(Kind.QUOTE_REPLACED),
            quotes_failed=total(Kind.QUOTE_FAILED),
            quotes_deleted=total(Kind.QUOTE_DELETED),
            quotes_deleted_by_reason=by_reason(Kind.QUOTE_DELETED),
            accepts=total(Kind.ACCEPT_RECEIVED),
            confirms=total(Kind.CONFIRM_SENT),
            declines=total(Kind.CONFIRM_DECLINED),
            declines_by_reason=by_reason(Kind.CONFIRM_DECLINED),
            confirm_failures=total(Kind.CONFIRM_FAILED),
            executions=total(Kind.EXECUTION),
            contracts_traded=contracts_traded,
            premium_paid=premium,
            realized_pnl=realized,
        )

    def executions(self, since: datetime | None = None) -> list[ExecutionRow]:
        """Every execution (at or after ``since``, if given), oldest first."""
        sql = (
            "SELECT seq, ts, run_id, quote_id, rfq_id, market, side, price, contracts, detail"
            " FROM events WHERE kind = ?"
        )
        params: tuple[str, ...] = (Kind.EXECUTION.value,)
        if since is not None:
            sql += " AND ts >= ?"
            params += (_format_ts(since),)
        with self._reader() as conn:
            rows = conn.execute(sql + " ORDER BY seq", params).fetchall()
        result = []
        for seq, ts, run, quote, rfq, market, side, price, contracts, detail in rows:
            extra = json.loads(detail) if detail else {}
            order_id = extra.get("order_id") if isinstance(extra, dict) else None
            result.append(
                ExecutionRow(
                    seq=seq,
                    ts=_parse_ts(ts),
                    run_id=run,
                    quote_id=quote,
                    rfq_id=rfq,
                    market=market,
                    side=side,
                    price=_dec_out(price),
                    contracts=_dec_out(contracts),
                    order_id=str(order_id) if order_id is not None else None,
                )
            )
        return result

    def last_positions(self) -> dict[str, Decimal]:
        """The latest recorded net position of every market, over all runs."""
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT market, contracts FROM events WHERE seq IN ("
                " SELECT MAX(seq) FROM events WHERE kind = ? GROUP BY market)"
                " ORDER BY market",
                (Kind.POSITION_CHANGED.value,),
            ).fetchall()
        return {market: _dec_out(contracts) for market, contracts in rows if market is not None}

    def quotes_created(self, quote_ids: Iterable[str]) -> dict[str, CreatedQuote]:
        """How each given quote went live (any run); ids with no such record are absent.

        The record is the quote's ``quote_created`` or ``quote_replaced`` row (the latest, if
        the file somehow has more than one).
        """
        wanted = list(dict.fromkeys(quote_ids))
        rows: list[tuple[Any, ...]] = []
        with self._reader() as conn:
            for first in range(0, len(wanted), _LOOKUP_CHUNK):
                chunk = wanted[first : first + _LOOKUP_CHUNK]
                marks = ", ".join("?" * len(chunk))
                # "+kind": left to itself, SQLite picks the kind index and walks every quote
                # ever made instead of looking the ids up.
                where = f"quote_id IN ({marks}) AND +kind IN (?, ?)"
                rows += conn.execute(
                    "SELECT quote_id, rfq_id, market, price, contracts, detail, run_id"  # noqa: S608
                    f" FROM events WHERE {where} ORDER BY seq",
                    (*chunk, Kind.QUOTE_CREATED.value, Kind.QUOTE_REPLACED.value),
                ).fetchall()
        found: dict[str, CreatedQuote] = {}
        for quote_id, rfq_id, market, price, contracts, detail, run_id in rows:
            extra = json.loads(detail) if detail else {}
            if not isinstance(extra, dict):
                extra = {}
            yes_bid = _dec_or_none(price)
            no_bid = _dec_or_none(extra.get("no_bid"))
            strategy = extra.get("strategy")
            if yes_bid is None or no_bid is None or rfq_id is None or market is None:
                continue  # not a row record_quote_* wrote
            found[quote_id] = CreatedQuote(
                quote_id=quote_id,
                rfq_id=rfq_id,
                market=market,
                yes_bid=yes_bid,
                no_bid=no_bid,
                contracts=_dec_or_none(contracts),
                reference=_dec_or_none(extra.get("reference")),
                strategy=strategy if isinstance(strategy, str) else None,
                run_id=run_id,
            )
        return found

    def realized_pnl_since(self, since: datetime) -> Decimal:
        """The exact sum of realised P&L recorded at or after ``since``, over all runs."""
        bound = _format_ts(since)
        with self._reader() as conn:
            rows = conn.execute(
                # "+kind": the ts index narrows to the period, the kind index would not.
                "SELECT amount FROM events WHERE +kind = ? AND ts >= ?",
                (Kind.POSITION_CHANGED.value, bound),
            ).fetchall()
        return _exact_sum(_dec_out(amount) for (amount,) in rows)

    def format_summary(self, summary: Summary) -> str:
        """Same as the module-level ``format_summary``."""
        return format_summary(summary)

    def runs(self) -> list[RunRow]:
        """Every run in the file, oldest first, with its start, clean stop (if any) and size."""
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT run_id, MIN(seq), MIN(ts), COUNT(*), MAX(ts) FROM events GROUP BY run_id"
                " ORDER BY MIN(seq)"
            ).fetchall()
            stops = {
                run: (ts, reason)
                for run, ts, reason in conn.execute(
                    "SELECT run_id, ts, reason FROM events WHERE kind = ? ORDER BY seq",
                    (Kind.RUN_STOPPED.value,),
                )
            }
            starts = dict(
                conn.execute(
                    "SELECT run_id, MIN(ts) FROM events WHERE kind = ? GROUP BY run_id",
                    (Kind.RUN_STARTED.value,),
                ).fetchall()
            )
        result = []
        for run, _seq, first_ts, count, last_ts in rows:
            stopped_ts, stop_reason = stops.get(run, (None, None))
            result.append(
                RunRow(
                    run_id=run,
                    started_at=_parse_ts(starts.get(run, first_ts)),
                    stopped_at=_parse_ts(stopped_ts) if stopped_ts is not None else None,
                    stop_reason=stop_reason,
                    events=count,
                    last_at=_parse_ts(last_ts),
                )
            )
        return result


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass
class _Table:
    lines: list[tuple[str, str]] = field(default_factory=list)

    def add(self, label: str, value: object) -> None:
        self.lines.append((label, str(value)))

    def add_reasons(self, reasons: Mapping[str, int]) -> None:
        for reason, count in reasons.items():
            self.add(f"  {reason}", count)

    def render(self) -> list[str]:
        label_width = max(len(label) for label, _ in self.lines)
        value_width = max(len(value) for _, value in self.lines)
        return [f"{label:<{label_width}}  {value:>{value_width}}" for label, value in self.lines]


def _money(value: Decimal) -> str:
    # Products like price x contracts carry many trailing zeros (0.3500 x 10.00 = 3.500000);
    # show at least cents, and every significant digit beyond.
    with localcontext() as ctx:
        ctx.prec = 100
        shown = value.normalize()
        exponent = shown.as_tuple().exponent
        if isinstance(exponent, int) and exponent > -2:
            shown = shown.quantize(Decimal("0.01"))
        return format(shown, "f")


def format_summary(summary: Summary) -> str:
    """Render ``summary`` as an aligned plain-text table, for printing at exit."""
    if summary.run_id is not None:
        title = f"mmbot journal: run {summary.run_id}"
    else:
        title = f"mmbot journal: all runs ({summary.runs})"
    if summary.first_ts is not None and summary.last_ts is not None:
        title += f"\n{_format_ts(summary.first_ts)} to {_format_ts(summary.last_ts)}"
    table = _Table()
    table.add("RFQs seen", summary.rfqs_seen)
    table.add("RFQs skipped", summary.rfqs_skipped)
    table.add_reasons(summary.rfqs_skipped_by_reason)
    table.add("Quotes created", summary.quotes_created)
    table.add("Quotes replaced", summary.quotes_replaced)
    table.add("Quotes failed", summary.quotes_failed)
    table.add("Quotes deleted", summary.quotes_deleted)
    table.add_reasons(summary.quotes_deleted_by_reason)
    table.add("Accepts", summary.accepts)
    table.add("Confirms", summary.confirms)
    table.add("Declines", summary.declines)
    table.add_reasons(summary.declines_by_reason)
    table.add("Confirm failures", summary.confirm_failures)
    table.add("Executions", summary.executions)
    table.add("Contracts traded", _money(summary.contracts_traded))
    table.add("Premium paid", _money(summary.premium_paid))
    table.add("Realized P&L", _money(summary.realized_pnl))
    return "\n".join([title, *table.render()]) + "\n"
