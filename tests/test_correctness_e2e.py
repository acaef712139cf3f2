"""Defects that lost money or flow, each replayed end to end against the mock exchange.

Every test here runs the real daemon (in-process through :func:`mmbot.cli.run.run_daemon`,
or as a ``python -m mmbot run`` child where exit codes and output matter) against the mock
exchange over loopback sockets, breaks the exchange the way the defect needs through the
mock's fault knobs, and judges the outcome from the exchange's own records and the journal.
Each failed on the daemon as it was before the fix; the section headings name the defect.
"""

from __future__ import annotations

import asyncio
import io
import re
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from mmbot import cli
from mmbot.cli import run as runcli
from mmbot.journal import Journal, JournalError
from mmbot.mock.exchange import OrderRecord, QuoteRecord
from mmbot.mock.sim import SimMarket
from tests.support.daemon import (
    FLAT,
    TEN,
    Daemons,
    Running,
    Venue,
    daemon_env,
    daemon_process,
    journal_rows,
    status,
    subprocess_config,
)
from tests.support.net import free_port
from tests.support.polling import eventually

# Real daemons over sockets, some as child processes: seconds per test.
pytestmark = pytest.mark.slow

D = Decimal


def fair(market: SimMarket, price: str) -> None:
    """Move a market's hidden fair value: its bid, ask and mid follow at the next fetch."""
    market.fair_micros = int(D(price) * 1_000_000)


async def open_quotes_on(venue: Venue, markets: list[SimMarket]) -> list[QuoteRecord]:
    """One RFQ per market from the first requester, and the daemon's open quote on each."""
    quotes = []
    for market in markets:
        rfq_id = await venue.requester.create_rfq(market.ticker, contracts=TEN)
        quotes.append(await venue.open_quote(rfq_id))
    return quotes


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


async def until(probe: Any, what: str, within: float = 10.0) -> Any:
    """Poll an async ``probe`` until it returns something truthy, and return that."""
    try:
        async with asyncio.timeout(within):
            while True:
                found = await probe()
                if found:
                    return found
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {within} s waiting for {what}") from None


# =========================================================== 1. a failed withdrawal is retried


async def test_a_ttl_withdrawal_meeting_503s_stays_open_and_is_retried_until_gone(
    venue: Venue, daemons: Daemons
) -> None:
    market = venue.markets(1)[0]
    async with daemons.running(daemons.settings(quotes={"ttl_seconds": 0.3})) as daemon:
        # Longer than one DELETE's own retries (2 s): the withdrawal itself must go on.
        venue.mock.faults.update({"delete_503_seconds": 4.0})
        rfq_id = await venue.requester.create_rfq(market.ticker, contracts=TEN)
        quote = await venue.open_quote(rfq_id)
        await eventually(lambda: venue.mock.stats.injected_503 > 0, "a refused DELETE")
        # Live on the exchange, so live in our books: counted open, and in every sweep.
        assert status(quote) == "open"
        assert daemon.engine.quotes.open_quotes == 1
        assert quote.id in daemon.engine.quotes.tracked_quote_ids()
        deleted = await daemon.row("quote_deleted", quote_id=quote.id, within=15)
        assert deleted["reason"] == "ttl"
        assert '"attempts"' in deleted["detail"]
        assert status(quote) == "cancelled"
        assert daemon.engine.quotes.open_quotes == 0


