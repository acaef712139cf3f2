"""Metrics and health of a real dry-run, scraped over HTTP and checked against the record.

Each test runs ``mmbot run --dry-run`` in-process (the embedded mock exchange on loopback,
the metrics server on a port the OS picks) and talks to both over real sockets. The
figures a scrape reports are compared with what the journal wrote and with what the mock
exchange itself counted, so a counter that drifts from the record fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import platform
import re
import sqlite3
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import mmbot.mock.server as mock_server
from mmbot import __version__
from mmbot import daemon as assembly
from mmbot.buildinfo import build_commit
from mmbot.cli import run as runcli
from mmbot.config import Settings
from mmbot.engine import Engine
from mmbot.journal import Journal, Summary
from mmbot.logs import configure_logging
from mmbot.mock.server import MockExchange
from tests.support.metric_contract import CONTRACT
from tests.support.polling import eventually

# Real daemons over sockets, one a 20-second dry run: seconds per test.
pytestmark = pytest.mark.slow

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Scrape:
    """One parsed ``/metrics`` answer: sample values by (sample name, labels)."""

    samples: Mapping[tuple[str, Labels], float]
    families: frozenset[str]

    def value(self, name: str, **labels: str) -> float:
        """The one sample with exactly these labels (0 when absent, as Prometheus reads it)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **where: str) -> float:
        """Sum over every sample of ``name`` whose labels include ``where``."""
        wanted = set(where.items())
        return sum(v for (n, labels), v in self.samples.items() if n == name and wanted <= labels)

    def by(self, name: str, label: str) -> dict[str, int]:
        """Non-zero samples of ``name`` keyed by one label's value."""
        out: dict[str, int] = {}
        for (n, labels), v in self.samples.items():
            if n == name and v:
                key = dict(labels)[label]
                out[key] = out.get(key, 0) + int(v)
        return out


