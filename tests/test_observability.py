"""The metrics registry, the /metrics, /healthz and /readyz server, and their feeds."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mmbot.config import ConfigError, MetricsSettings, Settings
from mmbot.engine import Engine
from mmbot.journal import Journal, Kind
from mmbot.kalshi.errors import AuthError
from mmbot.kalshi.ratelimit import TokenBucket
from mmbot.kalshi.rest import KalshiRestClient, Page
from mmbot.kalshi.ws import WsStats
from mmbot.marketdata import MarketData
from mmbot.mock.server import MockExchange
from mmbot.observability import (
    FAMILIES,
    MAX_LABEL_VALUES,
    PROCESS_FAMILIES,
    Health,
    Metrics,
    MetricsServer,
    State,
)
from mmbot.quoting import QuoteManager
from mmbot.risk import RiskBook, RiskLimits
from mmbot.strategy import StrategyRouter
from tests.support.keys import KEY_ID, TestKey
from tests.support.polling import eventually


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by name and labels."""
    body, _ = metrics.render()
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float:
    """One sample's value (0 if absent)."""
    return samples(metrics).get((name, frozenset(labels.items())), 0.0)


@dataclass
class FakeDaemon:
    """A Monitored source with state and health set by the test."""

    current: State = field(default_factory=State)
    ready: Health = field(default_factory=lambda: Health(ready=True, websocket_subscribed=True))
    fail: bool = False

    def state(self) -> State:
        return self.current

    def health(self) -> Health:
        if self.fail:
            raise RuntimeError("boom")
        return self.ready


# ----------------------------------------------------------------------------- the registry


def test_a_scrape_exposes_exactly_the_declared_families() -> None:
    metrics = Metrics()
    for kind in Kind:
        metrics.on_journal_record(kind.value, "why")
    metrics.on_rest_response("create_quote", "201", 0.001)
    metrics.rfq_to_quote(0.001)
    metrics.accept_to_confirm(0.01)
    metrics.bind(FakeDaemon())
    body, _ = metrics.render()
    exposed: dict[str, str] = {}
    for family in text_string_to_metric_families(body.decode()):
        name = family.name + "_total" if family.type == "counter" else family.name
        exposed[name] = family.type
    # The process collector reads /proc, which only Linux has.
    process = PROCESS_FAMILIES if sys.platform == "linux" else {}
    assert exposed == FAMILIES | process


def test_journal_rows_are_counted_by_kind_and_reason() -> None:
    metrics = Metrics()
    rows = [
        ("rfq_seen", None),
        ("rfq_seen", None),
        ("quote_created", None),
        ("quote_deleted", "ttl"),
        ("quote_deleted", "ttl"),
        ("quote_deleted", "shutdown"),
        ("accept_received", None),
        ("confirm_sent", None),
        ("confirm_declined", "max_position_per_market"),
        ("execution", None),
        ("position_changed", None),  # not a counter of its own
        ("rfq_skipped", "stale_market_data"),
        ("reconciled", "reconnect"),
    ]
    for kind, reason in rows:
        metrics.on_journal_record(kind, reason)
    assert value(metrics, "mmbot_rfqs_received_total") == 2
    assert value(metrics, "mmbot_quotes_created_total") == 1
    assert value(metrics, "mmbot_quotes_deleted_total", reason="ttl") == 2
    assert value(metrics, "mmbot_quotes_deleted_total", reason="shutdown") == 1
    assert value(metrics, "mmbot_quotes_accepted_total") == 1
    assert value(metrics, "mmbot_quotes_confirmed_total") == 1
    assert value(metrics, "mmbot_quotes_declined_total", reason="max_position_per_market") == 1
    assert value(metrics, "mmbot_quotes_executed_total") == 1
    assert value(metrics, "mmbot_rfqs_skipped_total", reason="stale_market_data") == 1
    assert value(metrics, "mmbot_reconciliations_total", trigger="reconnect") == 1


def test_label_values_are_bounded() -> None:
    metrics = Metrics()
    for n in range(MAX_LABEL_VALUES * 2):
        metrics.on_journal_record("quote_deleted", f"reason-{n}")
        metrics.on_rest_response(f"endpoint-{n}", "200", 0.0)
    found = samples(metrics)
    reasons = {
        dict(labels)["reason"] for name, labels in found if name.startswith("mmbot_quotes_del")
    }
    assert len(reasons) == MAX_LABEL_VALUES + 1
    assert (
        found[("mmbot_quotes_deleted_total", frozenset({("reason", "other")}))] == MAX_LABEL_VALUES
    )
    endpoints = {
        dict(labels)["endpoint"] for name, labels in found if name == "mmbot_rest_requests_total"
    }
    assert len(endpoints) == MAX_LABEL_VALUES + 1
    # A missing reason is a value of its own, not an empty label.
    metrics.on_journal_record("confirm_declined", None)
    assert value(metrics, "mmbot_quotes_declined_total", reason="none") == 1


