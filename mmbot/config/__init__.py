"""Settings for mmbot, loaded from defaults, a TOML file, environment variables and CLI flags.

Precedence, highest first: command-line flags (``overrides``) > environment variables
(``MMBOT_`` prefix, ``__`` between nesting levels, e.g. ``MMBOT_KALSHI__REST_URL``) > the TOML
file (``--config PATH`` or ``MMBOT_CONFIG``) > defaults. Use :func:`load_settings`; every
problem is reported at once as a :class:`ConfigError` naming the dotted key, what was expected
and where the offending value came from, without ever showing a secret value.

The package is split by seam: :mod:`~mmbot.config.models` holds one model per TOML table and
the root :class:`Settings` with its sources, :mod:`~mmbot.config.loading` the loading and
error translation, :mod:`~mmbot.config.problems` the problem reports and
:mod:`~mmbot.config.keys` the key listing behind ``mmbot check-config``.
"""

from mmbot.config.keys import ConfigKey, config_keys
from mmbot.config.loading import load_settings, load_settings_with_sources, redacted_dump
from mmbot.config.models import (
    CONFIG_ENV_VAR,
    DEFAULT_REQUEST_COST,
    DEFAULT_REST_URL,
    DEFAULT_WS_URL,
    ENV_NESTED_DELIMITER,
    ENV_PREFIX,
    ENVIRONMENT_URLS,
    NON_SETTING_ENV_VARS,
    DryRunSettings,
    JournalSettings,
    KalshiSettings,
    LogSettings,
    MarketDataSettings,
    MetricsSettings,
    QuotesSettings,
    ReconcileSettings,
    RecordingSettings,
    RiskSettings,
    RouteSettings,
    RunSettings,
    Settings,
    ShutdownSettings,
    StrategiesSettings,
    environment_of,
)
from mmbot.config.problems import REDACTED, ConfigError, ConfigProblem

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_REQUEST_COST",
    "DEFAULT_REST_URL",
    "DEFAULT_WS_URL",
    "ENVIRONMENT_URLS",
    "ENV_NESTED_DELIMITER",
    "ENV_PREFIX",
    "NON_SETTING_ENV_VARS",
    "REDACTED",
    "ConfigError",
    "ConfigKey",
    "ConfigProblem",
    "DryRunSettings",
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
    "config_keys",
    "environment_of",
    "load_settings",
    "load_settings_with_sources",
    "redacted_dump",
]
