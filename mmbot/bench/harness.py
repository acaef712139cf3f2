"""The benchmark harness: one mock exchange process, the daemon and two baseline quoters.

Every phase runs against the same exchange process, which emits ``rfq_created`` at a
fixed rate and timestamps frames and requests on its own clock (see
:class:`mmbot.mock.server.BenchProbe`). The harness starts and stops the quoter of each
phase (the daemon, the naive baseline or the lean quoter) as its own process, reads its CPU
time and memory from ``/proc``, scrapes the daemon's ``/metrics``, and at the end prints a
table, writes JSON and draws a CDF plot.
"""

from __future__ import annotations

import json
import math
import re
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import httpx

from mmbot.bench.launch import (
    _STOP_TIMEOUT,
    BASELINE_KEY,
    DAEMON_KEY,
    LEAN_KEY,
    QUOTER_KEYS,
    _Context,
    _Proc,
    _Quoter,
    _start_exchange,
    _write_key,
)
from mmbot.bench.metrics import _by_label, _counter_delta, _gauges, _metric_sum, market_data_figures
from mmbot.bench.options import BenchOptions, PhaseSpec
from mmbot.bench.procs import cpu_seconds, rss_bytes
from mmbot.bench.report import build_report, draw_cdf, format_table
from mmbot.bench.stats import summarize_ns

__all__ = ["BenchOptions", "PhaseSpec", "build_report", "draw_cdf", "format_table", "run_bench"]

# The checkout's benchmarks/results/, which git ignores (as the README and --help say).
RESULTS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
_MB = 1024 * 1024
# The lean quoter's ready line names the loop it runs on.
_READY_LOOP = re.compile(r"ready \(event loop: (\w+)\)")


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
    md_rate = options.md_updates_per_second if spec.quoter == "daemon" else 0.0
    ctx.post("/faults", {"market_updates_per_second": md_rate})
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
        exit_code = quoter.proc.stop(_STOP_TIMEOUT if spec.quoter == "daemon" else 3.0)
    if spec.quoter == "daemon" and exit_code != 0:
        ctx.notes.append(f"{spec.name}: the daemon exited with code {exit_code} on SIGTERM")
    counts = _last_json_line(quoter.proc.stdout()) if spec.quoter != "daemon" else None
    result = _phase_result(spec, state, before, after, cpu1 - cpu0, wall, memory, exit_code, counts)
    if spec.quoter == "daemon":
        result["market_data"] = market_data_figures(before, after, wall, md_rate)
    result["event_loop"] = _event_loop(spec, quoter.proc)
    return result


def _event_loop(spec: PhaseSpec, proc: _Proc) -> str | None:
    """The event loop the phase's quoter ran on, as it reported it (None: not reported)."""
    if spec.quoter == "baseline":
        return "asyncio"  # asyncio.run with the default policy, on purpose
    if spec.quoter == "lean":
        match = _READY_LOOP.search(proc.stdout())
        return match[1] if match else None
    # The daemon logs the loop mmbot.eventloop chose, as one JSON line on stderr.
    for line in proc.stderr_path.read_text(errors="replace").splitlines():
        if '"event loop"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "event loop":
            return str(event.get("loop"))
    return None


def _last_json_line(text: str) -> dict[str, int] | None:
    """A baseline's closing counters (whole run, warm-up included), if it printed them."""
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
    key = QUOTER_KEYS[spec.quoter]
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
        keys = {
            DAEMON_KEY: work / "daemon.pem",
            BASELINE_KEY: work / "baseline.pem",
            LEAN_KEY: work / "lean.pem",
        }
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
