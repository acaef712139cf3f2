"""The settings models: one per TOML table, with its validation, and the root with its sources."""

from __future__ import annotations

import os
from contextvars import ContextVar
from decimal import Decimal
from pathlib import Path
from typing import IO, Annotated, Any, Final, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from mmbot.config.problems import (
    ConfigError,
    ConfigProblem,
    _cross_field_error,
    _CrossFieldIssue,
    _show,
)
from mmbot.kalshi.ratelimit import DEFAULT_COST, QUOTE_COST

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_REQUEST_COST",
    "DEFAULT_REST_URL",
    "DEFAULT_WS_URL",
    "ENVIRONMENT_URLS",
    "ENV_NESTED_DELIMITER",
    "ENV_PREFIX",
    "FEE_TYPES",
    "NON_SETTING_ENV_VARS",
    "DryRunSettings",
    "FeeType",
    "FeesSettings",
    "JournalSettings",
    "KalshiSettings",
    "LogSettings",
    "MarketDataSettings",
    "MetricsSettings",
    "QuotesSettings",
    "ReconcileSettings",
    "RecordingSettings",
    "RiskSettings",
    "RouteSettings",
    "RunSettings",
    "Settings",
    "ShutdownSettings",
    "StrategiesSettings",
    "environment_of",
]

ENV_PREFIX = "MMBOT_"
ENV_NESTED_DELIMITER = "__"
CONFIG_ENV_VAR = "MMBOT_CONFIG"
# MMBOT_* variables that are not settings; any other unknown MMBOT_* variable is reported,
# because a typo such as MMBOT_LOG_LEVEL (one underscore) would otherwise be silently ignored.
# MMBOT_BUILD_COMMIT is the image's build stamp (mmbot.buildinfo), not a setting.
NON_SETTING_ENV_VARS = frozenset({CONFIG_ENV_VAR, "MMBOT_BUILD_COMMIT"})

# Kalshi's environments (getting_started/api_environments.md): the recommended external-api
# hosts first, then the shared hosts Kalshi still supports. Keys work in one environment
# only: a demo key is refused by production and the reverse.
Environment = Literal["production", "demo"]
ENVIRONMENT_URLS: Final[dict[str, tuple[str, str]]] = {
    "production": (
        "https://external-api.kalshi.com/trade-api/v2",
        "wss://external-api-ws.kalshi.com/trade-api/ws/v2",
    ),
    "demo": (
        "https://external-api.demo.kalshi.co/trade-api/v2",
        "wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2",
    ),
}
_ENVIRONMENT_HOSTS: Final[dict[str, str]] = {
    "external-api.kalshi.com": "production",
    "external-api-ws.kalshi.com": "production",
    "api.elections.kalshi.com": "production",
    "external-api.demo.kalshi.co": "demo",
    "external-api-ws.demo.kalshi.co": "demo",
    "demo-api.kalshi.co": "demo",
}
DEFAULT_REST_URL, DEFAULT_WS_URL = ENVIRONMENT_URLS["production"]


def environment_of(url: str) -> str:
    """The Kalshi environment a REST or WebSocket URL points at, or ``custom`` (a mock, say)."""
    host = (urlsplit(url).hostname or "").lower()
    return _ENVIRONMENT_HOSTS.get(host, "custom")


