"""A synthetic replay RESULT directory, written with pyarrow as ``mmbot replay`` would.

The same RFQ stream is answered by two strategy labels that differ in their half-spread,
so every section of the report and of compare has two sides to show. The data is drawn
from a seeded generator: the same arguments always write the same files.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["HORIZONS", "LABELS", "MARKETS", "write_result"]

HORIZONS = (1, 10, 60, 300)
LABELS = {"fixed_spread half_spread=0.02": "0.02", "fixed_spread half_spread=0.05": "0.05"}
MARKETS = ("KXBTC-25DEC31-B100000", "KXETH-25DEC31-B4000", "KXFED-26JAN-T4.00", "KXCPI-25DEC")
_SIZES: tuple[Decimal | None, ...] = (
    *(Decimal(n) for n in ("5", "20", "75", "250", "800", "2000")),
    None,
)
_Q = Decimal("0.000001")
_DEC = pa.decimal128(18, 6)
_START = datetime(2026, 11, 2, 14, 30, tzinfo=UTC)


def _q(value: Decimal) -> Decimal:
    return value.quantize(_Q)


def _rfqs(count: int, seed: int) -> list[dict[str, Any]]:
    """The RFQ stream both labels see: time, market, size, mid now and at each horizon."""
    rng = random.Random(seed)
    mids = {m: Decimal(rng.randint(25, 75)) / 100 for m in MARKETS}
    stream = []
    for i in range(count):
        market = rng.choice(MARKETS)
        mid = mids[market] = min(
            Decimal("0.95"), max(Decimal("0.05"), mids[market] + Decimal(rng.randint(-2, 2)) / 100)
        )
        later = {
            h: min(Decimal("0.99"), max(Decimal("0.01"), mid + Decimal(rng.randint(-h, h)) / 4000))
            for h in HORIZONS
        }
        stream.append(
            {
                "ts": _START + timedelta(seconds=7 * i),
                "rfq_id": f"rfq-{i:05d}",
                "market": market,
                "rfq_contracts": rng.choice(_SIZES),
                "mid": None if i % 97 == 13 else mid,
                "later": later,
                "u_quote": rng.random(),
                "u_fill": rng.random(),
                "side": rng.choice(("yes", "no")),
                "fair": mid + Decimal(rng.randint(-10, 10)) / 1000,
            }
        )
    return stream


def _edge(side: str, later_mid: Decimal, bid: Decimal) -> Decimal:
    return later_mid - bid if side == "yes" else Decimal(1) - later_mid - bid


def _label_rows(
    label: str, half_spread: Decimal, stream: list[dict[str, Any]], fair: bool
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    realized = Decimal(0)
    positions = dict.fromkeys(MARKETS, Decimal(0))
    marks: dict[str, Decimal] = {}
    for rfq in stream:
        mid = rfq["mid"]
        quoted = mid is not None and rfq["u_quote"] < 0.85
        row: dict[str, Any] = {
            key: rfq[key] for key in ("ts", "rfq_id", "market", "rfq_contracts", "mid")
        }
        row |= {"label": label, "decision": "quoted" if quoted else "skipped"}
        row["reason"] = "" if quoted else ("no_mid" if mid is None else "size_limit")
        row |= dict.fromkeys(
            ("yes_bid", "no_bid", "filled_side", "filled_contracts", "fill_price", "fee")
        )
        markouts = dict.fromkeys(HORIZONS)
        fill_markouts = dict.fromkeys(HORIZONS)
        sides: tuple[str, ...] = ()
        if quoted:
            # The strategy shades its bid a little, so quotes fall into several edge buckets.
            shade = Decimal(int(rfq["u_fill"] * 1000) % 7 - 3) / 100
            yes_bid = _q(max(Decimal("0.01"), mid - half_spread - shade))
            no_bid = _q(max(Decimal("0.01"), Decimal(1) - mid - half_spread))
            # Some quotes bid one side only, so that quote markouts move with the mid.
            sides = ("yes",) if rfq["u_quote"] < 0.4 else ("yes", "no")
            if sides == ("yes",):
                no_bid = None
            bids = {"yes": yes_bid, "no": no_bid}
            row |= {"yes_bid": yes_bid, "no_bid": no_bid}
            for h, later in rfq["later"].items():
                edges = [_edge(side, later, bids[side]) for side in sides]
                markouts[h] = _q(sum(edges, Decimal(0)) / len(edges))
            # Tighter quotes fill more often: the fill probability falls with the spread.
            if Decimal(repr(rfq["u_fill"])) < Decimal("0.3") - half_spread * 4:
                side = rfq["side"] if len(sides) == 2 else "yes"
                size = rfq["rfq_contracts"] or Decimal(10)
                price = yes_bid if side == "yes" else no_bid
                fee = _q(size * Decimal("0.0035"))
                row |= {"filled_side": side, "filled_contracts": _q(size)}
                row |= {"fill_price": price, "fee": fee}
                for h, later in rfq["later"].items():
                    fill_markouts[h] = _q(_edge(side, later, price))
                positions[rfq["market"]] += size if side == "yes" else -size
                realized += size * fill_markouts[HORIZONS[0]] / 3 - fee
        if mid is not None:
            marks[rfq["market"]] = mid
        mtm = sum(
            (
                pos * (marks.get(m, Decimal("0.5")) - Decimal("0.5")) / 10
                for m, pos in positions.items()
            ),
            Decimal(0),
        )
        row |= {"realized_pnl": _q(realized), "mtm_pnl": _q(mtm)}
        row["position"] = _q(positions[rfq["market"]])
        for h in HORIZONS:
            row[f"markout_{h}s"] = markouts[h]
            row[f"fill_markout_{h}s"] = fill_markouts[h]
        if fair:
            row["fair_value"] = _q(rfq["fair"])
            row["fair_markout"] = None
            if quoted:
                edges = [_edge(side, rfq["fair"], row[f"{side}_bid"]) for side in sides]
                row["fair_markout"] = _q(sum(edges, Decimal(0)) / len(edges))
        rows.append(row)
    return rows


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    quoted = [r for r in rows if r["decision"] == "quoted"]
    fills = [r for r in quoted if r["filled_side"] is not None]
    last = rows[-1]
    markout = {}
    for h in HORIZONS:
        values = [r[f"markout_{h}s"] for r in quoted if r[f"markout_{h}s"] is not None]
        markout[str(h)] = str(_q(sum(values, Decimal(0)) / len(values))) if values else None
    return {
        "rfqs": len(rows),
        "quoted": len(quoted),
        "fills": len(fills),
        "fill_rate": str(_q(Decimal(len(fills)) / len(quoted))) if quoted else "0",
        "realized_pnl": str(last["realized_pnl"]),
        "mtm_pnl": str(last["mtm_pnl"]),
        "total_pnl": str(last["realized_pnl"] + last["mtm_pnl"]),
        "fees": str(sum((r["fee"] for r in fills), Decimal(0))),
        "sharpe_daily": None,
        "markout": markout,
    }


def write_result(
    directory: Path,
    *,
    rfqs: int = 300,
    seed: int = 14,
    version: int = 1,
    fair_value: bool = False,
    labels: dict[str, str] | None = None,
    parts: bool = False,
) -> Path:
    """Write result.json and quotes.parquet for two labels answering ``rfqs`` RFQs."""
    directory.mkdir(parents=True, exist_ok=True)
    stream = _rfqs(rfqs, seed)
    chosen = LABELS if labels is None else labels
    per_label = {
        label: _label_rows(label, Decimal(spread), stream, fair_value)
        for label, spread in chosen.items()
    }
    rows = [row for label in sorted(per_label) for row in per_label[label]]
    fields = [
        pa.field("label", pa.string()),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        pa.field("rfq_id", pa.string()),
        pa.field("market", pa.string()),
        pa.field("rfq_contracts", _DEC),
        pa.field("decision", pa.string()),
        pa.field("reason", pa.string()),
        *(pa.field(name, _DEC) for name in ("yes_bid", "no_bid", "mid")),
        pa.field("filled_side", pa.string()),
        *(pa.field(name, _DEC) for name in ("filled_contracts", "fill_price", "fee")),
        *(pa.field(name, _DEC) for name in ("realized_pnl", "mtm_pnl", "position")),
        *(pa.field(f"markout_{h}s", _DEC) for h in HORIZONS),
        *(pa.field(f"fill_markout_{h}s", _DEC) for h in HORIZONS),
    ]
    if fair_value:
        fields += [pa.field("fair_value", _DEC), pa.field("fair_markout", _DEC)]
    schema = pa.schema(fields)
    table = pa.table({f.name: pa.array([r[f.name] for r in rows], f.type) for f in fields}, schema)
    if parts:
        # As a parallel sweep writes it: a directory with one part file per label.
        (directory / "quotes.parquet").mkdir()
        for index, label in enumerate(sorted(per_label)):
            mask = pa.array([r["label"] == label for r in rows])
            pq.write_table(
                table.filter(mask), directory / f"quotes.parquet/part-{index:04d}.parquet"
            )
    else:
        pq.write_table(table, directory / "quotes.parquet")
    meta = {
        "format": "mmbot-replay-result",
        "version": version,
        "fill_model": "markout",
        "horizons": list(HORIZONS),
        "recordings": ["recordings/2026-11-02.rec"],
        "created": "2026-11-03T09:00:00+00:00",
        "strategies": [
            {
                "label": label,
                "strategy": "fixed_spread",
                "params": {"half_spread": spread},
                "summary": _summary(per_label[label]),
            }
            for label, spread in chosen.items()
        ],
    }
    (directory / "result.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return directory