async def test_an_orphan_accepted_while_disconnected_is_declined_not_confirmed(
    venue: Venue, daemons: Daemons
) -> None:
    # The observed loss: a TTL DELETE failed, a requester accepted the quote while the
    # WebSocket was down, the market moved from 0.50 to 0.20, and the reconnect's
    # reconciliation adopted the orphan and confirmed buying 50 YES.
    market = venue.markets(1)[0]
    fair(market, "0.50")
    async with daemons.running(daemons.settings(quotes={"ttl_seconds": 0.3})) as daemon:
        rfq_id = await venue.requester.create_rfq(market.ticker, contracts=D(50))
        quote = await venue.open_quote(rfq_id)
        venue.mock.faults.update({"delete_503_seconds": 60, "refuse_handshakes_seconds": 60})
        await eventually(lambda: venue.mock.stats.injected_503 > 0, "a refused DELETE")
        await venue.mock.drop_ws()
        await venue.requester.accept_quote(quote.id, "yes", rfq_id=rfq_id)
        fair(market, "0.20")
        venue.mock.faults.update({"refuse_handshakes_seconds": 0})
        declined = await daemon.row("confirm_declined", quote_id=quote.id)
        assert declined["reason"] == "withdrawn"
        venue.mock.faults.update({"delete_503_seconds": 0})
        await eventually(lambda: status(quote) == "cancelled", "the withdrawal to land")
        assert quote.confirmed_ts is None
        assert daemon.rows("confirm_sent") == []
    assert venue.position(market.ticker) == 0


async def test_the_kill_switch_withdraws_every_quote_once_deletes_work_again(
    venue: Venue, daemons: Daemons, tmp_path: Path
) -> None:
    kill = tmp_path / "KILL"
    markets = venue.markets(10)
    settings = daemons.settings(risk={"kill_switch_file": str(kill)})
    async with daemons.running(settings) as daemon:
        quotes = await open_quotes_on(venue, markets)
        venue.mock.faults.update({"delete_503_seconds": 3.0})
        kill.touch()
        await eventually(lambda: daemon.engine.risk.kill_switch, "the kill switch")
        # Still open while DELETEs fail: counted, not forgotten.
        assert daemon.engine.quotes.open_quotes == 10
        await eventually(
            lambda: all(status(q) == "cancelled" for q in quotes), "every quote withdrawn", 15
        )
        rows = await eventually(
            lambda: (found := daemon.rows("quote_deleted")) and len(found) == 10 and found,
            "every withdrawal journaled",
        )
        assert {row["quote_id"]: row["reason"] for row in rows} == {
            q.id: "kill_switch" for q in quotes
        }
        assert daemon.engine.quotes.open_quotes == 0
        kill.unlink()


# ============================================== 2. a stop that leaves quotes open says so


async def test_sigterm_with_deletes_failing_exits_non_zero_naming_the_open_quotes(
    venue: Venue, tmp_path: Path
) -> None:
    market = venue.markets(1)[0]
    config = subprocess_config(
        tmp_path / "run.toml", tmp_path / "journal.sqlite", {"shutdown": {"timeout_seconds": 2}}
    )
    async with daemon_process(
        ["run", "--config", str(config)], cwd=tmp_path, env=daemon_env(venue)
    ) as run:
        rfq_id = await venue.requester.create_rfq(market.ticker, contracts=TEN)
        quote = await venue.open_quote(rfq_id, within=20)
        venue.mock.faults.update({"delete_503_seconds": 60})
        run.process.send_signal(signal.SIGTERM)
        assert await run.exit_code() == 1
        text = await run.text()
    assert status(quote) == "open"
    assert error_lines(text) == [
        "error: 1 quote(s) of ours were still open on the exchange at exit; "
        "withdraw them with: mmbot quotes cancel-all"
    ]


async def test_a_journal_deleted_mid_run_is_unhealthy_and_fails_the_exit(
    venue: Venue, tmp_path: Path
) -> None:
    market = venue.markets(1)[0]
    journal = tmp_path / "journal.sqlite"
    port = free_port()
    config = subprocess_config(tmp_path / "run.toml", journal, {"metrics": {"port": port}})
    env = {**daemon_env(venue), "MMBOT_METRICS__PORT": str(port)}
    async with (
        daemon_process(["run", "--config", str(config)], cwd=tmp_path, env=env) as run,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http,
    ):
        await venue.open_quote(await venue.requester.create_rfq(market.ticker, contracts=TEN), 20)
        journal.unlink()

        async def unhealthy() -> bool:
            body = (await http.get("/metrics")).text
            return re.search(r"^mmbot_journal_healthy 0\.0$", body, re.MULTILINE) is not None

        await until(unhealthy, "mmbot_journal_healthy 0")
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert any(r.startswith("journal unhealthy") for r in ready.json()["reasons"])
        run.process.send_signal(signal.SIGTERM)
        assert await run.exit_code() == 1
        text = await run.text()
    [line] = error_lines(text)
    assert re.fullmatch(
        r"error: \d+ journal row\(s\) could not be written to .*journal\.sqlite; "
        r"they are in the log as journal_record_lost",
        line,
    )


