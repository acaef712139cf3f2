"""The journal's size per RFQ and the cost of archiving it under a running daemon.

Two measurements::

    python -m benchmarks.journal size [--rfqs N]
    python -m benchmarks.journal archive [--gb 1.0] [--measure-seconds 60] [--rounds 2]

``size`` records a synthetic flow through the real :class:`mmbot.journal.Journal` (the same
rows the daemon writes for the same events) and prints the file's bytes per RFQ.

``archive`` builds a journal of ``--gb`` gigabytes of closed runs dated before today, then
runs the benchmark harness's daemon phase (``mmbot bench``'s ``daemon_low``: the daemon
against the mock exchange at 100 RFQ/s) on a copy of it twice per round: once left alone,
once while ``mmbot journal archive --before <today>`` works on it. The archive starts with
the daemon's warm-up at the pace it takes beside a running daemon, is still going when the
measured window closes (it is then stopped: an interrupted archive is safe), so the whole
window is measured under it. Last, it times a whole archive of a copy with no daemon
running. It prints each round's RFQ-to-quote p99 alone and while archiving, the change of
their means, and the full archive's time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from random import Random
from typing import Any

from mmbot.journal import Journal

_MARKETS = [f"KXMOCK-26DEC{day:02d}-T{strike}" for day in range(1, 11) for strike in range(90, 100)]
_STRATEGY = "fixed_spread"


class _Clock:
    """A settable clock, so a synthetic run can be dated in the past."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def _record_flow(journal: Journal, clock: _Clock, rfqs: int, rng: Random, rate: float) -> None:
    """Record ``rfqs`` RFQs as the daemon would: seen, skipped or quoted, some filled."""
    step = timedelta(seconds=1 / rate)
    positions: dict[str, Decimal] = {}
    for _ in range(rfqs):
        clock.now += step
        rfq_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        market = rng.choice(_MARKETS)
        contracts = Decimal(rng.choice((1, 2, 3, 5, 10, 20, 50))).quantize(Decimal("0.01"))
        journal.record_rfq_seen(rfq_id=rfq_id, market=market, contracts=contracts, target_cost=None)
        if rng.random() < 0.15:
            journal.record_rfq_skipped(rfq_id=rfq_id, market=market, reason="max_exposure_dollars")
            continue
        mid = Decimal(rng.randrange(5, 95)) / 100
        yes_bid = (mid - Decimal("0.02")).quantize(Decimal("0.0001"))
        no_bid = (1 - mid - Decimal("0.02")).quantize(Decimal("0.0001"))
        quote_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        journal.record_quote_created(
            rfq_id=rfq_id,
            quote_id=quote_id,
            market=market,
            yes_bid=yes_bid,
            no_bid=no_bid,
            contracts=contracts,
            strategy=_STRATEGY,
            reference=mid.quantize(Decimal("0.0001")),
        )
        if rng.random() < 0.1:
            side = rng.choice(("yes", "no"))
            price = yes_bid if side == "yes" else no_bid
            fill = {
                "quote_id": quote_id,
                "rfq_id": rfq_id,
                "market": market,
                "side": side,
                "price": price,
                "contracts": contracts,
            }
            journal.record_accept_received(**fill)  # type: ignore[arg-type]
            journal.record_confirm_sent(**fill)  # type: ignore[arg-type]
            journal.record_execution(**fill, order_id=str(uuid.UUID(int=rng.getrandbits(128))))  # type: ignore[arg-type]
            delta = contracts if side == "yes" else -contracts
            positions[market] = positions.get(market, Decimal(0)) + delta
            journal.record_position_changed(
                market=market,
                contracts=positions[market],
                realized_pnl_change=Decimal(rng.randrange(-50, 50)) / 100,
                quote_id=quote_id,
                reason="execution",
            )
        else:
            journal.record_quote_deleted(
                quote_id=quote_id, rfq_id=rfq_id, market=market, reason="ttl"
            )


def write_runs(path: Path, *, runs: int, rfqs_per_run: int, start: datetime, seed: int = 0) -> int:
    """Append ``runs`` closed runs of synthetic flow to the journal at ``path``; rows written."""
    rng = Random(seed)  # noqa: S311 - synthetic data, not secrets
    clock = _Clock(start)
    written = 0
    for _ in range(runs):
        journal = Journal(path, clock=clock, batch_rows=20_000, batch_interval=0.01)
        journal.start(detail={"mode": "benchmark"})
        _record_flow(journal, clock, rfqs_per_run, rng, rate=100.0)
        if not journal.close(timeout=600):
            raise RuntimeError(f"the journal lost rows: {journal.last_error}")
        written += journal.written
        clock.now += timedelta(minutes=5)
    return written


