"""Tests for mmbot.config: sources, precedence, validation and error messages."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from mmbot.config import (
    DEFAULT_REST_URL,
    DEFAULT_WS_URL,
    ConfigError,
    ConfigProblem,
    LogSettings,
    Settings,
    config_keys,
    load_settings,
    load_settings_with_sources,
    redacted_dump,
)

FAKE_KEY_ID = "0f1e2d3c-aaaa-bbbb-cccc-123456789abc"
PEM_BODY = [
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj",
    "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu",
    "NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ",
]
FAKE_PEM = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(PEM_BODY) + "\n-----END PRIVATE KEY-----\n"


@pytest.fixture(autouse=True)
def _clean_env(no_mmbot_env: None) -> None:
    """Before any fixture of this module sets variables of its own."""


def write_toml(tmp_path: Path, text: str, name: str = "mmbot.toml") -> Path:
    """Write ``text`` to ``tmp_path/name`` and return the path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(**kwargs: Any) -> ConfigError:
    """Call load_settings(**kwargs) and return the ConfigError it must raise."""
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)
    return info.value


def problem_for(err: ConfigError, key: str) -> ConfigProblem:
    """Return the first problem in ``err`` that names ``key``."""
    matches = [p for p in err.problems if key in p.keys]
    assert matches, f"no problem names {key!r}; got:\n{err}"
    return matches[0]


# --- defaults and single sources -------------------------------------------------------------


def test_defaults() -> None:
    settings, sources = load_settings_with_sources()
    k = settings.kalshi
    assert k.key_id is None
    assert k.private_key is None
    assert k.private_key_path is None
    assert k.environment == "production"
    assert k.rest_url == DEFAULT_REST_URL == "https://external-api.kalshi.com/trade-api/v2"
    assert k.ws_url == DEFAULT_WS_URL == "wss://external-api-ws.kalshi.com/trade-api/ws/v2"
    assert (k.read_tokens_per_second, k.read_bucket_capacity) == (200, 400)
    assert (k.write_tokens_per_second, k.write_bucket_capacity) == (100, 100)
    assert k.request_timeout_seconds == 10
    assert k.retry_deadline_seconds == 5
    assert k.ws_ping_interval_seconds == 10
    assert k.ws_ping_timeout_seconds == 10
    assert k.ws_reconnect_min_seconds == 0.5
    assert k.ws_reconnect_max_seconds == 30
    assert k.shard_factor is None
    assert k.shard_key is None
    assert settings.log.level == "INFO"
    assert settings.log.format is None
    assert set(sources) == {spec.key for spec in config_keys()}
    assert set(sources.values()) == {"default"}


def test_file_alone(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        '[kalshi]\nrest_url = "https://demo.example.com/trade-api/v2"\n'
        'read_tokens_per_second = 20\n[log]\nlevel = "debug"\n',
    )
    settings, sources = load_settings_with_sources(path)
    assert settings.kalshi.rest_url == "https://demo.example.com/trade-api/v2"
    assert settings.kalshi.read_tokens_per_second == 20
    assert settings.log.level == "DEBUG"
    assert sources["kalshi.rest_url"] == f"config file {path}"
    assert sources["log.level"] == f"config file {path}"
    assert sources["kalshi.ws_url"] == "default"


def test_env_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMBOT_KALSHI__WRITE_TOKENS_PER_SECOND", "50")
    monkeypatch.setenv("MMBOT_LOG__FORMAT", "json")
    monkeypatch.setenv("MMBOT_KALSHI__KEY_ID", FAKE_KEY_ID)
    settings, sources = load_settings_with_sources()
    assert settings.kalshi.write_tokens_per_second == 50
    assert settings.log.format == "json"
    assert isinstance(settings.kalshi.key_id, SecretStr)
    assert settings.kalshi.key_id.get_secret_value() == FAKE_KEY_ID
    assert sources["kalshi.write_tokens_per_second"] == (
        "environment variable MMBOT_KALSHI__WRITE_TOKENS_PER_SECOND"
    )
    assert sources["kalshi.key_id"] == "environment variable MMBOT_KALSHI__KEY_ID"


def test_env_whole_section_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMBOT_KALSHI", '{"shard_factor": 4, "shard_key": 1}')
    settings, sources = load_settings_with_sources()
    assert (settings.kalshi.shard_factor, settings.kalshi.shard_key) == (4, 1)
    assert sources["kalshi.shard_factor"] == "environment variable MMBOT_KALSHI"