# ========================================= 3. our record decides what we confirm and book


@pytest.mark.parametrize(
    ("knob", "reason"),
    [
        ("tamper_accept_price_fraction", "accept_price_mismatch"),
        ("tamper_accept_size_fraction", "accept_size_mismatch"),
        ("tamper_accept_market_fraction", "accept_market_mismatch"),
    ],
)
async def test_an_acceptance_frame_that_disagrees_with_our_quote_is_declined(
    venue: Venue, daemons: Daemons, knob: str, reason: str
) -> None:
    market = venue.markets(1)[0]
    async with daemons.running() as daemon:
        venue.mock.faults.update({knob: 1.0})
        rfq_id = await venue.requester.create_rfq(market.ticker, contracts=TEN)
        quote = await venue.open_quote(rfq_id)
        await venue.requester.accept_quote(quote.id, "yes", rfq_id=rfq_id)
        declined = await daemon.row("confirm_declined", quote_id=quote.id)
        assert declined["reason"] == reason
        assert declined["market"] == market.ticker  # ours, whatever the frame said
        await eventually(lambda: status(quote) == "cancelled", "the quote withdrawn")
        assert quote.confirmed_ts is None
        assert dict(daemon.engine.risk.reserved()) == {}
        assert daemon.rows("confirm_sent") == []
    assert venue.position(market.ticker) == 0


# ==================================================== 4. target-cost RFQs sized by budget


async def test_a_target_cost_rfq_is_quoted_confirmed_and_booked_by_its_budget(
    venue: Venue, daemons: Daemons
) -> None:
    market = venue.markets(1)[0]
    async with daemons.running() as daemon:
        # The RFQ reports contracts_fp "0.00": its size is what $4.00 buys at our bids.
        rfq_id = await venue.requester.create_rfq(market.ticker, target_cost_dollars="4.00")
        quote = await venue.open_quote(rfq_id)
        assert (quote.yes_contracts, quote.no_contracts) == (D(10), D(8))  # 0.40 and 0.50
        seen = await daemon.row("rfq_seen", rfq_id=rfq_id)
        assert D(seen["amount"]) == D("4.00")
        await venue.requester.accept_quote(quote.id, "no", rfq_id=rfq_id)
        executed = await daemon.row("execution", quote_id=quote.id)
        assert (executed["side"], D(executed["contracts"])) == ("no", D(8))
        assert daemon.engine.risk.position(market.ticker) == -8
    assert venue.position(market.ticker) == -8


# Kalshi's own timers: a confirmed quote waits 15 s to execute, time to restart in between.
@pytest.mark.parametrize("venue", [1.0], indirect=True)
async def test_a_confirmed_target_cost_quote_adopted_at_restart_holds_its_real_size(
    venue: Venue, daemons: Daemons, tmp_path: Path
) -> None:
    market = venue.markets(1)[0]
    config = subprocess_config(tmp_path / "run.toml", daemons.journal, {})
    async with daemon_process(
        ["run", "--config", str(config)], cwd=tmp_path, env=daemon_env(venue)
    ) as run_1:
        rfq_id = await venue.requester.create_rfq(market.ticker, target_cost_dollars="4.00")
        quote = await venue.open_quote(rfq_id, within=20)
        await venue.requester.accept_quote(quote.id, "no", rfq_id=rfq_id)
        await eventually(lambda: status(quote) == "confirmed", "the confirm", 20)
        run_1.process.kill()
        await run_1.exit_code()
    # What the budget buys at the NO bid, as the exchange offered it (never "0.00").
    offered = quote.no_contracts
    assert offered == (D("4.00") / quote.no_bid).to_integral_value(rounding="ROUND_FLOOR")
    async with daemons.running() as daemon:
        held = daemon.engine.risk.reserved()[quote.id]
        assert (held.market, held.fill.side, held.fill.contracts) == (market.ticker, "no", offered)
        assert held.fill.price == quote.no_bid


