"""The last look: every acceptance is re-priced against the market as it stands.

Unit tests pin the rule (:mod:`mmbot.lastlook`); the end-to-end ones run the daemon
against the mock exchange over loopback sockets, move the market's fair value between the
quote and the acceptance, and judge from the exchange's records, the journal and the
metrics.
"""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal
from typing import Any

import httpx
import pytest

from mmbot.lastlook import AcceptInfo, adverse_move, default_last_look, safe_confirm
from mmbot.mock.sim import SimMarket
from mmbot.strategy import MarketView, QuoteIntent, Rfq, Strategy, StrategyParams
from tests.support.daemon import FLAT, TEN, Daemons, Running, Venue, status
from tests.support.polling import eventually

D = Decimal
CENT_GRID: tuple[Any, ...] = ()


def accept(side: str = "yes", reference: str | None = "0.50", **over: Any) -> AcceptInfo:
    fields: dict[str, Any] = {
        "quote_id": "q1",
        "rfq_id": "r1",
        "market_ticker": "M",
        "side": side,
        "price": D("0.40") if side == "yes" else D("0.50"),
        "contracts": TEN,
        "reference": None if reference is None else D(reference),
        "quoted_seconds_ago": 1.0,
        "tolerance": D("0.02"),
    }
    fields.update(over)
    return AcceptInfo(**fields)


def view(mid: str | None) -> MarketView:
    return MarketView(
        ticker="M",
        event_ticker="E",
        yes_bid=None,
        yes_ask=None,
        last_price=None if mid is None else D(mid),
        price_ranges=CENT_GRID,
    )


# --------------------------------------------------------------------------- the rule


def test_a_fall_of_the_accepted_side_is_an_adverse_move_on_either_side() -> None:
    assert adverse_move(accept("yes"), D("0.45")) == D("0.05")  # YES lost 5 cents
    assert adverse_move(accept("yes"), D("0.55")) == D("-0.05")  # YES gained: our way
    assert adverse_move(accept("no"), D("0.55")) == D("0.05")  # NO lost 5 cents
    assert adverse_move(accept("no"), D("0.45")) == D("-0.05")


def test_without_a_reference_our_own_bid_stands_for_it() -> None:
    # We bid 0.40 for YES: a mid of 0.35 is 5 cents below what we paid.
    assert adverse_move(accept("yes", reference=None), D("0.35")) == D("0.05")


def test_the_tolerance_itself_confirms_and_a_micro_more_declines() -> None:
    assert default_last_look(accept("yes"), D("0.48")) is True
    refused = default_last_look(accept("yes"), D("0.479999"))
    assert isinstance(refused, str)
    assert "last_look_tolerance 0.02" in refused
    assert default_last_look(accept("no"), D("0.52")) is True
    assert isinstance(default_last_look(accept("no"), D("0.520001")), str)


def test_no_reference_price_declines() -> None:
    assert isinstance(default_last_look(accept(), None), str)


class _Answers(Strategy[StrategyParams]):
    name = "answers"
    Params = StrategyParams

    def __init__(self, answer: Any) -> None:
        super().__init__(StrategyParams())
        self.answer = answer

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        return None

    def confirm(self, accept: AcceptInfo, market: MarketView) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        if self.answer == "coroutine":

            async def later() -> bool:
                return True

            return later()
        return self.answer


@pytest.mark.parametrize(
    ("answer", "ok", "detail"),
    [
        (True, True, ""),
        (False, False, "the strategy declined"),
        ("spread too wide", False, "spread too wide"),
        ("", False, "the strategy declined"),
        (1, False, "confirm() returned int, expected bool or str"),
        (None, False, "confirm() returned NoneType, expected bool or str"),
        ("coroutine", False, "confirm() returned a coroutine: it must be a plain method"),
        (ValueError("boom"), False, "confirm() raised ValueError: boom"),
    ],
)
def test_safe_confirm_confirms_only_on_true(answer: Any, ok: bool, detail: str) -> None:
    got_ok, got_detail, exc = safe_confirm(_Answers(answer), accept(), view("0.50"))
    assert (got_ok, got_detail) == (ok, detail)
    assert (exc is not None) == isinstance(answer, Exception)


