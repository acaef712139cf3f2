"""Reading a replay RESULT directory (format version 1) into memory.

``mmbot replay`` writes a directory holding ``result.json`` (what was run, and a summary
per strategy label) and ``quotes.parquet`` (one row per label and RFQ, sorted by label
then time; a file, or a directory of part files, one per worker of a sweep). This module
is the one place that knows that layout; the report and compare work on the structures it
returns, so a later format version changes only this file.

A version this code does not know is refused, never guessed at: a later version may keep
a column's name and change what it means. Money stays exact: pyarrow hands decimal128
columns back as Decimal, result.json writes amounts as strings, and a float column where a
decimal is expected is refused rather than converted.

``fair_value`` and ``fair_markout`` exist only for recordings of the mock exchange, whose
fair value is known; live recordings have no such column, and readers check
:attr:`ReplayResult.has_fair_value` instead of assuming either.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT",
    "QUOTES_FILE",
    "RESULT_FILE",
    "SUPPORTED_VERSIONS",
    "QuoteRow",
    "ReplayResult",
    "ResultError",
    "StrategySummary",
    "load_result",
]

FORMAT = "mmbot-replay-result"
SUPPORTED_VERSIONS = (1,)
RESULT_FILE = "result.json"
QUOTES_FILE = "quotes.parquet"
FILL_MODELS = ("markout", "recorded", "threshold")

_DECIMAL_COLUMNS = (
    "rfq_contracts",
    "yes_bid",
    "no_bid",
    "mid",
    "filled_contracts",
    "fill_price",
    "fee",
    "realized_pnl",
    "mtm_pnl",
    "position",
)
_STRING_COLUMNS = ("label", "rfq_id", "market", "decision", "reason", "filled_side")
_NOT_NULL = ("label", "ts", "rfq_id", "market", "decision", "realized_pnl", "mtm_pnl", "position")
_ONE = Decimal(1)


class ResultError(Exception):
    """A RESULT directory that is missing, malformed or of a version this code cannot read."""


@dataclass(frozen=True, slots=True)
class StrategySummary:
    """One strategy label's totals, as ``mmbot replay`` computed them."""

    label: str
    strategy: str
    params: Mapping[str, Any]
    rfqs: int
    quoted: int
    fills: int
    fill_rate: Decimal
    realized_pnl: Decimal
    mtm_pnl: Decimal
    total_pnl: Decimal
    fees: Decimal
    sharpe_daily: Decimal | None
    markout: Mapping[int, Decimal | None]


@dataclass(frozen=True, slots=True)
class QuoteRow:
    """What one strategy label did with one RFQ, and where that left it."""

    label: str
    ts: datetime
    rfq_id: str
    market: str
    rfq_contracts: Decimal | None
    decision: str
    reason: str
    yes_bid: Decimal | None
    no_bid: Decimal | None
    mid: Decimal | None
    filled_side: str | None
    filled_contracts: Decimal | None
    fill_price: Decimal | None
    fee: Decimal | None
    realized_pnl: Decimal
    mtm_pnl: Decimal
    position: Decimal
    markout: Mapping[int, Decimal | None]
    fill_markout: Mapping[int, Decimal | None]
    fair_value: Decimal | None = None
    fair_markout: Decimal | None = None

    @property
    def quoted(self) -> bool:
        """Whether the label answered this RFQ with a quote."""
        return self.decision == "quoted"

    @property
    def filled(self) -> bool:
        """Whether the quote was filled."""
        return self.filled_side is not None

    @property
    def total_pnl(self) -> Decimal:
        """Realized plus mark-to-market P&L of the label after this row."""
        return self.realized_pnl + self.mtm_pnl

    @property
    def edge(self) -> Decimal | None:
        """Mean per-contract edge of the quoted sides against the mid at RFQ time."""
        # The same definition as the markout columns, with the mid of the RFQ's own time:
        # a YES bid earns mid - bid, a NO bid earns (1 - mid) - bid.
        if not self.quoted or self.mid is None:
            return None
        sides = [self.mid - self.yes_bid] if self.yes_bid is not None else []
        if self.no_bid is not None:
            sides.append(_ONE - self.mid - self.no_bid)
        return sum(sides, Decimal(0)) / len(sides) if sides else None


