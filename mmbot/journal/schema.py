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
    "SCHEMA_VERSION",
    "Row",
    "check_version",
    "format_ts",
    "migrate",
    "open_writer",
    "read_version",
]

SCHEMA_VERSION: Final = 1

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
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (version, format_ts(clock())),
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
