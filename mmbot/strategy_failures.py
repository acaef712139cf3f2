"""What a strategy's failures in :func:`mmbot.strategy.safe_quote` leave behind.

Per strategy: where in its own code the latest exception was raised (``file:line``, read
from the traceback's frames without formatting anything, since this runs on every
failure), every place seen so far (so a traceback is logged once per place) and how many
calls in a row failed (so a strategy failing on every RFQ is reported loudly once).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from typing import Any

__all__ = ["FAILING_STREAK", "StrategyFailure", "failed", "strategy_failure"]

#: Consecutive failed calls of ``quote`` (no success between) that make a strategy "failing".
FAILING_STREAK = 20

# Frames in mmbot's own code are passed over when looking for the strategy's line.
_MMBOT_DIR = os.path.dirname(__file__) + os.sep


@dataclass(slots=True, eq=False)
class StrategyFailure:
    """A strategy's latest failure in :func:`safe_quote`, and its current failure streak."""

    strategy: Any
    #: The reason safe_quote returned for the latest failure.
    error: str = ""
    #: ``file:line`` of the strategy's frame that raised; None when quote() returned a bad value.
    site: str | None = None
    #: The exception, kept only when ``site`` is new for this strategy, for one traceback.
    exception: BaseException | None = None
    #: Failed calls since the last successful one.
    streak: int = 0
    #: True once ``strategy_failing`` was reported for the current streak.
    streak_reported: bool = False
    #: Every error location already seen for this strategy.
    sites: set[str | None] = dataclasses.field(default_factory=set)
    _source: str | None = None


# By id, holding the strategy itself (so an id cannot be reused while its entry lives): a
# strategy may be unhashable (a dataclass) and keeps no bookkeeping attributes of ours.
_failures: dict[int, StrategyFailure] = {}


def strategy_failure(strategy: Any) -> StrategyFailure | None:
    """The failure record of ``strategy``, or None if :func:`safe_quote` never saw it fail."""
    return _failures.get(id(strategy))


def failed(strategy: Any, error: str, exc: BaseException | None) -> None:
    """Note a failure of ``strategy`` (``exc`` None: quote() returned a bad value)."""
    record = _failures.get(id(strategy))
    if record is None:
        record = _failures[id(strategy)] = StrategyFailure(strategy)
        module = sys.modules.get(type(strategy).__module__)
        record._source = getattr(module, "__file__", None)
    site = None if exc is None else _raise_site(exc, record._source)
    record.error = error
    record.site = site
    record.streak += 1
    if site in record.sites:
        record.exception = None  # a repeat: its traceback was logged already
    else:
        record.sites.add(site)
        record.exception = exc


def _raise_site(exc: BaseException, source: str | None) -> str | None:
    """``file:line`` of the deepest frame in ``source``, else outside mmbot, else the deepest."""
    # Only line numbers are read here, no source text: this runs on every failure.
    ours = other = last = None
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        last = (filename, tb.tb_lineno)
        if filename == source:
            ours = last
        elif not filename.startswith(_MMBOT_DIR):
            other = last
        tb = tb.tb_next
    found = ours or other or last
    return None if found is None else f"{found[0]}:{found[1]}"