def _checkpointed_size(path: Path) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def measure_size(rfqs: int) -> dict[str, Any]:
    """Bytes per RFQ of a journal holding ``rfqs`` RFQs of synthetic flow."""
    with tempfile.TemporaryDirectory(prefix="mmbot-journal-size-") as tmp:
        path = Path(tmp) / "journal.sqlite"
        started = time.monotonic()
        rows = write_runs(path, runs=1, rfqs_per_run=rfqs, start=datetime(2026, 1, 5, tzinfo=UTC))
        seconds = time.monotonic() - started
        used = _checkpointed_size(path)
        file_size = path.stat().st_size
    return {
        "rfqs": rfqs,
        "rows": rows,
        "rows_per_rfq": round(rows / rfqs, 3),
        "bytes": used,
        "file_bytes": file_size,
        "bytes_per_rfq": round(used / rfqs, 1),
        "bytes_per_row": round(used / rows, 1),
        "seconds_to_write": round(seconds, 1),
    }


def build_gigabyte_journal(path: Path, gigabytes: float) -> dict[str, Any]:
    """A journal of about ``gigabytes`` GB of closed runs, every one dated before today."""
    probe = measure_size(20_000)
    rfqs = int(gigabytes * 1e9 / probe["bytes_per_rfq"])
    runs = 20
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    # Spread over the days before today, at 100 RFQ/s.
    start -= timedelta(seconds=rfqs / 100.0 + runs * 300 + 3600)
    began = time.monotonic()
    rows = write_runs(path, runs=runs, rfqs_per_run=rfqs // runs, start=start, seed=1)
    return {
        "rfqs": rfqs,
        "rows": rows,
        "runs": runs,
        "bytes": path.stat().st_size,
        "seconds_to_build": round(time.monotonic() - began, 1),
    }


def _archive_argv(journal: Path, *extra: str) -> list[str]:
    """``mmbot journal archive`` of every run of ``journal`` that ended before today."""
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    return [
        *(sys.executable, "-m", "mmbot", "journal", "archive", "--before", today),
        *extra,
        *("--journal.path", str(journal)),
    ]


@contextlib.contextmanager
def _archiving(journal: Path, log: Path) -> Iterator[dict[str, Any]]:
    """``mmbot journal archive`` on ``journal`` in the background until the block ends.

    Still going then, it is stopped: an interrupted archive is safe, the next one finishes it.
    """
    out = log.open("wb")
    began = time.monotonic()
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        _archive_argv(journal),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    outcome: dict[str, Any] = {}
    try:
        yield outcome
    finally:
        outcome["finished"] = proc.poll() is not None
        if proc.poll() is None:
            proc.terminate()
        proc.wait(60)
        out.close()
        outcome["seconds_running"] = round(time.monotonic() - began, 1)
        text = log.read_text(errors="replace").splitlines()
        outcome["runs_copied"] = sum(1 for line in text if line.startswith("copied run"))
        outcome["runs_archived"] = sum(1 for line in text if line.startswith("archived run "))


# Per round: the daemon alone; while an archive copies runs out (its first stage); while
# one deletes them from the live file and gives the space back (the rest).
_KINDS = ("idle", "copying", "deleting")


class _Stop(Exception):
    """Ends an archive where its deletes would begin."""


def _copy_only(journal: Path) -> None:
    """Take ``journal`` through an archive's copy (runs copied and in the ledger), as an
    archive interrupted there would leave it, so the next one only deletes."""
    from mmbot.journal import maintenance

    def stop(*_args: object, **_kwargs: object) -> int:
        raise _Stop

    real = maintenance._delete_run
    maintenance._delete_run = stop  # type: ignore[assignment]
    try:
        maintenance.archive(journal, before=datetime.now(UTC).replace(hour=0, minute=0))
    except _Stop:
        pass
    finally:
        maintenance._delete_run = real


def time_full_archive(seed: Path, work: Path) -> dict[str, Any]:
    """How long archiving the whole journal takes with no daemon running (full speed)."""
    journal = work / "journal-full.sqlite"
    shutil.copyfile(seed, journal)
    began = time.monotonic()
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        _archive_argv(journal, "--json"),
        capture_output=True,
        check=True,
    )
    seconds = time.monotonic() - began
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    for leftover in work.glob("journal-full*"):
        leftover.unlink()
    return {
        "seconds": round(seconds, 1),
        "rows_moved": report["rows_moved"],
        "file_bytes_before": report["file_bytes_before"],
        "file_bytes_after": report["file_bytes_after"],
    }


