"""``mmbot journal``: list runs, summarise one, check, back up and archive the journal.

The journal is ``journal.path`` from the configuration (``--journal.path`` to name another
file, such as an archive). Every subcommand works while the daemon runs, reads nothing
from the network and needs no key. Failures print one ``error:`` line and exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from mmbot.cli.ops import _fail, _print_json, _print_table, _quiet_default_logging, _text
from mmbot.config import Settings
from mmbot.journal import SCHEMA_VERSION, JournalError, RunRow, format_summary
from mmbot.journal.files import lock_holder
from mmbot.journal.maintenance import archive, backup, check
from mmbot.journal.readers import Reader

__all__ = ["register"]

_SIZE = re.compile(r"(?i)^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
# Fields of a run_started row that `journal runs --json` shows for each run.
_RUN_IDENTITY = ("mode", "version", "commit", "seed", "strategies", "config")
# Beside a running daemon the archive works a tenth of the time. On 2 cores any work on
# the other core slows the daemon, even at idle CPU priority; measured with
# benchmarks/journal.py, an archive working flat out nearly doubled the daemon's
# RFQ-to-quote p99, and one working a quarter of the time raised it by a quarter.
_PACE_WHILE_RUNNING = 0.1


def _date(text: str) -> datetime:
    """A UTC midnight from ``YYYY-MM-DD``."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _days(text: str) -> int:
    try:
        days = int(text.removesuffix("d"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if days < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more days, got {text!r}")
    return days


def _size(text: str) -> int:
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a size such as 500MB or 2GB, got {text!r}")
    return int(float(match[1]) * _UNITS[match[2].lower()])


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}")
    return value


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
) -> None:
    """Add ``mmbot journal`` and its subcommands."""
    journal = subparsers.add_parser(
        "journal", help="list, summarise, check, back up and archive the journal"
    )
    sub = journal.add_subparsers(dest="journal_command", required=True, metavar="COMMAND")

    runs = sub.add_parser(
        "runs", parents=parents, help="list runs; a run that never stopped cleanly is crashed"
    )
    runs.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    runs.set_defaults(func=_command(_runs))

    summary = sub.add_parser("summary", parents=parents, help="counts and totals of one run")
    summary.add_argument("--run", metavar="ID", help="the run (default: every run in the file)")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summary.set_defaults(func=_command(_summary))

    checking = sub.add_parser(
        "check", parents=parents, help="integrity, schema version and every row's values"
    )
    checking.add_argument(
        "--quick", action="store_true", help="SQLite's quick_check and no row scan"
    )
    checking.add_argument("--json", action="store_true", help="print JSON instead of text")
    checking.set_defaults(func=_command(_check))

    saving = sub.add_parser(
        "backup", parents=parents, help="copy a consistent snapshot, while the daemon runs"
    )
    saving.add_argument(
        "dest", metavar="PATH", type=Path, help="a new file, or a directory for a dated one"
    )
    saving.set_defaults(func=_command(_backup))

    moving = sub.add_parser(
        "archive",
        parents=parents,
        help="move closed runs to an archive file and keep the live file small",
    )
    which = moving.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--before",
        metavar="DATE",
        type=_date,
        help="runs that ended before this UTC date (YYYY-MM-DD)",
    )
    which.add_argument(
        "--older-than",
        metavar="DAYS",
        type=_days,
        help="runs that ended before UTC midnight DAYS days ago (0: today's midnight)",
    )
    which.add_argument(
        "--max-size",
        metavar="SIZE",
        type=_size,
        help="the oldest closed runs until the live rows fit in SIZE (e.g. 2GB)",
    )
    moving.add_argument(
        "--to",
        metavar="PATH",
        type=Path,
        help="the archive file (default: <journal>-archive-<date> beside it; appended to)",
    )
    moving.add_argument(
        "--pace",
        metavar="FRACTION",
        type=_fraction,
        help="share of the time the archive works, sleeping the rest (default: "
        f"{_PACE_WHILE_RUNNING:g} while a daemon runs on the journal, else 1)",
    )
    moving.add_argument("--json", action="store_true", help="print JSON instead of text")
    moving.set_defaults(func=_command(_archive))


Handler = Callable[[argparse.Namespace, Path], int]


def _command(handler: Handler) -> Callable[[argparse.Namespace, Settings], int]:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        _quiet_default_logging(args, settings)
        try:
            return handler(args, settings.journal.path)
        except JournalError as exc:
            _fail(str(exc))
            return 1

    return run


def _status(run: RunRow, latest: str | None, holder: int | None) -> str:
    if run.archive is not None:
        return "archived"
    if run.stopped_at is not None:
        return "stopped"
    # The lock holder's run, once its first row is in: a daemon that has just taken the
    # lock has not written it yet, and the run before it then still shows as crashed.
    if run.run_id == latest and holder is not None and run.pid in (holder, None):
        return "running"
    return "crashed"