def test_the_base_strategy_confirms_by_the_default_rule() -> None:
    base = _Answers(True)
    assert Strategy.confirm(base, accept("yes"), view("0.50")) is True
    assert isinstance(Strategy.confirm(base, accept("yes"), view("0.40")), str)
    # A crossed book has no mid, so no confirm.
    crossed = MarketView(
        ticker="M",
        event_ticker="E",
        yes_bid=D("0.55"),
        yes_ask=D("0.50"),
        last_price=D("0.50"),
        price_ranges=CENT_GRID,
    )
    assert crossed.mid is None
    assert isinstance(Strategy.confirm(base, accept("yes"), crossed), str)


# --------------------------------------------------------------------------- end to end


class ChoosyParams(StrategyParams):
    """How the test strategy answers a last look."""

    answer: str = "confirm"  # "confirm", "decline" or "raise"


class Choosy(Strategy[ChoosyParams]):
    """Flat prices, and a last look that answers as told."""

    name = "e2e_choosy"
    Params = ChoosyParams

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        return QuoteIntent(yes_bid=D("0.40"), no_bid=D("0.50"))

    def confirm(self, accept: AcceptInfo, market: MarketView) -> bool | str:
        if self.params.answer == "raise":
            raise RuntimeError("no view on this")
        if self.params.answer == "decline":
            return f"not at {market.mid}"
        return True


CHOOSY = f"{__name__}:Choosy"
# No requote: the acceptance must meet the quote the move left standing, as an informed
# requester's does when it is quicker than our replacement.
NO_REQUOTE = {"requote_threshold": "0.5"}


def fair(market: SimMarket, price: str) -> None:
    market.fair_micros = int(D(price) * 1_000_000)


async def seen_mid(daemon: Running, market: SimMarket) -> Decimal | None:
    found = daemon.engine.market_data.view(market.ticker, D(0))
    return None if found is None else found.mid


async def quote_then_move(
    venue: Venue, daemon: Running, market: SimMarket, to: str
) -> tuple[str, str]:
    """Quote at fair 0.50, move fair to ``to``, and wait until the daemon sees the move."""
    rfq_id = await venue.requester.create_rfq(market.ticker, contracts=TEN)
    quote = await venue.open_quote(rfq_id)
    before = await seen_mid(daemon, market)
    fair(market, to)

    async def moved() -> bool:
        return (await seen_mid(daemon, market)) != before

    await eventually_async(moved, "the daemon's view to follow the move")
    return rfq_id, quote.id


async def eventually_async(probe: Any, what: str, within: float = 8.0) -> None:
    try:
        async with asyncio.timeout(within):
            while not await probe():  # noqa: ASYNC110 - polling the daemon's view
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def scrape(daemon: Running) -> str:
    found = await eventually(
        lambda: re.search(r"metrics on (http://\S+)/metrics", daemon.out.getvalue()),
        "the metrics line",
    )
    async with httpx.AsyncClient(timeout=5) as http:
        return (await http.get(f"{found[1]}/metrics")).text


def sample(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found[1]) if found else 0.0


