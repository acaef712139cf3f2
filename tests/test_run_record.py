"""What a run records about itself, and where a dry-run keeps its journal.

Every run's ``run_started`` row holds its resolved configuration (secrets redacted), each
route's strategy and resolved parameters, the dry-run seed and the build; ``mmbot journal
runs --json`` shows them. A dry-run keeps its journal and says where.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mmbot import __version__
from mmbot.buildinfo import build_commit
from mmbot.cli import main
from mmbot.cli.run import DRY_RUN_JOURNAL_DIR, build_router, run_record
from mmbot.config import REDACTED, load_settings
from mmbot.journal.readers import Reader
from mmbot.strategy import load_strategy_class
from tests.support.env import clear_mmbot_env
from tests.support.keys import KEY_ID

REPO = Path(__file__).resolve().parents[1]
DRY_RUN_CONFIG = REPO / "config" / "dry-run.toml"
# A short dry-run: no metrics port, few markets, a handful of RFQs.
QUICK = [
    "--duration",
    "2",
    "--metrics.enabled",
    "false",
    "--dry_run.markets",
    "3",
    "--dry_run.rfq_rate",
    "5",
]


def _dry_run(*extra: str) -> int:
    return main(["--config", str(DRY_RUN_CONFIG), "run", "--dry-run", *QUICK, *extra])


def _runs_json(journal: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["journal", "runs", "--json", "--journal.path", str(journal)]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


@pytest.mark.slow  # two dry-run daemons in this process, two seconds each
def test_two_dry_runs_with_different_seeds_and_parameters_can_be_told_apart(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    rsa_key_file: Path,
) -> None:
    clear_mmbot_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    # Credentials configured (a dry-run does not use them): none may reach the journal.
    monkeypatch.setenv("MMBOT_KALSHI__KEY_ID", KEY_ID)
    monkeypatch.setenv("MMBOT_KALSHI__PRIVATE_KEY_PATH", str(rsa_key_file))
    journal = tmp_path / "journal.sqlite"
    common = ["--journal.path", str(journal)]
    assert _dry_run(*common, "--dry_run.seed", "11") == 0, capsys.readouterr().err
    monkeypatch.setenv("MMBOT_STRATEGIES__PARAMS", '{"half_spread": "0.03"}')
    assert _dry_run(*common, "--dry_run.seed", "12") == 0, capsys.readouterr().err

    first, second = _runs_json(journal, capsys)
    for run, seed in ((first, 11), (second, 12)):
        assert run["mode"] == "dry-run"
        assert run["seed"] == seed
        assert run["version"] == __version__
        assert run["commit"] == build_commit()
        assert run["config"]["dry_run"]["seed"] == seed
        assert run["config"]["journal"]["path"] == str(journal)
        kalshi = run["config"]["kalshi"]
        assert kalshi["key_id"] == kalshi["private_key_path"] == REDACTED
    # dry-run.toml routes MOCK-FED* to size_aware and the rest to the default.
    size_aware, fixed = first["strategies"]
    assert size_aware["match"] == ["MOCK-FED*"]
    assert size_aware["strategy"] == "size_aware"
    size_aware_class = load_strategy_class("size_aware")
    assert size_aware["class"] == f"{size_aware_class.__module__}:SizeAware"
    assert size_aware["params"]["max_contracts"] == "400"
    assert size_aware["params"]["max_age_seconds"] == 2.0  # a default, resolved
    assert (fixed["strategy"], fixed["match"]) == ("fixed_spread", ["*"])
    assert fixed["params"]["half_spread"] == "0.02"
    assert second["strategies"][1]["params"]["half_spread"] == "0.03"
    # The readers give the same record to Python callers.
    started = [run.started for run in Reader(journal, busy_timeout=5.0).runs()]
    assert [s["seed"] for s in started] == [11, 12]

    raw = b"".join(p.read_bytes() for p in tmp_path.glob("journal.sqlite*"))
    for secret in (KEY_ID, str(rsa_key_file), rsa_key_file.name):
        assert secret.encode() not in raw
    assert b"PRIVATE KEY" not in raw


def test_a_live_run_records_no_seed_and_no_key_material(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rsa_key_file: Path
) -> None:
    clear_mmbot_env(monkeypatch)
    settings = load_settings(
        DRY_RUN_CONFIG,
        {"kalshi.key_id": KEY_ID, "kalshi.private_key_path": str(rsa_key_file)},
    )
    record = run_record(settings, build_router(settings), False, tmp_path / "j.sqlite")
    assert record["mode"] == "live"
    assert record["seed"] is None
    assert record["config"]["kalshi"]["key_id"] == REDACTED
    assert record["config"]["kalshi"]["private_key_path"] == REDACTED
    assert record["config"]["journal"]["path"] == str(tmp_path / "j.sqlite")
    text = json.dumps(record)
    assert KEY_ID not in text
    assert str(rsa_key_file) not in text


@pytest.mark.slow  # a dry-run daemon in this process for two seconds
def test_a_dry_run_keeps_its_journal_under_the_working_directory_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clear_mmbot_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert _dry_run("--log.format", "console") == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    [kept] = list((tmp_path / DRY_RUN_JOURNAL_DIR).glob("*.sqlite"))
    assert f"mmbot: journal kept at {kept}" in out
    [run] = _runs_json(kept, capsys)
    assert kept.name == f"{run['run_id']}.sqlite"
    assert run["status"] == "stopped"
    assert run["seed"] == 7  # dry-run.toml's


@pytest.mark.slow  # a dry-run daemon in this process for two seconds
def test_a_dry_run_with_json_logs_names_its_journal_in_the_run_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clear_mmbot_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert _dry_run("--log.format", "json") == 0, capsys.readouterr().err
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    [summary] = [event for event in events if event.get("event") == "run_summary"]
    [kept] = list((tmp_path / DRY_RUN_JOURNAL_DIR).glob("*.sqlite"))
    assert summary["journal"] == str(kept)
