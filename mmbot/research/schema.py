"""The recording's file format: Apache Parquet tables, one schema version for all of them.

A recording is a directory of Parquet files that polars, pandas or DuckDB read without
mmbot. Two tables live side by side, told apart by the file name's prefix:

``rfqs-*.parquet``
    One row per RFQ the daemon saw: the RFQ as received, the market view its strategy
    priced on, the decision, what became of the quote, and the reference mid at each
    markout horizon after the RFQ. A dry-run adds ``fair_value``, the mock exchange's
    hidden fair probability of YES when the RFQ arrived: the column exists only there.
``settlements-*.parquet``
    One row per market seen to settle, with what one YES contract paid.

Every file carries the schema version, the table name and the horizons in its key-value
metadata (``mmbot.recording.*``), and the run that wrote it (``mmbot.run``: resolved
configuration, strategy parameters, seed and version, as JSON). Money, prices and sizes
are ``decimal128`` columns: exact, never floats. Durations (an age, a TTL) are seconds as
float64; they are times, not money.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import orjson
import pyarrow as pa

__all__ = [
    "DECIMAL",
    "RFQS",
    "SCALE",
    "SETTLEMENTS",
    "VERSION",
    "exact",
    "file_metadata",
    "mid_column",
    "rfqs_schema",
    "settlements_schema",
]

#: Bumped whenever a column changes meaning, type or name; readers refuse other versions.
VERSION: Final = 1
RFQS: Final = "rfqs"
SETTLEMENTS: Final = "settlements"

#: Decimal places kept: Kalshi's prices have four, sizes two; mids of two prices five.
SCALE: Final = 8
DECIMAL: Final = pa.decimal128(24, SCALE)
_TS: Final = pa.timestamp("us", tz="UTC")
_QUANTUM: Final = Decimal(1).scaleb(-SCALE)

_RFQ_FIELDS: Final = (
    # when and where
    ("ts", _TS),
    ("run_id", pa.string()),
    ("mode", pa.string()),
    # the RFQ as received
    ("rfq_id", pa.string()),
    ("market", pa.string()),
    ("event", pa.string()),
    ("creator_id", pa.string()),
    ("contracts", DECIMAL),
    ("target_cost", DECIMAL),
    ("is_combo", pa.bool_()),
    ("legs", pa.string()),
    ("rfq_json", pa.string()),
    # the market view the strategy saw
    ("strategy", pa.string()),
    ("view_yes_bid", DECIMAL),
    ("view_yes_ask", DECIMAL),
    ("view_last", DECIMAL),
    ("view_mid", DECIMAL),
    ("view_age_s", pa.float64()),
    ("view_stale", pa.bool_()),
    ("view_hvm", pa.bool_()),
    ("view_position", DECIMAL),
    ("price_grid", pa.string()),
    ("open_quotes", pa.int32()),
    # the decision
    ("decision", pa.string()),
    ("reason", pa.string()),
    ("yes_bid", DECIMAL),
    ("no_bid", DECIMAL),
    ("ttl_s", pa.float64()),
    ("quote_id", pa.string()),
    ("requotes", pa.int32()),
    # the outcome
    ("accepted_ts", _TS),
    ("accepted_side", pa.string()),
    ("accepted_price", DECIMAL),
    ("accepted_contracts", DECIMAL),
    ("confirm", pa.string()),
    ("decline_reason", pa.string()),
    ("executed_contracts", DECIMAL),
    ("executed_price", DECIMAL),
    ("fee", DECIMAL),
    ("closed_ts", _TS),
    ("close_reason", pa.string()),
)


def mid_column(horizon: int) -> str:
    """The column holding the reference mid ``horizon`` seconds after the RFQ."""
    return f"mid_{horizon}s"


def rfqs_schema(horizons: Sequence[int], *, fair_value: bool) -> pa.Schema:
    """The ``rfqs`` table's schema for these horizons; ``fair_value`` on a dry-run only."""
    fields = [pa.field(name, kind) for name, kind in _RFQ_FIELDS]
    fields += [pa.field(mid_column(h), DECIMAL) for h in horizons]
    if fair_value:
        fields.append(pa.field("fair_value", DECIMAL))
    return pa.schema(fields)


def settlements_schema() -> pa.Schema:
    """The ``settlements`` table's schema."""
    return pa.schema(
        [
            pa.field("ts", _TS),
            pa.field("run_id", pa.string()),
            pa.field("market", pa.string()),
            pa.field("yes_value", DECIMAL),
        ]
    )


def file_metadata(
    table: str, horizons: Sequence[int], run: Mapping[str, Any]
) -> dict[bytes, bytes]:
    """The key-value metadata every recording file carries."""
    return {
        b"mmbot.recording.version": str(VERSION).encode(),
        b"mmbot.recording.table": table.encode(),
        b"mmbot.recording.horizons": ",".join(str(h) for h in horizons).encode(),
        b"mmbot.run": orjson.dumps(run, default=str),
    }


def exact(value: Decimal | None) -> Decimal | None:
    """``value`` as the decimal columns store it: exact when it fits SCALE places.

    Only a value with more places than any exchange price has (a strategy's own
    arithmetic, say) is rounded, half to even, to the column's scale.
    """
    if value is None:
        return None
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -SCALE:
        return value
    return value.quantize(_QUANTUM)