# ============================================================ 5. the daily loss limit


async def test_concurrent_fills_that_would_lose_past_the_daily_limit_are_not_all_confirmed(
    venue: Venue, daemons: Daemons
) -> None:
    markets = venue.markets(3)
    for market in markets:
        fair(market, "0.40")
    # Each YES fill at 0.60 on a market worth 0.40 loses $2 the moment it is confirmed.
    flat = {"yes_bid": "0.60", "no_bid": "0.30"}
    settings = daemons.settings(
        risk={"max_daily_loss_dollars": "5"},
        strategies={"routes": [{"match": ["MOCK-*"], "strategy": FLAT, "params": flat}]},
    )
    async with daemons.running(settings) as daemon:
        quotes = await open_quotes_on(venue, markets)
        await asyncio.gather(
            *(venue.requester.accept_quote(q.id, "yes", rfq_id=q.rfq.id) for q in quotes)
        )
        await eventually(
            lambda: len(daemon.rows("confirm_sent")) + len(daemon.rows("confirm_declined")) == 3,
            "every acceptance judged",
        )
        assert len(daemon.rows("confirm_sent")) == 2
        [declined] = daemon.rows("confirm_declined")
        assert declined["reason"] == "max_daily_loss_dollars"
        assert -daemon.engine.risk.daily_pnl() <= 5


async def test_a_settlement_loss_counts_today_and_a_restart_does_not_forget_it(
    venue: Venue, daemons: Daemons
) -> None:
    settled, other, later = venue.markets(3)
    settings = daemons.settings(
        risk={"max_daily_loss_dollars": "3"}, reconcile={"interval_seconds": 0.3}
    )
    async with daemons.running(settings) as daemon:
        rfq_id = await venue.requester.create_rfq(settled.ticker, contracts=TEN)
        quote = await venue.open_quote(rfq_id)
        await venue.requester.accept_quote(quote.id, "yes", rfq_id=rfq_id)  # 10 YES at 0.40
        await daemon.row("execution", quote_id=quote.id)
        venue.mock.settle(settled.ticker, "no")
        realised = await daemon.row("position_changed", market=settled.ticker, reason="settled")
        assert D(realised["amount"]) == D("-4")
        # Net of the fill's maker fee, as the mock's fee_cost reports it:
        # 0.0175 x 10 x 0.40 x 0.60 = 0.042, rounded up to the cent.
        assert daemon.engine.risk.fees_today == D("0.05")
        assert daemon.engine.risk.realized_pnl_today() == D("-4.05")
        blocked = await venue.requester.create_rfq(other.ticker, contracts=TEN)
        skipped = await daemon.row("rfq_skipped", rfq_id=blocked)
        assert skipped["reason"] == "max_daily_loss_dollars"
    async with daemons.running(settings) as daemon:
        assert daemon.engine.risk.realized_pnl_today() == D("-4.05")
        assert daemon.engine.risk.fees_today == D("0.05")
        blocked = await venue.requesters[1].create_rfq(later.ticker, contracts=TEN)
        skipped = await daemon.row("rfq_skipped", rfq_id=blocked)
        assert skipped["reason"] == "max_daily_loss_dollars"
        assert venue.maker_quotes(blocked) == []


# ================================================ 7. executions are booked from the fills


