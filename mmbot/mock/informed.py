"""Informed requesters: the pure rule for picking off a quote the market has moved past.

An informed requester does not shop for the cheapest quote within a reservation. It
holds its RFQ's quotes and waits for the hidden fair value to move away from where it
was when each quote was created; once the move exceeds a threshold in the direction that
makes a quote stale in its favour, it accepts that quote at once. That is the adverse
selection a maker's "last look" exists to refuse.

Which quote is a bargain, by side (see the side convention in :mod:`mmbot.mock.sim`):

* ``accepted_side="yes"`` hits the maker's ``yes_bid``: the maker bought YES, so the
  quote is a bargain for the requester when fair *fell*:
  ``fair_now < fair_when_quoted - threshold``;
* ``accepted_side="no"`` hits the ``no_bid``: the maker bought NO, a bargain when fair
  *rose*: ``fair_now > fair_when_quoted + threshold``.

A move of exactly the threshold is not enough. Like :mod:`mmbot.mock.sim`, nothing here
does I/O or reads a clock; fair values and thresholds are integer micro-units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from mmbot.kalshi.models import Side
from mmbot.mock.sim import Acceptance, QuoteView

__all__ = [
    "DEFAULT_INFORMED_FRACTION",
    "DEFAULT_INFORMED_MOVE_THRESHOLD",
    "InformedQuote",
    "bargain_side",
    "choose_bargain",
    "is_bargain",
    "threshold_micros",
]

#: Share of simulated RFQs whose requester is informed: small, so a default dry-run
#: shows some picking-off without it dominating the flow.
DEFAULT_INFORMED_FRACTION = 0.1
#: How far (in dollars of fair probability) the market must move past a quote before an
#: informed requester picks it off: two cents, about a typical maker's half-spread.
DEFAULT_INFORMED_MOVE_THRESHOLD = Decimal("0.02")

_MICROS_PER_UNIT = 1_000_000
_SIDES: tuple[Side, ...] = ("yes", "no")


def threshold_micros(threshold: Decimal) -> int:
    """A dollar threshold as integer micros; it must be finite, within [0, 1), on 1e-6."""
    if not isinstance(threshold, Decimal) or not threshold.is_finite():
        raise ValueError(f"threshold must be a finite Decimal, got {threshold!r}")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold {threshold} must be within [0, 1)")
    micros = threshold * _MICROS_PER_UNIT
    if micros != micros.to_integral_value():
        raise ValueError(f"threshold {threshold} is finer than a millionth")
    return int(micros)


def is_bargain(side: Side, quoted_fair_micros: int, fair_micros: int, threshold: int) -> bool:
    """True when fair moved past ``threshold`` micros against the maker on ``side``."""
    if side == "yes":
        # The maker bought YES at yes_bid: it loses when YES got less likely.
        return fair_micros < quoted_fair_micros - threshold
    if side == "no":
        # The maker bought NO at no_bid: it loses when YES got more likely.
        return fair_micros > quoted_fair_micros + threshold
    raise ValueError(f"side must be 'yes' or 'no', got {side!r}")


def bargain_side(quoted_fair_micros: int, fair_micros: int, threshold: int) -> Side | None:
    """The side a move of fair makes a bargain to accept, or None while within ``threshold``."""
    for side in _SIDES:
        if is_bargain(side, quoted_fair_micros, fair_micros, threshold):
            return side
    return None


@dataclass(frozen=True, slots=True)
class InformedQuote:
    """A live quote as an informed requester sees it: prices plus fair when it was made."""

    quote: QuoteView
    #: The market's hidden fair value (micros) when the quote was created.
    quoted_fair_micros: int


def _edge_micros(side: Side, view: QuoteView, fair_micros: int) -> int:
    # What the requester gains per contract at today's fair value: holding NO worth
    # 1 - fair for 1 - yes_bid on side "yes", YES worth fair for 1 - no_bid on "no".
    yes_bid = int(view.yes_bid * _MICROS_PER_UNIT)
    no_bid = int(view.no_bid * _MICROS_PER_UNIT)
    if side == "yes":
        return yes_bid - fair_micros
    return fair_micros + no_bid - _MICROS_PER_UNIT


def choose_bargain(
    quotes: Sequence[InformedQuote],
    fair_micros: int,
    threshold: int,
    contracts_fraction: Decimal | None = None,
) -> Acceptance | None:
    """The stale quote an informed requester accepts now, or None if fair has not moved enough.

    A quote qualifies on whichever side the move made a bargain (:func:`bargain_side`)
    unless the maker declined that side (bid 0). Among several, the requester takes the
    largest edge at today's fair value, ties going to the earliest ``created_seq``.
    """
    best: tuple[int, int] | None = None
    choice: Acceptance | None = None
    for item in quotes:
        side = bargain_side(item.quoted_fair_micros, fair_micros, threshold)
        if side is None:
            continue
        view = item.quote
        bid = view.yes_bid if side == "yes" else view.no_bid
        if not 0 < bid < 1:
            continue
        key = (-_edge_micros(side, view, fair_micros), view.created_seq)
        if best is None or key < best:
            best = key
            choice = Acceptance(view.quote_id, side, contracts_fraction)
    return choice