def test_429_answers_count_as_rate_limited() -> None:
    metrics = Metrics()
    metrics.on_rest_response("create_quote", "429", 0.002)
    metrics.on_rest_response("create_quote", "429", 0.002)
    metrics.on_rest_response("create_quote", "201", 0.002)
    metrics.on_rest_response("get_market", "error", 0.5)
    assert value(metrics, "mmbot_rate_limited_total") == 2
    assert value(metrics, "mmbot_rest_requests_total", endpoint="create_quote", status="429") == 2
    assert value(metrics, "mmbot_rest_requests_total", endpoint="get_market", status="error") == 1
    assert value(metrics, "mmbot_rest_request_duration_seconds_count", endpoint="create_quote") == 3


def test_latencies_land_in_their_buckets() -> None:
    metrics = Metrics()
    metrics.rfq_to_quote(0.0009)
    metrics.rfq_to_quote(0.004)
    metrics.accept_to_confirm(0.015)
    assert value(metrics, "mmbot_rfq_to_quote_seconds_bucket", le="0.001") == 1
    assert value(metrics, "mmbot_rfq_to_quote_seconds_bucket", le="0.005") == 2
    assert value(metrics, "mmbot_rfq_to_quote_seconds_count") == 2
    assert value(metrics, "mmbot_confirm_latency_seconds_bucket", le="0.01") == 0
    assert value(metrics, "mmbot_confirm_latency_seconds_bucket", le="0.02") == 1


def test_state_is_read_from_the_daemon_at_scrape_time() -> None:
    metrics = Metrics()
    daemon = FakeDaemon(
        State(
            open_quotes=3,
            exposure=Decimal("123.45"),
            exposure_limit=Decimal("500"),
            realized_pnl=Decimal("-2.5"),
            ws_invalid=4,
            ws_reconnects=2,
            journal_healthy=False,
            health=Health(ready=False, reasons=("x",), kill_switch=True),
        )
    )
    # Unbound, the families exist with neutral values.
    assert value(metrics, "mmbot_open_quotes") == 0
    metrics.bind(daemon)
    assert value(metrics, "mmbot_open_quotes") == 3
    assert value(metrics, "mmbot_exposure_dollars") == 123.45
    assert value(metrics, "mmbot_exposure_limit_dollars") == 500
    assert value(metrics, "mmbot_realized_pnl_dollars") == -2.5
    assert value(metrics, "mmbot_ws_frames_invalid_total") == 4
    assert value(metrics, "mmbot_ws_reconnects_total") == 2
    assert value(metrics, "mmbot_journal_healthy") == 0
    assert value(metrics, "mmbot_ready") == 0
    assert value(metrics, "mmbot_kill_switch") == 1
    daemon.current = State(open_quotes=7)
    assert value(metrics, "mmbot_open_quotes") == 7


def test_realized_pnl_today_is_reported_apart_from_the_daily_pnl() -> None:
    metrics = Metrics()
    metrics.bind(
        FakeDaemon(
            State(
                realized_pnl=Decimal("1.25"),
                realized_pnl_today=Decimal("-12.34"),
                daily_pnl=Decimal("-20.5"),
                daily_loss_limit=Decimal("100"),
            )
        )
    )
    assert value(metrics, "mmbot_realized_pnl_today_dollars") == -12.34
    assert value(metrics, "mmbot_realized_pnl_dollars") == 1.25
    assert value(metrics, "mmbot_daily_pnl_dollars") == -20.5
    assert value(metrics, "mmbot_daily_loss_limit_dollars") == 100


# ----------------------------------------------------------------------------- the server


@pytest.fixture
async def served() -> AsyncIterator[tuple[Metrics, MetricsServer, httpx.AsyncClient]]:
    metrics = Metrics()
    server = MetricsServer(metrics, MetricsSettings(port=0))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
            yield metrics, server, http
    finally:
        await server.stop()


