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
from mmbot.journal.schema import QUOTES_WHERE, RUNS_WHERE, SCHEMA_VERSION, format_ts

__all__ = ["Reader"]

# Ids per look-up statement: well under SQLite's limit on bound parameters (999 in builds
# before 3.32).
_LOOKUP_CHUNK: Final = 500


class _BadValue(ValueError):
    """A stored value that is not what the writer stores (a hand-edited or damaged file)."""


def _parse_ts(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError) as exc:
        raise _BadValue(f"timestamp {text!r}") from exc


def _dec_out(text: str | None) -> Decimal:
    if text is None:
        return Decimal(0)
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise _BadValue(f"amount {text!r}") from exc
    if not value.is_finite():
        raise _BadValue(f"amount {text!r}")
    return value


def _detail_out(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _BadValue(f"detail {text[:60]!r}") from exc
    return value if isinstance(value, dict) else {}


def _dec_or_none(value: object) -> Decimal | None:
    # Lenient: a value from ``detail`` may have come from a caller's own detail mapping.
    if not isinstance(value, str):
        return None
    try:
        parsed = Decimal(value)
    except InvalidOperation:
        return None
    return parsed if parsed.is_finite() else None


def _fee_out(detail: str | None) -> Decimal:
    fee = _detail_out(detail).get("fee")
    return _dec_out(fee) if isinstance(fee, str) else Decimal(0)


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
        except _BadValue as exc:
            # One line naming the file, as for any other journal the reader cannot use.
            raise JournalError(
                f"journal {self._path} holds a value mmbot did not write: {exc}; "
                "`mmbot journal check` lists every such row"
            ) from exc
        finally:
            conn.close()

    def summary(self, run_id: str | None = None) -> Summary:
        """Counts and totals for one run, or over all runs when ``run_id`` is None."""
        with self._connect() as conn:
            where, params = ("", ())
            if run_id is not None:
                where, params = self._run_rows(conn, run_id)
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
            also = f"AND {where.removeprefix('WHERE ')}" if where else ""
            fills = conn.execute(
                f"SELECT price, contracts, amount FROM events WHERE kind = 'execution' {also}",  # noqa: S608
                params,
            ).fetchall()
            pnl = conn.execute(
                f"SELECT amount FROM events WHERE kind = 'position_changed' {also}",  # noqa: S608
                params,
            ).fetchall()
            # Sums of exact values must stay exact: a wide context keeps Decimal from rounding.
            with localcontext() as ctx:
                ctx.prec = 100
                contracts_traded = sum((_dec_out(c) for _, c, _ in fills), Decimal(0))
                premium = sum((_dec_out(p) * _dec_out(c) for p, c, _ in fills), Decimal(0))
                fees = sum((_dec_out(f) for _, _, f in fills), Decimal(0))
                realized = sum((_dec_out(a) for (a,) in pnl), Decimal(0))
            first_ts = _parse_ts(first) if first is not None else None
            last_ts = _parse_ts(last) if last is not None else None

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

        return Summary(
            run_id=run_id,
            runs=runs,
            first_ts=first_ts,
            last_ts=last_ts,
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
            fees=fees,
        )

    @staticmethod
    def _run_rows(conn: sqlite3.Connection, run_id: str) -> tuple[str, tuple[Any, ...]]:
        """A WHERE clause selecting one run's rows, by seq range where the file allows it.

        One daemon holds the journal at a time, so a run's rows are the seq range from its
        ``run_started`` to the next run's: a range scan of the table instead of a scan of
        all of it (which, at exit of a months-old journal, would take minutes).
        """
        start = conn.execute(
            f"SELECT MIN(seq) FROM events WHERE run_id = ? AND {RUNS_WHERE}",  # noqa: S608
            (run_id,),
        ).fetchone()[0]
        if start is None:
            return "WHERE run_id = ?", (run_id,)
        after = conn.execute(
            f"SELECT MIN(seq) FROM events {_indexed(conn, 'events_runs')}"  # noqa: S608
            f" WHERE {RUNS_WHERE} AND seq > ? AND run_id != ?",
            (start, run_id),
        ).fetchone()[0]
        if after is None:
            return "WHERE seq >= ? AND run_id = ?", (start, run_id)
        return "WHERE seq >= ? AND seq < ? AND run_id = ?", (start, after, run_id)

    def executions(self, since: datetime | None = None) -> list[ExecutionRow]:
        """Every execution (at or after ``since``, if given), oldest first."""
        sql = (
            "SELECT seq, ts, run_id, quote_id, rfq_id, market, side, price, contracts, amount,"
            " detail"
            " FROM events {indexed} WHERE kind = 'execution'"
        )
        params: tuple[str, ...] = ()
        if since is not None:
            sql += " AND ts >= ?"
            params += (format_ts(since),)
        result = []
        with self._connect() as conn:
            # Named: without statistics SQLite would rather walk the table in seq order
            # than sort the few rows the partial index holds.
            sql = sql.format(indexed=_indexed(conn, "events_fills"))
            rows = conn.execute(sql + " ORDER BY seq", params).fetchall()
            for seq, ts, run, quote, rfq, market, side, price, contracts, fee, detail in rows:
                order_id = _detail_out(detail).get("order_id")
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
                        fee=_dec_out(fee) if fee is not None else None,
                    )
                )
        return result

    def last_positions(self) -> dict[str, Decimal]:
        """The latest recorded net position of every market, over all runs."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT market, contracts FROM events WHERE seq IN ("
                " SELECT MAX(seq) FROM events WHERE kind = 'position_changed' GROUP BY market)"
                " ORDER BY market"
            ).fetchall()
            return {market: _dec_out(contracts) for market, contracts in rows if market is not None}

    def quotes_created(self, quote_ids: Iterable[str]) -> dict[str, CreatedQuote]:
        """How each given quote went live (any run); ids with no such record are absent.

        The record is the quote's ``quote_created`` or ``quote_replaced`` row (the latest, if
        the file somehow has more than one).
        """
        wanted = list(dict.fromkeys(quote_ids))
        rows: list[tuple[Any, ...]] = []
        found: dict[str, CreatedQuote] = {}
        with self._connect() as conn:
            for first in range(0, len(wanted), _LOOKUP_CHUNK):
                chunk = wanted[first : first + _LOOKUP_CHUNK]
                marks = ", ".join("?" * len(chunk))
                rows += conn.execute(
                    "SELECT quote_id, rfq_id, market, price, contracts, detail, run_id"  # noqa: S608
                    f" FROM events WHERE quote_id IN ({marks}) AND {QUOTES_WHERE} ORDER BY seq",
                    chunk,
                ).fetchall()
            for quote_id, rfq_id, market, price, contracts, detail, run_id in rows:
                extra = _detail_out(detail)
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
        """The exact sum of realised P&L recorded at or after ``since``, net of fees.

        A fill's ``position_changed`` amount already has its fee taken off (see
        ``Journal.record_position_changed``), so the sum is the daemon's figure as it ran.
        """
        bound = format_ts(since)
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT amount FROM events WHERE kind = 'position_changed' AND ts >= ?",
                (bound,),
            ).fetchall()
            return _exact_sum(_dec_out(amount) for (amount,) in rows)

    def fees_since(self, since: datetime) -> Decimal:
        """The exact sum of fees recorded at or after ``since``, over all runs."""
        bound = format_ts(since)
        with self._connect() as conn:
            # The position_changed rows, not the executions: archiving keeps today's.
            rows = conn.execute(
                "SELECT detail FROM events WHERE kind = 'position_changed' AND ts >= ?",
                (bound,),
            ).fetchall()
            return _exact_sum(_fee_out(detail) for (detail,) in rows)

    def runs(self) -> list[RunRow]:
        """Every run the file knows, oldest first: its start, clean stop (if any) and size.

        A run moved to an archive file is listed from the ledger, with ``archive`` naming
        the file; the few rows the live file keeps of it do not make it a run of its own.
        """
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT run_id, MIN(seq), MIN(ts), COUNT(*), MAX(ts) FROM events GROUP BY run_id"
            ).fetchall()
            stops = {
                run: (ts, reason)
                for run, ts, reason in conn.execute(
                    f"SELECT run_id, ts, reason FROM events {_indexed(conn, 'events_runs')}"  # noqa: S608
                    f" WHERE {RUNS_WHERE}"
                    " AND kind = 'run_stopped' ORDER BY seq"
                )
            }
            starts: dict[str, tuple[str, dict[str, Any]]] = {}
            for run, ts, detail in conn.execute(
                f"SELECT run_id, ts, detail FROM events {_indexed(conn, 'events_runs')}"  # noqa: S608
                f" WHERE {RUNS_WHERE} AND kind = 'run_started' ORDER BY seq DESC"
            ):
                starts[run] = (ts, _detail_out(detail))
            archived = _archived(conn)
            found: dict[str, tuple[int, RunRow]] = {}
            for run, seq, first_ts, count, last_ts in rows:
                if run in archived:
                    continue
                stopped_ts, stop_reason = stops.get(run, (None, None))
                started_ts, started = starts.get(run, (first_ts, {}))
                pid = started.get("pid")
                found[run] = (
                    seq,
                    RunRow(
                        run_id=run,
                        started_at=_parse_ts(started_ts),
                        stopped_at=_parse_ts(stopped_ts) if stopped_ts is not None else None,
                        stop_reason=stop_reason,
                        events=count,
                        last_at=_parse_ts(last_ts),
                        pid=pid if isinstance(pid, int) else None,
                        started=started,
                    ),
                )
            for run, (seq, row) in archived.items():
                found[run] = (seq, row)
        return [row for _, row in sorted(found.values(), key=lambda item: item[0])]


def _indexed(conn: sqlite3.Connection, index: str) -> str:
    """``INDEXED BY index`` where the file has it (version 2 on), else nothing."""
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (index,)
    ).fetchone()
    return f"INDEXED BY {index}" if found is not None else ""


def _archived(conn: sqlite3.Connection) -> dict[str, tuple[int, RunRow]]:
    """The ledger of archived runs (empty in a file from before version 2), by run id."""
    has_ledger = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'archived_runs'"
    ).fetchone()
    if has_ledger is None:
        return {}
    found = {}
    for run, first_seq, events, started, last, stopped, reason, archive in conn.execute(
        "SELECT run_id, first_seq, events, started_at, last_at, stopped_at, stop_reason,"
        " archive FROM archived_runs"
    ):
        found[run] = (
            first_seq,
            RunRow(
                run_id=run,
                started_at=_parse_ts(started),
                stopped_at=_parse_ts(stopped) if stopped is not None else None,
                stop_reason=reason,
                events=events,
                last_at=_parse_ts(last),
                archive=archive,
            ),
        )
    return found
