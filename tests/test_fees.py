"""Kalshi's fee model and fee rounding (getting_started/fee_rounding.md), in exact dollars."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from mmbot.config import ConfigError, load_settings
from mmbot.fees import FEE_TYPES, FeeAccumulator, FeeModel, round_fill
from mmbot.journal import Journal, format_summary
from mmbot.kalshi.models import MakerFill
from mmbot.observability import Health, Metrics, State
from mmbot.risk import MAX_DAILY_LOSS_DOLLARS, RiskBook, RiskLimits
from mmbot.status import Snapshot
from tests.support.clock import FakeWallClock
from tests.support.quoting import Harness, VirtualTimers

D = Decimal


def _fills(
    price: Decimal, lot: Decimal, trade_fee: Decimal, n: int = 3
) -> list[tuple[Decimal, ...]]:
    """Charge ``n`` buys of ``lot`` at ``price`` to one order, as the worked examples do."""
    accumulator = FeeAccumulator(D("0.01"))
    rows: list[tuple[Decimal, ...]] = []
    for _ in range(n):
        fee = accumulator.charge(-price * lot, trade_fee)
        rows.append((fee.trade_fee, fee.rounding_fee, fee.rebate, fee.net_fee, fee.balance_change))
    return rows


# ---------------------------------------------------------------- the worked examples


def test_subpenny_price_example_rebates_a_cent_on_the_second_fill() -> None:
    # Buy 3 contracts at $0.055 as three 1-lot matches; the docs give the trade fee $0.0085.
    assert _fills(D("0.055"), D(1), D("0.0085")) == [
        (D("0.0085"), D("0.0065"), D(0), D("0.0150"), D("-0.07")),
        (D("0.0085"), D("0.0065"), D("0.01"), D("0.0050"), D("-0.07")),
        (D("0.0085"), D("0.0065"), D(0), D("0.0150"), D("-0.07")),
    ]


def test_fractional_contracts_example_nets_a_zero_fee_on_the_second_fill() -> None:
    # Buy 0.90 contracts at $0.50 as three 0.30-lot matches; trade fee $0.0041.
    assert _fills(D("0.50"), D("0.30"), D("0.0041")) == [
        (D("0.0041"), D("0.0059"), D(0), D("0.0100"), D("-0.16")),
        (D("0.0041"), D("0.0059"), D("0.01"), D("0.0000"), D("-0.16")),
        (D("0.0041"), D("0.0059"), D(0), D("0.0100"), D("-0.16")),
    ]


def test_combined_example_keeps_six_decimal_places_and_rebates_twice() -> None:
    # Buy 0.09 contracts at $0.3301 as three 0.03-lot matches; trade fee $0.0005.
    assert _fills(D("0.3301"), D("0.03"), D("0.0005")) == [
        (D("0.0005"), D("0.009597"), D(0), D("0.010097"), D("-0.02")),
        (D("0.0005"), D("0.009597"), D("0.01"), D("0.000097"), D("-0.02")),
        (D("0.0005"), D("0.009597"), D("0.01"), D("0.000097"), D("-0.02")),
    ]


def test_the_accumulator_holds_the_rounding_not_yet_given_back() -> None:
    accumulator = FeeAccumulator(D("0.01"))
    for expected in (D("0.0065"), D("0.0030"), D("0.0095")):
        accumulator.charge(D("-0.055"), D("0.0085"))
        assert accumulator.accumulated == expected


def test_the_first_fill_walkthrough_of_the_combined_example() -> None:
    assert round_fill(D("-0.009903"), D("0.0005"), D("0.01")) == (
        D("0.0005"),
        D("0.009597"),
        D("-0.02"),
    )


def test_the_trade_fee_is_rounded_up_to_a_centicent() -> None:
    trade_fee, _, _ = round_fill(D("-0.15"), D("0.00400001"), D("0.01"))
    assert trade_fee == D("0.0041")


def test_a_direct_member_pays_no_rounding_at_centicent_precision() -> None:
    fee = FeeAccumulator(D("0.0001")).charge(D("-0.055"), D("0.0085"))
    assert (fee.rounding_fee, fee.net_fee, fee.balance_change) == (D(0), D("0.0085"), D("-0.0635"))


def test_a_fill_is_never_rebated_below_a_zero_net_fee() -> None:
    accumulator = FeeAccumulator(D("0.01"))
    accumulator.charge(D("-0.055"), D("0.0085"))  # 0.0065 accumulated
    fee = accumulator.charge(D("-0.055"), D(0))  # rounding 0.005: a cent is owed back
    assert fee.net_fee >= 0
    assert fee.rebate == 0
    assert accumulator.accumulated == D("0.0115")


# ---------------------------------------------------------------- the fee schedule


def test_the_default_model_is_kalshis_schedule_with_maker_fees() -> None:
    assert FeeModel() == FeeModel("quadratic_with_maker_fees", D("0.0175"), D("0.07"), D("0.01"))


def test_a_maker_fill_pays_the_maker_multiplier_rounded_up_to_the_cent() -> None:
    # 0.0175 x 10 x 0.55 x 0.45 = 0.0433125: 0.0434 trade fee, 0.0066 rounding.
    assert FeeModel().fill_fee(D("0.55"), D(10)) == D("0.0500")


def test_a_taker_fill_pays_the_taker_multiplier() -> None:
    # 0.07 x 10 x 0.55 x 0.45 = 0.17325: 0.1733 trade fee, 0.0067 rounding.
    assert FeeModel().fill_fee(D("0.55"), D(10), maker=False) == D("0.1800")


def test_makers_pay_nothing_on_markets_without_maker_fees() -> None:
    model = FeeModel(fee_type="quadratic")
    assert model.fill_fee(D("0.55"), D(10)) == 0
    assert model.fill_fee(D("0.55"), D(10), maker=False) == D("0.1800")


def test_combo_maker_fees_charge_the_rfq_maker() -> None:
    model = FeeModel(fee_type="quadratic_with_combo_maker_fees")
    assert model.fill_fee(D("0.55"), D(10)) == D("0.0500")


def test_a_flat_fee_is_charged_per_contract() -> None:
    assert FeeModel(fee_type="flat", maker_multiplier=D("0.01")).fill_fee(D("0.3"), D(7)) == D(
        "0.07"
    )


def test_a_fill_fee_is_a_whole_cent_for_a_non_direct_member_at_cent_prices() -> None:
    for price in (D("0.01"), D("0.37"), D("0.5"), D("0.99")):
        fee = FeeModel().fill_fee(price, D(3))
        assert fee == fee.quantize(D("0.01"))


def test_a_sub_penny_fill_pays_the_rounding_to_the_cent() -> None:
    # revenue -0.055, trade fee 0.0175 x 0.055 x 0.945 = 0.00090956 -> 0.0010;
    # balance -0.0560 floored to -0.06: rounding 0.004, net 0.005.
    assert FeeModel().fill_fee(D("0.055"), D(1)) == D("0.0050")


def test_a_zero_contract_fill_costs_nothing() -> None:
    assert FeeModel().fill_fee(D("0.4"), D(0)) == 0


def test_fees_are_decimal_never_float() -> None:
    assert isinstance(FeeModel().fill_fee(D("0.4"), D(2)), Decimal)
    with pytest.raises(ValueError, match="side_price"):
        FeeModel().fill_fee(0.4, D(2))  # type: ignore[arg-type]


def test_an_unknown_fee_type_is_refused() -> None:
    with pytest.raises(ValueError, match="fee type"):
        FeeModel(fee_type="percent")  # type: ignore[arg-type]


# ---------------------------------------------------------------- configuration


def test_the_model_is_built_from_the_fees_section() -> None:
    settings = load_settings(
        overrides={
            "fees": {
                "model": "quadratic",
                "maker_multiplier": "0.035",
                "taker_multiplier": "0.1",
                "balance_precision": "0.0001",
            }
        }
    )
    assert FeeModel.from_settings(settings.fees) == FeeModel(
        "quadratic", D("0.035"), D("0.1"), D("0.0001")
    )


def test_the_fees_section_defaults_to_kalshis_schedule() -> None:
    assert FeeModel.from_settings(load_settings().fees) == FeeModel()


def test_the_fees_section_accepts_every_documented_fee_type() -> None:
    assert set(FEE_TYPES) == {
        "quadratic",
        "quadratic_with_maker_fees",
        "quadratic_with_combo_maker_fees",
        "flat",
    }
    for name in FEE_TYPES:
        assert load_settings(overrides={"fees": {"model": name}}).fees.model == name


@pytest.mark.parametrize(
    ("key", "value"),
    [("model", "percent"), ("balance_precision", "0.03"), ("maker_multiplier", "-0.01")],
)
def test_the_fees_section_refuses_values_no_fee_could_be_charged_by(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"fees.{key}"):
        load_settings(overrides={"fees": {key: value}})


# ---------------------------------------------------------------- the risk book

LIMITS = RiskLimits(
    max_contracts_per_rfq=D(100),
    max_position_per_market=D(100),
    max_exposure_dollars=D(1000),
    max_open_quotes=10,
    max_daily_loss_dollars=D(5),
)


def test_a_fee_comes_off_todays_realised_pnl_and_counts_in_todays_fees() -> None:
    book = RiskBook(LIMITS, clock=FakeWallClock(datetime(2024, 3, 1, 12, tzinfo=UTC)))
    book.record_fee(D("0.05"))
    book.record_fee(D("0.02"))
    assert book.realized_pnl_today() == D("-0.07")
    assert book.fees_today == D("0.07")
    assert book.fees_paid == D("0.07")
    assert book.daily_pnl() == D("-0.07")


def test_the_daily_loss_limit_reads_pnl_net_of_fees() -> None:
    book = RiskBook(LIMITS, clock=FakeWallClock(datetime(2024, 3, 1, 12, tzinfo=UTC)))
    book.mark("M", D("0.50"))
    book.set_realized_today(D("-4.50"))
    # A fill at its mark loses nothing, but 0.50 of fees leave no room for it.
    assert book.reserve("a", "M", MakerFill("yes", D("0.50"), D(10))).ok
    book.release("a")
    book.record_fee(D("0.50"))
    decision = book.reserve("a", "M", MakerFill("yes", D("0.50"), D(10)))
    assert decision.reason == MAX_DAILY_LOSS_DOLLARS


def test_todays_fees_restart_at_utc_midnight_and_the_runs_do_not() -> None:
    clock = FakeWallClock(datetime(2024, 3, 1, 23, 59, tzinfo=UTC))
    book = RiskBook(LIMITS, clock=clock)
    book.record_fee(D("0.05"))
    clock.advance(minutes=1)
    assert (book.fees_today, book.realized_pnl_today()) == (D(0), D(0))
    assert book.fees_paid == D("0.05")


def test_todays_fees_are_rebuilt_with_the_realised_pnl() -> None:
    book = RiskBook(LIMITS, clock=FakeWallClock(datetime(2024, 3, 1, 12, tzinfo=UTC)))
    book.set_realized_today(D("-4.05"), fees=D("0.05"))
    assert (book.realized_pnl_today(), book.fees_today) == (D("-4.05"), D("0.05"))
    assert book.fees_paid == 0  # nothing paid by this run yet


def test_a_negative_or_float_fee_is_a_programming_error() -> None:
    book = RiskBook(LIMITS)
    with pytest.raises(ValueError, match="amount"):
        book.record_fee(D("-0.01"))
    with pytest.raises(TypeError):
        book.record_fee(0.01)  # type: ignore[arg-type]


# ---------------------------------------------------------------- executions


async def _executed(h: Harness, fee_cost: Decimal | None) -> None:
    _, quote_id = await h.quoted("M-1")
    await h.qm.on_quote_accepted(h.exchange.accept(quote_id, "no", D(4)))
    executed = h.exchange.execute(quote_id)
    [listed] = h.exchange.fills[executed.order_id]
    h.exchange.fills[executed.order_id] = [listed.model_copy(update={"fee_cost": fee_cost})]
    h.qm.on_quote_executed(executed)
    await h.qm.wait_idle()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    timers = VirtualTimers(asyncio.get_running_loop())
    timers.install()
    try:
        yield Harness(timers)
    finally:
        timers.uninstall()


async def test_an_execution_is_charged_the_fee_the_exchange_reports(harness: Harness) -> None:
    await _executed(harness, D("0.0321"))
    [execution] = harness.journal.of("execution")
    [position] = harness.journal.of("position_changed")
    assert execution["fee"] == D("0.0321")
    assert (position["fee"], position["realized_pnl_change"]) == (D("0.0321"), D("-0.0321"))
    assert harness.risk.fees_today == D("0.0321")
    assert harness.risk.realized_pnl_today() == D("-0.0321")


async def test_an_execution_without_a_reported_fee_is_priced_with_the_fee_model(
    harness: Harness,
) -> None:
    # 4 NO at 0.48: 0.0175 x 4 x 0.48 x 0.52 = 0.017472, a cent and a bit: 0.02.
    await _executed(harness, None)
    [execution] = harness.journal.of("execution")
    assert execution["fee"] == D("0.02")
    assert harness.risk.fees_today == D("0.02")


async def test_a_market_without_maker_fees_charges_the_maker_nothing(harness: Harness) -> None:
    harness.qm._execution.fee_model = FeeModel(fee_type="quadratic")
    await _executed(harness, None)
    [execution] = harness.journal.of("execution")
    assert execution["fee"] == 0
    assert harness.risk.fees_today == 0


# ---------------------------------------------------------------- the journal


async def test_the_journal_keeps_each_fee_and_rebuilds_todays_pnl_net_of_fees(
    tmp_path: Path,
) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    journal = Journal(tmp_path / "journal.sqlite")
    journal.start()
    for quote_id, fee, realized in (("q1", D("0.05"), D(0)), ("q2", D("0.02"), D("0.20"))):
        journal.record_execution(
            quote_id=quote_id,
            rfq_id="r",
            market="M",
            side="yes",
            price=D("0.40"),
            contracts=D(10),
            order_id="o",
            fee=fee,
        )
        journal.record_position_changed(
            market="M", contracts=D(10), realized_pnl_change=realized - fee, fee=fee
        )
    journal.record_position_changed(market="M", contracts=D(0), realized_pnl_change=D("-4"))
    assert await journal.flush(10)
    # What a restart rebuilds is what the risk book counted: 0.20 - 4, less 0.07 of fees.
    assert journal.realized_pnl_since(since) == D("-3.87")
    assert journal.fees_since(since) == D("0.07")
    assert [row.fee for row in journal.executions()] == [D("0.05"), D("0.02")]
    summary = journal.summary(journal.run_id)
    assert (summary.fees, summary.realized_pnl) == (D("0.07"), D("-3.87"))
    table = format_summary(summary).splitlines()
    assert any(re.fullmatch(r"Fees \(\$\) +0\.07", line) for line in table)
    assert any(re.fullmatch(r"Realised P&L \(\$, net of fees\) +-3\.87", line) for line in table)
    assert await journal.aclose()


# ---------------------------------------------------------------- status and metrics


def _snapshot(**figures: Decimal) -> Snapshot:
    return Snapshot(
        rfqs_seen=3,
        rfqs_quoted=2,
        rfqs_skipped=1,
        skipped={},
        accepts=1,
        confirms=1,
        declines=0,
        executions=1,
        open_quotes=0,
        exposure=D("4"),
        realized_pnl=figures.get("realized", D("1.23")),
        unrealized_pnl=figures.get("unrealized", D("-0.40")),
        fees=figures.get("fees", D("0.05")),
    )


def test_the_status_line_labels_realised_marked_to_market_and_total_pnl_net_of_fees() -> None:
    assert (
        _snapshot()
        .line()
        .endswith(
            "| P&L realised $1.23 | marked-to-market $-0.40 | total $0.83 (net of fees $0.05)"
        )
    )


def test_the_status_event_gives_realised_marked_to_market_total_and_fees() -> None:
    fields = _snapshot().event_fields()
    assert {k: fields[k] for k in ("realized_pnl", "unrealized_pnl", "total_pnl", "fees")} == {
        "realized_pnl": "1.23",
        "unrealized_pnl": "-0.40",
        "total_pnl": "0.83",
        "fees": "0.05",
    }


class _Source:
    def __init__(self, state: State) -> None:
        self.current = state

    def state(self) -> State:
        return self.current

    def health(self) -> Health:
        return Health(ready=True)


def test_todays_fees_are_a_metric_next_to_todays_realised_pnl() -> None:
    metrics = Metrics()
    metrics.bind(_Source(replace(State(), realized_pnl_today=D("-4.05"), fees_today=D("0.05"))))
    body, _ = metrics.render()
    text = body.decode()
    assert "mmbot_fees_today_dollars 0.05" in text
    assert "mmbot_realized_pnl_today_dollars -4.05" in text
