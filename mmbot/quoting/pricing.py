"""Pricing an RFQ: from the strategy's prices to the quote we send, or why we send none.

:func:`price_quote` is the whole decision, as one function of its arguments: it keeps no
state and logs nothing. The daemon calls it for every RFQ and every requote; a replay of
recorded RFQs can call it the same way and get the same answers, given a risk check that
is itself deterministic (the daemon's RiskBook reads its clock to roll the P&L day over,
so a replay gives it the recording's clock).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Final, Protocol

from mmbot.kalshi.models import Rfq, Side
from mmbot.quoting.book import LiveQuote
from mmbot.risk import Decision
from mmbot.strategy import (
    MarketView,
    Strategy,
    clamp_pair,
    round_down_to_grid,
    safe_quote,
)

__all__ = [
    "Decline",
    "Priced",
    "QuoteRisk",
    "contracts_for",
    "expected_value",
    "price_quote",
    "rfq_contracts",
    "shape_prices",
    "sized",
]

_ZERO = Decimal(0)
_ONE = Decimal(1)

#: A quote to send: YES bid, NO bid, the market view they were priced on, and the
#: strategy's time to live for the quote (None: quotes.ttl_seconds).
Priced = tuple[Decimal, Decimal, MarketView, float | None]


@dataclass(frozen=True, slots=True)
class Decline:
    """Why an RFQ gets no quote: the reason (a skip reason) and, when there is one, details."""

    reason: str
    detail: str = ""


# Built once: declining must not cost an allocation per RFQ.
_UNKNOWN_MARKET: Final = Decline("unknown_market")
_STALE: Final = Decline("stale_market_data")
_DECLINED: Final = Decline("strategy_declined")
_NOTHING: Final = Decline("nothing_to_quote")


class QuoteRisk(Protocol):
    """The pre-trade check pricing asks of the risk book; :class:`~mmbot.risk.RiskBook` is one."""

    def check_quote(
        self, market: str, side: Side, price: Decimal, contracts: Decimal, *, open_quotes: int
    ) -> Decision:
        """Could a full fill of this quoted side be reserved right now? Reserves nothing."""


def shape_prices(
    yes_bid: Decimal, no_bid: Decimal, view: MarketView, min_edge: Decimal
) -> tuple[Decimal, Decimal]:
    """Round a strategy's prices down to the grid and keep the pair at least min_edge under 1.

    Rounding only ever lowers a bid, and lowering a bid only makes the quote safer, so the
    result is never more aggressive than what the strategy asked for.
    """
    yes, no = clamp_pair(max(yes_bid, _ZERO), max(no_bid, _ZERO), _ONE - min_edge)
    yes = round_down_to_grid(yes, view.price_ranges) if yes > 0 else _ZERO
    no = round_down_to_grid(no, view.price_ranges) if no > 0 else _ZERO
    return yes, no


def expected_value(live: LiveQuote) -> Decimal:
    """What a quote is worth if accepted, in dollars: its better side's edge times its size.

    Edge is measured from the reference mid (the price a side is worth); only one side of
    a quote can be accepted, so the better one counts. Without a reference it is zero:
    such quotes are the first to give way.
    """
    mid = live.reference
    if mid is None:
        return _ZERO
    best = _ZERO
    if live.yes_bid > 0:
        best = max(best, (mid - live.yes_bid) * contracts_for(live.rfq, live.yes_bid))
    if live.no_bid > 0:
        best = max(best, (_ONE - mid - live.no_bid) * contracts_for(live.rfq, live.no_bid))
    return best


def rfq_contracts(rfq: Rfq) -> Decimal | None:
    """The RFQ's size in contracts, or None when a dollar budget sizes it.

    Kalshi's RFQ schema requires ``contracts_fp``: an RFQ sized by ``target_cost_dollars``
    reports it as ``"0.00"``, so zero means "sized by its budget", not "zero contracts".
    """
    contracts = rfq.contracts_fp
    return contracts if contracts is not None and contracts > 0 else None


def sized(rfq: Rfq) -> bool:
    """Whether the RFQ asks for a positive size, in contracts or as a dollar budget."""
    if rfq.contracts_fp is not None and rfq.contracts_fp < 0:
        return False
    if rfq_contracts(rfq) is not None:
        return True
    return rfq.target_cost_dollars is not None and rfq.target_cost_dollars > 0


def contracts_for(rfq: Rfq, price: Decimal) -> Decimal:
    """Contracts a full fill of one side would be: the RFQ size, or what its budget buys."""
    contracts = rfq_contracts(rfq)
    if contracts is not None:
        return contracts
    if rfq.target_cost_dollars is None or price <= 0:
        return _ZERO
    # Whole contracts, as the exchange derives the size it offers per side.
    return (rfq.target_cost_dollars / price).to_integral_value(rounding=ROUND_FLOOR)


def price_quote(
    rfq: Rfq,
    strategy: Strategy[Any],
    view: MarketView | None,
    risk: QuoteRisk,
    *,
    open_quotes: int,
    min_edge: Decimal,
) -> Priced | Decline:
    """Ask the strategy and apply grid, edge and pre-trade risk: the quote, or a Decline.

    ``view`` is the market as the strategy is to see it (None: never fetched), with our
    position in it; ``open_quotes`` counts our quotes live on the exchange, not counting
    the one being checked nor one it replaces. A side the risk check refuses is dropped;
    with both sides gone the first refusal is the reason. A strategy that fails declines
    with ``strategy_error`` and what went wrong as the detail.
    """
    if view is None:
        return _UNKNOWN_MARKET
    if view.stale:
        return _STALE
    intent, error = safe_quote(strategy, rfq, view)
    if error is not None:
        return Decline("strategy_error", error)
    if intent is None:
        return _DECLINED
    yes, no = shape_prices(intent.yes_bid, intent.no_bid, view, min_edge)
    refused: list[Decision] = []
    for side in ("yes", "no"):
        price = yes if side == "yes" else no
        if price <= 0:
            continue
        check = risk.check_quote(
            rfq.market_ticker,
            side,
            price,
            contracts_for(rfq, price),
            open_quotes=open_quotes,
        )
        if not check.ok:
            refused.append(check)
            if side == "yes":
                yes = _ZERO
            else:
                no = _ZERO
    if yes == 0 and no == 0:
        if not refused:
            return _NOTHING
        return Decline(refused[0].reason or "risk", refused[0].detail)
    return yes, no, view, intent.ttl_seconds