async def test_endpoints_answer_as_documented(
    served: tuple[Metrics, MetricsServer, httpx.AsyncClient],
) -> None:
    metrics, server, http = served
    assert server.port not in (None, 0)
    healthz = await http.get("/healthz")
    assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})

    starting = await http.get("/readyz")
    assert starting.status_code == 503
    assert starting.json()["reasons"] == ["starting"]

    daemon = FakeDaemon()
    metrics.bind(daemon)
    ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True

    daemon.ready = Health(
        ready=False, reasons=("websocket not subscribed",), market_data_age_seconds=1.23456
    )
    down = await http.get("/readyz")
    assert down.status_code == 503
    assert down.headers["content-type"] == "application/json"
    assert down.json() == {
        "ready": False,
        "reasons": ["websocket not subscribed"],
        "websocket_subscribed": False,
        "market_data_age_seconds": 1.235,
        "kill_switch": False,
    }

    scrape = await http.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "mmbot_rfqs_received_total 0.0" in scrape.text
    openmetrics = await http.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")
    assert (await http.get("/anything-else")).status_code == 404


async def test_a_failing_readiness_check_is_a_503_not_a_crash(
    served: tuple[Metrics, MetricsServer, httpx.AsyncClient],
) -> None:
    metrics, _, http = served
    metrics.bind(FakeDaemon(fail=True))
    response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reasons"] == ["readiness check failed"]
    assert (await http.get("/healthz")).status_code == 200


async def test_a_taken_port_is_a_config_error_naming_metrics_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = MetricsServer(Metrics(), MetricsSettings(port=port))
        with pytest.raises(ConfigError) as err:
            await server.start()
    assert err.value.problems[0].key == "metrics.port"
    assert f"127.0.0.1:{port}" in str(err.value)


# ----------------------------------------------------------------------------- the feeds


async def test_a_failing_journal_listener_loses_no_row(tmp_path: Path) -> None:
    seen: list[tuple[str, str | None]] = []

    def broken(kind: str, reason: str | None) -> None:
        raise RuntimeError("listener bug")

    journal = Journal(tmp_path / "j.sqlite")
    journal.add_listener(broken)
    journal.add_listener(lambda kind, reason: seen.append((kind, reason)))
    journal.start()
    journal.record_quote_deleted(rfq_id="r", quote_id="q", market="M", reason="ttl")
    assert await journal.flush(5)
    await journal.aclose()
    assert ("quote_deleted", "ttl") in seen
    assert journal.summary().quotes_deleted_by_reason == {"ttl": 1}


async def test_the_rest_client_reports_every_attempt(rsa_key: TestKey) -> None:
    calls: list[tuple[str, str]] = []
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as server:
        server.scripting.script(
            "POST",
            "/communications/quotes",
            [(429, {"error": "too many requests"}), (201, {"id": "q-1"})],
        )
        async with KalshiRestClient(
            server.rest_url,
            rsa_key.signer(),
            on_response=lambda endpoint, status, seconds: calls.append((endpoint, status)),
        ) as client:
            assert await client.create_quote("rfq-1", "0.40", "0.50") == "q-1"
    assert calls == [("create_quote", "429"), ("create_quote", "201")]


async def test_a_failing_response_observer_costs_no_request(rsa_key: TestKey) -> None:
    def broken(endpoint: str, status: str, seconds: float) -> None:
        raise RuntimeError("observer bug")

    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as server:
        server.scripting.script("POST", "/communications/quotes", [(201, {"id": "q-1"})])
        async with KalshiRestClient(server.rest_url, rsa_key.signer(), on_response=broken) as c:
            assert await c.create_quote("rfq-1", "0.40", "0.50") == "q-1"


class _Markets:
    """Stands in for the REST client's market listing: answers, or fails, on demand."""

    def __init__(self) -> None:
        self.fail = False
        self.calls = 0

    async def list_markets(self, **_: Any) -> Page[Any]:
        from mmbot.kalshi.errors import ServerError

        self.calls += 1
        if self.fail:
            raise ServerError("down", status=503)
        return Page([], None)


async def test_idle_market_data_still_probes_the_exchange() -> None:
    rest = _Markets()
    data = MarketData(rest, ttl_seconds=1, refresh_seconds=0.01)  # type: ignore[arg-type]
    assert data.last_success_age() is None
    task = asyncio.create_task(data.run())
    try:
        await eventually(lambda: rest.calls >= 2, "two probes")
        age = data.last_success_age()
        assert age is not None
        assert age < 1
        rest.fail = True
        calls = rest.calls
        await eventually(lambda: rest.calls >= calls + 3, "failing probes")
        # Failed probes do not refresh the age: readiness sees the source failing.
        assert (data.last_success_age() or 0) > age
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@dataclass
class _Stream:
    subscribed: bool = True
    stats: WsStats = field(default_factory=WsStats)
    last_refusal: str | None = None


