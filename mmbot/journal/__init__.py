"""The journal: a durable, append-only record of every decision and fill, in SQLite (WAL).

One row per event in the ``events`` table. The daemon calls the ``record_*`` methods of a
:class:`Journal` from the event loop; they never touch the disk: a writer thread commits
the rows in batches, and nothing queued is ever dropped. Money, prices and sizes are
``Decimal`` in and ``Decimal`` out, stored as exact strings. One daemon per journal file,
enforced by a lock beside it.

The parts, each documented in its own module:

- ``core``: the :class:`Journal` itself, its lifecycle and its ``record_*`` methods;
- ``model``: errors, event kinds, usual reasons and the types the readers return;
- ``schema``: the ``events`` table, its migrations, opening the database for writing;
- ``files``: the start-up checks on the path and the one-daemon lock;
- ``writer``: the queue, the writer thread, its retries and its health;
- ``readers``: the summary, executions, positions, runs and start-up look-ups;
- ``maintenance``: check, online backup and archive (``mmbot journal``);
- ``report``: the summary rendered as a table.
"""

from __future__ import annotations

from mmbot.journal.core import Journal
from mmbot.journal.model import (
    CreatedQuote,
    DeleteReason,
    Detail,
    ExecutionRow,
    JournalError,
    JournalLocked,
    Kind,
    Listener,
    RunRow,
    Side,
    SkipReason,
    Summary,
    Synchronous,
)
from mmbot.journal.report import format_summary
from mmbot.journal.schema import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "CreatedQuote",
    "DeleteReason",
    "Detail",
    "ExecutionRow",
    "Journal",
    "JournalError",
    "JournalLocked",
    "Kind",
    "Listener",
    "RunRow",
    "Side",
    "SkipReason",
    "Summary",
    "Synchronous",
    "format_summary",
]
