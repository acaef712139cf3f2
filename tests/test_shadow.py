"""Shadow mode: every RFQ priced as live, no write request of any kind leaves the process.

Three layers: the REST client built ``read_only`` refuses every write before any I/O (the
guarantee); the responder in shadow mode prices exactly as live and tells its decision
observer (the research recorder) instead of sending the quote; and the daemon, run in
shadow mode against the mock exchange, sends the exchange no request but GETs while RFQs
flow, quotes found on the account are accepted, the kill switch flips and the daemon shuts
down.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from structlog.testing import capture_logs

from mmbot import cli
from mmbot.cli import run as runcli
from mmbot.config import Settings
from mmbot.daemon import build_engine
from mmbot.journal import Journal
from mmbot.kalshi.errors import KalshiError
from mmbot.kalshi.models import Rfq
from mmbot.kalshi.rest import KalshiRestClient, Retry, ShadowWriteRefused, _Lane
from mmbot.quoting import QuoteManager
from mmbot.quoting.pricing import Decline, Priced
from mmbot.strategy import MarketView
from tests.support.daemon import (
    MAKER_KEY_ID,
    Daemons,
    Venue,
    daemon_process,
    simulated_rfq,
    subprocess_config,
)
from tests.support.env import subprocess_env
from tests.support.polling import eventually
from tests.support.quoting import QUOTES, Harness, VirtualTimers

D = Decimal

# --------------------------------------------------------------------------- the REST client


class _Untouchable(httpx.AsyncBaseTransport):
    """A transport that fails the test if anything reaches it."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        pytest.fail(f"a request reached the transport: {request.method} {request.url}")


def _read_only(transport: httpx.AsyncBaseTransport) -> KalshiRestClient:
    return KalshiRestClient(
        "https://exchange.invalid/trade-api/v2", transport=transport, read_only=True
    )


#: Every write the REST client offers, called with plausible arguments.
WRITES: dict[str, Callable[[KalshiRestClient], Awaitable[Any]]] = {
    "create_quote": lambda c: c.create_quote("rfq-1", D("0.40"), D("0.50")),
    "delete_quote": lambda c: c.delete_quote("q-1", rfq_id="rfq-1"),
    "confirm_quote": lambda c: c.confirm_quote("q-1", rfq_id="rfq-1"),
    "accept_quote": lambda c: c.accept_quote("q-1", "yes", rfq_id="rfq-1"),
    "create_rfq": lambda c: c.create_rfq("MKT-1", contracts=10),
    "delete_rfq": lambda c: c.delete_rfq("rfq-1"),
}


@pytest.mark.parametrize("write", WRITES, ids=str)
async def test_read_only_client_refuses_every_write_before_any_io_or_token(write: str) -> None:
    transport = _Untouchable()
    client = _read_only(transport)
    observed: list[tuple[str, str, float]] = []
    client.on_response = lambda *attempt: observed.append(attempt)
    with capture_logs() as logs, pytest.raises(ShadowWriteRefused):
        await WRITES[write](client)
    assert transport.requests == []
    assert observed == []  # no attempt, so no metric of one
    # No rate-limit token was spent on it.
    assert client.write_bucket.tokens == client.write_bucket.capacity
    assert client.write_bucket.waiting == 0
    refused = [entry for entry in logs if entry["event"] == "shadow_write_refused"]
    assert len(refused) == 1
    assert refused[0]["log_level"] == "error"


def test_client_write_methods_are_all_covered_by_the_refusal_test() -> None:
    # A new write endpoint must join WRITES: count the non-GET verbs the client sends.
    source = Path(runcli.__file__).parents[1].joinpath("kalshi", "rest.py").read_text()
    verbs = re.findall(r'^\s+"(POST|PUT|DELETE|PATCH)",$', source, flags=re.MULTILINE)
    assert len(verbs) == len(WRITES)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_the_one_request_path_refuses_any_method_but_get(method: str) -> None:
    # Below every endpoint, so a write endpoint added later cannot bypass the check.
    transport = _Untouchable()
    client = _read_only(transport)
    with pytest.raises(ShadowWriteRefused) as refused:
        await client._call(
            method, "/anything", endpoint="anything", lane=_Lane.WRITE, retry=Retry.SAFE
        )
    assert (refused.value.method, refused.value.path) == (method, "/anything")
    with pytest.raises(ShadowWriteRefused):
        await client._send(method, f"{client.base_url}/anything", None, b"{}")
    assert transport.requests == []


