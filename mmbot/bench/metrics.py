"""Reading the daemon's Prometheus metrics: scraping, counter deltas and queue gauges."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["QUEUE_GAUGES", "scrape"]


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
