"""Settings for mmbot, loaded from defaults, a TOML file, environment variables and CLI flags.

Precedence, highest first: command-line flags (``overrides``) > environment variables
(``MMBOT_`` prefix, ``__`` between nesting levels, e.g. ``MMBOT_KALSHI__REST_URL``) > the TOML
file (``--config PATH`` or ``MMBOT_CONFIG``) > defaults. Use :func:`load_settings`; every
problem is reported at once as a :class:`ConfigError` naming the dotted key, what was expected
and where the offending value came from, without ever showing a secret value.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

import annotated_types
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.exceptions import SettingsError

from mmbot.kalshi.ratelimit import DEFAULT_COST, QUOTE_COST
from mmbot.logs import redact_text

__all__ = [
    "CONFIG_ENV_VAR",
    "ENV_PREFIX",
    "ConfigError",
    "ConfigKey",
    "ConfigProblem",
    "KalshiSettings",
    "LogSettings",
    "Settings",
    "config_keys",
    "load_settings",
    "load_settings_with_sources",
    "redacted_dump",
]

ENV_PREFIX = "MMBOT_"
ENV_NESTED_DELIMITER = "__"
CONFIG_ENV_VAR = "MMBOT_CONFIG"
# MMBOT_* variables that are not settings; any other unknown MMBOT_* variable is reported,
# because a typo such as MMBOT_LOG_LEVEL (one underscore) would otherwise be silently ignored.
NON_SETTING_ENV_VARS = frozenset({CONFIG_ENV_VAR})

DEFAULT_REST_URL = "https://api.elections.kalshi.com/trade-api/v2"
DEFAULT_WS_URL = "wss://api.elections.kalshi.com/trade-api/ws/v2"
REDACTED = "<redacted>"

# Kalshi charges DEFAULT_COST tokens for an ordinary request, so a bucket smaller than
# that could never admit one.
DEFAULT_REQUEST_COST = DEFAULT_COST

_MAX_SHOWN_VALUE = 80
_CROSS_FIELD_ERROR = "mmbot_cross_field"


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One configuration problem, about one key or a group of related keys."""

    keys: tuple[str, ...]
    expected: str | None = None
    got: str | None = None
    note: str | None = None
    # Where each key's value came from, aligned with ``keys``; None where unknown.
    sources: tuple[str | None, ...] = ()

    @property
    def key(self) -> str:
        """Return the main dotted key this problem is about."""
        return self.keys[0]

    @property
    def source(self) -> str | None:
        """Return where the main key's value came from, if known."""
        return self.sources[0] if self.sources else None

    def __str__(self) -> str:
        """Render as one line: key, expectation, offending value and source."""
        text = f"{', '.join(self.keys)}: "
        if self.expected is not None:
            text += f"expected {self.expected}"
            if self.got is not None:
                text += f", got {self.got}"
            if self.note is not None:
                text += f"; {self.note}"
        elif self.note is not None:
            text += self.note
        return text + self._origin()

    def _origin(self) -> str:
        known = [(k, s) for k, s in zip(self.keys, self.sources, strict=False) if s is not None]
        if not known:
            return ""
        if len({s for _, s in known}) == 1:
            return f" (from {_describe_source(known[0][1])})"
        return " (" + "; ".join(f"{k} from {_describe_source(s)}" for k, s in known) + ")"


def _describe_source(source: str) -> str:
    return "the default" if source == "default" else source


