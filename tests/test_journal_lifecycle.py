"""A journal that lives for months: runs, summary, check, online backup, archive, migration.

Journals here are built row by row through the schema's own INSERT, so every run's times,
kinds and stops are chosen; a started :class:`Journal` stands in for a running daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmbot.cli.entry import main
from mmbot.journal import Journal, JournalError
from mmbot.journal.maintenance import archive, backup, check, default_archive_path
from mmbot.journal.readers import Reader
from mmbot.journal.schema import _MIGRATIONS, INSERT, SCHEMA_VERSION, format_ts, open_writer
from tests.support.env import clear_mmbot_env, subprocess_env

NOW = datetime(2026, 6, 10, 15, 30, tzinfo=UTC)
MIDNIGHT = NOW.replace(hour=0, minute=0)


def _now() -> datetime:
    return NOW


@dataclass
class RunSpec:
    """A run to write: when it starts, how many RFQs, fills per market, clean stop or not."""

    run_id: str
    start: datetime
    rfqs: int = 5
    fills: tuple[tuple[str, str, str], ...] = ()  # (market, position after, realised change)
    stopped: bool = True


def _row(ts: datetime, run: str, kind: str, **cols: Any) -> tuple[Any, ...]:
    return (
        format_ts(ts),
        run,
        kind,
        cols.get("rfq_id"),
        cols.get("quote_id"),
        cols.get("market"),
        cols.get("side"),
        cols.get("price"),
        cols.get("contracts"),
        cols.get("amount"),
        cols.get("reason"),
        cols.get("detail"),
    )


def write_runs(path: Path, runs: list[RunSpec]) -> None:
    """Append ``runs`` to the journal at ``path`` (created at the current schema)."""
    conn = open_writer(path, busy_timeout=5, synchronous="NORMAL", clock=_now)
    try:
        for spec in runs:
            rows = [_row(spec.start, spec.run_id, "run_started", detail='{"pid": 1}')]
            t = spec.start
            for i in range(spec.rfqs):
                t += timedelta(seconds=1)
                rfq, quote = f"{spec.run_id}-r{i}", f"{spec.run_id}-q{i}"
                rows.append(_row(t, spec.run_id, "rfq_seen", rfq_id=rfq, market="M", contracts="1"))
                rows.append(
                    _row(
                        t,
                        spec.run_id,
                        "quote_created",
                        rfq_id=rfq,
                        quote_id=quote,
                        market="M",
                        price="0.40",
                        detail='{"no_bid": "0.50", "strategy": "s", "yes_bid": "0.40"}',
                    )
                )
            for market, position, change in spec.fills:
                t += timedelta(seconds=1)
                rows.append(
                    _row(
                        t,
                        spec.run_id,
                        "execution",
                        market=market,
                        side="yes",
                        price="0.40",
                        contracts="1",
                    )
                )
                rows.append(
                    _row(
                        t,
                        spec.run_id,
                        "position_changed",
                        market=market,
                        contracts=position,
                        amount=change,
                    )
                )
            if spec.stopped:
                t += timedelta(seconds=1)
                rows.append(_row(t, spec.run_id, "run_stopped", reason="shutdown"))
            conn.execute("BEGIN")
            conn.executemany(INSERT, rows)
            conn.execute("COMMIT")
    finally:
        conn.close()


def all_rows(path: Path) -> dict[int, tuple[Any, ...]]:
    """Every row of the file, by seq."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {row[0]: row for row in conn.execute("SELECT * FROM events")}


def state(path: Path) -> tuple[Decimal, dict[str, Decimal]]:
    """What the daemon rebuilds: today's realised P&L and the last position of each market."""
    reader = Reader(path, busy_timeout=5)
    return reader.realized_pnl_since(MIDNIGHT), reader.last_positions()


@pytest.fixture(autouse=True)
def _no_mmbot_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The command-line tests load settings: a MMBOT_* variable of the machine must not
    # change (or break) them.
    clear_mmbot_env(monkeypatch)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite"


def days_ago(days: float, hour: int = 10) -> datetime:
    return (NOW - timedelta(days=days)).replace(hour=hour, minute=0)


