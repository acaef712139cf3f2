"""The benchmark harness: one mock exchange process, the daemon and the naive baseline.

Every phase runs against the same exchange process, which emits ``rfq_created`` at a
fixed rate and timestamps frames and requests on its own clock (see
:class:`mmbot.mock.server.BenchProbe`). The harness starts and stops the quoter of each
phase as its own process, reads its CPU time and memory from ``/proc``, scrapes the
daemon's ``/metrics``, and at the end prints a table, writes JSON and draws a CDF plot.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from prometheus_client.parser import text_string_to_metric_families

from mmbot.bench.procs import cpu_seconds, rss_bytes
from mmbot.bench.stats import cdf_points, ratio, summarize_ns

__all__ = ["BenchOptions", "PhaseSpec", "run_bench"]

DAEMON_KEY = "bench-daemon"
BASELINE_KEY = "bench-baseline"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Exchange timers (confirmation window 30 s, execution 15 s) scaled to 3 s and 1.5 s, so
# deals settle and RFQs can be forgotten within a phase.
_TIME_SCALE = 0.1
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 20.0
_MB = 1024 * 1024


@dataclass(frozen=True)
class PhaseSpec:
    """One measured phase: who quotes, at what rate, against which write budget."""

    name: str
    quoter: str  # "daemon" or "baseline"
    rate: float
    #: Mock and daemon write budget, tokens/s and capacity (quote create = 2 tokens).
    write_tokens_per_second: float
    write_bucket_capacity: float


@dataclass
class BenchOptions:
    """How to run the benchmark; :meth:`quick` and :meth:`full` give the documented sets."""

    low_rate: float = 100.0
    high_rate: float = 1000.0
    warmup_seconds: float = 10.0
    measure_seconds: float = 60.0
    #: Write budget of the throttled phase: 200 tokens/s = 100 quote creations/s.
    budget_tokens_per_second: float = 200.0
    budget_capacity: float = 200.0
    #: Budget of the latency phase: generous, so it measures latency rather than shedding.
    open_tokens_per_second: float = 5000.0
    open_capacity: float = 5000.0
    markets: int = 100
    accept_fraction: float = 0.1
    rfq_lifetime_seconds: float = 3.0
    baseline_high: bool = True
    soak: bool = True
    soak_rate: float = 1000.0
    soak_rfqs: int = 1_000_000
    soak_checkpoint: int = 100_000
    soak_max_seconds: float = 1200.0
    seed: int = 0
    #: Pin the exchange to CPU 0 and the quoter under test to CPU 1 (on 2+ CPUs): the
    #: exchange stands in for Kalshi's remote machine, so it should not steal the
    #: quoter's core.
    pin_cpus: bool = True
    quick: bool = False
    json_out: Path | None = None
    plot: Path | None = None
    log_dir: Path | None = None
    phases: tuple[str, ...] = ()

    @classmethod
    def quick_run(cls) -> BenchOptions:
        """Short phases, no soak: under two minutes on a 2-core machine."""
        return cls(warmup_seconds=3.0, measure_seconds=10.0, soak=False, quick=True)

    def phase_specs(self) -> list[PhaseSpec]:
        """The phases this run measures, in order."""
        specs = [
            PhaseSpec(
                "daemon_low",
                "daemon",
                self.low_rate,
                self.open_tokens_per_second,
                self.open_capacity,
            ),
            PhaseSpec(
                "baseline_low",
                "baseline",
                self.low_rate,
                self.open_tokens_per_second,
                self.open_capacity,
            ),
            PhaseSpec(
                "daemon_high",
                "daemon",
                self.high_rate,
                self.budget_tokens_per_second,
                self.budget_capacity,
            ),
        ]
        if self.baseline_high:
            specs.append(
                PhaseSpec(
                    "baseline_high",
                    "baseline",
                    self.high_rate,
                    self.budget_tokens_per_second,
                    self.budget_capacity,
                )
            )
        if self.phases:
            specs = [s for s in specs if s.name in self.phases]
        return specs


# --------------------------------------------------------------------------- processes


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
    # Children import the repository's packages even when run from elsewhere.
    root = str(Path(__file__).resolve().parent.parent)
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


# --------------------------------------------------------------------------- metrics


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus samples by name: ``{name: [(labels, value), ...]}``."""
    text = httpx.get(url, timeout=5.0).text
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def _metric_sum(
    metrics: Mapping[str, list[tuple[dict[str, str], float]]],
    name: str,
    where: Callable[[dict[str, str]], bool] = lambda _: True,
) -> float | None:
    samples = metrics.get(name)
    if samples is None:
        return None
    return sum(value for labels, value in samples if where(labels))


