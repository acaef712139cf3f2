"""Tests for the mmbot CLI: global flags, check-config, and dispatch behaviour."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import mmbot
from mmbot.cli import entry as cli
from mmbot.config import Settings
from mmbot.logs import clear_registered_secrets, reset_logging
from tests.support.env import clear_mmbot_env

KEY_ID = "a1b2c3d4-0000-1111-2222-333344445555"
# A real key: check-config parses the key, so a fake PEM would (rightly) be refused.
PEM = (
    rsa.generate_private_key(public_exponent=65537, key_size=2048)
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)
PEM_BODY = [line for line in PEM.splitlines() if not line.startswith("-----")]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    clear_mmbot_env(monkeypatch)
    # Keep stderr JSON and non-interactive regardless of the terminal running the tests.
    monkeypatch.setenv("MMBOT_LOG__FORMAT", "json")
    clear_registered_secrets()
    yield
    reset_logging()
    clear_registered_secrets()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """Write the fake PEM to a file and return its path."""
    path = tmp_path / "kalshi.pem"
    path.write_text(PEM, encoding="utf-8")
    return path


def assert_no_key_material(text: str) -> None:
    """Fail if the key id or a PEM body line occurs in ``text``."""
    assert KEY_ID not in text
    for line in PEM_BODY:
        assert line not in text


def test_check_config_prints_redacted_config(
    key_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MMBOT_KALSHI__KEY_ID", KEY_ID)
    rc = cli.main(["check-config", "--kalshi.private_key_path", str(key_file)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "[kalshi]" in out
    assert "[log]" in out
    lines = out.splitlines()
    key_id_line = next(line for line in lines if line.startswith("key_id = "))
    assert '"<redacted>"' in key_id_line
    assert key_id_line.endswith("# environment variable MMBOT_KALSHI__KEY_ID")
    rest_line = next(line for line in lines if line.startswith("rest_url = "))
    assert '"https://api.elections.kalshi.com/trade-api/v2"' in rest_line
    assert rest_line.endswith("# default")
    path_line = next(line for line in lines if line.startswith("private_key_path = "))
    assert str(key_file) in path_line
    assert path_line.endswith("# --kalshi.private_key_path flag")
    assert_no_key_material(out + err)


def test_check_config_inline_private_key_is_redacted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MMBOT_KALSHI__PRIVATE_KEY", PEM)
    monkeypatch.setenv("MMBOT_KALSHI__KEY_ID", KEY_ID)
    assert cli.main(["check-config"]) == 0
    out, err = capsys.readouterr()
    private_key_line = next(line for line in out.splitlines() if line.startswith("private_key ="))
    assert '"<redacted>"' in private_key_line
    assert "PRIVATE KEY-----" not in out
    assert_no_key_material(out + err)


def test_check_config_json(
    key_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "mmbot.toml"
    config.write_text(f"[kalshi]\nprivate_key_path = '{key_file}'\nshard_factor = 2\n")
    monkeypatch.setenv("MMBOT_KALSHI__KEY_ID", KEY_ID)
    assert cli.main(["check-config", "--json", "--config", str(config)]) == 0
    out, _ = capsys.readouterr()
    data = json.loads(out)
    assert data["kalshi"]["key_id"] == "<redacted>"
    assert data["kalshi"]["private_key"] is None
    assert data["kalshi"]["private_key_path"] == str(key_file)
    assert data["kalshi"]["shard_factor"] == 2
    assert data["log"]["format"] == "json"
    assert_no_key_material(out)


def test_check_config_bad_value_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MMBOT_KALSHI__READ_BUCKET_CAPACITY", "5")
    monkeypatch.setenv("MMBOT_KALSHI__KEY_ID", KEY_ID)
    assert cli.main(["check-config"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == "error: invalid configuration"
    assert "kalshi.read_bucket_capacity" in lines[1]
    assert "MMBOT_KALSHI__READ_BUCKET_CAPACITY" in lines[1]
    assert "Traceback" not in err


def test_bad_flag_value_names_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", "--kalshi.shard_factor", "many"]) == 1
    _, err = capsys.readouterr()
    assert "kalshi.shard_factor: expected a whole number from 1 to 100, got 'many'" in err
    assert "(from --kalshi.shard_factor flag)" in err


def test_missing_config_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent.toml"
    assert cli.main(["--config", str(missing), "check-config"]) == 1
    _, err = capsys.readouterr()
    assert f"config file {missing}: file not found" in err
    assert "Traceback" not in err


def test_check_config_unreadable_key_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "gone.pem"
    assert cli.main(["check-config", "--kalshi.private_key_path", str(missing)]) == 1
    _, err = capsys.readouterr()
    assert err.splitlines()[0] == "error: invalid configuration"
    assert "kalshi.private_key_path: cannot read" in err
    assert "No such file or directory" in err


def test_extra_checks_ok_without_key() -> None:
    assert cli._extra_checks(Settings()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--log.level", "debug", "--kalshi.shard_factor", "3", "check-config", "--json"],
        ["check-config", "--json", "--log.level", "debug", "--kalshi.shard_factor", "3"],
        ["--log.level", "debug", "check-config", "--kalshi.shard_factor", "3", "--json"],
    ],
)
def test_global_flags_before_and_after_subcommand(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["log"]["level"] == "DEBUG"
    assert data["kalshi"]["shard_factor"] == 3


@pytest.mark.parametrize("before", [True, False])
def test_config_flag_before_and_after_subcommand(
    before: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mmbot.toml"
    config.write_text("[kalshi]\nread_tokens_per_second = 7\n")
    argv = ["--config", str(config), "check-config"] if before else ["check-config"]
    if not before:
        argv += ["--config", str(config)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("read_tokens_per_second"))
    assert line.startswith("read_tokens_per_second = 7 ")
    assert line.endswith(f"# config file {config}")


def test_flag_after_subcommand_wins_over_flag_before(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--log.level", "ERROR", "check-config", "--log.level", "WARNING", "--json"]
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["log"]["level"] == "WARNING"


def test_flags_beat_env(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MMBOT_KALSHI__REST_URL", "https://env.example.com")
    assert cli.main(["check-config", "--kalshi.rest_url", "https://flag.example.com/"]) == 0
    out = capsys.readouterr().out
    assert 'rest_url = "https://flag.example.com"' in out
    assert "# --kalshi.rest_url flag" in out


def test_flags_not_given_do_not_override(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MMBOT_KALSHI__REST_URL", "https://env.example.com")
    assert cli.main(["check-config", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kalshi"]["rest_url"] == "https://env.example.com"


def test_no_flags_for_secrets() -> None:
    parser = cli.build_parser()
    options = {opt for action in parser._actions for opt in action.option_strings}
    assert "--kalshi.rest_url" in options
    assert "--kalshi.private_key_path" in options
    assert "--log.level" in options
    assert "--kalshi.private_key" not in options
    assert "--kalshi.key_id" not in options


def test_secret_flag_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", "--kalshi.key_id", KEY_ID]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_abbreviated_flags_are_not_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", "--log.lev", "DEBUG"]) == 2
    capsys.readouterr()


def test_no_subcommand_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    out, err = capsys.readouterr()
    assert "usage: mmbot" in out + err
    assert "check-config" in out + err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mmbot {mmbot.__version__}"


def test_config_error_fails_every_subcommand_before_dispatch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    called: list[bool] = []

    def handler(args: argparse.Namespace, settings: Settings) -> int:
        called.append(True)
        return 0

    monkeypatch.setattr(cli, "_check_config", handler)
    monkeypatch.setenv("MMBOT_KALSHI__NOPE", "1")
    assert cli.main(["check-config"]) == 1
    assert called == []
    assert "kalshi.nope: unknown key" in capsys.readouterr().err


def test_async_handler_is_run(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    async def handler(args: argparse.Namespace, settings: Settings) -> int:
        seen.append(settings.log.level)
        return 3

    monkeypatch.setattr(cli, "_check_config", handler)
    assert cli.main(["check-config", "--log.level", "warning"]) == 3
    assert seen == ["WARNING"]


def test_handler_returning_none_means_success(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_check_config", lambda args, settings: None)
    assert cli.main(["check-config"]) == 0


def test_keyboard_interrupt_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_check_config", handler)
    assert cli.main(["check-config"]) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_handler_crash_is_logged_redacted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        raise RuntimeError(f"signing failed for {KEY_ID}")

    monkeypatch.setattr(cli, "_check_config", handler)
    monkeypatch.setenv("MMBOT_KALSHI__KEY_ID", KEY_ID)
    assert cli.main(["check-config"]) == 1
    err = capsys.readouterr().err
    entry = json.loads(err.splitlines()[-1])
    assert entry["event"] == "command failed"
    assert "RuntimeError: signing failed for <redacted>" in entry["exception"]
    assert KEY_ID not in err


def test_plugin_module_is_registered_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, list[argparse.ArgumentParser]]] = []

    class Plugin:
        @staticmethod
        def register(subparsers: object, parents: list[argparse.ArgumentParser]) -> None:
            calls.append((subparsers, parents))

    monkeypatch.setattr(cli, "PLUGIN_MODULES", ("json",))
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: Plugin)
    cli.build_parser()
    assert len(calls) == 1
    (parent,) = calls[0][1]
    assert "--config" in {opt for a in parent._actions for opt in a.option_strings}


def test_absent_plugin_module_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "PLUGIN_MODULES", ("mmbot.no_such_module_here",))
    parser = cli.build_parser()
    assert parser.prog == "mmbot"


def test_check_config_rejects_a_file_that_is_not_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    monkeypatch.setenv("MMBOT_KALSHI__KEY_ID", KEY_ID)
    assert cli.main(["check-config", "--kalshi.private_key_path", str(junk)]) == 1
    _, err = capsys.readouterr()
    assert "kalshi.private_key_path: not a PEM private key" in err
    assert "bm90IGEga2V5" not in err


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MMBOT_KALSHI__KEY_ID": KEY_ID}, "kalshi.private_key_path, kalshi.private_key"),
        ({"MMBOT_KALSHI__PRIVATE_KEY": PEM}, "kalshi.key_id: is not set"),
    ],
)
def test_check_config_half_configured_credentials_name_the_missing_key(
    env: dict[str, str],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["check-config"]) == 1
    _, err = capsys.readouterr()
    assert named in err
    assert_no_key_material(err)
