"""``mmbot synthesize`` and ``mmbot compare`` over recordings as well as replay RESULTs."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmbot.cli import main
from mmbot.research import schema
from mmbot.research.compare import UNPRICED, from_recording
from mmbot.research.recording import load_recording
from tests.support.env import clear_mmbot_env

_EDGE = Decimal("0.02")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_mmbot_env(monkeypatch)


def _synthesize(out: Path, *extra: str) -> None:
    assert main(["synthesize", "--rfqs", "300", "--out", str(out), "--seed", "5", *extra]) == 0


def _as_quoted(synthetic: Path, out: Path) -> Path:
    """The synthetic recording turned into a run's: every other RFQ quoted, every 4th filled.

    A quoted row bids ``_EDGE`` under each side's view mid, by strategy ``fixed_spread``;
    the rows in between, and those too near 0 or 1 for both bids, are skipped.
    """
    (path,) = sorted(synthetic.glob("rfqs-*.parquet"))
    table = pq.read_table(path)
    rows = table.to_pylist()
    for index, row in enumerate(rows):
        row["strategy"] = "fixed_spread"
        if index % 2 or not _EDGE < row["view_mid"] < 1 - _EDGE:
            row["decision"], row["reason"] = "skipped", "max_contracts_per_rfq"
            continue
        row["decision"] = "quoted"
        row["yes_bid"] = row["view_mid"] - _EDGE
        row["no_bid"] = 1 - row["view_mid"] - _EDGE
        if index % 4 == 0:
            row["executed_contracts"] = Decimal("3.00")
    out.mkdir()
    doctored = pa.Table.from_pylist(rows, schema=table.schema)
    pq.write_table(doctored, out / path.name)
    return out


def _expected_markout(rows: list[dict[str, Any]], horizon: int) -> Decimal:
    edges = []
    for row in rows:
        mid = row[schema.mid_column(horizon)]
        edges.append(((mid - row["yes_bid"]) + ((1 - mid) - row["no_bid"])) / 2)
    return sum(edges, Decimal(0)) / len(edges)


def test_synthesize_writes_the_rfqs_asked_for_and_says_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "syn"
    _synthesize(out, "--markets", "4", "--horizons", "60,1,5", "--hvm-fraction", "0")
    printed = capsys.readouterr().out
    assert "wrote 300 synthetic RFQs" in printed
    assert str(out) in printed
    assert " s" in printed.rsplit("in ", 1)[-1]
    recording = load_recording([out])
    assert recording.rfqs.num_rows == 300
    assert recording.horizons == (1, 5, 60)
    assert recording.has_fair_value
    assert set(recording.rfqs.column("decision").to_pylist()) == {"synthetic"}
    assert len(set(recording.rfqs.column("market").to_pylist())) <= 4


def test_synthesize_is_deterministic(tmp_path: Path) -> None:
    _synthesize(tmp_path / "a")
    _synthesize(tmp_path / "b")
    a, b = (load_recording([tmp_path / n]).rfqs for n in ("a", "b"))
    assert a.column("rfq_id").to_pylist() == b.column("rfq_id").to_pylist()
    assert a.column("mid_60s").to_pylist() == b.column("mid_60s").to_pylist()


@pytest.mark.parametrize(
    "argv",
    [
        ["--rfqs", "x"],
        ["--rfqs", "-1"],
        ["--rfqs", "10", "--horizons", "1,1"],
        ["--rfqs", "10", "--horizons", "0,5"],
        ["--rfqs", "10", "--hvm-fraction", "2"],
        ["--rfqs", "10", "--rfq-rate", "0"],
        ["--rfqs", "10", "--markets", "0"],
    ],
)
def test_synthesize_refuses_bad_flags(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["synthesize", *argv, "--out", str(tmp_path / "x")]) == 2
    assert "mmbot synthesize: error: argument --" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_from_recording_aggregates_the_recorded_quotes_per_strategy_and_market(
    tmp_path: Path,
) -> None:
    _synthesize(tmp_path / "syn")
    recording = load_recording([_as_quoted(tmp_path / "syn", tmp_path / "run")])
    side = from_recording(recording, "run")
    rows = recording.rfqs.to_pylist()
    quoted = [r for r in rows if r["decision"] == "quoted"]
    filled = [r for r in rows if r["executed_contracts"]]
    assert list(side.labels) == ["fixed_spread"]
    total = side.labels["fixed_spread"]
    assert (total.quotes, total.fills) == (len(quoted), len(filled))
    assert total.fill_rate == (Decimal(len(filled)) / len(quoted)).quantize(Decimal("0.000001"))
    assert total.realized_pnl is None
    assert total.total_pnl is None
    for horizon in recording.horizons:
        assert total.markout[horizon] == _expected_markout(quoted, horizon)
    markets = side.markets["fixed_spread"]
    assert set(markets) == {r["market"] for r in rows}
    assert sum(m.quotes for m in markets.values()) == len(quoted)
    market = quoted[0]["market"]
    own = [r for r in quoted if r["market"] == market]
    assert markets[market].quotes == len(own)
    assert markets[market].markout[60] == _expected_markout(own, 60).quantize(Decimal("1e-6"))
    assert any("not computed" in note for note in side.notes)


def test_an_unpriced_synthetic_recording_has_no_quotes_and_says_so(tmp_path: Path) -> None:
    _synthesize(tmp_path / "syn")
    side = from_recording(load_recording([tmp_path / "syn"]), "syn")
    assert list(side.labels) == [UNPRICED]
    assert side.labels[UNPRICED].quotes == 0
    assert any("no quotes recorded (decisions: synthetic 300)" in n for n in side.notes)


def test_compare_takes_a_recording_and_a_replay_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _synthesize(tmp_path / "syn")
    run = _as_quoted(tmp_path / "syn", tmp_path / "run")
    result = tmp_path / "result"
    argv = ["replay", str(run), "--strategy", "fixed_spread", "--fill-model", "markout"]
    assert main([*argv, "--jobs", "1", "--out", str(result)]) == 0
    capsys.readouterr()

    assert main(["compare", str(run), str(result)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"A: {run}\n   note: a recording")
    assert "realized and total P&L are not computed" in text
    assert "fixed_spread - all markets" in text

    assert main(["compare", str(run), str(result), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["a_notes"]
    assert document["b_notes"] == []
    (total,) = [r for r in document["rows"] if r["market"] is None]
    assert total["label"] == "fixed_spread"
    assert 100 < total["a"]["quotes"] <= 150
    assert total["a"]["realized_pnl"] is None
    assert total["b"]["realized_pnl"] is not None
    assert total["b_minus_a"]["realized_pnl"] is None


def test_compare_names_an_argument_that_is_neither_result_nor_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _synthesize(tmp_path / "syn")
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "syn"), str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: {tmp_path / 'empty'}: not a replay RESULT")
