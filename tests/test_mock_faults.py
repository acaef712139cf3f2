"""Each fault knob of the mock exchange, observed through the project's own clients."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import httpx
import pytest

from mmbot.kalshi.auth import KalshiAuth, Signer
from mmbot.kalshi.errors import AuthError, RateLimitedError, ServerError
from mmbot.kalshi.models import Orderbook, QuoteAccepted, QuoteExecuted, RfqCreated
from mmbot.kalshi.rest import KalshiRestClient
from mmbot.kalshi.ws import Reconnected
from mmbot.mock.exchange import User
from mmbot.mock.faults import FaultConfig, FaultConfigError, Faults
from mmbot.mock.server import MockConfig, MockExchange
from tests.support.factories import cent_market
from tests.support.keys import KEY_ID, TestKey
from tests.support.mock import rest
from tests.support.polling import eventually
from tests.support.streams import consuming_mock

# ----------------------------------------------------------------------------- helpers


@contextlib.asynccontextmanager
async def running(faults: FaultConfig, key: TestKey) -> AsyncIterator[tuple[MockExchange, User]]:
    async with MockExchange(MockConfig(seed=5, faults=faults, market_step_seconds=0)) as mock:
        yield mock, mock.register_key(KEY_ID, key.public)


async def set_faults(mock: MockExchange, **changes: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(headers=mock.control_headers) as http:
        response = await http.post(f"{mock.base_url}/_mock/faults", json=changes)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def new_rfq(mock: MockExchange, user: User, index: int) -> str:
    """Create an RFQ directly in the exchange (same tick as the caller) and return its id."""
    ticker = list(mock.exchange.markets)[index]
    body = {"market_ticker": ticker, "contracts_fp": "1", "rest_remainder": False}
    return mock.exchange.create_rfq(user, body).id


# ----------------------------------------------------------------------------- configuration


def test_fault_config_is_validated() -> None:
    assert FaultConfig().to_dict() == dict.fromkeys(FaultConfig.field_names(), 0.0)
    for bad in (
        {"write_429_fraction": 1.01},
        {"reorder_fraction": -0.1},
        {"latency_ms": -5},
        {"latency_ms": float("inf")},
        {"duplicate_fraction": True},
        {"malformed_fraction": "0.5"},
    ):
        with pytest.raises(FaultConfigError):
            FaultConfig(**bad)
    with pytest.raises(FaultConfigError, match="unknown fault field"):
        FaultConfig().updated({"latency": 3})
    assert FaultConfig().updated({"latency_ms": 7}).latency_ms == 7


def test_handshake_refusal_counts_from_when_it_is_set() -> None:
    now = [100.0]
    faults = Faults(FaultConfig(refuse_handshakes_seconds=2), seed=0, clock=lambda: now[0])
    assert faults.refusing_handshakes()
    now[0] = 102.5
    assert not faults.refusing_handshakes()
    faults.update({"refuse_handshakes_seconds": 1})
    assert faults.refusing_handshakes()
    now[0] = 103.6
    assert not faults.refusing_handshakes()


def test_fault_draws_are_reproducible_under_the_seed() -> None:
    def draws(seed: int) -> list[bool]:
        faults = Faults(FaultConfig(), seed=seed)
        return [faults.draw(0.5) for _ in range(64)]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)
    assert 0 < sum(draws(1)) < 64


# ----------------------------------------------------------------------------- REST faults


async def test_write_429_fraction(rsa_key: TestKey) -> None:
    async with running(FaultConfig(write_429_fraction=1.0), rsa_key) as (mock, _):
        ticker = next(iter(mock.exchange.markets))
        async with rest(mock, rsa_key.signer(), unthrottled_writes=True) as client:
            with pytest.raises(RateLimitedError) as caught:
                await client.create_rfq(ticker, contracts="3")
            assert caught.value.status == 429
            assert caught.value.message == "too many requests"
            assert (await client.list_rfqs()).items == []  # reads pass; nothing was created
        async with httpx.AsyncClient(auth=KalshiAuth(rsa_key.signer())) as http:
            response = await http.delete(mock.rest_url + "/communications/rfqs/anything")
        assert response.status_code == 429
        assert response.json() == {"error": "too many requests"}
        assert mock.exchange.rfqs == {}
        assert mock.stats.injected_429 == 2


async def test_write_429_fraction_set_through_the_control_endpoint(rsa_key: TestKey) -> None:
    async with running(FaultConfig(), rsa_key) as (mock, _):
        tickers = list(mock.exchange.markets)
        async with rest(mock, rsa_key.signer(), unthrottled_writes=True) as client:
            await client.create_rfq(tickers[0], contracts="3")
            assert (await set_faults(mock, write_429_fraction=1.0))["write_429_fraction"] == 1.0
            with pytest.raises(RateLimitedError):
                await client.create_rfq(tickers[1], contracts="3")
            await set_faults(mock, write_429_fraction=0.0)
            await client.create_rfq(tickers[1], contracts="3")
        assert len(mock.exchange.rfqs) == 2


async def test_a_partial_429_fraction_rejects_some_writes(rsa_key: TestKey) -> None:
    async with running(FaultConfig(write_429_fraction=0.5), rsa_key) as (mock, _):
        async with rest(mock, rsa_key.signer(), unthrottled_writes=True) as client:
            outcomes = []
            for ticker in list(mock.exchange.markets)[:16]:
                try:
                    await client.create_rfq(ticker, contracts="1")
                    outcomes.append(True)
                except RateLimitedError:
                    outcomes.append(False)
        assert 0 < sum(outcomes) < len(outcomes)
        assert len(mock.exchange.rfqs) == sum(outcomes)


async def test_write_5xx_fraction(rsa_key: TestKey) -> None:
    async with running(FaultConfig(write_5xx_fraction=1.0), rsa_key) as (mock, _):
        ticker = next(iter(mock.exchange.markets))
        async with rest(mock, rsa_key.signer(), unthrottled_writes=True) as client:
            with pytest.raises(ServerError) as caught:
                await client.create_rfq(ticker, contracts="3")
            assert caught.value.status == 500
            assert caught.value.code == "internal_error"
            assert (await client.get_communications_id()).startswith("comm_")
        assert mock.exchange.rfqs == {}
        assert mock.stats.injected_5xx == 1


async def test_latency_is_added_to_every_rest_response(rsa_key: TestKey) -> None:
    async with running(FaultConfig(latency_ms=15), rsa_key) as (mock, _):
        async with rest(mock, rsa_key.signer(), unthrottled_writes=True) as client:
            await client.get_communications_id()
            await client.list_markets(limit=1)
            await client.get_exchange_status()
        assert mock.stats.delayed_responses == 3
        assert mock.stats.injected_latency_ms == 45
        await set_faults(mock, latency_ms=0)  # control endpoints are never delayed
        async with rest(mock, rsa_key.signer(), unthrottled_writes=True) as client:
            await client.get_exchange_status()
        assert mock.stats.delayed_responses == 3


# ----------------------------------------------------------------------------- WebSocket faults


async def test_refused_handshakes_then_accepted(rsa_key: TestKey) -> None:
    async with running(FaultConfig(), rsa_key) as (mock, _):
        signer = rsa_key.signer()
        async with consuming_mock(mock, signer) as consumer:
            await set_faults(mock, refuse_handshakes_seconds=0.3)
            async with aiohttp.ClientSession() as session:
                headers = signer.headers("GET", mock.ws_url)
                with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                    await session.ws_connect(mock.ws_url, headers=headers)
            assert caught.value.status == 503

            await mock.drop_ws()
            marker = await consumer.next()
            assert isinstance(marker, Reconnected)
            assert marker.attempts >= 2  # refused at least once before getting through
        assert mock.stats.ws_refused >= 2
        assert not mock.faults.refusing_handshakes()


async def test_malformed_frames_are_counted_and_real_events_still_arrive(
    rsa_key: TestKey,
) -> None:
    async with running(FaultConfig(malformed_fraction=1.0), rsa_key) as (mock, user):
        async with consuming_mock(mock, rsa_key.signer()) as consumer:
            ids = [new_rfq(mock, user, i) for i in range(4)]
            got = [await consumer.next() for _ in ids]
            assert [e.msg.id for e in got if isinstance(e, RfqCreated)] == ids
            # Each event was preceded by one malformed frame, already counted.
            assert consumer.stream.stats.malformed == 4
            assert consumer.stream.stats.events == 4
        assert mock.stats.malformed_sent == 4


async def test_duplicated_events_arrive_twice(rsa_key: TestKey) -> None:
    async with running(FaultConfig(duplicate_fraction=1.0), rsa_key) as (mock, user):
        async with consuming_mock(mock, rsa_key.signer()) as consumer:
            rfq_id = new_rfq(mock, user, 0)
            first, second = await consumer.next(), await consumer.next()
        assert isinstance(first, RfqCreated)
        assert first == second
        assert first.msg.id == rfq_id
        assert mock.stats.duplicates_sent == 1


async def test_reordered_events_arrive_after_the_next_one(rsa_key: TestKey) -> None:
    async with running(FaultConfig(reorder_fraction=1.0), rsa_key) as (mock, user):
        async with consuming_mock(mock, rsa_key.signer()) as consumer:
            created = [new_rfq(mock, user, i) for i in range(4)]
            got = [await consumer.next() for _ in created]
            order = [e.msg.id for e in got if isinstance(e, RfqCreated)]
            assert sorted(order) == sorted(created)
            assert order == [created[1], created[0], created[3], created[2]]

            # A held event with nothing after it is still delivered, a little late.
            last = new_rfq(mock, user, 5)
            late = await consumer.next()
            assert isinstance(late, RfqCreated)
            assert late.msg.id == last
        assert mock.stats.reordered == 3


async def test_drop_ws_makes_the_client_reconnect(rsa_key: TestKey) -> None:
    async with (
        running(FaultConfig(), rsa_key) as (mock, user),
        consuming_mock(mock, rsa_key.signer()) as consumer,
    ):
        async with httpx.AsyncClient(headers=mock.control_headers) as http:
            response = await http.post(f"{mock.base_url}/_mock/drop_ws")
        assert response.json() == {"dropped": 1}
        marker = await consumer.next()
        assert isinstance(marker, Reconnected)
        assert consumer.stream.stats.reconnects == 1
        # The new subscription delivers events again.
        rfq_id = new_rfq(mock, user, 0)
        event = await consumer.next()
        assert isinstance(event, RfqCreated)
        assert event.msg.id == rfq_id


# ----------------------------------------------------------------------------- newer knobs

MAKER_KEY_ID = "maker-key-3f9e"
# Standard markets confirm within 0.6 s and execute 0.3 s later at this scale.
FAST = 0.02


@contextlib.asynccontextmanager
async def two_parties(
    rsa_key: TestKey, ed25519_key: TestKey, faults: FaultConfig | None = None
) -> AsyncIterator[tuple[MockExchange, User, User]]:
    """A fast mock with a requester (RSA key) and a maker (Ed25519 key) registered."""
    config = MockConfig(
        seed=5, time_scale=FAST, market_step_seconds=0, faults=faults or FaultConfig()
    )
    async with MockExchange(config) as mock:
        requester = mock.register_key(KEY_ID, rsa_key.public)
        maker = mock.register_key(MAKER_KEY_ID, ed25519_key.public)
        yield mock, requester, maker


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    await eventually(lambda: predicate() or None, what, within=5.0)


def test_newer_knobs_are_validated_like_the_others() -> None:
    for name in (
        "partial_fill_fraction",
        "tamper_accept_price_fraction",
        "tamper_accept_size_fraction",
        "tamper_accept_market_fraction",
    ):
        assert FaultConfig(**{name: 1.0}).to_dict()[name] == 1.0
        for bad in (1.5, -0.1, True, "0.5", float("nan")):
            with pytest.raises(FaultConfigError, match=name):
                FaultConfig(**{name: bad})  # type: ignore[arg-type]
    for name in ("fill_listing_delay_seconds", "delete_503_seconds", "clock_skew_seconds"):
        assert FaultConfig(**{name: 90}).to_dict()[name] == 90
        for wrong in (-1, float("inf"), None):
            with pytest.raises(FaultConfigError, match=name):
                FaultConfig(**{name: wrong})  # type: ignore[arg-type]


def test_delete_503_counts_from_when_it_is_set() -> None:
    now = [10.0]
    faults = Faults(FaultConfig(delete_503_seconds=2), seed=0, clock=lambda: now[0])
    assert faults.refusing_quote_deletes()
    now[0] = 12.5
    assert not faults.refusing_quote_deletes()
    faults.update({"delete_503_seconds": 1})
    assert faults.delete_503_remaining_seconds() == 1
    now[0] = 13.6
    assert not faults.refusing_quote_deletes()


def test_partial_fill_draws_are_reproducible_and_independent_of_frame_faults() -> None:
    def draws(seed: int, frame_draws: int) -> list[bool]:
        faults = Faults(FaultConfig(partial_fill_fraction=0.5, duplicate_fraction=0.5), seed=seed)
        for _ in range(frame_draws):
            faults.draw(0.5)
        return [faults.partial_fill() for _ in range(64)]

    assert draws(3, 0) == draws(3, 17)
    assert draws(3, 0) != draws(4, 0)
    assert 0 < sum(draws(3, 0)) < 64


async def test_quote_deletes_answer_503_while_the_knob_runs(
    rsa_key: TestKey, ed25519_key: TestKey
) -> None:
    async with two_parties(rsa_key, ed25519_key) as (mock, requester, maker):
        market = cent_market(mock)
        rfq = mock.exchange.create_rfq(
            requester,
            {"market_ticker": market.ticker, "contracts_fp": "2", "rest_remainder": False},
        )
        quote = mock.exchange.create_quote(
            maker, {"rfq_id": rfq.id, "yes_bid": "0.30", "no_bid": "0", "rest_remainder": False}
        )
        assert (await set_faults(mock, delete_503_seconds=600))["delete_503_seconds"] == 600
        paths = (
            f"/communications/quotes/{quote.id}",
            f"/communications/rfqs/{rfq.id}/quotes/{quote.id}",
        )
        async with httpx.AsyncClient(auth=KalshiAuth(ed25519_key.signer(MAKER_KEY_ID))) as http:
            for path in paths:
                response = await http.delete(mock.rest_url + path)
                assert response.status_code == 503
                body = response.json()
                assert body["code"] == "service_unavailable"
                assert isinstance(body["message"], str)
            assert quote.status == "open"  # the exchange was never asked
            # Other writes go through.
            second = await http.post(
                mock.rest_url + "/communications/quotes",
                json={"rfq_id": rfq.id, "yes_bid": "0.31", "no_bid": "0", "rest_remainder": False},
            )
            assert second.status_code == 201
            assert mock.stats.injected_503 == 2
            assert mock.state()["refusing_quote_deletes_for_seconds"] > 0
            await set_faults(mock, delete_503_seconds=0)
            response = await http.delete(
                mock.rest_url + paths[1].replace(quote.id, second.json()["id"])
            )
            assert response.status_code == 204


async def test_clock_skew_makes_good_signatures_too_old(rsa_key: TestKey) -> None:
    async with (
        running(FaultConfig(clock_skew_seconds=5), rsa_key) as (mock, user),
        rest(mock, rsa_key.signer(), unthrottled_writes=True) as client,
    ):
        # Inside the 30 s window a skew changes nothing.
        assert await client.get_communications_id() == user.communications_id
        await set_faults(mock, clock_skew_seconds=120)
        with pytest.raises(AuthError) as caught:
            await client.get_communications_id()
        assert caught.value.status == 401
        assert "KALSHI-ACCESS-TIMESTAMP is too old" in caught.value.message
        async with aiohttp.ClientSession() as session:
            headers = rsa_key.signer().headers("GET", mock.ws_url)
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(mock.ws_url, headers=headers)
            assert refused.value.status == 401
            response = await session.get(mock.ws_url.replace("ws://", "http://"), headers=headers)
            assert "KALSHI-ACCESS-TIMESTAMP is too old" in (await response.json())["message"]
        await set_faults(mock, clock_skew_seconds=0)
        assert await client.get_communications_id() == user.communications_id


async def confirm_after_acceptance(
    mock: MockExchange,
    requester: User,
    maker_client: KalshiRestClient,
    *,
    contracts: str = "10",
    side: str = "yes",
    rest_remainder: bool = False,
) -> tuple[str, str]:
    """An RFQ by ``requester``, the maker's quote over REST, accepted and confirmed."""
    market = cent_market(mock)
    rfq = mock.exchange.create_rfq(
        requester,
        {"market_ticker": market.ticker, "contracts_fp": contracts, "rest_remainder": False},
    )
    quote_id = await maker_client.create_quote(
        rfq.id, "0.40", "0.55", post_only=False, rest_remainder=rest_remainder
    )
    mock.exchange.accept_quote(requester, quote_id, {"accepted_side": side})
    await maker_client.confirm_quote(quote_id, rfq_id=rfq.id)
    return rfq.id, quote_id