def measure_archive(gigabytes: float, measure_seconds: float, rounds: int) -> dict[str, Any]:
    """RFQ-to-quote latency of the daemon on a large journal, left alone and while archived."""
    import httpx

    from mmbot.bench import harness
    from mmbot.bench.launch import _start_exchange, _write_key
    from mmbot.bench.options import BenchOptions

    options = BenchOptions(warmup_seconds=5.0, measure_seconds=measure_seconds, soak=False)
    spec = next(s for s in options.phase_specs() if s.name == "daemon_low")
    results: dict[str, Any] = {"phases": []}
    with tempfile.TemporaryDirectory(prefix="mmbot-bench-archive-") as tmp:
        work = Path(tmp)
        seed = work / "seed.sqlite"
        print(f"[archive] building a {gigabytes:g} GB journal ...", file=sys.stderr, flush=True)
        results["journal"] = build_gigabyte_journal(seed, gigabytes)
        print(f"[archive] built: {results['journal']}", file=sys.stderr, flush=True)
        keys = {harness.DAEMON_KEY: work / "daemon.pem"}
        _write_key(keys[harness.DAEMON_KEY])
        exchange, rest_url, ws_url, control, token = _start_exchange(options, work, work, keys)
        try:
            client = httpx.Client(timeout=30.0, headers={"Authorization": f"Bearer {token}"})
            ctx = harness._Context(
                options, work, work, control, rest_url, ws_url, keys, client, sys.stderr
            )
            for round_no in range(rounds):
                for kind in _KINDS:
                    tag = f"{kind}-{round_no}"
                    phase = replace(spec, name=tag)
                    journal = work / f"journal-{tag}.sqlite"
                    shutil.copyfile(seed, journal)
                    if kind == "deleting":
                        _copy_only(journal)
                    print(f"[archive] phase {tag}", file=sys.stderr, flush=True)
                    outcome: dict[str, Any] = {}
                    if kind == "idle":
                        result = harness._run_phase(ctx, phase)
                    else:
                        # Started with the daemon's warm-up and still going when the
                        # measured window closes (at its pace beside a daemon, 1 GB takes
                        # far longer than a window).
                        with _archiving(journal, work / f"archive-{tag}.log") as outcome:
                            result = harness._run_phase(ctx, phase)
                    entry = {
                        "phase": tag,
                        "kind": kind,
                        "rfq_to_quote": result["rfq_to_quote"],
                        "rfqs": result["rfqs"],
                        "exit_code": result["exit_code"],
                        "archive": dict(outcome) or None,
                    }
                    results["phases"].append(entry)
                    print(f"[archive] {json.dumps(entry)}", file=sys.stderr, flush=True)
                    for leftover in work.glob(f"journal-{tag}*"):
                        leftover.unlink()
            client.close()
        finally:
            exchange.stop()
        print("[archive] timing a full archive with no daemon ...", file=sys.stderr, flush=True)
        results["full_archive_no_daemon"] = time_full_archive(seed, work)
    return results


def _summary(results: dict[str, Any]) -> str:
    """Each round's p99 alone, while copying and while deleting, and the change of means."""
    lines = []
    rounds: dict[str, dict[str, float]] = {}
    for phase in results["phases"]:
        if phase["rfq_to_quote"]:
            round_no = phase["phase"].rsplit("-", 1)[-1]
            rounds.setdefault(round_no, {})[phase["kind"]] = phase["rfq_to_quote"]["p99_ms"]
    complete = {key: row for key, row in sorted(rounds.items()) if len(row) == len(_KINDS)}
    for round_no, row in complete.items():
        lines.append(
            f"round {round_no}: p99 {row['idle']:.3f} ms alone, "
            + ", ".join(
                f"{row[kind]:.3f} ms {kind} ({(row[kind] / row['idle'] - 1) * 100:+.1f}%)"
                for kind in _KINDS[1:]
            )
        )
    if complete:
        mean = {
            kind: sum(row[kind] for row in complete.values()) / len(complete) for kind in _KINDS
        }
        lines.append(
            f"mean p99 over {len(complete)} round(s): {mean['idle']:.3f} ms alone, "
            + ", ".join(
                f"{mean[kind]:.3f} ms {kind} ({(mean[kind] / mean['idle'] - 1) * 100:+.1f}%)"
                for kind in _KINDS[1:]
            )
        )
    full = results.get("full_archive_no_daemon")
    if full:
        lines.append(
            f"full archive with no daemon: {full['rows_moved']:,} rows, "
            f"{full['file_bytes_before'] / 1e9:.2f} GB -> {full['file_bytes_after'] / 1e6:.1f} MB"
            f" in {full['seconds']} s"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen measurement and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.journal", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    size = sub.add_parser("size", help="bytes per RFQ")
    size.add_argument("--rfqs", type=int, default=200_000)
    archive = sub.add_parser("archive", help="RFQ-to-quote p99 while a journal is archived")
    archive.add_argument("--gb", type=float, default=1.0)
    archive.add_argument("--measure-seconds", type=float, default=60.0)
    archive.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    if args.what == "size":
        print(json.dumps(measure_size(args.rfqs), indent=2))
        return 0
    results = measure_archive(args.gb, args.measure_seconds, args.rounds)
    print(json.dumps(results, indent=2))
    print(_summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