class ConfigError(Exception):
    """Invalid configuration; ``problems`` lists everything that is wrong."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        """Hold ``problems``; the message lists them one per line."""
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        """Render every problem, one per line."""
        return "\n".join(str(problem) for problem in self.problems)


@dataclass(frozen=True, slots=True)
class _CrossFieldIssue:
    # Keys are relative to the model that raised the issue; the section prefix is added when
    # the pydantic error is translated, since only the error's location knows it.
    fields: tuple[str, ...]
    expected: str
    got: str | None = None


def _cross_field_error(issues: list[_CrossFieldIssue]) -> PydanticCustomError:
    summary = "; ".join(f"{', '.join(i.fields)}: expected {i.expected}" for i in issues)
    return PydanticCustomError(
        _CROSS_FIELD_ERROR, "{summary}", {"summary": summary, "issues": issues}
    )


def _http_url(value: str) -> str:
    value = value.strip().rstrip("/")
    _check_url(value, ("http", "https"))
    return value


def _ws_url(value: str) -> str:
    value = value.strip()
    _check_url(value, ("ws", "wss"))
    return value


def _check_url(value: str, schemes: tuple[str, ...]) -> None:
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme.lower() not in schemes
        or not parts.hostname
        or any(ch.isspace() for ch in value)
    ):
        raise PydanticCustomError("mmbot_url", "not a valid URL")


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _expand_user(value: Any) -> Any:
    return os.path.expanduser(value) if isinstance(value, str) else value


def _expected(text: str) -> dict[str, Any]:
    # Stored with the field so error messages and --help describe it in the same words.
    return {"expected": text}


_PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class KalshiSettings(BaseModel):
    """Connection, authentication and rate-limit settings for the Kalshi API."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: SecretStr | None = Field(
        default=None, description="API key id (secret: never logged or printed)"
    )
    private_key_path: Annotated[Path | None, BeforeValidator(_expand_user)] = Field(
        default=None, description="file holding the PEM private key"
    )
    private_key: SecretStr | None = Field(
        default=None, description="PEM private key text (alternative to private_key_path)"
    )
    rest_url: Annotated[str, AfterValidator(_http_url)] = Field(
        default=DEFAULT_REST_URL,
        description="base URL of the REST API",
        json_schema_extra=_expected("an http:// or https:// URL with a host"),
    )
    ws_url: Annotated[str, AfterValidator(_ws_url)] = Field(
        default=DEFAULT_WS_URL,
        description="URL of the websocket API",
        json_schema_extra=_expected("a ws:// or wss:// URL with a host"),
    )
    # Defaults are Kalshi's Basic tier: reads refill 200 tokens/s and the bucket holds 2 s of
    # budget; writes refill 100 tokens/s and hold 1 s.
    read_tokens_per_second: int = Field(
        default=200, gt=0, description="read rate-limit refill, tokens per second"
    )
    read_bucket_capacity: int = Field(
        default=400,
        ge=DEFAULT_REQUEST_COST,
        description="read rate-limit bucket size, tokens",
        json_schema_extra=_expected(
            f"a whole number of at least {DEFAULT_REQUEST_COST} (the cost of one request)"
        ),
    )
    write_tokens_per_second: int = Field(
        default=100, gt=0, description="write rate-limit refill, tokens per second"
    )
    write_bucket_capacity: int = Field(
        default=100,
        ge=DEFAULT_REQUEST_COST,
        description="write rate-limit bucket size, tokens",
        json_schema_extra=_expected(
            f"a whole number of at least {DEFAULT_REQUEST_COST} (the cost of one request)"
        ),
    )
    write_reserve_tokens: int = Field(
        default=20,
        ge=0,
        description="write tokens new quotes leave for confirmations and deletes",
    )
    request_timeout_seconds: _PositiveSeconds = Field(
        default=10.0, description="timeout for one HTTP request"
    )
    retry_deadline_seconds: _PositiveSeconds = Field(
        default=5.0, description="give up retrying a request after this long"
    )
    ws_ping_interval_seconds: _PositiveSeconds = Field(
        default=10.0, description="interval between websocket pings"
    )
    ws_ping_timeout_seconds: _PositiveSeconds = Field(
        default=10.0, description="drop the websocket if a pong takes longer than this"
    )
    # Strictly positive: exponential backoff from zero would stay at zero and hammer the API.
    ws_reconnect_min_seconds: _PositiveSeconds = Field(
        default=0.5, description="first websocket reconnect delay"
    )
    ws_reconnect_max_seconds: _PositiveSeconds = Field(
        default=30.0, description="longest websocket reconnect delay"
    )
    # Same ranges as Kalshi's sharding of the communications channel.
    shard_factor: int | None = Field(
        default=None, ge=1, le=100, description="number of shards of the RFQ feed"
    )
    shard_key: int | None = Field(
        default=None, ge=0, le=99, description="which shard this process takes (< shard_factor)"
    )

    @model_validator(mode="after")
    def _check_combinations(self) -> KalshiSettings:
        # Collected into one error so that every combination problem is reported at once.
        issues: list[_CrossFieldIssue] = []
        if self.private_key is not None and self.private_key_path is not None:
            issues.append(
                _CrossFieldIssue(
                    ("private_key", "private_key_path"),
                    "at most one of them to be set",
                    "both",
                )
            )
        if self.ws_reconnect_max_seconds < self.ws_reconnect_min_seconds:
            issues.append(
                _CrossFieldIssue(
                    ("ws_reconnect_max_seconds", "ws_reconnect_min_seconds"),
                    "the maximum to be at least the minimum",
                    f"max {self.ws_reconnect_max_seconds} < min {self.ws_reconnect_min_seconds}",
                )
            )
        if self.write_reserve_tokens + QUOTE_COST > self.write_bucket_capacity:
            issues.append(
                _CrossFieldIssue(
                    ("write_reserve_tokens", "write_bucket_capacity"),
                    f"the reserve to leave room for one quote ({QUOTE_COST} tokens) in the bucket",
                    f"reserve {self.write_reserve_tokens}, capacity {self.write_bucket_capacity}",
                )
            )
        if self.shard_key is not None and self.shard_factor is None:
            issues.append(
                _CrossFieldIssue(
                    ("shard_key", "shard_factor"),
                    "kalshi.shard_factor to be set when kalshi.shard_key is",
                    f"shard_key {self.shard_key} without a shard_factor",
                )
            )
        elif (
            self.shard_key is not None
            and self.shard_factor is not None
            and self.shard_key >= self.shard_factor
        ):
            issues.append(
                _CrossFieldIssue(
                    ("shard_key", "shard_factor"),
                    "kalshi.shard_key to be less than kalshi.shard_factor",
                    f"shard_key {self.shard_key}, shard_factor {self.shard_factor}",
                )
            )
        if issues:
            raise _cross_field_error(issues)
        return self

    def private_key_pem(self) -> bytes | None:
        """Return the PEM private key bytes from private_key or private_key_path, or None."""
        if self.private_key is not None:
            return self.private_key.get_secret_value().encode()
        if self.private_key_path is None:
            return None
        try:
            return self.private_key_path.read_bytes()
        except OSError as exc:
            # Only the path and the OS reason: the exception text could quote file contents
            # in exotic cases, and chaining it would put it in tracebacks.
            reason = exc.strerror or type(exc).__name__
            problem = ConfigProblem(
                keys=("kalshi.private_key_path",),
                note=f"cannot read {_show(str(self.private_key_path))}: {reason}",
            )
            raise ConfigError([problem]) from None