def _runs(args: argparse.Namespace, path: Path) -> int:
    runs = Reader(path, busy_timeout=5.0).runs()
    holder = lock_holder(path)
    live = [run for run in runs if run.archive is None]
    latest = live[-1].run_id if live else None
    out = sys.stdout
    if args.json:
        for run in runs:
            _print_json(
                {
                    "run_id": run.run_id,
                    "status": _status(run, latest, holder),
                    "started_at": run.started_at.isoformat(),
                    "stopped_at": run.stopped_at.isoformat() if run.stopped_at else None,
                    "last_at": run.last_at.isoformat(),
                    "stop_reason": run.stop_reason,
                    "events": run.events,
                    "archive": run.archive,
                    # What the run recorded about itself at start (null when unknown): what
                    # tells two runs apart.
                    **{key: run.started.get(key) for key in _RUN_IDENTITY},
                },
                out,
            )
        return 0
    rows = [
        [
            run.run_id,
            _status(run, latest, holder),
            _text(run.started_at),
            _text(run.stopped_at or run.last_at),
            str(run.events),
            run.stop_reason or ("-" if run.archive is None else run.archive),
        ]
        for run in runs
    ]
    _print_table(["RUN", "STATUS", "STARTED", "ENDED", "EVENTS", "REASON/ARCHIVE"], rows, out)
    crashed = sum(1 for run in runs if _status(run, latest, holder) == "crashed")
    if crashed:
        print(
            f"{crashed} crashed run(s): they never recorded run_stopped (killed, or the host "
            "went down); their last rows are as far as their record goes",
            file=sys.stderr,
        )
    return 0


def _summary(args: argparse.Namespace, path: Path) -> int:
    reader = Reader(path, busy_timeout=5.0)
    if args.run is not None:
        found = {run.run_id: run for run in reader.runs()}
        run = found.get(args.run)
        if run is None:
            raise JournalError(f"no run {args.run} in {path} (`mmbot journal runs` lists them)")
        if run.archive is not None:
            raise JournalError(
                f"run {args.run} was archived to {run.archive}: "
                f"`mmbot journal summary --run {args.run} --journal.path {run.archive}`"
            )
    summary = reader.summary(args.run)
    if args.json:
        _print_json(dict(vars(summary)), sys.stdout)
    else:
        sys.stdout.write(format_summary(summary))
    return 0


def _check(args: argparse.Namespace, path: Path) -> int:
    report = check(path, quick=args.quick)
    if args.json:
        record: dict[str, Any] = dict(vars(report))
        record["path"] = str(report.path)
        record["ok"] = report.ok
        _print_json(record, sys.stdout)
        return 0 if report.ok else 1
    print(f"journal {path}")
    print(f"schema version {report.schema_version} (this mmbot: up to {SCHEMA_VERSION})")
    print(f"integrity: {report.integrity}")
    print(f"{report.rows} row(s), {report.runs} run(s), {report.archived_runs} archived")
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(f"problem: {problem}")
    print("ok" if report.ok else f"{len(report.problems)} problem(s)")
    return 0 if report.ok else 1


def _yield_cpu() -> None:
    """Run the rest of this process at idle CPU priority, behind the daemon."""
    # SCHED_IDLE: the scheduler runs this process only when no other wants the CPU, so a
    # backup or an archive never delays the daemon's next quote (Linux; elsewhere nice 19).
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)


def _backup(args: argparse.Namespace, path: Path) -> int:
    _yield_cpu()
    report = backup(path, args.dest)
    print(
        f"backed up {path} to {report.path}: {report.rows} row(s), "
        f"{report.bytes / 1e6:.1f} MB in {report.seconds:.1f}s"
    )
    return 0


def _auto_pace(path: Path) -> Callable[[], float]:
    """Full speed with no daemon to make way for, paced while one holds the journal."""

    # Asked again as the archive goes, so a daemon started meanwhile is made way for too.
    def pace() -> float:
        return 1.0 if lock_holder(path) is None else _PACE_WHILE_RUNNING

    return pace


def _archive(args: argparse.Namespace, path: Path) -> int:
    _yield_cpu()
    before: datetime | None = args.before
    if args.older_than is not None:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        before = today - timedelta(days=args.older_than)
    progress = None if args.json else (lambda text: print(text, file=sys.stderr))
    busy = args.pace if args.pace is not None else _auto_pace(path)
    report = archive(
        path,
        before=before,
        max_bytes=args.max_size,
        dest=args.to,
        progress=progress,
        busy=busy,
    )
    if args.json:
        record: dict[str, Any] = dict(vars(report))
        record["journal"] = str(report.journal)
        record["archive"] = str(report.archive) if report.archive else None
        record["runs"] = [vars(run) for run in report.runs]
        record["seconds"] = round(report.seconds, 3)
        _print_json(record, sys.stdout)
        return 0
    if not report.runs and not report.rows_released:
        print(f"nothing to archive in {path}")
    if report.runs:
        print(
            f"archived {len(report.runs)} run(s), {report.rows_moved} row(s), to {report.archive}"
        )
    if report.rows_kept:
        print(
            f"kept {report.rows_kept} of their row(s) in the live file too: today's P&L and "
            "each market's last position are rebuilt from them"
        )
    if report.rows_released:
        print(f"released {report.rows_released} kept row(s) no longer needed")
    print(
        f"live rows: {report.used_bytes_before / 1e6:.1f} MB -> "
        f"{report.used_bytes_after / 1e6:.1f} MB; file: {report.file_bytes_before / 1e6:.1f} MB"
        f" -> {report.file_bytes_after / 1e6:.1f} MB ({report.seconds:.1f}s)"
    )
    for note in report.notes:
        print(f"note: {note}")
    return 0