def test_engine_health_names_each_reason(tmp_path: Path) -> None:
    now = [100.0]
    data = MarketData(
        None,  # type: ignore[arg-type]
        ttl_seconds=5,
        refresh_seconds=1,
        clock=lambda: now[0],
    )
    stream = _Stream(subscribed=False)
    rest = SimpleNamespace(
        read_bucket=TokenBucket(10, 10), write_bucket=TokenBucket(10, 10), auth_failure=None
    )
    journal = Journal(tmp_path / "j.sqlite")
    journal.start()
    risk = RiskBook(
        RiskLimits(
            max_contracts_per_rfq=Decimal(10),
            max_position_per_market=Decimal(10),
            max_exposure_dollars=Decimal(10),
            max_open_quotes=1,
            max_daily_loss_dollars=Decimal(10),
        )
    )
    router = StrategyRouter([])
    engine = Engine(
        Settings(),
        rest=rest,  # type: ignore[arg-type]
        stream=stream,  # type: ignore[arg-type]
        journal=journal,
        risk=risk,
        router=router,
        market_data=data,
        quotes=QuoteManager(
            rest,  # type: ignore[arg-type]
            data,
            router,
            risk,
            journal,
            Settings().quotes,
        ),
    )
    health = engine.health()
    assert not health.ready
    assert health.reasons == (
        "starting: loading markets and reconciling with the exchange",
        "websocket not subscribed",
        "no market data yet",
    )
    engine._started = True
    stream.subscribed = True
    data._note_ok()
    assert engine.health() == Health(
        ready=True, websocket_subscribed=True, market_data_age_seconds=0.0
    )
    # A refused handshake, a clock the exchange refuses, a journal that cannot be written:
    # each says what to look at.
    stream.subscribed = False
    stream.last_refusal = "handshake refused: HTTP 401 (timestamp too old)"
    rest.auth_failure = AuthError("KALSHI-ACCESS-TIMESTAMP is too old", status=401)
    refused = engine.health().reasons
    assert refused[0] == "websocket not subscribed: handshake refused: HTTP 401 (timestamp too old)"
    assert "KALSHI-ACCESS-TIMESTAMP is too old (HTTP 401)" in refused[1]
    assert "check NTP" in refused[1]
    stream.subscribed, stream.last_refusal, rest.auth_failure = True, None, None
    now[0] += 6.5  # past ttl (5) + refresh (1)
    stale = engine.health()
    assert not stale.ready
    assert stale.reasons == ("market data stale: last fetched 6.5 s ago (limit 6.0 s)",)
    engine.risk.kill_switch = True
    engine._stopping = True
    stopping = engine.health()
    assert stopping.reasons[0] == "shutting down"
    assert stopping.kill_switch
    state = engine.state()
    assert state.health == stopping
    # The limits are reported from the settings, the source an operator edits.
    assert state.exposure_limit == Settings().risk.max_exposure_dollars
    # Today's realised P&L is the risk book's, which start-up rebuilds from the journal:
    # earlier runs' losses today count, while this run's own realised P&L is still zero.
    assert state.realized_pnl_today == 0
    engine.risk.set_realized_today(Decimal("-7.5"))
    state = engine.state()
    assert state.realized_pnl_today == Decimal("-7.5")
    assert state.realized_pnl == 0
    assert state.daily_pnl == Decimal("-7.5")
    metrics = Metrics()
    metrics.bind(engine)
    assert value(metrics, "mmbot_realized_pnl_today_dollars") == -7.5
    journal.close()
    assert any(r.startswith("journal unhealthy, no new risk") for r in engine.health().reasons)


def test_positions_are_exported_per_market_the_largest_only() -> None:
    # One series per market would grow without bound over months; the markets that matter
    # are the ones holding the most, and a flat market is no position at all.
    positions = {f"M-{i:03d}": Decimal(i) * (-1 if i % 2 else 1) for i in range(100)}
    metrics = Metrics()
    metrics.bind(FakeDaemon(current=State(positions=positions)))
    body, _ = metrics.render()
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    shown = {s.labels["market"]: s.value for s in families["mmbot_position_contracts"].samples}
    assert len(shown) == MAX_LABEL_VALUES
    assert set(shown) == {f"M-{i:03d}" for i in range(100 - MAX_LABEL_VALUES, 100)}
    assert shown["M-099"] == -99.0
    assert shown["M-098"] == 98.0
    (held,) = families["mmbot_positions_open"].samples
    assert held.value == 99  # M-000 is flat