def parse(text: str) -> Scrape:
    """Parse the exposition text the way Prometheus would."""
    samples: dict[tuple[str, Labels], float] = {}
    families: set[str] = set()
    for family in text_string_to_metric_families(text):
        # The parser drops _total from counter family names; keep the exposed name.
        families.add(family.name + "_total" if family.type == "counter" else family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(samples, frozenset(families))


@dataclass
class DryRun:
    """A dry-run daemon in this process, its mock exchange and its metrics URL."""

    engine: Engine
    mock: MockExchange
    metrics_url: str
    journal: Path
    http: httpx.AsyncClient

    async def scrape(self) -> Scrape:
        """GET /metrics."""
        response = await self.http.get(f"{self.metrics_url}/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return parse(response.text)

    async def readyz(self) -> httpx.Response:
        """GET /readyz."""
        return await self.http.get(f"{self.metrics_url}/readyz")

    async def readyz_until(self, status: int, within: float) -> httpx.Response:
        """Poll /readyz until it answers ``status``, and return that answer."""
        async with asyncio.timeout(within):
            for _ in itertools.count():
                response = await self.readyz()
                if response.status_code == status:
                    return response
                await asyncio.sleep(0.02)
        raise AssertionError("unreachable")

    async def control(self, name: str, body: Mapping[str, Any] | None = None) -> Any:
        """POST to one of the mock's /_mock/ control endpoints."""
        response = await self.http.post(
            f"{self.mock.base_url}/_mock/{name}",
            json=body or {},
            headers=self.mock.control_headers,
        )
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def mock_state(self) -> dict[str, Any]:
        """GET /_mock/state."""
        response = await self.http.get(
            f"{self.mock.base_url}/_mock/state", headers=self.mock.control_headers
        )
        return dict(response.json())

    def summary(self) -> Summary:
        """What the journal holds so far (read-only, beside the daemon's writer)."""
        return Journal(self.journal).summary()

    def reconciled(self, trigger: str) -> int:
        """How many ``reconciled`` rows the journal holds for ``trigger``."""
        with contextlib.closing(sqlite3.connect(f"{self.journal.as_uri()}?mode=ro", uri=True)) as c:
            sql = "SELECT COUNT(*) FROM events WHERE kind = 'reconciled' AND reason = ?"
            return int(c.execute(sql, (trigger,)).fetchone()[0])


def dry_run_settings(journal: Path, **extra: Mapping[str, Any]) -> Settings:
    """Dry-run settings for a test: no simulated flow unless asked, port 0, quick reconnects."""
    data: dict[str, Any] = {
        "dry_run": {"rfq_rate": 0, "markets": 8, "hvm_fraction": 0, "time_scale": 0.5, "seed": 7},
        "metrics": {"port": 0},
        "journal": {"path": str(journal)},
        # 429s drain the write bucket; no quote should be shed for waiting on it here.
        "quotes": {"ttl_seconds": 60, "max_queue_seconds": 30},
        "kalshi": {"ws_reconnect_min_seconds": 0.05, "ws_reconnect_max_seconds": 0.2},
        "run": {"status_interval_seconds": 60},
        "shutdown": {"timeout_seconds": 5},
    }
    for section, values in extra.items():
        data[section] = {**data.get(section, {}), **values}
    return Settings.model_validate(data)


@contextlib.asynccontextmanager
async def dry_run(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DryRun]:
    """Run ``mmbot run --dry-run`` for the block; it must then stop with exit code 0."""
    engines: list[Engine] = []
    mocks: list[MockExchange] = []

    class RecordingEngine(Engine):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            engines.append(self)

    class RecordingMock(MockExchange):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            mocks.append(self)

    # run_daemon wires everything as in production; the engine and mock are only remembered.
    monkeypatch.setattr(assembly, "Engine", RecordingEngine)
    monkeypatch.setattr(mock_server, "MockExchange", RecordingMock)
    configure_logging("WARNING", "console")
    out = io.StringIO()
    stop = asyncio.Event()
    task = asyncio.create_task(
        runcli.run_daemon(
            settings,
            dry_run=True,
            stop=stop,
            out=out,
            sources={"journal.path": "test"},
        )
    )

    def started() -> str | None:
        if task.done():
            raise AssertionError(f"the dry-run exited early:\n{out.getvalue()}")
        found = re.search(r"metrics on (http://\S+)/metrics", out.getvalue())
        return found[1] if found and engines and mocks else None

    try:
        url = await eventually(started, "the dry-run to start its metrics server", 20)
        async with httpx.AsyncClient(timeout=5) as http:
            run = DryRun(engines[0], mocks[0], url, settings.journal.path, http)

            await run.readyz_until(200, within=20)
            yield run
    finally:
        stop.set()
        async with asyncio.timeout(20):
            code = await task
    assert code == 0, out.getvalue()


def tradable(run: DryRun, count: int) -> list[str]:
    """``count`` markets the daemon has a reference price for."""
    tickers = [
        ticker
        for ticker in sorted(run.mock.exchange.markets)
        if (view := run.engine.market_data.view(ticker, Decimal(0))) is not None
        and view.mid is not None
        and Decimal("0.2") <= view.mid <= Decimal("0.8")
    ]
    assert len(tickers) >= count, "the simulated markets have too few two-sided books"
    return tickers[:count]


def mismatches(scrape: Scrape, summary: Summary, run: DryRun, mock: Mapping[str, Any]) -> list[str]:
    """Every way the scrape disagrees with the journal, the engine or the mock exchange."""
    stats = mock["stats"]
    checks: list[tuple[str, object, object]] = [
        ("rfqs received", scrape.total("mmbot_rfqs_received_total"), summary.rfqs_seen),
        ("quotes created", scrape.total("mmbot_quotes_created_total"), summary.quotes_created),
        (
            "quotes deleted by reason",
            scrape.by("mmbot_quotes_deleted_total", "reason"),
            dict(summary.quotes_deleted_by_reason),
        ),
        ("quotes confirmed", scrape.total("mmbot_quotes_confirmed_total"), summary.confirms),
        (
            "quotes declined by reason",
            scrape.by("mmbot_quotes_declined_total", "reason"),
            dict(summary.declines_by_reason),
        ),
        ("quotes executed", scrape.total("mmbot_quotes_executed_total"), summary.executions),
        (
            "realized P&L",
            scrape.value("mmbot_realized_pnl_dollars"),
            float(summary.realized_pnl),
        ),
        (
            "rfq_to_quote observations",
            scrape.value("mmbot_rfq_to_quote_seconds_count"),
            summary.quotes_created,
        ),
        (
            "confirm latency observations",
            scrape.value("mmbot_confirm_latency_seconds_count"),
            summary.confirms,
        ),
        ("ws reconnects", scrape.value("mmbot_ws_reconnects_total"), run.reconciled("reconnect")),
        (
            "open quotes",
            scrape.value("mmbot_open_quotes"),
            mock["quotes_by_status"].get("open", 0),
        ),
        ("exposure", scrape.value("mmbot_exposure_dollars"), float(run.engine.risk.exposure())),
        ("invalid frames", scrape.value("mmbot_ws_frames_invalid_total"), stats["malformed_sent"]),
        ("rate limited", scrape.value("mmbot_rate_limited_total"), stats["injected_429"]),
        (
            "429s by endpoint",
            scrape.total("mmbot_rest_requests_total", status="429"),
            stats["injected_429"],
        ),
        (
            "create_quote 201s",
            scrape.value("mmbot_rest_requests_total", endpoint="create_quote", status="201"),
            mock["quotes"],
        ),
    ]
    return [f"{what}: scrape {got!r}, record {want!r}" for what, got, want in checks if got != want]


async def test_metrics_during_a_dry_run_match_the_journal_and_the_exchange(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = dry_run_settings(tmp_path / "journal.sqlite", risk={"max_position_per_market": 15})
    async with dry_run(settings, monkeypatch) as run:
        first, second, third = tradable(run, 3)
        await run.control("faults", {"malformed_fraction": 0.5, "write_429_fraction": 0.3})

        def rfq(market: str, wants: str, contracts: str, **more: Any) -> dict[str, Any]:
            return {"market_ticker": market, "wants": wants, "contracts_fp": contracts, **more}

        # Both 10-lots on `first` are quoted before either is accepted (a 2 s decision
        # delay); together they would break the 15-contract limit, so one is declined.
        for body in (
            rfq(first, "yes", "10", reservation="0.99", decision_delay_seconds=4),
            rfq(first, "yes", "10", reservation="0.99", decision_delay_seconds=4),
            # Opposite sides on `second` net out, realizing a profit.
            rfq(second, "yes", "5", reservation="0.99"),
            rfq(second, "no", "5", reservation="0.99", decision_delay_seconds=3),
            # Nobody accepts at 0.01: the RFQ lapses and our quote is withdrawn with it.
            rfq(third, "yes", "5", reservation="0.01", lifetime_seconds=2),
        ):
            await run.control("rfqs", body)

        def traded() -> Summary | None:
            summary = run.summary()
            done = summary.executions >= 3 and summary.declines >= 1
            return summary if done and summary.quotes_deleted_by_reason.get("rfq_deleted") else None

        await eventually(traded, "three executions, a decline and a lapsed RFQ", 30)
        await run.control("faults", {"malformed_fraction": 0, "write_429_fraction": 0})
        await run.control("drop_ws")
        await eventually(lambda: run.reconciled("reconnect"), "the reconnect's reconciliation")

        # Counters settle once nothing is in flight: compare two identical scrapes in a row.
        problems: list[str] = ["not compared yet"]
        for _ in range(100):
            before = await run.scrape()
            summary = run.summary()
            mock = await run.mock_state()
            after = await run.scrape()
            problems = mismatches(after, summary, run, mock)
            if before == after and not problems:
                break
            await asyncio.sleep(0.1)
        assert not problems, "\n".join(problems)

        assert set(CONTRACT) <= after.families
        # Every figure above is real activity, not a zero that matches a zero.
        assert summary.confirms >= 3
        assert summary.executions >= 3
        assert summary.declines >= 1
        assert after.value("mmbot_exposure_dollars") > 0
        assert after.value("mmbot_realized_pnl_dollars") > 0
        assert after.value("mmbot_ws_reconnects_total") == 1
        assert after.value("mmbot_ws_frames_invalid_total") > 0
        assert after.value("mmbot_rate_limited_total") > 0
        assert (
            after.value(
                "mmbot_build_info",
                version=__version__,
                commit=build_commit(),
                python=platform.python_version(),
            )
            == 1
        )
        assert after.value("mmbot_ready") == 1
        # Bounded labels: reasons and endpoint names only, never an id.
        for name, labels in after.samples:
            for key, value in labels:
                assert not re.fullmatch(r"[0-9a-f-]{32,36}", value), (name, key, value)


async def test_readyz_turns_503_on_a_websocket_drop_and_200_after_the_reconnect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = dry_run_settings(tmp_path / "journal.sqlite", dry_run={"rfq_rate": 2})
    async with dry_run(settings, monkeypatch) as run:
        ready = await run.readyz()
        assert ready.status_code == 200
        assert ready.json()["ready"] is True
        # Refused handshakes hold the outage open long enough to be seen from outside.
        await run.control("faults", {"refuse_handshakes_seconds": 1.5})
        await run.control("drop_ws")

        down = await run.readyz_until(503, within=5)
        assert down.headers["content-type"].startswith("application/json")
        body = down.json()
        assert body["ready"] is False
        assert body["websocket_subscribed"] is False
        assert "websocket not subscribed" in body["reasons"]
        assert (await run.scrape()).value("mmbot_ready") == 0

        up = await run.readyz_until(200, within=15)
        assert up.json() == {**up.json(), "ready": True, "reasons": []}
        scrape = await run.scrape()
        assert scrape.value("mmbot_ws_reconnects_total") == 1
        assert scrape.value("mmbot_ws_connected") == 1
        # /healthz never wavered: the process served throughout.
        assert (await run.http.get(f"{run.metrics_url}/healthz")).status_code == 200
