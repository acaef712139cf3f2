"""Build the exchange clients from settings: the one place config meets ``mmbot.kalshi``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mmbot.config import (
    ConfigError,
    ConfigProblem,
    KalshiSettings,
    QuotesSettings,
    environment_of,
)
from mmbot.kalshi.auth import KeyLoadError, Signer
from mmbot.kalshi.bookfeed import OrderbookFeed
from mmbot.kalshi.history import HistoryWindows
from mmbot.kalshi.rest import KalshiRestClient, ResponseObserver
from mmbot.kalshi.ws import CommunicationsStream
from mmbot.logs import get_logger

__all__ = [
    "auth_refused_message",
    "build_communications_stream",
    "build_orderbook_feed",
    "build_rest_client",
    "build_signer",
    "describe_exchange",
    "warn_if_key_file_is_exposed",
]

_log = get_logger("mmbot.clients")

# The one default lives in the settings model; callers without settings of quotes (the
# operator commands, which create none) get the same.
_MAX_QUEUED_DEFAULT = QuotesSettings().max_queued

# Permission bits that let anyone but the owner read (or replace) the key file.
_EXPOSING_BITS = stat.S_IRWXG | stat.S_IRWXO


def describe_exchange(kalshi: KalshiSettings) -> str:
    """Which exchange the settings point at: ``Kalshi demo (URL)``, or the URL alone."""
    environment = environment_of(kalshi.rest_url)
    if environment == "custom":
        return kalshi.rest_url
    return f"Kalshi {environment} ({kalshi.rest_url})"


def auth_refused_message(exc: Exception, kalshi: KalshiSettings) -> str:
    """The one line for a refused signature, naming the environment that refused it."""
    message = (
        f"authentication refused ({exc}); check kalshi.key_id, the private key and the system clock"
    )
    environment = environment_of(kalshi.rest_url)
    if environment == "custom":
        return message
    # Kalshi's keys work in one environment only, and nothing in a key says which.
    other = "production" if environment == "demo" else "demo"
    return (
        f"{message}. This is Kalshi's {environment} environment ({kalshi.rest_url}): "
        f"a {other} key is refused here (if the key is one, set kalshi.environment = "
        f'"{other}")'
    )


def warn_if_key_file_is_exposed(path: Path) -> bool:
    """Log a ``private_key_permissions`` warning if group or others may access ``path``.

    Returns whether it warned. Only the path and its mode are logged, never the contents.
    """
    if os.name != "posix":
        return False  # POSIX modes say nothing about who may read a file elsewhere
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return False  # reading it is what reports a missing or unreadable file
    if not mode & _EXPOSING_BITS:
        return False
    _log.warning(
        "private_key_permissions",
        path=str(path),
        mode=f"{mode:04o}",
        problem="the private key file is accessible to group or others",
        fix=f"chmod 600 {path}",
    )
    return True


def build_signer(settings: KalshiSettings) -> Signer:
    """Load the configured key into a signer, or raise ConfigError naming every key at fault."""
    problems: list[ConfigProblem] = []
    if settings.key_id is None:
        problems.append(
            ConfigProblem(keys=("kalshi.key_id",), note="is not set; it is needed to sign requests")
        )
    try:
        pem = settings.private_key_pem()
    except ConfigError as exc:
        problems.extend(exc.problems)
        pem = None
    else:
        if pem is None:
            problems.append(
                ConfigProblem(
                    keys=("kalshi.private_key_path", "kalshi.private_key"),
                    note="neither is set; one of them must hold the PEM private key",
                )
            )
    if problems or settings.key_id is None or pem is None:
        raise ConfigError(problems)
    if settings.private_key is None and settings.private_key_path is not None:
        warn_if_key_file_is_exposed(settings.private_key_path)
    try:
        return Signer.from_pem(settings.key_id.get_secret_value(), pem)
    except KeyLoadError as exc:
        key = (
            "kalshi.private_key" if settings.private_key is not None else "kalshi.private_key_path"
        )
        raise ConfigError([ConfigProblem(keys=(key,), note=str(exc))]) from None


def build_rest_client(
    settings: KalshiSettings,
    signer: Signer | None,
    *,
    on_response: ResponseObserver | None = None,
    max_queued_quotes: int = _MAX_QUEUED_DEFAULT,
    read_only: bool = False,
) -> KalshiRestClient:
    """Create the REST client with the configured URL, buckets, timeout and retry deadline.

    ``read_only`` (shadow mode): every request but a GET raises ShadowWriteRefused.
    """
    return KalshiRestClient(
        settings.rest_url,
        signer,
        read_tokens_per_second=settings.read_tokens_per_second,
        read_bucket_capacity=settings.read_bucket_capacity,
        write_tokens_per_second=settings.write_tokens_per_second,
        write_bucket_capacity=settings.write_bucket_capacity,
        write_reserve_tokens=settings.write_reserve_tokens,
        max_queued_quotes=max_queued_quotes,
        timeout_seconds=settings.request_timeout_seconds,
        retry_deadline_seconds=settings.retry_deadline_seconds,
        on_response=on_response,
        read_only=read_only,
        history=HistoryWindows(
            lookback_seconds=settings.history_lookback_seconds,
            window_seconds=settings.history_window_seconds,
            deadline_seconds=settings.history_deadline_seconds,
        ),
    )


def build_communications_stream(
    settings: KalshiSettings, signer: Signer | None
) -> CommunicationsStream:
    """Create the communications stream with the configured URL, sharding and keep-alive."""
    return CommunicationsStream(
        settings.ws_url,
        signer,
        shard_factor=settings.shard_factor,
        shard_key=settings.shard_key,
        ping_interval_seconds=settings.ws_ping_interval_seconds,
        ping_timeout_seconds=settings.ws_ping_timeout_seconds,
        reconnect_min_seconds=settings.ws_reconnect_min_seconds,
        reconnect_max_seconds=settings.ws_reconnect_max_seconds,
        open_timeout_seconds=settings.request_timeout_seconds,
    )


def build_orderbook_feed(
    settings: KalshiSettings, signer: Signer | None, *, linger_seconds: float
) -> OrderbookFeed:
    """Create the order-book feed on the same WebSocket URL and keep-alive as the stream."""
    return OrderbookFeed(
        settings.ws_url,
        signer,
        linger_seconds=linger_seconds,
        ping_interval_seconds=settings.ws_ping_interval_seconds,
        ping_timeout_seconds=settings.ws_ping_timeout_seconds,
        reconnect_min_seconds=settings.ws_reconnect_min_seconds,
        reconnect_max_seconds=settings.ws_reconnect_max_seconds,
        open_timeout_seconds=settings.request_timeout_seconds,
    )
