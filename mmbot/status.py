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
    #: This run's realised P&L in dollars, net of ``fees``.
    realized_pnl: Decimal
    #: Open positions marked to market, in dollars.
    unrealized_pnl: Decimal
    #: Shadow mode: RFQs are priced, nothing is sent (the status says so first).
    shadow: bool = False
    #: Fees this run paid, in dollars (already out of ``realized_pnl``).
    fees: Decimal = Decimal(0)

    @property
    def total_pnl(self) -> Decimal:
        """Realised plus marked-to-market P&L, net of fees."""
        return self.realized_pnl + self.unrealized_pnl

    def line(self) -> str:
        """One line for the live status."""
        return ("shadow | " if self.shadow else "") + (
            f"rfqs {self.rfqs_seen} seen, {self.rfqs_quoted} quoted | accepts {self.accepts}, "
            f"confirmed {self.confirms}, declined {self.declines}, executed {self.executions} | "
            f"open quotes {self.open_quotes} | exposure ${self.exposure:.2f} | "
            f"P&L realised ${self.realized_pnl:.2f} | marked-to-market ${self.unrealized_pnl:.2f}"
            f" | total ${self.total_pnl:.2f} (net of fees ${self.fees:.2f})"
        )

    def event_fields(self) -> dict[str, Any]:
        """The same figures as fields of a ``status`` log event (money as decimal strings)."""
        return {
            "shadow": self.shadow,
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
            "total_pnl": str(self.total_pnl),
            "fees": str(self.fees),
        }
