"""``mmbot mock-exchange``: run the mock Kalshi exchange as a standalone server.

It prints the REST and WebSocket URLs, then serves until SIGINT or SIGTERM. Every API key
that may sign requests is given with ``--public-key KEY_ID=PATH``; without one, a
throwaway Ed25519 key is generated into a private temporary directory (removed on exit)
and the environment lines that point mmbot at the mock with it are printed. That key is
only good for this mock exchange: Kalshi has never heard of it.

The ``/_mock/`` control endpoints require ``Authorization: Bearer TOKEN``. The token is
``--control-token``, else the ``MOCK_CONTROL_TOKEN`` environment variable, else a random
one; it is printed with the URLs. The server listens on 127.0.0.1 unless ``--host`` says
otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mmbot.config import Settings
from mmbot.kalshi.auth import KeyLoadError, PublicKey, load_private_key
from mmbot.mock.faults import FaultConfig, FaultConfigError
from mmbot.mock.informed import (
    DEFAULT_INFORMED_FRACTION,
    DEFAULT_INFORMED_MOVE_THRESHOLD,
    threshold_micros,
)
from mmbot.mock.server import MockConfig, MockExchange

__all__ = ["load_public_key", "register"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

#: Environment variable that sets the control token when ``--control-token`` is not given.
#: Not ``MMBOT_``-prefixed: that prefix is reserved for settings.
CONTROL_TOKEN_ENV = "MOCK_CONTROL_TOKEN"  # noqa: S105 - a variable name, not a token
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})

T = TypeVar("T")


class _UsageError(ValueError):
    """A flag has a value that cannot be used; the message names the flag."""


class _KeyError(ValueError):
    """A key file cannot be used; the message names the flag and the file."""


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
) -> None:
    """Add the ``mock-exchange`` subcommand to the ``mmbot`` parser."""
    parser = subparsers.add_parser(
        "mock-exchange",
        parents=parents,
        allow_abbrev=False,
        help="run a mock Kalshi exchange (REST + WebSocket) for dry runs and tests",
        description=(
            "Serve a simulated Kalshi RFQ exchange on loopback: REST under /trade-api/v2, "
            "the communications WebSocket at /trade-api/ws/v2, simulated requesters, and "
            "optional fault injection. Control endpoints live under /_mock/."
        ),
    )
    # Values are taken as text and checked in the handler, so that a bad one gives a
    # single line naming the flag instead of argparse's usage dump.
    add = parser.add_argument
    add(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, loopback only; anything else "
        "exposes the control endpoints to the network, guarded only by the control token)",
    )
    add("--port", default="0", metavar="N", help="port to listen on; 0 picks a free one")
    add(
        "--public-key",
        action="append",
        default=[],
        metavar="KEY_ID=PATH",
        help="accept requests signed by KEY_ID; PATH is a PEM public key, or a private key "
        "whose public half is used (repeatable). Without it a throwaway key is generated",
    )
    add(
        "--control-token",
        default=None,
        metavar="TOKEN",
        help="bearer token the /_mock/ control endpoints require (default: "
        f"${CONTROL_TOKEN_ENV}, else a random token; printed at start-up)",
    )
    add(
        "--rfq-rate",
        default="1.0",
        metavar="R",
        help="simulated RFQs per second, 0 for none (default: %(default)s)",
    )
    add(
        "--markets",
        default="20",
        metavar="N",
        help="number of simulated markets (default: %(default)s)",
    )
    add(
        "--seed",
        default="0",
        metavar="S",
        help="seed for markets, RFQ stream and faults (default: %(default)s)",
    )
    add(
        "--hvm-fraction",
        default="0.2",
        metavar="F",
        help="share of combo (HVM) markets (default: %(default)s)",
    )
    add(
        "--informed-fraction",
        default=str(DEFAULT_INFORMED_FRACTION),
        metavar="F",
        help="share of simulated RFQs from informed requesters, who pick off a quote once "
        "fair has moved against the maker (default: %(default)s)",
    )
    add(
        "--informed-move-threshold",
        default=str(DEFAULT_INFORMED_MOVE_THRESHOLD),
        metavar="D",
        help="move of fair, in dollars, an informed requester waits for (default: %(default)s)",
    )
    add(
        "--time-scale",
        default="1.0",
        metavar="X",
        help="multiplies confirmation windows, execution timers and requester timings "
        "(default: %(default)s)",
    )
    add(
        "--write-tokens-per-second",
        default="0",
        metavar="R",
        help="per-user write token bucket refill; quote create/delete cost 2 tokens, other "
        "writes 10, an unaffordable write gets 429. 0 (default) turns it off",
    )
    add(
        "--write-bucket-capacity",
        default="0",
        metavar="C",
        help="per-user write bucket size in tokens (default: one second of refill)",
    )
    faults = parser.add_argument_group("fault injection")
    for name, meta, text in (
        ("write-429-fraction", "F", "share of writes answered 429 too many requests"),
        ("write-5xx-fraction", "F", "share of writes answered 500"),
        ("latency-ms", "MS", "latency added to every REST response"),
        ("malformed-fraction", "F", "share of events preceded by a malformed frame"),
        ("duplicate-fraction", "F", "share of events sent twice"),
        ("reorder-fraction", "F", "share of events sent after the next one"),
    ):
        faults.add_argument(f"--{name}", default="0", metavar=meta, help=text)
    parser.set_defaults(func=_run)


# --------------------------------------------------------------------------- arguments


def _number(flag: str, text: str, convert: Callable[[str], T], expected: str) -> T:
    try:
        return convert(text.strip())
    except ValueError:
        raise _UsageError(f"{flag}: expected {expected}, got {text!r}") from None


def _float(
    flag: str, text: str, *, low: float, high: float = math.inf, above: bool = False
) -> float:
    value = _number(flag, text, float, "a number")
    too_low = value <= low if above else value < low
    if not math.isfinite(value) or too_low or value > high:
        bounds = f"> {low:g}" if above else f">= {low:g}"
        if high != math.inf:
            bounds = f"within [{low:g}, {high:g}]"
        raise _UsageError(f"{flag}: expected a number {bounds}, got {text!r}")
    return value


def _threshold(flag: str, text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
        threshold_micros(value)
    except (ArithmeticError, ValueError):
        raise _UsageError(
            f"{flag}: expected dollars within [0, 1) to at most 6 decimals, got {text!r}"
        ) from None
    return value


def _int(flag: str, text: str, *, low: int | None = None, high: int | None = None) -> int:
    value = _number(flag, text, int, "an integer")
    if (low is not None and value < low) or (high is not None and value > high):
        raise _UsageError(f"{flag}: expected an integer from {low} to {high}, got {text!r}")
    return value


@dataclass(frozen=True)
class _KeySpec:
    key_id: str
    path: Path


def _key_spec(text: str) -> _KeySpec:
    key_id, sep, path = text.partition("=")
    if not sep or not key_id.strip() or not path.strip():
        raise _UsageError(f"--public-key: expected KEY_ID=PATH, got {text!r}")
    return _KeySpec(key_id.strip(), Path(path.strip()).expanduser())


def load_public_key(path: Path) -> PublicKey:
    """Read a PEM public key, or the public half of a PEM private key (RSA or Ed25519)."""
    data = path.read_bytes()
    try:
        public = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        try:
            return load_private_key(data).public_key()
        except KeyLoadError as exc:
            raise _KeyError(f"not a PEM public or private key: {exc}") from None
    if not isinstance(public, rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise _KeyError(f"unsupported key type {type(public).__name__}; use RSA or Ed25519")
    return public


def _config(args: argparse.Namespace) -> MockConfig:
    try:
        faults = FaultConfig(
            write_429_fraction=_float(
                "--write-429-fraction", args.write_429_fraction, low=0, high=1
            ),
            write_5xx_fraction=_float(
                "--write-5xx-fraction", args.write_5xx_fraction, low=0, high=1
            ),
            latency_ms=_float("--latency-ms", args.latency_ms, low=0),
            malformed_fraction=_float(
                "--malformed-fraction", args.malformed_fraction, low=0, high=1
            ),
            duplicate_fraction=_float(
                "--duplicate-fraction", args.duplicate_fraction, low=0, high=1
            ),
            reorder_fraction=_float("--reorder-fraction", args.reorder_fraction, low=0, high=1),
        )
    except FaultConfigError as exc:
        raise _UsageError(str(exc)) from None
    host = str(args.host).strip()
    if not host:
        raise _UsageError("--host: expected an address to listen on")
    flag = "--control-token"
    token = args.control_token
    if token is None:
        flag, token = CONTROL_TOKEN_ENV, os.environ.get(CONTROL_TOKEN_ENV) or None
    if token is not None:
        token = token.strip()
        if len(token) < 8 or not all("!" <= c <= "~" for c in token):
            raise _UsageError(f"{flag}: expected at least 8 printable ASCII characters")
    return MockConfig(
        host=host,
        port=_int("--port", args.port, low=0, high=65535),
        seed=_int("--seed", args.seed),
        markets=_int("--markets", args.markets, low=1, high=10_000),
        rfq_rate=_float("--rfq-rate", args.rfq_rate, low=0),
        hvm_fraction=_float("--hvm-fraction", args.hvm_fraction, low=0, high=1),
        informed_fraction=_float("--informed-fraction", args.informed_fraction, low=0, high=1),
        informed_move_threshold=_threshold(
            "--informed-move-threshold", args.informed_move_threshold
        ),
        time_scale=_float("--time-scale", args.time_scale, low=0, above=True),
        faults=faults,
        write_tokens_per_second=_float(
            "--write-tokens-per-second", args.write_tokens_per_second, low=0
        ),
        write_bucket_capacity=_float("--write-bucket-capacity", args.write_bucket_capacity, low=0),
        control_token=token,
    )


def _keys(specs: Sequence[str]) -> list[tuple[str, PublicKey]]:
    keys: list[tuple[str, PublicKey]] = []
    seen: set[str] = set()
    for text in specs:
        spec = _key_spec(text)
        if spec.key_id in seen:
            raise _UsageError(f"--public-key: key id {spec.key_id!r} given twice")
        seen.add(spec.key_id)
        try:
            keys.append((spec.key_id, load_public_key(spec.path)))
        except OSError as exc:
            raise _KeyError(
                f"--public-key {spec.key_id}: cannot read {spec.path}: {exc.strerror or exc}"
            ) from None
        except _KeyError as exc:
            raise _KeyError(f"--public-key {spec.key_id}: {spec.path}: {exc}") from None
    return keys


# --------------------------------------------------------------------------- running


def _throwaway_key(directory: Path) -> tuple[str, Path, PublicKey]:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = directory / "mock-exchange-key.pem"
    # Created with 0600 from the start: there is no moment when others could read it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return f"mock-{uuid.uuid4()}", path, key.public_key()


def _say(line: str = "") -> None:
    print(line, flush=True)


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the mock exchange until SIGINT or SIGTERM."""
    del settings  # the mock needs none of the daemon's settings
    try:
        config = _config(args)
        keys = _keys(args.public_key)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _KeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR

    temp_dir: Path | None = None
    generated: tuple[str, Path] | None = None
    if not keys:
        temp_dir = Path(tempfile.mkdtemp(prefix="mmbot-mock-"))
        key_id, key_path, public = _throwaway_key(temp_dir)
        keys.append((key_id, public))
        generated = (key_id, key_path)
    try:
        return await _serve(config, keys, generated)
    finally:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


