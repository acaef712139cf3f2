"""The research report of a replay RESULT: one self-contained HTML page and its JSON twin.

Every figure is computed once, in Decimal, by :func:`analyse`; the JSON is that analysis
and the HTML draws and tabulates it, so the two can never disagree. Floats appear only at
the last step, handing values to matplotlib, which cannot plot Decimals.

What the sections mean:

* P&L over time: the cumulative realized P&L (net of fees), the mark-to-market P&L of open
  positions, and their sum, after each RFQ.
* Markout curve: the mean per-contract edge of quotes at each horizon, with a 95% band of
  +-1.96 standard errors; a curve that falls with the horizon is adverse selection. The
  fills' own markout is drawn dashed: fills that mark out worse than quotes mean the
  requesters pick the quotes that were wrong.
* Buckets (edge at RFQ time, market, RFQ size): fill rate is fills over quotes. P&L per
  bucket is the fills' markout at the longest horizon times their size, net of fees.
  Realized P&L cannot be split by bucket: a fill's position nets against other fills in
  its market, so its realized P&L depends on what came later.
* Worst RFQs: per label, the fills with the worst per-contract markout at the longest
  horizon, the cases to read first when a strategy loses.

matplotlib is optional (``pip install 'mmbot[research]'``) and imported only when a report
is drawn, with the Agg backend: a report needs no display and works over SSH and in CI.
Plots are built on bare Figures, never through pyplot's global state.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmbot.research.results import QuoteRow, ReplayResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    *("EDGE_BUCKETS", "INSTALL_HINT", "PLOTS", "SECTIONS", "SIZE_BUCKETS", "MeanBand"),
    *("ReportDependencyError", "analyse", "draw_plots", "edge_bucket", "fill_pnl"),
    *("mean_band", "render_html", "size_bucket", "to_json", "write_report"),
]

INSTALL_HINT = "pip install 'mmbot[research]'"
#: Ids of the embedded plots; each is a ``data-plot`` attribute in the HTML.
PLOTS = ("pnl", "markout", "edge_buckets", "markets", "size_buckets", "position")
#: Top-level sections of the JSON report.
SECTIONS = (
    *("meta", "summary", "pnl", "markout", "edge_buckets"),
    *("markets", "size_buckets", "position", "worst_rfqs"),
)
WORST_RFQS = 20
#: Markets drawn in the by-market plot; the JSON and the table hold them all.
PLOTTED_MARKETS = 12
#: Markets drawn per label in the position plot: those that held the largest position.
PLOTTED_POSITIONS = 6
#: Points per series in the JSON: enough to redraw a curve, not every RFQ of a long replay.
SERIES_POINTS = 500

_Z95 = Decimal("1.96")
_PLACES = Decimal("0.000001")
_ZERO = Decimal(0)
# Upper bounds of the buckets, in dollars per contract and in contracts; None is open.
_EDGE_BOUNDS = (*(Decimal(b) for b in ("0", "0.01", "0.02", "0.03", "0.05", "0.10")), None)
_SIZE_BOUNDS = (Decimal(10), Decimal(50), Decimal(100), Decimal(500), Decimal(1000), None)
_UNKNOWN_SIZE = "unknown"


class ReportDependencyError(RuntimeError):
    """An optional package the report needs (matplotlib) is not installed."""


@dataclass(frozen=True, slots=True)
class MeanBand:
    """A sample mean with its standard error and 95% band (none for fewer than 2 values)."""

    n: int
    mean: Decimal
    stderr: Decimal | None

    @property
    def low(self) -> Decimal | None:
        """Lower end of the 95% band."""
        return None if self.stderr is None else self.mean - _Z95 * self.stderr

    @property
    def high(self) -> Decimal | None:
        """Upper end of the 95% band."""
        return None if self.stderr is None else self.mean + _Z95 * self.stderr


def mean_band(values: Sequence[Decimal]) -> MeanBand | None:
    """Mean and standard error of ``values``, or None when there are none."""
    n = len(values)
    if n == 0:
        return None
    mean = sum(values, _ZERO) / n
    if n < 2:
        return MeanBand(n, mean, None)
    variance = sum(((v - mean) ** 2 for v in values), _ZERO) / (n - 1)
    return MeanBand(n, mean, (variance / n).sqrt())


def _q(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(_PLACES)


def _band_json(horizon: int, band: MeanBand | None) -> dict[str, Any]:
    if band is None:
        return {"horizon": horizon, "n": 0, "mean": None, "stderr": None, "low": None, "high": None}
    return {
        "horizon": horizon,
        "n": band.n,
        "mean": _q(band.mean),
        "stderr": _q(band.stderr),
        "low": _q(band.low),
        "high": _q(band.high),
    }


def _bound_label(low: Decimal | None, high: Decimal | None) -> str:
    if low is None:
        return f"< {high}"
    return f">= {low}" if high is None else f"{low} to {high}"


def _bucket_names(bounds: Sequence[Decimal | None], first_low: Decimal | None) -> list[str]:
    lows = [first_low, *bounds[:-1]]
    return [_bound_label(low, high) for low, high in zip(lows, bounds, strict=True)]


EDGE_BUCKETS = tuple(_bucket_names(_EDGE_BOUNDS, None))
SIZE_BUCKETS = (*_bucket_names(_SIZE_BOUNDS, Decimal(0)), _UNKNOWN_SIZE)


def _bucket(value: Decimal, bounds: Sequence[Decimal | None], names: Sequence[str]) -> str:
    for bound, name in zip(bounds, names, strict=False):
        if bound is None or value < bound:
            return name
    return names[len(bounds) - 1]


def edge_bucket(row: QuoteRow) -> str | None:
    """The edge bucket of a quote (edge against the mid at RFQ time); None if not quoted."""
    edge = row.edge
    return None if edge is None else _bucket(edge, _EDGE_BOUNDS, EDGE_BUCKETS)


def size_bucket(row: QuoteRow) -> str:
    """The RFQ-size bucket of a row."""
    if row.rfq_contracts is None:
        return _UNKNOWN_SIZE
    return _bucket(row.rfq_contracts, _SIZE_BOUNDS, SIZE_BUCKETS)


def fill_pnl(row: QuoteRow, horizon: int) -> Decimal | None:
    """A fill's P&L at ``horizon``: its markout times its size, net of its fee."""
    markout = row.fill_markout.get(horizon)
    if not row.filled or markout is None or row.filled_contracts is None:
        return None
    return markout * row.filled_contracts - (row.fee or _ZERO)