class LogSettings(BaseModel):
    """Logging settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
    ] = Field(default="INFO", description="minimum level logged")
    format: Annotated[Literal["json", "console"] | None, BeforeValidator(_lower)] = Field(
        default=None, description="json or console; unset: console on a terminal, else json"
    )

    def resolved_format(self, stream: IO[str]) -> Literal["json", "console"]:
        """Return the configured format, or console for a TTY ``stream`` and json otherwise."""
        if self.format is not None:
            return self.format
        try:
            return "console" if stream.isatty() else "json"
        except (AttributeError, ValueError):
            return "json"


# Money and sizes are Decimal: TOML floats are parsed as Decimal (see _read_toml) and
# environment values are strings, so "0.01" stays exactly one cent.
_Dollars = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
_Contracts = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]


class QuotesSettings(BaseModel):
    """How quotes are sent, kept and withdrawn."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_edge: Annotated[Decimal, Field(ge=0, lt=1, allow_inf_nan=False)] = Field(
        default=Decimal("0.01"),
        description="keep yes_bid + no_bid <= 1 - min_edge (dollars per contract)",
    )
    ttl_seconds: _PositiveSeconds = Field(
        default=10.0, description="delete a quote this long after sending it"
    )
    requote_threshold: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)] = Field(
        default=Decimal("0.02"),
        description="replace a live quote when the reference mid moves more than this (dollars)",
    )
    rest_remainder: bool = Field(
        default=False,
        description=(
            "ask the exchange to rest what a partial fill leaves; must stay false until "
            "resting orders are tracked and cancelled like quotes"
        ),
    )
    max_rfq_age_seconds: _PositiveSeconds = Field(
        default=10.0,
        description="after a reconnect, quote RFQs created meanwhile only if younger than this",
    )
    # Small on purpose: at 100 quotes/s, 16 waiting is 160 ms of queue, and a quote sent
    # later than that is seldom the one a requester takes.
    max_queued: int = Field(
        default=16,
        ge=1,
        le=10_000,
        description="most new quotes waiting for write budget; past it the least valuable is shed",
    )
    max_queue_seconds: _PositiveSeconds = Field(
        default=0.25,
        description="shed a new quote still waiting for write budget this long after its RFQ came",
    )

    @model_validator(mode="after")
    def _refuse_rest_remainder(self) -> QuotesSettings:
        # A remainder rests as an order on the book, and nothing here tracks orders: the
        # kill switch, shutdown and cancel-all would leave it live. Refused until they do.
        if self.rest_remainder:
            raise _cross_field_error(
                [
                    _CrossFieldIssue(
                        ("rest_remainder",),
                        "false: the orders a remainder rests are not yet tracked, nor "
                        "cancelled by the kill switch, shutdown or cancel-all",
                        "true",
                    )
                ]
            )
        return self