def _by_label(
    metrics: Mapping[str, list[tuple[dict[str, str], float]]], name: str, label: str
) -> dict[str, float]:
    return {labels.get(label, ""): value for labels, value in metrics.get(name, [])}


def _counter_delta(
    before: Mapping[str, list[tuple[dict[str, str], float]]],
    after: Mapping[str, list[tuple[dict[str, str], float]]],
    name: str,
    label: str | None = None,
) -> Any:
    """A counter's increase over the window: a number, a dict by label, or None if absent."""
    if name not in after:
        return None
    if label is None:
        return (_metric_sum(after, name) or 0.0) - (_metric_sum(before, name) or 0.0)
    start = _by_label(before, name, label)
    return {k: v - start.get(k, 0.0) for k, v in _by_label(after, name, label).items()}


# Queue-depth gauges the daemon may export; absent ones are reported as "n/a".
QUEUE_GAUGES = (
    "mmbot_quote_queue_depth",
    "mmbot_quote_queue_peak",
    "mmbot_journal_backlog_rows",
    "mmbot_rate_limit_waiters",
    "mmbot_tasks_in_flight",
)


def _gauges(metrics: Mapping[str, list[tuple[dict[str, str], float]]]) -> dict[str, Any]:
    """Queue gauges flattened to ``name`` or ``name{label=value}``; None when absent."""
    out: dict[str, Any] = {}
    for name in QUEUE_GAUGES:
        samples = metrics.get(name)
        if samples is None:
            out[name] = None
            continue
        for labels, value in samples:
            tag = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            out[f"{name}{{{tag}}}" if tag else name] = value
    return out


# --------------------------------------------------------------------------- the run


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
    path = ctx.work / f"daemon-{tag}.toml"
    path.write_text(text)
    return path