async def test_partial_fills_reach_fills_positions_and_balances(
    rsa_key: TestKey, ed25519_key: TestKey
) -> None:
    faults = FaultConfig(partial_fill_fraction=1.0)
    async with (
        two_parties(rsa_key, ed25519_key, faults) as (mock, requester, _),
        rest(mock, ed25519_key.signer(MAKER_KEY_ID), unthrottled_writes=True) as maker_client,
        rest(mock, rsa_key.signer(), unthrottled_writes=True) as requester_client,
        consuming_mock(mock, ed25519_key.signer(MAKER_KEY_ID)) as maker_ws,
    ):
        ticker = cent_market(mock).ticker
        before = await maker_client.get_orderbook(ticker)
        rfq_id, quote_id = await confirm_after_acceptance(
            mock, requester, maker_client, rest_remainder=True
        )
        executed = await maker_ws.next_of(QuoteExecuted)
        assert executed.msg.quote_id == quote_id
        quote = await maker_client.get_quote(quote_id, rfq_id=rfq_id)
        assert (quote.status, quote.creator_order_id) == ("executed", executed.msg.order_id)
        (fill,) = [f async for f in maker_client.iter_fills(order_id=executed.msg.order_id)]
        assert fill.count_fp == Decimal(5)
        (requester_fill,) = [f async for f in requester_client.iter_fills()]
        assert requester_fill.count_fp == Decimal(5)
        (position,) = (await maker_client.list_positions()).market_positions
        assert position.position_fp == Decimal(5)
        start = mock.exchange.starting_balance
        # The maker fee on the 5 that filled: 0.0175 x 5 x 0.40 x 0.60 = 0.021, up to the cent.
        assert fill.fee_cost == Decimal("0.03")
        balance = (await maker_client.get_balance()).balance_dollars
        assert balance == start - Decimal("2.00") - Decimal("0.03")
        # The quote rested its remainder: the same order, 5 of 10 still on the book.
        order = mock.exchange.orders[executed.msg.order_id]
        assert (order.status, order.remaining) == ("resting", Decimal(5))
        assert mock.state()["resting_orders"] == 1
        after = await maker_client.get_orderbook(ticker)

        def at_40(book: Orderbook) -> Decimal:
            return sum((lv.count for lv in book.yes if lv.price == Decimal("0.40")), Decimal(0))

        assert at_40(after) - at_40(before) == Decimal(5)  # it rests on the book