def test_env_whole_section_invalid_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMBOT_KALSHI", "{not json")
    err = config_error()
    assert str(err) == "kalshi: expected a JSON object (from environment variable MMBOT_KALSHI)"


def test_flags_alone() -> None:
    settings, sources = load_settings_with_sources(
        overrides={"kalshi.shard_factor": "8", "kalshi.shard_key": "7", "log.level": "warning"}
    )
    assert settings.kalshi.shard_factor == 8
    assert settings.kalshi.shard_key == 7
    assert settings.log.level == "WARNING"
    assert sources["kalshi.shard_factor"] == "--kalshi.shard_factor flag"


def test_precedence_flag_env_file_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "kalshi.request_timeout_seconds"
    path = write_toml(tmp_path, "[kalshi]\nrequest_timeout_seconds = 3\n")
    monkeypatch.setenv("MMBOT_KALSHI__REQUEST_TIMEOUT_SECONDS", "2")
    overrides = {key: "1"}

    settings, sources = load_settings_with_sources(path, overrides)
    assert settings.kalshi.request_timeout_seconds == 1
    assert sources[key] == f"--{key} flag"

    settings, sources = load_settings_with_sources(path)
    assert settings.kalshi.request_timeout_seconds == 2
    assert sources[key] == "environment variable MMBOT_KALSHI__REQUEST_TIMEOUT_SECONDS"

    monkeypatch.delenv("MMBOT_KALSHI__REQUEST_TIMEOUT_SECONDS")
    settings, sources = load_settings_with_sources(path)
    assert settings.kalshi.request_timeout_seconds == 3
    assert sources[key] == f"config file {path}"

    settings, sources = load_settings_with_sources()
    assert settings.kalshi.request_timeout_seconds == 10
    assert sources[key] == "default"


def test_layers_merge_per_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_toml(tmp_path, '[kalshi]\nshard_factor = 10\n[log]\nlevel = "ERROR"\n')
    monkeypatch.setenv("MMBOT_KALSHI__SHARD_KEY", "9")
    settings = load_settings(path, {"log.format": "console"})
    assert settings.kalshi.shard_factor == 10
    assert settings.kalshi.shard_key == 9
    assert settings.log.level == "ERROR"
    assert settings.log.format == "console"


def test_mmbot_config_env_var_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_toml(tmp_path, "[kalshi]\nread_bucket_capacity = 123\n")
    monkeypatch.setenv("MMBOT_CONFIG", str(path))
    assert load_settings().kalshi.read_bucket_capacity == 123


def test_explicit_config_path_beats_mmbot_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env = write_toml(tmp_path, "[kalshi]\nread_bucket_capacity = 123\n", "env.toml")
    explicit = write_toml(tmp_path, "[kalshi]\nread_bucket_capacity = 456\n", "flag.toml")
    monkeypatch.setenv("MMBOT_CONFIG", str(from_env))
    settings, sources = load_settings_with_sources(explicit)
    assert settings.kalshi.read_bucket_capacity == 456
    assert sources["kalshi.read_bucket_capacity"] == f"config file {explicit}"


def test_missing_file_explicit(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    err = config_error(config_path=missing)
    assert str(err) == f"config file {missing}: file not found (from --config flag)"


def test_missing_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.toml"
    monkeypatch.setenv("MMBOT_CONFIG", str(missing))
    err = config_error()
    assert str(missing) in str(err)
    assert "environment variable MMBOT_CONFIG" in str(err)


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    err = config_error(config_path=tmp_path)
    assert f"config file {tmp_path}: cannot read it" in str(err)


def test_bad_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[kalshi]\nrest_url = "https://x"\nshard_factor = = 3\n')
    err = config_error(config_path=path)
    assert len(err.problems) == 1
    assert str(path) in str(err)
    assert "invalid TOML at line 3" in str(err)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[log]\nlevel = "\xe9"\n')
    err = config_error(config_path=path)
    assert "not valid UTF-8" in str(err)


# --- unknown keys ----------------------------------------------------------------------------


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[kalshi]\nrest_urll = 'https://x'\n[logging]\nlevel = 1\n")
    err = config_error(config_path=path)
    assert problem_for(err, "kalshi.rest_urll").note == "unknown key"
    assert problem_for(err, "logging").note == "unknown key"
    assert f"kalshi.rest_urll: unknown key (from config file {path})" in str(err).splitlines()


def test_unknown_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMBOT_KALSHI__NOPE", "1")
    err = config_error()
    assert str(err) == "kalshi.nope: unknown key (from environment variable MMBOT_KALSHI__NOPE)"


def test_unknown_top_level_env_var_hints_double_underscore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MMBOT_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("MMBOT_WHATEVER", "x")
    err = config_error()
    assert problem_for(err, "log_level").note.startswith("unknown key")
    assert "MMBOT_LOG__LEVEL" in str(problem_for(err, "log_level"))
    assert problem_for(err, "whatever").source == "environment variable MMBOT_WHATEVER"


def test_unknown_key_in_flags() -> None:
    err = config_error(overrides={"kalshi.bogus": "1"})
    assert str(err) == "kalshi.bogus: unknown key (from --kalshi.bogus flag)"


def test_unknown_key_value_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    # A misspelt secret key is still a secret.
    monkeypatch.setenv("MMBOT_KALSHI__PRIVATEKEY", FAKE_PEM)
    err = config_error()
    assert "kalshi.privatekey: unknown key" in str(err)
    for line in PEM_BODY:
        assert line not in str(err)


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'kalshi = "oops"\n')
    err = config_error(config_path=path)
    assert str(err) == f"kalshi: expected a table of settings (from config file {path})"


# --- validation rules ------------------------------------------------------------------------

INVALID_VALUES = [
    ("kalshi.rest_url", "ftp://example.com", "an http:// or https:// URL with a host"),
    ("kalshi.rest_url", "https://", "an http:// or https:// URL with a host"),
    ("kalshi.rest_url", "example.com/trade-api/v2", "an http:// or https:// URL with a host"),
    ("kalshi.ws_url", "https://example.com/ws", "a ws:// or wss:// URL with a host"),
    ("kalshi.ws_url", "wss:///path", "a ws:// or wss:// URL with a host"),
    ("kalshi.read_tokens_per_second", "abc", "a whole number greater than 0"),
    ("kalshi.read_tokens_per_second", "0", "a whole number greater than 0"),
    ("kalshi.write_tokens_per_second", "-5", "a whole number greater than 0"),
    ("kalshi.write_tokens_per_second", "1.5", "a whole number greater than 0"),
    ("kalshi.read_bucket_capacity", "9", "a whole number of at least 10"),
    ("kalshi.write_bucket_capacity", "0", "a whole number of at least 10"),
    ("kalshi.request_timeout_seconds", "0", "a number greater than 0"),
    ("kalshi.request_timeout_seconds", "inf", "a number greater than 0"),
    ("kalshi.retry_deadline_seconds", "-1", "a number greater than 0"),
    ("kalshi.retry_deadline_seconds", "nan", "a number greater than 0"),
    ("kalshi.ws_ping_interval_seconds", "0", "a number greater than 0"),
    ("kalshi.ws_ping_timeout_seconds", "soon", "a number greater than 0"),
    ("kalshi.ws_reconnect_min_seconds", "0", "a number greater than 0"),
    ("kalshi.ws_reconnect_max_seconds", "-3", "a number greater than 0"),
    ("kalshi.shard_factor", "0", "a whole number from 1 to 100"),
    ("kalshi.shard_factor", "101", "a whole number from 1 to 100"),
    ("kalshi.shard_key", "-1", "a whole number from 0 to 99"),
    ("log.level", "verbose", "one of: DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("log.format", "xml", "one of: json, console"),
]


def env_name(key: str) -> str:
    """Return the environment variable for a dotted key."""
    return "MMBOT_" + key.upper().replace(".", "__")


@pytest.mark.parametrize(("key", "value", "expected"), INVALID_VALUES)
def test_invalid_value_from_env(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(env_name(key), value)
    err = config_error()
    assert len(err.problems) == 1
    problem = err.problems[0]
    assert problem.key == key
    assert problem.expected is not None
    assert problem.expected.startswith(expected)
    assert problem.got == repr(value)
    assert problem.source == f"environment variable {env_name(key)}"
    assert str(err).startswith(f"{key}: expected {expected}")
    assert str(err).endswith(f", got {value!r} (from environment variable {env_name(key)})")


@pytest.mark.parametrize(("key", "value", "expected"), INVALID_VALUES)
def test_invalid_value_from_flag(key: str, value: str, expected: str) -> None:
    err = config_error(overrides={key: value})
    assert str(err).startswith(f"{key}: expected {expected}")
    assert str(err).endswith(f"(from --{key} flag)")


def test_invalid_value_from_file_shows_toml_value(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[kalshi]\nread_bucket_capacity = 5\nws_url = 7\n")
    err = config_error(config_path=path)
    assert str(err).splitlines() == [
        "kalshi.ws_url: expected a ws:// or wss:// URL with a host, got 7"
        f" (from config file {path})",
        "kalshi.read_bucket_capacity: expected a whole number of at least 10"
        f" (the cost of one request), got 5 (from config file {path})",
    ]


def test_message_format_matches_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMBOT_KALSHI__READ_TOKENS_PER_SECOND", "abc")
    err = config_error()
    assert str(err) == (
        "kalshi.read_tokens_per_second: expected a whole number greater than 0, got 'abc'"
        " (from environment variable MMBOT_KALSHI__READ_TOKENS_PER_SECOND)"
    )


def test_every_problem_is_reported_one_per_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_toml(tmp_path, "[kalshi]\nshard_factor = 0\n")
    monkeypatch.setenv("MMBOT_LOG__LEVEL", "loud")
    err = config_error(config_path=path, overrides={"kalshi.rest_url": "nope"})
    lines = str(err).splitlines()
    assert len(lines) == len(err.problems) == 3
    assert {p.key for p in err.problems} == {"kalshi.shard_factor", "log.level", "kalshi.rest_url"}


def test_value_from_higher_layer_is_the_one_blamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_toml(tmp_path, "[kalshi]\nshard_factor = 500\n")
    monkeypatch.setenv("MMBOT_KALSHI__SHARD_FACTOR", "200")
    err = config_error(config_path=path)
    assert err.problems[0].got == "'200'"
    assert err.problems[0].source == "environment variable MMBOT_KALSHI__SHARD_FACTOR"


def test_rest_url_trailing_slash_is_stripped() -> None:
    settings = load_settings(overrides={"kalshi.rest_url": "http://localhost:8080/trade-api/v2/"})
    assert settings.kalshi.rest_url == "http://localhost:8080/trade-api/v2"


def test_ws_url_accepts_plain_ws() -> None:
    settings = load_settings(overrides={"kalshi.ws_url": "ws://localhost:9000/ws"})
    assert settings.kalshi.ws_url == "ws://localhost:9000/ws"


def test_log_level_and_format_are_case_insensitive() -> None:
    settings = load_settings(overrides={"log.level": "Warning", "log.format": "JSON"})
    assert settings.log.level == "WARNING"
    assert settings.log.format == "json"


def test_reconnect_max_below_min_names_both_keys(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[kalshi]\nws_reconnect_min_seconds = 60\n")
    err = config_error(config_path=path)
    problem = problem_for(err, "kalshi.ws_reconnect_max_seconds")
    assert set(problem.keys) == {
        "kalshi.ws_reconnect_max_seconds",
        "kalshi.ws_reconnect_min_seconds",
    }
    assert "kalshi.ws_reconnect_max_seconds from the default" in str(err)
    assert f"kalshi.ws_reconnect_min_seconds from config file {path}" in str(err)


def test_reconnect_max_equal_to_min_is_fine() -> None:
    settings = load_settings(
        overrides={"kalshi.ws_reconnect_min_seconds": "5", "kalshi.ws_reconnect_max_seconds": "5"}
    )
    assert settings.kalshi.ws_reconnect_max_seconds == 5


def test_shard_key_without_factor() -> None:
    err = config_error(overrides={"kalshi.shard_key": "0"})
    problem = problem_for(err, "kalshi.shard_key")
    assert "kalshi.shard_factor" in problem.keys
    assert "kalshi.shard_factor to be set" in str(problem)


def test_shard_key_must_be_below_factor() -> None:
    err = config_error(overrides={"kalshi.shard_key": "3", "kalshi.shard_factor": "3"})
    problem = problem_for(err, "kalshi.shard_key")
    assert "kalshi.shard_factor" in problem.keys
    assert "less than kalshi.shard_factor" in str(problem)
    assert str(problem).endswith(
        "(kalshi.shard_key from --kalshi.shard_key flag;"
        " kalshi.shard_factor from --kalshi.shard_factor flag)"
    )


def test_shard_factor_alone_is_fine() -> None:
    assert load_settings(overrides={"kalshi.shard_factor": "2"}).kalshi.shard_key is None


def test_cross_field_problems_are_all_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = write_toml(tmp_path, FAKE_PEM, "key.pem")
    monkeypatch.setenv("MMBOT_KALSHI__PRIVATE_KEY", FAKE_PEM)
    err = config_error(
        overrides={
            "kalshi.private_key_path": str(key_file),
            "kalshi.shard_key": "4",
            "kalshi.ws_reconnect_min_seconds": "99",
        }
    )
    assert len(err.problems) == 3


def test_both_private_key_and_path_is_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = write_toml(tmp_path, FAKE_PEM, "key.pem")
    path = write_toml(tmp_path, f"[kalshi]\nprivate_key_path = '{key_file}'\n")
    monkeypatch.setenv("MMBOT_KALSHI__PRIVATE_KEY", FAKE_PEM)
    err = config_error(config_path=path)
    assert len(err.problems) == 1
    problem = err.problems[0]
    assert set(problem.keys) == {"kalshi.private_key", "kalshi.private_key_path"}
    text = str(err)
    assert "kalshi.private_key from environment variable MMBOT_KALSHI__PRIVATE_KEY" in text
    assert f"kalshi.private_key_path from config file {path}" in text
    assert "BEGIN" not in text
    for line in PEM_BODY:
        assert line not in text


def test_neither_key_set_is_fine() -> None:
    assert load_settings().kalshi.private_key_pem() is None


# --- secrets ---------------------------------------------------------------------------------


def test_secrets_never_appear_in_error_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # key_id has the wrong type (so it is itself invalid) and the PEM is valid, while
    # something else is wrong too.
    bad_key_id = 918273645546372819
    path = write_toml(tmp_path, f"[kalshi]\nkey_id = {bad_key_id}\n")
    monkeypatch.setenv("MMBOT_KALSHI__PRIVATE_KEY", FAKE_PEM)
    monkeypatch.setenv("MMBOT_KALSHI__READ_TOKENS_PER_SECOND", "lots")
    err = config_error(config_path=path)
    text = str(err)
    assert "kalshi.key_id: expected a string, got <redacted>" in text
    assert "kalshi.read_tokens_per_second" in text
    assert str(bad_key_id) not in text
    assert "PRIVATE KEY" not in text
    for line in PEM_BODY:
        assert line not in text
    assert err.__cause__ is None
    assert err.__suppress_context__


def test_secret_with_wrong_type_in_private_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[kalshi]\nprivate_key = ['a-secret-list-value']\n")
    err = config_error(config_path=path)
    assert str(err) == (
        f"kalshi.private_key: expected a string, got <redacted> (from config file {path})"
    )


def test_pem_pasted_into_non_secret_field_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMBOT_KALSHI__REST_URL", FAKE_PEM)
    err = config_error()
    assert err.problems[0].key == "kalshi.rest_url"
    for line in PEM_BODY:
        assert line[:20] not in str(err)


def test_long_values_are_truncated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMBOT_KALSHI__WS_URL", "x" * 500)
    err = config_error()
    assert "x" * 100 not in str(err)
    assert "..." in str(err)


# --- private key access ----------------------------------------------------------------------


def test_private_key_pem_from_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMBOT_KALSHI__PRIVATE_KEY", FAKE_PEM)
    assert load_settings().kalshi.private_key_pem() == FAKE_PEM.encode()


def test_private_key_pem_from_path(tmp_path: Path) -> None:
    key_file = write_toml(tmp_path, FAKE_PEM, "key.pem")
    settings = load_settings(overrides={"kalshi.private_key_path": str(key_file)})
    assert settings.kalshi.private_key_path == key_file
    assert settings.kalshi.private_key_pem() == FAKE_PEM.encode()


def test_private_key_path_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write_toml(tmp_path, FAKE_PEM, "key.pem")
    settings = load_settings(overrides={"kalshi.private_key_path": "~/key.pem"})
    assert settings.kalshi.private_key_path == tmp_path / "key.pem"


@pytest.mark.parametrize(("name", "reason"), [("missing.pem", "No such file"), ("", "directory")])
def test_private_key_pem_unreadable(tmp_path: Path, name: str, reason: str) -> None:
    target = tmp_path / name if name else tmp_path
    settings = load_settings(overrides={"kalshi.private_key_path": str(target)})
    with pytest.raises(ConfigError) as info:
        settings.kalshi.private_key_pem()
    err = info.value
    assert err.problems[0].key == "kalshi.private_key_path"
    assert str(err).startswith("kalshi.private_key_path: cannot read")
    assert reason in str(err)
    assert str(target) in str(err)


# --- dumps and misc --------------------------------------------------------------------------


def test_redacted_dump(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = write_toml(tmp_path, FAKE_PEM, "key.pem")
    monkeypatch.setenv("MMBOT_KALSHI__KEY_ID", FAKE_KEY_ID)
    settings = load_settings(overrides={"kalshi.private_key_path": str(key_file)})
    dump = redacted_dump(settings)
    assert dump["kalshi"]["key_id"] == "<redacted>"
    assert dump["kalshi"]["private_key"] is None
    assert dump["kalshi"]["private_key_path"] == str(key_file)
    assert dump["kalshi"]["read_bucket_capacity"] == 400
    assert dump["log"] == {"level": "INFO", "format": None}
    assert FAKE_KEY_ID not in repr(dump)


def test_redacted_dump_inline_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMBOT_KALSHI__PRIVATE_KEY", FAKE_PEM)
    dump = redacted_dump(load_settings())
    assert dump["kalshi"]["private_key"] == "<redacted>"
    assert dump["kalshi"]["key_id"] is None


def test_config_keys_mark_secrets() -> None:
    secret = {spec.key for spec in config_keys() if spec.secret}
    assert secret == {"kalshi.key_id", "kalshi.private_key"}


class _FakeStream:
    def __init__(self, tty: bool) -> None:
        self._tty = tty

    def isatty(self) -> bool:
        """Report the configured TTY-ness."""
        return self._tty


@pytest.mark.parametrize(
    ("configured", "tty", "resolved"),
    [
        (None, True, "console"),
        (None, False, "json"),
        ("json", True, "json"),
        ("console", False, "console"),
    ],
)
def test_resolved_format(configured: str | None, tty: bool, resolved: str) -> None:
    log = LogSettings(format=configured)  # type: ignore[arg-type]
    assert log.resolved_format(_FakeStream(tty)) == resolved  # type: ignore[arg-type]


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.log = LogSettings()  # type: ignore[misc]


def test_direct_settings_read_env_but_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMBOT_LOG__LEVEL", "error")
    assert Settings().log.level == "ERROR"


def test_money_keys_from_toml_are_exact_decimals(tmp_path: Path) -> None:
    path = tmp_path / "money.toml"
    path.write_text(
        "[quotes]\nmin_edge = 0.1\nrequote_threshold = 0.3\n"
        "[risk]\nmax_exposure_dollars = 1234.56\n"
        "[strategies]\nparams = { half_spread = 0.07 }\n"
    )
    settings = load_settings(path)
    # With binary floats 0.1 would arrive as 0.1000000000000000055511151231257827...
    assert settings.quotes.min_edge == Decimal("0.1")
    assert str(settings.quotes.requote_threshold) == "0.3"
    assert settings.risk.max_exposure_dollars == Decimal("1234.56")
    assert settings.strategies.params == {"half_spread": Decimal("0.07")}


def test_risk_and_quote_keys_are_validated_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMBOT_RISK__MAX_EXPOSURE_DOLLARS", "-5")
    monkeypatch.setenv("MMBOT_QUOTES__MIN_EDGE", "1.5")
    with pytest.raises(ConfigError) as err:
        load_settings()
    text = str(err.value)
    assert "risk.max_exposure_dollars: expected a decimal number" in text
    assert "quotes.min_edge: expected a decimal number" in text
    assert "MMBOT_QUOTES__MIN_EDGE" in text


def test_tables_and_lists_get_no_command_line_flag() -> None:
    keys = {key.key: key for key in config_keys()}
    assert not keys["strategies.routes"].scalar
    assert not keys["strategies.params"].scalar
    assert keys["risk.max_open_quotes"].scalar


# --- run.event_loop ---------------------------------------------------------------------------


def test_run_event_loop_defaults_to_auto_and_is_read_from_every_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings().run.event_loop == "auto"
    path = write_toml(tmp_path, '[run]\nevent_loop = "UVLOOP"\n')
    assert load_settings(path).run.event_loop == "uvloop"  # case-insensitive, like log.level
    monkeypatch.setenv("MMBOT_RUN__EVENT_LOOP", "asyncio")
    settings, sources = load_settings_with_sources(path)
    assert settings.run.event_loop == "asyncio"
    assert sources["run.event_loop"] == "environment variable MMBOT_RUN__EVENT_LOOP"
    assert load_settings(path, {"run.event_loop": "auto"}).run.event_loop == "auto"


def test_run_event_loop_rejects_an_unknown_loop_naming_key_and_choices(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[run]\nevent_loop = "trio"\n')
    problem = problem_for(config_error(config_path=path), "run.event_loop")
    assert problem.expected == "one of: auto, uvloop, asyncio"
    assert problem.got == "'trio'"
    assert problem.source == f"config file {path}"