class RiskSettings(BaseModel):
    """Limits no confirmed fill may break."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_contracts_per_rfq: _Contracts = Field(
        default=Decimal(500), description="largest RFQ (contracts) to quote or confirm"
    )
    max_position_per_market: _Contracts = Field(
        default=Decimal(1000), description="largest net position in one market (contracts)"
    )
    max_exposure_dollars: _Dollars = Field(
        default=Decimal(1000),
        description="worst-case loss of positions plus fills awaiting execution (dollars)",
    )
    max_open_quotes: int = Field(default=100, gt=0, description="most quotes live at once")
    max_daily_loss_dollars: _Dollars = Field(
        default=Decimal(250), description="stop adding risk once today's loss reaches this"
    )
    kill_switch_file: Path | None = Field(
        default=None, description="while this file exists: cancel everything, quote nothing"
    )


class RouteSettings(BaseModel):
    """Markets matched by glob patterns, quoted by one strategy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: list[str] = Field(min_length=1, description="globs on the market or event ticker")
    strategy: str | None = Field(
        default=None, description="entry-point name or module:Class (default: strategies.default)"
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="parameters, over strategies.params"
    )


class StrategiesSettings(BaseModel):
    """Which strategy quotes which markets; markets no route matches are not quoted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str = Field(
        default="fixed_spread", description="strategy of routes that do not name one"
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="parameters of the default strategy"
    )
    routes: list[RouteSettings] = Field(
        default_factory=list, description="pattern -> strategy routes, first match wins"
    )


class MarketDataSettings(BaseModel):
    """Reference prices and price grids."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttl_seconds: _PositiveSeconds = Field(
        default=5.0, description="market data older than this is stale: no quote"
    )
    refresh_seconds: _PositiveSeconds = Field(
        default=1.0, description="how often quoted markets are refreshed"
    )


class JournalSettings(BaseModel):
    """The durable record of what the daemon did."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Annotated[Path, BeforeValidator(_expand_user)] = Field(
        default=Path("mmbot-journal.sqlite"), description="SQLite file (WAL mode)"
    )
    synchronous: Annotated[Literal["NORMAL", "FULL"], BeforeValidator(_upper)] = Field(
        default="NORMAL", description="SQLite synchronous mode: FULL also survives power loss"
    )


class ReconcileSettings(BaseModel):
    """Reconciling with the exchange's records."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_seconds: _PositiveSeconds = Field(
        default=30.0,
        description="reconcile positions and quotes with the exchange this often, "
        "besides at start-up and after every reconnect",
    )


class ShutdownSettings(BaseModel):
    """Stopping cleanly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_seconds: _PositiveSeconds = Field(
        default=8.0, description="time allowed to delete every open quote on shutdown"
    )


class RunSettings(BaseModel):
    """The running daemon's reporting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status_interval_seconds: _PositiveSeconds = Field(
        default=5.0, description="how often the one-line status is printed"
    )


class MetricsSettings(BaseModel):
    """Prometheus metrics and the health endpoints, served on one port."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="serve /metrics, /healthz and /readyz")
    host: Annotated[str, Field(min_length=1)] = Field(
        default="127.0.0.1",
        description="address to listen on (0.0.0.0 to be scraped from other hosts)",
    )
    port: int = Field(
        default=9100, ge=0, le=65535, description="port for /metrics, /healthz and /readyz"
    )


class DryRunSettings(BaseModel):
    """The embedded mock exchange of `mmbot run --dry-run`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rfq_rate: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        default=2.0, description="RFQs per second from simulated requesters"
    )
    markets: int = Field(default=20, gt=0, le=1000, description="simulated markets")
    seed: int = Field(default=0, description="seed of the simulation (same seed, same RFQs)")
    hvm_fraction: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = Field(
        default=0.2, description="share of High Volatility (combo) markets"
    )
    time_scale: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        default=1.0, description="multiplies confirmation windows and execution timers"
    )