@pytest.mark.slow
async def test_an_acceptance_after_the_market_moved_against_us_is_declined(
    venue: Venue, daemons: Daemons
) -> None:
    market = venue.markets(1)[0]
    fair(market, "0.50")
    async with daemons.running(daemons.settings(quotes=NO_REQUOTE)) as daemon:
        rfq_id, quote_id = await quote_then_move(venue, daemon, market, "0.30")
        # The informed requester's move: it takes our YES bid after YES fell 20 cents.
        await venue.requester.accept_quote(quote_id, "yes", rfq_id=rfq_id)
        declined = await daemon.row("confirm_declined", quote_id=quote_id)
        assert declined["reason"] == "last_look"
        assert "last_look_tolerance 0.02" in declined["detail"]
        quote = venue.mock.exchange.quotes[quote_id]
        assert quote.confirmed_ts is None
        assert status(quote) != "confirmed"
        text = await scrape(daemon)
        assert sample(text, 'mmbot_quotes_declined_total{reason="last_look"}') == 1
        assert sample(text, "mmbot_last_look_move_dollars_count") >= 1
    assert venue.position(market.ticker) == 0
    assert daemon.engine.market_data.view(market.ticker, D(0)) is not None


@pytest.mark.slow
@pytest.mark.parametrize("to", ["0.49", "0.60"], ids=["within_tolerance", "our_way"])
async def test_an_acceptance_the_market_still_supports_is_confirmed(
    venue: Venue, daemons: Daemons, to: str
) -> None:
    market = venue.markets(1)[0]
    fair(market, "0.50")
    async with daemons.running(daemons.settings(quotes=NO_REQUOTE)) as daemon:
        rfq_id, quote_id = await quote_then_move(venue, daemon, market, to)
        await venue.requester.accept_quote(quote_id, "yes", rfq_id=rfq_id)
        await daemon.row("confirm_sent", quote_id=quote_id)
        assert not daemon.rows("confirm_declined", quote_id=quote_id)


@pytest.mark.slow
async def test_with_the_last_look_off_a_moved_acceptance_is_confirmed(
    venue: Venue, daemons: Daemons
) -> None:
    market = venue.markets(1)[0]
    fair(market, "0.50")
    async with daemons.running(
        daemons.settings(quotes={**NO_REQUOTE, "last_look": False})
    ) as daemon:
        rfq_id, quote_id = await quote_then_move(venue, daemon, market, "0.30")
        await venue.requester.accept_quote(quote_id, "yes", rfq_id=rfq_id)
        await daemon.row("confirm_sent", quote_id=quote_id)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("answer", "reason", "detail"),
    [("decline", "last_look", "not at 0.5"), ("raise", "strategy_error", "RuntimeError")],
)
async def test_a_strategy_s_own_confirm_decides(
    venue: Venue, daemons: Daemons, answer: str, reason: str, detail: str
) -> None:
    market = venue.markets(1)[0]
    fair(market, "0.50")
    routes = {"routes": [{"match": ["MOCK-*"], "strategy": CHOOSY, "params": {"answer": answer}}]}
    async with daemons.running(daemons.settings(strategies=routes)) as daemon:
        rfq_id = await venue.requester.create_rfq(market.ticker, contracts=TEN)
        quote = await venue.open_quote(rfq_id)
        # The market did not move at all: only the strategy can refuse.
        await venue.requester.accept_quote(quote.id, "yes", rfq_id=rfq_id)
        declined = await daemon.row("confirm_declined", quote_id=quote.id)
        assert declined["reason"] == reason
        assert detail in declined["detail"]
    assert venue.position(market.ticker) == 0


@pytest.mark.slow
async def test_the_default_strategy_confirm_keeps_flat_quotes_flowing(
    venue: Venue, daemons: Daemons
) -> None:
    # FLAT does not override confirm: the default rule applies, and an unmoved market passes.
    market = venue.markets(1)[0]
    routes = {"routes": [{"match": ["MOCK-*"], "strategy": FLAT}]}
    async with daemons.running(daemons.settings(strategies=routes)) as daemon:
        rfq_id = await venue.requester.create_rfq(market.ticker, contracts=TEN)
        quote = await venue.open_quote(rfq_id)
        await venue.requester.accept_quote(quote.id, "no", rfq_id=rfq_id)
        await daemon.row("confirm_sent", quote_id=quote.id)