async def test_a_partial_fill_is_booked_as_filled(venue: Venue, daemons: Daemons) -> None:
    market = venue.markets(1)[0]
    async with daemons.running() as daemon:
        venue.mock.faults.update({"partial_fill_fraction": 1.0})
        rfq_id = await venue.requester.create_rfq(market.ticker, contracts=TEN)
        quote = await venue.open_quote(rfq_id)
        await venue.requester.accept_quote(quote.id, "yes", rfq_id=rfq_id)
        executed = await daemon.row("execution", quote_id=quote.id)
        assert D(executed["contracts"]) == 5
        assert daemon.engine.risk.position(market.ticker) == 5
        assert daemon.engine.risk.positions()[market.ticker].cost == D("2.00")
        assert dict(daemon.engine.risk.reserved()) == {}
    assert venue.position(market.ticker) == 5


async def test_fills_listed_late_are_waited_for(venue: Venue, daemons: Daemons) -> None:
    market = venue.markets(1)[0]
    async with daemons.running() as daemon:
        venue.mock.faults.update({"fill_listing_delay_seconds": 1.0})
        rfq_id = await venue.requester.create_rfq(market.ticker, contracts=TEN)
        quote = await venue.open_quote(rfq_id)
        await venue.requester.accept_quote(quote.id, "no", rfq_id=rfq_id)
        executed = await daemon.row("execution", quote_id=quote.id)
        assert D(executed["contracts"]) == 10
        assert daemon.engine.risk.position(market.ticker) == -10


async def test_positions_are_reconciled_on_a_timer_not_only_on_reconnect(
    venue: Venue, daemons: Daemons
) -> None:
    market = venue.markets(1)[0]
    settings = daemons.settings(reconcile={"interval_seconds": 0.3})
    async with daemons.running(settings) as daemon:
        # A trade on the account the stream never tells us about.
        exchange = venue.mock.exchange
        now = exchange.clock()
        order = OrderRecord(
            id="manual-order",
            seq=0,
            user=venue.maker,
            market=market,
            side="yes",
            price=D("0.50"),
            initial=D(3),
            filled=D(0),
            remaining=D(3),
            status="resting",
            created=now,
            updated=now,
            client_order_id="manual",
        )
        exchange._fill(order, D(3), is_taker=False, now=now)
        changed = await daemon.row("position_changed", market=market.ticker, reason="reconciled")
        assert D(changed["contracts"]) == 3
        assert daemon.engine.risk.position(market.ticker) == 3
        assert daemon.engine.stream.stats.reconnects == 0
        assert daemon.rows("reconciled", reason="timer")


# ======================================== 8. resting remainders are refused until tracked


def test_rest_remainder_true_is_refused_naming_the_key(
    capsys: pytest.CaptureFixture[str], no_mmbot_env: None
) -> None:
    assert cli.main(["check-config", "--quotes.rest_remainder", "true"]) == 1
    err = capsys.readouterr().err
    assert "quotes.rest_remainder: expected false" in err
    assert "not yet tracked" in err


# ============================================== 9. restart and reconciliation edge cases


async def kill_after_quoting(
    venue: Venue, daemons: Daemons, tmp_path: Path, market: SimMarket, extra: dict[str, Any]
) -> tuple[str, QuoteRecord]:
    """Quote an RFQ in a daemon child, make sure its record is written, then kill -9 it."""
    config = subprocess_config(tmp_path / "run1.toml", daemons.journal, extra)
    async with daemon_process(
        ["run", "--config", str(config)], cwd=tmp_path, env=daemon_env(venue)
    ) as run_1:
        rfq_id = await venue.requester.create_rfq(market.ticker, contracts=TEN)
        quote = await venue.open_quote(rfq_id, within=20)
        await eventually(
            lambda: journal_rows(daemons.journal, "quote_created", quote_id=quote.id),
            "the quote's journal row",
        )
        run_1.process.kill()
        await run_1.exit_code()
    return rfq_id, quote


