"""The real daemon against the mock exchange, over loopback sockets.

The daemon runs either in-process, through :func:`mmbot.cli.run.run_daemon` exactly as
``mmbot run`` calls it (see :class:`Daemons`: an :class:`~mmbot.engine.Engine` subclass only
records the instance, so a test can reach the risk book), or as a ``python -m mmbot run``
child (:func:`daemon_process`) for what only a real process shows. :class:`Venue` is the
mock exchange with the daemon's account and two requesters driving it through the
project's own REST client. The fixtures ``venue`` and ``daemons`` in ``tests/conftest.py``
hand these out.

The test strategies :class:`Flat` and :class:`Greedy` live here because a daemon child
imports them by name (:data:`FLAT`, :data:`GREEDY`) from this checkout.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sqlite3
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from mmbot import daemon as assembly
from mmbot.cli import run as runcli
from mmbot.config import Settings
from mmbot.engine import Engine
from mmbot.kalshi.models import Rfq
from mmbot.kalshi.rest import KalshiRestClient
from mmbot.mock.exchange import QuoteRecord, User
from mmbot.mock.server import MockConfig, MockExchange
from mmbot.mock.sim import SimMarket
from mmbot.strategy import MarketView, QuoteIntent, Strategy, StrategyParams
from tests.support.env import subprocess_env
from tests.support.keys import TestKey
from tests.support.polling import eventually

# Kalshi's timers times 0.05: 1.5 s to confirm a standard market, 0.75 s to execution.
FAST = 0.05
MAKER_KEY_ID = "e2e-maker-key"
REQUESTER_KEY_IDS = ("e2e-requester-1", "e2e-requester-2")
REPO = Path(__file__).resolve().parents[2]
TEN = Decimal(10)


# ----------------------------------------------------------------------------- test strategies


class FlatParams(StrategyParams):
    """Fixed prices, so risk limits can be set to the cent around one fill."""

    yes_bid: Decimal = Decimal("0.40")
    no_bid: Decimal = Decimal("0.50")
    ttl_seconds: float | None = None


class Flat(Strategy[FlatParams]):
    """Bids the same prices on every RFQ (0.40 and 0.50 sit on every mock grid)."""

    name = "e2e_flat"
    Params = FlatParams

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        p = self.params
        return QuoteIntent(yes_bid=p.yes_bid, no_bid=p.no_bid, ttl_seconds=p.ttl_seconds)


class GreedyParams(StrategyParams):
    """No parameters: the strategy is greedy by construction."""


class Greedy(Strategy[GreedyParams]):
    """Bids off the grid and with no edge at all (yes + no = 1): the daemon must fix both."""

    name = "e2e_greedy"
    Params = GreedyParams

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        mid = market.mid
        if mid is None:
            return None
        # 0.0037 is off every grid the mock uses (cent, and tenth of a cent in the tails).
        yes = min(mid + Decimal("0.0037"), Decimal("0.9963"))
        return QuoteIntent(yes_bid=yes, no_bid=Decimal(1) - yes)


FLAT = f"{__name__}:Flat"
GREEDY = f"{__name__}:Greedy"


# ----------------------------------------------------------------------------- the journal


def journal_rows(path: Path, kind: str, **where: str) -> list[dict[str, Any]]:
    """Rows of one kind, oldest first, read from the file the daemon writes (read-only)."""
    if not path.exists():
        return []
    sql = "SELECT * FROM events WHERE kind = ?"
    params: list[str] = [kind]
    for column, value in where.items():
        # Column names come from this file's own keyword arguments, never from data.
        sql += f" AND {column} = ?"
        params.append(value)
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute(sql + " ORDER BY seq", params)]
    except sqlite3.OperationalError:
        return []  # created but not migrated yet


def status(quote: QuoteRecord) -> str:
    """A quote's status now (a call, so a type checker does not narrow it across awaits)."""
    return quote.status


