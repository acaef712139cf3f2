"""The benchmark's child processes: the exchange, the daemon with its config, the baselines.

Each runs as its own process with stdout and stderr in files; the quoter under test may be
pinned to its own CPU, away from the exchange.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from mmbot.bench.metrics import scrape
from mmbot.bench.options import BenchOptions, PhaseSpec

__all__ = ["BASELINE_KEY", "DAEMON_KEY", "LEAN_KEY", "QUOTER_KEYS"]

DAEMON_KEY = "bench-daemon"
BASELINE_KEY = "bench-baseline"
LEAN_KEY = "bench-lean"
#: The key, and so the account and write bucket at the exchange, of each quoter.
QUOTER_KEYS = {"daemon": DAEMON_KEY, "baseline": BASELINE_KEY, "lean": LEAN_KEY}
# The module each baseline quoter runs as, and what it is called in progress messages.
_BASELINE_MODULES = {
    "baseline": ("mmbot.bench.baseline", "the baseline"),
    "lean": ("mmbot.bench.lean", "the lean quoter"),
}
# Exchange timers (confirmation window 30 s, execution 15 s) scaled to 3 s and 1.5 s, so
# deals settle and RFQs can be forgotten within a phase.
_TIME_SCALE = 0.1
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_key(path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # Children import the repository's packages even when run from elsewhere: the checkout
    # holding the mmbot package is three levels above this file.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


class _Proc:
    """A child process whose stdout and stderr go to files (never an undrained pipe)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        env: dict[str, str],
        cpu: int | None = None,
    ) -> None:
        self.name = name
        self.stdout_path = log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.err"
        self._out = self.stdout_path.open("wb")
        self._err = self.stderr_path.open("wb")
        self.popen = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            list(argv), stdout=self._out, stderr=self._err, env=env, stdin=subprocess.DEVNULL
        )
        if cpu is not None:
            # Set before the interpreter has started any threads, so they inherit it.
            os.sched_setaffinity(self.popen.pid, {cpu})

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.popen.pid

    def stdout(self) -> str:
        """Everything the child has printed so far."""
        return self.stdout_path.read_text(errors="replace")

    def alive(self) -> bool:
        """True while the child runs."""
        return self.popen.poll() is None

    def stop(self, timeout: float = _STOP_TIMEOUT) -> int:
        """SIGTERM, wait, SIGKILL as a last resort; return the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._out.close()
        self._err.close()
        return int(self.popen.returncode)

    def stderr_tail(self, lines: int = 15) -> str:
        """The last lines of the child's stderr, for error messages."""
        text = self.stderr_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@dataclass
class _Context:
    options: BenchOptions
    work: Path
    log_dir: Path
    control: str  # http://127.0.0.1:PORT/_mock
    rest_url: str
    ws_url: str
    keys: dict[str, Path]
    client: httpx.Client
    log: TextIO
    notes: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        print(text, file=self.log, flush=True)

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = self.client.post(self.control + path, json=dict(body or {}))
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def get(self, path: str) -> dict[str, Any]:
        response = self.client.get(self.control + path)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


def _cpus(options: BenchOptions) -> tuple[int | None, int | None]:
    """CPUs for the exchange and the quoter, or (None, None) to leave scheduling alone."""
    if not options.pin_cpus or not hasattr(os, "sched_setaffinity"):
        return None, None
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return available[0], available[1]


def _start_exchange(
    options: BenchOptions, work: Path, log_dir: Path, keys: dict[str, Path]
) -> tuple[_Proc, str, str, str, str]:
    argv = [
        sys.executable,
        "-m",
        "mmbot",
        "mock-exchange",
        "--port",
        "0",
        "--rfq-rate",
        "0",
        "--markets",
        str(options.markets),
        "--hvm-fraction",
        "0",
        "--time-scale",
        str(_TIME_SCALE),
        "--seed",
        str(options.seed),
    ]
    for key_id, path in keys.items():
        argv += ["--public-key", f"{key_id}={path}"]
    proc = _Proc("exchange", argv, log_dir, _env(MMBOT_LOG__LEVEL="WARNING"), cpu=_cpus(options)[0])
    _wait_for(lambda: "serving" in proc.stdout() or not proc.alive(), _START_TIMEOUT, "exchange")
    if not proc.alive():
        raise RuntimeError(f"the mock exchange failed to start:\n{proc.stderr_tail()}")
    lines = dict(
        line.split(None, 1)
        for line in proc.stdout().splitlines()
        if line.startswith(("REST ", "WS ", "TOKEN "))
    )
    rest_url, ws_url = lines["REST"].strip(), lines["WS"].strip()
    control = rest_url.split("/trade-api", 1)[0] + "/_mock"
    return proc, rest_url, ws_url, control, lines["TOKEN"].strip()