async def test_fills_are_listed_late_while_positions_move_at_once(
    rsa_key: TestKey, ed25519_key: TestKey
) -> None:
    faults = FaultConfig(fill_listing_delay_seconds=3600)
    async with (
        two_parties(rsa_key, ed25519_key, faults) as (mock, requester, _),
        rest(mock, ed25519_key.signer(MAKER_KEY_ID), unthrottled_writes=True) as maker_client,
    ):
        await confirm_after_acceptance(mock, requester, maker_client, contracts="4")
        await wait_for(lambda: len(mock.exchange.fills) == 2, "the execution")
        assert [f async for f in maker_client.iter_fills()] == []
        (position,) = (await maker_client.list_positions()).market_positions
        assert position.position_fp == Decimal(4)

        await set_faults(mock, fill_listing_delay_seconds=0.2)
        await confirm_after_acceptance(mock, requester, maker_client, contracts="3", side="no")
        await wait_for(lambda: len(mock.exchange.fills) == 4, "the second execution")
        listed: list[Decimal] = []

        async def poll() -> bool:
            listed[:] = [f.count_fp async for f in maker_client.iter_fills()]
            return bool(listed)

        async with asyncio.timeout(5):
            while not await poll():  # noqa: ASYNC110 - polling the REST API is the point
                await asyncio.sleep(0.02)
        assert listed == [Decimal(3)]  # the first fill is still an hour away


