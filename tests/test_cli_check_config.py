"""Tests for the mmbot CLI: global flags, check-config, and dispatch behaviour."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import mmbot
from mmbot.buildinfo import build_commit
from mmbot.cli import entry as cli
from mmbot.config import Settings
from mmbot.journal import SCHEMA_VERSION, Journal
from mmbot.journal import files as journal_files
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
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    clear_mmbot_env(monkeypatch)
    # check-config looks at the default journal, relative to the working directory.
    monkeypatch.chdir(tmp_path)
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
    assert '"https://external-api.kalshi.com/trade-api/v2"' in rest_line
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
    assert capsys.readouterr().out.strip() == f"mmbot {mmbot.__version__} (commit {build_commit()})"


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


# --------------------------------------------------------------------------- files and keys


def _listing(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``directory`` with its size and mtime: what a check must not change."""
    return {
        str(path.relative_to(directory)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(directory.rglob("*"))
    }


def _check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["check-config", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _problem_lines(err: str, key: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"  {key}: ")]


def test_check_config_accepts_an_existing_journal_without_touching_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "data" / "journal.sqlite"
    written = Journal(journal)
    written.start()
    assert written.close()
    before = _listing(tmp_path / "data")
    code, out, err = _check(capsys, "--journal.path", str(journal))
    assert code == 0, err
    assert "error" not in err
    assert str(journal) in out
    # Read-only: no -wal or -shm left beside it, no migration, no lock taken.
    assert _listing(tmp_path / "data") == before


def test_check_config_reads_the_journal_of_a_running_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Checking the live configuration while mmbot runs: the lock and the WAL are in use.
    journal = tmp_path / "journal.sqlite"
    running = Journal(journal)
    running.start()
    try:
        code, _, err = _check(capsys, "--journal.path", str(journal))
    finally:
        assert running.close()
    assert code == 0, err
    assert [run.run_id for run in running.runs()] == [running.run_id]


def test_check_config_does_not_create_the_journal_or_its_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "not" / "yet" / "journal.sqlite"
    code, _, err = _check(capsys, "--journal.path", str(journal))
    assert code == 0, err
    assert not (tmp_path / "not").exists()
    assert _listing(tmp_path) == {}


def test_check_config_refuses_a_journal_at_a_newer_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "journal.sqlite"
    newer = SCHEMA_VERSION + 1
    with contextlib.closing(sqlite3.connect(journal)) as conn, conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER, applied_at TEXT)")
        conn.execute("INSERT INTO schema_version VALUES (?, 'later')", (newer,))
    before = _listing(tmp_path)
    code, out, err = _check(capsys, "--journal.path", str(journal))
    assert code == 1
    assert out == ""
    assert err.splitlines()[0] == "error: invalid configuration"
    (line,) = _problem_lines(err, "journal.path")
    assert f"expected a writable journal file, at schema version {SCHEMA_VERSION} or older" in line
    assert f"schema version {newer}, written by a newer mmbot" in line
    assert line.endswith("(from --journal.path flag)")
    assert _listing(tmp_path) == before


def _a_directory(tmp_path: Path) -> Path:
    (tmp_path / "journal.sqlite").mkdir()
    return tmp_path / "journal.sqlite"


def _not_sqlite(tmp_path: Path) -> Path:
    (tmp_path / "journal.sqlite").write_text("not a database\n")
    return tmp_path / "journal.sqlite"


def _under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "journal.sqlite"


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_a_directory, "it is a directory, not a file"),
        (_not_sqlite, "it is not an SQLite database"),
        (_under_a_file, "file is not a directory"),
    ],
    ids=["a-directory", "not-sqlite", "under-a-file"],
)
def test_check_config_refuses_a_journal_path_start_would_refuse(
    make: Callable[[Path], Path],
    says: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    journal = make(tmp_path)
    code, _, err = _check(capsys, "--journal.path", str(journal))
    assert code == 1
    (line,) = _problem_lines(err, "journal.path")
    assert says in line
    assert str(journal) in line
    assert "Traceback" not in err


@pytest.mark.parametrize("exists", [True, False], ids=["directory", "directory-to-create"])
def test_check_config_refuses_a_journal_in_a_directory_it_cannot_write(
    exists: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access

    def access(path: str | os.PathLike[str], mode: int, **kwargs: object) -> bool:
        # As for a user without write permission there; root passes every os.access check.
        return Path(path) != locked and real_access(path, mode)

    monkeypatch.setattr(journal_files.os, "access", access)
    journal = locked / "journal.sqlite" if exists else locked / "sub" / "journal.sqlite"
    code, _, err = _check(capsys, "--journal.path", str(journal))
    assert code == 1
    (line,) = _problem_lines(err, "journal.path")
    assert f"{locked} is not writable by this user" in line
    assert not (locked / "sub").exists()


def test_check_config_refuses_a_kill_switch_in_a_missing_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    switch = tmp_path / "run" / "STOP"
    monkeypatch.setenv("MMBOT_RISK__KILL_SWITCH_FILE", str(switch))
    code, out, err = _check(capsys)
    assert code == 1
    assert out == ""
    (line,) = _problem_lines(err, "risk.kill_switch_file")
    assert f"expected a file in an existing directory, got '{switch}'" in line
    assert f"directory {switch.parent} does not exist" in line
    assert line.endswith("(from environment variable MMBOT_RISK__KILL_SWITCH_FILE)")
    # Nothing is created to make it pass.
    assert not switch.parent.exists()


def test_check_config_accepts_a_kill_switch_that_is_not_engaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The file itself is absent while the switch is off: only its directory must exist.
    code, out, err = _check(capsys, "--risk.kill_switch_file", str(tmp_path / "STOP"))
    assert code == 0, err
    assert "kill_switch_file" in out


def test_check_config_reports_every_file_problem_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "journal.sqlite").mkdir()
    code, _, err = _check(
        capsys,
        "--journal.path",
        str(tmp_path / "journal.sqlite"),
        "--risk.kill_switch_file",
        str(tmp_path / "gone" / "STOP"),
    )
    assert code == 1
    assert len(_problem_lines(err, "journal.path")) == 1
    assert len(_problem_lines(err, "risk.kill_switch_file")) == 1


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_check_config_warns_without_a_signing_key_and_still_passes(
    as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _check(capsys, *(["--json"] if as_json else []))
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, err
    (warning,) = warnings
    assert warning.startswith("warning: kalshi.key_id, kalshi.private_key_path: expected a key id")
    assert "without --dry-run" in warning
    assert "MMBOT_KALSHI__KEY_ID" in warning
    assert "error" not in err
    # The configuration is printed as usual, on stdout only.
    if as_json:
        assert json.loads(out)["kalshi"]["key_id"] is None
    else:
        assert "[kalshi]" in out


def test_check_config_does_not_warn_when_a_key_is_configured(
    key_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MMBOT_KALSHI__KEY_ID", KEY_ID)
    monkeypatch.setenv("MMBOT_KALSHI__PRIVATE_KEY_PATH", str(key_file))
    code, _, err = _check(capsys)
    assert code == 0, err
    assert "warning:" not in err


def test_a_warning_does_not_hide_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _check(capsys, "--risk.kill_switch_file", str(tmp_path / "gone" / "STOP"))
    assert code == 1
    lines = err.splitlines()
    assert lines[0] == "error: invalid configuration"
    assert lines[-1].startswith("warning: kalshi.key_id")