def test_a_refused_write_is_not_an_exchange_error_callers_would_swallow() -> None:
    # Callers catch KalshiError as the exchange's refusal (journal it, retry, skip the
    # RFQ); a write shadow mode forgot to skip must fail loudly instead.
    assert not issubclass(ShadowWriteRefused, KalshiError)


async def test_read_only_client_still_reads() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET"
        return httpx.Response(200, json={"exchange_active": True, "trading_active": True})

    client = _read_only(httpx.MockTransport(answer))
    assert client.read_only
    status = await client.get_exchange_status()
    assert status.exchange_active


async def test_a_writable_client_is_not_read_only() -> None:
    client = KalshiRestClient("https://exchange.invalid", transport=_Untouchable())
    assert not client.read_only


def test_a_shadow_engine_cannot_be_built_over_a_writable_client() -> None:
    settings = Settings.model_validate({"run": {"shadow": True}})
    client = KalshiRestClient("https://exchange.invalid", transport=_Untouchable())
    with pytest.raises(ValueError, match="read-only"):
        build_engine(
            settings,
            rest=client,
            stream=None,  # type: ignore[arg-type]
            journal=None,  # type: ignore[arg-type]
            router=None,  # type: ignore[arg-type]
        )


# --------------------------------------------------------------------------- the responder


@pytest.fixture
async def timers() -> AsyncIterator[VirtualTimers]:
    virtual = VirtualTimers(asyncio.get_running_loop())
    virtual.install()
    try:
        yield virtual
    finally:
        virtual.uninstall()


ShadowQuote = tuple[str, Decimal, Decimal, MarketView]


class _Priced:
    """A decision observer keeping each quote priced: (RFQ id, YES bid, NO bid, view)."""

    def __init__(self) -> None:
        self.quotes: list[ShadowQuote] = []

    def seen(self, rfq: Rfq) -> None:
        pass

    def priced(
        self,
        rfq: Rfq,
        strategy: str,
        view: MarketView | None,
        open_quotes: int,
        result: Priced | Decline,
    ) -> None:
        if not isinstance(result, Decline):
            yes, no, priced_view, _ = result
            self.quotes.append((rfq.id, yes, no, priced_view))


def _shadow(h: Harness, observer: _Priced | None) -> None:
    """Swap the harness's manager for one in shadow mode over the same parts."""
    h.qm = QuoteManager(
        h.exchange,
        h.market_data,
        h.router,
        h.risk,
        cast(Journal, h.journal),
        QUOTES,
        shadow=True,
        observer=observer,
    )
    h.market_data.on_refresh = h.qm.on_market


async def test_shadow_responder_prices_as_live_and_tells_the_observer(
    timers: VirtualTimers,
) -> None:
    live, shadow = Harness(timers), Harness(timers)
    observer = _Priced()
    seen = observer.quotes
    _shadow(shadow, observer)

    await live.qm.on_rfq(live.rfq("M-1"))
    with capture_logs() as logs:
        await shadow.qm.on_rfq(shadow.rfq("M-1"))

    (sent,) = live.exchange.calls_to("create_quote")
    ((rfq_id, yes, no, view),) = seen
    assert (rfq_id, yes, no) == ("rfq-1", sent["yes_bid"], sent["no_bid"])
    assert isinstance(yes, Decimal)
    assert isinstance(no, Decimal)
    assert view.ticker == "M-1"
    debug = [e for e in logs if e["event"] == "shadow_quote"]
    assert len(debug) == 1
    assert debug[0]["log_level"] == "debug"
    assert (debug[0]["yes_bid"], debug[0]["no_bid"]) == (str(yes), str(no))


async def test_shadow_quote_is_counted_but_never_sent_booked_or_reserved(
    timers: VirtualTimers,
) -> None:
    h = Harness(timers)
    _shadow(h, None)  # no observer: counted all the same
    for _ in range(3):
        await h.qm.on_rfq(h.rfq("M-1"))
    await h.settle()
    names = {name for name, _ in h.exchange.calls}
    assert not names & {"create_quote", "delete_quote", "confirm_quote"}
    assert h.qm.open_quotes == 0
    assert list(h.qm.live()) == []
    assert dict(h.risk.reserved()) == {}
    assert h.qm.counters.rfqs_quoted == 0
    assert h.qm.counters.skipped_by_reason == {"shadow": 3}
    assert h.skipped() == ["shadow"] * 3


