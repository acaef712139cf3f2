"""The journal database: the ``events`` table, its migrations, and opening it for writing.

One row per event in the ``events`` table. Money, prices and sizes are stored as the exact
fixed-point string in TEXT columns; SQL never does arithmetic on them (SQLite would use
floating point), the read methods sum them in Python.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, NamedTuple

from mmbot.journal.model import JournalError, Synchronous

__all__ = [
    "INSERT",
    "QUOTES_WHERE",
    "RUNS_WHERE",
    "SCHEMA_VERSION",
    "Row",
    "check_version",
    "format_ts",
    "migrate",
    "open_writer",
    "read_version",
]

SCHEMA_VERSION: Final = 2

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
    # Version 2: a journal that can live for months.
    # - The three full indexes cost about a third of the file; each query that needs one
    #   reads a handful of kinds, so partial indexes over those kinds serve them at a
    #   fraction of the size. Their WHERE clauses are literals, and the readers repeat them
    #   word for word: SQLite uses a partial index only for a query whose WHERE implies it.
    # - archived_runs is the ledger of runs moved to an archive file, and the only door
    #   through the append-only rule: a row may be deleted once its run is in the ledger.
    2: (
        "DROP INDEX events_kind",
        "DROP INDEX events_quote_id",
        "DROP INDEX events_ts",
        "CREATE INDEX events_quotes ON events (quote_id)"
        " WHERE kind IN ('quote_created', 'quote_replaced')",
        "CREATE INDEX events_pnl ON events (ts) WHERE kind = 'position_changed'",
        "CREATE INDEX events_positions ON events (market) WHERE kind = 'position_changed'",
        "CREATE INDEX events_fills ON events (ts) WHERE kind = 'execution'",
        "CREATE INDEX events_runs ON events (run_id) WHERE kind IN ('run_started', 'run_stopped')",
        """CREATE TABLE archived_runs (
            run_id TEXT PRIMARY KEY,
            first_seq INTEGER NOT NULL,
            last_seq INTEGER NOT NULL,
            events INTEGER NOT NULL,
            started_at TEXT NOT NULL,
            last_at TEXT NOT NULL,
            stopped_at TEXT,
            stop_reason TEXT,
            archived_at TEXT NOT NULL,
            archive TEXT NOT NULL
        )""",
        "DROP TRIGGER events_append_only_no_delete",
        """CREATE TRIGGER events_delete_only_archived BEFORE DELETE ON events
        WHEN NOT EXISTS (SELECT 1 FROM archived_runs WHERE run_id = OLD.run_id)
        BEGIN SELECT RAISE(ABORT, 'the journal is append-only until a run is archived');
        END""",
    ),
}

#: The partial indexes' conditions, which a query must repeat to use them.
QUOTES_WHERE: Final = "kind IN ('quote_created', 'quote_replaced')"
RUNS_WHERE: Final = "kind IN ('run_started', 'run_stopped')"

INSERT: Final = (
    "INSERT INTO events (ts, run_id, kind, rfq_id, quote_id, market, side, price, contracts,"
    " amount, reason, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class Row(NamedTuple):
    """One ``events`` row as the writer inserts it (every column but ``seq``)."""

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


def format_ts(moment: datetime) -> str:
    """``moment`` as the ``ts`` column stores it: UTC, fixed width; naive times are refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"journal timestamps must be timezone-aware, got {moment!r}")
    # Fixed width (always microseconds, always Z) so text order is time order and
    # ``ts >= ?`` comparisons in SQL are correct.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def open_writer(
    path: Path,
    *,
    busy_timeout: float,
    synchronous: Synchronous,
    clock: Callable[[], datetime],
) -> sqlite3.Connection:
    """Open (or create) the journal at ``path`` for writing: WAL mode, migrated."""
    try:
        # isolation_level=None: transactions are the explicit BEGIN/COMMIT (in migrate() and
        # the writer), not the sqlite3 module's implicit ones.
        conn = sqlite3.connect(
            path,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
    except (OSError, sqlite3.Error) as exc:
        raise JournalError(f"cannot open journal {path}: {exc}") from exc
    try:
        # Only a file without tables takes this (SQLite ignores it otherwise): a new journal
        # can hand the pages an archive frees back to the filesystem.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(
                f"journal {path}: SQLite refused WAL mode (got {mode!r}); "
                "put the journal on a local filesystem"
            )
        conn.execute(f"PRAGMA synchronous={synchronous}")
        migrate(conn, path, clock)
    except sqlite3.Error as exc:
        conn.close()
        raise JournalError(f"cannot prepare journal {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: sqlite3.Connection, path: Path, clock: Callable[[], datetime]) -> None:
    """Bring the database on ``conn`` up to ``SCHEMA_VERSION``; refuse a newer one."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER NOT NULL, applied_at TEXT NOT NULL)"
        )
        current = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
        if current > SCHEMA_VERSION:
            raise _too_new(path, current)
        # One reading of the clock however many versions apply: they apply at one moment.
        applied_at = format_ts(clock()) if current < SCHEMA_VERSION else None
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (version, applied_at),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _too_new(path: Path, version: int) -> JournalError:
    return JournalError(
        f"journal {path} has schema version {version}, written by a newer "
        f"mmbot; this one understands up to {SCHEMA_VERSION}"
    )


def read_version(path: Path) -> int:
    """The schema version of the existing journal at ``path`` (0: none yet), changing nothing."""
    # Read-only, so nothing is migrated or created. A WAL database with no -wal file was
    # closed cleanly and all of it is in the main file; it is opened immutable because a
    # read-only connection would otherwise create -wal and -shm files it cannot remove. With
    # a -wal file (a daemon is running, or crashed) those files exist, and are used as is.
    query = "mode=ro" if Path(f"{path}-wal").exists() else "mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?{query}", uri=True)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read journal {path}: {exc}") from exc
    try:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if found is None:
            return 0
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read journal {path}: {exc}") from exc
    finally:
        conn.close()
    return int(version or 0)


def check_version(path: Path) -> None:
    """Refuse, without changing it, an existing journal this mmbot cannot read or migrate."""
    version = read_version(path)
    if version > SCHEMA_VERSION:
        raise _too_new(path, version)
