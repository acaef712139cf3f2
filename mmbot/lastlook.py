"""The last look: whether an accepted quote still holds at the market as it stands now.

Kalshi gives a maker a confirmation window (30 s, 3 s on High Volatility Markets) between
a requester's acceptance and the trade, so that the maker can look once more. A requester
who accepts just after the market moved is the adverse selection that look exists to
refuse: the quote was priced against a value that is no longer there.

The daemon (:mod:`mmbot.quoting.accept`) and the replay (:mod:`mmbot.research.replay`)
judge an acceptance the same way: stale or missing market data declines it outright (it
is never the strategy's to overrule), then the strategy's
:meth:`~mmbot.strategy.Strategy.confirm` decides, whose default declines when the accepted
side's value fell by more than ``quotes.last_look_tolerance`` since the quote was priced.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

__all__ = ["AcceptInfo", "adverse_move", "default_last_look", "safe_confirm"]

_ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class AcceptInfo:
    """An acceptance of one of our quotes, as a strategy's ``confirm`` sees it."""

    quote_id: str
    rfq_id: str
    market_ticker: str
    side: Literal["yes", "no"]  # the side whose bid was hit: the outcome we would buy
    price: Decimal  # our bid on that side, from our own record of the quote
    contracts: Decimal
    # The YES reference mid the quote was priced against; None when it is not known (a
    # quote found on the exchange after a restart that an older run sent).
    reference: Decimal | None
    quoted_seconds_ago: float  # from the quote being sent to the acceptance arriving
    tolerance: Decimal  # quotes.last_look_tolerance (dollars per contract)


def adverse_move(accept: AcceptInfo, mid: Decimal) -> Decimal:
    """How far the accepted side's value fell since the quote was priced (> 0: against us)."""
    now = mid if accept.side == "yes" else _ONE - mid
    if accept.reference is not None:
        then = accept.reference if accept.side == "yes" else _ONE - accept.reference
    else:
        # Our bid stands in for the value it was priced from. A bid sits below that value,
        # so this understates the move: it errs towards confirming, never the other way,
        # only for quotes whose reference was never recorded.
        then = accept.price
    return then - now


def default_last_look(accept: AcceptInfo, mid: Decimal | None) -> bool | str:
    """The default verdict: True to confirm, or why not (the move exceeds the tolerance)."""
    if mid is None:
        return "the market has no reference price"
    moved = adverse_move(accept, mid)
    if moved > accept.tolerance:
        worth = mid if accept.side == "yes" else _ONE - mid
        return (
            f"{accept.side} is worth {worth} now, {moved} less than when quoted "
            f"(last_look_tolerance {accept.tolerance})"
        )
    return True


def safe_confirm(
    strategy: Any, accept: AcceptInfo, market: Any
) -> tuple[bool, str, BaseException | None]:
    """Call ``strategy.confirm``: (confirm?, why not, what it raised). A failure declines."""
    try:
        verdict = strategy.confirm(accept, market)
    except Exception as exc:
        return False, f"confirm() raised {type(exc).__name__}: {exc}", exc
    if verdict is True:
        return True, "", None
    if verdict is False:
        return False, "the strategy declined", None
    if isinstance(verdict, str):
        return False, verdict or "the strategy declined", None
    if inspect.iscoroutine(verdict):
        # Closing it avoids a "coroutine was never awaited" warning at garbage collection.
        verdict.close()
        return False, "confirm() returned a coroutine: it must be a plain method", None
    # 1, None or a numpy bool are not an answer: confirming on one would trade on a guess.
    return False, f"confirm() returned {type(verdict).__name__}, expected bool or str", None