def _daemon_config(ctx: _Context, spec: PhaseSpec, metrics_port: int, tag: str) -> Path:
    journal = ctx.work / f"journal-{tag}.sqlite"
    text = f"""# Written by the benchmark harness for phase {spec.name}.
[kalshi]
rest_url = "{ctx.rest_url}"
ws_url = "{ctx.ws_url}"
write_tokens_per_second = {spec.write_tokens_per_second:g}
write_bucket_capacity = {spec.write_bucket_capacity:g}

[quotes]
min_edge = 0.01
ttl_seconds = 10

[risk]
max_contracts_per_rfq = 1000
max_position_per_market = 1000000
max_exposure_dollars = 10000000
max_open_quotes = 100000
max_daily_loss_dollars = 10000000

[strategies]
default = "fixed_spread"

[[strategies.routes]]
match = ["*"]

[metrics]
port = {metrics_port}

[journal]
path = "{journal}"

[log]
level = "INFO"
format = "json"

[run]
status_interval_seconds = 5
"""
    if ctx.options.daemon_event_loop is not None:
        text += f'event_loop = "{ctx.options.daemon_event_loop}"\n'
    if ctx.options.daemon_recording:
        # The research recording on, to measure what it costs the hot path.
        recordings = ctx.work / f"recording-{tag}"
        text += f'\n[recording]\nenabled = true\npath = "{recordings}"\n'
    if ctx.options.daemon_md_stream is not None:
        stream = "true" if ctx.options.daemon_md_stream else "false"
        text += f"\n[marketdata]\nstream = {stream}\n"
    if ctx.options.daemon_last_look is not None:
        # Appended as a second [quotes] table would be a TOML error: a dotted key instead.
        look = "true" if ctx.options.daemon_last_look else "false"
        text = text.replace("[quotes]\n", f"[quotes]\nlast_look = {look}\n", 1)
    path = ctx.work / f"daemon-{tag}.toml"
    path.write_text(text)
    return path


class _Quoter:
    """The process of one phase: the daemon or a baseline quoter, started and stopped."""

    def __init__(self, ctx: _Context, spec: PhaseSpec, tag: str) -> None:
        self.ctx = ctx
        self.spec = spec
        self.metrics_url: str | None = None
        if spec.quoter == "daemon":
            port = _free_port()
            config = _daemon_config(ctx, spec, port, tag)
            self.metrics_url = f"http://127.0.0.1:{port}"
            env = _env(
                MMBOT_KALSHI__KEY_ID=DAEMON_KEY,
                MMBOT_KALSHI__PRIVATE_KEY_PATH=str(ctx.keys[DAEMON_KEY]),
            )
            argv = [sys.executable, "-m", "mmbot", "run", "--config", str(config)]
            self.proc = _Proc(f"daemon-{tag}", argv, ctx.log_dir, env, cpu=_cpus(ctx.options)[1])
            _wait_for(self._ready, _START_TIMEOUT, "the daemon's /readyz")
        else:
            module, what = _BASELINE_MODULES[spec.quoter]
            key = QUOTER_KEYS[spec.quoter]
            argv = [
                sys.executable,
                "-m",
                module,
                "--rest-url",
                ctx.rest_url,
                "--ws-url",
                ctx.ws_url,
                "--key-id",
                key,
                "--key-path",
                str(ctx.keys[key]),
            ]
            if spec.quoter == "lean":
                argv += ["--event-loop", ctx.options.lean_event_loop]
            self.proc = _Proc(
                f"{spec.quoter}-{tag}", argv, ctx.log_dir, _env(), cpu=_cpus(ctx.options)[1]
            )
            _wait_for(
                lambda: "ready" in self.proc.stdout() or not self.proc.alive(),
                _START_TIMEOUT,
                what,
            )
        if not self.proc.alive():
            raise RuntimeError(f"{self.proc.name} exited early:\n{self.proc.stderr_tail()}")
        # The subscription is acknowledged before the exchange counts the connection.
        _wait_for(lambda: ctx.get("/state")["ws_connections"] >= 1, _START_TIMEOUT, "its WebSocket")

    def _ready(self) -> bool:
        if not self.proc.alive():
            return True
        try:
            return httpx.get(f"{self.metrics_url}/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """The daemon's metrics now ({} for a baseline or when unreachable)."""
        if self.metrics_url is None:
            return {}
        try:
            return scrape(self.metrics_url + "/metrics")
        except httpx.HTTPError:
            return {}
