"""The recorder: one row per RFQ from what the daemon saw, did and heard, written as Parquet.

The recorder is driven here as the daemon drives it (``seen``, ``priced``, the journal's
rows, the sampler reading mids as horizons fall due) with a clock the test moves, then
closed; what it wrote is read back with pyarrow alone.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from mmbot.cli.run import shadow_records
from mmbot.config import Settings
from mmbot.journal.schema import Row
from mmbot.kalshi.models import Market
from mmbot.observability import Metrics
from mmbot.quoting.pricing import Decline
from mmbot.research import schema
from mmbot.research.recorder import Recorder, RecorderStats
from tests.support.env import subprocess_env
from tests.support.factories import kalshi_market, market_view, rfq

D = Decimal


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _MarketData:
    """The two reads the sampler makes of market data, over a dict the test changes."""

    def __init__(self) -> None:
        self.markets: dict[str, Market] = {}

    def is_fresh(self, ticker: str) -> bool:
        return ticker in self.markets

    def market(self, ticker: str) -> Market | None:
        return self.markets.get(ticker)

    async def ensure_fresh(self, ticker: str) -> Market | None:
        return self.markets.get(ticker)


def _row(kind: str, **fields: Any) -> Row:
    values: dict[str, Any] = {
        "ts": "2026-12-03T10:00:01.000000Z",
        "run_id": "run-1",
        "kind": kind,
        "rfq_id": None,
        "quote_id": None,
        "market": None,
        "side": None,
        "price": None,
        "contracts": None,
        "amount": None,
        "reason": None,
        "detail": None,
    }
    values.update(fields)
    return Row(**values)


def _recorder(tmp_path: Path, clock: _Clock, *, mode: str = "live") -> tuple[Recorder, _MarketData]:
    market_data = _MarketData()
    recorder = Recorder(
        tmp_path / "rec",
        horizons=(1, 10),
        run={"run_id": "run-1", "mode": mode, "seed": 5},
        mode=mode,
        wall=lambda: 1_796_000_000.0,
        monotonic=clock,
    )
    recorder.attach(market_data)  # type: ignore[arg-type]
    recorder.start()
    return recorder, market_data


def _read(directory: Path, table: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(directory.glob(f"{table}-*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


async def test_a_quoted_rfq_is_recorded_with_its_view_decision_outcome_and_markouts(
    tmp_path: Path,
) -> None:
    clock = _Clock()
    recorder, market_data = _recorder(tmp_path, clock)
    market_data.markets["KXRAIN-25"] = kalshi_market("KXRAIN-25", "0.40", "0.44")
    the_rfq = rfq("100")
    view = market_view("0.40", "0.44", position=D(3))
    recorder.seen(the_rfq)
    recorder.priced(the_rfq, "fixed_spread", view, 7, (D("0.40"), D("0.56"), view, None))
    for row in (
        _row("quote_created", rfq_id="rfq-1", quote_id="q1", market="KXRAIN-25"),
        _row("quote_replaced", rfq_id="rfq-1", quote_id="q2", market="KXRAIN-25"),
        _row(
            "accept_received",
            rfq_id="rfq-1",
            quote_id="q2",
            side="no",
            price="0.55",
            contracts="100",
        ),
        _row("confirm_sent", rfq_id="rfq-1", quote_id="q2"),
        _row(
            "execution",
            quote_id="q2",
            side="no",
            price="0.55",
            contracts="60",
            amount="0.42",
        ),
    ):
        recorder.on_row(row)
    # The mid moves before each horizon falls due.
    clock.now += 1
    market_data.markets["KXRAIN-25"] = kalshi_market("KXRAIN-25", "0.41", "0.45")
    await recorder._sample()
    clock.now += 9
    market_data.markets["KXRAIN-25"] = kalshi_market("KXRAIN-25", "0.30", "0.36")
    await recorder._sample()
    await recorder.close()

    (row,) = _read(tmp_path / "rec", "rfqs")
    assert row["rfq_id"] == "rfq-1"
    assert row["contracts"] == D(100)
    assert (row["view_yes_bid"], row["view_yes_ask"], row["view_mid"]) == (
        D("0.40"),
        D("0.44"),
        D("0.42"),
    )
    assert row["view_position"] == D(3)
    assert row["open_quotes"] == 7
    assert row["strategy"] == "fixed_spread"
    assert (row["decision"], row["yes_bid"], row["no_bid"]) == ("quoted", D("0.40"), D("0.56"))
    assert (row["quote_id"], row["requotes"]) == ("q1", 1)
    # The execution names only its quote (the replacement): found through the quote id.
    assert (row["accepted_side"], row["accepted_price"], row["accepted_contracts"]) == (
        "no",
        D("0.55"),
        D(100),
    )
    assert (row["confirm"], row["executed_contracts"], row["fee"]) == (
        "confirmed",
        D(60),
        D("0.42"),
    )
    assert row["close_reason"] == "executed"
    assert (row["mid_1s"], row["mid_10s"]) == (D("0.43"), D("0.33"))
    assert "fair_value" not in row  # a live recording has no such column
    assert recorder._by_quote == {}  # quote ids are forgotten with their row


async def test_every_file_carries_the_schema_version_the_horizons_and_the_run(
    tmp_path: Path,
) -> None:
    clock = _Clock()
    recorder, _ = _recorder(tmp_path, clock)
    recorder.seen(rfq("5"))
    await recorder.close()
    (path,) = (tmp_path / "rec").glob("rfqs-*.parquet")
    meta = pq.read_schema(path).metadata
    assert meta[b"mmbot.recording.version"] == str(schema.VERSION).encode()
    assert meta[b"mmbot.recording.table"] == b"rfqs"
    assert meta[b"mmbot.recording.horizons"] == b"1,10"
    assert b'"seed":5' in meta[b"mmbot.run"]
    assert not list((tmp_path / "rec").glob("*.part"))


async def test_skips_shadow_quotes_and_settlements_are_recorded_as_such(tmp_path: Path) -> None:
    clock = _Clock()
    recorder, _ = _recorder(tmp_path, clock, mode="shadow")
    view = market_view()
    skipped = rfq("10").model_copy(update={"id": "rfq-a"})
    shadowed = rfq("10").model_copy(update={"id": "rfq-b"})
    recorder.seen(skipped)
    recorder.priced(skipped, "fixed_spread", view, 0, Decline("strategy_declined"))
    recorder.seen(shadowed)
    recorder.priced(shadowed, "fixed_spread", view, 0, (D("0.39"), D("0.55"), view, 2.0))
    recorder.on_row(_row("rfq_skipped", rfq_id="rfq-b", reason="shadow"))
    recorder.on_row(
        _row(
            "position_changed",
            market="KXRAIN-25",
            reason="settled",
            detail='{"yes_value": "1"}',
        )
    )
    await recorder.close()
    rows = {row["rfq_id"]: row for row in _read(tmp_path / "rec", "rfqs")}
    assert (rows["rfq-a"]["decision"], rows["rfq-a"]["reason"]) == ("skipped", "strategy_declined")
    assert (rows["rfq-b"]["decision"], rows["rfq-b"]["yes_bid"]) == ("shadow", D("0.39"))
    assert rows["rfq-b"]["ttl_s"] == 2.0
    (settled,) = _read(tmp_path / "rec", "settlements")
    assert (settled["market"], settled["yes_value"]) == ("KXRAIN-25", D(1))


async def test_a_recording_that_cannot_be_written_is_counted_and_trading_goes_on(
    tmp_path: Path,
) -> None:
    clock = _Clock()
    recorder, _ = _recorder(tmp_path, clock)
    recorder.seen(rfq("5"))
    # The directory goes away under the recorder (a disk unmounted, say).
    (tmp_path / "rec").rmdir()
    (tmp_path / "rec").write_text("not a directory")
    await recorder.close()
    assert recorder.stats.dropped == 1
    assert recorder.stats.errors == 1


@pytest.mark.slow
def test_a_recording_path_that_cannot_be_a_directory_stops_check_config_and_run(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = tmp_path / "c.toml"
    config.write_text(f'[recording]\nenabled = true\npath = "{blocker / "rec"}"\n')
    for command in (["check-config"], ["run", "--dry-run", "--duration", "1"]):
        done = subprocess.run(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "mmbot", *command, "--config", str(config)],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
        assert done.returncode != 0, command
        assert "recording.path" in done.stderr, (command, done.stderr)
        assert "is not a directory" in done.stderr, (command, done.stderr)


def test_the_recorder_never_blocks_the_loop_on_its_writes(tmp_path: Path) -> None:
    # seen/priced/on_row only append: a thousand RFQs leave nothing written until a flush.
    clock = _Clock()
    recorder, _ = _recorder(tmp_path, clock)
    for number in range(1000):
        recorder.seen(rfq("1").model_copy(update={"id": f"r{number}"}))
    assert not list((tmp_path / "rec").glob("rfqs-*"))
    asyncio.run(recorder.close())
    assert recorder.stats.rows == 1000


def test_a_shadow_run_records_unless_recording_was_turned_off_outright() -> None:
    shadow = Settings(run={"shadow": True})
    assert shadow_records(shadow, {}).recording.enabled
    # Set to false by the operator (file, environment or flag): respected.
    off = Settings(run={"shadow": True}, recording={"enabled": False})
    assert not shadow_records(off, {"recording.enabled": "config file"}).recording.enabled
    # Not a shadow run: recording stays as configured.
    assert not shadow_records(Settings(), {}).recording.enabled


def test_the_recording_counts_are_exported_while_a_run_records() -> None:
    metrics = Metrics()
    text = metrics.render()[0].decode()
    assert "mmbot_recording_enabled 0.0" in text
    stats = RecorderStats(rows=12, dropped=3)
    metrics.bind_recording(stats)
    text = metrics.render()[0].decode()
    assert "mmbot_recording_enabled 1.0" in text
    assert "mmbot_recording_rows_total 12.0" in text
    assert "mmbot_recording_rows_dropped_total 3.0" in text