# The TOML file is parsed by load_settings itself, before pydantic-settings runs: a missing
# file must be an error naming the file (TomlConfigSettingsSource silently skips it), and the
# attribution of values to sources must see exactly the data that was validated. The parsed
# data reaches the source through a ContextVar because settings_customise_sources is a
# classmethod without per-call arguments, and a ContextVar (unlike a class attribute) is safe
# with concurrent loads in threads or tasks.
_file_data: ContextVar[dict[str, Any] | None] = ContextVar("mmbot_config_file_data", default=None)


class _TomlFileSource(PydanticBaseSettingsSource):
    """Settings source yielding the TOML data parsed by the current load_settings call."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: the whole mapping is returned by __call__."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        """Return the parsed TOML data of the current load, or nothing outside a load."""
        return dict(_file_data.get() or {})


class Settings(BaseSettings):
    """All mmbot settings; build it with :func:`load_settings`, not directly."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        case_sensitive=False,
        extra="forbid",
        frozen=True,
    )

    kalshi: KalshiSettings = Field(default_factory=KalshiSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    quotes: QuotesSettings = Field(default_factory=QuotesSettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    strategies: StrategiesSettings = Field(default_factory=StrategiesSettings)
    marketdata: MarketDataSettings = Field(default_factory=MarketDataSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    shutdown: ShutdownSettings = Field(default_factory=ShutdownSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    dry_run: DryRunSettings = Field(default_factory=DryRunSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order sources: init kwargs (CLI flags) > environment > TOML file > defaults."""
        return init_settings, env_settings, _TomlFileSource(settings_cls)


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """Description of one leaf setting, addressed by its dotted key."""

    key: str
    secret: bool
    expected: str
    description: str
    default: Any
    value_type: type
    # False for lists and tables (strategy routes and parameters): no command-line flag.
    scalar: bool = True


def _walk_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            yield from _walk_fields(info.annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", info


def _base_type(annotation: Any) -> Any:
    # Strip Annotated and Optional (settings are unset by omission, so None needs no words).
    if get_origin(annotation) is Annotated:
        return _base_type(get_args(annotation)[0])
    args = get_args(annotation)
    if get_origin(annotation) is not Literal and type(None) in args:
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) == 1:
            return _base_type(rest[0])
    return annotation


def _describe_bounds(info: FieldInfo) -> str:
    bounds: dict[str, Any] = {}
    for meta in info.metadata:
        for name in ("gt", "ge", "lt", "le"):
            if isinstance(meta, getattr(annotated_types, name.capitalize())):
                bounds[name] = getattr(meta, name)
    if "ge" in bounds and "le" in bounds:
        return f" from {bounds['ge']} to {bounds['le']}"
    words = {"gt": "greater than", "ge": "of at least", "lt": "less than", "le": "of at most"}
    return "".join(f" {words[name]} {value}" for name, value in bounds.items())


def _describe_expected(info: FieldInfo, base: Any) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("expected"), str):
        return str(extra["expected"])
    if get_origin(base) is Literal:
        return "one of: " + ", ".join(str(choice) for choice in get_args(base))
    if base is int:
        return "a whole number" + _describe_bounds(info)
    if base is float:
        return "a number" + _describe_bounds(info)
    if base is Decimal:
        return "a decimal number" + _describe_bounds(info)
    if base is bool:
        return "true or false"
    if base is Path:
        return "a file path"
    if get_origin(base) is list:
        return "a list"
    if get_origin(base) is dict:
        return "a table"
    return "a string"


def _value_type(base: Any) -> type:
    if get_origin(base) is Literal:
        return str
    return base if isinstance(base, type) else str


def _build_keys() -> dict[str, ConfigKey]:
    keys: dict[str, ConfigKey] = {}
    for dotted, info in _walk_fields(Settings):
        base = _base_type(info.annotation)
        keys[dotted] = ConfigKey(
            key=dotted,
            secret=base is SecretStr,
            expected=_describe_expected(info, base),
            description=info.description or "",
            default=info.get_default(call_default_factory=True),
            value_type=_value_type(base),
            scalar=get_origin(base) not in (list, dict),
        )
    return keys


_KEYS = _build_keys()


def config_keys() -> tuple[ConfigKey, ...]:
    """Return every leaf setting, in declaration order."""
    return tuple(_KEYS.values())


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    if len(text) > _MAX_SHOWN_VALUE:
        text = text[: _MAX_SHOWN_VALUE - 3] + "..."
    # A non-secret field can still be handed key material by mistake (a PEM pasted into
    # private_key_path); error messages must not echo it.
    return redact_text(text)


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
