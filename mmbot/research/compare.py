"""Two runs side by side, per strategy label and per market.

Each side is first reduced to one shape, a :class:`ComparisonInput` of aggregates, so
that what is compared does not depend on where it came from: a replay RESULT directory
(:func:`from_result`), or a recording of a live, shadow or dry run (:func:`from_recording`),
aggregated under the label of the strategy that ran. :func:`compare` then pairs the
sides by label and by (label, market). A key present on one side only is kept with the
other side empty rather than dropped: a market one run quoted and the other did not is a
difference worth seeing.

Per label, the figures are the replay's own summary. Per market they are summed from the
quote rows; realized P&L there is the sum of the label's realized P&L changes at that
market's rows, since realized P&L moves only when a fill in that market closes a
position. Mark-to-market P&L is kept for open positions of all markets together, so a
market has no total P&L of its own.

A recording is aggregated as recorded, without replaying it: quotes are the rows the
daemon quoted (or, in shadow mode, would have quoted), fills the rows with contracts
executed, and markouts are computed from the recorded bids exactly as the replay computes
them. Its P&L is not computed (it would take a
replay of the recorded strategy, with ``--fill-model recorded``), so it is None, printed
"-", and the side carries a note saying so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from mmbot.research import schema
from mmbot.research.recording import Recording
from mmbot.research.results import QuoteRow, ReplayResult

__all__ = [
    "Aggregate",
    "ComparedRow",
    "Comparison",
    "ComparisonInput",
    "compare",
    "format_comparison",
    "from_recording",
    "from_result",
]

_ZERO = Decimal(0)
# The precision of the RESULT's decimal128(18, 6) columns; a mean needs no more.
_PLACES_6 = Decimal("0.000001")
_ONE = Decimal(1)
_TWO = Decimal(2)
#: The label of a recording's rows that no strategy priced (a synthetic recording's all).
UNPRICED = "(not priced)"
#: A recording's decisions that count as quotes: sent, or (shadow mode) would have been.
_QUOTED = frozenset({"quoted", "shadow"})


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Quoting and P&L figures of one label, or of one label in one market."""

    quotes: int
    fills: int
    realized_pnl: Decimal | None
    total_pnl: Decimal | None
    markout: Mapping[int, Decimal | None]

    @property
    def fill_rate(self) -> Decimal | None:
        """Fills over quotes; None without quotes."""
        return (Decimal(self.fills) / self.quotes).quantize(_PLACES_6) if self.quotes else None


@dataclass(frozen=True)
class ComparisonInput:
    """One side of a comparison: aggregates per label and per (label, market)."""

    name: str
    horizons: tuple[int, ...]
    labels: Mapping[str, Aggregate]
    markets: Mapping[str, Mapping[str, Aggregate]]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ComparedRow:
    """One label (market None: all its markets) or one label's market, on both sides."""

    label: str
    market: str | None
    a: Aggregate | None
    b: Aggregate | None


@dataclass(frozen=True)
class Comparison:
    """Rows of both sides, each label followed by its markets, most quoted first."""

    a_name: str
    b_name: str
    horizons: tuple[int, ...]
    rows: tuple[ComparedRow, ...]
    a_notes: tuple[str, ...] = ()
    b_notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The comparison as JSON-ready data; amounts are decimal strings."""
        return {
            "a": self.a_name,
            "b": self.b_name,
            "a_notes": list(self.a_notes),
            "b_notes": list(self.b_notes),
            "horizons": list(self.horizons),
            "rows": [
                {
                    "label": row.label,
                    "market": row.market,
                    "a": _aggregate_json(row.a, self.horizons),
                    "b": _aggregate_json(row.b, self.horizons),
                    "b_minus_a": {
                        name: _text(_diff(a, b)) for name, a, b in _metrics(row, self.horizons)
                    },
                }
                for row in self.rows
            ],
        }


def _mean(values: Sequence[Decimal]) -> Decimal | None:
    return (sum(values, _ZERO) / len(values)).quantize(_PLACES_6) if values else None


def _market_aggregates(rows: Sequence[QuoteRow], horizons: Sequence[int]) -> dict[str, Aggregate]:
    by_market: dict[str, list[QuoteRow]] = {}
    realized: dict[str, Decimal] = {}
    before = _ZERO
    for row in rows:
        by_market.setdefault(row.market, []).append(row)
        realized[row.market] = realized.get(row.market, _ZERO) + row.realized_pnl - before
        before = row.realized_pnl
    out = {}
    for market, own in by_market.items():
        quoted = [r for r in own if r.quoted]
        out[market] = Aggregate(
            quotes=len(quoted),
            fills=sum(1 for r in own if r.filled),
            realized_pnl=realized[market],
            total_pnl=None,
            markout={
                h: _mean([v for r in quoted if (v := r.markout.get(h)) is not None])
                for h in horizons
            },
        )
    return out


def from_result(result: ReplayResult, name: str | None = None) -> ComparisonInput:
    """Reduce a replay RESULT to the aggregates :func:`compare` takes."""
    labels = {
        s.label: Aggregate(
            quotes=s.quoted,
            fills=s.fills,
            realized_pnl=s.realized_pnl,
            total_pnl=s.total_pnl,
            markout=dict(s.markout),
        )
        for s in result.strategies
    }
    markets = {
        label: _market_aggregates(rows, result.horizons) for label, rows in result.quotes.items()
    }
    return ComparisonInput(
        name=name or str(result.path), horizons=result.horizons, labels=labels, markets=markets
    )


def _quote_edge(yes: Decimal | None, no: Decimal | None, mid: Decimal) -> Decimal | None:
    """Mean per-contract edge of a quote's bid sides against ``mid``, as the replay scores it.

    A quote bidding on both sides scores the mean of ``mid - yes`` and ``(1 - mid) - no``;
    a side bid at 0 (or not at all) is not quoted and does not count.
    """
    edges = []
    if yes is not None and yes > 0:
        edges.append(mid - yes)
    if no is not None and no > 0:
        edges.append((_ONE - mid) - no)
    if not edges:
        return None
    return edges[0] if len(edges) == 1 else (edges[0] + edges[1]) / _TWO


class _Tally:
    """Quotes, fills and markouts of a recording's rows, as they are added."""

    def __init__(self, horizons: Sequence[int]) -> None:
        self.quotes = 0
        self.fills = 0
        self.markouts: dict[int, list[Decimal]] = {h: [] for h in horizons}

    def aggregate(self, *, exact: bool = False) -> Aggregate:
        """The tally as an Aggregate; ``exact`` keeps the mean unrounded, as a replay does."""

        def mean(values: Sequence[Decimal]) -> Decimal | None:
            if exact and values:
                return sum(values, _ZERO) / len(values)
            return _mean(values)

        return Aggregate(
            quotes=self.quotes,
            fills=self.fills,
            realized_pnl=None,
            total_pnl=None,
            markout={h: mean(values) for h, values in self.markouts.items()},
        )


