"""Recording a run to Parquet: every RFQ, what the strategy saw and did, what came of it.

The event loop pays for a recording with a few list appends per RFQ and nothing else:
:meth:`Recorder.seen` and :meth:`Recorder.priced` keep references to the RFQ and the
market view (both immutable), and the journal hands every row it writes to
:meth:`Recorder.on_row`. :meth:`Recorder.run`, a task on the loop, wakes a few times a
second to read the reference mid of each RFQ's market as its markout horizons fall due
(from the market-data cache, fetching only a market gone stale) and passes what piled up
to a writer thread in one batch. The thread joins it all into one row per RFQ and writes
a row once its last horizon has been sampled and its quote is closed; files are written
every ``rotate_seconds`` as ``*.parquet.part`` and renamed when complete, so a reader
never sees half a file.

A recording is research data, not the record of what the daemon owes: the journal is.
So a recording that cannot be written is logged and counted, and trading goes on. A crash
loses the rows not yet written: at most the longest horizon plus ``rotate_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from mmbot.journal.schema import Row
from mmbot.kalshi.models import Market, Rfq
from mmbot.marketdata import MarketData, reference_mid, settlement_value
from mmbot.quoting.pricing import Decline, Priced
from mmbot.research import schema
from mmbot.strategy import MarketView

__all__ = ["Recorder", "RecorderStats"]

log = structlog.get_logger("mmbot.research")

_SEEN: Final = 0
_PRICED: Final = 1
_ROW: Final = 2
_MID: Final = 3
_SETTLED: Final = 4

#: Journal kinds that say something about an RFQ's quote or a settlement.
_KINDS: Final = frozenset(
    {
        "rfq_skipped",
        "quote_created",
        "quote_replaced",
        "quote_failed",
        "quote_deleted",
        "accept_received",
        "confirm_sent",
        "confirm_declined",
        "confirm_failed",
        "execution",
        "position_changed",
    }
)
#: A row whose quote never reports closing is written this long after its last horizon.
_OUTCOME_GRACE_SECONDS: Final = 120.0
#: Rows per Parquet row group: large enough for fast scans, small enough to bound memory.
_ROW_GROUP: Final = 50_000
#: Markets whose mid is fetched at once when their cache went stale.
_FETCH_CONCURRENCY: Final = 8


@dataclass
class RecorderStats:
    """What the recorder did, for metrics and the closing log line."""

    rows: int = 0
    files: int = 0
    dropped: int = 0
    errors: int = 0


@dataclass(slots=True)
class _Pending:
    """One RFQ's row while its outcome and markouts come in."""

    rfq: Rfq
    ts: datetime
    fair: Decimal | None
    mids: list[Decimal | None]
    sampled: int = 0
    strategy: str | None = None
    view: MarketView | None = None
    open_quotes: int | None = None
    decision: str = "seen"
    reason: str | None = None
    yes_bid: Decimal | None = None
    no_bid: Decimal | None = None
    ttl: float | None = None
    quote_id: str | None = None
    requotes: int = 0
    #: Every quote id of this RFQ (the first and its replacements), forgotten with the row.
    quote_ids: list[str] = field(default_factory=list)
    accepted_ts: datetime | None = None
    accepted_side: str | None = None
    accepted_price: Decimal | None = None
    accepted_contracts: Decimal | None = None
    confirm: str | None = None
    decline_reason: str | None = None
    executed_contracts: Decimal | None = None
    executed_price: Decimal | None = None
    fee: Decimal | None = None
    closed_ts: datetime | None = None
    close_reason: str | None = None
    done_at: float | None = None  # writer-thread monotonic time when the last mid came in
    created_at: float = field(default_factory=time.monotonic)  # writer-thread time, too


@dataclass
class _Table:
    """One table's current file and the rows waiting for it."""

    name: str
    schema: pa.Schema
    rows: list[dict[str, Any]] = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)
    seq: int = 0


