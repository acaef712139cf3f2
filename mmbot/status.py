"""The daemon's state in numbers: the status line, the status event and the exit summary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = ["Snapshot"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The daemon's state in numbers, for the status line and the exit summary."""

    rfqs_seen: int
    rfqs_quoted: int
    rfqs_skipped: int
    #: A copy of the quote manager's count per skip reason (bounded, see count_reason).
    skipped: Mapping[str, int]
    accepts: int
    confirms: int
    declines: int
    executions: int
    open_quotes: int
    exposure: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal

    def line(self) -> str:
        """One line for the live status."""
        pnl = self.realized_pnl + self.unrealized_pnl
        return (
            f"rfqs {self.rfqs_seen} seen, {self.rfqs_quoted} quoted | accepts {self.accepts}, "
            f"confirmed {self.confirms}, declined {self.declines}, executed {self.executions} | "
            f"open quotes {self.open_quotes} | exposure ${self.exposure:.2f} | P&L ${pnl:.2f}"
        )

    def event_fields(self) -> dict[str, Any]:
        """The same figures as fields of a ``status`` log event (money as decimal strings)."""
        return {
            "rfqs_seen": self.rfqs_seen,
            "rfqs_quoted": self.rfqs_quoted,
            "rfqs_skipped": self.rfqs_skipped,
            "skipped": dict(self.skipped),
            "accepts": self.accepts,
            "confirms": self.confirms,
            "declines": self.declines,
            "executions": self.executions,
            "open_quotes": self.open_quotes,
            "exposure": str(self.exposure),
            "realized_pnl": str(self.realized_pnl),
            "unrealized_pnl": str(self.unrealized_pnl),
            "pnl": str(self.realized_pnl + self.unrealized_pnl),
        }
