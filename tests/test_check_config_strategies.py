"""check-config builds the strategies as `mmbot run` does, and refuses what run refuses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mmbot.cli import main
from mmbot.logs import clear_registered_secrets, reset_logging
from tests.support.env import clear_mmbot_env


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    clear_mmbot_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMBOT_LOG__FORMAT", "json")
    monkeypatch.setenv("MMBOT_METRICS__ENABLED", "false")
    yield
    reset_logging()
    clear_registered_secrets()


def _problems(err: str) -> list[str]:
    lines = err.splitlines()
    start = lines.index("error: invalid configuration")
    return [line for line in lines[start + 1 :] if line.startswith("  ")]


def _check_and_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str
) -> tuple[list[str], list[str]]:
    config = tmp_path / "mmbot.toml"
    config.write_text(toml, encoding="utf-8")
    capsys.readouterr()
    assert main(["check-config", str(config)]) == 1
    checked = _problems(capsys.readouterr().err)
    assert main(["--config", str(config), "run", "--dry-run", "--duration", "1"]) == 1
    ran = _problems(capsys.readouterr().err)
    return checked, ran


def test_check_config_refuses_a_misspelt_default_parameter_as_run_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checked, ran = _check_and_run(
        tmp_path,
        capsys,
        '[strategies]\ndefault = "fixed_spread"\nparams = { half_sprad = "0.02" }\n',
    )
    assert checked == ran
    [problem] = checked
    assert problem.startswith("  strategies.default, strategies.params: strategy 'fixed_spread'")
    assert "half_sprad: unknown parameter (did you mean 'half_spread'?)" in problem


def test_check_config_refuses_a_default_strategy_module_that_does_not_exist_as_run_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checked, ran = _check_and_run(
        tmp_path, capsys, '[strategies]\ndefault = "no_such_package.edge:Edge"\n'
    )
    assert checked == ran
    [problem] = checked
    assert "strategies.default" in problem
    assert "no module named 'no_such_package.edge'" in problem


def test_check_config_refuses_an_unused_default_that_run_would_build_for_a_route(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every route names its strategy, so no route uses the default: it is still built.
    toml = (
        '[strategies]\ndefault = "fixed_spred"\n\n'
        '[[strategies.routes]]\nmatch = ["*"]\nstrategy = "fixed_spread"\n'
    )
    checked, ran = _check_and_run(tmp_path, capsys, toml)
    assert checked == ran
    [problem] = checked
    assert "unknown strategy 'fixed_spred'" in problem
    assert "(did you mean 'fixed_spread'?)" in problem


def test_check_config_refuses_a_misspelt_route_parameter_as_run_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = (
        '[[strategies.routes]]\nmatch = ["KX*"]\nstrategy = "size_aware"\n'
        "params = { max_contract = 400 }\n"
    )
    checked, ran = _check_and_run(tmp_path, capsys, toml)
    assert checked == ran
    [problem] = checked
    assert problem.startswith("  strategies.routes[0]: strategy 'size_aware'")
    assert "max_contract: unknown parameter" in problem