async def _serve(
    config: MockConfig,
    keys: Sequence[tuple[str, PublicKey]],
    generated: tuple[str, Path] | None,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass  # not on the main thread, or no signal support: Ctrl-C still interrupts
    try:
        try:
            mock = MockExchange(config)
            await mock.start()
        except OSError as exc:
            print(
                f"error: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return EXIT_ERROR
        try:
            for key_id, public in keys:
                mock.register_key(key_id, public)
            _banner(mock, keys, generated)
            await stop.wait()
            _say("shutting down")
        finally:
            await mock.close()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    return EXIT_OK


def _banner(
    mock: MockExchange,
    keys: Sequence[tuple[str, PublicKey]],
    generated: tuple[str, Path] | None,
) -> None:
    config = mock.config
    _say("mmbot mock exchange: simulated, nothing here reaches Kalshi")
    _say(f"REST  {mock.rest_url}")
    _say(f"WS    {mock.ws_url}")
    _say(f"TOKEN {mock.control_token}")
    _say(
        f"control endpoints under {mock.base_url}/_mock/ "
        "(faults, drop_ws, rfqs, state, rate_limit, bench) require the header "
        "Authorization: Bearer TOKEN"
    )
    if config.host not in _LOOPBACK_HOSTS:
        _say(
            f"warning: listening on {config.host}, not loopback: other hosts can reach the "
            "mock and, with the token, its control endpoints"
        )
    _say(
        f"seed {config.seed}, {config.markets} markets, {config.rfq_rate:g} RFQ/s, "
        f"time scale {config.time_scale:g}"
    )
    if config.write_tokens_per_second > 0:
        _say(
            f"write rate limit: {config.write_tokens_per_second:g} tokens/s per user, "
            f"bucket {config.write_bucket_capacity or config.write_tokens_per_second:g}"
        )
    active = {k: v for k, v in config.faults.to_dict().items() if v}
    if active:
        _say("faults: " + ", ".join(f"{k}={v:g}" for k, v in active.items()))
    if generated is not None:
        key_id, path = generated
        _say()
        _say("No --public-key given: generated a throwaway Ed25519 key. It is valid ONLY on")
        _say("this mock exchange and is deleted when it stops. Point mmbot at the mock with:")
        _say(f"MMBOT_KALSHI__KEY_ID={key_id}")
        _say(f"MMBOT_KALSHI__PRIVATE_KEY_PATH={path}")
    else:
        _say(f"accepting {len(keys)} key(s): {', '.join(k for k, _ in keys)}")
        _say()
        _say("Point mmbot at the mock with:")
    _say(f"MMBOT_KALSHI__REST_URL={mock.rest_url}")
    _say(f"MMBOT_KALSHI__WS_URL={mock.ws_url}")
    _say()
    _say("serving; press Ctrl-C to stop")