def _group(
    rows: Iterable[QuoteRow], key: Callable[[QuoteRow], str | None], horizon: int
) -> dict[str, dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        name = key(row)
        if name is None:
            continue
        g = groups.setdefault(
            name,
            {"rfqs": 0, "quotes": 0, "fills": 0, "contracts": _ZERO, "pnl": _ZERO, "fees": _ZERO},
        )
        g["rfqs"] += 1
        g["quotes"] += row.quoted
        pnl = fill_pnl(row, horizon)
        if row.filled:
            g["fills"] += 1
            g["contracts"] += row.filled_contracts or _ZERO
            g["fees"] += row.fee or _ZERO
        if pnl is not None:
            g["pnl"] += pnl
    for g in groups.values():
        g["fill_rate"] = _q(Decimal(g["fills"]) / g["quotes"]) if g["quotes"] else None
    return groups


def _thin(rows: Sequence[QuoteRow], limit: int = SERIES_POINTS) -> list[QuoteRow]:
    if len(rows) <= limit:
        return list(rows)
    step = -(-len(rows) // limit)
    kept = list(rows[::step])
    return kept if kept[-1] is rows[-1] else [*kept, rows[-1]]


def _pnl_point(r: QuoteRow) -> dict[str, Any]:
    return {"ts": r.ts, "realized": r.realized_pnl, "mtm": r.mtm_pnl, "total": r.total_pnl}


def _pnl(rows: Sequence[QuoteRow]) -> dict[str, Any]:
    peak: Decimal | None = None
    drawdown = _ZERO
    for row in rows:
        total = row.total_pnl
        peak = total if peak is None else max(peak, total)
        drawdown = max(drawdown, peak - total)
    last = rows[-1] if rows else None
    return {
        "final": None if last is None else _pnl_point(last),
        "max_drawdown": drawdown,
        "points": [_pnl_point(r) for r in _thin(rows)],
    }


def _gross(rows: Sequence[QuoteRow]) -> list[tuple[datetime, Decimal]]:
    """Sum of absolute positions across markets after each row."""
    held: dict[str, Decimal] = {}
    gross = _ZERO
    series = []
    for row in rows:
        gross += abs(row.position) - abs(held.get(row.market, _ZERO))
        held[row.market] = row.position
        series.append((row.ts, gross))
    return series


def _position(rows: Sequence[QuoteRow]) -> dict[str, Any]:
    markets: dict[str, dict[str, Decimal]] = {}
    for row in rows:
        m = markets.setdefault(row.market, {"final": _ZERO, "max_abs": _ZERO})
        m["final"] = row.position
        m["max_abs"] = max(m["max_abs"], abs(row.position))
    gross = _gross(rows)
    step = max(1, -(-len(gross) // SERIES_POINTS))
    return {
        "max_gross": max((g for _, g in gross), default=_ZERO),
        "markets": markets,
        "gross_points": [{"ts": ts, "gross": g} for ts, g in gross[::step]],
    }


def _values(rows: Sequence[QuoteRow], column: str, horizon: int) -> list[Decimal]:
    return [v for r in rows if (v := getattr(r, column).get(horizon)) is not None]


def _markout(result: ReplayResult, rows: Sequence[QuoteRow]) -> dict[str, Any]:
    quoted = [r for r in rows if r.quoted]
    fills = [r for r in rows if r.filled]
    quote_curve = [_band_json(h, mean_band(_values(quoted, "markout", h))) for h in result.horizons]
    fill_curve = [
        _band_json(h, mean_band(_values(fills, "fill_markout", h))) for h in result.horizons
    ]
    fair = None
    if result.has_fair_value:
        band = mean_band([r.fair_markout for r in quoted if r.fair_markout is not None])
        fair = _band_json(0, band)
        fair.pop("horizon")
    return {"quotes": quote_curve, "fills": fill_curve, "fair": fair}


def _worst(rows: Sequence[QuoteRow], horizons: Sequence[int]) -> list[dict[str, Any]]:
    longest = max(horizons)
    fills = [r for r in rows if r.filled and r.fill_markout.get(longest) is not None]
    fills.sort(key=lambda r: (r.fill_markout[longest], r.ts))
    keys = ("ts", "rfq_id", "market", "filled_side", "filled_contracts", "fill_price", "mid", "fee")
    return [
        {key: getattr(r, key) for key in keys}
        | {"fill_markout": {str(h): r.fill_markout.get(h) for h in horizons}}
        | {"pnl": _q(fill_pnl(r, longest))}
        for r in fills[:WORST_RFQS]
    ]


def analyse(result: ReplayResult) -> dict[str, Any]:
    """Every figure of the report, keyed by section (see SECTIONS), with Decimal values."""
    longest = result.longest_horizon
    quotes = result.quotes
    summary = {
        s.label: {k: v for k, v in asdict(s).items() if k != "label"}
        | {"params": dict(s.params), "markout": {str(h): v for h, v in s.markout.items()}}
        for s in result.strategies
    }
    return {
        "meta": {
            "result": str(result.path),
            "version": result.version,
            "fill_model": result.fill_model,
            "horizons": list(result.horizons),
            "recordings": list(result.recordings),
            "created": result.created,
            "labels": list(result.labels),
            "has_fair_value": result.has_fair_value,
            "pnl_horizon": longest,
        },
        "summary": summary,
        "pnl": {label: _pnl(rows) for label, rows in quotes.items()},
        "markout": {label: _markout(result, rows) for label, rows in quotes.items()},
        "edge_buckets": {
            label: _ordered(_group(rows, edge_bucket, longest), EDGE_BUCKETS)
            for label, rows in quotes.items()
        },
        "markets": {
            label: dict(sorted(_group(rows, lambda r: r.market, longest).items()))
            for label, rows in quotes.items()
        },
        "size_buckets": {
            label: _ordered(_group(rows, size_bucket, longest), SIZE_BUCKETS)
            for label, rows in quotes.items()
        },
        "position": {label: _position(rows) for label, rows in quotes.items()},
        "worst_rfqs": {label: _worst(rows, result.horizons) for label, rows in quotes.items()},
    }


def _ordered(groups: dict[str, dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    return {name: groups[name] for name in names if name in groups}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def to_json(analysis: Mapping[str, Any]) -> str:
    """The analysis as JSON text: Decimals as strings, times as ISO 8601."""
    return json.dumps(_plain(analysis), indent=2) + "\n"


# -- plots ----------------------------------------------------------------------------------


def _floats(values: Iterable[Decimal | None]) -> list[float]:
    """Values for matplotlib, which plots floats only; None becomes a gap."""
    return [float("nan") if v is None else float(v) for v in values]


def _dates(times: Iterable[datetime]) -> Any:
    """Times for an x axis: matplotlib converts datetimes, though its stubs admit only numbers."""
    return list(times)


def _text(label: str) -> str:
    # A "$" would switch matplotlib into math mode mid-label.
    return label.replace("$", r"\$")


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _panels(labels: Sequence[str], height: float = 3.2) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    columns = min(3, max(1, len(labels)))
    rows = -(-max(1, len(labels)) // columns)
    fig = Figure(figsize=(4.6 * columns, height * rows), layout="constrained")
    axes = fig.subplots(rows, columns, sharey=True, squeeze=False).ravel().tolist()
    for ax in axes[len(labels) :]:
        ax.set_visible(False)
    return fig, axes


def _empty(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes)


def _plot_pnl(result: ReplayResult) -> Figure:
    fig, axes = _panels(result.labels)
    for ax, label in zip(axes, result.labels, strict=False):
        rows = result.quotes[label]
        ax.set_title(_text(label), fontsize=9)
        if not rows:
            _empty(ax, "rows")
            continue
        times = _dates(r.ts for r in rows)
        realized = _floats(r.realized_pnl for r in rows)
        mtm = _floats(r.mtm_pnl for r in rows)
        ax.plot(times, realized, label="realized", linewidth=1)
        ax.plot(times, mtm, label="mark-to-market", linewidth=1)
        ax.plot(times, [a + b for a, b in zip(realized, mtm, strict=True)], label="total")
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("P&L ($)")
    return fig


def _plot_markout(result: ReplayResult, analysis: Mapping[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    horizons = list(result.horizons)
    for i, label in enumerate(result.labels):
        color = f"C{i % 10}"
        curve = analysis["markout"][label]
        quotes = curve["quotes"]
        ax.plot(horizons, _floats(p["mean"] for p in quotes), "o-", color=color, label=_text(label))
        low, high = (_floats(p[end] for p in quotes) for end in ("low", "high"))
        ax.fill_between(horizons, low, high, color=color, alpha=0.2)
        fills = _floats(p["mean"] for p in curve["fills"])
        ax.plot(horizons, fills, "x--", color=color, linewidth=1, label=f"{_text(label)} (fills)")
        if curve["fair"] is not None and curve["fair"]["mean"] is not None:
            ax.axhline(float(curve["fair"]["mean"]), color=color, linestyle=":", linewidth=1)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xscale("log")
    ax.set_xticks(horizons, [f"{h}s" for h in horizons])
    ax.set_xlabel("horizon")
    ax.set_ylabel("mean edge per contract ($)")
    ax.set_title("Markout: quotes (band: 95%), fills dashed, fair value dotted", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def _plot_groups(
    labels: Sequence[str], groups: Mapping[str, Mapping[str, Any]], keys: Sequence[str], what: str
) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(8.0, 0.9 * len(keys) * max(1, len(labels)) ** 0.5), 6))
    fig.set_layout_engine("constrained")
    rate_ax, pnl_ax = fig.subplots(2, 1, sharex=True)
    width = 0.8 / max(1, len(labels))
    positions = range(len(keys))
    for i, label in enumerate(labels):
        by_key = groups.get(label, {})
        offsets = [p - 0.4 + width * (i + 0.5) for p in positions]
        rates = _floats(by_key.get(k, {}).get("fill_rate") for k in keys)
        pnls = _floats(by_key.get(k, {}).get("pnl") for k in keys)
        rate_ax.bar(offsets, rates, width, color=f"C{i % 10}", label=_text(label))
        pnl_ax.bar(offsets, pnls, width, color=f"C{i % 10}")
    if not keys:
        _empty(rate_ax, "quotes")
    rate_ax.set_ylabel("fill rate")
    rate_ax.set_title(f"Fill rate and fill P&L by {what}", fontsize=9)
    rate_ax.legend(fontsize=7)
    pnl_ax.axhline(0, color="grey", linewidth=0.5)
    pnl_ax.set_ylabel("fill P&L at longest horizon ($)")
    pnl_ax.set_xticks(list(positions), [_text(k) for k in keys], rotation=30, ha="right")
    pnl_ax.set_xlabel(what)
    return fig


def _top_markets(analysis: Mapping[str, Any]) -> list[str]:
    counts: dict[str, int] = {}
    for groups in analysis["markets"].values():
        for market, g in groups.items():
            counts[market] = counts.get(market, 0) + g["quotes"]
    return sorted(counts, key=lambda m: (-counts[m], m))[:PLOTTED_MARKETS]


def _plot_position(result: ReplayResult, analysis: Mapping[str, Any]) -> Figure:
    fig, axes = _panels(result.labels)
    for ax, label in zip(axes, result.labels, strict=False):
        rows = result.quotes[label]
        ax.set_title(_text(label), fontsize=9)
        if not rows:
            _empty(ax, "rows")
            continue
        held = analysis["position"][label]["markets"]
        largest = sorted(held, key=lambda m: (-held[m]["max_abs"], m))[:PLOTTED_POSITIONS]
        for market in largest:
            own = [r for r in rows if r.market == market]
            times, held_then = _dates(r.ts for r in own), _floats(r.position for r in own)
            ax.step(times, held_then, where="post", linewidth=1, label=_text(market))
        gross = _gross(rows)
        times, values = _dates(ts for ts, _ in gross), _floats(g for _, g in gross)
        ax.plot(times, values, color="grey", linewidth=1.5, alpha=0.6, label="gross (all markets)")
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.legend(fontsize=6)
    axes[0].set_ylabel("contracts (+YES / -NO)")
    return fig


def draw_plots(result: ReplayResult, analysis: Mapping[str, Any]) -> dict[str, str]:
    """Draw every plot of PLOTS as a base64 PNG (needs matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        raise ReportDependencyError(
            f"drawing the report needs matplotlib: {INSTALL_HINT}"
        ) from None
    matplotlib.use("Agg")  # no display: a report is drawn over SSH and in CI too
    labels = result.labels
    figures = {
        "pnl": lambda: _plot_pnl(result),
        "markout": lambda: _plot_markout(result, analysis),
        "edge_buckets": lambda: _plot_groups(
            labels, analysis["edge_buckets"], EDGE_BUCKETS, "edge at RFQ time ($/contract)"
        ),
        "markets": lambda: _plot_groups(
            labels, analysis["markets"], _top_markets(analysis), "market"
        ),
        "size_buckets": lambda: _plot_groups(
            labels, analysis["size_buckets"], SIZE_BUCKETS, "RFQ size (contracts)"
        ),
        "position": lambda: _plot_position(result, analysis),
    }
    return {name: _png(figures[name]()) for name in PLOTS}


# -- HTML -----------------------------------------------------------------------------------

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 12px; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
figure { margin: 0.6em 0; } figure img { max-width: 100%; height: auto; }
figcaption, .note { color: #555; font-size: 12px; }
.scroll { overflow-x: auto; max-height: 32em; overflow-y: auto; }
"""


def _fmt(value: Any, places: str = "0.0001") -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return str(value.quantize(Decimal(places)))
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _money(value: Any) -> str:
    return _fmt(value, "0.01")


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], text_columns: int = 1, top: str = ""
) -> str:
    def cells(tag: str, values: Sequence[str]) -> str:
        return "".join(
            f'<{tag} class="text">{html.escape(v)}</{tag}>'
            if i < text_columns
            else f"<{tag}>{html.escape(v)}</{tag}>"
            for i, v in enumerate(values)
        )

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return f'<div class="scroll"><table>{top}<tr>{cells("th", headers)}</tr>{body}</table></div>'


def _figure(name: str, png: str, caption: str) -> str:
    return (
        f'<figure id="plot-{name}" data-plot="{name}">'
        f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{png}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _summary_table(result: ReplayResult, analysis: Mapping[str, Any]) -> str:
    horizons = result.horizons
    headers = [
        *("label", "strategy", "params", "RFQs", "quoted", "fills", "fill rate"),
        *("realized P&L", "MTM P&L", "total P&L", "fees", "Sharpe (daily)"),
        *(f"markout {h}s" for h in horizons),
    ]
    rows = [
        [
            label,
            s["strategy"],
            json.dumps(_plain(s["params"]), sort_keys=True),
            str(s["rfqs"]),
            str(s["quoted"]),
            str(s["fills"]),
            _fmt(s["fill_rate"]),
            _money(s["realized_pnl"]),
            _money(s["mtm_pnl"]),
            _money(s["total_pnl"]),
            _money(s["fees"]),
            _fmt(s["sharpe_daily"], "0.01"),
            *(_fmt(s["markout"].get(str(h))) for h in horizons),
        ]
        for label, s in analysis["summary"].items()
    ]
    return _table(headers, rows, text_columns=3)


def _groups_table(labels: Sequence[str], groups: Mapping[str, Any], keys: Sequence[str]) -> str:
    per_label = ("quotes", "fills", "fill rate", "fill P&L")
    top = '<tr><th class="text"></th>' + "".join(
        f'<th colspan="{len(per_label)}">{html.escape(label)}</th>' for label in labels
    )
    rows = []
    for key in keys:
        row = [key]
        for label in labels:
            g = groups.get(label, {}).get(key)
            row += (
                ["0", "0", "-", "-"]
                if g is None
                else [str(g["quotes"]), str(g["fills"]), _fmt(g["fill_rate"]), _money(g["pnl"])]
            )
        rows.append(row)
    return _table(["", *(per_label * len(labels))], rows, top=top + "</tr>")


def _markout_table(result: ReplayResult, analysis: Mapping[str, Any]) -> str:
    headers = ["label", "of", *(f"{h}s" for h in result.horizons)]
    if result.has_fair_value:
        headers.append("vs fair value")
    rows = []
    for label in result.labels:
        curve = analysis["markout"][label]
        for kind in ("quotes", "fills"):
            row = [label, kind]
            row += [f"{_fmt(p['mean'])} ± {_fmt(p['stderr'])} (n={p['n']})" for p in curve[kind]]
            if result.has_fair_value:
                fair = curve["fair"] if kind == "quotes" else None
                row.append("-" if fair is None else f"{_fmt(fair['mean'])} (n={fair['n']})")
            rows.append(row)
    return _table(headers, rows, text_columns=2)


def _pnl_table(analysis: Mapping[str, Any]) -> str:
    rows = []
    for label, pnl in analysis["pnl"].items():
        final = pnl["final"] or {}
        rows.append(
            [
                label,
                _money(final.get("realized")),
                _money(final.get("mtm")),
                _money(final.get("total")),
                _money(pnl["max_drawdown"]),
            ]
        )
    headers = ["label", "realized", "mark-to-market", "total", "max drawdown"]
    return _table(headers, rows)


def _position_table(analysis: Mapping[str, Any]) -> str:
    rows = []
    for label, position in analysis["position"].items():
        markets = position["markets"]
        open_at_end = sum(1 for m in markets.values() if m["final"])
        largest = max(markets, key=lambda m: markets[m]["max_abs"], default=None)
        rows.append(
            [
                label,
                _fmt(position["max_gross"], "1"),
                str(len(markets)),
                str(open_at_end),
                "-" if largest is None else f"{largest} ({_fmt(markets[largest]['max_abs'], '1')})",
            ]
        )
    headers = ["label", "max gross", "markets", "open at end", "largest position"]
    return _table(headers, rows)


def _worst_tables(result: ReplayResult, analysis: Mapping[str, Any]) -> str:
    horizons = result.horizons
    headers = [
        *("time", "RFQ", "market", "side", "contracts", "price", "mid", "fee"),
        *(f"markout {h}s" for h in horizons),
        f"P&L at {max(horizons)}s",
    ]
    parts = []
    for label in result.labels:
        worst = analysis["worst_rfqs"][label]
        parts.append(f"<h3>{html.escape(label)}</h3>")
        if not worst:
            parts.append('<p class="note">No fills.</p>')
            continue
        rows = [
            [
                _fmt(w["ts"]),
                w["rfq_id"],
                w["market"],
                w["filled_side"] or "-",
                _fmt(w["filled_contracts"], "1"),
                _fmt(w["fill_price"]),
                _fmt(w["mid"]),
                _money(w["fee"]),
                *(_fmt(w["fill_markout"][str(h)]) for h in horizons),
                _money(w["pnl"]),
            ]
            for w in worst
        ]
        parts.append(_table(headers, rows, text_columns=4))
    return "".join(parts)


def render_html(result: ReplayResult, analysis: Mapping[str, Any], plots: Mapping[str, str]) -> str:
    """The report as one self-contained HTML page: plots inline, no external resources."""
    meta = analysis["meta"]
    labels = result.labels
    longest = result.longest_horizon
    title = f"mmbot replay report: {result.path.name or result.path}"
    recordings = ", ".join(meta["recordings"]) or "-"
    bucket_note = (
        f"Fill rate is fills over quotes. Fill P&L is each fill's markout at {longest}s times"
        " its size, net of fees: realized P&L cannot be split by bucket, since positions net"
        " across fills."
    )
    sections = [
        ("summary", "Summary", _summary_table(result, analysis)),
        (
            "pnl",
            "Cumulative P&L",
            _figure("pnl", plots["pnl"], "Realized, mark-to-market and total P&L over time")
            + _pnl_table(analysis),
        ),
        (
            "markout",
            "Markout curve",
            _figure("markout", plots["markout"], "Mean edge per contract against horizon")
            + '<p class="note">Mean ± standard error (n); the band is ±1.96 standard errors.</p>'
            + _markout_table(result, analysis),
        ),
        (
            "edge-buckets",
            "By edge at RFQ time",
            _figure("edge_buckets", plots["edge_buckets"], "Fill rate and P&L by edge bucket")
            + f'<p class="note">Edge is the mean over quoted sides of mid - YES bid and'
            f" (1 - mid) - NO bid, at RFQ time. {bucket_note}</p>"
            + _groups_table(labels, analysis["edge_buckets"], EDGE_BUCKETS),
        ),
        (
            "markets",
            "By market",
            _figure("markets", plots["markets"], f"The {PLOTTED_MARKETS} most-quoted markets")
            + f'<p class="note">{bucket_note}</p>'
            + _groups_table(
                labels,
                analysis["markets"],
                sorted({m for groups in analysis["markets"].values() for m in groups}),
            ),
        ),
        (
            "size-buckets",
            "By RFQ size",
            _figure("size_buckets", plots["size_buckets"], "Fill rate and P&L by RFQ size")
            + f'<p class="note">{bucket_note}</p>'
            + _groups_table(labels, analysis["size_buckets"], SIZE_BUCKETS),
        ),
        (
            "position",
            "Position over time",
            _figure("position", plots["position"], "Net position of the largest markets")
            + _position_table(analysis),
        ),
        (
            "worst-rfqs",
            f"Worst RFQs (the {WORST_RFQS} fills with the worst markout at {longest}s)",
            _worst_tables(result, analysis),
        ),
    ]
    body = "".join(
        f'<section id="{sid}"><h2>{html.escape(heading)}</h2>{content}</section>'
        for sid, heading, content in sections
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f'<p class="note">Result {html.escape(meta["result"])} (format version'
        f" {meta['version']}), created {html.escape(meta['created'])}; fill model"
        f" {html.escape(meta['fill_model'])}; horizons"
        f" {', '.join(f'{h}s' for h in meta['horizons'])}; recordings"
        f" {html.escape(recordings)}.</p>{body}</body></html>\n"
    )


def write_report(result: ReplayResult, out_dir: Path) -> tuple[Path, Path]:
    """Write report.html and report.json into ``out_dir``; return their paths."""
    analysis = analyse(result)
    # Drawn before anything is written: without matplotlib, no half report is left behind.
    plots = draw_plots(result, analysis)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / "report.html"
    json_path = out_dir / "report.json"
    html_path.write_text(render_html(result, analysis, plots), encoding="utf-8")
    json_path.write_text(to_json(analysis), encoding="utf-8")
    return html_path, json_path
