"""Informed simulated requesters: the pure pick-off rule, the seeded flag, the live flow."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from mmbot.kalshi.models import QuoteAccepted, Side
from mmbot.mock.config import MockConfig
from mmbot.mock.driver import rfq_body
from mmbot.mock.informed import (
    DEFAULT_INFORMED_FRACTION,
    DEFAULT_INFORMED_MOVE_THRESHOLD,
    InformedQuote,
    bargain_side,
    choose_bargain,
    is_bargain,
    threshold_micros,
)
from mmbot.mock.server import MockExchange
from mmbot.mock.sim import QuoteView, RfqPlan, RfqStream, generate_markets
from tests.support.factories import cent_market
from tests.support.keys import TestKey
from tests.support.mock import rest
from tests.support.streams import consuming_mock

MAKER_KEY_ID = "maker-key-informed"
THRESHOLD = 20_000  # two cents, in micros
QUOTED_FAIR = 500_000
REQUESTERS = ("req-a", "req-b", "req-c")


# ----------------------------------------------------------------------------- the pure rule


@pytest.mark.parametrize(
    ("side", "fair", "expected"),
    [
        # The maker bought YES at yes_bid: a bargain only once fair fell past the threshold.
        ("yes", QUOTED_FAIR - THRESHOLD - 1, True),
        ("yes", QUOTED_FAIR - THRESHOLD, False),  # exactly the threshold is not enough
        ("yes", QUOTED_FAIR, False),
        ("yes", QUOTED_FAIR + 100_000, False),  # the move favours the maker
        # The maker bought NO at no_bid: a bargain only once fair rose past the threshold.
        ("no", QUOTED_FAIR + THRESHOLD + 1, True),
        ("no", QUOTED_FAIR + THRESHOLD, False),
        ("no", QUOTED_FAIR, False),
        ("no", QUOTED_FAIR - 100_000, False),
    ],
)
def test_is_bargain_needs_a_move_past_the_threshold_against_the_maker(
    side: Side, fair: int, expected: bool
) -> None:
    assert is_bargain(side, QUOTED_FAIR, fair, THRESHOLD) is expected


def test_bargain_side_follows_the_direction_of_the_move() -> None:
    assert bargain_side(QUOTED_FAIR, QUOTED_FAIR - THRESHOLD - 1, THRESHOLD) == "yes"
    assert bargain_side(QUOTED_FAIR, QUOTED_FAIR + THRESHOLD + 1, THRESHOLD) == "no"
    assert bargain_side(QUOTED_FAIR, QUOTED_FAIR + THRESHOLD, THRESHOLD) is None
    assert bargain_side(QUOTED_FAIR, QUOTED_FAIR - THRESHOLD, THRESHOLD) is None
    with pytest.raises(ValueError, match="side"):
        is_bargain("maybe", 1, 2, 3)  # type: ignore[arg-type]


def _held(quote_id: str, yes_bid: str, no_bid: str, seq: int, fair: int) -> InformedQuote:
    return InformedQuote(QuoteView(quote_id, Decimal(yes_bid), Decimal(no_bid), seq), fair)


def test_choose_bargain_takes_the_stalest_quote_on_the_bargain_side() -> None:
    fair_now = QUOTED_FAIR - 30_000
    quotes = [
        _held("q-fresh", "0.46", "0.52", 3, fair_now),  # made after the move: not stale
        _held("q-stale", "0.49", "0.49", 1, QUOTED_FAIR),
        _held("q-staler", "0.50", "0.48", 2, QUOTED_FAIR + 5_000),  # more edge, later seq
        _held("q-declined", "0", "0.49", 0, QUOTED_FAIR),  # the yes side was declined
    ]
    choice = choose_bargain(quotes, fair_now, THRESHOLD, Decimal("0.5"))
    assert choice is not None
    assert (choice.quote_id, choice.accepted_side) == ("q-staler", "yes")
    assert choice.contracts_fraction == Decimal("0.5")
    # Equal edge: the earliest quote wins.
    tie = [_held("q-2", "0.49", "0.49", 2, QUOTED_FAIR), _held("q-1", "0.49", "0.49", 1, 500_000)]
    for order in (tie, tie[::-1]):
        tied = choose_bargain(order, fair_now, THRESHOLD)
        assert tied is not None
        assert tied.quote_id == "q-1"
    # Fair rose instead: the NO side of the same quotes is the bargain.
    up = choose_bargain(quotes[1:2], QUOTED_FAIR + THRESHOLD + 1, THRESHOLD)
    assert up is not None
    assert (up.quote_id, up.accepted_side) == ("q-stale", "no")
    assert choose_bargain(quotes[1:2], QUOTED_FAIR - THRESHOLD, THRESHOLD) is None
    assert choose_bargain([], fair_now, THRESHOLD) is None


def test_thresholds_convert_to_micros_and_are_validated() -> None:
    assert threshold_micros(Decimal("0.02")) == 20_000
    assert threshold_micros(Decimal("0")) == 0
    assert threshold_micros(DEFAULT_INFORMED_MOVE_THRESHOLD) == 20_000
    for bad in (Decimal("1"), Decimal("-0.01"), Decimal("0.0000001"), Decimal("NaN")):
        with pytest.raises(ValueError, match="threshold"):
            threshold_micros(bad)


def test_mock_config_validates_the_informed_knobs() -> None:
    config = MockConfig()
    assert config.informed_fraction == DEFAULT_INFORMED_FRACTION > 0
    assert config.informed_move_threshold == Decimal("0.02")
    with pytest.raises(ValueError, match="informed_fraction"):
        MockConfig(informed_fraction=1.5)
    with pytest.raises(ValueError, match="threshold"):
        MockConfig(informed_move_threshold=Decimal("0.0000001"))
    with pytest.raises(ValueError, match="threshold"):
        MockConfig(informed_move_threshold=Decimal("1"))


# ----------------------------------------------------------------------------- the seeded flag


def _plans(seed: int, fraction: float, n: int = 2_000) -> list[RfqPlan]:
    markets = generate_markets(
        12, random.Random(0), hvm_fraction=0.25, now=datetime(2026, 1, 1, tzinfo=UTC)
    )
    stream = RfqStream(seed, 5.0, markets, REQUESTERS, informed_fraction=fraction)
    plans = []
    for _ in range(n):
        arrival = stream.next_arrival()
        assert arrival is not None
        plans.append(arrival[1])
    return plans


def test_the_informed_flag_is_deterministic_under_the_seed() -> None:
    first = _plans(7, 0.25)
    assert first == _plans(7, 0.25)
    flags = [p.informed for p in first]
    assert flags != [p.informed for p in _plans(8, 0.25)]
    assert 0.2 < sum(flags) / len(flags) < 0.3
    # The flag has its own generator: every other field matches a stream without it.
    plain = _plans(7, 0.0)
    assert not any(p.informed for p in plain)
    assert [replace(p, informed=False) for p in first] == plain
    assert all(p.informed for p in _plans(7, 1.0, n=50))
    with pytest.raises(ValueError, match="informed_fraction"):
        RfqStream(7, 1.0, [], REQUESTERS, informed_fraction=-0.1)


# ----------------------------------------------------------------------------- over sockets


@pytest.fixture
async def mock(ed25519_key: TestKey) -> AsyncIterator[MockExchange]:
    # A fast walk (every 10 ms) so informed requesters look often; no random arrivals.
    config = MockConfig(seed=3, time_scale=0.02, market_step_seconds=0.01)
    async with MockExchange(config) as server:
        server.register_key(MAKER_KEY_ID, ed25519_key.public)
        yield server


async def _no_acceptance_for_a_while(mock: MockExchange, quote_id: str) -> None:
    # Ten walk steps, and many times the (scaled) decision delay of an ordinary requester.
    await asyncio.sleep(0.1)
    assert mock.exchange.quotes[quote_id].status == "open"
    assert mock.driver.stats.acceptances == mock.driver.stats.informed_accepts == 0


@pytest.mark.parametrize("side", ["yes", "no"])
async def test_an_informed_requester_picks_off_a_quote_once_fair_moves_against_the_maker(
    mock: MockExchange, ed25519_key: TestKey, side: Side
) -> None:
    market = cent_market(mock)
    # Hold the market still: only the test moves its fair value.
    market.vol_micros_per_sqrt_s = 0
    market.fair_micros = QUOTED_FAIR
    requester = mock.driver.requesters[0]
    plan = RfqPlan(
        requester=requester.user_id,
        market_ticker=market.ticker,
        contracts=Decimal(4),
        target_cost_dollars=None,
        rest_remainder=False,
        wants="yes",
        # A reservation an ordinary requester would accept at once: the informed one won't.
        reservation=Decimal("0.99"),
        lifetime_seconds=500.0,
        decision_delay_seconds=0.1,
        partial_fraction=None,
        informed=True,
    )
    rfq = mock.exchange.create_rfq(requester, rfq_body(plan))
    mock.driver.track(rfq, plan, fixed_reservation=True)
    assert mock.driver.stats.informed_rfqs == 1
    # The maker quotes only the side under test: the other side is declined ("0").
    yes_bid = str(market.yes_bid()) if side == "yes" else "0"
    no_bid = str(market.no_bid()) if side == "no" else "0"
    direction = -1 if side == "yes" else 1  # the move that hurts the maker on this side

    maker_signer = ed25519_key.signer(MAKER_KEY_ID)
    async with rest(mock, maker_signer) as maker, consuming_mock(mock, maker_signer) as maker_ws:
        quote_id = await maker.create_quote(rfq.id, yes_bid, no_bid)
        # At the ordinary decision time, on ordinary terms: nothing.
        await _no_acceptance_for_a_while(mock, quote_id)
        # A move the other way (in the maker's favour) is no bargain.
        market.fair_micros = QUOTED_FAIR - direction * 3 * THRESHOLD
        await _no_acceptance_for_a_while(mock, quote_id)
        # Exactly the threshold against the maker is still not enough.
        market.fair_micros = QUOTED_FAIR + direction * THRESHOLD
        await _no_acceptance_for_a_while(mock, quote_id)
        # One micro more, and the next walk step picks the quote off.
        market.fair_micros = QUOTED_FAIR + direction * (THRESHOLD + 1)
        async with asyncio.timeout(2):
            accepted = await maker_ws.next_of(QuoteAccepted)
    assert accepted.msg.quote_id == quote_id
    assert accepted.msg.accepted_side == side
    assert accepted.msg.contracts_accepted_fp == Decimal(4)
    stats = mock.driver.stats
    assert (stats.informed_accepts, stats.acceptances, stats.decisions) == (1, 1, 0)

    async with httpx.AsyncClient(headers=mock.control_headers) as http:
        state = (await http.get(f"{mock.base_url}/_mock/state")).json()
    assert state["driver"]["informed_rfqs"] == 1
    assert state["driver"]["informed_accepts"] == 1
