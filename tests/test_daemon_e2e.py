"""The daemon end to end: real loopback sockets against the mock exchange.

The daemon runs either in-process, through :func:`mmbot.cli.run.run_daemon` exactly as
``mmbot run`` calls it (an :class:`~mmbot.engine.Engine` subclass only records the
instance, so a test can reach the risk book), or as a ``python -m mmbot run`` subprocess
for what only a real process shows: SIGTERM, SIGKILL, exit codes, the printed summary.
Requesters are other registered users of the mock, driving it with the project's own
REST client; the exchange's state machine is read directly for ground truth. The harness
is :mod:`tests.support.daemon`; the fixtures ``venue`` and ``daemons`` are in conftest.py.

Everything runs with the mock's timers scaled down (``time_scale``), so an accept,
confirm and execution cycle takes well under a second; waits are bounded polls.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from mmbot.journal import Journal
from mmbot.kalshi.models import Quote, Side
from mmbot.kalshi.rest import KalshiRestClient
from mmbot.mock.sim import is_quotable
from tests.support.daemon import (
    FLAT,
    GREEDY,
    MAKER_KEY_ID,
    TEN,
    Daemons,
    Running,
    Venue,
    daemon_env,
    daemon_process,
    journal_rows,
    reconcile_counts,
    set_faults,
    simulated_rfq,
    status,
    subprocess_config,
)
from tests.support.env import subprocess_env
from tests.support.polling import eventually

# Real daemons over sockets, some as child processes: seconds per test.
pytestmark = pytest.mark.slow


def run_summary(output: str) -> dict[str, Any]:
    """The one ``run_summary`` event a child with JSON logs ends with."""
    found = []
    for line in output.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "run_summary":
                found.append(event)
    assert len(found) == 1, f"not one run_summary event in:\n{output}"
    return found[0]


# ====================================================================== 1. what is quoted


async def test_quotes_only_routed_markets_post_only_on_grid_inside_min_edge(
    venue: Venue, daemons: Daemons
) -> None:
    events = [group for group in venue.events().values() if len(group) >= 2]
    assert len(events) >= 3, "seed gives too few multi-market events"
    by_glob = events[0][:2]  # matched by the event glob
    by_name = events[1][0]  # matched by its exact ticker
    unrouted = [events[1][1], events[2][0]]  # a sibling of by_name, and another event
    min_edge = Decimal("0.03")
    settings = daemons.settings(
        quotes={"min_edge": str(min_edge)},
        strategies={
            "routes": [
                {"match": [f"{by_glob[0].event_ticker}-*"], "strategy": GREEDY},
                {
                    "match": [by_name.ticker],
                    "strategy": "fixed_spread",
                    "params": {"half_spread": "0.005"},
                },
            ]
        },
    )
    async with daemons.running(settings) as daemon:
        routed_rfqs = {
            await venue.requester.create_rfq(m.ticker, contracts=TEN): m
            for m in [*by_glob, by_name]
        }
        unrouted_rfqs = [
            await venue.requester.create_rfq(m.ticker, contracts=TEN) for m in unrouted
        ]

        for rfq_id in unrouted_rfqs:
            skipped = await daemon.row("rfq_skipped", rfq_id=rfq_id)
            assert skipped["reason"] == "unrouted_market"
        for rfq_id, market in routed_rfqs.items():
            quote = await venue.open_quote(rfq_id)
            assert quote.post_only is True
            for price in (quote.yes_bid, quote.no_bid):
                assert price == 0 or is_quotable(price, market.grid), (market.ticker, price)
            assert quote.yes_bid + quote.no_bid <= 1 - min_edge
            assert quote.yes_bid > 0 or quote.no_bid > 0
            # One quote per RFQ, and the journal names the quote the exchange holds.
            assert len(venue.maker_quotes(rfq_id)) == 1
            created = await daemon.row("quote_created", rfq_id=rfq_id)
            assert created["quote_id"] == quote.id
            detail = json.loads(created["detail"])
            assert (Decimal(detail["yes_bid"]), Decimal(detail["no_bid"])) == (
                quote.yes_bid,
                quote.no_bid,
            )
        for rfq_id in unrouted_rfqs:
            assert venue.maker_quotes(rfq_id) == []
        assert not daemon.rows("rfq_skipped", reason="unrouted_market", market=by_name.ticker)


# ====================================================================== 2. quote lifetime


async def test_a_quote_is_deleted_when_its_ttl_expires(venue: Venue, daemons: Daemons) -> None:
    market = venue.markets(1)[0]
    async with daemons.running(daemons.settings(quotes={"ttl_seconds": 0.4})) as daemon:
        rfq_id = await venue.requester.create_rfq(market.ticker, contracts=TEN)
        created = await daemon.row("quote_created", rfq_id=rfq_id)
        deleted = await daemon.row("quote_deleted", rfq_id=rfq_id)
        assert deleted["reason"] == "ttl"
        assert deleted["quote_id"] == created["quote_id"]
        quote = venue.mock.exchange.quotes[created["quote_id"]]
        assert quote.status == "cancelled"
        assert quote.cancellation_reason == "deleted by creator"
        # Withdrawn by the daemon while the RFQ itself is still open.
        assert venue.mock.exchange.rfqs[rfq_id].status == "open"
        assert daemon.engine.quotes.open_quotes == 0


async def test_a_strategy_ttl_overrides_the_configured_ttl(venue: Venue, daemons: Daemons) -> None:
    market = venue.markets(1)[0]
    settings = daemons.settings(
        strategies={
            "routes": [{"match": ["MOCK-*"], "strategy": FLAT, "params": {"ttl_seconds": 0.3}}]
        }
    )
    async with daemons.running(settings) as daemon:
        rfq_id = await venue.requester.create_rfq(market.ticker, contracts=TEN)
        await venue.open_quote(rfq_id)
        deleted = await daemon.row("quote_deleted", rfq_id=rfq_id, within=3.0)
        assert deleted["reason"] == "ttl"


async def test_a_quote_is_deleted_when_its_rfq_is_deleted(venue: Venue, daemons: Daemons) -> None:
    market = venue.markets(1)[0]
    async with daemons.running() as daemon:
        rfq_id = await venue.requester.create_rfq(market.ticker, contracts=TEN)
        quote = await venue.open_quote(rfq_id)
        assert daemon.engine.quotes.open_quotes == 1
        await venue.requester.delete_rfq(rfq_id)
        deleted = await daemon.row("quote_deleted", rfq_id=rfq_id)
        assert deleted["reason"] == "rfq_deleted"
        assert deleted["quote_id"] == quote.id
        assert quote.status == "cancelled"
        assert daemon.engine.quotes.open_quotes == 0
        assert daemon.engine.quotes.tracked_quote_ids() == set()


# ====================================================================== 3. accepts and limits


async def test_an_accept_inside_every_limit_is_confirmed_and_executes(
    venue: Venue, daemons: Daemons
) -> None:
    yes_market, no_market = venue.markets(2)
    async with daemons.running() as daemon:
        rfq_yes = await venue.requester.create_rfq(yes_market.ticker, contracts=TEN)
        rfq_no = await venue.requester.create_rfq(no_market.ticker, contracts=TEN)
        quote_yes = await venue.open_quote(rfq_yes)
        quote_no = await venue.open_quote(rfq_no)
        # "yes" hits the maker's yes_bid (the maker buys YES); "no" its no_bid (buys NO).
        await venue.requester.accept_quote(quote_yes.id, "yes", rfq_id=rfq_yes)
        await venue.requester.accept_quote(quote_no.id, "no", rfq_id=rfq_no)

        for quote, side, price in ((quote_yes, "yes", "0.40"), (quote_no, "no", "0.50")):
            confirm = await daemon.row("confirm_sent", quote_id=quote.id)
            assert (confirm["side"], Decimal(confirm["price"]), Decimal(confirm["contracts"])) == (
                side,
                Decimal(price),
                TEN,
            )
            await daemon.row("execution", quote_id=quote.id)
            assert quote.status == "executed"
        assert not daemon.rows("confirm_declined")

        # The fills are on the exchange, in the daemon's book and in the journal.
        assert venue.position(yes_market.ticker) == TEN
        assert venue.position(no_market.ticker) == -TEN
        risk = daemon.engine.risk
        assert risk.position(yes_market.ticker) == TEN
        assert risk.position(no_market.ticker) == -TEN
        assert risk.reserved() == {}
        journal = Journal(daemon.journal)
        await eventually(lambda: len(journal.last_positions()) == 2, "position_changed rows")
        assert journal.last_positions() == {yes_market.ticker: TEN, no_market.ticker: -TEN}
        executions = {e.quote_id: e for e in journal.executions()}
        assert executions[quote_yes.id].side == "yes"
        assert executions[quote_yes.id].price == Decimal("0.40")
        assert executions[quote_no.id].side == "no"
        assert executions[quote_no.id].order_id == quote_no.creator_order_id
        fills = [f for f in venue.mock.exchange.fills if f.user is venue.maker]
        assert sorted((f.market.ticker, f.outcome_side, f.count) for f in fills) == sorted(
            [(yes_market.ticker, "yes", TEN), (no_market.ticker, "no", TEN)]
        )


async def _accept_two_and_expect_the_second_declined(
    venue: Venue,
    daemon: Running,
    first: tuple[KalshiRestClient, str],
    second: tuple[KalshiRestClient, str],
    side: Side,
    reason: str,
) -> None:
    """Quote both RFQs, accept the first (confirmed), then the second (declined: reason)."""
    quotes = [await venue.open_quote(rfq_id) for _, rfq_id in (first, second)]
    await first[0].accept_quote(quotes[0].id, side, rfq_id=first[1])
    await daemon.row("confirm_sent", quote_id=quotes[0].id)
    await second[0].accept_quote(quotes[1].id, side, rfq_id=second[1])
    declined = await daemon.row("confirm_declined", quote_id=quotes[1].id)
    assert declined["reason"] == reason, declined
    # Not confirmed, but withdrawn: the acceptance cannot be confirmed late by anyone.
    deleted = await daemon.row("quote_deleted", quote_id=quotes[1].id)
    assert deleted["reason"] == "declined_accept"
    assert quotes[1].status == "cancelled"
    assert quotes[1].confirmed_ts is None
    assert quotes[1].id not in daemon.engine.risk.reserved()
    assert not daemon.rows("confirm_sent", quote_id=quotes[1].id)


async def test_max_exposure_declines_the_accept_that_would_break_it(
    venue: Venue, daemons: Daemons
) -> None:
    # Each fill alone risks 10 x 0.40 = $4 (or $5 on NO), inside $6; the two together do not.
    first_market, second_market = venue.markets(2)
    settings = daemons.settings(risk={"max_exposure_dollars": "6"})
    async with daemons.running(settings) as daemon:
        rfq_1 = await venue.requester.create_rfq(first_market.ticker, contracts=TEN)
        rfq_2 = await venue.requester.create_rfq(second_market.ticker, contracts=TEN)
        await _accept_two_and_expect_the_second_declined(
            venue,
            daemon,
            (venue.requester, rfq_1),
            (venue.requester, rfq_2),
            "yes",
            "max_exposure_dollars",
        )
        assert daemon.engine.risk.exposure() <= Decimal(6)


@pytest.mark.parametrize("side", ["yes", "no"])
async def test_max_position_declines_the_accept_that_would_break_it(
    venue: Venue, daemons: Daemons, side: Side
) -> None:
    # Two requesters, one market: 10 contracts each, inside 15 alone, 20 together.
    market = venue.markets(1)[0]
    settings = daemons.settings(risk={"max_position_per_market": "15"})
    async with daemons.running(settings) as daemon:
        first, second = venue.requesters
        rfq_1 = await first.create_rfq(market.ticker, contracts=TEN)
        rfq_2 = await second.create_rfq(market.ticker, contracts=TEN)
        await _accept_two_and_expect_the_second_declined(
            venue, daemon, (first, rfq_1), (second, rfq_2), side, "max_position_per_market"
        )


async def test_max_daily_loss_declines_an_accept_after_a_loss_is_realised(
    venue: Venue, daemons: Daemons
) -> None:
    first_market, second_market = venue.markets(2)
    settings = daemons.settings(risk={"max_daily_loss_dollars": "5"})
    async with daemons.running(settings) as daemon:
        rfq_id = await venue.requester.create_rfq(first_market.ticker, contracts=TEN)
        quote = await venue.open_quote(rfq_id)
        # A loss realised between quote and accept (say a settlement) reaches the limit.
        daemon.engine.risk.record_realized(Decimal("-5"))
        await venue.requester.accept_quote(quote.id, "yes", rfq_id=rfq_id)
        declined = await daemon.row("confirm_declined", quote_id=quote.id)
        assert declined["reason"] == "max_daily_loss_dollars"
        assert quote.status == "cancelled"
        assert quote.confirmed_ts is None
        # And nothing new is quoted while the loss stands.
        later = await venue.requester.create_rfq(second_market.ticker, contracts=TEN)
        skipped = await daemon.row("rfq_skipped", rfq_id=later)
        assert skipped["reason"] == "max_daily_loss_dollars"
        assert venue.maker_quotes(later) == []


async def test_max_open_quotes_is_enforced_when_quoting(venue: Venue, daemons: Daemons) -> None:
    # A quoting-only limit: an accept never opens a quote, so there is nothing to decline.
    markets = venue.markets(3)
    async with daemons.running(daemons.settings(risk={"max_open_quotes": 2})) as daemon:
        for market in markets[:2]:
            await venue.open_quote(await venue.requester.create_rfq(market.ticker, contracts=TEN))
        third = await venue.requester.create_rfq(markets[2].ticker, contracts=TEN)
        skipped = await daemon.row("rfq_skipped", rfq_id=third)
        assert skipped["reason"] == "max_open_quotes"
        assert venue.maker_quotes(third) == []
        assert len(venue.open_maker_quotes()) == 2


async def test_an_rfq_one_contract_over_max_contracts_is_not_quoted(
    venue: Venue, daemons: Daemons
) -> None:
    market = venue.markets(1)[0]
    async with daemons.running(daemons.settings(risk={"max_contracts_per_rfq": "20"})) as daemon:
        inside = await venue.requester.create_rfq(market.ticker, contracts=Decimal(20))
        await venue.open_quote(inside)
        over = await venue.requesters[1].create_rfq(market.ticker, contracts=Decimal(21))
        skipped = await daemon.row("rfq_skipped", rfq_id=over)
        assert skipped["reason"] == "max_contracts_per_rfq"
        assert venue.maker_quotes(over) == []


# Three seconds to confirm: room for a whole daemon start between accept and confirm.
@pytest.mark.parametrize("venue", [0.1], indirect=True)
@pytest.mark.parametrize("reason", ["max_contracts_per_rfq", "kill_switch"])
async def test_an_accept_left_by_an_earlier_run_is_judged_by_the_new_limits(
    venue: Venue, daemons: Daemons, tmp_path: Path, reason: str
) -> None:
    market = venue.markets(1)[0]
    config = subprocess_config(
        tmp_path / "run1.toml", daemons.journal, {"risk": {"max_contracts_per_rfq": 100}}
    )
    async with daemon_process(
        ["run", "--config", str(config)], cwd=tmp_path, env=daemon_env(venue)
    ) as run_1:
        rfq_id = await venue.requester.create_rfq(market.ticker, contracts=Decimal(50))
        quote = await venue.open_quote(rfq_id, within=20)
        # Its record is what the next run judges an acceptance by: killed before writing
        # it, the quote would be declined as unknown instead.
        await eventually(
            lambda: journal_rows(daemons.journal, "quote_created", quote_id=quote.id),
            "the quote's journal row",
        )
        run_1.process.kill()
        assert await run_1.exit_code() == -signal.SIGKILL
    # Accepted while no daemon runs. The restarted one allows at most 20 contracts per RFQ,
    # or starts with its kill switch on.
    await venue.requester.accept_quote(quote.id, "yes", rfq_id=rfq_id)
    assert status(quote) == "accepted"
    if reason == "kill_switch":
        kill = tmp_path / "KILL"
        kill.touch()
        settings = daemons.settings(risk={"kill_switch_file": str(kill)})
    else:
        settings = daemons.settings(risk={"max_contracts_per_rfq": "20"})
    async with daemons.running(settings) as daemon:
        start = await daemon.row("reconciled", reason="start")
        assert reconcile_counts(start)["accepted"] == 1
        declined = await daemon.row("confirm_declined", quote_id=quote.id)
        assert declined["reason"] == reason
        assert status(quote) == "cancelled"
        assert quote.confirmed_ts is None
    assert venue.position(market.ticker) == 0


async def test_the_kill_switch_withdraws_everything_and_quoting_resumes_without_it(
    venue: Venue, daemons: Daemons, tmp_path: Path
) -> None:
    kill = tmp_path / "KILL"
    markets = venue.markets(4)
    async with daemons.running(daemons.settings(risk={"kill_switch_file": str(kill)})) as daemon:
        quoted = [
            await venue.open_quote(await venue.requester.create_rfq(m.ticker, contracts=TEN))
            for m in markets[:2]
        ]
        kill.touch()
        for quote in quoted:
            deleted = await daemon.row("quote_deleted", quote_id=quote.id)
            assert deleted["reason"] == "kill_switch"
            assert quote.status == "cancelled"
        assert venue.open_maker_quotes() == []

        blocked = await venue.requester.create_rfq(markets[2].ticker, contracts=TEN)
        skipped = await daemon.row("rfq_skipped", rfq_id=blocked)
        assert skipped["reason"] == "kill_switch"
        assert venue.maker_quotes(blocked) == []

        kill.unlink()
        await eventually(lambda: not daemon.engine.risk.kill_switch, "the kill switch to clear")
        resumed = await venue.requester.create_rfq(markets[3].ticker, contracts=TEN)
        await venue.open_quote(resumed)


async def test_a_kill_switch_present_at_start_stops_quoting_from_the_first_moment(
    venue: Venue, daemons: Daemons, tmp_path: Path
) -> None:
    kill = tmp_path / "KILL"
    kill.touch()
    market = venue.markets(1)[0]
    # An RFQ already open when the daemon starts is one reconciliation would quote.
    rfq_id = await venue.requester.create_rfq(market.ticker, contracts=TEN)
    seen: list[str] = []
    venue.mock.exchange.listeners.append(
        lambda event: seen.append(event.rfq_id) if event.type == "quote_created" else None
    )
    async with daemons.running(daemons.settings(risk={"kill_switch_file": str(kill)})) as daemon:
        await eventually(lambda: daemon.engine.risk.kill_switch, "the kill switch to be seen")
        skipped = await daemon.row("rfq_skipped", rfq_id=rfq_id)
        assert skipped["reason"] == "kill_switch"
        # Let any quote in flight land before looking.
        await daemon.engine.quotes.wait_idle()
        assert seen == [], "a quote went out while the kill switch file existed"
        assert venue.maker_quotes(rfq_id) == []


async def test_a_quote_in_flight_when_the_kill_switch_turns_on_is_withdrawn(
    venue: Venue, daemons: Daemons, tmp_path: Path
) -> None:
    kill = tmp_path / "KILL"
    market = venue.markets(1)[0]
    settings = daemons.settings(risk={"kill_switch_file": str(kill)})
    async with daemons.running(settings) as daemon, httpx.AsyncClient() as http:
        # Every REST answer now takes 1.2 s: the quote's creation is in flight that long,
        # longer than the kill switch takes to be seen (one 0.5 s poll).
        await set_faults(http, venue, latency_ms=1200)
        rfq_id = await simulated_rfq(http, venue, market)
        await daemon.row("rfq_seen", rfq_id=rfq_id)
        kill.touch()
        await eventually(lambda: daemon.engine.risk.kill_switch, "the kill switch to be seen")
        assert venue.maker_quotes(rfq_id) == [], "precondition: the quote is still in flight"
        (quote,) = await eventually(lambda: venue.maker_quotes(rfq_id), "the quote to land")
        await eventually(lambda: quote.status == "cancelled", "the late quote to be withdrawn")
        await set_faults(http, venue, latency_ms=0)


# ====================================================================== 4. SIGTERM


async def test_sigterm_withdraws_every_open_quote_and_exits_0(venue: Venue, tmp_path: Path) -> None:
    markets = venue.markets(4)
    journal = tmp_path / "journal.sqlite"
    routes = [{"match": [m.ticker for m in markets[:3]]}]
    config = subprocess_config(tmp_path / "mmbot.toml", journal, {"strategies": {"routes": routes}})
    async with daemon_process(
        ["run", "--config", str(config)], cwd=tmp_path, env=daemon_env(venue)
    ) as daemon:
        quotes = [
            await venue.open_quote(
                await venue.requester.create_rfq(m.ticker, contracts=TEN), within=20
            )
            for m in markets[:3]
        ]
        # A quote of the daemon's account it does not know about (unrouted market): the
        # exit sweep must take it too.
        async with KalshiRestClient(
            venue.mock.rest_url, venue.maker_key.signer(MAKER_KEY_ID)
        ) as maker:
            stray_rfq = await venue.requester.create_rfq(markets[3].ticker, contracts=TEN)
            await eventually(
                lambda: journal_rows(journal, "rfq_skipped", rfq_id=stray_rfq), "the skip"
            )
            stray = await maker.create_quote(stray_rfq, Decimal("0.10"), Decimal("0.10"))
        assert len(venue.open_maker_quotes()) == 4

        daemon.process.send_signal(signal.SIGTERM)
        code = await daemon.exit_code()
        output = await daemon.text()
    assert code == 0, output
    assert venue.open_maker_quotes() == []
    assert venue.mock.exchange.quotes[stray].status == "cancelled"
    deleted = journal_rows(journal, "quote_deleted", reason="shutdown")
    assert {row["quote_id"] for row in deleted} == {q.id for q in quotes}
    (run,) = Journal(journal).runs()
    assert run.stop_reason == "shutdown"
    assert run_summary(output)["quotes_created"] >= 3


async def test_no_quote_is_sent_after_the_exit_sweep(venue: Venue, daemons: Daemons) -> None:
    market = venue.markets(1)[0]
    # Market data always stale: every RFQ waits for a market fetch before its quote goes.
    settings = daemons.settings(marketdata={"ttl_seconds": 0.01, "refresh_seconds": 60})
    async with daemons.running(settings) as daemon, httpx.AsyncClient() as http:
        # The order of the daemon's own calls: on a real exchange a create sent after the
        # last look for open quotes leaves a quote open once the daemon is gone. (The mock
        # cannot show that quote: it reads a body only after its latency, and the exiting
        # client has hung up by then.)
        calls: list[str] = []
        rest = daemon.engine.rest
        create_quote, iter_quotes = rest.create_quote, rest.iter_quotes

        async def recording_create(*args: Any, **kwargs: Any) -> str:
            calls.append("create")
            quote_id = await create_quote(*args, **kwargs)
            calls.append("created")
            return quote_id

        def recording_iter(**filters: Any) -> AsyncIterator[Quote]:
            if filters.get("status") == "open" and not daemon.engine.quotes.quoting:
                calls.append("exit sweep")
            return iter_quotes(**filters)

        rest.create_quote = recording_create  # type: ignore[method-assign]
        rest.iter_quotes = recording_iter  # type: ignore[method-assign]
        await set_faults(http, venue, latency_ms=600)
        rfq_id = await simulated_rfq(http, venue, market)
        # Stop while the RFQ's handler waits for its market data (0.6 s away).
        await daemon.row("rfq_seen", rfq_id=rfq_id)
        assert await daemon.stopped() == 0
    assert "exit sweep" in calls
    after = calls[calls.index("exit sweep") :]
    assert "create" not in after, calls
    assert venue.open_maker_quotes() == []


# ====================================================================== 5. restart


async def test_a_restart_after_sigkill_recovers_positions_and_cleans_up_quotes(
    venue: Venue, daemons: Daemons, tmp_path: Path
) -> None:
    traded, left_1, left_2 = venue.markets(3)
    config = subprocess_config(tmp_path / "run1.toml", daemons.journal, {})
    async with daemon_process(
        ["run", "--config", str(config)], cwd=tmp_path, env=daemon_env(venue)
    ) as run_1:
        rfq_traded = await venue.requester.create_rfq(traded.ticker, contracts=TEN)
        quote = await venue.open_quote(rfq_traded, within=20)
        left = [
            await venue.open_quote(await venue.requester.create_rfq(m.ticker, contracts=TEN))
            for m in (left_1, left_2)
        ]
        side: Side = "yes" if quote.yes_bid > 0 else "no"
        await venue.requester.accept_quote(quote.id, side, rfq_id=rfq_traded)
        await eventually(
            lambda: journal_rows(daemons.journal, "execution", quote_id=quote.id),
            "run 1 to journal its execution",
        )
        run_1.process.kill()
        assert await run_1.exit_code() == -signal.SIGKILL
    assert [q.status for q in left] == ["open", "open"]
    contracts = TEN if side == "yes" else -TEN
    assert venue.position(traded.ticker) == contracts

    async with daemons.running() as run_2:
        start = await run_2.row("reconciled", reason="start")
        counts = reconcile_counts(start)
        assert counts["untracked_deleted"] == 2
        assert counts["positions"] == 1
        for old in left:
            assert old.status == "cancelled"
            deleted = await run_2.row("quote_deleted", quote_id=old.id)
            assert deleted["reason"] == "reconcile_untracked"
        risk = run_2.engine.risk
        assert risk.position(traded.ticker) == contracts
        held = venue.mock.exchange.positions[(venue.maker.user_id, traded.ticker)]
        assert risk.positions()[traded.ticker].cost == held.cost
        assert risk.exposure() >= held.cost

    journal = Journal(daemons.journal)
    first, second = journal.runs()
    assert first.stopped_at is None  # killed: no stop record
    assert second.run_id == run_2.run_id
    assert second.stop_reason == "shutdown"
    assert journal.last_positions() == {traded.ticker: contracts}
    assert [(e.run_id, e.quote_id) for e in journal.executions()] == [(first.run_id, quote.id)]


# ====================================================================== 6. WebSocket drop


async def test_after_a_ws_drop_the_daemon_reconnects_reconciles_and_quotes_again(
    venue: Venue, daemons: Daemons
) -> None:
    during, after = venue.markets(2)
    async with daemons.running() as daemon, httpx.AsyncClient() as http:
        assert daemon.rows("reconciled", reason="reconnect") == []
        # Keep it out for a while, so an RFQ is created (and its event lost) meanwhile.
        response = await http.post(
            venue.control("faults"),
            json={"refuse_handshakes_seconds": 30},
            headers=venue.mock.control_headers,
        )
        assert response.status_code == 200
        response = await http.post(venue.control("drop_ws"), headers=venue.mock.control_headers)
        # The communications stream's connection, and the order-book feed's when it is up.
        assert response.json()["dropped"] in (1, 2)
        await eventually(lambda: not daemon.engine.stream.stats.connected, "the drop")
        missed = await venue.requester.create_rfq(during.ticker, contracts=TEN)
        response = await http.post(
            venue.control("faults"),
            json={"refuse_handshakes_seconds": 0},
            headers=venue.mock.control_headers,
        )
        assert response.status_code == 200

        reconciled = await daemon.row("reconciled", reason="reconnect")
        assert reconciled["reason"] == "reconnect"
        assert daemon.engine.stream.stats.reconnects == 1
        # The RFQ whose event was lost is caught up by reconciliation...
        await venue.open_quote(missed)
        # ...and the live stream works again.
        fresh = await venue.requester.create_rfq(after.ticker, contracts=TEN)
        await venue.open_quote(fresh)


async def test_a_quote_created_during_a_reconnect_reconciliation_is_kept(
    venue: Venue, daemons: Daemons
) -> None:
    market = venue.markets(1)[0]
    async with daemons.running() as daemon, httpx.AsyncClient() as http:
        stream = daemon.engine.stream
        await set_faults(http, venue, refuse_handshakes_seconds=30)
        await http.post(venue.control("drop_ws"), headers=venue.mock.control_headers)
        await eventually(lambda: not stream.stats.connected, "the drop")
        # Every REST answer takes 0.4 s from now: the reconciliation's listings and a quote
        # created meanwhile overlap.
        await set_faults(http, venue, latency_ms=400, refuse_handshakes_seconds=0)
        async with asyncio.timeout(8):
            while stream.stats.reconnects == 0:  # noqa: ASYNC110 - a counter, no event
                await asyncio.sleep(0.002)
        rfq_id = await simulated_rfq(http, venue, market)
        await daemon.row("reconciled", reason="reconnect")
        (quote,) = await eventually(lambda: venue.maker_quotes(rfq_id), "the quote")
        await set_faults(http, venue, latency_ms=0)
        # The reconciliation that ran while it was being created must not take it for a
        # stray: the daemon still tracks it as open.
        assert daemon.rows("quote_deleted", quote_id=quote.id) == []
        assert quote.status == "open"
        assert quote.id in daemon.engine.quotes.tracked_quote_ids()


async def test_an_rfq_created_before_the_first_subscription_is_quoted(
    venue: Venue, daemons: Daemons
) -> None:
    market = venue.markets(1)[0]
    async with httpx.AsyncClient() as http:
        # The daemon reconciles over REST at start, but cannot subscribe yet.
        await set_faults(http, venue, refuse_handshakes_seconds=30)
        async with daemons.running(subscribed=False) as daemon:
            await daemon.row("reconciled", reason="start")
            assert not daemon.engine.stream.stats.connected
            # Published while nobody of ours listens: only REST can tell the daemon.
            rfq_id = await venue.requester.create_rfq(market.ticker, contracts=TEN)
            await set_faults(http, venue, refuse_handshakes_seconds=0)
            await eventually(lambda: daemon.engine.stream.stats.connected, "the subscription")
            await venue.open_quote(rfq_id)


@pytest.mark.parametrize("venue", [0.1], indirect=True)
async def test_an_execution_missed_while_disconnected_is_counted_once(
    venue: Venue, daemons: Daemons
) -> None:
    market = venue.markets(1)[0]
    async with daemons.running() as daemon, httpx.AsyncClient() as http:
        rfq_id = await venue.requester.create_rfq(market.ticker, contracts=TEN)
        quote = await venue.open_quote(rfq_id)
        await venue.requester.accept_quote(quote.id, "yes", rfq_id=rfq_id)
        await eventually(lambda: quote.status == "confirmed", "the confirmation")
        # Out before the execution timer (1.5 s here) ends, and kept out until it has.
        await http.post(
            venue.control("faults"),
            json={"refuse_handshakes_seconds": 30},
            headers=venue.mock.control_headers,
        )
        await http.post(venue.control("drop_ws"), headers=venue.mock.control_headers)
        await eventually(lambda: quote.status == "executed", "the execution")
        assert daemon.rows("execution") == []  # its event went to a closed socket
        await http.post(
            venue.control("faults"),
            json={"refuse_handshakes_seconds": 0},
            headers=venue.mock.control_headers,
        )

        await daemon.row("reconciled", reason="reconnect")
        await daemon.row("execution", quote_id=quote.id)
        assert venue.position(market.ticker) == TEN
        assert daemon.engine.risk.position(market.ticker) == TEN
        assert daemon.engine.risk.reserved() == {}
        journal = Journal(daemon.journal)
        await eventually(lambda: journal.last_positions(), "the position_changed row")
        assert journal.last_positions() == {market.ticker: TEN}


async def test_a_position_the_exchange_no_longer_lists_is_dropped_at_reconciliation(
    venue: Venue, daemons: Daemons
) -> None:
    market = venue.markets(1)[0]
    async with daemons.running() as daemon, httpx.AsyncClient() as http:
        rfq_id = await venue.requester.create_rfq(market.ticker, contracts=TEN)
        quote = await venue.open_quote(rfq_id)
        await venue.requester.accept_quote(quote.id, "yes", rfq_id=rfq_id)
        await daemon.row("execution", quote_id=quote.id)
        assert daemon.engine.risk.position(market.ticker) == TEN
        # The market settles: Kalshi lists unsettled positions by default, so it vanishes
        # from GET /portfolio/positions (emulated by removing the mock's record).
        del venue.mock.exchange.positions[(venue.maker.user_id, market.ticker)]
        await http.post(venue.control("drop_ws"), headers=venue.mock.control_headers)
        reconciled = await daemon.row("reconciled", reason="reconnect")
        assert reconcile_counts(reconciled)["positions"] == 0
        assert daemon.engine.risk.position(market.ticker) == 0
        assert daemon.engine.risk.exposure() == 0


# ====================================================================== 7. dry run


async def test_dry_run_for_20_seconds_quotes_confirms_and_exits_0(tmp_path: Path) -> None:
    async with daemon_process(
        ["run", "--dry-run", "--duration", "20"],
        cwd=tmp_path,
        env=subprocess_env(MMBOT_METRICS__PORT="0"),
    ) as daemon:
        code = await daemon.exit_code(within=60)
        output = await daemon.text()
    assert code == 0, output
    # Output is not a terminal, so logs are JSON and the summary is a run_summary event.
    summary = run_summary(output)
    assert summary["quotes_created"] > 0
    assert summary["confirms"] > 0
