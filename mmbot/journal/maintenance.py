"""Keeping a journal for months: checking it, backing it up online, archiving closed runs.

All three work while a daemon writes the journal, and need no ``sqlite3`` binary.

``check`` reads only. ``backup`` copies one consistent snapshot (SQLite's online backup,
in one step, so the daemon's commits meanwhile neither restart nor tear it) to a
temporary file, verifies it and renames it into place, so a file at the destination is
always a complete backup.

``archive`` moves runs out of the live file into an archive file, which is a journal
itself (every ``mmbot journal`` command reads it). What it never moves:

* the latest run: the one a running daemon is writing, or, when none runs, the one whose
  quotes the next start reconciles against the exchange;
* any run with a row at or after the cutoff;
* the rows the daemon rebuilds its state from: every ``position_changed`` row since
  today's UTC midnight (today's realised P&L, which the daily loss limit reads) and the
  latest ``position_changed`` row of every market (the last recorded positions). These are
  copied to the archive with their run but also stay in the live file.

The order makes a crash at any point safe to repeat: the runs' rows are copied, the
copies counted and synced to disk first; then the runs are recorded in ``archived_runs``
(the ledger that the append-only trigger consults before allowing a delete); then their
rows are deleted from the live file in small transactions with pauses between them, so
the daemon's writer never waits for more than one of them. A second ``archive`` finishes
what an interrupted one left, and releases kept rows that a later position made
unnecessary. Nothing else is synced: on 2 cores the disk work of every per-transaction
sync slowed the daemon's quotes (``benchmarks/journal.py``), and a delete lost to a power
cut only leaves rows the next archive deletes again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final

from mmbot.journal.files import _why, check_path, release_lock, take_lock
from mmbot.journal.model import JournalError, Kind
from mmbot.journal.schema import RUNS_WHERE, SCHEMA_VERSION, format_ts, migrate, open_writer

__all__ = [
    "ArchiveReport",
    "ArchivedRun",
    "BackupReport",
    "CheckReport",
    "archive",
    "backup",
    "check",
]

_TS: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_KINDS: Final = frozenset(kind.value for kind in Kind)
# How often a callable pace is asked again.
_REPACE_SECONDS: Final = 1.0
# Pages handed back to the filesystem per transaction.
_VACUUM_PAGES: Final = 1000
# Problems of one sort listed by seq before the rest are only counted.
_EXAMPLES: Final = 5


def _utc_now() -> datetime:
    return datetime.now(UTC)


@contextlib.contextmanager
def _read_only(path: Path, busy_timeout: float) -> Iterator[sqlite3.Connection]:
    if not path.is_file():
        raise JournalError(f"no journal at {path}")
    try:
        conn = sqlite3.connect(
            path.resolve().as_uri() + "?mode=ro",
            uri=True,
            timeout=busy_timeout,
            isolation_level=None,
        )
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read journal {path}: {exc}") from exc
    try:
        yield conn
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read journal {path}: {exc}") from exc
    finally:
        conn.close()


def _version(conn: sqlite3.Connection, path: Path) -> int:
    try:
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise JournalError(f"{path} is not an mmbot journal: {exc}") from exc
    if version is None:
        raise JournalError(f"{path} is not an mmbot journal: it has no schema version")
    return int(version)


def _used_bytes(conn: sqlite3.Connection, schema: str = "main") -> int:
    pages = conn.execute(f"PRAGMA {schema}.page_count").fetchone()[0]
    free = conn.execute(f"PRAGMA {schema}.freelist_count").fetchone()[0]
    size = conn.execute(f"PRAGMA {schema}.page_size").fetchone()[0]
    return int((pages - free) * size)


# ---------------------------------------------------------------------------------- check


@dataclass
class CheckReport:
    """What ``check`` found: ``problems`` empty means the journal is sound."""

    path: Path
    schema_version: int
    rows: int
    runs: int
    archived_runs: int
    integrity: str
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


class _Findings:
    """Problems of each sort: how many, and the first few seqs."""

    def __init__(self) -> None:
        self.found: dict[str, list[int]] = {}
        self.counts: dict[str, int] = {}

    def add(self, what: str, seq: int) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        examples = self.found.setdefault(what, [])
        if len(examples) < _EXAMPLES:
            examples.append(seq)

    def lines(self) -> list[str]:
        return [
            f"{self.counts[what]} row(s) with {what} (seq {', '.join(map(str, seqs))}"
            + (", ..." if self.counts[what] > len(seqs) else "")
            + ")"
            for what, seqs in self.found.items()
        ]


def _decimal_ok(text: object) -> bool:
    if text is None:
        return True
    if not isinstance(text, str):
        return False
    try:
        return Decimal(text).is_finite()
    except InvalidOperation:
        return False


def _scan_rows(conn: sqlite3.Connection) -> _Findings:
    findings = _Findings()
    rows = conn.execute(
        "SELECT seq, ts, run_id, kind, price, contracts, amount, detail FROM events ORDER BY seq"
    )
    for seq, ts, run_id, kind, price, contracts, amount, detail in rows:
        if not isinstance(ts, str) or not _TS.fullmatch(ts):
            findings.add("a timestamp not in the journal's format", seq)
        if not isinstance(run_id, str) or not run_id:
            findings.add("no run id", seq)
        if kind not in _KINDS:
            findings.add("an unknown kind", seq)
        if not (_decimal_ok(price) and _decimal_ok(contracts) and _decimal_ok(amount)):
            findings.add("a price, size or amount that is not a finite decimal", seq)
        if detail is not None:
            try:
                parsed = json.loads(detail)
            except (TypeError, ValueError):
                parsed = None
            if not isinstance(parsed, dict):
                findings.add("a detail that is not a JSON object", seq)
    return findings


def check(path: Path, *, quick: bool = False, busy_timeout: float = 5.0) -> CheckReport:
    """Check the journal's integrity, schema version, triggers and (unless quick) every row."""
    with _read_only(path, busy_timeout) as conn:
        version = _version(conn, path)
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"journal {path} has schema version {version}, written by a newer mmbot; "
                f"this one understands up to {SCHEMA_VERSION}"
            )
        conn.execute("BEGIN")  # one snapshot for every query below
        pragma = "quick_check" if quick else "integrity_check"
        results = [row[0] for row in conn.execute(f"PRAGMA {pragma}")]
        integrity = "ok" if results == ["ok"] else "; ".join(results[:10])
        rows = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        names = {
            name
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        }
        archived: set[str] = set()
        if version >= 2:
            archived = {run for (run,) in conn.execute("SELECT run_id FROM archived_runs")}
        runs = {run for (run,) in conn.execute("SELECT DISTINCT run_id FROM events")}
        started = {
            run
            for (run,) in conn.execute(
                f"SELECT DISTINCT run_id FROM events WHERE {RUNS_WHERE}"  # noqa: S608
                " AND kind = 'run_started'"
            )
        }
        findings = _scan_rows(conn) if not quick else None
        conn.execute("COMMIT")
    report = CheckReport(
        path=path,
        schema_version=version,
        rows=rows,
        runs=len(runs - archived),
        archived_runs=len(archived),
        integrity=integrity,
    )
    if integrity != "ok":
        report.problems.append(f"SQLite {pragma}: {integrity}")
    if version < SCHEMA_VERSION:
        report.notes.append(
            f"schema version {version}: the next `mmbot run` (or `mmbot journal archive`) "
            f"migrates it to {SCHEMA_VERSION}"
        )
    if "events_append_only_no_update" not in names:
        report.problems.append("the trigger that refuses updates is missing")
    if not names & {"events_append_only_no_delete", "events_delete_only_archived"}:
        report.problems.append("the trigger that refuses deletes is missing")
    missing_start = sorted(runs - archived - started)
    if missing_start:
        report.problems.append(
            f"{len(missing_start)} run(s) without a run_started row: {', '.join(missing_start[:5])}"
        )
    if findings is not None:
        report.problems.extend(findings.lines())
    else:
        report.notes.append("rows not scanned (--quick)")
    return report