def cli(*args: str, journal: Path) -> int:
    return main(["journal", *args, "--journal.path", str(journal)])


# ------------------------------------------------------------------------------ schema


def write_v1(path: Path) -> None:
    """A journal as mmbot with schema version 1 left it, with one run."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)")
    for statement in _MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, 'then')")
    conn.execute("BEGIN")
    conn.executemany(
        INSERT,
        [
            _row(days_ago(9), "old", "run_started"),
            _row(days_ago(9), "old", "position_changed", market="A", contracts="3", amount="1.5"),
            _row(days_ago(9), "old", "run_stopped", reason="shutdown"),
        ],
    )
    conn.execute("COMMIT")
    conn.close()


def test_a_version_1_journal_is_read_as_is_and_migrated_at_start(path: Path) -> None:
    write_v1(path)
    # Reading changes nothing.
    assert [run.run_id for run in Reader(path, busy_timeout=5).runs()] == ["old"]
    assert check(path).schema_version == 1
    journal = Journal(path, clock=_now)
    journal.start()
    assert journal.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 2
        names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert {"archived_runs", "events_runs", "events_delete_only_archived"} <= names
    assert "events_kind" not in names
    assert Reader(path, busy_timeout=5).last_positions() == {"A": Decimal(3)}
    report = check(path)
    assert report.ok, report.problems
    assert report.schema_version == SCHEMA_VERSION


def test_a_new_journal_can_give_space_back(path: Path) -> None:
    write_runs(path, [RunSpec("r", days_ago(1))])
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental


def test_the_readers_use_the_partial_indexes(path: Path) -> None:
    write_runs(path, [RunSpec("r", days_ago(1), fills=(("A", "1", "0.1"),))])
    reader = Reader(path, busy_timeout=5)
    with reader._connect() as conn:

        def plan(sql: str, *params: Any) -> str:
            return " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))

        assert "events_pnl" in plan(
            "SELECT amount FROM events WHERE kind = 'position_changed' AND ts >= ?", "x"
        )
        assert "events_quotes" in plan(
            "SELECT * FROM events WHERE quote_id IN (?)"
            " AND kind IN ('quote_created', 'quote_replaced')",
            "q",
        )
        assert "events_positions" in plan(
            "SELECT MAX(seq) FROM events WHERE kind = 'position_changed' GROUP BY market"
        )


# -------------------------------------------------------------------------------- runs


def test_runs_lists_stopped_crashed_and_running(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_runs(
        path,
        [
            RunSpec("first", days_ago(3)),
            RunSpec("died", days_ago(2), stopped=False),
        ],
    )
    assert cli("runs", journal=path) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["RUN", "STATUS"]
    assert lines[1].split()[:2] == ["first", "stopped"]
    # Nothing holds the journal: the last run without run_stopped crashed.
    assert lines[2].split()[:2] == ["died", "crashed"]
    assert "1 crashed run(s)" in err

    journal = Journal(path, run_id="live", clock=_now)
    journal.start()
    try:
        # Until its first row is in, the new daemon's run is not listed, and the crashed run
        # before it (recorded by another pid) is still crashed.
        assert cli("runs", "--json", journal=path) == 0
        records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert records[-1]["status"] == "crashed" or records[-1]["run_id"] == "live"
        while "live" not in {run.run_id for run in Reader(path, busy_timeout=5).runs()}:
            time.sleep(0.01)
        assert cli("runs", "--json", journal=path) == 0
        records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(r["run_id"], r["status"]) for r in records] == [
            ("first", "stopped"),
            ("died", "crashed"),
            ("live", "running"),
        ]
        assert records[0]["events"] == 1 + 2 * 5 + 1
    finally:
        assert journal.close()


def test_a_probe_of_the_lock_never_stops_a_daemon_starting(path: Path) -> None:
    write_runs(path, [RunSpec("first", days_ago(1))])
    lock = path.with_name(path.name + ".lock")
    # Someone (`mmbot journal runs`) holds a shared lock at the instant a daemon starts.
    fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    timer = threading.Timer(0.05, lambda: os.close(fd))
    timer.start()
    journal = Journal(path, clock=_now)
    journal.start()
    timer.join()
    assert journal.close()


# ------------------------------------------------------------------------------ summary


def test_summary_of_one_run_and_of_a_run_that_is_not_there(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_runs(
        path,
        [
            RunSpec("a", days_ago(2), rfqs=3, fills=(("A", "1", "0.25"),)),
            RunSpec("b", days_ago(1), rfqs=7),
        ],
    )
    assert cli("summary", "--run", "a", journal=path) == 0
    out = capsys.readouterr().out
    assert "run a" in out
    assert [line.split()[-1] for line in out.splitlines() if line.startswith("RFQs seen")] == ["3"]
    assert "Realised P&L ($, net of fees)" in out
    assert "0.25" in out
    assert cli("summary", "--run", "b", "--json", journal=path) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["rfqs_seen"] == 7
    assert record["run_id"] == "b"
    assert cli("summary", "--run", "nope", journal=path) == 1
    assert "error: no run nope" in capsys.readouterr().err


def test_summary_of_a_run_reads_only_its_rows(path: Path) -> None:
    # Runs interleave with nothing, so a run's rows are one seq range: the summary of a run
    # in the middle counts exactly its own rows.
    write_runs(path, [RunSpec(f"r{i}", days_ago(5 - i), rfqs=i + 1) for i in range(4)])
    reader = Reader(path, busy_timeout=5)
    assert [reader.summary(f"r{i}").rfqs_seen for i in range(4)] == [1, 2, 3, 4]
    assert reader.summary().rfqs_seen == 10


# -------------------------------------------------------------------------------- check


def test_check_passes_a_sound_journal(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_runs(path, [RunSpec("a", days_ago(1), fills=(("A", "1", "0.1"),))])
    assert cli("check", journal=path) == 0
    out = capsys.readouterr().out
    assert f"schema version {SCHEMA_VERSION}" in out
    assert "integrity: ok" in out
    assert out.rstrip().endswith("ok")


def test_check_finds_values_mmbot_did_not_write(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_runs(path, [RunSpec("a", days_ago(1))])
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executemany(
            INSERT,
            [
                _row(days_ago(1), "a", "position_changed", market="A", amount="lots"),
                _row(days_ago(1), "a", "execution", market="A", price="NaN", contracts="1"),
                _row(days_ago(1), "a", "rfq_seen", detail="{not json"),
                ("yesterday", "a", "rfq_seen", *([None] * 9)),
            ],
        )
        conn.commit()
    assert cli("check", journal=path) == 1
    out = capsys.readouterr().out
    assert "2 row(s) with a price, size or amount that is not a finite decimal" in out
    assert "1 row(s) with a detail that is not a JSON object" in out
    assert "1 row(s) with a timestamp not in the journal's format" in out
    # --quick trusts the rows: SQLite's own check only.
    assert cli("check", "--quick", journal=path) == 0
    # The readers name the file and the value instead of raising Decimal's own error.
    with pytest.raises(JournalError, match=r"holds a value mmbot did not write.*lots"):
        Reader(path, busy_timeout=5).realized_pnl_since(MIDNIGHT - timedelta(days=5))
    with pytest.raises(JournalError, match="did not write"):
        Reader(path, busy_timeout=5).executions()


def test_check_reports_a_missing_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("check", journal=tmp_path / "none.sqlite") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no journal at")
    assert len(err.splitlines()) == 1


# ------------------------------------------------------------------------------- backup


async def test_backup_is_consistent_while_the_daemon_writes(path: Path, tmp_path: Path) -> None:
    journal = Journal(path, batch_interval=0.001)
    journal.start()
    stop = asyncio.Event()

    async def keep_writing() -> int:
        n = 0
        while not stop.is_set():
            for _ in range(50):
                journal.record_rfq_seen(
                    rfq_id=f"r{n}", market="M", contracts=Decimal(1), target_cost=None
                )
                n += 1
            await asyncio.sleep(0.001)
        return n

    writer = asyncio.create_task(keep_writing())
    await asyncio.sleep(0.2)
    dest = tmp_path / "backups"
    dest.mkdir()
    report = await asyncio.to_thread(backup, path, dest)
    stop.set()
    await writer
    assert await journal.aclose()
    assert report.path.parent == dest
    assert report.path.name.startswith("journal-")
    assert report.rows > 0
    # A self-contained, sound journal, with a prefix of what was written.
    assert not os.path.exists(f"{report.path}-wal")  # noqa: ASYNC240 - a test, after the copy
    assert check(report.path).ok
    copied = all_rows(report.path)
    original = all_rows(path)
    assert len(copied) == report.rows
    assert all(original[seq] == row for seq, row in copied.items())
    assert sorted(copied) == sorted(original)[: len(copied)]
    assert [p.name for p in dest.iterdir()] == [report.path.name]


def test_backup_never_overwrites(path: Path, tmp_path: Path) -> None:
    write_runs(path, [RunSpec("a", days_ago(1))])
    dest = tmp_path / "copy.sqlite"
    dest.write_text("precious")
    with pytest.raises(JournalError, match="it exists"):
        backup(path, dest)
    assert dest.read_text() == "precious"
    assert cli("backup", str(tmp_path / "nodir" / "x.sqlite"), journal=path) == 1


def test_backup_from_the_command_line(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_runs(path, [RunSpec("a", days_ago(1))])
    assert cli("backup", str(tmp_path / "copy.sqlite"), journal=path) == 0
    assert "backed up" in capsys.readouterr().out
    assert all_rows(tmp_path / "copy.sqlite") == all_rows(path)


# ------------------------------------------------------------------------------ archive


def history(path: Path) -> None:
    """Old closed runs, an old crash, a run that ended today, and the latest (old) run."""
    write_runs(
        path,
        [
            RunSpec("w1", days_ago(30), fills=(("A", "5", "1.00"), ("B", "2", "0.50"))),
            RunSpec("w2", days_ago(20), fills=(("A", "7", "-0.25"),), stopped=False),
            RunSpec("w3", days_ago(10), fills=(("C", "1", "0.10"),)),
            RunSpec("today", NOW - timedelta(hours=3), fills=(("C", "4", "2.00"),)),
            RunSpec("latest", NOW - timedelta(hours=1), rfqs=2),
        ],
    )


def test_archive_moves_closed_runs_and_keeps_what_the_daemon_needs(
    path: Path, tmp_path: Path
) -> None:
    history(path)
    before_rows = all_rows(path)
    before_state = state(path)
    dest = tmp_path / "archive.sqlite"
    report = archive(path, before=days_ago(5, hour=0), dest=dest, clock=_now)
    assert [run.run_id for run in report.runs] == ["w1", "w2", "w3"]
    assert [run.stopped for run in report.runs] == [True, False, True]
    # What the daemon rebuilds is the same.
    assert state(path) == before_state
    kept = all_rows(path)
    archived = all_rows(dest)
    # Every row is somewhere, unchanged; the archive holds the archived runs whole.
    assert {**kept, **archived} == before_rows
    assert {row[2] for row in archived.values()} == {"w1", "w2", "w3"}
    assert archived == {
        seq: row for seq, row in before_rows.items() if row[2] in {"w1", "w2", "w3"}
    }
    # Of the archived runs the live file keeps only the last position of markets B and A
    # (C's last position is today's run's).
    left = [row for row in kept.values() if row[2] in {"w1", "w2", "w3"}]
    assert sorted((row[2], row[3], row[6]) for row in left) == [
        ("w1", "position_changed", "B"),
        ("w2", "position_changed", "A"),
    ]
    assert report.rows_kept == 2
    assert report.rows_moved == sum(
        1 for row in before_rows.values() if row[2] in {"w1", "w2", "w3"}
    )
    runs = {run.run_id: run for run in Reader(path, busy_timeout=5).runs()}
    assert [run_id for run_id in runs] == ["w1", "w2", "w3", "today", "latest"]
    assert runs["w1"].archive == str(dest.resolve())
    assert runs["w2"].stopped_at is None
    assert runs["w2"].archive is not None
    assert runs["today"].archive is None
    # The archive is a journal: its runs, summary and check work.
    assert [run.run_id for run in Reader(dest, busy_timeout=5).runs()] == ["w1", "w2", "w3"]
    assert check(dest).ok
    assert check(path).ok


def test_archive_never_moves_the_latest_run(path: Path, tmp_path: Path) -> None:
    write_runs(path, [RunSpec("old", days_ago(40)), RunSpec("last", days_ago(30))])
    report = archive(path, before=MIDNIGHT, dest=tmp_path / "a.sqlite", clock=_now)
    assert [run.run_id for run in report.runs] == ["old"]
    assert {row[2] for row in all_rows(path).values()} == {"last"}


def test_archive_never_moves_the_running_daemons_run(path: Path, tmp_path: Path) -> None:
    write_runs(path, [RunSpec("old", days_ago(40))])
    journal = Journal(path, run_id="live", clock=lambda: days_ago(35))
    journal.start()
    for i in range(10):
        journal.record_rfq_seen(rfq_id=f"r{i}", market="M", contracts=Decimal(1), target_cost=None)
    try:
        # Until the daemon's first row is in, "old" is the latest run and stays too.
        while "live" not in {run.run_id for run in Reader(path, busy_timeout=5).runs()}:
            time.sleep(0.01)
        report = archive(path, before=MIDNIGHT, dest=tmp_path / "a.sqlite", clock=_now)
        assert [run.run_id for run in report.runs] == ["old"]
        for i in range(10, 20):
            journal.record_rfq_seen(
                rfq_id=f"r{i}", market="M", contracts=Decimal(1), target_cost=None
            )
    finally:
        assert journal.close()
    assert journal.lost == 0
    assert Reader(path, busy_timeout=5).summary("live").rfqs_seen == 20


def test_archive_keeps_todays_pnl_rows_of_a_run_it_may_move(path: Path, tmp_path: Path) -> None:
    write_runs(
        path,
        [
            RunSpec("early", MIDNIGHT + timedelta(hours=1), fills=(("A", "1", "3.00"),) * 3),
            RunSpec("later", NOW - timedelta(minutes=30)),
        ],
    )
    before_state = state(path)
    report = archive(path, max_bytes=0, dest=tmp_path / "a.sqlite", clock=_now)
    assert [run.run_id for run in report.runs] == ["early"]
    assert state(path) == before_state
    assert before_state[0] == Decimal("9.00")
    assert report.rows_kept == 3


def test_archive_twice_is_harmless_and_releases_rows_no_longer_needed(
    path: Path, tmp_path: Path
) -> None:
    history(path)
    dest = tmp_path / "a.sqlite"
    archive(path, before=days_ago(5, hour=0), dest=dest, clock=_now)
    again = archive(path, before=days_ago(5, hour=0), dest=dest, clock=_now)
    assert again.runs == []
    assert again.rows_released == 0
    # A new position in market B makes w1's kept row unnecessary.
    write_runs(path, [RunSpec("newest", NOW - timedelta(minutes=5), fills=(("B", "0", "0"),))])
    third = archive(path, before=days_ago(5, hour=0), dest=dest, clock=_now)
    assert third.rows_released == 1
    assert not [row for row in all_rows(path).values() if row[2] == "w1"]


def test_an_interrupted_archive_is_finished_by_the_next(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    history(path)
    before_rows = all_rows(path)
    dest = tmp_path / "a.sqlite"
    import mmbot.journal.maintenance as maintenance

    real = maintenance._delete_run
    calls = 0

    def crash_after_one(*args: Any, **kwargs: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt  # the operator's ^C, or the host going down
        return real(*args, **kwargs)

    monkeypatch.setattr(maintenance, "_delete_run", crash_after_one)
    with pytest.raises(KeyboardInterrupt):
        archive(path, before=days_ago(5, hour=0), dest=dest, clock=_now, chunk_rows=3)
    monkeypatch.setattr(maintenance, "_delete_run", real)
    report = archive(path, before=days_ago(5, hour=0), dest=dest, clock=_now)
    assert report.runs == []  # already in the ledger; this run only finished deleting
    assert {**all_rows(path), **all_rows(dest)} == before_rows
    assert {row[2] for row in all_rows(path).values()} == {"w1", "w2", "today", "latest"}


def test_an_archive_file_of_another_journal_is_refused_before_anything_is_deleted(
    path: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.sqlite"
    write_runs(other, [RunSpec("x", days_ago(50), rfqs=40), RunSpec("y", days_ago(49))])
    history(path)
    before_rows = all_rows(path)
    with pytest.raises(JournalError, match="another journal's archive"):
        archive(path, before=days_ago(5, hour=0), dest=other, clock=_now)
    assert all_rows(path) == before_rows


def test_archive_refuses_a_cutoff_in_the_future_and_a_second_archive(
    path: Path, tmp_path: Path
) -> None:
    history(path)
    with pytest.raises(JournalError, match="in the future"):
        archive(path, before=NOW + timedelta(days=1), clock=_now)
    lock = path.with_name(path.name + ".archive.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(JournalError, match="another `mmbot journal archive`"):
            archive(path, before=days_ago(5, hour=0), clock=_now)
    finally:
        os.close(fd)


def test_archive_gives_the_space_back(path: Path, tmp_path: Path) -> None:
    write_runs(path, [RunSpec(f"r{i}", days_ago(40 - i), rfqs=2000) for i in range(5)])
    size = path.stat().st_size
    report = archive(path, before=MIDNIGHT, dest=tmp_path / "a.sqlite", clock=_now)
    assert len(report.runs) == 4
    assert report.used_bytes_after < report.used_bytes_before / 3
    assert path.stat().st_size < size / 3


def test_archive_of_a_version_1_journal_migrates_it_and_keeps_its_space(
    path: Path, tmp_path: Path
) -> None:
    write_v1(path)
    write_runs(path, [RunSpec("next", days_ago(1))])
    report = archive(path, before=days_ago(2, hour=0), dest=tmp_path / "a.sqlite", clock=_now)
    assert [run.run_id for run in report.runs] == ["old"]
    assert any("new rows reuse it" in note for note in report.notes)
    assert Reader(path, busy_timeout=5).last_positions() == {"A": Decimal(3)}


def test_archive_from_the_command_line(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history(path)
    assert cli("archive", "--before", "2026-06-01", "--json", journal=path) == 0
    record = json.loads(capsys.readouterr().out)
    # The default archive file sits beside the journal, named by the cutoff.
    expected = default_archive_path(path, datetime(2026, 6, 1, tzinfo=UTC))
    assert expected.name == "journal-archive-2026-06-01.sqlite"
    assert record["archive"] == str(expected)
    assert [run["run_id"] for run in record["runs"]] == ["w1", "w2", "w3"]
    assert cli("archive", "--before", "2999-01-01", journal=path) == 1
    assert "in the future" in capsys.readouterr().err
    assert cli("archive", "--before", "yesterday", journal=path) == 2
    # Days count back from the real clock's midnight, long after these runs.
    assert cli("archive", "--older-than", "1", journal=path) == 0
    assert "archived 1 run(s)" in capsys.readouterr().out
    assert cli("archive", "--older-than", "1", journal=path) == 0
    assert "nothing to archive" in capsys.readouterr().out


# A run's events: (market, position, realised change) fills, at hours from its start.
fills = st.lists(
    st.tuples(
        st.sampled_from(["A", "B", "C"]),
        st.integers(-5, 5).map(str),
        st.integers(-300, 300).map(lambda cents: str(Decimal(cents) / 100)),
    ),
    max_size=3,
)
histories = st.lists(
    st.tuples(st.integers(0, 6 * 24), fills, st.booleans()), min_size=1, max_size=7
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@pytest.mark.slow
@given(runs=histories, cutoff_hours=st.integers(0, 7 * 24), by_size=st.booleans())
def test_no_archive_loses_a_row_or_changes_what_the_daemon_rebuilds(
    tmp_path_factory: pytest.TempPathFactory,
    runs: list[tuple[int, list[tuple[str, str, str]], bool]],
    cutoff_hours: int,
    by_size: bool,
) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    path, dest = tmp / "journal.sqlite", tmp / "archive.sqlite"
    start = NOW - timedelta(days=6)
    specs = []
    for i, (gap_hours, run_fills, stopped) in enumerate(runs):
        start += timedelta(hours=gap_hours / len(runs))
        specs.append(RunSpec(f"r{i}", start, rfqs=2, fills=tuple(run_fills), stopped=stopped))
    write_runs(path, specs)
    before_rows = all_rows(path)
    before_state = state(path)
    cutoff = NOW - timedelta(hours=cutoff_hours)
    if by_size:
        report = archive(path, max_bytes=0, dest=dest, clock=_now, chunk_rows=4)
    else:
        report = archive(path, before=cutoff, dest=dest, clock=_now, chunk_rows=4)
    after_rows = all_rows(path)
    archived = all_rows(dest) if dest.exists() else {}
    assert {**after_rows, **archived} == before_rows
    assert state(path) == before_state
    moved = {run.run_id for run in report.runs}
    assert f"r{len(specs) - 1}" not in moved  # never the latest run
    for seq, row in before_rows.items():
        if row[2] in moved:
            assert seq in archived
            if not by_size:
                assert row[1] < format_ts(cutoff)
        else:
            assert seq in after_rows


# ----------------------------------------------------------- a journal from real dry runs


@pytest.mark.slow
def test_the_subcommands_on_a_journal_written_by_dry_runs(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    env = subprocess_env(MMBOT_LOG__LEVEL="WARNING")
    base = [sys.executable, "-m", "mmbot"]
    for seconds in ("6", "4"):
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            [
                *base,
                "run",
                "--dry-run",
                "--duration",
                seconds,
                "--dry_run.rfq_rate",
                "600",
                "--journal.path",
                str(path),
                "--metrics.enabled",
                "false",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - our own interpreter and module
            [*base, "journal", *args, "--journal.path", str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    listed = run("runs", "--json")
    assert listed.returncode == 0, listed.stderr
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["status"] for r in records] == ["stopped", "stopped"]
    first = records[0]["run_id"]
    summary = run("summary", "--run", first, "--json")
    assert summary.returncode == 0, summary.stderr
    assert json.loads(summary.stdout)["rfqs_seen"] > 0
    checked = run("check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    copy = tmp_path / "backup.sqlite"
    saved = run("backup", str(copy))
    assert saved.returncode == 0, saved.stderr
    assert all_rows(copy) == all_rows(path)
    reader = Reader(path, busy_timeout=5)
    positions = reader.last_positions()
    today = reader.realized_pnl_since(datetime.now(UTC).replace(hour=0, minute=0, second=0))
    moved = run("archive", "--max-size", "0", "--json")
    assert moved.returncode == 0, moved.stderr
    record = json.loads(moved.stdout)
    assert [r["run_id"] for r in record["runs"]] == [first]
    assert reader.last_positions() == positions
    assert reader.realized_pnl_since(datetime.now(UTC).replace(hour=0, minute=0, second=0)) == today
    assert {**all_rows(path), **all_rows(Path(record["archive"]))} == all_rows(copy)
    statuses = [json.loads(line)["status"] for line in run("runs", "--json").stdout.splitlines()]
    assert statuses == ["archived", "stopped"]


def test_the_pace_follows_a_daemon_starting_and_stopping(monkeypatch: pytest.MonkeyPatch) -> None:
    import mmbot.journal.maintenance as maintenance

    clock = [100.0]
    monkeypatch.setattr(maintenance.time, "monotonic", lambda: clock[0])
    slept: list[float] = []
    monkeypatch.setattr(maintenance.time, "sleep", slept.append)
    answers = [1.0, 0.1]
    asked: list[float] = []

    def busy() -> float:
        asked.append(clock[0])
        return answers.pop(0)

    pace = maintenance._Pacer(0.005, busy)
    clock[0] += 0.2  # 200 ms of work, no daemon: only the fixed pause
    pace()
    assert slept == [0.005]
    clock[0] += 1.0  # a daemon took the journal: the next pause is nine times the work
    pace()
    assert asked == [100.2, 101.2]
    assert slept[-1] == pytest.approx(9.0)
    with pytest.raises(ValueError, match="busy"):
        archive(Path("/nonexistent"), before=NOW, busy=0.0, clock=_now)