class _Quoter:
    """The process of one phase: the daemon or the baseline, started and stopped."""

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
            argv = [
                sys.executable,
                "-m",
                "mmbot.bench.baseline",
                "--rest-url",
                ctx.rest_url,
                "--ws-url",
                ctx.ws_url,
                "--key-id",
                BASELINE_KEY,
                "--key-path",
                str(ctx.keys[BASELINE_KEY]),
            ]
            self.proc = _Proc(
                f"baseline-{tag}", argv, ctx.log_dir, _env(), cpu=_cpus(ctx.options)[1]
            )
            _wait_for(
                lambda: "ready" in self.proc.stdout() or not self.proc.alive(),
                _START_TIMEOUT,
                "the baseline",
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
        """The daemon's metrics now ({} for the baseline or when unreachable)."""
        if self.metrics_url is None:
            return {}
        try:
            return scrape(self.metrics_url + "/metrics")
        except httpx.HTTPError:
            return {}


def _set_budget(ctx: _Context, spec: PhaseSpec) -> None:
    """Give the exchange's per-user write bucket the phase's budget."""
    ctx.post(
        "/rate_limit",
        {
            "write_tokens_per_second": spec.write_tokens_per_second,
            "write_bucket_capacity": spec.write_bucket_capacity,
        },
    )


def _start_flow(ctx: _Context, spec: PhaseSpec, *, keep_samples: bool) -> None:
    """Start the exchange's RFQ source at the phase's rate."""
    options = ctx.options
    ctx.post(
        "/bench/start",
        {
            "rate": spec.rate,
            "accept_fraction": options.accept_fraction,
            "lifetime_seconds": options.rfq_lifetime_seconds,
            "seed": options.seed,
            "keep_samples": keep_samples,
        },
    )


def _run_phase(ctx: _Context, spec: PhaseSpec) -> dict[str, Any]:
    options = ctx.options
    ctx.say(
        f"[bench] phase {spec.name}: {spec.quoter} at {spec.rate:g} RFQ/s, write budget "
        f"{spec.write_tokens_per_second:g} tokens/s (capacity {spec.write_bucket_capacity:g})"
    )
    _set_budget(ctx, spec)
    quoter = _Quoter(ctx, spec, spec.name)
    exit_code: int | None = None
    try:
        _start_flow(ctx, spec, keep_samples=True)
        time.sleep(options.warmup_seconds)
        # The measured window starts here: samples, 429 counts and CPU time from now on.
        before = quoter.metrics()
        cpu0 = cpu_seconds(quoter.proc.pid)
        ctx.post("/bench/reset")
        wall0 = time.monotonic()
        time.sleep(options.measure_seconds)
        state = ctx.get("/bench")
        cpu1 = cpu_seconds(quoter.proc.pid)
        wall = time.monotonic() - wall0
        after = quoter.metrics()
        memory = rss_bytes(quoter.proc.pid)
        ctx.post("/bench/stop")
    finally:
        # An overloaded baseline's loop may never get to its SIGTERM handler: do not wait
        # long before SIGKILL (the daemon gets its full shutdown time).
        exit_code = quoter.proc.stop(3.0 if spec.quoter == "baseline" else _STOP_TIMEOUT)
    if spec.quoter == "daemon" and exit_code != 0:
        ctx.notes.append(f"{spec.name}: the daemon exited with code {exit_code} on SIGTERM")
    counts = _last_json_line(quoter.proc.stdout()) if spec.quoter == "baseline" else None
    return _phase_result(spec, state, before, after, cpu1 - cpu0, wall, memory, exit_code, counts)


def _last_json_line(text: str) -> dict[str, int] | None:
    """The baseline's closing counters (whole run, warm-up included), if it printed them."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                data: dict[str, int] = json.loads(line)
            except ValueError:
                return None
            return data
    return None


def _phase_result(
    spec: PhaseSpec,
    state: Mapping[str, Any],
    before: Mapping[str, list[tuple[dict[str, str], float]]],
    after: Mapping[str, list[tuple[dict[str, str], float]]],
    cpu: float,
    wall: float,
    memory: Mapping[str, int],
    exit_code: int | None,
    client_counts: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    source = state["source"] or {}
    created = int(source.get("rfqs_created", 0))
    key = DAEMON_KEY if spec.quoter == "daemon" else BASELINE_KEY
    rate_limited = int(state["rate_limit"]["rate_limited_by_user"].get(key, 0))
    shed = _counter_delta(before, after, "mmbot_rfqs_skipped_total", "reason")
    skipped_total = None if shed is None else sum(shed.values())
    shed_by_reason = (
        None if shed is None else {k: v for k, v in shed.items() if k.startswith("shed_")}
    )
    quoted = int(source.get("rfqs_quoted", 0))
    offered_contracts = int(source.get("offered_contracts", 0))
    quoted_contracts = int(source.get("quoted_contracts", 0))
    result: dict[str, Any] = {
        "quoter": spec.quoter,
        "offered_rate": spec.rate,
        "write_tokens_per_second": spec.write_tokens_per_second,
        "write_bucket_capacity": spec.write_bucket_capacity,
        "window_seconds": round(wall, 3),
        "rfqs": created,
        "achieved_rate": round(created / wall, 2) if wall > 0 else None,
        "rfqs_lagged_by_exchange": int(source.get("lagged", 0)),
        "rfqs_quoted": quoted,
        "acceptances": int(source.get("acceptances", 0)),
        "confirms": int(state.get("confirms_matched", 0)),
        "rfq_to_quote": summarize_ns(state["rfq_to_quote_ns"]),
        "accept_to_confirm": summarize_ns(state["accept_to_confirm_ns"]),
        "cpu_seconds": round(cpu, 3),
        "cpu_seconds_per_1000_rfqs": round(cpu / created * 1000, 4) if created else None,
        "peak_rss_mb": round(memory.get("VmHWM", 0) / _MB, 1),
        "rss_mb": round(memory.get("VmRSS", 0) / _MB, 1),
        "http_429": rate_limited,
        "shed": None if shed_by_reason is None else int(sum(shed_by_reason.values())),
        "shed_by_reason": shed_by_reason,
        "skipped_total": skipped_total,
        "skipped_by_reason": shed,
        "quotes_created_daemon": _counter_delta(before, after, "mmbot_quotes_created_total"),
        "daemon_rate_limited": _counter_delta(before, after, "mmbot_rate_limited_total"),
        "offered_mean_contracts": round(offered_contracts / created, 3) if created else None,
        "quoted_mean_contracts": round(quoted_contracts / quoted, 3) if quoted else None,
        "quotes_deleted_by_reason": _counter_delta(
            before, after, "mmbot_quotes_deleted_total", "reason"
        ),
        "rest_requests_by_endpoint": _counter_delta(
            before, after, "mmbot_rest_requests_total", "endpoint"
        ),
        "queues": _gauges(after) if spec.quoter == "daemon" else None,
        "client_counts": client_counts,
        "exit_code": exit_code,
        "_samples": {
            "rfq_to_quote_ns": state["rfq_to_quote_ns"],
            "accept_to_confirm_ns": state["accept_to_confirm_ns"],
        },
    }
    return result


def _run_soak(ctx: _Context) -> dict[str, Any]:
    options = ctx.options
    spec = PhaseSpec(
        "soak",
        "daemon",
        options.soak_rate,
        options.budget_tokens_per_second,
        options.budget_capacity,
    )
    ctx.say(
        f"[bench] soak: daemon at {spec.rate:g} RFQ/s offered until {options.soak_rfqs:,} "
        f"RFQs processed (at most {options.soak_max_seconds:g}s)"
    )
    _set_budget(ctx, spec)
    quoter = _Quoter(ctx, spec, "soak")
    start = time.monotonic()
    rss_at: dict[str, float] = {}
    processed = 0.0
    exit_code: int | None = None
    try:
        _start_flow(ctx, spec, keep_samples=False)
        while time.monotonic() - start < options.soak_max_seconds:
            time.sleep(1.0)
            processed = _metric_sum(quoter.metrics(), "mmbot_rfqs_received_total") or 0.0
            if processed >= options.soak_checkpoint and "at_checkpoint" not in rss_at:
                rss_at["at_checkpoint"] = rss_bytes(quoter.proc.pid)["VmRSS"] / _MB
                ctx.say(
                    f"[bench] soak: {processed:,.0f} RFQs, RSS {rss_at['at_checkpoint']:.1f} MB"
                )
            if processed >= options.soak_rfqs:
                rss_at["at_end"] = rss_bytes(quoter.proc.pid)["VmRSS"] / _MB
                break
        elapsed = time.monotonic() - start
        final = quoter.metrics()
        source = ctx.post("/bench/stop").get("source") or {}
        overflows = int(ctx.get("/state")["stats"]["ws_overflows"])
    finally:
        exit_code = quoter.proc.stop()
    growth = None
    if "at_checkpoint" in rss_at and "at_end" in rss_at:
        growth = (rss_at["at_end"] - rss_at["at_checkpoint"]) / rss_at["at_checkpoint"] * 100
    shed = _by_label(final, "mmbot_rfqs_skipped_total", "reason") if final else {}
    return {
        "offered_rate": spec.rate,
        "target_rfqs": options.soak_rfqs,
        "checkpoint_rfqs": options.soak_checkpoint,
        "rfqs_processed": int(processed),
        "run_seconds": round(elapsed, 1),
        "rss_mb_at_checkpoint": round(rss_at.get("at_checkpoint", math.nan), 1)
        if "at_checkpoint" in rss_at
        else None,
        "rss_mb_at_end": round(rss_at["at_end"], 1) if "at_end" in rss_at else None,
        "rss_growth_pct": None if growth is None else round(growth, 2),
        "shed_by_reason": {k: v for k, v in shed.items() if k.startswith("shed_")},
        "rfqs_emitted": int(source.get("rfqs_created", 0)),
        "rfqs_lagged_by_exchange": int(source.get("lagged", 0)),
        "ws_overflows_total": overflows,
        "ws_reconnects": _metric_sum(final, "mmbot_ws_reconnects_total"),
        "exit_code": exit_code,
    }


def run_bench(options: BenchOptions, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Run every phase, print the table, write the JSON and the plot; return the report."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mmbot-bench-") as tmp:
        work = Path(tmp)
        log_dir = options.log_dir or work
        log_dir.mkdir(parents=True, exist_ok=True)
        keys = {DAEMON_KEY: work / "daemon.pem", BASELINE_KEY: work / "baseline.pem"}
        for path in keys.values():
            _write_key(path)
        exchange, rest_url, ws_url, control, token = _start_exchange(options, work, log_dir, keys)
        phases: dict[str, Any] = {}
        soak: dict[str, Any] | None = None
        try:
            # The mock's control endpoints want its token (printed in its banner).
            auth = {"Authorization": f"Bearer {token}"}
            with httpx.Client(timeout=30.0, headers=auth) as client:
                ctx = _Context(
                    options, work, log_dir, control, rest_url, ws_url, keys, client, sys.stderr
                )
                for spec in options.phase_specs():
                    phases[spec.name] = _run_phase(ctx, spec)
                if options.soak and (not options.phases or "soak" in options.phases):
                    soak = _run_soak(ctx)
                notes = ctx.notes
        finally:
            exchange.stop()
    report = build_report(options, phases, soak, time.monotonic() - started, notes)
    print(format_table(report), file=out, flush=True)
    json_out = options.json_out or RESULTS_DIR / (
        "bench-quick.json" if options.quick else "bench.json"
    )
    plot = options.plot or json_out.with_suffix(".png")
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(_public(report), indent=2) + "\n")
    plotted = draw_cdf(phases, plot)
    print(f"JSON: {json_out}", file=out)
    print(f"plot: {plot if plotted else 'not drawn (matplotlib is not installed)'}", file=out)
    return report


def _public(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report without raw samples (they go into the plot, not the JSON)."""
    out = dict(report)
    out["phases"] = {
        name: {k: v for k, v in phase.items() if k != "_samples"}
        for name, phase in report["phases"].items()
    }
    return out


# --------------------------------------------------------------------------- the report


def _get(phase: Mapping[str, Any] | None, *path: str) -> Any:
    value: Any = phase
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _check(value: Any, limit: float, *, at_most: bool = True) -> bool | None:
    if value is None:
        return None
    return bool(value <= limit) if at_most else bool(value >= limit)


def build_report(
    options: BenchOptions,
    phases: Mapping[str, Any],
    soak: Mapping[str, Any] | None,
    wall_seconds: float,
    notes: Sequence[str],
) -> dict[str, Any]:
    """Phases, comparisons and target verdicts as one JSON-ready mapping."""
    dl, bl = phases.get("daemon_low"), phases.get("baseline_low")
    dh, bh = phases.get("daemon_high"), phases.get("baseline_high")
    comparisons: dict[str, Any] = {}
    for label, d, b in (("low", dl, bl), ("high", dh, bh)):
        comp: dict[str, Any] = {}
        for metric in ("rfq_to_quote", "accept_to_confirm"):
            for stat in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
                comp[f"{metric}_{stat}"] = ratio(_get(d, metric, stat), _get(b, metric, stat))
        for metric in ("cpu_seconds_per_1000_rfqs", "peak_rss_mb", "http_429"):
            comp[metric] = ratio(_get(d, metric), _get(b, metric))
        comparisons[f"daemon_over_baseline_{label}"] = comp
    ev_ratio = ratio(_get(dh, "quoted_mean_contracts"), _get(dh, "offered_mean_contracts"))
    targets = [
        _target(
            "rfq_to_quote_p50_ms at low rate",
            _get(dl, "rfq_to_quote", "p50_ms"),
            "<= 1",
            _check(_get(dl, "rfq_to_quote", "p50_ms"), 1.0),
        ),
        _target(
            "rfq_to_quote_p99_ms at low rate",
            _get(dl, "rfq_to_quote", "p99_ms"),
            "<= 3",
            _check(_get(dl, "rfq_to_quote", "p99_ms"), 3.0),
        ),
        _target(
            "rfq_to_quote p99 daemon/baseline at low rate",
            comparisons["daemon_over_baseline_low"]["rfq_to_quote_p99_ms"],
            "<= 0.5",
            _check(comparisons["daemon_over_baseline_low"]["rfq_to_quote_p99_ms"], 0.5),
        ),
        _target(
            "http_429 at high rate (daemon)",
            _get(dh, "http_429"),
            "== 0",
            None if dh is None else _get(dh, "http_429") == 0,
        ),
        _target(
            "accept_to_confirm_p99_ms at high rate",
            _get(dh, "accept_to_confirm", "p99_ms"),
            "<= 20",
            _check(_get(dh, "accept_to_confirm", "p99_ms"), 20.0),
        ),
        _target(
            "RFQs shed explicitly at high rate",
            _get(dh, "shed"),
            "> 0, by reason",
            None if _get(dh, "shed") is None else _get(dh, "shed") > 0,
        ),
        _target(
            "quoted/offered mean size at high rate (EV, not arrival order)",
            ev_ratio,
            "> 1",
            None if ev_ratio is None else ev_ratio > 1.0,
        ),
        _target(
            "soak RSS growth % (checkpoint to end)",
            _get(soak, "rss_growth_pct"),
            "<= 10",
            _check(_get(soak, "rss_growth_pct"), 10.0),
        ),
    ]
    return {
        "meta": {
            "mode": "quick" if options.quick else "full",
            "wall_seconds": round(wall_seconds, 1),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "key_type": "ed25519",
            "clock": "exchange process time.perf_counter_ns",
            "options": {
                k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()
            },
            "budget": (
                f"write budget at high rate: {options.budget_tokens_per_second:g} tokens/s, "
                f"capacity {options.budget_capacity:g} (quote create/delete 2 tokens, other "
                f"writes 10) = {options.budget_tokens_per_second / 2:g} quote creations/s, "
                "same on the mock and in the daemon"
            ),
        },
        "phases": dict(phases),
        "soak": soak,
        "comparisons": comparisons,
        "targets": targets,
        "notes": list(notes),
    }


def _target(name: str, value: Any, target: str, passed: bool | None) -> dict[str, Any]:
    verdict = "n/a" if passed is None else ("PASS" if passed else "FAIL")
    return {"name": name, "value": value, "target": target, "verdict": verdict}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.{digits}f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_fmt(v, 0)}" for k, v in value.items()) or "-"
    return str(value)


