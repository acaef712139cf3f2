"""Each fault knob of the mock exchange, observed through the project's own clients."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest

from mmbot.kalshi.auth import KalshiAuth, Signer
from mmbot.kalshi.errors import RateLimitedError, ServerError
from mmbot.kalshi.models import RfqCreated
from mmbot.kalshi.rest import KalshiRestClient
from mmbot.kalshi.ws import Reconnected
from mmbot.mock.exchange import User
from mmbot.mock.faults import FaultConfig, FaultConfigError, Faults
from mmbot.mock.server import MockConfig, MockExchange
from tests.conftest import KEY_ID, TestKey
from tests.streams import consuming_mock

# ----------------------------------------------------------------------------- helpers


def rest(mock: MockExchange, signer: Signer) -> KalshiRestClient:
    """A client that never retries, so every injected failure surfaces.

    Its write bucket is huge: after a 429 the client empties its own bucket, and the
    default refill would make each later write wait a tenth of a second.
    """
    return KalshiRestClient(
        mock.rest_url,
        signer,
        retry_deadline_seconds=0.0,
        write_tokens_per_second=1_000_000,
        write_bucket_capacity=1_000_000,
    )


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
        async with rest(mock, rsa_key.signer()) as client:
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
        async with rest(mock, rsa_key.signer()) as client:
            await client.create_rfq(tickers[0], contracts="3")
            assert (await set_faults(mock, write_429_fraction=1.0))["write_429_fraction"] == 1.0
            with pytest.raises(RateLimitedError):
                await client.create_rfq(tickers[1], contracts="3")
            await set_faults(mock, write_429_fraction=0.0)
            await client.create_rfq(tickers[1], contracts="3")
        assert len(mock.exchange.rfqs) == 2


async def test_a_partial_429_fraction_rejects_some_writes(rsa_key: TestKey) -> None:
    async with running(FaultConfig(write_429_fraction=0.5), rsa_key) as (mock, _):
        async with rest(mock, rsa_key.signer()) as client:
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
        async with rest(mock, rsa_key.signer()) as client:
            with pytest.raises(ServerError) as caught:
                await client.create_rfq(ticker, contracts="3")
            assert caught.value.status == 500
            assert caught.value.code == "internal_error"
            assert (await client.get_communications_id()).startswith("comm_")
        assert mock.exchange.rfqs == {}
        assert mock.stats.injected_5xx == 1


async def test_latency_is_added_to_every_rest_response(rsa_key: TestKey) -> None:
    async with running(FaultConfig(latency_ms=15), rsa_key) as (mock, _):
        async with rest(mock, rsa_key.signer()) as client:
            await client.get_communications_id()
            await client.list_markets(limit=1)
            await client.get_exchange_status()
        assert mock.stats.delayed_responses == 3
        assert mock.stats.injected_latency_ms == 45
        await set_faults(mock, latency_ms=0)  # control endpoints are never delayed
        async with rest(mock, rsa_key.signer()) as client:
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