# Three seconds to confirm: room for a whole daemon start between accept and confirm.
@pytest.mark.parametrize("venue", [0.1], indirect=True)
async def test_an_adopted_acceptance_is_routed_by_its_event(
    venue: Venue, daemons: Daemons, tmp_path: Path
) -> None:
    market = venue.markets(1)[0]
    # The event's own ticker: a pattern that names no market, only the event.
    by_event = {"routes": [{"match": [market.event_ticker], "strategy": FLAT}]}
    assert market.event_ticker != market.ticker
    rfq_id, quote = await kill_after_quoting(
        venue, daemons, tmp_path, market, {"strategies": by_event}
    )
    await venue.requester.accept_quote(quote.id, "yes", rfq_id=rfq_id)
    async with daemons.running(daemons.settings(strategies=by_event)) as daemon:
        confirmed = await daemon.row("confirm_sent", quote_id=quote.id)
        assert confirmed["market"] == market.ticker
        assert status(quote) in ("confirmed", "executed")


@pytest.mark.parametrize("venue", [0.1], indirect=True)
async def test_an_adopted_acceptance_is_declined_when_the_market_moved_against_it(
    venue: Venue, daemons: Daemons, tmp_path: Path
) -> None:
    market = venue.markets(1)[0]
    fair(market, "0.50")
    rfq_id, quote = await kill_after_quoting(venue, daemons, tmp_path, market, {})
    await venue.requester.accept_quote(quote.id, "yes", rfq_id=rfq_id)
    fair(market, "0.20")  # our YES bid is now worth far less than when it was quoted
    async with daemons.running() as daemon:
        declined = await daemon.row("confirm_declined", quote_id=quote.id)
        assert declined["reason"] == "last_look"
        assert quote.confirmed_ts is None
    assert venue.position(market.ticker) == 0


async def test_an_acceptance_of_another_makers_quote_is_ignored(
    venue: Venue, daemons: Daemons
) -> None:
    markets = venue.markets(2)
    async with daemons.running() as daemon:
        foreign = {
            "type": "quote_accepted",
            "msg": {
                "quote_id": "q-someone-else",
                "rfq_id": "r-someone-else",
                "quote_creator_id": "comm_someoneelse0000",
                "rfq_creator_id": "comm_requester00000",
                "market_ticker": markets[0].ticker,
                "yes_bid_dollars": "0.4000",
                "no_bid_dollars": "0.5000",
                "accepted_side": "yes",
                "contracts_accepted_fp": "10.00",
            },
        }
        assert venue.mock.inject_frame(foreign, venue.maker) == 1
        # Events are handled in order: once a later RFQ is quoted, the acceptance was seen.
        await venue.open_quote(await venue.requester.create_rfq(markets[1].ticker, contracts=TEN))
        assert daemon.rows("confirm_declined") == []
        assert daemon.engine.quotes.counters.declines == 0
        assert "q-someone-else" not in daemon.engine.quotes.tracked_quote_ids()


# ================================================================ 10. fail closed locally


async def test_a_kill_switch_file_that_cannot_be_looked_at_counts_as_on(
    venue: Venue, daemons: Daemons, tmp_path: Path
) -> None:
    # A symbolic link to itself: stat() fails with ELOOP, neither "there" nor "not there".
    kill = tmp_path / "KILL"
    kill.symlink_to(kill)
    markets = venue.markets(2)
    settings = daemons.settings(risk={"kill_switch_file": str(kill)})
    async with daemons.running(settings) as daemon:
        assert daemon.engine.risk.kill_switch
        blocked = await venue.requester.create_rfq(markets[0].ticker, contracts=TEN)
        skipped = await daemon.row("rfq_skipped", rfq_id=blocked)
        assert skipped["reason"] == "kill_switch"
        kill.unlink()
        await eventually(lambda: not daemon.engine.risk.kill_switch, "the kill switch to clear")
        await venue.open_quote(await venue.requester.create_rfq(markets[1].ticker, contracts=TEN))


