"""Reading recordings back: the files of one or more runs as one table of RFQs in time order.

A recording of an unknown schema version is refused: its columns may not mean what the
replay thinks they mean. A truncated or corrupt file is skipped with one warning naming
it, and the rest is read: a crash leaves at most the file being written unreadable, and
losing a whole recording to it would be worse.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from mmbot.research import schema

__all__ = [
    "Recording",
    "RecordingError",
    "collector_paused",
    "load_recording",
    "recording_files",
]

log = structlog.get_logger("mmbot.research")


class RecordingError(Exception):
    """A recording cannot be used: missing, empty, or of a schema version we do not know."""


@dataclass
class Recording:
    """Every RFQ row of the files read (sorted by time), the settlements, and their runs."""

    rfqs: pa.Table
    settlements: pa.Table
    horizons: tuple[int, ...]
    runs: list[dict[str, Any]]
    files: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def has_fair_value(self) -> bool:
        """Whether the rows carry the mock exchange's hidden fair value (dry-runs only)."""
        return "fair_value" in self.rfqs.column_names


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a recording's rows are made or read.

    Millions of small objects with no cycles among them: the collector would scan them
    over and over while they are made, a third of the time, for nothing to collect.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def recording_files(paths: Sequence[Path]) -> list[Path]:
    """The Parquet files named by ``paths``: files as given, directories' files by name."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.glob("*.parquet")))
        elif path.exists():
            found.append(path)
        else:
            raise RecordingError(f"{path}: no such file or directory")
    if not found:
        raise RecordingError(
            "no recording files (*.parquet) in " + ", ".join(str(p) for p in paths)
        )
    return found


def _metadata(path: Path) -> dict[bytes, bytes]:
    return dict(pq.read_schema(path).metadata or {})


def load_recording(paths: Sequence[Path]) -> Recording:
    """Read the recording files under ``paths``; refuse unknown versions, skip broken files."""
    files = recording_files(paths)
    rfq_tables: list[pa.Table] = []
    settlement_tables: list[pa.Table] = []
    runs: dict[str, dict[str, Any]] = {}
    horizons: tuple[int, ...] | None = None
    used: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in files:
        try:
            meta = _metadata(path)
        except (OSError, pa.ArrowInvalid) as exc:
            skipped.append((path, _why(exc)))
            log.warning("recording_file_skipped", path=str(path), error=_why(exc))
            continue
        version = meta.get(b"mmbot.recording.version")
        if version is None:
            raise RecordingError(f"{path}: not an mmbot recording (no mmbot.recording.version)")
        if version.decode() != str(schema.VERSION):
            raise RecordingError(
                f"{path}: recording schema version {version.decode()} is not supported "
                f"(this mmbot reads version {schema.VERSION})"
            )
        table_name = meta.get(b"mmbot.recording.table", b"").decode()
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            skipped.append((path, _why(exc)))
            log.warning("recording_file_skipped", path=str(path), error=_why(exc))
            continue
        run = _run(meta)
        if run.get("run_id"):
            runs.setdefault(str(run["run_id"]), run)
        used.append(path)
        if table_name == schema.SETTLEMENTS:
            settlement_tables.append(table)
            continue
        if table_name != schema.RFQS:
            raise RecordingError(f"{path}: unknown recording table {table_name!r}")
        these = tuple(
            int(h) for h in meta.get(b"mmbot.recording.horizons", b"").decode().split(",") if h
        )
        if horizons is None:
            horizons = these
        elif these != horizons:
            raise RecordingError(
                f"{path}: markout horizons {list(these)} differ from the other files' "
                f"{list(horizons)}; replay recordings with the same horizons together"
            )
        rfq_tables.append(table)
    if not rfq_tables or horizons is None:
        raise RecordingError("no readable RFQ rows in " + ", ".join(str(p) for p in paths))
    # A dry-run's fair value column exists only there: mixed with live files, it is dropped.
    if not all("fair_value" in t.column_names for t in rfq_tables):
        rfq_tables = [
            t.drop_columns(["fair_value"]) if "fair_value" in t.column_names else t
            for t in rfq_tables
        ]
    rfqs = pa.concat_tables([t.replace_schema_metadata(None) for t in rfq_tables])
    rfqs = rfqs.sort_by([("ts", "ascending"), ("rfq_id", "ascending")])
    settlements = (
        pa.concat_tables([t.replace_schema_metadata(None) for t in settlement_tables])
        if settlement_tables
        else schema.settlements_schema().empty_table()
    )
    return Recording(
        rfqs=rfqs,
        settlements=settlements.sort_by([("ts", "ascending")]),
        horizons=horizons,
        runs=list(runs.values()),
        files=used,
        skipped=skipped,
    )


def _run(meta: dict[bytes, bytes]) -> dict[str, Any]:
    raw = meta.get(b"mmbot.run")
    if not raw:
        return {}
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]
