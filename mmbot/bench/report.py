"""The benchmark's report: comparisons and target verdicts, the table and the CDF plot."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmbot.bench.options import BenchOptions
from mmbot.bench.stats import cdf_points, ratio

__all__ = ["build_report", "draw_cdf", "format_table"]


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
    ll, lh = phases.get("lean_low"), phases.get("lean_high")
    comparisons: dict[str, Any] = {}
    for other, label, d, b in (
        ("baseline", "low", dl, bl),
        ("baseline", "high", dh, bh),
        ("lean", "low", dl, ll),
        ("lean", "high", dh, lh),
    ):
        comp: dict[str, Any] = {}
        for metric in ("rfq_to_quote", "accept_to_confirm"):
            for stat in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
                comp[f"{metric}_{stat}"] = ratio(_get(d, metric, stat), _get(b, metric, stat))
        for metric in ("cpu_seconds_per_1000_rfqs", "peak_rss_mb", "http_429"):
            comp[metric] = ratio(_get(d, metric), _get(b, metric))
        comparisons[f"daemon_over_{other}_{label}"] = comp
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
    lean: Mapping[str, Any] | None,
    targets: Mapping[str, tuple[str, Callable[[Any], bool] | None]],
) -> list[list[str]]:
    rows: list[list[str]] = [[f"-- {title}", "", "", "", "", "", "", ""]]
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
        dv, bv, lv = _get(d, *path), _get(b, *path), _get(lean, *path)
        r = ratio(dv, bv) if not isinstance(dv, Mapping) else None
        rl = ratio(dv, lv) if not isinstance(dv, Mapping) else None
        target, check = targets.get(label, ("", None))
        verdict = ""
        if check is not None:
            verdict = "n/a" if dv is None else ("PASS" if check(dv) else "FAIL")
        rows.append([label, _fmt(dv), _fmt(bv), _fmt(lv), _fmt(r, 2), _fmt(rl, 2), target, verdict])
    return rows


def format_table(report: Mapping[str, Any]) -> str:
    """The human-readable summary: one section per rate, then the soak and the targets."""
    phases = report["phases"]
    dl, bl = phases.get("daemon_low"), phases.get("baseline_low")
    dh, bh = phases.get("daemon_high"), phases.get("baseline_high")
    ll, lh = phases.get("lean_low"), phases.get("lean_high")
    opts = report["meta"]["options"]
    header = ["metric", "daemon", "baseline", "lean", "ratio d/b", "ratio d/l", "target", "verdict"]
    rows: list[list[str]] = []
    if dl or bl or ll:
        rows += _section(
            f"{opts['low_rate']:g} RFQ/s, write budget {opts['open_tokens_per_second']:g} tokens/s",
            dl,
            bl,
            ll,
            {
                "RFQ-to-quote p50 (ms)": ("<= 1", lambda v: v <= 1.0),
                "RFQ-to-quote p99 (ms)": ("<= 3; d/b <= 0.5", lambda v: v <= 3.0),
            },
        )
    if dh or bh or lh:
        rows += _section(
            f"{opts['high_rate']:g} RFQ/s, write budget {opts['budget_tokens_per_second']:g} "
            f"tokens/s = {opts['budget_tokens_per_second'] / 2:g} quotes/s",
            dh,
            bh,
            lh,
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
    for label in ("low", "high"):
        comp = report["comparisons"].get(f"daemon_over_lean_{label}") or {}
        p50, p99 = comp.get("rfq_to_quote_p50_ms"), comp.get("rfq_to_quote_p99_ms")
        if p50 is not None or p99 is not None:
            lines.append(
                f"daemon/lean RFQ-to-quote ({label} rate): p50 {_fmt(p50, 2)}, p99 {_fmt(p99, 2)}"
            )
    for name, phase in (("daemon_low", dl), ("daemon_high", dh)):
        md = (phase or {}).get("market_data")
        if md:
            lines.append(
                f"market data ({name}): {md['offered_updates_per_second']:g} book changes/s "
                f"offered, {md['stream_messages_per_second']:g} stream messages/s applied; "
                f"book lag p50 {_fmt(md['lag_p50_ms'])} ms, p99 {_fmt(md['lag_p99_ms'])} ms "
                f"(target <= 50); REST reads {_fmt(md['reads_per_second'])}/s, of which "
                f"market data {_fmt(md['market_reads_per_second'])}/s; gaps {_fmt(md['gaps'])}"
            )
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
    if lh and lh.get("client_counts"):
        lines.append(f"lean client counts (high rate, whole run): {_fmt(lh['client_counts'])}")
    loops = {
        name: phase.get("event_loop")
        for name, phase in (("daemon", dl or dh), ("baseline", bl or bh), ("lean", ll or lh))
        if phase
    }
    if loops:
        lines.append("event loops: " + ", ".join(f"{k} {_fmt(v)}" for k, v in loops.items()))
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
        "lean_low": "C2-",
        "lean_high": "C2--",
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
