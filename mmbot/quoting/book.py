"""Our quotes and every index over them, kept in step by one owner.

:class:`QuoteBook` is plain bookkeeping: no I/O, no timers, no tasks. Every change to a
tracked quote's place in the book (tracked, sent, withdrawn, forgotten) and to its state
goes through one of its methods, so the indexes and the count of open quotes cannot drift
apart. Everything else reads the indexes through read-only views.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from mmbot.kalshi.models import MakerFill, Rfq
from mmbot.strategy import Strategy

if TYPE_CHECKING:
    import asyncio

__all__ = ["LiveQuote", "QuoteBook", "State", "Withdrawal"]

# creating: the create request is out; open: live on the exchange; withdrawing: its DELETE
# is out or being retried (still live until the exchange says otherwise); confirmed: our
# confirm is out or done; executing: executed, its fills being looked up; done: forgotten.
State = Literal["creating", "open", "withdrawing", "confirmed", "executing", "done"]

# The states of a quote that is (or is about to be) live on the exchange.
_LIVE_STATES: frozenset[str] = frozenset({"creating", "open"})


@dataclass(eq=False)
class LiveQuote:
    """One quote of ours and where it is in its lifecycle."""

    rfq: Rfq
    strategy: Strategy[Any]
    yes_bid: Decimal
    no_bid: Decimal
    reference: Decimal | None
    hvm: bool
    # The strategy's own time to live for this quote; None means quotes.ttl_seconds.
    ttl: float | None = None
    quote_id: str | None = None
    state: State = "creating"
    sent_at: float = 0.0
    expiry: asyncio.TimerHandle | None = None
    fill: MakerFill | None = None
    # time.monotonic() when the RFQ's frame was received; None when it came over REST.
    received_at: float | None = None
    # REST looks taken at this quote's late execution so far.
    execution_checks: int = 0
    # Found on the exchange by a reconciliation rather than sent by this run: its
    # acceptance gets a look at the market before it is confirmed.
    adopted: bool = False
    # The order the execution placed for us, which its fills are listed under.
    order_id: str | None = None


@dataclass(eq=False)
class Withdrawal:
    """A quote of ours being withdrawn: live on the exchange until it says otherwise."""

    quote_id: str
    rfq_id: str
    market: str
    reason: str
    live: LiveQuote | None
    task: asyncio.Task[None] | None = None
    attempts: int = 0
    # An acceptance of it was declined already (a duplicate event must not decline twice).
    declined: bool = False


class QuoteBook:
    """Every quote of ours being tracked, indexed by RFQ, market, quote id and withdrawal."""

    def __init__(self) -> None:
        """Start empty."""
        # An RFQ's quote of ours while it is live or in flight (not while being withdrawn).
        self._by_rfq: dict[str, LiveQuote] = {}
        # The same quotes by market: a market-data refresh looks at its market's quotes
        # only, instead of scanning every live quote for each market refreshed.
        self._by_market: dict[str, dict[str, LiveQuote]] = {}
        # Every tracked quote the exchange gave an id, an adopted one included.
        self._by_quote: dict[str, LiveQuote] = {}
        # Quotes whose withdrawal the exchange has not confirmed yet, by quote id.
        self._withdrawals: dict[str, Withdrawal] = {}
        # How many quotes in _by_rfq are creating or open; changed only by track_rfq,
        # set_state and untrack_rfq.
        self._open_count = 0
        # Read-only views of the same dicts, for everyone else: no copy, no call.
        self.by_rfq: Mapping[str, LiveQuote] = self._by_rfq
        self.by_market: Mapping[str, Mapping[str, LiveQuote]] = self._by_market
        self.by_quote: Mapping[str, LiveQuote] = self._by_quote
        self.withdrawals: Mapping[str, Withdrawal] = self._withdrawals

    # ------------------------------------------------------------------ reads

    @property
    def open_quotes(self) -> int:
        """Quotes live on the exchange: sent, or being withdrawn and not yet gone."""
        # Kept as a count: every RFQ's risk check reads it, and counting the tracked
        # quotes each time was a visible share of the time before each quote went out.
        return self._open_count + len(self._withdrawals)

    def live(self) -> list[LiveQuote]:
        """Every tracked quote."""
        # Not only _by_rfq: an adopted quote whose RFQ already has a quote of ours is tracked
        # by id alone, and left out of this list it escaped the reconciliation that settles
        # confirmed quotes before positions are reloaded, so its fill was counted twice.
        tracked = {id(q): q for q in self._by_rfq.values()}
        for q in self._by_quote.values():
            tracked.setdefault(id(q), q)
        return list(tracked.values())

    def tracked_quote_ids(self) -> set[str]:
        """Ids of every tracked quote, those being withdrawn included."""
        return set(self._by_quote) | set(self._withdrawals)

    def tracks(self, quote_id: str) -> bool:
        """Whether ``quote_id`` is tracked (by id, or as a withdrawal)."""
        return quote_id in self._by_quote or quote_id in self._withdrawals

    # ------------------------------------------------------------------ changes

    def track_rfq(self, live: LiveQuote) -> bool:
        """Track ``live`` as its RFQ's quote unless another is; True if it now is."""
        if self._by_rfq.setdefault(live.rfq.id, live) is not live:
            return False
        self._by_market.setdefault(live.rfq.market_ticker, {})[live.rfq.id] = live
        self._open_count += live.state in _LIVE_STATES
        return True

    def set_state(self, live: LiveQuote, state: State) -> None:
        """Move ``live`` to ``state``, keeping the open-quote count in step."""
        if self._by_rfq.get(live.rfq.id) is live:
            self._open_count += (state in _LIVE_STATES) - (live.state in _LIVE_STATES)
        live.state = state

    def untrack_rfq(self, live: LiveQuote) -> bool:
        """Stop indexing ``live`` by its RFQ and market; True if it was (unwatch its market)."""
        if self._by_rfq.get(live.rfq.id) is not live:
            return False
        del self._by_rfq[live.rfq.id]
        same_market = self._by_market.get(live.rfq.market_ticker)
        if same_market is not None:
            same_market.pop(live.rfq.id, None)
            if not same_market:
                del self._by_market[live.rfq.market_ticker]
        return True

    def opened(self, live: LiveQuote, quote_id: str) -> str | None:
        """``live`` is open on the exchange as ``quote_id``; return the id it replaced."""
        previous = live.quote_id
        if previous is not None:
            self._by_quote.pop(previous, None)
        live.quote_id = quote_id
        self.set_state(live, "open")
        self._by_quote[quote_id] = live
        return previous

    def adopt(self, live: LiveQuote) -> bool:
        """Track a quote found on the exchange by its id, and by its RFQ if that is free.

        True if it is now its RFQ's quote (and so indexed by market too).
        """
        assert live.quote_id is not None
        self._by_quote[live.quote_id] = live
        return self.track_rfq(live)

    def withdrawing(self, live: LiveQuote) -> bool:
        """``live`` is being withdrawn: out of the RFQ and market indexes, still found by id.

        True if it left the RFQ index (unwatch its market).
        """
        self.set_state(live, "withdrawing")
        return self.untrack_rfq(live)

    def add_withdrawal(self, withdrawal: Withdrawal) -> None:
        """Track a withdrawal until the exchange confirms the quote gone."""
        self._withdrawals[withdrawal.quote_id] = withdrawal

    def pop_withdrawal(self, quote_id: str) -> Withdrawal | None:
        """Stop tracking the withdrawal of ``quote_id``; None if it was not tracked."""
        return self._withdrawals.pop(quote_id, None)

    def forget(self, live: LiveQuote) -> bool:
        """Drop ``live`` from every index (state "done"); True if it left the RFQ index."""
        self.set_state(live, "done")
        untracked = self.untrack_rfq(live)
        if live.quote_id is not None and self._by_quote.get(live.quote_id) is live:
            del self._by_quote[live.quote_id]
        return untracked