class _Broken(_Priced):
    def priced(self, *args: Any) -> None:
        raise RuntimeError("recorder down")


async def test_a_failing_observer_is_logged_and_pricing_goes_on(timers: VirtualTimers) -> None:
    h = Harness(timers)
    _shadow(h, _Broken())
    with capture_logs() as logs:
        await h.qm.on_rfq(h.rfq("M-1"))
        await h.qm.on_rfq(h.rfq("M-2"))
    failed = [e for e in logs if e["event"] == "decision_observer_failed"]
    assert len(failed) == 2
    assert failed[0]["log_level"] == "error"
    assert h.qm.counters.skipped_by_reason == {"shadow": 2}


# --------------------------------------------------------------------------- the command line


def test_the_shadow_flag_sets_run_shadow(
    monkeypatch: pytest.MonkeyPatch, no_mmbot_env: None
) -> None:
    seen: dict[str, Any] = {}

    async def fake_run_daemon(settings: Settings, **kwargs: Any) -> int:
        seen["shadow"] = settings.run.shadow
        seen["sources"] = kwargs.get("sources")
        return 0

    monkeypatch.setattr(runcli, "run_daemon", fake_run_daemon)
    assert cli.main(["run", "--dry-run", "--shadow", "--duration", "1"]) == 0
    assert seen["shadow"] is True
    assert seen["sources"]["run.shadow"] == "--shadow flag"
    assert cli.main(["run", "--dry-run", "--duration", "1"]) == 0
    assert seen["shadow"] is False


# --------------------------------------------------------------------------- end to end


def _is_maker(headers: dict[str, str]) -> bool:
    return any(k.lower() == "kalshi-access-key" and v == MAKER_KEY_ID for k, v in headers.items())


def _maker_writes(venue: Venue) -> list[str]:
    """Every non-GET request the mock recorded from the daemon's key."""
    return [
        f"{r.method} {r.path}"
        for r in venue.mock.scripting.requests
        if r.method != "GET" and _is_maker(r.headers)
    ]


