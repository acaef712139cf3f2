"""Fields a log pipeline relies on: run_id, version and pid on every line of ``mmbot run``,
the status and the exit summary as JSON events when logs are JSON, the kill switch's
level, and RFQs skipped counted per reason in the status event.

The daemon runs in-process against the mock exchange (``tests/support/daemon.py``), with
its JSON log lines captured in a StringIO.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

import mmbot
from mmbot.logs import (
    bind_process_fields,
    configure_logging,
    configured_format,
    flush_output,
    get_logger,
    process_fields,
    reset_logging,
)
from mmbot.quoting.stats import MAX_REASONS, OTHER_REASON, count_reason
from tests.support.daemon import FLAT, TEN, Daemons, Running, Venue
from tests.support.polling import eventually

FIELDS = ("run_id", "version", "pid")


def _events(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line written so far, each parsed as JSON (a line that is not fails the test)."""
    assert flush_output(), "output did not drain"
    events = []
    for line in stream.getvalue().splitlines():
        event = orjson.loads(line)
        assert isinstance(event, dict), line
        events.append(event)
    return events


def _named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [event for event in events if event.get("event") == name]


# ----------------------------------------------------------------------------- unit


def test_process_fields_reach_structlog_stdlib_and_other_threads() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    bind_process_fields(run_id="run-1", version="9.9", pid=42)
    get_logger("mmbot.test").info("from_structlog")
    logging.getLogger("aiohttp.access").warning("from stdlib")
    # A thread of its own, as the journal writer is: contextvars would not reach it.
    thread = threading.Thread(target=lambda: get_logger("mmbot.journal").info("from_thread"))
    thread.start()
    thread.join(5)
    # A field the event names itself wins over the process-wide one.
    get_logger("mmbot.test").info("own_run_id", run_id="explicit")
    events = _events(stream)
    assert [e["event"] for e in events] == [
        "from_structlog",
        "from stdlib",
        "from_thread",
        "own_run_id",
    ]
    for event in events[:3]:
        assert (event["run_id"], event["version"], event["pid"]) == ("run-1", "9.9", 42)
    assert events[3]["run_id"] == "explicit"
    assert events[3]["pid"] == 42


def test_reset_logging_forgets_the_process_fields_and_the_format() -> None:
    configure_logging("INFO", "json", io.StringIO())
    bind_process_fields(run_id="run-1")
    assert configured_format() == "json"
    reset_logging()
    assert process_fields() == {}
    assert configured_format() is None


def test_count_reason_counts_and_caps_the_number_of_reasons() -> None:
    counts: dict[str, int] = {}
    count_reason(counts, "stale_market_data")
    count_reason(counts, "stale_market_data")
    assert counts == {"stale_market_data": 2}
    for index in range(MAX_REASONS * 3):
        count_reason(counts, f"reason_{index}")
    assert len(counts) == MAX_REASONS + 1
    assert counts["stale_market_data"] == 2
    assert counts[OTHER_REASON] == MAX_REASONS * 3 - (MAX_REASONS - 1)
    # Reasons already counted keep their own count once the cap is reached.
    count_reason(counts, "stale_market_data")
    assert counts["stale_market_data"] == 3


# ----------------------------------------------------------------------------- in-process daemon


@pytest.fixture
def json_logs(daemons: Daemons) -> io.StringIO:
    """Logs of the test (the daemon and the in-process mock) as JSON lines in a StringIO."""
    # After the daemons fixture, which configures console logs.
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    return stream


def _stdout_events(daemon: Running) -> list[dict[str, Any]]:
    """The JSON events the daemon wrote to stdout: every line of it must be one."""
    return _events(daemon.out)


@dataclass
class ShortRun:
    """A finished run: the daemon, its log events and its stdout events."""

    daemon: Running
    logs: list[dict[str, Any]]
    stdout: list[dict[str, Any]]


@pytest.fixture
async def short_run(venue: Venue, daemons: Daemons, json_logs: io.StringIO) -> ShortRun:
    """A run with JSON logs, a status event every 0.1 s and one RFQ skipped as unrouted."""
    # Only the first market is routed: an RFQ on any other one is skipped.
    markets = venue.markets(2)
    settings = daemons.settings(
        run={"status_interval_seconds": 0.1},
        strategies={"routes": [{"match": [markets[0].ticker], "strategy": FLAT}]},
    )
    async with daemons.running(settings) as daemon:
        rfq_id = await venue.requester.create_rfq(markets[1].ticker, contracts=TEN)
        skipped = await daemon.row("rfq_skipped", rfq_id=rfq_id)
        assert skipped["reason"] == "unrouted_market"
        # A foreign library's stdlib logger on a thread of its own, which neither contextvars
        # nor a bound structlog logger would reach.
        foreign = logging.getLogger("aiohttp.client")
        thread = threading.Thread(target=foreign.warning, args=("foreign line",))
        thread.start()
        thread.join(5)

        def skip_in_status() -> bool:
            statuses = _named(_stdout_events(daemon), "status")
            return any(e["skipped"].get("unrouted_market") for e in statuses)

        await eventually(skip_in_status, "a status event counting the skip")
    return ShortRun(daemon, _events(json_logs), _stdout_events(daemon))