def reconcile_counts(row: Mapping[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = json.loads(row["detail"])["counts"]
    return counts


# ----------------------------------------------------------------------------- the venue


@dataclass
class Venue:
    """A running mock exchange, the daemon's account and two requesters."""

    mock: MockExchange
    maker: User
    maker_key: TestKey
    requesters: list[KalshiRestClient]

    @property
    def requester(self) -> KalshiRestClient:
        return self.requesters[0]

    def maker_quotes(self, rfq_id: str | None = None) -> list[QuoteRecord]:
        return [
            q
            for q in self.mock.exchange.quotes.values()
            if q.creator is self.maker and (rfq_id is None or q.rfq.id == rfq_id)
        ]

    def open_maker_quotes(self) -> list[QuoteRecord]:
        return [q for q in self.maker_quotes() if q.status == "open"]

    async def open_quote(self, rfq_id: str, within: float = 8.0) -> QuoteRecord:
        """The daemon's open quote on ``rfq_id``, once it is on the exchange."""

        def probe() -> QuoteRecord | None:
            found = [q for q in self.maker_quotes(rfq_id) if q.status == "open"]
            return found[0] if found else None

        return await eventually(probe, f"a quote on RFQ {rfq_id}", within)

    def position(self, ticker: str) -> Decimal:
        record = self.mock.exchange.positions.get((self.maker.user_id, ticker))
        return record.contracts if record is not None else Decimal(0)

    def events(self) -> dict[str, list[SimMarket]]:
        """Standard (not High Volatility) markets by event, in listing order."""
        found: dict[str, list[SimMarket]] = {}
        for market in self.mock.exchange.markets.values():
            if not market.hvm:
                found.setdefault(market.event_ticker, []).append(market)
        return found

    def markets(self, count: int) -> list[SimMarket]:
        """``count`` standard markets (HVM markets confirm within 3 s x time_scale)."""
        markets = [m for group in self.events().values() for m in group]
        assert len(markets) >= count, "the mock has too few standard markets for this test"
        return markets[:count]

    def control(self, name: str) -> str:
        return f"{self.mock.base_url}/_mock/{name}"


@contextlib.asynccontextmanager
async def open_venue(
    ed25519_key: TestKey, rsa_key: TestKey, time_scale: float = FAST
) -> AsyncIterator[Venue]:
    """Run a mock exchange for the block, with the daemon's account and two requesters."""
    # No simulated RFQ flow and no market walk: every RFQ is the test's, prices stay put.
    config = MockConfig(
        seed=5, markets=30, rfq_rate=0.0, time_scale=time_scale, market_step_seconds=0
    )
    async with MockExchange(config) as mock:
        maker = mock.register_key(MAKER_KEY_ID, ed25519_key.public)
        for key_id in REQUESTER_KEY_IDS:
            mock.register_key(key_id, rsa_key.public)
        async with contextlib.AsyncExitStack() as stack:
            requesters = [
                await stack.enter_async_context(
                    KalshiRestClient(
                        mock.rest_url, rsa_key.signer(key_id), retry_deadline_seconds=0
                    )
                )
                for key_id in REQUESTER_KEY_IDS
            ]
            yield Venue(mock, maker, ed25519_key, requesters)


async def set_faults(http: httpx.AsyncClient, venue: Venue, **knobs: float) -> None:
    response = await http.post(
        venue.control("faults"), json=knobs, headers=venue.mock.control_headers
    )
    assert response.status_code == 200, response.text


async def simulated_rfq(http: httpx.AsyncClient, venue: Venue, market: SimMarket) -> str:
    """An RFQ from a simulated requester, through the control endpoint (no REST latency).

    It wants YES for at most a cent, so it never accepts, and lives far longer than a test.
    """
    body = {
        "market_ticker": market.ticker,
        "contracts_fp": "10",
        "wants": "yes",
        "reservation": "0.01",
        "lifetime_seconds": 10_000,
    }
    response = await http.post(venue.control("rfqs"), json=body, headers=venue.mock.control_headers)
    assert response.status_code == 201, response.text
    rfq_id: str = response.json()["id"]
    return rfq_id


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def settings_data(venue: Venue, journal: Path, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Daemon settings for the venue: quick reconnects, long TTL, routes given by ``extra``."""
    base: dict[str, Any] = {
        "kalshi": {
            "key_id": MAKER_KEY_ID,
            "private_key": venue.maker_key.pkcs8_pem.decode(),
            "rest_url": venue.mock.rest_url,
            "ws_url": venue.mock.ws_url,
            "ws_reconnect_min_seconds": 0.05,
            "ws_reconnect_max_seconds": 0.2,
        },
        "journal": {"path": str(journal)},
        # Beside the journal, never the working directory (shadow runs record by default).
        "recording": {"path": str(journal.parent / "recordings")},
        "quotes": {"ttl_seconds": 60, "min_edge": "0.01"},
        "risk": {},
        "strategies": {"routes": [{"match": ["MOCK-*"], "strategy": FLAT}]},
        "marketdata": {"ttl_seconds": 30, "refresh_seconds": 0.5},
        "shutdown": {"timeout_seconds": 5},
        "run": {"status_interval_seconds": 60},
        # Tests never take a fixed port: 0 has the OS pick a free one.
        "metrics": {"port": 0},
    }
    return _merge(base, extra)


@dataclass
class Running:
    """An in-process daemon: its engine, its stop event and what it printed."""

    engine: Engine
    stop: asyncio.Event
    task: asyncio.Task[int]
    out: io.StringIO
    journal: Path

    @property
    def run_id(self) -> str:
        return self.engine.journal.run_id

    def rows(self, kind: str, **where: str) -> list[dict[str, Any]]:
        """This run's journal rows of one kind."""
        return journal_rows(self.journal, kind, run_id=self.run_id, **where)

    async def row(self, kind: str, within: float = 8.0, **where: str) -> dict[str, Any]:
        """This run's first journal row of one kind, once it is written."""
        rows = await eventually(lambda: self.rows(kind, **where), f"{kind} {where}", within)
        return rows[0]

    async def stopped(self) -> int:
        """Stop the daemon as SIGTERM would, and return its exit code."""
        self.stop.set()
        async with asyncio.timeout(15):
            return await self.task


@dataclass
class Daemons:
    """Starts in-process daemons against the venue and keeps their engines."""

    venue: Venue
    tmp_path: Path
    engines: list[Engine] = field(default_factory=list)

    @property
    def journal(self) -> Path:
        return self.tmp_path / "journal.sqlite"

    def settings(self, **extra: Any) -> Settings:
        return Settings.model_validate(settings_data(self.venue, self.journal, extra))

    @contextlib.asynccontextmanager
    async def running(
        self, settings: Settings | None = None, *, subscribed: bool = True
    ) -> AsyncIterator[Running]:
        """Run the daemon for the block; it must then stop cleanly, with exit code 0.

        The block starts once the daemon has reconciled and (unless ``subscribed`` is
        False) subscribed to the communications channel.
        """
        settings = settings or self.settings()
        stop = asyncio.Event()
        out = io.StringIO()
        before = len(self.engines)
        task = asyncio.create_task(runcli.run_daemon(settings, stop=stop, out=out))

        def ready() -> Engine | None:
            if task.done():
                raise AssertionError(f"the daemon exited early:\n{out.getvalue()}")
            if len(self.engines) == before:
                return None
            engine = self.engines[-1]
            started = engine.reconciliations > 0 and (
                engine.stream.stats.connected or not subscribed
            )
            return engine if started else None

        try:
            engine = await eventually(ready, "the daemon to reconcile and subscribe")
            running = Running(engine, stop, task, out, settings.journal.path)
            yield running
        except BaseException:
            stop.set()
            with contextlib.suppress(BaseException):
                async with asyncio.timeout(15):
                    await task
            raise
        assert await running.stopped() == 0, out.getvalue()


def recording_daemons(venue: Venue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Daemons:
    """Daemons for ``venue`` whose engines are kept, for as long as ``monkeypatch`` holds."""
    made = Daemons(venue, tmp_path)

    class RecordingEngine(Engine):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.engines.append(self)

    # run_daemon wires everything as in production; only the Engine is remembered.
    monkeypatch.setattr(assembly, "Engine", RecordingEngine)
    return made


# ----------------------------------------------------------------------------- subprocesses


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(str(value))


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    """Write settings as TOML; lists of tables become [[section.key]] arrays."""
    lines: list[str] = []
    for section, table in data.items():
        arrays = {
            k: v for k, v in table.items() if isinstance(v, list) and v and isinstance(v[0], dict)
        }
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml(v)}" for k, v in table.items() if k not in arrays]
        for key, items in arrays.items():
            for item in items:
                lines.append(f"[[{section}.{key}]]")
                lines += [f"{k} = {_toml(v)}" for k, v in item.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class DaemonProcess:
    """``python -m mmbot run`` as a child process; its output is collected as it comes."""

    process: asyncio.subprocess.Process
    output: asyncio.Task[bytes]

    async def exit_code(self, within: float = 20.0) -> int:
        async with asyncio.timeout(within):
            return await self.process.wait()

    async def text(self) -> str:
        async with asyncio.timeout(10):
            return (await self.output).decode(errors="replace")


@contextlib.asynccontextmanager
async def daemon_process(
    args: list[str], *, cwd: Path, env: Mapping[str, str]
) -> AsyncIterator[DaemonProcess]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mmbot",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
    )
    assert process.stdout is not None
    # Drained all along, so a chatty child never blocks on a full pipe.
    output = asyncio.create_task(process.stdout.read())
    try:
        yield DaemonProcess(process, output)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        with contextlib.suppress(Exception):
            # Shown by pytest when the test fails: the child's own account of events.
            print(f"--- {' '.join(args)} (exit {process.returncode}) ---")
            print((await asyncio.wait_for(output, 10)).decode(errors="replace"))


def daemon_env(venue: Venue) -> dict[str, str]:
    """The environment of a daemon child that trades on ``venue`` as the maker."""
    return {
        # Tests never take a fixed port: 0 has the OS pick a free one for /metrics.
        **subprocess_env(MMBOT_METRICS__PORT="0"),
        "MMBOT_KALSHI__KEY_ID": MAKER_KEY_ID,
        "MMBOT_KALSHI__PRIVATE_KEY": venue.maker_key.pkcs8_pem.decode(),
        "MMBOT_KALSHI__REST_URL": venue.mock.rest_url,
        "MMBOT_KALSHI__WS_URL": venue.mock.ws_url,
    }


def subprocess_config(path: Path, journal: Path, extra: Mapping[str, Any]) -> Path:
    """A config file for a daemon subprocess (the connection comes from the environment)."""
    data: dict[str, Any] = {
        "journal": {"path": str(journal)},
        "quotes": {"ttl_seconds": 60},
        "strategies": {"default": "fixed_spread", "routes": [{"match": ["MOCK-*"]}]},
        "marketdata": {"ttl_seconds": 30},
        "shutdown": {"timeout_seconds": 5},
        "run": {"status_interval_seconds": 60},
        "log": {"level": "INFO", "format": "json"},
    }
    return write_config(path, _merge(data, extra))
