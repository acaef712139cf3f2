"""Reading the journal back: the summary, executions, positions, runs, start-up look-ups.

Each read uses a fresh read-only connection per call, works while the writer runs and
without ``start()``, raises ``JournalError`` for a file it cannot read, and blocks: call it
at start-up or exit, or through ``asyncio.to_thread``. Amounts are stored as exact strings
and summed here, in Python, never in SQL.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any, Final

from mmbot.journal.model import CreatedQuote, ExecutionRow, JournalError, Kind, RunRow, Summary
from mmbot.journal.schema import SCHEMA_VERSION, format_ts

__all__ = ["Reader"]

# Ids per look-up statement: well under SQLite's limit on bound parameters (999 in builds
# before 3.32).
_LOOKUP_CHUNK: Final = 500


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _dec_out(text: str | None) -> Decimal:
    return Decimal(text) if text is not None else Decimal(0)


def _dec_or_none(value: object) -> Decimal | None:
    # Lenient: a value from ``detail`` may have come from a caller's own detail mapping.
    if not isinstance(value, str):
        return None
    try:
        parsed = Decimal(value)
    except InvalidOperation:
        return None
    return parsed if parsed.is_finite() else None


def _exact_sum(values: Iterable[Decimal]) -> Decimal:
    # Sums of exact values must stay exact: a wide context keeps Decimal from rounding.
    with localcontext() as ctx:
        ctx.prec = 100
        return sum(values, Decimal(0))


class Reader:
    """Read-only queries over the journal file at ``path``."""

    def __init__(self, path: Path, *, busy_timeout: float) -> None:
        """Read the journal at ``path``; nothing is opened until a query runs."""
        self._path = path
        self._busy_timeout = busy_timeout

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self._path.exists():
            raise JournalError(f"no journal at {self._path}")
        uri = self._path.resolve().as_uri() + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self._busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read journal {self._path}: {exc}") from exc
        try:
            # One read transaction: every query of a call sees the same snapshot.
            conn.execute("BEGIN")
            try:
                version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            except sqlite3.Error as exc:
                raise JournalError(f"{self._path} is not an mmbot journal: {exc}") from exc
            if version is None or version > SCHEMA_VERSION:
                raise JournalError(
                    f"journal {self._path} has schema version {version}; "
                    f"this mmbot reads versions 1 to {SCHEMA_VERSION}"
                )
            yield conn
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read journal {self._path}: {exc}") from exc
        finally:
            conn.close()

    def summary(self, run_id: str | None = None) -> Summary:
        """Counts and totals for one run, or over all runs when ``run_id`` is None."""
        where, params = ("WHERE run_id = ?", (run_id,)) if run_id is not None else ("", ())
        also = "AND run_id = ?" if run_id is not None else ""
        with self._connect() as conn:
            counts: dict[tuple[str, str | None], int] = {
                (kind, reason): count
                for kind, reason, count in conn.execute(
                    f"SELECT kind, reason, COUNT(*) FROM events {where} GROUP BY kind, reason",  # noqa: S608
                    params,
                )
            }
            runs, first, last = conn.execute(
                f"SELECT COUNT(DISTINCT run_id), MIN(ts), MAX(ts) FROM events {where}",  # noqa: S608
                params,
            ).fetchone()
            fills = conn.execute(
                f"SELECT price, contracts FROM events WHERE kind = ? {also}",  # noqa: S608
                (Kind.EXECUTION.value, *params),
            ).fetchall()
            pnl = conn.execute(
                f"SELECT amount FROM events WHERE kind = ? {also}",  # noqa: S608
                (Kind.POSITION_CHANGED.value, *params),
            ).fetchall()

        def total(kind: Kind) -> int:
            return sum(n for (k, _), n in counts.items() if k == kind.value)

        def by_reason(kind: Kind) -> dict[str, int]:
            found: dict[str, int] = {}
            for (k, reason), n in counts.items():
                if k == kind.value:
                    key = reason if reason is not None else "(none)"
                    found[key] = found.get(key, 0) + n
            # Most frequent first, so the table reads as "what mostly happened".
            return dict(sorted(found.items(), key=lambda item: (-item[1], item[0])))

        # Sums of exact values must stay exact: a wide context keeps Decimal from rounding.
        with localcontext() as ctx:
            ctx.prec = 100
            contracts_traded = sum((_dec_out(c) for _, c in fills), Decimal(0))
            premium = sum((_dec_out(p) * _dec_out(c) for p, c in fills), Decimal(0))
            realized = sum((_dec_out(a) for (a,) in pnl), Decimal(0))
        return Summary(
            run_id=run_id,
            runs=runs,
            first_ts=_parse_ts(first) if first is not None else None,
            last_ts=_parse_ts(last) if last is not None else None,
            rfqs_seen=total(Kind.RFQ_SEEN),
            rfqs_skipped=total(Kind.RFQ_SKIPPED),
            rfqs_skipped_by_reason=by_reason(Kind.RFQ_SKIPPED),
            quotes_created=total(Kind.QUOTE_CREATED),
            quotes_replaced=total(Kind.QUOTE_REPLACED),
            quotes_failed=total(Kind.QUOTE_FAILED),
            quotes_deleted=total(Kind.QUOTE_DELETED),
            quotes_deleted_by_reason=by_reason(Kind.QUOTE_DELETED),
            accepts=total(Kind.ACCEPT_RECEIVED),
            confirms=total(Kind.CONFIRM_SENT),
            declines=total(Kind.CONFIRM_DECLINED),
            declines_by_reason=by_reason(Kind.CONFIRM_DECLINED),
            confirm_failures=total(Kind.CONFIRM_FAILED),
            executions=total(Kind.EXECUTION),
            contracts_traded=contracts_traded,
            premium_paid=premium,
            realized_pnl=realized,
        )

    def executions(self, since: datetime | None = None) -> list[ExecutionRow]:
        """Every execution (at or after ``since``, if given), oldest first."""
        sql = (
            "SELECT seq, ts, run_id, quote_id, rfq_id, market, side, price, contracts, detail"
            " FROM events WHERE kind = ?"
        )
        params: tuple[str, ...] = (Kind.EXECUTION.value,)
        if since is not None:
            sql += " AND ts >= ?"
            params += (format_ts(since),)
        with self._connect() as conn:
            rows = conn.execute(sql + " ORDER BY seq", params).fetchall()
        result = []
        for seq, ts, run, quote, rfq, market, side, price, contracts, detail in rows:
            extra = json.loads(detail) if detail else {}
            order_id = extra.get("order_id") if isinstance(extra, dict) else None
            result.append(
                ExecutionRow(
                    seq=seq,
                    ts=_parse_ts(ts),
                    run_id=run,
                    quote_id=quote,
                    rfq_id=rfq,
                    market=market,
                    side=side,
                    price=_dec_out(price),
                    contracts=_dec_out(contracts),
                    order_id=str(order_id) if order_id is not None else None,
                )
            )
        return result

    def last_positions(self) -> dict[str, Decimal]:
        """The latest recorded net position of every market, over all runs."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT market, contracts FROM events WHERE seq IN ("
                " SELECT MAX(seq) FROM events WHERE kind = ? GROUP BY market)"
                " ORDER BY market",
                (Kind.POSITION_CHANGED.value,),
            ).fetchall()
        return {market: _dec_out(contracts) for market, contracts in rows if market is not None}

    def quotes_created(self, quote_ids: Iterable[str]) -> dict[str, CreatedQuote]:
        """How each given quote went live (any run); ids with no such record are absent.

        The record is the quote's ``quote_created`` or ``quote_replaced`` row (the latest, if
        the file somehow has more than one).
        """
        wanted = list(dict.fromkeys(quote_ids))
        rows: list[tuple[Any, ...]] = []
        with self._connect() as conn:
            for first in range(0, len(wanted), _LOOKUP_CHUNK):
                chunk = wanted[first : first + _LOOKUP_CHUNK]
                marks = ", ".join("?" * len(chunk))
                # "+kind": left to itself, SQLite picks the kind index and walks every quote
                # ever made instead of looking the ids up.
                where = f"quote_id IN ({marks}) AND +kind IN (?, ?)"
                rows += conn.execute(
                    "SELECT quote_id, rfq_id, market, price, contracts, detail, run_id"  # noqa: S608
                    f" FROM events WHERE {where} ORDER BY seq",
                    (*chunk, Kind.QUOTE_CREATED.value, Kind.QUOTE_REPLACED.value),
                ).fetchall()
        found: dict[str, CreatedQuote] = {}
        for quote_id, rfq_id, market, price, contracts, detail, run_id in rows:
            extra = json.loads(detail) if detail else {}
            if not isinstance(extra, dict):
                extra = {}
            yes_bid = _dec_or_none(price)
            no_bid = _dec_or_none(extra.get("no_bid"))
            strategy = extra.get("strategy")
            if yes_bid is None or no_bid is None or rfq_id is None or market is None:
                continue  # not a row record_quote_* wrote
            found[quote_id] = CreatedQuote(
                quote_id=quote_id,
                rfq_id=rfq_id,
                market=market,
                yes_bid=yes_bid,
                no_bid=no_bid,
                contracts=_dec_or_none(contracts),
                reference=_dec_or_none(extra.get("reference")),
                strategy=strategy if isinstance(strategy, str) else None,
                run_id=run_id,
            )
        return found

    def realized_pnl_since(self, since: datetime) -> Decimal:
        """The exact sum of realised P&L recorded at or after ``since``, over all runs."""
        bound = format_ts(since)
        with self._connect() as conn:
            rows = conn.execute(
                # "+kind": the ts index narrows to the period, the kind index would not.
                "SELECT amount FROM events WHERE +kind = ? AND ts >= ?",
                (Kind.POSITION_CHANGED.value, bound),
            ).fetchall()
        return _exact_sum(_dec_out(amount) for (amount,) in rows)

    def runs(self) -> list[RunRow]:
        """Every run in the file, oldest first, with its start, clean stop (if any) and size."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT run_id, MIN(seq), MIN(ts), COUNT(*), MAX(ts) FROM events GROUP BY run_id"
                " ORDER BY MIN(seq)"
            ).fetchall()
            stops = {
                run: (ts, reason)
                for run, ts, reason in conn.execute(
                    "SELECT run_id, ts, reason FROM events WHERE kind = ? ORDER BY seq",
                    (Kind.RUN_STOPPED.value,),
                )
            }
            starts = dict(
                conn.execute(
                    "SELECT run_id, MIN(ts) FROM events WHERE kind = ? GROUP BY run_id",
                    (Kind.RUN_STARTED.value,),
                ).fetchall()
            )
        result = []
        for run, _seq, first_ts, count, last_ts in rows:
            stopped_ts, stop_reason = stops.get(run, (None, None))
            result.append(
                RunRow(
                    run_id=run,
                    started_at=_parse_ts(starts.get(run, first_ts)),
                    stopped_at=_parse_ts(stopped_ts) if stopped_ts is not None else None,
                    stop_reason=stop_reason,
                    events=count,
                    last_at=_parse_ts(last_ts),
                )
            )
        return result