async def test_a_journal_unreadable_at_start_up_stops_the_start_in_one_line(
    venue: Venue,
    daemons: Daemons,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def unreadable(self: Journal, since: object) -> None:
        raise JournalError(f"cannot read journal {self.path}: disk I/O error")

    # Opened fine, then unreadable when today's realised P&L is rebuilt from it.
    monkeypatch.setattr(Journal, "realized_pnl_since", unreadable)
    code = await asyncio.wait_for(
        runcli.run_daemon(daemons.settings(), stop=asyncio.Event(), out=io.StringIO()), 30
    )
    assert code == 1
    err = capsys.readouterr().err
    assert error_lines(err) == [f"error: cannot read journal {daemons.journal}: disk I/O error"]
    assert "Traceback" not in err


async def metrics_url(daemon: Running) -> str:
    """The in-process daemon's metrics base URL, from the line it prints first."""
    found = await eventually(
        lambda: re.search(r"metrics on (http://\S+)/metrics", daemon.out.getvalue()),
        "the metrics line",
    )
    return str(found[1])


async def test_a_clock_the_exchange_refuses_shows_in_readyz_with_a_clock_hint(
    venue: Venue, daemons: Daemons
) -> None:
    async with daemons.running() as daemon:
        base = await metrics_url(daemon)
        venue.mock.faults.update({"clock_skew_seconds": 120})
        await venue.mock.drop_ws()
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:

            async def refused() -> list[str] | None:
                response = await http.get("/readyz")
                reasons: list[str] = response.json()["reasons"]
                both = len(reasons) >= 2 and response.status_code == 503
                return reasons if both else None

            handshake, rest = (await until(refused, "both refusals in /readyz"))[:2]
            assert handshake.startswith("websocket not subscribed: handshake refused: HTTP 401")
            assert "too old" in handshake
            assert "KALSHI-ACCESS-TIMESTAMP is too old" in rest
            assert "check NTP" in rest
            venue.mock.faults.update({"clock_skew_seconds": 0})

            async def ready() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await until(ready, "/readyz to answer 200 again")


# ====================================== 11. a second daemon on one key does not start


async def test_a_second_daemon_on_the_same_key_refuses_to_start_unless_adopting(
    venue: Venue, daemons: Daemons, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    market = venue.markets(1)[0]
    async with daemons.running() as first:
        rfq_id = await venue.requester.create_rfq(market.ticker, contracts=TEN)
        quote = await venue.open_quote(rfq_id)
        second = daemons.settings(journal={"path": str(tmp_path / "second.sqlite")})
        # Refused at start-up; a daemon that started instead never returns by itself.
        code = await asyncio.wait_for(
            runcli.run_daemon(second, stop=asyncio.Event(), out=io.StringIO()), 30
        )
        assert code == 1
        [line] = error_lines(capsys.readouterr().err)
        assert "1 open or accepted quote(s) on this account were not created by the journal" in line
        assert "--adopt-orphans" in line
        assert status(quote) == "open"  # the first daemon's quote was left alone

        stop = asyncio.Event()
        adopting = asyncio.create_task(
            runcli.run_daemon(second, stop=stop, out=io.StringIO(), adopt_orphans=True)
        )
        await eventually(lambda: status(quote) == "cancelled", "the orphan withdrawn")
        rows = await eventually(
            lambda: journal_rows(tmp_path / "second.sqlite", "quote_deleted", quote_id=quote.id),
            "the withdrawal journaled",
        )
        assert [row["reason"] for row in rows] == ["reconcile_untracked"]
        stop.set()
        assert await asyncio.wait_for(adopting, 15) == 0
        # The first daemon learns its quote is gone when its own withdrawal finds it so.
        first.engine.quotes.spawn(first.engine.quotes.cancel_all("test"), "sweep")
        await eventually(lambda: first.engine.quotes.open_quotes == 0, "the first's books")