# Kalshi charges DEFAULT_COST tokens for an ordinary request, so a bucket smaller than
# that could never admit one.
DEFAULT_REQUEST_COST = DEFAULT_COST


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
    environment: Annotated[Environment, BeforeValidator(_lower)] = Field(
        default="production",
        description="Kalshi environment: production or demo; sets rest_url and ws_url to its "
        "documented URLs unless they are given",
    )
    rest_url: Annotated[str, AfterValidator(_http_url)] = Field(
        default=DEFAULT_REST_URL,
        description="base URL of the REST API (default: the environment's)",
        json_schema_extra=_expected("an http:// or https:// URL with a host"),
    )
    ws_url: Annotated[str, AfterValidator(_ws_url)] = Field(
        default=DEFAULT_WS_URL,
        description="URL of the websocket API (default: the environment's)",
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
    # Kalshi answers unbounded or long history listings with 500/504: every listing of our
    # quotes and fills is cut into windows no wider than this, reaching this far back. The
    # quotes reconciliation needs are at most a quote lifetime plus the confirmation and
    # execution timers old; a day leaves room for a long outage. Each window costs a read
    # (10 tokens) per status listed, so windows are wide; one the exchange times out on is
    # halved until it answers.
    history_lookback_seconds: int = Field(
        default=86_400, ge=60, description="how far back quote and fill listings look, seconds"
    )
    history_window_seconds: int = Field(
        default=21_600,
        ge=60,
        description="widest min_ts..max_ts window of one quote or fill listing, seconds",
    )
    history_deadline_seconds: _PositiveSeconds = Field(
        default=30.0,
        description="give up a history window that keeps failing (5xx) after this long",
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

    @model_validator(mode="before")
    @classmethod
    def _environment_urls(cls, data: Any) -> Any:
        # The environment's URLs fill in only what is not given: an explicit URL (a mock, a
        # private link) still wins.
        if not isinstance(data, dict):
            return data
        environment = data.get("environment", "production")
        urls = (
            ENVIRONMENT_URLS.get(environment.strip().lower())
            if isinstance(environment, str)
            else None
        )
        if urls is None:
            return data
        filled = dict(data)
        filled.setdefault("rest_url", urls[0])
        filled.setdefault("ws_url", urls[1])
        return filled

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
        if self.history_window_seconds > self.history_lookback_seconds:
            issues.append(
                _CrossFieldIssue(
                    ("history_window_seconds", "history_lookback_seconds"),
                    "the window to be at most the lookback",
                    f"window {self.history_window_seconds} > "
                    f"lookback {self.history_lookback_seconds}",
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
    last_look: bool = Field(
        default=True,
        description=(
            "re-price every acceptance before confirming it; off, only quotes found on "
            "the exchange after a restart get that look"
        ),
    )
    last_look_tolerance: Annotated[Decimal, Field(ge=0, lt=1, allow_inf_nan=False)] = Field(
        default=Decimal("0.02"),
        description=(
            "decline an acceptance when the accepted side lost more than this since the "
            "quote was priced (dollars per contract)"
        ),
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


#: The values of a market's ``fee_type_override`` in Kalshi's market-lifecycle documentation.
FeeType = Literal[
    "quadratic", "quadratic_with_maker_fees", "quadratic_with_combo_maker_fees", "flat"
]
FEE_TYPES: tuple[str, ...] = get_args(FeeType)


def _power_of_ten(value: Decimal) -> Decimal:
    # Balances are floored to it with Decimal.quantize, which takes only powers of ten.
    if value.normalize().as_tuple().digits != (1,):
        raise PydanticCustomError("mmbot_precision", "not a power of ten")
    return value


class FeesSettings(BaseModel):
    """The exchange's fee schedule, for fills whose fee the exchange does not report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Annotated[FeeType, BeforeValidator(_lower)] = Field(
        default="quadratic_with_maker_fees",
        description="fee type of the markets quoted, as Kalshi's fee_type_override names it",
    )
    maker_multiplier: _Dollars = Field(
        default=Decimal("0.0175"),
        description="maker fee = multiplier x contracts x price x (1 - price), rounded up",
    )
    taker_multiplier: _Dollars = Field(
        default=Decimal("0.07"),
        description="taker fee = multiplier x contracts x price x (1 - price), rounded up",
    )
    balance_precision: Annotated[
        Decimal, Field(gt=0, le=1, allow_inf_nan=False), AfterValidator(_power_of_ten)
    ] = Field(
        default=Decimal("0.01"),
        description="the account's balance precision: 0.01, or 0.0001 for direct members",
        json_schema_extra=_expected("0.01 or 0.0001 (a power of ten, at most 1)"),
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
        default=1.0,
        description="how often quoted markets the stream does not cover freshly are polled",
    )
    stream: bool = Field(
        default=True,
        description="follow the books of quoted markets on the orderbook_delta WebSocket",
    )
    stream_linger_seconds: _PositiveSeconds = Field(
        default=60.0,
        description="keep following a market on the stream this long after its last RFQ",
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
    """The running daemon's reporting and event loop."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status_interval_seconds: _PositiveSeconds = Field(
        default=5.0, description="how often the one-line status is printed"
    )
    # Whether uvloop can be imported is a property of the machine, not of the file: it is
    # checked when `mmbot run` starts (mmbot.eventloop), so other commands still load.
    event_loop: Annotated[Literal["auto", "uvloop", "asyncio"], BeforeValidator(_lower)] = Field(
        default="auto",
        description="event loop of mmbot run: auto takes uvloop when it is installed, "
        "else asyncio's own",
    )
    shadow: bool = Field(
        default=False,
        description="shadow mode (--shadow): price every RFQ on the live feed and record "
        "what would have been quoted, but send no write request of any kind",
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


def _horizons(value: list[int]) -> list[int]:
    if not value:
        raise ValueError("needs at least one horizon")
    if any(h <= 0 for h in value):
        raise ValueError("every horizon must be a positive number of seconds")
    if len(set(value)) != len(value):
        raise ValueError("horizons must not repeat")
    return sorted(value)


class RecordingSettings(BaseModel):
    """Research recording: every RFQ, decision, outcome and markout, as Parquet files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=False, description="record this run for research (Parquet)")
    path: Annotated[Path, BeforeValidator(_expand_user)] = Field(
        default=Path("recordings"), description="directory the recording's files go into"
    )
    horizons_seconds: Annotated[list[int], AfterValidator(_horizons)] = Field(
        default_factory=lambda: [1, 10, 60, 300],
        description="markout horizons: the reference mid is recorded this many seconds "
        "after each RFQ",
        json_schema_extra={"expected": "a list of distinct positive whole seconds"},
    )
    rotate_seconds: _PositiveSeconds = Field(
        default=300.0,
        description="how often finished rows are written out as a new file (a crash loses "
        "at most this plus the longest horizon)",
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
    fees: FeesSettings = Field(default_factory=FeesSettings)
    strategies: StrategiesSettings = Field(default_factory=StrategiesSettings)
    marketdata: MarketDataSettings = Field(default_factory=MarketDataSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    shutdown: ShutdownSettings = Field(default_factory=ShutdownSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    dry_run: DryRunSettings = Field(default_factory=DryRunSettings)
    recording: RecordingSettings = Field(default_factory=RecordingSettings)

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