async def accepted_frames(
    mock: MockExchange, requester: User, maker_signer: Signer, requester_signer: Signer
) -> tuple[QuoteAccepted, QuoteAccepted, str]:
    """The maker's and the requester's ``quote_accepted`` for one fresh acceptance."""
    async with (
        consuming_mock(mock, maker_signer) as maker_ws,
        consuming_mock(mock, requester_signer) as requester_ws,
        rest(mock, maker_signer, unthrottled_writes=True) as maker_client,
    ):
        market = cent_market(mock)
        rfq = mock.exchange.create_rfq(
            requester,
            {"market_ticker": market.ticker, "contracts_fp": "4", "rest_remainder": False},
        )
        quote_id = await maker_client.create_quote(rfq.id, "0.40", "0.55", post_only=False)
        mock.exchange.accept_quote(requester, quote_id, {"accepted_side": "yes"})
        maker_frame = await maker_ws.next_of(QuoteAccepted)
        requester_frame = await requester_ws.next_of(QuoteAccepted)
        return maker_frame, requester_frame, quote_id


@pytest.mark.parametrize("knob", ["price", "size", "market"])
async def test_tampered_acceptances_reach_only_the_maker(
    rsa_key: TestKey, ed25519_key: TestKey, knob: str
) -> None:
    faults = FaultConfig(**{f"tamper_accept_{knob}_fraction": 1.0})
    async with two_parties(rsa_key, ed25519_key, faults) as (mock, requester, _):
        maker_signer = ed25519_key.signer(MAKER_KEY_ID)
        forged, true, quote_id = await accepted_frames(
            mock, requester, maker_signer, rsa_key.signer()
        )
        real = cent_market(mock).ticker
        assert (true.msg.yes_bid_dollars, true.msg.contracts_accepted_fp) == (
            Decimal("0.40"),
            Decimal(4),
        )
        assert true.msg.market_ticker == real
        changed = {
            "price": forged.msg.yes_bid_dollars != Decimal("0.40"),
            "size": forged.msg.contracts_accepted_fp != Decimal(4),
            "market": forged.msg.market_ticker != real,
        }
        assert changed == {name: name == knob for name in changed}
        if knob == "price":
            assert forged.msg.yes_bid_dollars == Decimal("0.01")
        if knob == "size":
            assert forged.msg.contracts_accepted_fp == Decimal(36)
            assert forged.msg.yes_contracts_offered_fp == Decimal(36)
            assert forged.msg.no_contracts_offered_fp == Decimal(4)
        if knob == "market":
            assert forged.msg.market_ticker in mock.exchange.markets
        # The exchange's own record is untouched.
        quote = mock.exchange.quotes[quote_id]
        assert (quote.yes_bid, quote.contracts_accepted) == (Decimal("0.40"), Decimal(4))
        assert quote.rfq.market.ticker == real
        stats = mock.stats.to_dict()
        assert {n: stats[f"tampered_{n}"] for n in changed} == {
            name: int(name == knob) for name in changed
        }
