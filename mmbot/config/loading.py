"""Loading the settings: reading each layer, attributing values and translating errors."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic_settings import EnvSettingsSource
from pydantic_settings.exceptions import SettingsError

from mmbot.config.keys import _KEYS
from mmbot.config.models import (
    CONFIG_ENV_VAR,
    ENV_NESTED_DELIMITER,
    ENV_PREFIX,
    NON_SETTING_ENV_VARS,
    Settings,
    _file_data,
)
from mmbot.config.problems import (
    _CROSS_FIELD_ERROR,
    REDACTED,
    ConfigError,
    ConfigProblem,
    _show,
)

__all__ = ["load_settings", "load_settings_with_sources", "redacted_dump"]


@dataclass(frozen=True, slots=True)
class _Layers:
    flags: dict[str, Any]
    env: dict[str, Any]
    file: dict[str, Any]
    file_label: str | None
    env_names: dict[str, str]  # upper-cased name -> actual name of MMBOT_* variables

    def source_of(self, dotted: str) -> str | None:
        """Return where ``dotted`` was set (highest layer first), or None if not set."""
        parts = dotted.split(".")
        if _lookup(self.flags, parts):
            return f"--{dotted} flag"
        if _lookup(self.env, parts):
            return f"environment variable {self._env_var(parts)}"
        if _lookup(self.file, parts):
            return self.file_label
        return None

    def _env_var(self, parts: list[str]) -> str:
        # The value may come from a JSON variable for a whole section (MMBOT_KALSHI='{...}').
        for end in range(len(parts), 0, -1):
            name = (ENV_PREFIX + ENV_NESTED_DELIMITER.join(parts[:end])).upper()
            if name in self.env_names:
                return self.env_names[name]
        return (ENV_PREFIX + ENV_NESTED_DELIMITER.join(parts)).upper()

    def raw_value(self, dotted: str, fallback: Any) -> Any:
        """Return the value as written in the winning layer (before any normalisation)."""
        parts = dotted.split(".")
        for layer in (self.flags, self.env, self.file):
            found, value = _find(layer, parts)
            if found:
                return value
        return fallback


def _find(data: Mapping[str, Any], parts: list[str]) -> tuple[bool, Any]:
    node: Any = data
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _lookup(data: Mapping[str, Any], parts: list[str]) -> bool:
    return _find(data, parts)[0]


def _resolve_config_path(config_path: Path | str | None) -> tuple[Path | None, str]:
    if config_path is not None and str(config_path) != "":
        return Path(config_path).expanduser(), "--config flag"
    from_env = os.environ.get(CONFIG_ENV_VAR, "")
    if from_env:
        return Path(from_env).expanduser(), f"environment variable {CONFIG_ENV_VAR}"
    return None, ""


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def _read_toml(path: Path, given_by: str) -> dict[str, Any]:
    label = f"config file {path}"

    def fail(note: str) -> ConfigError:
        return ConfigError([ConfigProblem(keys=(label,), note=note, sources=(given_by,))])

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise fail("file not found") from None
    except OSError as exc:
        raise fail(f"cannot read it: {exc.strerror or type(exc).__name__}") from None
    try:
        # Decimal, not float: "0.01" in a config file must stay exactly one cent.
        return tomllib.loads(raw.decode("utf-8"), parse_float=Decimal)
    except UnicodeDecodeError:
        raise fail("not valid UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        position = _TOML_POSITION.search(message)
        if position is not None:
            message = message[: position.start()]
            note = f"invalid TOML at line {position[1]}, column {position[2]}: {message}"
        else:
            note = f"invalid TOML: {message}"
        raise fail(note) from None


def _nest_overrides(overrides: Mapping[str, Any]) -> tuple[dict[str, Any], list[ConfigProblem]]:
    nested: dict[str, Any] = {}
    problems: list[ConfigProblem] = []
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[leaf] = value
            continue
        problems.append(
            ConfigProblem(
                keys=(dotted,), note="conflicts with another flag", sources=(f"--{dotted} flag",)
            )
        )
    return nested, problems


def _unknown_env_vars(env_names: Mapping[str, str]) -> list[ConfigProblem]:
    # pydantic-settings only looks up variables named after known top-level fields; anything
    # else with our prefix is most likely a misspelt setting.
    problems = []
    sections = {name.upper() for name in Settings.model_fields}
    for upper, actual in sorted(env_names.items()):
        rest = upper[len(ENV_PREFIX) :]
        if upper in NON_SETTING_ENV_VARS or rest.split(ENV_NESTED_DELIMITER)[0] in sections:
            continue
        dotted = rest.lower().replace(ENV_NESTED_DELIMITER, ".")
        note = "unknown key"
        section = next((s for s in sections if rest.startswith(s + "_")), None)
        if section is not None:
            hint = f"{ENV_PREFIX}{section}{ENV_NESTED_DELIMITER}{rest[len(section) + 1 :]}"
            note += f"; nested keys need a double underscore, e.g. {hint}"
        problems.append(
            ConfigProblem(keys=(dotted,), note=note, sources=(f"environment variable {actual}",))
        )
    return problems


def _read_env(env_names: Mapping[str, str]) -> tuple[dict[str, Any], list[ConfigProblem]]:
    try:
        return EnvSettingsSource(Settings)(), []
    except SettingsError as exc:
        # Raised when a whole-section variable (MMBOT_KALSHI) is not valid JSON.
        match = re.search(r'field "([^"]+)"', str(exc))
        section = match[1] if match else "settings"
        name = env_names.get(f"{ENV_PREFIX}{section}".upper(), f"{ENV_PREFIX}{section}".upper())
        problem = ConfigProblem(
            keys=(section,),
            expected="a JSON object",
            sources=(f"environment variable {name}",),
        )
        return {}, [problem]


def _translate(exc: ValidationError, layers: _Layers) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    seen: set[tuple[str, ...]] = set()
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error["loc"])
        if error["type"] == _CROSS_FIELD_ERROR:
            for issue in error.get("ctx", {}).get("issues", []):
                keys = tuple(f"{loc}.{name}" if loc else name for name in issue.fields)
                problem = ConfigProblem(
                    keys=keys,
                    expected=issue.expected,
                    got=issue.got,
                    sources=tuple(layers.source_of(k) or "default" for k in keys),
                )
                if keys not in seen:
                    seen.add(keys)
                    problems.append(problem)
            continue
        if (loc,) in seen:
            continue
        seen.add((loc,))
        source = layers.source_of(loc)
        if error["type"] == "extra_forbidden":
            problems.append(ConfigProblem(keys=(loc,), note="unknown key", sources=(source,)))
            continue
        spec = _KEYS.get(loc)
        if spec is None:
            # A whole section was given a non-table value; its content is not shown since it
            # may hold secrets.
            problems.append(
                ConfigProblem(keys=(loc,), expected="a table of settings", sources=(source,))
            )
            continue
        got = REDACTED if spec.secret else _show(layers.raw_value(loc, error["input"]))
        problems.append(
            ConfigProblem(keys=(loc,), expected=spec.expected, got=got, sources=(source,))
        )
    return problems


def load_settings_with_sources(
    config_path: Path | str | None = None, overrides: Mapping[str, Any] | None = None
) -> tuple[Settings, dict[str, str]]:
    """Load settings and say, per dotted key, where its value came from.

    Sources are ``default``, ``config file PATH``, ``environment variable NAME`` or
    ``--dotted.key flag``. Raises ConfigError listing every problem.
    """
    path, given_by = _resolve_config_path(config_path)
    file_data = _read_toml(path, given_by) if path is not None else {}
    flag_data, problems = _nest_overrides(overrides or {})
    env_names = {name.upper(): name for name in os.environ if name.upper().startswith(ENV_PREFIX)}
    problems += _unknown_env_vars(env_names)
    env_data, env_problems = _read_env(env_names)
    problems += env_problems
    layers = _Layers(
        flags=flag_data,
        env=env_data,
        file=file_data,
        file_label=f"config file {path}" if path is not None else None,
        env_names=env_names,
    )

    settings: Settings | None = None
    if not env_problems:
        token = _file_data.set(file_data)
        try:
            settings = Settings(**flag_data)
        except ValidationError as exc:
            problems += _translate(exc, layers)
        except SettingsError:
            problems.append(ConfigProblem(keys=("settings",), note="could not be loaded"))
        finally:
            _file_data.reset(token)
    if problems or settings is None:
        # "from None": the pydantic error text includes input values, secrets among them.
        raise ConfigError(problems) from None
    sources = {key: layers.source_of(key) or "default" for key in _KEYS}
    return settings, sources


def load_settings(
    config_path: Path | str | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Load settings from flags (``overrides``), environment, TOML file and defaults."""
    settings, _ = load_settings_with_sources(config_path, overrides)
    return settings


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, Path | Decimal):
        return str(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def redacted_dump(settings: Settings) -> dict[str, Any]:
    """Return the settings as a nested plain dict with set secrets replaced by "<redacted>"."""
    dumped: dict[str, Any] = _plain(settings.model_dump(mode="python"))
    return dumped