@dataclass(frozen=True)
class ReplayResult:
    """A loaded RESULT directory: run metadata, per-label summaries and every quote row."""

    path: Path
    version: int
    fill_model: str
    horizons: tuple[int, ...]
    recordings: tuple[str, ...]
    created: str
    strategies: tuple[StrategySummary, ...]
    quotes: Mapping[str, tuple[QuoteRow, ...]] = field(repr=False)
    has_fair_value: bool = False

    @property
    def labels(self) -> tuple[str, ...]:
        """Strategy labels in the order result.json lists them."""
        return tuple(s.label for s in self.strategies)

    @property
    def longest_horizon(self) -> int:
        """The longest markout horizon, in seconds."""
        return max(self.horizons)


def load_result(path: Path | str) -> ReplayResult:
    """Load and validate a RESULT directory written by ``mmbot replay``."""
    root = Path(path)
    if not root.exists():
        raise ResultError(f"{root}: no such RESULT directory")
    if not root.is_dir():
        raise ResultError(f"{root}: not a directory (expected a RESULT directory)")
    meta = _read_meta(root / RESULT_FILE)
    horizons = meta["horizons"]
    strategies = meta["strategies"]
    quotes, has_fair_value = _read_quotes(root / QUOTES_FILE, horizons)
    known = {s.label for s in strategies}
    unknown = sorted(set(quotes) - known)
    if unknown:
        raise ResultError(
            f"{root / QUOTES_FILE}: rows for labels not in {RESULT_FILE}: {', '.join(unknown)}"
        )
    return ReplayResult(
        path=root,
        version=meta["version"],
        fill_model=meta["fill_model"],
        horizons=horizons,
        recordings=meta["recordings"],
        created=meta["created"],
        strategies=strategies,
        quotes={s.label: quotes.get(s.label, ()) for s in strategies},
        has_fair_value=has_fair_value,
    )


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultError(f"{path}: not found (is this a RESULT directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultError(f"{path}: unreadable: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ResultError(f"{path}: not a replay result (format {got!r}, expected {FORMAT!r})")
    version = raw.get("version")
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise ResultError(
            f"{path}: result format version {version!r} is not supported"
            f" (this mmbot reads version {supported}); upgrade mmbot or re-run mmbot replay"
        )
    fill_model = raw.get("fill_model")
    if fill_model not in FILL_MODELS:
        raise ResultError(f"{path}: unknown fill_model {fill_model!r}")
    horizons = raw.get("horizons")
    if (
        not isinstance(horizons, list)
        or not horizons
        or not all(type(h) is int and h > 0 for h in horizons)
    ):
        raise ResultError(f"{path}: horizons must be a non-empty list of positive seconds")
    context = f"{path}: strategies"
    entries = raw.get("strategies")
    if not isinstance(entries, list):
        raise ResultError(f"{context}: expected a list")
    strategies = tuple(
        _summary(entry, tuple(horizons), f"{context}[{i}]") for i, entry in enumerate(entries)
    )
    labels = [s.label for s in strategies]
    if len(set(labels)) != len(labels):
        raise ResultError(f"{context}: a label appears more than once")
    recordings = raw.get("recordings", [])
    return {
        "version": version,
        "fill_model": fill_model,
        "horizons": tuple(horizons),
        "recordings": tuple(str(r) for r in recordings) if isinstance(recordings, list) else (),
        "created": str(raw.get("created", "")),
        "strategies": strategies,
    }


def _summary(entry: object, horizons: Sequence[int], where: str) -> StrategySummary:
    if not isinstance(entry, dict) or not isinstance(entry.get("summary"), dict):
        raise ResultError(f"{where}: expected an object with a summary")
    summary: dict[str, Any] = entry["summary"]
    label = entry.get("label")
    if not isinstance(label, str) or not label:
        raise ResultError(f"{where}: label must be a non-empty string")
    markout = summary.get("markout") or {}
    if not isinstance(markout, dict):
        raise ResultError(f"{where}.summary.markout: expected an object")
    params = entry.get("params") or {}
    return StrategySummary(
        label=label,
        strategy=str(entry.get("strategy", "")),
        params=params if isinstance(params, dict) else {},
        rfqs=_count(summary, "rfqs", where),
        quoted=_count(summary, "quoted", where),
        fills=_count(summary, "fills", where),
        fill_rate=_amount(summary.get("fill_rate"), f"{where}.summary.fill_rate"),
        realized_pnl=_amount(summary.get("realized_pnl"), f"{where}.summary.realized_pnl"),
        mtm_pnl=_amount(summary.get("mtm_pnl"), f"{where}.summary.mtm_pnl"),
        total_pnl=_amount(summary.get("total_pnl"), f"{where}.summary.total_pnl"),
        fees=_amount(summary.get("fees"), f"{where}.summary.fees"),
        sharpe_daily=_optional_amount(summary.get("sharpe_daily"), f"{where}.summary.sharpe"),
        markout={
            h: _optional_amount(markout.get(str(h)), f"{where}.summary.markout.{h}")
            for h in horizons
        },
    )


def _count(summary: Mapping[str, Any], key: str, where: str) -> int:
    value = summary.get(key)
    if type(value) is not int or value < 0:
        raise ResultError(f"{where}.summary.{key}: expected a count, got {value!r}")
    return value


def _amount(value: object, where: str) -> Decimal:
    # Strings only: a JSON number would have passed through a float on the writer's side.
    if not isinstance(value, str):
        raise ResultError(f"{where}: expected a decimal string, got {value!r}")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ResultError(f"{where}: not a decimal: {value!r}") from None
    if not amount.is_finite():
        raise ResultError(f"{where}: not a finite decimal: {value!r}")
    return amount


def _optional_amount(value: object, where: str) -> Decimal | None:
    return None if value is None else _amount(value, where)


def _read_quotes(
    path: Path, horizons: Sequence[int]
) -> tuple[dict[str, tuple[QuoteRow, ...]], bool]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ResultError(f"{path}: reading it needs pyarrow (pip install pyarrow)") from None
    # A file, or a directory of part files when a sweep's workers each wrote their own.
    if not path.exists():
        raise ResultError(f"{path}: not found (is this a RESULT directory?)")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise ResultError(f"{path}: unreadable: {exc}") from None
    markouts = [f"markout_{h}s" for h in horizons]
    fill_markouts = [f"fill_markout_{h}s" for h in horizons]
    has_fair_value = "fair_value" in table.column_names
    decimals = [*_DECIMAL_COLUMNS, *markouts, *fill_markouts]
    if has_fair_value:
        decimals.append("fair_value")
        if "fair_markout" in table.column_names:
            decimals.append("fair_markout")
    missing = [c for c in (*_STRING_COLUMNS, "ts", *decimals) if c not in table.column_names]
    if missing:
        raise ResultError(f"{path}: missing columns: {', '.join(missing)}")
    schema = table.schema
    wrong = [c for c in decimals if not pa.types.is_decimal(schema.field(c).type)]
    if not pa.types.is_timestamp(schema.field("ts").type):
        wrong.append("ts")
    if wrong:
        described = ", ".join(f"{c} ({schema.field(c).type})" for c in wrong)
        raise ResultError(f"{path}: columns of the wrong type: {described}")
    nulls = [c for c in _NOT_NULL if table.column(c).null_count]
    if nulls:
        raise ResultError(f"{path}: null values in columns that cannot be null: {nulls}")
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    absent = [None] * table.num_rows
    fair_values = columns["fair_value"] if has_fair_value else absent
    fair_markouts = columns.get("fair_markout", absent)
    # Naive timestamps are taken as UTC, which is what the format prescribes.
    times = [ts if ts.tzinfo else ts.replace(tzinfo=UTC) for ts in columns["ts"]]
    by_label: dict[str, list[QuoteRow]] = {}
    for i in range(table.num_rows):
        row = QuoteRow(
            label=columns["label"][i],
            ts=times[i],
            rfq_id=columns["rfq_id"][i],
            market=columns["market"][i],
            rfq_contracts=columns["rfq_contracts"][i],
            decision=columns["decision"][i],
            reason=columns["reason"][i] or "",
            yes_bid=columns["yes_bid"][i],
            no_bid=columns["no_bid"][i],
            mid=columns["mid"][i],
            filled_side=columns["filled_side"][i],
            filled_contracts=columns["filled_contracts"][i],
            fill_price=columns["fill_price"][i],
            fee=columns["fee"][i],
            realized_pnl=columns["realized_pnl"][i],
            mtm_pnl=columns["mtm_pnl"][i],
            position=columns["position"][i],
            markout={h: columns[f"markout_{h}s"][i] for h in horizons},
            fill_markout={h: columns[f"fill_markout_{h}s"][i] for h in horizons},
            fair_value=fair_values[i],
            fair_markout=fair_markouts[i],
        )
        by_label.setdefault(row.label, []).append(row)
    # Sorted here too: the report draws time series, and a writer's slip must not zigzag them.
    return {
        label: tuple(sorted(rows, key=lambda r: r.ts)) for label, rows in by_label.items()
    }, has_fair_value
