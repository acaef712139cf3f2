"""``mmbot run`` with a journal it cannot use: one ``error:`` line and exit 1, no traceback."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mmbot.journal import SCHEMA_VERSION, Journal
from tests.support.env import subprocess_env

REPO = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, journal: Path, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(ignore_case=False, PYTHONPATH=str(REPO), **env_extra)
    # --journal.path given explicitly: a dry-run otherwise journals into a temporary file.
    return subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [
            sys.executable,
            "-m",
            "mmbot",
            "run",
            "--dry-run",
            "--duration",
            "10",
            "--journal.path",
            str(journal),
            "--metrics.enabled",
            "false",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _the_error_line(done: subprocess.CompletedProcess[str]) -> str:
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


def test_a_journal_path_that_is_a_directory_is_one_error_line(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    journal.mkdir()
    line = _the_error_line(_run(tmp_path, journal))
    assert str(journal) in line
    assert "is a directory" in line


@pytest.mark.slow
def test_a_second_daemon_on_a_journal_in_use_is_one_error_line(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    running = Journal(journal)
    running.start()
    try:
        line = _the_error_line(_run(tmp_path, journal))
    finally:
        assert running.close()
    assert str(journal) in line
    assert f"pid {os.getpid()}" in line
    assert "another mmbot is running on this journal" in line
    # The refused daemon recorded nothing.
    assert [run.run_id for run in running.runs()] == [running.run_id]


def test_a_journal_written_by_a_newer_mmbot_is_one_error_line(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    earlier = Journal(journal)
    earlier.start()
    assert earlier.close()
    newer = SCHEMA_VERSION + 1
    with contextlib.closing(sqlite3.connect(journal)) as conn, conn:
        conn.execute("INSERT INTO schema_version VALUES (?, 'later')", (newer,))
    line = _the_error_line(_run(tmp_path, journal))
    assert str(journal) in line
    assert f"schema version {newer}, written by a newer mmbot" in line
    # Refused before anything was written: still the newer schema, still one run.
    with contextlib.closing(sqlite3.connect(journal)) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (newer,)
        assert conn.execute("SELECT COUNT(DISTINCT run_id) FROM events").fetchone() == (1,)


def test_a_kill_switch_nobody_could_create_stops_the_start(tmp_path: Path) -> None:
    # Found when the daemon starts, not when an operator reaches for the switch and
    # `touch` fails: fail closed, naming the key.
    done = _run(
        tmp_path,
        tmp_path / "journal.sqlite",
        MMBOT_RISK__KILL_SWITCH_FILE=str(tmp_path / "no-such-dir" / "STOP"),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "error: invalid configuration" in done.stderr
    assert "risk.kill_switch_file" in done.stderr
    assert "no-such-dir does not exist" in done.stderr
    assert not (tmp_path / "journal.sqlite").exists()