def _section(
    title: str,
    d: Mapping[str, Any] | None,
    b: Mapping[str, Any] | None,
    targets: Mapping[str, tuple[str, Callable[[Any], bool] | None]],
) -> list[list[str]]:
    rows: list[list[str]] = [[f"-- {title}", "", "", "", "", ""]]
    metrics: list[tuple[str, tuple[str, ...]]] = []
    for metric, label in (
        ("rfq_to_quote", "RFQ-to-quote"),
        ("accept_to_confirm", "accept-to-confirm"),
    ):
        for stat in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
            metrics.append((f"{label} {stat.replace('_ms', '')} (ms)", (metric, stat)))
    metrics += [
        ("CPU s / 1,000 RFQs", ("cpu_seconds_per_1000_rfqs",)),
        ("peak RSS (MB)", ("peak_rss_mb",)),
        ("429 count", ("http_429",)),
        ("shed count", ("shed",)),
        ("RFQs offered (window)", ("rfqs",)),
        ("RFQs quoted", ("rfqs_quoted",)),
    ]
    for label, path in metrics:
        dv, bv = _get(d, *path), _get(b, *path)
        r = ratio(dv, bv) if not isinstance(dv, Mapping) else None
        target, check = targets.get(label, ("", None))
        verdict = ""
        if check is not None:
            verdict = "n/a" if dv is None else ("PASS" if check(dv) else "FAIL")
        rows.append([label, _fmt(dv), _fmt(bv), _fmt(r, 2), target, verdict])
    return rows