def from_recording(recording: Recording, name: str) -> ComparisonInput:
    """Aggregate a recording's own outcome per recorded strategy and per market.

    Quotes are rows whose ``decision`` is ``quoted``, or ``shadow`` (priced on the live
    feed, not sent: a shadow run's quotes, which cannot fill), fills rows with
    ``executed_contracts`` above 0, markouts the recorded bids against each horizon's
    recorded mid. Realized and total P&L are None: computing them would mean replaying the
    recording.
    """
    horizons = recording.horizons
    table = recording.rfqs
    mids = [table.column(schema.mid_column(h)).to_pylist() for h in horizons]
    labels: dict[str, _Tally] = {}
    markets: dict[str, dict[str, _Tally]] = {}
    decisions: dict[str, int] = {}
    columns = zip(
        table.column("strategy").to_pylist(),
        table.column("market").to_pylist(),
        table.column("decision").to_pylist(),
        table.column("executed_contracts").to_pylist(),
        table.column("yes_bid").to_pylist(),
        table.column("no_bid").to_pylist(),
        strict=True,
    )
    for index, (strategy, market, decision, executed, yes, no) in enumerate(columns):
        decisions[decision] = decisions.get(decision, 0) + 1
        label = strategy or UNPRICED
        if label not in labels:
            labels[label] = _Tally(horizons)
            markets[label] = {}
        tallies = [labels[label], markets[label].setdefault(market, _Tally(horizons))]
        quoted = decision in _QUOTED
        filled = executed is not None and executed > 0
        for tally in tallies:
            tally.quotes += quoted
            tally.fills += filled
        if not quoted:
            continue
        for horizon, column in zip(horizons, mids, strict=True):
            mid = column[index]
            edge = _quote_edge(yes, no, mid) if mid is not None else None
            if edge is not None:
                for tally in tallies:
                    tally.markouts[horizon].append(edge)
    notes = [
        "a recording, aggregated as recorded: realized and total P&L are not computed "
        "(replay it with --fill-model recorded for those)"
    ]
    if not any(t.quotes for t in labels.values()):
        counted = ", ".join(f"{d} {n}" for d, n in sorted(decisions.items()))
        notes.append(f"no quotes recorded (decisions: {counted})")
    return ComparisonInput(
        name=name,
        horizons=horizons,
        # Per label the mean is unrounded, as a RESULT's summary is, so that the same quotes
        # on both sides differ by exactly 0; per market both sides round to 6 places.
        labels={label: tally.aggregate(exact=True) for label, tally in labels.items()},
        markets={
            label: {market: tally.aggregate() for market, tally in own.items()}
            for label, own in markets.items()
        },
        notes=tuple(notes),
    )


def _quotes(*sides: Aggregate | None) -> int:
    return sum(side.quotes for side in sides if side is not None)


