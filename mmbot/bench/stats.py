"""Statistics for the benchmark: percentiles, summaries, ratios and CDF points."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["cdf_points", "percentile", "ratio", "summarize_ns"]

#: The percentiles every latency summary reports.
PERCENTILES = (50.0, 90.0, 99.0)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile of already sorted values, nearest-rank (no interpolation).

    Nearest rank always returns an observed value, so "p99 <= 3 ms" means at least 99% of
    the samples were at or under 3 ms. Raises ValueError on an empty sequence.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 < pct <= 100:
        raise ValueError(f"percentile must be within (0, 100], got {pct}")
    rank = math.ceil(pct / 100 * len(sorted_values))
    return float(sorted_values[max(rank, 1) - 1])


def summarize_ns(samples_ns: Sequence[int]) -> dict[str, float | int | None]:
    """Count, p50, p90, p99 and max of nanosecond samples, in milliseconds (None if empty)."""
    ordered = sorted(samples_ns)
    out: dict[str, float | int | None] = {"count": len(ordered)}
    for pct in PERCENTILES:
        out[f"p{pct:g}_ms"] = round(percentile(ordered, pct) / 1e6, 4) if ordered else None
    out["max_ms"] = round(ordered[-1] / 1e6, 4) if ordered else None
    return out


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the divisor is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def cdf_points(samples_ns: Sequence[int], max_points: int = 500) -> tuple[list[float], list[float]]:
    """(milliseconds, cumulative fraction) pairs of an empirical CDF, thinned to ``max_points``."""
    ordered = sorted(samples_ns)
    n = len(ordered)
    if n == 0:
        return [], []
    step = max(1, n // max_points)
    indexes = list(range(step - 1, n, step))
    if indexes[-1] != n - 1:
        indexes.append(n - 1)
    return [ordered[i] / 1e6 for i in indexes], [(i + 1) / n for i in indexes]
