"""The journal's write side: the queue of rows, the writer thread that commits it, its health.

The ``record_*`` methods never touch the disk: each puts an immutable row on an unbounded
queue and returns. One writer thread owns the write connection and commits the queue in
batches. Nothing queued is ever dropped: a failing disk makes the journal unhealthy
(``healthy``, ``last_error``, an ERROR log line) and the writer keeps retrying; rows that
still cannot be written when the journal is closed are logged one by one as
``journal_record_lost`` so they survive in the logs.

The file vanishing mid-run: SQLite keeps writing into a deleted (or replaced) file's inode,
so every later row would be lost unseen. The writer therefore compares the path's device and
inode with the file it opened after each batch it commits, before each write, and about
once a second while idle. Once they differ the journal is unhealthy for good (one ERROR
line, ``last_error`` says so): it empties its WAL, whose stale pages SQLite would otherwise
replay into whatever database is put at the path next, writes nothing more and does not
recreate the file; rows keep queueing in memory and are logged as ``journal_record_lost``
at close.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from mmbot.journal.files import release_lock
from mmbot.journal.schema import INSERT, Row
from mmbot.logs import get_logger, redact_text

__all__ = ["Writer"]

_log = get_logger("mmbot.journal")

# Queue control items; anything else on the queue is a Row.
_FLUSH: Final = object()
_STOP: Final = object()

# How often an idle writer checks that the journal path still names its file.
_FILE_CHECK_INTERVAL: Final = 1.0


class Writer:
    """A Journal's queue of rows and the one thread that commits them to its file."""

    def __init__(
        self,
        path: Path,
        *,
        batch_interval: float,
        batch_rows: int,
        retry_attempts: int,
        retry_backoff: float,
        max_outage_backoff: float,
    ) -> None:
        """Prepare the queue; the thread starts with ``start()``."""
        self._path = path
        self._batch_interval = batch_interval
        self._batch_rows = batch_rows
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

        # The open lock file's descriptor while started; closing it releases the lock.
        self._lock_fd: int | None = None
        # (st_dev, st_ino) of the file the write connection opened.
        self._identity: tuple[int, int] | None = None
        # Why the journal file no longer is at its path; once set, it never clears.
        self._file_gone: str | None = None

        # Owned by the writer thread once it runs.
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        self._pending: list[Row] = []
        self._stopping = False

    # ------------------------------------------------------------------ health

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
        """Rows committed by this Writer."""
        return self._written

    @property
    def lost(self) -> int:
        """Rows that could not be written before close and were logged instead."""
        return self._lost

    # ------------------------------------------------------------------ lifecycle

    def can_start(self) -> bool:
        """False once started or closed: a Journal starts once, and not after close()."""
        with self._lock:
            return not (self._started or self._closing)

    def start(
        self, conn: sqlite3.Connection, *, identity: tuple[int, int], lock_fd: int, first_row: Row
    ) -> None:
        """Start the thread on ``conn``, holding the lock ``lock_fd``; ``first_row`` goes first."""
        with self._lock:
            # run_started goes ahead of anything recorded before start().
            self._pending = [first_row]
            self._enqueued += 1
            self._conn = conn
            self._lock_fd = lock_fd
            self._identity = identity
            self._started = True
            self._thread = threading.Thread(
                target=self._writer_main, name="mmbot-journal", daemon=True
            )
            self._thread.start()

    def put(self, row: Row) -> bool:
        """Queue ``row``; False (the row not taken) once closing."""
        with self._lock:
            if not self._closing:
                self._queue.put(row)
                self._enqueued += 1
                return True
        return False

    def claim_stop_row(self) -> bool:
        """True only the first time: the caller records the run's one ``run_stopped`` row."""
        with self._lock:
            if self._stop_recorded:
                return False
            self._stop_recorded = True
            return True

    def close(self, timeout: float, stop_row: Callable[[], Row]) -> bool:
        """Queue ``stop_row()`` unless claimed, drain, close, unlock; True if nothing was lost.

        ``stop_row`` is called under the lock, only if started and no stop row is recorded.
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
                    self._queue.put(stop_row())
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
            self.report_lost(self._drain_nowait(), why="journal closed before start")
        else:
            thread.join()
        # Only now: the writer has closed its connection, so the next daemon may open the file.
        lock_fd, self._lock_fd = self._lock_fd, None
        if lock_fd is not None:
            release_lock(lock_fd)
        self._close_result = self.backlog == 0
        return self._close_result

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

    def report_lost(self, rows: list[Row], *, why: str) -> None:
        """Count ``rows`` as lost and log each of them, since they will never be written."""
        if not rows:
            return
        with self._lock:
            self._lost += len(rows)
        # The log is the last durable place these rows can go; one line each, every column.
        _log.error("journal_records_lost", path=str(self._path), rows=len(rows), why=why)
        for row in rows:
            _log.error("journal_record_lost", why=why, **row._asdict())

    # ------------------------------------------------------------------ writer thread

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
                        self.report_lost(
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
                    self.report_lost(
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
        if isinstance(item, Row):
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

    def _drain_nowait(self) -> list[Row]:
        rows: list[Row] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return rows
            if isinstance(item, Row):
                rows.append(item)

    def _write_with_retries(self, rows: list[Row]) -> bool:
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
                conn.executemany(INSERT, rows)
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


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
