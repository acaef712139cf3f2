"""Reading the daemon's Prometheus metrics: scraping, counter deltas and queue gauges."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["QUEUE_GAUGES", "histogram_quantile", "market_data_figures", "scrape"]

Samples = Mapping[str, list[tuple[dict[str, str], float]]]
# The REST reads market data costs: what the stream is there to save.
_MARKET_READS = ("list_markets", "get_market", "get_orderbook")
_WRITES = (
    "create_quote", "delete_quote", "confirm_quote", "accept_quote", "create_rfq", "delete_rfq",
)  # fmt: skip


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


def histogram_quantile(before: Samples, after: Samples, name: str, q: float) -> float | None:
    """The ``q`` quantile of a histogram's observations over the window, as Prometheus does.

    Linear within the bucket it falls in; None with no observation. Only as fine as the
    buckets: the figure is an estimate between two bucket bounds.
    """

    def buckets(samples: Samples) -> dict[float, float]:
        return {float(labels["le"]): value for labels, value in samples.get(f"{name}_bucket", [])}

    start, end = buckets(before), buckets(after)
    bounds = sorted(end)
    counts = [end[b] - start.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower  # past the top bucket: its lower bound is all that is known
            inside = cumulative - below
            share = (rank - below) / inside if inside > 0 else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, cumulative
    return None


def market_data_figures(
    before: Samples, after: Samples, wall: float, offered_updates: float
) -> dict[str, Any]:
    """The daemon's market-data figures over a window: book lag, stream volume, REST reads."""
    lag = "mmbot_marketdata_update_lag_seconds"
    reads = _counter_delta(before, after, "mmbot_rest_requests_total", "endpoint") or {}
    market_reads = sum(v for k, v in reads.items() if k in _MARKET_READS)
    applied = _counter_delta(before, after, "mmbot_marketdata_stream_messages_total")

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)

    return {
        "offered_updates_per_second": offered_updates,
        "stream_messages_per_second": round(applied / wall, 1) if applied and wall else 0.0,
        "lag_p50_ms": ms(histogram_quantile(before, after, lag, 0.5)),
        "lag_p99_ms": ms(histogram_quantile(before, after, lag, 0.99)),
        "gaps": _counter_delta(before, after, "mmbot_marketdata_stream_gaps_total"),
        # The daemon's own clock, frame in to quote acknowledged: what the exchange's clock
        # adds (its own load publishing books) is not in it.
        "daemon_rfq_to_quote_p99_ms": ms(
            histogram_quantile(before, after, "mmbot_rfq_to_quote_seconds", 0.99)
        ),
        "market_reads_per_second": round(market_reads / wall, 2) if wall else None,
        "reads_per_second": (
            round(sum(v for k, v in reads.items() if k not in _WRITES) / wall, 2) if wall else None
        ),
    }