def _metric(text: str, sample: str) -> float:
    """The value of one exposition sample, named with its labels exactly as rendered."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {sample} in the exposition")


@pytest.mark.slow
async def test_shadow_daemon_prices_rfqs_and_sends_the_exchange_nothing_but_gets(
    venue: Venue, daemons: Daemons, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A quote of another process (a live daemon on the same key) is open on the account:
    # a live start would refuse it, reconciliation and shutdown would withdraw it.
    market, *others = venue.markets(4)
    async with (
        KalshiRestClient(
            venue.mock.rest_url, venue.maker_key.signer(MAKER_KEY_ID), retry_deadline_seconds=0
        ) as other_process,
        httpx.AsyncClient() as http,
    ):
        foreign_rfq = await simulated_rfq(http, venue, market)
        foreign = await other_process.create_quote(foreign_rfq, D("0.40"), D("0.50"))
        observer = _Priced()
        seen = observer.quotes

        def with_observer(*args: Any, **kwargs: Any) -> Any:
            return build_engine(*args, **{**kwargs, "observer": observer})

        monkeypatch.setattr("mmbot.cli.run.build_engine", with_observer)
        kill_switch = tmp_path / "kill"
        settings = daemons.settings(
            run={"shadow": True, "status_interval_seconds": 60},
            risk={"kill_switch_file": str(kill_switch)},
        )
        baseline = venue.mock.stats.non_get_requests
        with capture_logs() as logs:
            async with daemons.running(settings) as run:
                assert run.engine.rest.read_only
                rfqs = [await simulated_rfq(http, venue, m) for m in others]
                await eventually(lambda: len(seen) >= len(rfqs), "every RFQ priced in shadow")
                found = re.search(r"metrics on (http://\S+)/metrics", run.out.getvalue())
                assert found is not None, run.out.getvalue()
                url = found.group(1)
                assert (await http.get(f"{url}/healthz")).status_code == 200
                ready = await http.get(f"{url}/readyz")
                assert ready.status_code == 200, ready.text
                scrape = (await http.get(f"{url}/metrics")).text
                assert _metric(scrape, "mmbot_shadow_mode") == 1
                assert _metric(scrape, 'mmbot_rfqs_skipped_total{reason="shadow"}') >= len(rfqs)
                # The kill switch turns on without a cancel sweep, and RFQs are then skipped.
                kill_switch.touch()
                await eventually(lambda: run.engine.risk.kill_switch, "the kill switch seen")
                late = await simulated_rfq(http, venue, others[0])
                await eventually(
                    lambda: run.engine.quotes.counters.skipped_by_reason.get("kill_switch"), late
                )
                await run.engine.reconcile("test")  # a reconciliation leaves the foreign quote too
        # daemons.running asserted exit code 0.
        # Not one write was even attempted: the client would have refused it, loudly.
        assert [e for e in logs if e["event"] in ("shadow_write_refused", "task_failed")] == []
        assert venue.mock.stats.non_get_requests == baseline
        assert {rfq_id for rfq_id, *_ in seen} >= set(rfqs)
        for _, yes, no, view in seen:
            assert (yes, no) == (D("0.40"), D("0.50"))  # the Flat strategy, priced as live
            # The other process's RFQ too: caught up at start, as a live run would.
            assert view.ticker in {m.ticker for m in [market, *others]}
        assert not venue.maker_quotes() or [q.id for q in venue.maker_quotes()] == [foreign]
        assert venue.mock.exchange.quotes[foreign].status == "open"
        assert "shadow | rfqs" in run.out.getvalue()
        counters = run.engine.quotes.counters
        assert counters.rfqs_quoted == 0
        assert counters.quotes_created == 0


@pytest.mark.slow
async def test_shadow_daemon_leaves_an_acceptance_of_another_process_quote_alone(
    venue: Venue, daemons: Daemons
) -> None:
    market = venue.markets(1)[0]
    venue.mock.scripting.recording = True
    async with KalshiRestClient(
        venue.mock.rest_url, venue.maker_key.signer(MAKER_KEY_ID), retry_deadline_seconds=0
    ) as other_process:
        rfq_id = await venue.requester.create_rfq(market.ticker, contracts=10)
        quote_id = await other_process.create_quote(rfq_id, D("0.40"), D("0.50"))
        before = len(_maker_writes(venue))  # the other process's own quote
        settings = daemons.settings(run={"shadow": True, "status_interval_seconds": 60})
        async with daemons.running(settings) as run:
            frames = run.engine.stream.stats.frames
            await venue.requester.accept_quote(quote_id, "yes", rfq_id=rfq_id)
            # The acceptance reached the daemon; give a handler the time to act on it.
            await eventually(lambda: run.engine.stream.stats.frames > frames, "the accept frame")
            await asyncio.sleep(0.5)
            assert venue.mock.exchange.quotes[quote_id].status == "accepted"
    assert _maker_writes(venue)[before:] == []
    assert run.engine.quotes.counters.confirms == 0
    assert run.engine.quotes.counters.declines == 0


@pytest.mark.slow
async def test_dry_run_shadow_child_prices_rfqs_quotes_nothing_and_exits_zero(
    tmp_path: Path,
) -> None:
    config = subprocess_config(
        tmp_path / "shadow.toml",
        tmp_path / "journal.sqlite",
        {"dry_run": {"rfq_rate": 20}, "run": {"status_interval_seconds": 1}},
    )
    args = ["--config", str(config), "run", "--dry-run", "--shadow", "--duration", "4"]
    env = subprocess_env(MMBOT_METRICS__PORT="0")
    async with daemon_process(args, cwd=tmp_path, env=env) as child:
        code = await child.exit_code(within=30)
        output = await child.text()
    assert code == 0, output
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    statuses = [e for e in events if e.get("event") == "status"]
    assert statuses, output
    assert all(e["shadow"] is True for e in statuses)
    (summary,) = [e for e in events if e.get("event") == "run_summary"]
    assert summary["quotes_created"] == 0
    assert summary["rfqs_skipped_by_reason"].get("shadow", 0) > 0, summary
    assert not [e for e in events if e.get("event") == "shadow_write_refused"]
