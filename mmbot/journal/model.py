"""The journal's public types: errors, event kinds, usual reasons, what the readers return."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

__all__ = [
    "CreatedQuote",
    "DeleteReason",
    "Detail",
    "ExecutionRow",
    "JournalError",
    "JournalLocked",
    "Kind",
    "Listener",
    "RunRow",
    "Side",
    "SkipReason",
    "Summary",
    "Synchronous",
]

Side = Literal["yes", "no"]
Synchronous = Literal["NORMAL", "FULL"]
# Free-form context for a row: a mapping (stored as JSON) or a plain note (stored as
# {"note": ...}); redacted either way.
Detail = Mapping[str, Any] | str | None


#: Told of each row recorded: its kind and its reason (None for kinds without one).
Listener = Callable[[str, str | None], None]


class JournalError(Exception):
    """The journal file cannot be opened, created or read."""


class JournalLocked(JournalError):
    """Another Journal (in this or another process) holds the journal's lock."""


@dataclass(frozen=True)
class CreatedQuote:
    """A quote as recorded when it went live (``quote_created`` or ``quote_replaced``)."""

    quote_id: str
    rfq_id: str
    market: str
    yes_bid: Decimal
    no_bid: Decimal
    contracts: Decimal | None
    reference: Decimal | None
    strategy: str | None
    run_id: str


class Kind(StrEnum):
    """The ``kind`` of a journal event."""

    RUN_STARTED = "run_started"
    RUN_STOPPED = "run_stopped"
    RFQ_SEEN = "rfq_seen"
    RFQ_SKIPPED = "rfq_skipped"
    QUOTE_CREATED = "quote_created"
    QUOTE_REPLACED = "quote_replaced"
    QUOTE_DELETED = "quote_deleted"
    QUOTE_FAILED = "quote_failed"
    ACCEPT_RECEIVED = "accept_received"
    CONFIRM_SENT = "confirm_sent"
    CONFIRM_DECLINED = "confirm_declined"
    CONFIRM_FAILED = "confirm_failed"
    EXECUTION = "execution"
    POSITION_CHANGED = "position_changed"
    RECONCILED = "reconciled"


class SkipReason(StrEnum):
    """Usual reasons for ``rfq_skipped`` (any string is accepted)."""

    UNROUTED_MARKET = "unrouted_market"
    STALE_DATA = "stale_data"
    NO_MARKET_DATA = "no_market_data"
    RISK = "risk"
    KILL_SWITCH = "kill_switch"
    STRATEGY_DECLINED = "strategy_declined"
    STRATEGY_ERROR = "strategy_error"


class DeleteReason(StrEnum):
    """Usual reasons for ``quote_deleted`` (any string is accepted)."""

    TTL = "ttl"
    RFQ_DELETED = "rfq_deleted"
    REQUOTE_FAILED = "requote_failed"
    SHUTDOWN = "shutdown"
    SHUTDOWN_UNTRACKED = "shutdown_untracked"
    RECONCILE_UNTRACKED = "reconcile_untracked"
    KILL_SWITCH = "kill_switch"
    DECLINED_ACCEPT = "declined_accept"


@dataclass(frozen=True)
class Summary:
    """Counts and totals over one run (``run_id``) or over every run (``run_id`` None)."""

    run_id: str | None
    runs: int
    first_ts: datetime | None
    last_ts: datetime | None
    rfqs_seen: int
    rfqs_skipped: int
    rfqs_skipped_by_reason: Mapping[str, int]
    quotes_created: int
    quotes_replaced: int
    quotes_failed: int
    quotes_deleted: int
    quotes_deleted_by_reason: Mapping[str, int]
    accepts: int
    confirms: int
    declines: int
    declines_by_reason: Mapping[str, int]
    confirm_failures: int
    executions: int
    contracts_traded: Decimal
    premium_paid: Decimal
    #: Net of fees, as the daemon counts it.
    realized_pnl: Decimal
    #: Fees of the executions (dollars); part of ``realized_pnl`` already.
    fees: Decimal = Decimal(0)


@dataclass(frozen=True)
class ExecutionRow:
    """One ``execution`` event, with its Decimals exactly as recorded."""

    seq: int
    ts: datetime
    run_id: str
    quote_id: str | None
    rfq_id: str | None
    market: str | None
    side: str | None
    price: Decimal
    contracts: Decimal
    order_id: str | None
    #: The fill's fee in dollars; None on rows recorded before fees were.
    fee: Decimal | None = None


@dataclass(frozen=True)
class RunRow:
    """One daemon run; ``stopped_at`` None means it never recorded a clean stop (a crash)."""

    run_id: str
    started_at: datetime
    stopped_at: datetime | None
    stop_reason: str | None
    events: int
    #: When the run recorded its last row (for a crashed run: as far as its record goes).
    last_at: datetime
    #: The archive file the run was moved to (``mmbot journal archive``); None: still here.
    archive: str | None = None
    #: The process that recorded the run (from its ``run_started`` row), if known.
    pid: int | None = None
    #: The ``run_started`` row's detail: mode, version, commit, seed, strategies, config.
    #: Empty for an archived run (read its archive file) or a row without one.
    started: Mapping[str, Any] = field(default_factory=dict)
