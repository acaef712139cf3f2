"""The shipped example configuration must stay valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmbot.cli import main
from mmbot.cli.run import build_router
from mmbot.config import load_settings_with_sources
from tests.support.env import clear_mmbot_env

EXAMPLES = sorted((Path(__file__).parent.parent / "config").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_mmbot_env(monkeypatch, ignore_case=False)
    settings, sources = load_settings_with_sources(path)
    assert f"config file {path}" in sources.values()
    assert settings.kalshi.write_bucket_capacity >= 10
    # The strategies it names exist and accept its parameters.
    build_router(settings)


def _host_paths(tmp_path: Path) -> list[str]:
    """Flags pointing the journal and kill switch at ``tmp_path``.

    The production example names the image's directories (/var/lib/mmbot, /var/run/mmbot),
    which check-config rightly refuses on a host that lacks them.
    """
    return [
        "--journal.path",
        str(tmp_path / "journal.sqlite"),
        "--risk.kill_switch_file",
        str(tmp_path / "STOP"),
    ]


@pytest.mark.parametrize("name", ["dry-run.toml", "production.example.toml"])
def test_shipped_configs_pass_check_config(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(__file__).parent.parent / "config" / name
    argv = ["--config", str(path), "check-config", *_host_paths(tmp_path)]
    assert main(argv) == 0, capsys.readouterr().err


def test_check_config_takes_the_file_as_an_argument(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clear_mmbot_env(monkeypatch, ignore_case=False)
    path = Path(__file__).parent.parent / "config" / "production.example.toml"
    # The command the operations issue names, with this host's paths.
    assert main(["check-config", str(path), *_host_paths(tmp_path)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"# config file {path}" in out
    other = Path(__file__).parent.parent / "config" / "dry-run.toml"
    assert main(["--config", str(other), "check-config", str(path)]) == 2
    assert "two configuration files" in capsys.readouterr().err


def test_there_is_an_example() -> None:
    assert EXAMPLES