def format_table(report: Mapping[str, Any]) -> str:
    """The human-readable summary: one section per rate, then the soak and the targets."""
    phases = report["phases"]
    dl, bl = phases.get("daemon_low"), phases.get("baseline_low")
    dh, bh = phases.get("daemon_high"), phases.get("baseline_high")
    opts = report["meta"]["options"]
    header = ["metric", "daemon", "baseline", "ratio d/b", "target", "verdict"]
    rows: list[list[str]] = []
    if dl or bl:
        rows += _section(
            f"{opts['low_rate']:g} RFQ/s, write budget {opts['open_tokens_per_second']:g} tokens/s",
            dl,
            bl,
            {
                "RFQ-to-quote p50 (ms)": ("<= 1", lambda v: v <= 1.0),
                "RFQ-to-quote p99 (ms)": ("<= 3; d/b <= 0.5", lambda v: v <= 3.0),
            },
        )
    if dh or bh:
        rows += _section(
            f"{opts['high_rate']:g} RFQ/s, write budget {opts['budget_tokens_per_second']:g} "
            f"tokens/s = {opts['budget_tokens_per_second'] / 2:g} quotes/s",
            dh,
            bh,
            {
                "accept-to-confirm p99 (ms)": ("<= 20", lambda v: v <= 20.0),
                "429 count": ("== 0", lambda v: v == 0),
                "shed count": ("> 0", lambda v: v > 0),
            },
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if dh:
        lines.append("")
        lines.append(f"shed by reason (high rate): {_fmt(dh.get('shed_by_reason'))}")
        lines.append(f"skipped by reason (high rate): {_fmt(dh.get('skipped_by_reason'))}")
        lines.append(
            f"mean RFQ size offered {_fmt(dh.get('offered_mean_contracts'), 2)}, quoted "
            f"{_fmt(dh.get('quoted_mean_contracts'), 2)} contracts "
            "(selection by expected value shows as quoted > offered)"
        )
        lines.append(f"queues at end (high rate): {_fmt(dh.get('queues'))}")
        lines.append(
            f"quotes deleted by reason (high rate): {_fmt(dh.get('quotes_deleted_by_reason'))}"
        )
    if bh and bh.get("client_counts"):
        lines.append(f"baseline client counts (high rate, whole run): {_fmt(bh['client_counts'])}")
    soak = report.get("soak")
    if soak:
        lines.append("")
        lines.append(
            f"soak: {soak['rfqs_processed']:,} RFQs processed at {soak['offered_rate']:g}/s "
            f"offered in {soak['run_seconds']:g}s; "
            f"RSS {_fmt(soak['rss_mb_at_checkpoint'], 1)} MB at "
            f"{soak['checkpoint_rfqs']:,} -> {_fmt(soak['rss_mb_at_end'], 1)} MB at "
            f"{soak['target_rfqs']:,} ({_fmt(soak['rss_growth_pct'], 2)}%)"
        )
    lines.append("")
    lines.append("targets:")
    for target in report["targets"]:
        lines.append(
            f"  [{target['verdict']:>4}] {target['name']}: {_fmt(target['value'])} "
            f"(target {target['target']})"
        )
    lines.append(f"({report['meta']['budget']})")
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    lines.append(f"wall time {report['meta']['wall_seconds']:g}s ({report['meta']['mode']} run)")
    return "\n".join(lines)


def draw_cdf(phases: Mapping[str, Any], path: Path) -> bool:
    """Draw RFQ-to-quote and accept-to-confirm CDFs per phase as a PNG (False: no matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: render straight to a file
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = {
        "daemon_low": "C0-",
        "baseline_low": "C1-",
        "daemon_high": "C0--",
        "baseline_high": "C1--",
    }
    for ax, metric, title in (
        (axes[0], "rfq_to_quote_ns", "RFQ-to-quote"),
        (axes[1], "accept_to_confirm_ns", "accept-to-confirm"),
    ):
        for name, phase in phases.items():
            xs, ys = cdf_points(phase["_samples"][metric])
            if xs:
                label = f"{name} ({phase['offered_rate']:g}/s, n={len(phase['_samples'][metric])})"
                ax.plot(xs, ys, styles.get(name, "-"), label=label)
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, exchange clock)")
        ax.set_ylabel("fraction of samples")
        ax.set_title(f"{title} CDF")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
