"""What the quote lifecycle reports outward: its counters and its latencies."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

__all__ = ["MAX_REASONS", "OTHER_REASON", "Counters", "LatencyObserver", "count_reason"]

#: Distinct reasons a by-reason count keeps. Reasons are a small fixed set today, but some
#: are built from text (a strategy's decline, a shed reason): past this many, a new one is
#: counted under :data:`OTHER_REASON`, so the status event and memory stay bounded.
MAX_REASONS = 32
OTHER_REASON = "other"


def count_reason(by_reason: dict[str, int], reason: str) -> None:
    """Add one to ``reason`` in ``by_reason``, or to "other" once it holds MAX_REASONS reasons."""
    count = by_reason.get(reason)
    if count is None and len(by_reason) >= MAX_REASONS:
        reason = OTHER_REASON
        count = by_reason.get(reason)
    by_reason[reason] = (count or 0) + 1


@dataclass
class Counters:
    """What the daemon did this run, for the status line and metrics."""

    rfqs_seen: int = 0
    rfqs_quoted: int = 0
    rfqs_skipped: int = 0
    quotes_created: int = 0
    quotes_replaced: int = 0
    quotes_deleted: int = 0
    quote_errors: int = 0
    accepts: int = 0
    confirms: int = 0
    declines: int = 0
    confirm_failures: int = 0
    executions: int = 0
    contracts_traded: Decimal = Decimal(0)
    #: Bounded by :func:`count_reason` (at most MAX_REASONS reasons and "other").
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    declined_by_reason: dict[str, int] = field(default_factory=dict)


class LatencyObserver(Protocol):
    """Told how long the daemon took to answer, for the latency histograms."""

    def rfq_to_quote(self, seconds: float) -> None:
        """An RFQ's frame was received ``seconds`` before its quote was acknowledged."""

    def accept_to_confirm(self, seconds: float) -> None:
        """An acceptance's frame was received ``seconds`` before its confirm was acknowledged."""

    def last_look_move(self, moved: Decimal) -> None:
        """At a last look, the accepted side had lost ``moved`` dollars since it was quoted."""