def compare(a: ComparisonInput, b: ComparisonInput) -> Comparison:
    """Pair two inputs by label and by (label, market), keeping keys found on one side."""
    horizons = tuple(sorted(set(a.horizons) | set(b.horizons)))
    labels = list(a.labels) + [label for label in b.labels if label not in a.labels]
    rows: list[ComparedRow] = []
    for label in labels:
        rows.append(ComparedRow(label, None, a.labels.get(label), b.labels.get(label)))
        in_a, in_b = a.markets.get(label, {}), b.markets.get(label, {})
        markets = sorted(
            set(in_a) | set(in_b), key=lambda m: (-_quotes(in_a.get(m), in_b.get(m)), m)
        )
        rows.extend(ComparedRow(label, m, in_a.get(m), in_b.get(m)) for m in markets)
    return Comparison(a.name, b.name, horizons, tuple(rows), a.notes, b.notes)


# -- text -----------------------------------------------------------------------------------


def _metrics(
    row: ComparedRow, horizons: Iterable[int]
) -> list[tuple[str, Decimal | int | None, Decimal | int | None]]:
    def pick(side: Aggregate | None, name: str) -> Decimal | int | None:
        if side is None:
            return None
        if name.startswith("markout_"):
            return side.markout.get(int(name.removeprefix("markout_").removesuffix("s")))
        value: Decimal | int | None = getattr(side, name)
        return value

    names = [
        *("quotes", "fills", "fill_rate", "realized_pnl", "total_pnl"),
        *(f"markout_{h}s" for h in horizons),
    ]
    return [(name, pick(row.a, name), pick(row.b, name)) for name in names]


def _diff(a: Decimal | int | None, b: Decimal | int | None) -> Decimal | int | None:
    return None if a is None or b is None else b - a


def _text(value: Decimal | int | None) -> str | int | None:
    return str(value) if isinstance(value, Decimal) else value


def _aggregate_json(side: Aggregate | None, horizons: Iterable[int]) -> dict[str, Any] | None:
    if side is None:
        return None
    return {
        "quotes": side.quotes,
        "fills": side.fills,
        "fill_rate": _text(side.fill_rate),
        "realized_pnl": _text(side.realized_pnl),
        "total_pnl": _text(side.total_pnl),
        "markout": {str(h): _text(side.markout.get(h)) for h in horizons},
    }


_TITLES = {
    "quotes": "quotes",
    "fills": "fills",
    "fill_rate": "fill rate",
    "realized_pnl": "realized P&L",
    "total_pnl": "total P&L",
}
_PLACES = {"fill_rate": Decimal("0.0001"), "realized_pnl": Decimal("0.01")}
_PLACES["total_pnl"] = _PLACES["realized_pnl"]


def _cell(name: str, value: Decimal | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:+d}" if name.startswith("+") and value else str(value)
    places = _PLACES.get(name.lstrip("+"), _PLACES_6)
    text = str(value.quantize(places))
    return f"+{text}" if name.startswith("+") and value > 0 else text


def format_comparison(comparison: Comparison, top_markets: int | None = 10) -> str:
    """Side-by-side text: A, B and B - A for each metric of each label and market."""
    lines = [f"A: {comparison.a_name}"]
    lines += [f"   note: {note}" for note in comparison.a_notes]
    lines += [f"B: {comparison.b_name}"]
    lines += [f"   note: {note}" for note in comparison.b_notes]
    shown: dict[str, int] = {}
    hidden: dict[str, int] = {}
    blocks: list[tuple[ComparedRow, list[list[str]]]] = []
    for row in comparison.rows:
        if row.market is not None:
            count = shown.get(row.label, 0)
            if top_markets is not None and count >= top_markets:
                hidden[row.label] = hidden.get(row.label, 0) + 1
                continue
            shown[row.label] = count + 1
        cells = [
            [
                _TITLES.get(name, name.replace("markout_", "markout ")),
                _cell(name, a) if row.a is not None else "(absent)",
                _cell(name, b) if row.b is not None else "(absent)",
                _cell(f"+{name}", _diff(a, b)),
            ]
            for name, a, b in _metrics(row, comparison.horizons)
        ]
        blocks.append((row, cells))
    widths = [
        max([len(h), *(len(c[i]) for _, cells in blocks for c in cells)])
        for i, h in enumerate(("metric", "A", "B", "B - A"))
    ]

    def line(values: Sequence[str]) -> str:
        first, *rest = values
        return (
            "  "
            + first.ljust(widths[0])
            + "".join("  " + v.rjust(w) for v, w in zip(rest, widths[1:], strict=True))
        )

    for index, (row, cells) in enumerate(blocks):
        where = "all markets" if row.market is None else f"market {row.market}"
        lines += ["", f"{row.label} - {where}", line(["metric", "A", "B", "B - A"])]
        lines += [line(c) for c in cells]
        following = blocks[index + 1][0] if index + 1 < len(blocks) else None
        more = hidden.get(row.label, 0)
        if more and (following is None or following.label != row.label):
            lines += ["", f"({more} more markets of {row.label}; --top-markets 0 shows all)"]
    return "\n".join(lines)
