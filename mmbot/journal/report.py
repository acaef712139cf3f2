"""The journal summary as the plain-text table ``mmbot run`` prints at exit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, localcontext

from mmbot.journal.model import Summary
from mmbot.journal.schema import format_ts

__all__ = ["format_summary"]


@dataclass
class _Table:
    lines: list[tuple[str, str]] = field(default_factory=list)

    def add(self, label: str, value: object) -> None:
        self.lines.append((label, str(value)))

    def add_reasons(self, reasons: Mapping[str, int]) -> None:
        for reason, count in reasons.items():
            self.add(f"  {reason}", count)

    def render(self) -> list[str]:
        label_width = max(len(label) for label, _ in self.lines)
        value_width = max(len(value) for _, value in self.lines)
        return [f"{label:<{label_width}}  {value:>{value_width}}" for label, value in self.lines]


def _money(value: Decimal) -> str:
    # Products like price x contracts carry many trailing zeros (0.3500 x 10.00 = 3.500000);
    # show at least cents, and every significant digit beyond.
    with localcontext() as ctx:
        ctx.prec = 100
        shown = value.normalize()
        exponent = shown.as_tuple().exponent
        if isinstance(exponent, int) and exponent > -2:
            shown = shown.quantize(Decimal("0.01"))
        return format(shown, "f")


def format_summary(summary: Summary) -> str:
    """Render ``summary`` as an aligned plain-text table, for printing at exit."""
    if summary.run_id is not None:
        title = f"mmbot journal: run {summary.run_id}"
    else:
        title = f"mmbot journal: all runs ({summary.runs})"
    if summary.first_ts is not None and summary.last_ts is not None:
        title += f"\n{format_ts(summary.first_ts)} to {format_ts(summary.last_ts)}"
    table = _Table()
    table.add("RFQs seen", summary.rfqs_seen)
    table.add("RFQs skipped", summary.rfqs_skipped)
    table.add_reasons(summary.rfqs_skipped_by_reason)
    table.add("Quotes created", summary.quotes_created)
    table.add("Quotes replaced", summary.quotes_replaced)
    table.add("Quotes failed", summary.quotes_failed)
    table.add("Quotes deleted", summary.quotes_deleted)
    table.add_reasons(summary.quotes_deleted_by_reason)
    table.add("Accepts", summary.accepts)
    table.add("Confirms", summary.confirms)
    table.add("Declines", summary.declines)
    table.add_reasons(summary.declines_by_reason)
    table.add("Confirm failures", summary.confirm_failures)
    table.add("Executions", summary.executions)
    table.add("Contracts traded", _money(summary.contracts_traded))
    table.add("Premium paid ($)", _money(summary.premium_paid))
    table.add("Fees ($)", _money(summary.fees))
    # The journal records realised P&L with each fill's fee already taken off.
    table.add("Realised P&L ($, net of fees)", _money(summary.realized_pnl))
    return "\n".join([title, *table.render()]) + "\n"
