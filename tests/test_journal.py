"""Tests for mmbot.journal: WAL file, one writer per file, start-up errors, exact Decimals,
non-blocking records, restarts, crashes, append-only, redaction, write failures, the file
deleted mid-run, and what is read back (the summary, the start-up readers)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

import mmbot.journal as journal_package
from mmbot.journal import (
    SCHEMA_VERSION,
    CreatedQuote,
    DeleteReason,
    Journal,
    JournalError,
    JournalLocked,
    Kind,
    SkipReason,
    format_summary,
)
from mmbot.logs import REDACTED, REDACTED_PRIVATE_KEY, register_secret

D = Decimal
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
    "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n"
    "-----END PRIVATE KEY-----\n"
)


class StepClock:
    """A clock that moves one second per reading, so timestamps are predictable."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        current = self.now
        self.now += timedelta(seconds=1)
        return current


def raw_rows(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Every events row (of ``kind``), oldest first, straight from SQLite."""
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        sql = "SELECT * FROM events"
        params: tuple[str, ...] = ()
        if kind is not None:
            sql += " WHERE kind = ?"
            params = (kind,)
        rows = [dict(row) for row in conn.execute(sql + " ORDER BY seq", params)]
    conn.close()
    return rows


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    # A nested directory also checks that start() creates parents.
    return tmp_path / "state" / "journal" / "mmbot.sqlite"


@pytest.fixture
async def journal(db_path: Path) -> AsyncIterator[Journal]:
    j = Journal(db_path, clock=StepClock())
    j.start()
    yield j
    await j.aclose()


LockTaker = Callable[[], Callable[[], None]]


@pytest.fixture
def write_lock(db_path: Path) -> Iterator[LockTaker]:
    """take() holds the database's write lock from another connection; it returns release()."""
    held: list[sqlite3.Connection] = []

    def release() -> None:
        while held:
            conn = held.pop()
            conn.execute("ROLLBACK")
            conn.close()

    def take() -> Callable[[], None]:
        conn = sqlite3.connect(db_path, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        held.append(conn)
        return release

    yield take
    release()


def file_bytes(path: Path) -> bytes:
    """The raw bytes of a database file, to search for leaked secrets."""
    return path.read_bytes()


async def wait_until(predicate: Callable[[], bool], limit: float = 20.0) -> None:
    """Poll ``predicate`` without blocking the loop; a safety bound, not a timing assert."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        assert loop.time() < deadline, "condition never became true"
        await asyncio.sleep(0.005)


# --------------------------------------------------------------------------- the file


async def test_wal_mode_schema_version_and_synchronous_option(db_path: Path) -> None:
    j = Journal(db_path, synchronous="FULL")
    j.start()
    assert await j.flush(10)
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == (
            SCHEMA_VERSION
        )
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert {
        "events_quotes",
        "events_pnl",
        "events_positions",
        "events_fills",
        "events_runs",
        "archived_runs",
    } <= indexes
    assert not {"events_kind", "events_quote_id", "events_ts"} & indexes
    started = raw_rows(db_path, "run_started")[0]
    assert json.loads(started["detail"])["synchronous"] == "FULL"
    assert started["run_id"] == j.run_id
    assert await j.aclose()


def test_synchronous_must_be_normal_or_full(db_path: Path) -> None:
    with pytest.raises(ValueError, match="NORMAL or FULL"):
        Journal(db_path, synchronous="OFF")  # type: ignore[arg-type]


def written_by_a_newer_mmbot(db_path: Path) -> None:
    """A journal whose schema version is past what this mmbot understands."""
    j = Journal(db_path)
    j.start()
    j.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?, 'later')", (SCHEMA_VERSION + 1,))
    conn.close()


def test_a_journal_from_a_newer_mmbot_is_refused(db_path: Path) -> None:
    written_by_a_newer_mmbot(db_path)
    with pytest.raises(JournalError, match="newer mmbot"):
        Journal(db_path).start()


def test_reading_a_missing_journal_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match=r"no journal at .*absent\.sqlite"):
        Journal(tmp_path / "absent.sqlite").summary()


# --------------------------------------------------------------------------- one writer per file


def lock_file(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def lock_is_free(path: Path) -> bool:
    """True if an exclusive flock on the journal's lock file can be taken right now."""
    fd = os.open(lock_file(path), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # also releases the lock if it was taken
    return True


async def test_a_second_journal_on_the_same_file_is_refused(db_path: Path) -> None:
    first = Journal(db_path)
    first.start()
    assert lock_file(db_path).read_text().strip() == str(os.getpid())
    assert not lock_is_free(db_path)

    second = Journal(db_path)
    with pytest.raises(JournalLocked) as refused:
        second.start()
    assert isinstance(refused.value, JournalError)
    message = str(refused.value)
    assert "\n" not in message
    assert str(db_path) in message
    assert f"pid {os.getpid()}" in message
    assert "another mmbot is running on this journal" in message
    assert not second.healthy
    # The refused journal wrote nothing: only the first run is in the file.
    assert await first.flush(10)
    assert [run.run_id for run in first.runs()] == [first.run_id]

    assert await first.aclose()
    assert lock_is_free(db_path)
    third = Journal(db_path)
    third.start()
    assert await third.aclose()
    assert [run.run_id for run in third.runs()] == [first.run_id, third.run_id]


_SECOND_DAEMON = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from mmbot.journal import Journal, JournalLocked

    j = Journal(Path(sys.argv[1]))
    try:
        j.start()
    except JournalLocked as exc:
        print(exc)
        sys.exit(3)
    sys.exit(0 if j.close() else 4)
    """
)


def _second_daemon(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _SECOND_DAEMON, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_another_process_cannot_start_on_a_journal_in_use(db_path: Path) -> None:
    held = Journal(db_path)
    held.start()
    try:
        refused = _second_daemon(db_path)
        assert refused.returncode == 3, refused.stdout + refused.stderr
        (line,) = refused.stdout.splitlines()
        assert str(db_path) in line
        assert f"pid {os.getpid()}" in line
        assert "another mmbot is running on this journal" in line
        assert "Traceback" not in refused.stderr
    finally:
        assert held.close()
    allowed = _second_daemon(db_path)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert len(held.runs()) == 2


def test_a_failed_start_releases_the_lock(db_path: Path) -> None:
    written_by_a_newer_mmbot(db_path)
    with pytest.raises(JournalError, match="newer mmbot"):
        Journal(db_path).start()
    assert lock_is_free(db_path)


# --------------------------------------------------------------------------- start-up errors


def _not_a_database(tmp_path: Path) -> Path:
    path = tmp_path / "notes.sqlite"
    path.write_text("these are my notes, not a database\n" * 10)
    return path


def _a_directory(tmp_path: Path) -> Path:
    path = tmp_path / "journal.sqlite"
    path.mkdir()
    return path


def _under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "state").write_text("a file where a directory should be")
    return tmp_path / "state" / "journal.sqlite"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_a_directory, "is a directory"),
        (_not_a_database, "not an SQLite database"),
        (_under_a_file, "not a directory"),
    ],
)
def test_a_journal_that_cannot_be_opened_says_where_and_why(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    path = make(tmp_path)
    before = path.read_bytes() if path.is_file() else None
    j = Journal(path)
    with pytest.raises(JournalError) as failed:
        j.start()
    message = str(failed.value)
    assert "\n" not in message
    assert str(path) in message
    assert reason in message
    assert not j.healthy
    if before is not None:
        # Someone else's file is left exactly as it was.
        assert path.read_bytes() == before
        assert not Path(f"{path}-wal").exists()


def test_a_journal_in_a_directory_this_user_cannot_write_says_so(tmp_path: Path) -> None:
    locked_dir = tmp_path / "readonly"
    locked_dir.mkdir()
    locked_dir.chmod(0o555)
    try:
        with contextlib.suppress(PermissionError):
            (locked_dir / "probe").touch()
            pytest.skip("this user can write any directory (root with CAP_DAC_OVERRIDE)")
        with pytest.raises(JournalError) as failed:
            Journal(locked_dir / "journal.sqlite").start()
    finally:
        locked_dir.chmod(0o755)
    message = str(failed.value)
    assert "\n" not in message
    assert str(locked_dir / "journal.sqlite") in message
    assert "not writable" in message


# --------------------------------------------------------------------------- what is written

RFQ, QUOTE, MARKET = "rfq-1", "quote-1", "KXBTC-25MAR01-T100"

# (record method, arguments, expected columns, expected detail)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any] | None]] = [
    (
        "record_rfq_seen",
        {"rfq_id": RFQ, "market": MARKET, "contracts": D("25.00"), "target_cost": None},
        {"rfq_id": RFQ, "market": MARKET, "contracts": "25.00", "amount": None},
        None,
    ),
    (
        "record_rfq_seen",
        {"rfq_id": RFQ, "market": MARKET, "contracts": None, "target_cost": D("123.45")},
        {"contracts": None, "amount": "123.45"},
        None,
    ),
    (
        "record_rfq_skipped",
        {
            "rfq_id": RFQ,
            "market": MARKET,
            "reason": SkipReason.STALE_DATA,
            "detail": {"age_seconds": 12},
        },
        {"rfq_id": RFQ, "market": MARKET, "reason": "stale_data"},
        {"age_seconds": 12},
    ),
    (
        "record_quote_created",
        {
            "rfq_id": RFQ,
            "quote_id": QUOTE,
            "market": MARKET,
            "yes_bid": D("0.3500"),
            "no_bid": D("0.6100"),
            "contracts": D("25.00"),
            "strategy": "fixed_spread",
        },
        {"rfq_id": RFQ, "quote_id": QUOTE, "price": "0.3500", "contracts": "25.00"},
        {"yes_bid": "0.3500", "no_bid": "0.6100", "strategy": "fixed_spread"},
    ),
    (
        "record_quote_replaced",
        {
            "rfq_id": RFQ,
            "quote_id": "quote-2",
            "old_quote_id": QUOTE,
            "market": MARKET,
            "yes_bid": D("0.36"),
            "no_bid": D("0.60"),
            "contracts": D("25"),
            "strategy": "fixed_spread",
            "reason": "reference_moved",
        },
        {"quote_id": "quote-2", "price": "0.36", "contracts": "25", "reason": "reference_moved"},
        {"old_quote_id": QUOTE, "yes_bid": "0.36", "no_bid": "0.60", "strategy": "fixed_spread"},
    ),
    (
        "record_quote_deleted",
        {"quote_id": QUOTE, "rfq_id": RFQ, "market": MARKET, "reason": DeleteReason.TTL},
        {"quote_id": QUOTE, "rfq_id": RFQ, "market": MARKET, "reason": "ttl"},
        None,
    ),
    (
        "record_quote_failed",
        {
            "rfq_id": RFQ,
            "market": MARKET,
            "code": "insufficient_balance",
            "message": "not enough money",
            "status": 400,
        },
        {"rfq_id": RFQ, "quote_id": None, "reason": "insufficient_balance"},
        {"message": "not enough money", "status": 400, "action": "create"},
    ),
    (
        "record_accept_received",
        {
            "quote_id": QUOTE,
            "rfq_id": RFQ,
            "market": MARKET,
            "side": "no",
            "price": D("0.6100"),
            "contracts": D("25.00"),
        },
        {"side": "no", "price": "0.6100", "contracts": "25.00", "reason": None},
        None,
    ),
    (
        "record_confirm_sent",
        {
            "quote_id": QUOTE,
            "rfq_id": RFQ,
            "market": MARKET,
            "side": "yes",
            "price": D("0.35"),
            "contracts": D("3"),
        },
        {"quote_id": QUOTE, "side": "yes", "price": "0.35", "contracts": "3"},
        None,
    ),
    (
        "record_confirm_declined",
        {
            "quote_id": QUOTE,
            "rfq_id": RFQ,
            "market": MARKET,
            "side": "yes",
            "price": D("0.35"),
            "contracts": D("3"),
            "reason": "max_exposure_dollars",
            "detail": "exposure would be 1050.00 > 1000",
        },
        {"side": "yes", "price": "0.35", "reason": "max_exposure_dollars"},
        {"note": "exposure would be 1050.00 > 1000"},
    ),
    (
        "record_confirm_declined",
        {
            "quote_id": QUOTE,
            "rfq_id": RFQ,
            "market": MARKET,
            "side": None,
            "price": None,
            "contracts": None,
            "reason": "untracked_quote",
        },
        {"side": None, "price": None, "contracts": None, "reason": "untracked_quote"},
        None,
    ),
    (
        "record_confirm_failed",
        {
            "quote_id": QUOTE,
            "rfq_id": RFQ,
            "market": MARKET,
            "code": "quote_expired",
            "message": "too late",
            "status": 409,
        },
        {"quote_id": QUOTE, "reason": "quote_expired", "price": None},
        {"message": "too late", "status": 409},
    ),
    (
        "record_execution",
        {
            "quote_id": QUOTE,
            "rfq_id": RFQ,
            "market": MARKET,
            "side": "yes",
            "price": D("0.3500"),
            "contracts": D("25.00"),
            "order_id": "order-9",
        },
        {"quote_id": QUOTE, "side": "yes", "price": "0.3500", "contracts": "25.00"},
        {"order_id": "order-9"},
    ),
    (
        "record_position_changed",
        {
            "market": MARKET,
            "contracts": D("-25.00"),
            "realized_pnl_change": D("-1.2500"),
            "quote_id": QUOTE,
        },
        {"market": MARKET, "contracts": "-25.00", "amount": "-1.2500", "quote_id": QUOTE},
        None,
    ),
    (
        "record_reconciled",
        {"trigger": "reconnect", "counts": {"positions": 3, "untracked_deleted": 1}},
        {"reason": "reconnect", "market": None},
        {"counts": {"positions": 3, "untracked_deleted": 1}},
    ),
    (
        "record_run_stopped",
        {"reason": "signal", "detail": {"exposure": D("12.50"), "deleted_quotes": 4}},
        {"reason": "signal"},
        {"exposure": "12.50", "deleted_quotes": 4},
    ),
    # The reference mid a quote was priced against, exactly as given.
    (
        "record_quote_created",
        {
            "rfq_id": RFQ,
            "quote_id": QUOTE,
            "market": MARKET,
            "yes_bid": D("0.3500"),
            "no_bid": D("0.6100"),
            "contracts": None,
            "strategy": "fixed_spread",
            "reference": D("0.47250"),
        },
        {"price": "0.3500", "contracts": None},
        {
            "yes_bid": "0.3500",
            "no_bid": "0.6100",
            "strategy": "fixed_spread",
            "reference": "0.47250",
        },
    ),
    (
        "record_quote_replaced",
        {
            "rfq_id": RFQ,
            "quote_id": "quote-2",
            "old_quote_id": QUOTE,
            "market": MARKET,
            "yes_bid": D("0.36"),
            "no_bid": D("0.60"),
            "reference": D("-0E-7"),
        },
        {"quote_id": "quote-2", "price": "0.36"},
        {"old_quote_id": QUOTE, "yes_bid": "0.36", "no_bid": "0.60", "reference": "-0.0000000"},
    ),
]

KIND_OF = {
    "record_rfq_seen": Kind.RFQ_SEEN,
    "record_rfq_skipped": Kind.RFQ_SKIPPED,
    "record_quote_created": Kind.QUOTE_CREATED,
    "record_quote_replaced": Kind.QUOTE_REPLACED,
    "record_quote_deleted": Kind.QUOTE_DELETED,
    "record_quote_failed": Kind.QUOTE_FAILED,
    "record_accept_received": Kind.ACCEPT_RECEIVED,
    "record_confirm_sent": Kind.CONFIRM_SENT,
    "record_confirm_declined": Kind.CONFIRM_DECLINED,
    "record_confirm_failed": Kind.CONFIRM_FAILED,
    "record_execution": Kind.EXECUTION,
    "record_position_changed": Kind.POSITION_CHANGED,
    "record_reconciled": Kind.RECONCILED,
    "record_run_stopped": Kind.RUN_STOPPED,
}


def test_every_kind_has_a_way_to_be_recorded() -> None:
    recorded = set(KIND_OF.values()) | {Kind.RUN_STARTED}  # run_started comes from start()
    assert recorded == set(Kind)
    assert {name for name, *_ in CASES} == set(KIND_OF)
    public = {name for name in dir(Journal) if name.startswith("record_")}
    assert public == set(KIND_OF)


@pytest.mark.parametrize(
    ("method", "kwargs", "columns", "detail"),
    CASES,
    ids=[f"{case[0]}-{i}" for i, case in enumerate(CASES)],
)
async def test_each_record_writes_exactly_what_was_given(
    journal: Journal,
    db_path: Path,
    method: str,
    kwargs: dict[str, Any],
    columns: dict[str, Any],
    detail: dict[str, Any] | None,
) -> None:
    getattr(journal, method)(**kwargs)
    assert await journal.flush(10)
    kind = KIND_OF[method].value
    (row,) = raw_rows(db_path, kind)
    assert row["run_id"] == journal.run_id
    # The clock's fourth reading: the run id, schema_version and run_started took the others.
    assert row["ts"] == "2025-03-01T12:00:03.000000Z"
    for column, value in columns.items():
        assert row[column] == value, column
    stored = json.loads(row["detail"]) if row["detail"] is not None else None
    assert stored == detail


async def test_money_columns_are_stored_as_text(journal: Journal, db_path: Path) -> None:
    journal.record_execution(
        quote_id=QUOTE,
        rfq_id=RFQ,
        market=MARKET,
        side="yes",
        price=D("0.3500"),
        contracts=D("10"),
        order_id=None,
    )
    journal.record_position_changed(market=MARKET, contracts=D("10"), realized_pnl_change=D("0"))
    journal.record_rfq_seen(rfq_id=RFQ, market=MARKET, contracts=None, target_cost=D("100.00"))
    assert await journal.flush(10)
    with sqlite3.connect(db_path) as conn:
        types = conn.execute(
            "SELECT DISTINCT typeof(price), typeof(contracts), typeof(amount) FROM events"
            " WHERE kind IN ('execution', 'position_changed', 'rfq_seen')"
        ).fetchall()
        declared = {row[1]: row[2] for row in conn.execute("PRAGMA table_info(events)")}
    conn.close()
    assert {t for row in types for t in row} <= {"text", "null"}
    assert "text" in {t for row in types for t in row}
    assert declared["price"] == declared["contracts"] == declared["amount"] == "TEXT"


@pytest.mark.parametrize("bad", [0.35, "0.35", True])
async def test_a_non_decimal_amount_is_refused(journal: Journal, bad: Any) -> None:
    with pytest.raises(TypeError, match="Decimal"):
        journal.record_confirm_sent(
            quote_id=QUOTE, rfq_id=RFQ, market=MARKET, side="yes", price=bad, contracts=D("1")
        )


async def test_a_non_finite_amount_is_refused(journal: Journal) -> None:
    with pytest.raises(ValueError, match="finite"):
        journal.record_position_changed(
            market=MARKET, contracts=D("NaN"), realized_pnl_change=D("0")
        )


def test_a_naive_clock_is_refused(db_path: Path) -> None:
    j = Journal(db_path, clock=lambda: datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        j.record_reconciled(trigger="start", counts={})


_decimal_lists = st.lists(
    st.integers(min_value=0, max_value=8).flatmap(
        lambda places: st.decimals(
            min_value=D("-1000000"),
            max_value=D("1000000"),
            places=places,
            allow_nan=False,
            allow_infinity=False,
        )
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=30, deadline=None)
@given(prices=_decimal_lists)
def test_decimals_round_trip_exactly(prices: list[Decimal]) -> None:
    extra = [D("0.3500"), D("123.45"), D("-0.00"), D("1E+2"), D("0.0000001"), D("99999999.9999")]
    values = [*prices, *extra]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "j.sqlite"

        async def run() -> list[Decimal]:
            j = Journal(path)
            j.start()
            for value in values:
                j.record_execution(
                    quote_id="q",
                    rfq_id="r",
                    market="M",
                    side="no",
                    price=value,
                    contracts=value,
                    order_id=None,
                )
            assert await j.aclose()
            return [row.price for row in j.executions()]

        back = asyncio.run(run())
        texts = [row["price"] for row in raw_rows(path, "execution")]
    assert back == values
    for original, returned, text in zip(values, back, texts, strict=True):
        # The exact digits given, fraction zeros included; never an exponent.
        assert "E" not in text.upper()
        exponent = original.as_tuple().exponent
        assert isinstance(exponent, int)
        assert returned.as_tuple().exponent == min(exponent, 0)
        if exponent <= 0:
            # Sign, digits and exponent all identical: "0.3500" stays "0.3500".
            assert Decimal(text).as_tuple() == original.as_tuple()


# --------------------------------------------------------------------------- never blocking


async def test_records_do_not_wait_for_the_disk_and_flush_does(
    db_path: Path, write_lock: LockTaker
) -> None:
    j = Journal(db_path, busy_timeout=60.0)
    j.start()
    assert await j.flush(10)
    written_before = j.written
    # The writer now sits inside SQLite waiting for the lock: a slow disk, in effect.
    release = write_lock()
    for i in range(1000):
        j.record_quote_deleted(quote_id=f"q{i}", rfq_id=RFQ, market=MARKET, reason="ttl")
    assert j.backlog == 1000
    assert j.written == written_before

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    assert await j.flush(0.05) is False  # the loop kept running while flush waited
    assert ticks > 0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert j.healthy

    release()
    assert await j.flush(30)
    assert j.backlog == 0
    assert [r["quote_id"] for r in raw_rows(db_path, "quote_deleted")] == [
        f"q{i}" for i in range(1000)
    ]
    assert await j.aclose()


async def test_flush_with_nothing_queued_returns_at_once(journal: Journal) -> None:
    assert await journal.flush(10)
    assert await journal.flush(0)


async def test_rows_recorded_before_start_are_kept(db_path: Path) -> None:
    j = Journal(db_path)
    j.record_rfq_seen(rfq_id=RFQ, market=MARKET, contracts=D("1"), target_cost=None)
    j.start()
    assert await j.aclose()
    assert [r["kind"] for r in raw_rows(db_path)] == ["run_started", "rfq_seen", "run_stopped"]


# --------------------------------------------------------------------------- restarts and crashes


async def test_survives_restart_with_a_new_run_id_each_start(db_path: Path) -> None:
    first = Journal(db_path)
    first.start()
    first.record_execution(
        quote_id="q1",
        rfq_id="r1",
        market=MARKET,
        side="yes",
        price=D("0.40"),
        contracts=D("5"),
        order_id="o1",
    )
    first.record_position_changed(market=MARKET, contracts=D("5"), realized_pnl_change=D("0"))
    assert await first.aclose(reason="signal")

    second = Journal(db_path)
    second.start()
    second.record_execution(
        quote_id="q2",
        rfq_id="r2",
        market=MARKET,
        side="no",
        price=D("0.55"),
        contracts=D("2"),
        order_id="o2",
    )
    assert await second.flush(10)

    assert first.run_id != second.run_id
    runs = second.runs()
    assert [r.run_id for r in runs] == [first.run_id, second.run_id]
    assert runs[0].stop_reason == "signal"
    assert runs[0].stopped_at is not None
    assert runs[1].stopped_at is None  # still running
    total = second.summary()
    assert total.runs == 2
    assert total.executions == 2
    assert total.premium_paid == D("0.40") * 5 + D("0.55") * 2
    assert second.summary(second.run_id).executions == 1
    assert second.summary(first.run_id).executions == 1
    assert second.last_positions() == {MARKET: D("5")}
    assert await second.aclose()


_CRASHING_DAEMON = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from decimal import Decimal
    from pathlib import Path
    from mmbot.journal import Journal

    async def main() -> None:
        j = Journal(Path(sys.argv[1]), run_id="crashed-run")
        j.start()
        for i in range(50):
            j.record_execution(quote_id=f"q{i}", rfq_id="r", market="M", side="yes",
                               price=Decimal("0.35"), contracts=Decimal("2"), order_id=f"o{i}")
        if not await j.flush(30):
            sys.exit(3)
        # No close(), no atexit hooks, no checkpoint: the process just dies.
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
    """
)


def test_flushed_rows_survive_a_crash(db_path: Path) -> None:
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _CRASHING_DAEMON, str(db_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    # Not checkpointed: the rows are only in the WAL, which the next open must replay.
    assert Path(f"{db_path}-wal").stat().st_size > 0

    reopened = Journal(db_path)
    reopened.start()
    executions = reopened.executions()
    assert [e.order_id for e in executions] == [f"o{i}" for i in range(50)]
    assert all(e.price == D("0.35") and e.run_id == "crashed-run" for e in executions)
    crashed = next(r for r in reopened.runs() if r.run_id == "crashed-run")
    assert crashed.stopped_at is None
    assert crashed.events == 51
    assert reopened.close()


# --------------------------------------------------------------------------- append-only


def test_the_module_has_no_update_or_delete_sql() -> None:
    # The archive (maintenance.py) is the one writer that deletes, and only rows of runs it
    # first recorded as archived (the trigger below enforces that); version 2's migration
    # drops the old delete trigger to put that rule in its place.
    modules = sorted(Path(journal_package.__file__).parent.glob("*.py"))
    assert len(modules) > 1
    source = "\n".join(
        path.read_text(encoding="utf-8") for path in modules if path.name != "maintenance.py"
    )
    migration = '"DROP TRIGGER events_append_only_no_delete",'
    assert source.count(migration) == 1
    source = source.replace(migration, "")
    forbidden = [
        r"\bUPDATE\s+\w+\s+SET\b",
        r"\bDELETE\s+FROM\b",
        r"\bREPLACE\s+INTO\b",
        r"\bINSERT\s+OR\s+REPLACE\b",
        r"\bUPSERT\b|\bON\s+CONFLICT\b",
        r"\bDROP\s+(TABLE|TRIGGER)\b",
    ]
    for pattern in forbidden:
        assert not re.search(pattern, source, re.IGNORECASE), pattern
    # The check is not vacuous.
    assert re.search(forbidden[0], "cur.execute('update events set kind = 1')", re.IGNORECASE)


async def test_the_file_itself_refuses_update_and_delete(journal: Journal, db_path: Path) -> None:
    journal.record_rfq_skipped(rfq_id=RFQ, market=MARKET, reason="risk")
    assert await journal.flush(10)
    conn = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE events SET reason = 'x'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM events")
        # Only the rows of a run recorded in the ledger of archived runs may go.
        conn.execute(
            "INSERT INTO archived_runs (run_id, first_seq, last_seq, events, started_at,"
            " last_at, archived_at, archive) VALUES ('elsewhere', 1, 1, 1, 'x', 'x', 'x', 'x')"
        )
        conn.commit()
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM events WHERE run_id = ?", (journal.run_id,))
    finally:
        conn.close()


# --------------------------------------------------------------------------- redaction


async def test_secrets_never_reach_the_file(journal: Journal, db_path: Path) -> None:
    key_id = "a3c1f0e2-9b7d-4c55-8e21-00ff00ff00ff"
    register_secret(key_id)
    journal.record_quote_failed(
        rfq_id=RFQ,
        market=MARKET,
        code="unauthorized",
        message=f"bad signature for key {key_id}",
        detail={
            "headers": {"KALSHI-ACCESS-KEY": "anything", "Content-Type": "application/json"},
            "private_key": "whatever it is",
            "dump": f"config: {PEM}",
            "nested": [{"note": f"id={key_id}"}],
        },
    )
    journal.record_rfq_skipped(
        rfq_id=RFQ, market=MARKET, reason=f"strategy error: {key_id}", detail=PEM
    )
    assert await journal.flush(10)
    text = file_bytes(db_path) + file_bytes(Path(f"{db_path}-wal"))
    assert key_id.encode() not in text
    assert b"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj" not in text

    failed = raw_rows(db_path, "quote_failed")[0]
    detail = json.loads(failed["detail"])
    assert detail["message"] == f"bad signature for key {REDACTED}"
    assert detail["headers"] == {"KALSHI-ACCESS-KEY": REDACTED, "Content-Type": "application/json"}
    assert detail["private_key"] == REDACTED
    assert detail["dump"] == f"config: {REDACTED_PRIVATE_KEY}\n"
    assert detail["nested"] == [{"note": f"id={REDACTED}"}]
    skipped = raw_rows(db_path, "rfq_skipped")[0]
    assert skipped["reason"] == f"strategy error: {REDACTED}"
    assert json.loads(skipped["detail"]) == {"note": f"{REDACTED_PRIVATE_KEY}\n"}


# --------------------------------------------------------------------------- write failures


def _failing_journal(db_path: Path) -> Journal:
    return Journal(
        db_path,
        busy_timeout=0.01,
        retry_attempts=2,
        retry_backoff=0.001,
        max_outage_backoff=0.02,
    )


async def test_a_failing_disk_is_visible_and_loses_nothing(
    db_path: Path, write_lock: LockTaker
) -> None:
    j = _failing_journal(db_path)
    j.start()
    assert await j.flush(10)
    release = write_lock()
    with capture_logs() as logs:
        for i in range(20):
            j.record_execution(
                quote_id=f"q{i}",
                rfq_id=RFQ,
                market=MARKET,
                side="yes",
                price=D("0.50"),
                contracts=D("1"),
                order_id=None,
            )
        await wait_until(lambda: not j.healthy)
        assert j.last_error is not None
        assert "locked" in j.last_error
        assert j.backlog == 20
        assert await j.flush(0.02) is False
        # Still accepting records while unhealthy; nothing raised to the caller.
        j.record_reconciled(trigger="during_outage", counts={})

        release()
        assert await j.flush(30)
        assert j.healthy
    failures = [e for e in logs if e["event"] == "journal_write_failed"]
    assert failures
    assert failures[0]["log_level"] == "error"
    assert any(e["event"] == "journal_write_recovered" for e in logs)
    assert [r["quote_id"] for r in raw_rows(db_path, "execution")] == [f"q{i}" for i in range(20)]
    assert len(raw_rows(db_path, "reconciled")) == 1
    assert await j.aclose()
    assert j.lost == 0


async def test_rows_that_cannot_be_written_by_close_are_logged_not_dropped(
    db_path: Path, write_lock: LockTaker
) -> None:
    j = _failing_journal(db_path)
    j.start()
    assert await j.flush(10)
    release = write_lock()
    try:
        with capture_logs() as logs:
            j.record_execution(
                quote_id="q-late",
                rfq_id=RFQ,
                market=MARKET,
                side="no",
                price=D("0.2500"),
                contracts=D("4"),
                order_id="o-late",
            )
            assert await j.aclose(timeout=0.1) is False
            j.record_quote_deleted(quote_id="q-after", rfq_id=None, market=None, reason="ttl")
    finally:
        release()
    assert j.lost == 3  # the execution, run_stopped, and the record after close
    assert not j.healthy
    lost = [e for e in logs if e["event"] == "journal_record_lost"]
    assert [(e["kind"], e["quote_id"]) for e in lost] == [
        ("execution", "q-late"),
        ("run_stopped", None),
        ("quote_deleted", "q-after"),
    ]
    assert (lost[0]["price"], lost[0]["contracts"]) == ("0.2500", "4")
    assert raw_rows(db_path, "execution") == []


# --------------------------------------------------------------------------- file gone mid-run


def _quote_deleted(j: Journal, quote_id: str) -> None:
    j.record_quote_deleted(quote_id=quote_id, rfq_id=RFQ, market=MARKET, reason="ttl")


def _exists(path: Path) -> bool:
    return path.exists()


async def test_a_deleted_journal_file_turns_the_journal_unhealthy(db_path: Path) -> None:
    j = Journal(db_path)
    j.start()
    _quote_deleted(j, "before")
    assert await j.flush(10)
    assert j.healthy
    with capture_logs() as logs:
        os.unlink(db_path)
        for i in range(5):
            _quote_deleted(j, f"after-{i}")
        await wait_until(lambda: not j.healthy)
        assert j.last_error is not None
        assert "deleted or replaced" in j.last_error
        assert str(db_path) in j.last_error
        # Later rows still queue (nothing raised), but nothing is written to the lost file,
        # the journal stays unhealthy, and the ERROR is said once, not once per batch.
        for i in range(5, 10):
            _quote_deleted(j, f"after-{i}")
            assert await j.flush(0.05) is False
        assert not j.healthy
        assert j.backlog == 10
        assert not _exists(db_path), "the journal file must not be silently recreated"
        assert await j.aclose() is False
    errors = [e for e in logs if e["log_level"] == "error" and e["event"] != "journal_record_lost"]
    assert [e["event"] for e in errors] == ["journal_file_lost", "journal_records_lost"]
    assert str(db_path) in errors[0]["error"]
    # What could not be written went to the log, the last durable place left.
    lost = [e["quote_id"] for e in logs if e["event"] == "journal_record_lost"]
    assert lost == [*(f"after-{i}" for i in range(10)), None]  # None: run_stopped
    assert j.lost == 11
    assert not _exists(db_path)
    # A restart makes a fresh journal there, and no stale page of the old one leaks in.
    fresh = Journal(db_path)
    fresh.start()
    assert await fresh.aclose()
    assert [run.run_id for run in fresh.runs()] == [fresh.run_id]


@pytest.mark.slow  # waits for the idle writer's once-a-second check of the file
async def test_a_replaced_journal_file_is_noticed_while_idle_and_left_alone(
    db_path: Path, tmp_path: Path
) -> None:
    j = Journal(db_path)
    j.start()
    _quote_deleted(j, "before")
    assert await j.flush(10)
    # Someone restores another database over the journal while the daemon runs.
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE restored (x)")
        conn.execute("INSERT INTO restored VALUES (42)")
    conn.close()
    os.replace(other, db_path)
    # No further rows: the writer notices by itself.
    await wait_until(lambda: not j.healthy)
    assert j.last_error is not None
    assert "deleted or replaced" in j.last_error
    # The replacement reads intact, now and after close: SQLite finds the journal's WAL
    # beside the path and would replay its pages into the restored database.
    assert _restored_tables(db_path) == (["restored"], [(42,)])
    _quote_deleted(j, "after")
    assert await j.aclose() is False
    assert j.lost == 2  # "after" and run_stopped
    assert _restored_tables(db_path) == (["restored"], [(42,)])


def _restored_tables(path: Path) -> tuple[list[str], list[tuple[int]]]:
    with sqlite3.connect(path) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master")]
        rows = conn.execute("SELECT x FROM restored").fetchall()
    conn.close()
    return tables, rows


# --------------------------------------------------------------------------- reading it back


async def _trade_day(j: Journal) -> None:
    j.record_rfq_seen(rfq_id="r1", market="A", contracts=D("10"), target_cost=None)
    j.record_rfq_seen(rfq_id="r2", market="B", contracts=None, target_cost=D("50.00"))
    j.record_rfq_seen(rfq_id="r3", market="Z", contracts=D("1"), target_cost=None)
    j.record_rfq_seen(rfq_id="r4", market="A", contracts=D("5"), target_cost=None)
    j.record_rfq_skipped(rfq_id="r3", market="Z", reason=SkipReason.UNROUTED_MARKET)
    for rfq, market, quote in (("r1", "A", "q1"), ("r2", "B", "q2"), ("r4", "A", "q4")):
        j.record_quote_created(
            rfq_id=rfq,
            quote_id=quote,
            market=market,
            yes_bid=D("0.40"),
            no_bid=D("0.55"),
            contracts=D("10"),
            strategy="s",
        )
    j.record_quote_deleted(
        quote_id="q2", rfq_id="r2", market="B", reason=DeleteReason.REQUOTE_FAILED
    )
    j.record_quote_replaced(
        rfq_id="r2",
        quote_id="q2b",
        old_quote_id="q2",
        market="B",
        yes_bid=D("0.41"),
        no_bid=D("0.5"),
    )
    j.record_accept_received(
        quote_id="q1", rfq_id="r1", market="A", side="yes", price=D("0.40"), contracts=D("10")
    )
    j.record_confirm_sent(
        quote_id="q1", rfq_id="r1", market="A", side="yes", price=D("0.40"), contracts=D("10")
    )
    j.record_execution(
        quote_id="q1",
        rfq_id="r1",
        market="A",
        side="yes",
        price=D("0.40"),
        contracts=D("10"),
        order_id="o1",
    )
    j.record_position_changed(market="A", contracts=D("10"), realized_pnl_change=D("0"))
    j.record_accept_received(
        quote_id="q4", rfq_id="r4", market="A", side="no", price=D("0.5500"), contracts=D("5.00")
    )
    j.record_confirm_sent(
        quote_id="q4", rfq_id="r4", market="A", side="no", price=D("0.5500"), contracts=D("5.00")
    )
    j.record_execution(
        quote_id="q4",
        rfq_id="r4",
        market="A",
        side="no",
        price=D("0.5500"),
        contracts=D("5.00"),
        order_id="o4",
    )
    # Buying NO against a YES position closes 5 contracts: 0.40 + 0.55 = 0.95, so +0.25.
    j.record_position_changed(market="A", contracts=D("5.00"), realized_pnl_change=D("0.2500"))
    j.record_accept_received(
        quote_id="q2b", rfq_id="r2", market="B", side="yes", price=D("0.41"), contracts=D("100")
    )
    j.record_confirm_declined(
        quote_id="q2b",
        rfq_id="r2",
        market="B",
        side="yes",
        price=D("0.41"),
        contracts=D("100"),
        reason="max_exposure_dollars",
    )
    j.record_quote_deleted(
        quote_id="q2b", rfq_id="r2", market="B", reason=DeleteReason.DECLINED_ACCEPT
    )
    j.record_quote_deleted(quote_id="q4", rfq_id="r4", market="A", reason=DeleteReason.TTL)
    j.record_quote_failed(rfq_id="r9", market="A", code="market_closed", message="closed")
    j.record_confirm_failed(quote_id="q7", rfq_id="r7", market="B", code=None, message="timeout")
    j.record_position_changed(market="B", contracts=D("-3"), realized_pnl_change=D("-1.10"))
    assert await j.flush(10)


async def test_summary_of_a_trading_day(db_path: Path) -> None:
    j = Journal(db_path, clock=StepClock())
    j.start()
    await _trade_day(j)
    s = j.summary(j.run_id)
    assert (s.rfqs_seen, s.rfqs_skipped) == (4, 1)
    assert s.rfqs_skipped_by_reason == {"unrouted_market": 1}
    assert (s.quotes_created, s.quotes_replaced, s.quotes_failed) == (3, 1, 1)
    assert s.quotes_deleted == 3
    assert s.quotes_deleted_by_reason == {"declined_accept": 1, "requote_failed": 1, "ttl": 1}
    assert (s.accepts, s.confirms, s.declines, s.confirm_failures) == (3, 2, 1, 1)
    assert s.declines_by_reason == {"max_exposure_dollars": 1}
    assert s.executions == 2
    assert s.contracts_traded == D("15.00")
    assert s.premium_paid == D("6.750000")  # 0.40 x 10 + 0.5500 x 5.00, exactly
    assert s.realized_pnl == D("-0.8500")
    assert s.runs == 1
    # Clock readings: the run id, schema_version, run_started (the first row), then 25 rows.
    assert s.first_ts == T0 + timedelta(seconds=2)
    assert s.last_ts == T0 + timedelta(seconds=27)
    assert j.last_positions() == {"A": D("5.00"), "B": D("-3")}

    executions = j.executions()
    assert [(e.quote_id, e.side, e.price, e.contracts, e.order_id) for e in executions] == [
        ("q1", "yes", D("0.40"), D("10"), "o1"),
        ("q4", "no", D("0.5500"), D("5.00"), "o4"),
    ]
    assert str(executions[1].price) == "0.5500"
    later = j.executions(since=executions[1].ts)
    assert [e.quote_id for e in later] == ["q4"]
    assert j.executions(since=executions[1].ts + timedelta(microseconds=1)) == []

    text = format_summary(s)
    assert text == j.format_summary(s)
    lines = text.splitlines()
    assert lines[0] == f"mmbot journal: run {j.run_id}"
    table = lines[2:]
    assert len({len(line) for line in table}) == 1, "columns are aligned"
    assert any(re.fullmatch(r"Declines +1", line) for line in table)
    assert any(re.fullmatch(r"  max_exposure_dollars +1", line) for line in table)
    assert any(re.fullmatch(r"  requote_failed +1", line) for line in table)
    assert any(re.fullmatch(r"Premium paid \(\$\) +6\.75", line) for line in table)
    assert any(re.fullmatch(r"Fees \(\$\) +0\.00", line) for line in table)
    assert any(re.fullmatch(r"Realised P&L \(\$, net of fees\) +-0\.85", line) for line in table)
    assert any(re.fullmatch(r"Contracts traded +15\.00", line) for line in table)
    assert await j.aclose()


async def test_summary_over_all_runs_and_an_empty_run(db_path: Path) -> None:
    first = Journal(db_path)
    first.start()
    await _trade_day(first)
    assert await first.aclose()
    second = Journal(db_path)
    second.start()
    await _trade_day(second)
    assert await second.aclose()
    third = Journal(db_path)
    third.start()
    assert await third.flush(10)

    everything = third.summary()
    assert (everything.run_id, everything.runs) == (None, 3)
    assert everything.executions == 4
    assert everything.premium_paid == D("13.50")
    assert everything.realized_pnl == D("-1.70")
    assert everything.declines_by_reason == {"max_exposure_dollars": 2}
    assert format_summary(everything).startswith("mmbot journal: all runs (3)\n")

    empty = third.summary(third.run_id)
    assert (empty.executions, empty.premium_paid, empty.realized_pnl) == (0, 0, 0)
    assert "Premium paid" in format_summary(empty)
    assert [r.stop_reason for r in third.runs()] == ["shutdown", "shutdown", None]
    assert await third.aclose()


# --------------------------------------------------------------------------- start-up readers


async def test_quotes_created_finds_live_quotes_from_any_run(db_path: Path) -> None:
    first = Journal(db_path, clock=StepClock())
    first.start()
    first.record_quote_created(
        rfq_id="r1",
        quote_id="q1",
        market="A",
        yes_bid=D("0.3500"),
        no_bid=D("0.6100"),
        contracts=D("25.00"),
        strategy="fixed_spread",
        reference=D("0.47250"),
    )
    first.record_quote_replaced(
        rfq_id="r1",
        quote_id="q2",
        old_quote_id="q1",
        market="A",
        yes_bid=D("0.36"),
        no_bid=D("0.60"),
        reference=D("0.48"),
    )
    # A quote id in rows of other kinds is not a created quote.
    first.record_execution(
        quote_id="q-exec",
        rfq_id="r9",
        market="A",
        side="yes",
        price=D("0.40"),
        contracts=D("1"),
        order_id=None,
    )
    first.record_quote_deleted(quote_id="q-gone", rfq_id="r8", market="A", reason="ttl")
    assert await first.aclose()

    second = Journal(db_path, clock=StepClock())
    second.start()
    second.record_quote_created(
        rfq_id="r3",
        quote_id="q3",
        market="B",
        yes_bid=D("0.1"),
        no_bid=D("0.85"),
        contracts=None,
        strategy="size_aware",
    )
    assert await second.flush(10)

    wanted = iter(["q1", "q2", "q3", "q1", "q-exec", "q-gone", "never"])
    found = await asyncio.to_thread(second.quotes_created, wanted)  # while the writer runs
    assert found == {
        "q1": CreatedQuote(
            quote_id="q1",
            rfq_id="r1",
            market="A",
            yes_bid=D("0.3500"),
            no_bid=D("0.6100"),
            contracts=D("25.00"),
            reference=D("0.47250"),
            strategy="fixed_spread",
            run_id=first.run_id,
        ),
        "q2": CreatedQuote(
            quote_id="q2",
            rfq_id="r1",
            market="A",
            yes_bid=D("0.36"),
            no_bid=D("0.60"),
            contracts=None,
            reference=D("0.48"),
            strategy=None,
            run_id=first.run_id,
        ),
        "q3": CreatedQuote(
            quote_id="q3",
            rfq_id="r3",
            market="B",
            yes_bid=D("0.1"),
            no_bid=D("0.85"),
            contracts=None,
            reference=None,
            strategy="size_aware",
            run_id=second.run_id,
        ),
    }
    # Exactly as recorded, trailing zeros included.
    assert str(found["q1"].reference) == "0.47250"
    assert str(found["q1"].yes_bid) == "0.3500"
    with pytest.raises(dataclasses.FrozenInstanceError):
        found["q1"].yes_bid = D("1")  # type: ignore[misc]
    assert await second.aclose()
    # Without start(), from another Journal object, too; and nothing asked, nothing found.
    assert Journal(db_path).quotes_created(["q3"])["q3"].run_id == second.run_id
    assert Journal(db_path).quotes_created([]) == {}


async def test_quotes_created_looks_up_thousands_of_ids(journal: Journal) -> None:
    recorded = [f"quote-{i:05d}" for i in range(0, 40_000, 10)]
    for quote_id in recorded:
        journal.record_quote_created(
            rfq_id=f"rfq-{quote_id}",
            quote_id=quote_id,
            market=MARKET,
            yes_bid=D("0.40"),
            no_bid=D("0.55"),
            contracts=D("10"),
            strategy="s",
        )
    assert await journal.flush(30)
    # More ids than SQLite takes as parameters of one statement.
    asked = (f"quote-{i:05d}" for i in range(40_000))
    found = journal.quotes_created(asked)
    assert sorted(found) == recorded
    assert all(found[q].rfq_id == f"rfq-{q}" for q in recorded)


async def test_realized_pnl_since_sums_exactly_over_all_runs(db_path: Path) -> None:
    clock = StepClock()
    first = Journal(db_path, clock=clock)
    first.start()
    clock.now = T0 + timedelta(hours=1)
    first.record_position_changed(market="A", contracts=D("5"), realized_pnl_change=D("-7.77"))
    clock.now = T0 + timedelta(hours=10)
    first.record_position_changed(
        market="A", contracts=D("0"), realized_pnl_change=D("12345678901234567890.12345678")
    )
    first.record_execution(
        quote_id="q",
        rfq_id="r",
        market="A",
        side="no",
        price=D("0.5"),
        contracts=D("1"),
        order_id=None,
    )
    assert await first.aclose()

    second = Journal(db_path, clock=clock)
    second.start()
    clock.now = T0 + timedelta(hours=11)
    second.record_position_changed(
        market="B", contracts=D("-3"), realized_pnl_change=D("0.00000000000000000001")
    )
    second.record_position_changed(market="B", contracts=D("0"), realized_pnl_change=D("-0.1"))
    assert await second.flush(10)

    since = T0 + timedelta(hours=10)
    # 41 significant digits: the default 28-digit context would round this sum.
    expected = D("12345678901234567890.02345678000000000001")
    total = await asyncio.to_thread(second.realized_pnl_since, since)  # while the writer runs
    assert total == expected
    assert str(total) == str(expected)
    # ts >= since: a row exactly at ``since`` counts, one just after it does not.
    assert second.realized_pnl_since(since + timedelta(microseconds=1)) == D(
        "-0.09999999999999999999"
    )
    assert second.realized_pnl_since(T0) == D("12345678901234567882.25345678000000000001")
    assert second.realized_pnl_since(T0 + timedelta(days=1)) == 0
    assert await second.aclose()
    assert Journal(db_path).realized_pnl_since(since) == expected  # without start()
    with pytest.raises(ValueError, match="timezone-aware"):
        Journal(db_path).realized_pnl_since(datetime(2025, 3, 1))


@pytest.mark.parametrize(
    "read",
    [
        lambda j: j.quotes_created(["q1"]),
        lambda j: j.realized_pnl_since(T0),
    ],
    ids=["quotes_created", "realized_pnl_since"],
)
def test_start_up_readers_raise_journal_errors(
    tmp_path: Path, read: Callable[[Journal], object]
) -> None:
    with pytest.raises(JournalError, match=r"no journal at .*absent\.sqlite"):
        read(Journal(tmp_path / "absent.sqlite"))
    with pytest.raises(JournalError, match=r"notes\.sqlite"):
        read(Journal(_not_a_database(tmp_path)))
