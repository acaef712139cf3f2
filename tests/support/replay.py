"""Hand-made recordings for the replay tests: a few RFQ rows written with pyarrow.

Every row has the market view a strategy prices on (YES bid/ask around a mid, on a one-cent
grid from 0.01 to 0.99), the reference mids at the recording's horizons and, when asked,
the outcome columns the ``recorded`` fill model reads. Nothing here computes an expected
value: the tests work those out by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from mmbot.config import Settings
from mmbot.fees import FeeModel
from mmbot.research import schema
from mmbot.research.recording import load_recording
from mmbot.research.replay import FillModel, Flow, LabelResult, flow_of, replay
from mmbot.strategy import (
    MarketView,
    QuoteIntent,
    Rfq,
    Route,
    Strategy,
    StrategyRouter,
    build_strategy,
)

__all__ = [
    "GRID",
    "HORIZONS",
    "START",
    "ZERO_FEES",
    "Exploding",
    "ExplodingParams",
    "at",
    "fixed_spread",
    "load_flow",
    "rfq_row",
    "run",
    "write_rfqs",
    "write_settlements",
]

HORIZONS: tuple[int, ...] = (1, 10)
START = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
#: One-cent steps from 0.01 to 0.99, as the recorder writes a market's price grid.
GRID = '[["0.01", "0.99", "0.01"]]'
#: The ``quadratic`` schedule: makers pay no fee, so hand-computed P&L needs no fee term.
ZERO_FEES = FeeModel(fee_type="quadratic")


def at(seconds: float) -> datetime:
    """``seconds`` after :data:`START`."""
    return START + timedelta(seconds=seconds)


def _dec(value: str | Decimal | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def rfq_row(
    rfq_id: str,
    *,
    ts: float,
    market: str = "MKT-A",
    bid: str = "0.49",
    ask: str = "0.51",
    contracts: str | None = "10",
    target_cost: str | None = None,
    mids: Sequence[str | None] = ("0.50", "0.50"),
    horizons: Sequence[int] = HORIZONS,
    stale: bool = False,
    decision: str = "quoted",
    accepted_side: str | None = None,
    accepted_price: str | None = None,
    accepted_contracts: str | None = None,
    accepted_after: float = 1.0,
    confirm: str | None = None,
    executed: str | None = None,
    closed_after: float | None = 2.0,
) -> dict[str, Any]:
    """One ``rfqs`` row: the RFQ ``ts`` seconds after START and, optionally, its outcome.

    ``accepted_*`` describe the recorded acceptance (``accepted_after`` seconds after the
    RFQ), ``confirm``/``executed`` what the live run and the exchange did with it, and
    ``closed_after`` when the recorded quote closed.
    """
    when = at(ts)
    accepted = accepted_side is not None
    row: dict[str, Any] = {
        "ts": when,
        "run_id": "hand-made",
        "mode": "live",
        "rfq_id": rfq_id,
        "market": market,
        "event": market.rsplit("-", 1)[0],
        "creator_id": "requester-1",
        "contracts": _dec(contracts if contracts is not None else "0"),
        "target_cost": _dec(target_cost),
        "is_combo": False,
        "strategy": "fixed_spread",
        "view_yes_bid": _dec(bid),
        "view_yes_ask": _dec(ask),
        "view_age_s": 0.0,
        "view_stale": stale,
        "view_hvm": False,
        "view_position": Decimal(0),
        "price_grid": GRID,
        "open_quotes": 0,
        "decision": decision,
        "accepted_ts": when + timedelta(seconds=accepted_after) if accepted else None,
        "accepted_side": accepted_side,
        "accepted_price": _dec(accepted_price),
        "accepted_contracts": _dec(accepted_contracts),
        "confirm": confirm,
        "executed_contracts": _dec(executed),
        "closed_ts": when + timedelta(seconds=closed_after) if closed_after is not None else None,
    }
    for horizon, mid in zip(horizons, mids, strict=True):
        row[schema.mid_column(horizon)] = _dec(mid)
    return row


def write_rfqs(
    path: Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    horizons: Sequence[int] = HORIZONS,
    version: str | None = None,
) -> Path:
    """Write ``rows`` as one ``rfqs`` file; ``version`` overrides the schema version."""
    table_schema = schema.rfqs_schema(horizons, fair_value=False)
    metadata = schema.file_metadata(schema.RFQS, horizons, {"run_id": "hand-made"})
    if version is not None:
        metadata[b"mmbot.recording.version"] = version.encode()
    table = pa.Table.from_pylist([dict(r) for r in rows], schema=table_schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(metadata), path)
    return path


def write_settlements(path: Path, settled: Sequence[tuple[float, str, str]]) -> Path:
    """Write a ``settlements`` file: (seconds after START, market, YES value) per row."""
    rows = [
        {"ts": at(ts), "run_id": "hand-made", "market": market, "yes_value": Decimal(value)}
        for ts, market, value in settled
    ]
    table = pa.Table.from_pylist(rows, schema=schema.settlements_schema())
    metadata = schema.file_metadata(schema.SETTLEMENTS, HORIZONS, {"run_id": "hand-made"})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(metadata), path)
    return path


def load_flow(*paths: Path) -> Flow:
    """The replay's form of the recording at ``paths``."""
    return flow_of(load_recording(list(paths)))


def fixed_spread(**params: str) -> StrategyRouter:
    """``fixed_spread`` with ``params`` (strings, as a config gives them) for every market."""
    return StrategyRouter([Route(patterns=("*",), strategy=build_strategy("fixed_spread", params))])


def run(
    flow: Flow,
    model: FillModel,
    *,
    router: StrategyRouter | None = None,
    settings: Settings | None = None,
    fees: FeeModel | None = ZERO_FEES,
    label: str = "test",
) -> LabelResult:
    """Replay ``router`` (default: fixed_spread, half_spread 0.02) over ``flow``."""
    return replay(
        flow,
        label,
        router if router is not None else fixed_spread(half_spread="0.02"),
        settings if settings is not None else Settings(),
        model,
        fees,
    )


class ExplodingParams(BaseModel):
    """No parameters."""


class Exploding(Strategy[ExplodingParams]):
    """A strategy whose ``quote`` raises on every RFQ."""

    name = "exploding"
    Params = ExplodingParams

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        """Fail, always."""
        raise RuntimeError(f"boom on {rfq.id}")
