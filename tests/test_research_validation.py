"""Replay against ground truth: a recorded dry-run, replayed, must give back its own fills.

A dry-run against the mock exchange records every RFQ; replaying the same strategy and
parameters over that recording with the ``recorded`` fill model must reproduce the run's
fill count and realised P&L (net of fees) exactly, as the journal booked them. The
recording's ``fair_value`` column (dry-run only) lets the replay report markouts against
the mock's hidden fair value beside those against the reference mid.
"""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest

from mmbot.cli import run as runcli
from mmbot.config import load_settings
from mmbot.journal.readers import Reader
from mmbot.research.recording import load_recording
from mmbot.research.replay import FillModel, flow_of, replay

pytestmark = pytest.mark.slow

CONFIG = """
[strategies]
default = "fixed_spread"
params = {{ half_spread = "0.02" }}

[recording]
enabled = true
path = "{recordings}"
horizons_seconds = [1, 3]
rotate_seconds = 2

[dry_run]
rfq_rate = 20
seed = 7

[journal]
path = "{journal}"

[metrics]
enabled = false

[log]
level = "warning"
"""


async def test_replaying_a_recorded_dry_run_reproduces_its_fills_and_realised_pnl(
    tmp_path: Path,
) -> None:
    config = tmp_path / "research.toml"
    journal_path = tmp_path / "journal.sqlite"
    recordings = tmp_path / "recordings"
    config.write_text(CONFIG.format(recordings=recordings, journal=journal_path))
    settings = load_settings(config)

    code = await runcli.run_daemon(
        settings,
        dry_run=True,
        duration=12,
        sources={"journal.path": str(config)},
        out=io.StringIO(),
    )
    assert code == 0

    run = Reader(journal_path, busy_timeout=5.0).summary()
    assert run.executions > 0, "the dry-run must fill something for the test to mean anything"

    recording = load_recording([recordings])
    assert recording.has_fair_value
    assert recording.rfqs.num_rows == run.rfqs_seen
    # The recording holds what the journal booked: every execution and its fee.
    executed = [c for c in recording.rfqs.column("executed_contracts").to_pylist() if c]
    assert len(executed) == run.executions
    fees = [f for f in recording.rfqs.column("fee").to_pylist() if f is not None]
    assert sum(fees, Decimal(0)) == run.fees
    flow = flow_of(recording)
    router = runcli.build_router(settings, dry_run=True)
    result = replay(flow, "fixed_spread", router, settings, FillModel("recorded"))

    assert result.summary["fills"] == run.executions
    assert Decimal(result.summary["realized_pnl"]) == run.realized_pnl
    # Both markouts are reported: against the reference mid and the mock's fair value.
    assert result.summary["markout"]["1"] is not None
    assert result.summary["fair_markout"] is not None


async def test_a_recorded_dry_run_carries_the_run_that_made_it(tmp_path: Path) -> None:
    config = tmp_path / "research.toml"
    recordings = tmp_path / "recordings"
    config.write_text(CONFIG.format(recordings=recordings, journal=tmp_path / "j.sqlite"))
    settings = load_settings(config)
    code = await runcli.run_daemon(
        settings, dry_run=True, duration=3, sources={"journal.path": "x"}, out=io.StringIO()
    )
    assert code == 0
    recording = load_recording([recordings])
    (run,) = recording.runs
    assert run["mode"] == "dry-run"
    assert run["seed"] == 7
    assert run["strategies"][0]["params"]["half_spread"] == "0.02"
    assert recording.horizons == (1, 3)