class Recorder:
    """Records every RFQ's decision, outcome and markouts to Parquet, off the event loop."""

    def __init__(
        self,
        directory: Path,
        *,
        horizons: Sequence[int],
        run: Mapping[str, Any],
        mode: str,
        rotate_seconds: float = 300.0,
        fair_value: Callable[[str], Decimal | None] | None = None,
        tick_seconds: float = 0.2,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Record into ``directory``; ``fair_value`` (dry-run only) reads the mock's fair."""
        self.directory = directory
        self.horizons = tuple(sorted(set(horizons)))
        self.stats = RecorderStats()
        self._run = dict(run)
        self._run_id = str(run.get("run_id", ""))
        self._mode = mode
        self._rotate = rotate_seconds
        self._fair_value = fair_value
        self._tick = tick_seconds
        self._wall = wall
        self._mono = monotonic
        self._market_data: MarketData | None = None
        # Loop side: what happened since the last batch, and each RFQ's arrival for markouts.
        self._events: list[tuple[Any, ...]] = []
        self._arrivals: list[tuple[float, str, str]] = []
        self._cursors = [0] * len(self.horizons)
        self._settled_seen: set[str] = set()
        # Thread side.
        self._queue: queue.SimpleQueue[list[tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._pending: dict[str, _Pending] = {}
        self._by_quote: dict[str, str] = {}
        self._settled: set[str] = set()
        self._max_horizon = float(self.horizons[-1]) if self.horizons else 0.0
        self._tables = {
            schema.RFQS: _Table(
                schema.RFQS,
                schema.rfqs_schema(self.horizons, fair_value=fair_value is not None),
            ),
            schema.SETTLEMENTS: _Table(schema.SETTLEMENTS, schema.settlements_schema()),
        }
        self._thread = threading.Thread(target=self._work, name="mmbot-recorder", daemon=True)
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ loop side (hot path)

    def attach(self, market_data: MarketData) -> None:
        """Read markout mids from ``market_data``."""
        self._market_data = market_data

    def start(self) -> None:
        """Create the directory and start the writer thread."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in sorted(self.directory.glob("*.parquet.part")):
            log.warning("recording_incomplete_file", path=str(leftover))
        self._thread.start()
        self._started = True

    def seen(self, rfq: Rfq) -> None:
        """An RFQ arrived."""
        fair = self._fair_value(rfq.market_ticker) if self._fair_value is not None else None
        self._events.append((_SEEN, rfq, self._wall(), fair))
        self._arrivals.append((self._mono(), rfq.id, rfq.market_ticker))

    def priced(
        self,
        rfq: Rfq,
        strategy: str,
        view: MarketView | None,
        open_quotes: int,
        result: Priced | Decline,
    ) -> None:
        """The strategy priced ``rfq`` on ``view``: the prices, or why there are none."""
        self._events.append((_PRICED, rfq.id, strategy, view, open_quotes, result))

    def on_row(self, row: Row) -> None:
        """A journal row was recorded (a :meth:`Journal.add_row_listener` listener)."""
        if row.kind in _KINDS:
            self._events.append((_ROW, row))

    async def run(self) -> None:
        """Sample markout mids as they fall due and hand batches to the writer thread."""
        while True:
            await asyncio.sleep(self._tick)
            try:
                await self._sample()
            except Exception:
                # Research data must not take the daemon down; this tick's mids are lost.
                self.stats.errors += 1
                log.exception("recording_sample_failed")
            self._flush()

    async def close(self) -> None:
        """Write every pending row with what is known, close the files and stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._flush()
        if not self._started:
            return
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        log.info(
            "recording_closed",
            path=str(self.directory),
            rows=self.stats.rows,
            files=self.stats.files,
            dropped=self.stats.dropped,
        )

    def _flush(self) -> None:
        if self._events:
            batch, self._events = self._events, []
            self._queue.put(batch)

    async def _sample(self) -> None:
        now = self._mono()
        due: list[tuple[int, str, str]] = []
        arrivals = self._arrivals
        for index, horizon in enumerate(self.horizons):
            cursor = self._cursors[index]
            while cursor < len(arrivals) and arrivals[cursor][0] + horizon <= now:
                _, rfq_id, market = arrivals[cursor]
                due.append((index, rfq_id, market))
                cursor += 1
            self._cursors[index] = cursor
        done = min(self._cursors, default=len(arrivals))
        if done > 4096:
            del arrivals[:done]
            self._cursors = [c - done for c in self._cursors]
        if not due:
            return
        market_data = self._market_data
        markets = {market for _, _, market in due}
        if market_data is not None:
            stale = [m for m in markets if not market_data.is_fresh(m)]
            for start in range(0, len(stale), _FETCH_CONCURRENCY):
                chunk = stale[start : start + _FETCH_CONCURRENCY]
                await asyncio.gather(
                    *(market_data.ensure_fresh(m) for m in chunk), return_exceptions=True
                )
        mids: dict[str, Decimal | None] = {}
        for market in markets:
            found = self._market(market)
            mids[market] = reference_mid(found) if found is not None else None
            if found is not None and market not in self._settled_seen:
                value = settlement_value(found)
                if value is not None:
                    self._settled_seen.add(market)
                    self._events.append((_SETTLED, market, value, self._wall()))
        for index, rfq_id, market in due:
            self._events.append((_MID, rfq_id, index, mids[market]))

    def _market(self, ticker: str) -> Market | None:
        market_data = self._market_data
        if market_data is None or not market_data.is_fresh(ticker):
            return None
        return market_data.market(ticker)

    # ------------------------------------------------------------------ without a daemon

    def write_synthetic(
        self,
        rfq: Rfq,
        ts: datetime,
        view: MarketView,
        mids: Sequence[Decimal | None],
        fair: Decimal | None,
    ) -> None:
        """Add one simulated RFQ with its view and markout mids (no thread, no loop).

        The synthetic recorder of :mod:`mmbot.research.synthetic` writes through here, so a
        synthetic recording has exactly a daemon's columns; call :meth:`close_synthetic`
        at the end.
        """
        pending = _Pending(rfq=rfq, ts=ts, fair=fair, mids=list(mids), view=view)
        pending.decision = "synthetic"
        self._write_rfq(pending)
        table = self._tables[schema.RFQS]
        if len(table.rows) >= 4 * _ROW_GROUP:
            self._write(table, final=True)

    def close_synthetic(self) -> None:
        """Write what :meth:`write_synthetic` buffered."""
        for table in self._tables.values():
            self._write(table, final=True)

    # ------------------------------------------------------------------ writer thread

    def _work(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    self._finish()
                    return
                self._apply(batch)
                self._emit_ready()
            except Exception:
                # A bug here must not kill the thread and leave the loop queueing forever.
                self.stats.errors += 1
                log.exception("recording_failed")

    def _apply(self, batch: list[tuple[Any, ...]]) -> None:
        for event in batch:
            kind = event[0]
            if kind == _SEEN:
                _, rfq, wall, fair = event
                if len(self._pending) >= 500_000:
                    # Far beyond any real backlog: write the oldest rather than grow forever.
                    oldest = next(iter(self._pending))
                    self._write_rfq(self._pending.pop(oldest))
                self._pending[rfq.id] = _Pending(
                    rfq=rfq,
                    ts=datetime.fromtimestamp(wall, UTC),
                    fair=fair,
                    mids=[None] * len(self.horizons),
                )
            elif kind == _PRICED:
                self._on_priced(*event[1:])
            elif kind == _ROW:
                self._on_row(event[1])
            elif kind == _MID:
                _, rfq_id, index, mid = event
                pending = self._pending.get(rfq_id)
                if pending is not None:
                    pending.mids[index] = mid
                    pending.sampled += 1
                    if pending.sampled >= len(self.horizons):
                        pending.done_at = time.monotonic()
            elif kind == _SETTLED:
                _, market, value, wall = event
                self._settle(market, value, datetime.fromtimestamp(wall, UTC))

    def _on_priced(
        self,
        rfq_id: str,
        strategy: str,
        view: MarketView | None,
        open_quotes: int,
        result: Priced | Decline,
    ) -> None:
        pending = self._pending.get(rfq_id)
        if pending is None:
            return
        pending.strategy = strategy
        pending.view = view
        pending.open_quotes = open_quotes
        if isinstance(result, Decline):
            pending.decision, pending.reason = "skipped", result.reason
            return
        yes, no, priced_view, ttl = result
        pending.view = priced_view
        pending.decision = "priced"
        pending.yes_bid, pending.no_bid, pending.ttl = yes, no, ttl

    def _on_row(self, row: Row) -> None:
        kind = row.kind
        if kind == "position_changed":
            if row.reason == "settled" and row.market:
                detail = _detail(row)
                value = detail.get("yes_value")
                if value is not None:
                    self._settle(row.market, Decimal(str(value)), _parse_ts(row.ts))
            return
        rfq_id = row.rfq_id or (self._by_quote.get(row.quote_id) if row.quote_id else None)
        pending = self._pending.get(rfq_id) if rfq_id else None
        if pending is None:
            return
        if kind == "rfq_skipped":
            # Shadow mode journals each quote it would have sent as a skip named "shadow".
            decision = "shadow" if row.reason == "shadow" else "skipped"
            pending.decision, pending.reason = decision, row.reason
        elif kind == "quote_created":
            pending.decision = "quoted"
            pending.quote_id = row.quote_id
            if row.quote_id:
                self._by_quote[row.quote_id] = pending.rfq.id
                pending.quote_ids.append(row.quote_id)
        elif kind == "quote_replaced":
            pending.requotes += 1
            if row.quote_id:
                self._by_quote[row.quote_id] = pending.rfq.id
                pending.quote_ids.append(row.quote_id)
        elif kind == "quote_failed":
            pending.decision, pending.reason = "failed", row.reason
        elif kind == "accept_received":
            pending.accepted_ts = _parse_ts(row.ts)
            pending.accepted_side = row.side
            pending.accepted_price = _dec(row.price)
            pending.accepted_contracts = _dec(row.contracts)
        elif kind == "confirm_sent":
            pending.confirm = "confirmed"
        elif kind in ("confirm_declined", "confirm_failed"):
            pending.confirm = "declined" if kind == "confirm_declined" else "failed"
            pending.decline_reason = row.reason
        elif kind == "execution":
            contracts = _dec(row.contracts) or Decimal(0)
            pending.executed_contracts = (pending.executed_contracts or Decimal(0)) + contracts
            pending.executed_price = _dec(row.price)
            # The journal keeps an execution's fee in its amount column.
            fee = _dec(row.amount)
            if fee is not None:
                pending.fee = (pending.fee or Decimal(0)) + fee
            pending.closed_ts = pending.closed_ts or _parse_ts(row.ts)
            pending.close_reason = pending.close_reason or "executed"
        elif kind == "quote_deleted" and pending.closed_ts is None:
            pending.closed_ts = _parse_ts(row.ts)
            pending.close_reason = row.reason

    def _settle(self, market: str, value: Decimal, ts: datetime) -> None:
        if market in self._settled:
            return
        self._settled.add(market)
        table = self._tables[schema.SETTLEMENTS]
        table.rows.append(
            {
                "ts": ts,
                "run_id": self._run_id,
                "market": market,
                "yes_value": schema.exact(value),
            }
        )

    def _emit_ready(self) -> None:
        now = time.monotonic()
        # A row whose mids never all came (a failed sample) is written anyway once its last
        # horizon and the grace are past: missing mids stay empty, memory stays bounded.
        overdue = self._max_horizon + 2 * _OUTCOME_GRACE_SECONDS
        # Rows are kept in arrival order and none is complete before its last horizon, so
        # the scan stops at the first row younger than that (a few seconds' slack for the
        # batches' delay) instead of walking every pending row five times a second.
        youngest = self._max_horizon - 5.0
        ready: list[str] = []
        for rfq_id, pending in self._pending.items():
            age = now - pending.created_at
            if age < youngest:
                break
            complete = pending.done_at is not None and (
                pending.quote_id is None
                or pending.closed_ts is not None
                or now - pending.done_at >= _OUTCOME_GRACE_SECONDS
            )
            if complete or age >= overdue:
                ready.append(rfq_id)
        for rfq_id in ready:
            self._write_rfq(self._pending.pop(rfq_id))
        for table in self._tables.values():
            self._write(table, final=False)

    def _finish(self) -> None:
        for pending in self._pending.values():
            self._write_rfq(pending)
        self._pending.clear()
        for table in self._tables.values():
            self._write(table, final=True)

    def _write_rfq(self, pending: _Pending) -> None:
        for quote_id in pending.quote_ids:
            self._by_quote.pop(quote_id, None)
        self._tables[schema.RFQS].rows.append(self._row(pending))

    def _row(self, p: _Pending) -> dict[str, Any]:
        rfq = p.rfq
        view = p.view
        decision = p.decision
        if decision == "priced":
            decision = "shadow" if self._mode == "shadow" else "not_sent"
        row: dict[str, Any] = {
            "ts": p.ts,
            "run_id": self._run_id,
            "mode": self._mode,
            "rfq_id": rfq.id,
            "market": rfq.market_ticker,
            "event": rfq.event_ticker,
            "creator_id": rfq.creator_id,
            "contracts": schema.exact(rfq.contracts_fp),
            "target_cost": schema.exact(rfq.target_cost_dollars),
            "is_combo": rfq.is_combo,
            "legs": _legs(rfq),
            "rfq_json": orjson.dumps(rfq.model_dump(exclude_none=True), default=str).decode(),
            "strategy": p.strategy,
            "view_yes_bid": schema.exact(view.yes_bid) if view else None,
            "view_yes_ask": schema.exact(view.yes_ask) if view else None,
            "view_last": schema.exact(view.last_price) if view else None,
            "view_mid": schema.exact(view.mid) if view else None,
            "view_age_s": view.age_seconds if view else None,
            "view_stale": view.stale if view else None,
            "view_hvm": view.hvm if view else None,
            "view_position": schema.exact(view.position) if view else None,
            "price_grid": (
                orjson.dumps(
                    [[str(r.start), str(r.end), str(r.step)] for r in view.price_ranges]
                ).decode()
                if view
                else None
            ),
            "open_quotes": p.open_quotes,
            "decision": decision,
            "reason": p.reason,
            "yes_bid": schema.exact(p.yes_bid),
            "no_bid": schema.exact(p.no_bid),
            "ttl_s": p.ttl,
            "quote_id": p.quote_id,
            "requotes": p.requotes,
            "accepted_ts": p.accepted_ts,
            "accepted_side": p.accepted_side,
            "accepted_price": schema.exact(p.accepted_price),
            "accepted_contracts": schema.exact(p.accepted_contracts),
            "confirm": p.confirm,
            "decline_reason": p.decline_reason,
            "executed_contracts": schema.exact(p.executed_contracts),
            "executed_price": schema.exact(p.executed_price),
            "fee": schema.exact(p.fee),
            "closed_ts": p.closed_ts,
            "close_reason": p.close_reason,
        }
        for horizon, mid in zip(self.horizons, p.mids, strict=True):
            row[schema.mid_column(horizon)] = schema.exact(mid)
        if self._fair_value is not None:
            row["fair_value"] = schema.exact(p.fair)
        return row

    def _write(self, table: _Table, *, final: bool) -> None:
        """Write the buffered rows as one new file every ``rotate_seconds`` (and at close)."""
        now = time.monotonic()
        if not table.rows:
            table.since = now
            return
        if not final and now - table.since < self._rotate and len(table.rows) < 4 * _ROW_GROUP:
            return
        rows, table.rows = table.rows, []
        table.since = now
        table.seq += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        name = f"{table.name}-{self._run_id or 'run'}-{stamp}-{table.seq:04d}.parquet"
        path = self.directory / name
        part = path.with_name(name + ".part")
        metadata = schema.file_metadata(table.name, self.horizons, self._run)
        try:
            with pq.ParquetWriter(
                part, table.schema.with_metadata(metadata), compression="zstd"
            ) as writer:
                for start in range(0, len(rows), _ROW_GROUP):
                    chunk = rows[start : start + _ROW_GROUP]
                    writer.write_table(pa.Table.from_pylist(chunk, schema=table.schema))
            os.replace(part, path)
        except Exception as exc:
            self.stats.dropped += len(rows)
            self.stats.errors += 1
            log.error(
                "recording_write_failed",
                table=table.name,
                path=str(path),
                rows=len(rows),
                error=f"{type(exc).__name__}: {exc}",
            )
            with contextlib.suppress(OSError):
                part.unlink()
            return
        self.stats.files += 1
        if table.name == schema.RFQS:
            self.stats.rows += len(rows)


def _legs(rfq: Rfq) -> str | None:
    legs = rfq.mve_selected_legs
    if not legs:
        return None
    return orjson.dumps([leg.model_dump(exclude_none=True) for leg in legs], default=str).decode()


def _parse_ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _dec(text: str | None) -> Decimal | None:
    return Decimal(text) if text is not None else None


def _detail(row: Row) -> dict[str, Any]:
    if not row.detail:
        return {}
    try:
        parsed = orjson.loads(row.detail)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