# --------------------------------------------------------------------------------- backup


@dataclass(frozen=True)
class BackupReport:
    """A finished backup: where, how big, how many rows, how long it took."""

    path: Path
    bytes: int
    rows: int
    seconds: float


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup(
    path: Path,
    dest: Path,
    *,
    busy_timeout: float = 5.0,
    clock: Callable[[], datetime] = _utc_now,
) -> BackupReport:
    """Copy a consistent snapshot of the journal to ``dest`` (a new file, or a directory)."""
    began = time.monotonic()
    if dest.is_dir():
        dest = dest / f"{path.stem}-{clock().astimezone(UTC):%Y%m%dT%H%M%SZ}{path.suffix}"
    if dest.exists():
        raise JournalError(f"cannot back up to {dest}: it exists; name a new file")
    if not dest.parent.is_dir():
        raise JournalError(f"cannot back up to {dest}: directory {dest.parent} does not exist")
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    try:
        with _read_only(path, busy_timeout) as source:
            version = _version(source, path)
            if version > SCHEMA_VERSION:
                raise JournalError(
                    f"journal {path} has schema version {version}, written by a newer mmbot"
                )
            target = sqlite3.connect(partial, isolation_level=None)
            try:
                # One step: the whole copy reads one snapshot, which WAL lets the daemon
                # write past meanwhile. Steps of a few pages would restart at every commit.
                source.backup(target)
                # A self-contained file: no -wal beside it for a copy to forget.
                target.execute("PRAGMA journal_mode=DELETE")
                verdict = target.execute("PRAGMA quick_check").fetchone()[0]
                if verdict != "ok":
                    raise JournalError(f"the backup of {path} failed its check: {verdict}")
                rows = int(target.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            finally:
                target.close()
        with partial.open("rb+") as copy:
            os.fsync(copy.fileno())
        os.replace(partial, dest)
        _fsync_dir(dest.parent)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot back up {path} to {dest}: {exc}") from exc
    except OSError as exc:
        raise JournalError(f"cannot back up {path} to {dest}: {_why(exc)}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return BackupReport(dest, dest.stat().st_size, rows, time.monotonic() - began)


# -------------------------------------------------------------------------------- archive


@dataclass(frozen=True)
class ArchivedRun:
    """One run moved to the archive file."""

    run_id: str
    events: int
    started_at: str
    last_at: str
    stopped: bool


@dataclass
class ArchiveReport:
    """What ``archive`` did."""

    journal: Path
    archive: Path | None
    runs: list[ArchivedRun] = field(default_factory=list)
    rows_moved: int = 0
    rows_kept: int = 0
    rows_released: int = 0
    used_bytes_before: int = 0
    used_bytes_after: int = 0
    file_bytes_before: int = 0
    file_bytes_after: int = 0
    reusable_bytes: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class _Pacer:
    """Spaces the archive's transactions out: a pause after each, in proportion to its work.

    With ``busy`` 0.25 the archive works a quarter of the time and sleeps the rest; the
    fixed ``pause`` is the least sleep, which lets a waiting writer take the lock. A
    callable ``busy`` is asked again about once a second, so the pace can follow a daemon
    that starts or stops meanwhile.
    """

    def __init__(self, pause: float, busy: float | Callable[[], float]) -> None:
        self._pause = pause
        self._busy = busy
        self._asked = -_REPACE_SECONDS
        self._ratio = 0.0
        self._since = time.monotonic()

    def _current_ratio(self) -> float:
        if not callable(self._busy):
            return _ratio(self._busy)
        now = time.monotonic()
        if now - self._asked >= _REPACE_SECONDS:
            self._asked = now
            self._ratio = _ratio(self._busy())
        return self._ratio

    def __call__(self) -> None:
        worked = time.monotonic() - self._since
        wait = max(self._pause, worked * self._current_ratio())
        if wait > 0:
            time.sleep(wait)
        self._since = time.monotonic()


def _ratio(busy: float) -> float:
    if not 0 < busy <= 1:
        raise ValueError(f"busy must be in (0, 1], got {busy}")
    return (1 - busy) / busy


@dataclass(frozen=True)
class _Run:
    run_id: str
    first_seq: int
    last_seq: int
    events: int
    first_ts: str
    last_ts: str


def default_archive_path(path: Path, before: datetime) -> Path:
    """Where ``archive`` writes by default: beside the journal, named by the cutoff date."""
    return path.with_name(f"{path.stem}-archive-{before:%Y-%m-%d}{path.suffix or '.sqlite'}")


@contextlib.contextmanager
def _archive_lock(path: Path) -> Iterator[None]:
    real = path.resolve()
    lock_path = real.with_name(real.name + ".archive.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise JournalError(f"cannot open {lock_path}: {_why(exc)}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JournalError(f"another `mmbot journal archive` is running on {path}") from None
        yield
    finally:
        os.close(fd)


def _runs(conn: sqlite3.Connection) -> list[_Run]:
    return [
        _Run(*row)
        for row in conn.execute(
            "SELECT run_id, MIN(seq), MAX(seq), COUNT(*), MIN(ts), MAX(ts) FROM events"
            " GROUP BY run_id ORDER BY MIN(seq)"
        )
    ]


def _needed(conn: sqlite3.Connection, day_start: datetime) -> None:
    """Fill temp.keep with the seqs the daemon's state is rebuilt from."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS keep (seq INTEGER PRIMARY KEY)")
    conn.execute("DELETE FROM temp.keep")
    conn.execute(
        "INSERT OR IGNORE INTO temp.keep SELECT MAX(seq) FROM main.events"
        " WHERE kind = 'position_changed' GROUP BY market"
    )
    conn.execute(
        "INSERT OR IGNORE INTO temp.keep SELECT seq FROM main.events"
        " WHERE kind = 'position_changed' AND ts >= ?",
        (format_ts(day_start),),
    )


def _select(
    runs: list[_Run],
    ledger: set[str],
    *,
    before: datetime | None,
    max_bytes: int | None,
    used: int,
    total_rows: int,
) -> list[_Run]:
    """The runs to move: closed (never the latest), by age or until the file fits."""
    closed = [run for run in runs[:-1] if run.run_id not in ledger]
    if before is not None:
        cutoff = format_ts(before)
        return [run for run in closed if run.last_ts < cutoff]
    assert max_bytes is not None
    chosen: list[_Run] = []
    per_row = used / total_rows if total_rows else 0.0
    remaining = float(used)
    for run in closed:  # oldest first
        if remaining <= max_bytes:
            break
        chosen.append(run)
        remaining -= run.events * per_row
    return chosen


def archive(
    path: Path,
    *,
    before: datetime | None = None,
    max_bytes: int | None = None,
    dest: Path | None = None,
    clock: Callable[[], datetime] = _utc_now,
    chunk_rows: int = 5000,
    pause: float = 0.005,
    busy: float | Callable[[], float] = 1.0,
    busy_timeout: float = 5.0,
    progress: Callable[[str], None] | None = None,
) -> ArchiveReport:
    """Move closed runs (by ``before`` date, or until ``max_bytes``) to an archive file."""
    if (before is None) == (max_bytes is None):
        raise ValueError("give exactly one of before and max_bytes")
    if not callable(busy):
        _ratio(busy)  # refused now, not after the copy
    now = clock()
    if before is not None and before > now:
        raise JournalError(
            f"--before {format_ts(before)} is in the future: only runs that ended in the "
            "past can be archived"
        )
    say = progress or (lambda _text: None)
    began = time.monotonic()
    if not path.is_file():
        raise JournalError(f"no journal at {path}")
    check_path(path, create=False)
    with _archive_lock(path):
        conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
        try:
            pace = _Pacer(pause, busy)
            return _archive(conn, path, before, max_bytes, dest, now, chunk_rows, pace, say, began)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot archive {path}: {exc}") from exc
        finally:
            conn.close()


def _archive(
    conn: sqlite3.Connection,
    path: Path,
    before: datetime | None,
    max_bytes: int | None,
    dest: Path | None,
    now: datetime,
    chunk_rows: int,
    pace: _Pacer,
    say: Callable[[str], None],
    began: float,
) -> ArchiveReport:
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise JournalError(f"journal {path}: SQLite refused WAL mode (got {mode!r})")
    migrate(conn, path, lambda: now)  # a file from before version 2 gets the ledger
    # No fsync for the deletes (nor the checkpoints this connection runs): a delete lost
    # to a power cut leaves rows that are also in the archive, and the next archive
    # deletes them again. Syncing them kept the disk, and so the daemon, busy.
    conn.execute("PRAGMA synchronous=OFF")
    report = ArchiveReport(journal=path, archive=None)
    report.file_bytes_before = path.stat().st_size
    day_start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    conn.execute("BEGIN")
    runs = _runs(conn)
    # Runs already archived: only their kept rows can still be here.
    ledger = {run for (run,) in conn.execute("SELECT run_id FROM archived_runs")}
    # Each run's start, and its last clean stop with the reason, from the small index.
    starts: dict[str, str] = {}
    stops: dict[str, str] = {}
    stop_reasons: dict[str, str | None] = {}
    for run_id, kind, ts, reason in conn.execute(
        "SELECT run_id, kind, ts, reason FROM events INDEXED BY events_runs"  # noqa: S608
        f" WHERE {RUNS_WHERE} ORDER BY seq"
    ):
        if kind == Kind.RUN_STARTED:
            starts.setdefault(run_id, ts)
        else:
            stops[run_id], stop_reasons[run_id] = ts, reason
    report.used_bytes_before = _used_bytes(conn)
    total_rows = sum(run.events for run in runs)
    chosen = _select(
        runs,
        ledger,
        before=before,
        max_bytes=max_bytes,
        used=report.used_bytes_before,
        total_rows=total_rows,
    )
    _needed(conn, day_start)
    conn.execute("COMMIT")
    leftovers = [run for run in runs if run.run_id in ledger]
    if not chosen and not leftovers:
        report.notes.append("nothing to archive: no closed run matches")
        report.used_bytes_after = report.used_bytes_before
        report.file_bytes_after = report.file_bytes_before
        report.seconds = time.monotonic() - began
        return report

    if chosen:
        cutoff = before or now
        target = dest or default_archive_path(path, cutoff)
        report.archive = target
        _copy(conn, path, target, chosen, chunk_rows, now, pace, say)
        conn.execute("BEGIN IMMEDIATE")
        archived_at = format_ts(now)
        for run in chosen:
            conn.execute(
                "INSERT INTO archived_runs (run_id, first_seq, last_seq, events, started_at,"
                " last_at, stopped_at, stop_reason, archived_at, archive)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.run_id,
                    run.first_seq,
                    run.last_seq,
                    run.events,
                    starts.get(run.run_id, run.first_ts),
                    run.last_ts,
                    stops.get(run.run_id),
                    stop_reasons.get(run.run_id),
                    archived_at,
                    str(target.resolve()),
                ),
            )
        conn.execute("COMMIT")
        report.runs = [
            ArchivedRun(
                run.run_id,
                run.events,
                starts.get(run.run_id, run.first_ts),
                run.last_ts,
                run.run_id in stops,
            )
            for run in chosen
        ]

    chosen_ids = {run.run_id for run in chosen}
    for run in [*leftovers, *chosen]:
        deleted = _delete_run(conn, run, chunk_rows, pace)
        if run.run_id in chosen_ids:
            report.rows_moved += run.events
            report.rows_kept += run.events - deleted
        else:
            report.rows_released += deleted
        if deleted or run.run_id in chosen_ids:
            say(f"archived run {run.run_id}: {deleted} row(s) removed from the live file")
    conn.execute("DROP TABLE temp.keep")
    _give_back_space(conn, report, pace)
    conn.execute("PRAGMA main.wal_checkpoint(PASSIVE)")
    report.used_bytes_after = _used_bytes(conn)
    report.file_bytes_after = path.stat().st_size
    report.seconds = time.monotonic() - began
    return report


def _copy(
    conn: sqlite3.Connection,
    path: Path,
    target: Path,
    runs: list[_Run],
    chunk_rows: int,
    now: datetime,
    pace: _Pacer,
    say: Callable[[str], None],
) -> None:
    """Copy every row of ``runs`` to the journal at ``target`` and count the copies."""
    if target.exists() and path.resolve() == target.resolve():
        raise JournalError(f"the archive file {target} is the journal itself")
    check_path(target)
    # The archive is a journal: locked like one while written, so no daemon writes it too.
    lock_fd = take_lock(target)
    try:
        open_writer(target, busy_timeout=5.0, synchronous="FULL", clock=lambda: now).close()
        conn.execute("ATTACH DATABASE ? AS archive", (str(target),))
        try:
            # No fsync per chunk: the copies must be durable before anything is deleted
            # from the live file, not before the next chunk, so one fsync at the end does.
            # A sync per chunk kept the disk busy enough to slow the daemon's quotes.
            conn.execute("PRAGMA archive.synchronous=OFF")
            for run in runs:
                for low in range(run.first_seq, run.last_seq + 1, chunk_rows):
                    high = min(low + chunk_rows - 1, run.last_seq)
                    # Writes only the archive; reads the live file from a snapshot, which
                    # never holds up the daemon's writer.
                    conn.execute("BEGIN")
                    conn.execute(
                        "INSERT OR IGNORE INTO archive.events SELECT * FROM main.events"
                        " WHERE seq BETWEEN ? AND ? AND run_id = ?",
                        (low, high, run.run_id),
                    )
                    conn.execute("COMMIT")
                    pace()
                copied = conn.execute(
                    "SELECT COUNT(*) FROM archive.events WHERE seq BETWEEN ? AND ? AND run_id = ?",
                    (run.first_seq, run.last_seq, run.run_id),
                ).fetchone()[0]
                if copied != run.events:
                    raise JournalError(
                        f"the archive file {target} holds {copied} of run {run.run_id}'s "
                        f"{run.events} rows (is it another journal's archive?); nothing was "
                        "removed from the live file"
                    )
                say(f"copied run {run.run_id}: {run.events} row(s)")
            conn.execute("PRAGMA archive.wal_checkpoint(TRUNCATE)")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.execute("DETACH DATABASE archive")
        _fsync_journal(target)
    finally:
        release_lock(lock_fd)


def _fsync_journal(path: Path) -> None:
    """Make the journal at ``path`` durable: the file, any WAL beside it, the directory."""
    for part in (path, Path(f"{path}-wal")):
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(part, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(path.parent)


def _delete_run(conn: sqlite3.Connection, run: _Run, chunk_rows: int, pace: _Pacer) -> int:
    """Delete ``run``'s rows but the kept ones, a chunk per transaction; rows deleted."""
    deleted = 0
    for low in range(run.first_seq, run.last_seq + 1, chunk_rows):
        high = min(low + chunk_rows - 1, run.last_seq)
        conn.execute("BEGIN IMMEDIATE")
        cursor = conn.execute(
            "DELETE FROM main.events WHERE seq BETWEEN ? AND ? AND run_id = ?"
            " AND seq NOT IN (SELECT seq FROM temp.keep)",
            (low, high, run.run_id),
        )
        deleted += max(cursor.rowcount, 0)
        conn.execute("COMMIT")
        # Lets the daemon's writer, which may be waiting on this lock, in between.
        pace()
    return deleted


def _give_back_space(conn: sqlite3.Connection, report: ArchiveReport, pace: _Pacer) -> None:
    """Return freed pages to the filesystem where the file allows it, in small steps."""
    page_size = conn.execute("PRAGMA main.page_size").fetchone()[0]
    if conn.execute("PRAGMA main.auto_vacuum").fetchone()[0] != 2:
        free = conn.execute("PRAGMA main.freelist_count").fetchone()[0]
        report.reusable_bytes = int(free * page_size)
        report.notes.append(
            "this journal was created before mmbot could shrink it: the space freed stays "
            "in the file and new rows reuse it before the file grows again"
        )
        return
    while conn.execute("PRAGMA main.freelist_count").fetchone()[0] > 0:
        # Each call is one short write transaction; the daemon's writer gets in between.
        # executescript, not execute: the pragma frees one page per step, and only
        # sqlite3_exec steps it to the end.
        conn.executescript(f"PRAGMA main.incremental_vacuum({_VACUUM_PAGES});")
        pace()
