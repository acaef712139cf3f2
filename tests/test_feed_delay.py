"""Feed timing: the exchange-to-daemon delay read from each envelope's ``sending_ts_ms``.

The stream hands the raw delay (our wall clock at receipt minus the exchange's stamp) to
``on_feed_delay``; :meth:`Metrics.ws_feed_delay` observes it into
``mmbot_ws_feed_delay_seconds``, a negative delay (clock skew) as 0 and counted in
``mmbot_ws_feed_clock_skew_total``. Scripted mocks send frames exactly as given, so the
stamps are the test's; the full mock stamps every frame itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mmbot.config import Settings
from mmbot.daemon import build_engine
from mmbot.kalshi.models import RfqCreated
from mmbot.kalshi.rest import KalshiRestClient
from mmbot.kalshi.ws import CommunicationsStream
from mmbot.mock.server import MockConfig, MockExchange
from mmbot.observability import Metrics
from tests.support.keys import KEY_ID, TestKey
from tests.support.payloads import RFQ_CREATED
from tests.support.streams import consuming

# The fake wall clock: a whole second, so that stamps a whole number of ms away give
# delays exact in binary floating point.
NOW = 1_700_000_000.0
NOW_MS = 1_700_000_000_000


def rfq(rfq_id: str, **envelope: Any) -> dict[str, Any]:
    return {**RFQ_CREATED, **envelope, "msg": {**RFQ_CREATED["msg"], "id": rfq_id}}


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def stream_for(url: str, signer: Any, **options: Any) -> CommunicationsStream:
    return CommunicationsStream(
        url,
        signer,
        reconnect_min_seconds=0.01,
        reconnect_max_seconds=0.05,
        open_timeout_seconds=2.0,
        subscribe_timeout_seconds=2.0,
        **options,
    )


async def subscribed(stream: CommunicationsStream) -> None:
    async with asyncio.timeout(3):
        await stream.wait_subscribed()


# ----------------------------------------------------------------------------- metrics


def test_a_delay_is_observed_in_its_bucket() -> None:
    metrics = Metrics()
    metrics.ws_feed_delay(0.0004)
    metrics.ws_feed_delay(0.03)
    assert value(metrics, "mmbot_ws_feed_delay_seconds_bucket", le="0.0005") == 1
    assert value(metrics, "mmbot_ws_feed_delay_seconds_bucket", le="0.05") == 2
    assert value(metrics, "mmbot_ws_feed_delay_seconds_count") == 2
    assert value(metrics, "mmbot_ws_feed_clock_skew_total") == 0


def test_a_negative_delay_is_clamped_to_zero_and_counted_as_skew() -> None:
    metrics = Metrics()
    metrics.ws_feed_delay(-2.0)
    assert value(metrics, "mmbot_ws_feed_clock_skew_total") == 1
    assert value(metrics, "mmbot_ws_feed_delay_seconds_count") == 1
    assert value(metrics, "mmbot_ws_feed_delay_seconds_sum") == 0
    assert value(metrics, "mmbot_ws_feed_delay_seconds_bucket", le="0.0005") == 1


# ----------------------------------------------------------------------------- the client


async def test_the_client_observes_the_delay_from_the_stamp(rsa_key: TestKey) -> None:
    delays: list[float] = []
    metrics = Metrics()

    def observe(seconds: float) -> None:
        delays.append(seconds)
        metrics.ws_feed_delay(seconds)

    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, rsa_key.signer(), wall_clock=lambda: NOW)
        async with consuming(stream) as consumer:
            await subscribed(stream)
            # Set after construction, as the daemon does; the subscribed reply (stamped on
            # the mock's real clock) is not seen.
            stream.on_feed_delay = observe
            srv.scripting.send(rfq("a", sending_ts_ms=NOW_MS - 2500))
            srv.scripting.send(rfq("b", sending_ts_ms=NOW_MS - 3))
            ids = [(await consumer.next_of(RfqCreated)).msg.id for _ in range(2)]

    assert ids == ["a", "b"]
    assert delays == [2.5, pytest.approx(0.003, abs=1e-6)]
    assert value(metrics, "mmbot_ws_feed_delay_seconds_count") == 2
    assert value(metrics, "mmbot_ws_feed_delay_seconds_bucket", le="0.005") == 1
    assert value(metrics, "mmbot_ws_feed_delay_seconds_bucket", le="2.5") == 2
    assert value(metrics, "mmbot_ws_feed_clock_skew_total") == 0


async def test_a_stamp_from_the_future_is_clamped_and_counted(rsa_key: TestKey) -> None:
    metrics = Metrics()
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, rsa_key.signer(), wall_clock=lambda: NOW)
        async with consuming(stream) as consumer:
            await subscribed(stream)
            stream.on_feed_delay = metrics.ws_feed_delay
            # The exchange's clock a minute ahead of ours.
            srv.scripting.send(rfq("ahead", sending_ts_ms=NOW_MS + 60_000))
            event = await consumer.next_of(RfqCreated)

    assert event.msg.id == "ahead"
    assert stream.stats.events == 1
    assert value(metrics, "mmbot_ws_feed_clock_skew_total") == 1
    assert value(metrics, "mmbot_ws_feed_delay_seconds_count") == 1
    assert value(metrics, "mmbot_ws_feed_delay_seconds_sum") == 0


@pytest.mark.parametrize(
    "envelope",
    [
        {},
        {"sending_ts_ms": None},
        {"sending_ts_ms": "1700000000000"},
        {"sending_ts_ms": "soon"},
        {"sending_ts_ms": 1_699_999_999_999.5},
        {"sending_ts_ms": True},
        {"sending_ts_ms": [NOW_MS]},
        {"sending_ts_ms": {"ms": NOW_MS}},
    ],
    ids=["missing", "null", "text", "garbage", "float", "bool", "list", "object"],
)
async def test_a_missing_or_malformed_stamp_is_not_observed_and_the_event_goes_through(
    rsa_key: TestKey, envelope: dict[str, Any]
) -> None:
    delays: list[float] = []
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, rsa_key.signer(), wall_clock=lambda: NOW)
        async with consuming(stream) as consumer:
            await subscribed(stream)
            stream.on_feed_delay = delays.append
            srv.scripting.send(rfq("unstamped", **envelope))
            srv.scripting.send(rfq("stamped", sending_ts_ms=NOW_MS - 10))
            first = await consumer.next_of(RfqCreated)
            second = await consumer.next_of(RfqCreated)

    assert (first.msg.id, second.msg.id) == ("unstamped", "stamped")
    assert stream.stats.malformed == 0
    assert stream.stats.events == 2
    assert delays == [pytest.approx(0.01, abs=1e-6)]  # the stamped frame only


async def test_a_failing_observer_does_not_end_the_stream(rsa_key: TestKey) -> None:
    def explode(_: float) -> None:
        raise RuntimeError("observer bug")

    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        stream = stream_for(srv.ws_url, rsa_key.signer(), wall_clock=lambda: NOW)
        async with consuming(stream) as consumer:
            await subscribed(stream)
            stream.on_feed_delay = explode
            srv.scripting.send(rfq("one", sending_ts_ms=NOW_MS))
            srv.scripting.send(rfq("two", sending_ts_ms=NOW_MS))
            ids = [(await consumer.next_of(RfqCreated)).msg.id for _ in range(2)]
    assert ids == ["one", "two"]


def test_the_daemon_wires_the_stream_to_the_metrics() -> None:
    metrics = Metrics()
    stream = CommunicationsStream("wss://exchange.invalid/trade-api/ws/v2", None)
    assert stream.on_feed_delay is None
    build_engine(
        Settings(),
        rest=KalshiRestClient("https://exchange.invalid"),
        stream=stream,
        journal=None,  # type: ignore[arg-type]
        router=None,  # type: ignore[arg-type]
        metrics=metrics,
    )
    assert stream.on_feed_delay == metrics.ws_feed_delay


# ----------------------------------------------------------------------------- end to end


async def test_the_mock_stamps_frames_and_loopback_delays_are_sane(rsa_key: TestKey) -> None:
    """Real sockets, real clocks: every frame observed, each delay >= 0 and under 1 s."""
    metrics = Metrics()
    delays: list[float] = []

    def observe(seconds: float) -> None:
        delays.append(seconds)
        metrics.ws_feed_delay(seconds)

    config = MockConfig(seed=3, markets=4, market_step_seconds=0)
    async with MockExchange(config) as mock:
        mock.register_key(KEY_ID, rsa_key.public)
        stream = stream_for(mock.ws_url, rsa_key.signer(), on_feed_delay=observe)
        async with consuming(stream) as consumer:
            await subscribed(stream)
            user = next(u for u in mock.exchange.users.values() if u.key_id == KEY_ID)
            for market in list(mock.exchange.markets.values())[:3]:
                mock.exchange.create_rfq(
                    user,
                    {"market_ticker": market.ticker, "contracts_fp": "1", "rest_remainder": False},
                )
            for _ in range(3):
                await consumer.next_of(RfqCreated)
        frames = stream.stats.frames

    # The subscribed reply and the three RFQs, at least: every frame the mock sends is
    # stamped.
    assert frames >= 4
    assert len(delays) == frames
    assert all(0 <= d < 1.0 for d in delays), delays
    assert value(metrics, "mmbot_ws_feed_delay_seconds_count") == frames
    assert value(metrics, "mmbot_ws_feed_delay_seconds_bucket", le="1.0") == frames
    assert value(metrics, "mmbot_ws_feed_clock_skew_total") == 0
