"""``mmbot healthcheck``: probe a running daemon's ``/readyz`` (or ``/healthz``) endpoint.

Meant for container health checks and scripts: it reads the same settings as ``mmbot run``
(file, environment, flags) to find the metrics server, exits 0 when the endpoint answers
200, and otherwise prints one line saying why and exits 1. It never prints a traceback.
"""

from __future__ import annotations

import argparse
import http.client
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from mmbot.cli.argtypes import positive_seconds
from mmbot.config import MetricsSettings, Settings

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "ProbeResult", "probe", "probe_address", "register"]

DEFAULT_TIMEOUT_SECONDS = 2.0

# A /readyz body is a few hundred bytes; anything much larger is not mmbot answering.
_MAX_BODY_BYTES = 64 * 1024

# A server bound to every interface is reached through loopback of the same family: asyncio
# makes IPv6 listening sockets IPv6-only, so "::" does not accept 127.0.0.1.
_WILDCARD_TO_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one probe: whether it passed and a one-line explanation."""

    ok: bool
    message: str


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
) -> None:
    """Add ``mmbot healthcheck``."""
    parser = subparsers.add_parser(
        "healthcheck",
        parents=parents,
        help="exit 0 if the running daemon is ready (GET /readyz), else say why and exit 1",
        description=(
            "Probe the metrics server of a running `mmbot run` at metrics.host:metrics.port "
            "(127.0.0.1 when it listens on 0.0.0.0). Exit 0 when it answers 200, else print "
            "why and exit 1."
        ),
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="probe /healthz (the process is serving) instead of /readyz (ready to quote)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"give up waiting for an answer after this long (default: {DEFAULT_TIMEOUT_SECONDS})",
    )
    parser.set_defaults(func=_healthcheck)


def probe_address(metrics: MetricsSettings) -> tuple[str, int]:
    """Return the host and port to probe for a server started with ``metrics``."""
    host = _WILDCARD_TO_LOOPBACK.get(metrics.host, metrics.host)
    return host, metrics.port


def _url(host: str, port: int, path: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{path}"


def probe(host: str, port: int, path: str, timeout: float) -> ProbeResult:
    """GET ``path`` from ``host``:``port``; pass on 200, else explain the failure in one line."""
    url = _url(host, port, path)
    try:
        # Inside the try: the constructor itself refuses a host with invalid characters.
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.request("GET", path, headers={"Accept": "application/json"})
            response = connection.getresponse()
            body = response.read(_MAX_BODY_BYTES)
        finally:
            connection.close()
    except ConnectionRefusedError:
        return ProbeResult(False, f"connection refused on {url} (is `mmbot run` up?)")
    except TimeoutError:
        return ProbeResult(False, f"no answer from {url} within {timeout:g} s")
    except http.client.InvalidURL:
        return ProbeResult(False, f"metrics.host {host!r} is not a valid host name")
    except http.client.HTTPException as exc:
        return ProbeResult(False, f"{url} did not answer HTTP ({type(exc).__name__})")
    except (OSError, ValueError) as exc:
        # OSError: unreachable, unknown host...; ValueError: a host name IDNA cannot encode.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return ProbeResult(False, f"cannot reach {url}: {reason}")
    if response.status == 200:
        return ProbeResult(True, f"ok: {url} answered 200")
    reasons = _reasons(body)
    if reasons is not None:
        return ProbeResult(False, f"not ready: {reasons} ({url} answered {response.status})")
    return ProbeResult(False, f"{url} answered HTTP {response.status} {response.reason}")


def _reasons(body: bytes) -> str | None:
    # The /readyz body of a 503 lists why; any other body is not one of ours.
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("reasons"), list):
        return None
    reasons = [str(reason) for reason in data["reasons"]]
    return "; ".join(reasons) if reasons else "no reason given"


def _healthcheck(args: argparse.Namespace, settings: Settings) -> int:
    metrics = settings.metrics
    if not metrics.enabled:
        _fail("metrics.enabled is false, so no /readyz or /healthz is served to check")
        return 1
    if metrics.port == 0:
        _fail("metrics.port is 0 (a free port chosen at start-up); set a fixed port to probe")
        return 1
    host, port = probe_address(metrics)
    result = probe(host, port, "/healthz" if args.live else "/readyz", args.timeout)
    if not result.ok:
        _fail(result.message)
        return 1
    print(result.message)
    return 0


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