async def test_every_line_of_a_run_carries_run_id_version_and_pid(short_run: ShortRun) -> None:
    daemon = short_run.daemon
    events = short_run.logs + short_run.stdout
    assert len(short_run.logs) > 5, short_run.logs
    assert short_run.stdout, "no status event on stdout"
    missing = [e for e in events if any(field not in e for field in FIELDS)]
    assert missing == []
    assert {e["run_id"] for e in events} == {daemon.run_id}
    assert {e["version"] for e in events} == {mmbot.__version__}
    assert {e["pid"] for e in events} == {os.getpid()}
    # The foreign line (aiohttp's logger, another thread) is among them.
    (foreign,) = _named(events, "foreign line")
    assert foreign["logger"] == "aiohttp.client"


async def test_status_and_summary_are_json_events_with_skips_per_reason(
    short_run: ShortRun,
) -> None:
    daemon = short_run.daemon
    # Where the status line always went (stdout), now as JSON events shaped like log lines.
    statuses = _named(short_run.stdout, "status")
    assert {"timestamp", "level", "logger"} <= statuses[0].keys()
    periodic = [e for e in statuses if not e["final"]]
    assert periodic
    assert {e["level"] for e in periodic} == {"info"}
    assert periodic[-1]["skipped"] == {"unrouted_market": 1}
    assert periodic[-1]["rfqs_skipped"] == 1
    (final,) = [e for e in statuses if e["final"]]
    assert final["skipped"] == {"unrouted_market": 1}
    assert {"rfqs_seen", "open_quotes", "exposure", "total_pnl", "fees"} <= final.keys()
    (summary,) = _named(short_run.stdout, "run_summary")
    assert summary["exit_code"] == 0
    assert summary["run_id"] == daemon.run_id
    assert summary["rfqs_skipped_by_reason"] == {"unrouted_market": 1}
    assert isinstance(summary["realized_pnl"], str)
    (target,) = _named(short_run.stdout, "daemon_target")
    assert target["journal"] == str(daemon.journal)
    # Nothing of the status or the summary went to stdout as plain text.
    assert "seen," not in daemon.out.getvalue()
    assert "Quotes created" not in daemon.out.getvalue()
    (started,) = _named(short_run.logs, "daemon_started")
    assert started["kill_switch_file"] is None


async def test_with_console_logs_status_and_summary_stay_human_lines(
    venue: Venue, daemons: Daemons
) -> None:
    # The daemons fixture configures console logs, as on a terminal.
    assert configured_format() == "console"
    async with daemons.running(daemons.settings(run={"status_interval_seconds": 0.1})) as daemon:
        await eventually(lambda: "seen," in daemon.out.getvalue(), "a status line")
    text = daemon.out.getvalue()
    assert "Quotes created" in text


@pytest.mark.slow
async def test_a_kill_switch_file_is_a_warning_an_unreadable_one_an_error(
    venue: Venue, daemons: Daemons, json_logs: io.StringIO, tmp_path: Path
) -> None:
    kill = tmp_path / "KILL"
    settings = daemons.settings(risk={"kill_switch_file": str(kill)})
    async with daemons.running(settings) as daemon:
        kill.touch()
        await eventually(lambda: daemon.engine.risk.kill_switch, "the kill switch")
        await eventually(
            lambda: _named(_events(json_logs), "kill_switch_cancelled_quotes"), "the sweep"
        )
        kill.unlink()
        await eventually(lambda: not daemon.engine.risk.kill_switch, "the switch off")
    events = _events(json_logs)
    (started,) = _named(events, "daemon_started")
    assert started["kill_switch_file"] == str(kill)
    (on,) = _named(events, "kill_switch_on")
    assert (on["level"], on["cause"]) == ("warning", "file_present")
    assert {e["level"] for e in _named(events, "kill_switch_cancelled_quotes")} == {"warning"}

    # A file that cannot be looked at (a symlink loop) fails closed: that is an error.
    loop = tmp_path / "LOOP"
    loop.symlink_to(loop)
    json_logs.seek(0)
    json_logs.truncate()
    settings = daemons.settings(risk={"kill_switch_file": str(loop)})
    async with daemons.running(settings) as daemon:
        await eventually(lambda: daemon.engine.risk.kill_switch, "the kill switch")
    events = _events(json_logs)
    (unreadable, *_) = _named(events, "kill_switch_unreadable")
    assert unreadable["level"] == "error"
    (on,) = _named(events, "kill_switch_on")
    assert (on["level"], on["cause"]) == ("error", "file_unreadable")
