"""The exchange's REST calls the quote lifecycle makes, as a structural type.

:class:`~mmbot.kalshi.rest.KalshiRestClient` satisfies :class:`QuoteGateway` as it is; so
does any stand-in for it (a test's fake exchange), checked by mypy rather than by a
``type: ignore`` at every use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Protocol

from mmbot.kalshi.models import Fill, Quote

__all__ = ["QuoteGateway"]


class QuoteGateway(Protocol):
    """Create, withdraw, confirm and look up our quotes, and list the fills of an order.

    Failures raise :class:`~mmbot.kalshi.errors.KalshiError` (a 404 as ``NotFoundError``);
    ``create_quote`` also raises :class:`~mmbot.kalshi.ratelimit.Shed` when the write budget
    gives the quote up, and :class:`~mmbot.kalshi.rest.InvalidQuoteError` for prices the
    exchange would refuse, before anything is sent.
    """

    async def create_quote(
        self,
        rfq_id: str,
        yes_bid: Decimal,
        no_bid: Decimal,
        *,
        rest_remainder: bool = False,
        post_only: bool = True,
        subaccount: int | None = None,
        deadline_seconds: float | None = None,
        value: Decimal | None = None,
        shed_at: float | None = None,
    ) -> str:
        """Quote on an RFQ; return the new quote's id (it replaces our previous one there)."""

    async def delete_quote(
        self, quote_id: str, *, rfq_id: str | None = None, deadline_seconds: float | None = None
    ) -> None:
        """Withdraw one of our quotes so it can no longer be accepted."""

    async def confirm_quote(
        self, quote_id: str, *, rfq_id: str | None = None, deadline_seconds: float | None = None
    ) -> None:
        """Confirm an accepted quote, locking the trade."""

    async def get_quote(self, quote_id: str, *, rfq_id: str | None = None) -> Quote:
        """Return one quote as the exchange holds it."""

    def iter_fills(
        self, *, order_id: str | None = None, min_ts: int | None = None
    ) -> AsyncIterator[Fill]:
        """Iterate over our fills under one order, since ``min_ts`` (Unix s; None: lookback)."""
