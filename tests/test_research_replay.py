"""Replaying strategies over recordings: fill models, settlement, risk, determinism, bad input.

Every recording here is hand-made (a few RFQ rows in a tmp_path) and every expected number
is worked out by hand in the test, from the strategy's documented prices:
``fixed_spread`` with ``half_spread`` 0.02 on a view of YES bid 0.49 / ask 0.51 (mid 0.50)
bids ``0.50 - 0.02 = 0.48`` for YES and ``(1 - 0.50) - 0.02 = 0.48`` for NO, and the pair
``0.96`` stays under ``1 - quotes.min_edge = 0.99``, so shaping leaves it alone.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from mmbot.cli import main
from mmbot.config import Settings
from mmbot.config.models import RiskSettings
from mmbot.fees import FeeModel
from mmbot.mock.synthetic import synthesize
from mmbot.research.recording import RecordingError, load_recording
from mmbot.research.replay import FillModel, LabelResult, ReplayError
from mmbot.research.sweep import SweepError, parse_sweep, sweep_jobs
from mmbot.strategy import Route, StrategyRouter
from tests.support.env import clear_mmbot_env
from tests.support.replay import (
    Exploding,
    ExplodingParams,
    fixed_spread,
    load_flow,
    rfq_row,
    run,
    write_rfqs,
    write_settlements,
)

D = Decimal
MARKOUT = FillModel(name="markout")
RECORDED = FillModel(name="recorded")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clear_mmbot_env(monkeypatch)
    monkeypatch.chdir(tmp_path)


def _row(result: LabelResult, rfq_id: str) -> dict[str, Any]:
    """The replay's columns of one RFQ, as a dict."""
    index = result.columns["rfq_id"].index(rfq_id)
    return {name: values[index] for name, values in result.columns.items()}


# --------------------------------------------------------------------------- markout


def test_markout_model_scores_each_quote_by_the_mean_edge_of_its_quoted_sides(
    tmp_path: Path,
) -> None:
    # min_price 0.30 makes some quotes one-sided, so the mean is not always (1 - yes - no) / 2.
    write_rfqs(
        tmp_path / "rec" / "rfqs-1.parquet",
        [
            # mid 0.50: yes 0.48, no 0.48 (both sides).
            rfq_row("r0", ts=0, market="M-A", bid="0.49", ask="0.51", mids=("0.53", "0.45")),
            # mid 0.80: yes 0.78; no (0.20 - 0.02 = 0.18) < min_price 0.30 -> 0: YES only.
            rfq_row("r1", ts=5, market="M-B", bid="0.79", ask="0.81", mids=("0.85", "0.70")),
            # mid 0.25: yes 0.23 < 0.30 -> 0; no 0.75 - 0.02 = 0.73: NO only.
            rfq_row("r2", ts=10, market="M-C", bid="0.24", ask="0.26", mids=("0.20", "0.31")),
            # mid 0.50 again, the 10 s mid never sampled.
            rfq_row("r3", ts=15, market="M-D", bid="0.49", ask="0.51", mids=("0.40", None)),
        ],
    )
    result = run(
        load_flow(tmp_path / "rec"),
        MARKOUT,
        router=fixed_spread(half_spread="0.02", min_price="0.30"),
    )

    assert result.columns["yes_bid"] == [D("0.48"), D("0.78"), D("0"), D("0.48")]
    assert result.columns["no_bid"] == [D("0.48"), D("0"), D("0.73"), D("0.48")]
    # r0: 1 s: ((0.53 - 0.48) + (0.47 - 0.48)) / 2 = (0.05 - 0.01) / 2 = 0.02
    #     10 s: ((0.45 - 0.48) + (0.55 - 0.48)) / 2 = (-0.03 + 0.07) / 2 = 0.02
    # r1: YES only: 1 s: 0.85 - 0.78 = 0.07; 10 s: 0.70 - 0.78 = -0.08
    # r2: NO only: 1 s: (1 - 0.20) - 0.73 = 0.07; 10 s: (1 - 0.31) - 0.73 = -0.04
    # r3: 1 s: ((0.40 - 0.48) + (0.60 - 0.48)) / 2 = (-0.08 + 0.12) / 2 = 0.02; 10 s: none
    assert result.columns["markout_1s"] == [D("0.02"), D("0.07"), D("0.07"), D("0.02")]
    assert result.columns["markout_10s"] == [D("0.02"), D("-0.08"), D("-0.04"), None]
    # No fills under the markout model.
    assert result.columns["filled_side"] == [None] * 4
    assert result.columns["position"] == [D(0)] * 4
    assert result.summary["fills"] == 0
    assert result.summary["quoted"] == 4
    assert D(result.summary["realized_pnl"]) == 0
    # Means: 1 s over four quotes: (0.02 + 0.07 + 0.07 + 0.02) / 4 = 0.18 / 4 = 0.045;
    # 10 s over the three with a mid: (0.02 - 0.08 - 0.04) / 3 = -0.10 / 3.
    assert D(result.summary["markout"]["1"]) == D("0.045")
    assert D(result.summary["markout"]["10"]) == D("-0.10") / 3


# --------------------------------------------------------------------------- recorded


def test_recorded_model_fills_only_when_our_bid_is_at_least_the_recorded_one(
    tmp_path: Path,
) -> None:
    # Our bids are 0.48 on both sides of every RFQ (mid 0.50); each in its own market.
    write_rfqs(
        tmp_path / "rec" / "rfqs-1.parquet",
        [
            # Recorded YES at 0.48: ours 0.48 >= 0.48 -> fills YES.
            rfq_row("equal", ts=0, market="M-A", accepted_side="yes", accepted_price="0.48",
                    accepted_contracts="10", confirm="confirmed", executed="10"),
            # Recorded YES at 0.49: ours 0.48 < 0.49 -> no fill.
            rfq_row("worse", ts=10, market="M-B", accepted_side="yes", accepted_price="0.49",
                    accepted_contracts="10", confirm="confirmed", executed="10"),
            # Recorded NO at 0.45: ours 0.48 >= 0.45 -> fills NO at our own bid.
            rfq_row("better", ts=20, market="M-C", accepted_side="no", accepted_price="0.45",
                    accepted_contracts="10", confirm="confirmed", executed="10"),
            # Never accepted -> no fill.
            rfq_row("unaccepted", ts=30, market="M-D"),
        ],
    )  # fmt: skip
    result = run(load_flow(tmp_path / "rec"), RECORDED)

    equal, worse, better, unaccepted = (
        _row(result, r) for r in ("equal", "worse", "better", "unaccepted")
    )
    assert (equal["filled_side"], equal["fill_price"], equal["filled_contracts"]) == (
        "yes",
        D("0.48"),
        D(10),
    )
    assert worse["filled_side"] is None
    assert (better["filled_side"], better["fill_price"], better["filled_contracts"]) == (
        "no",
        D("0.48"),
        D(10),
    )
    assert unaccepted["filled_side"] is None
    assert result.summary["fills"] == 2
    # 10 + 10 contracts bought.
    assert D(result.summary["contracts_bought"]) == 20


@pytest.mark.parametrize(
    ("accepted_after", "last_look", "filled"),
    [
        (12.0, True, False),  # past the 10 s horizon: YES worth 0.40 against 0.50 quoted
        (12.0, False, True),  # the same with quotes.last_look off
        (0.5, True, True),  # before the first horizon: only the view's mid is known
        (5.0, True, True),  # after the 1 s horizon only: 0.49, within the 0.02 tolerance
    ],
)
def test_recorded_acceptances_get_the_daemon_s_last_look(
    tmp_path: Path, accepted_after: float, last_look: bool, filled: bool
) -> None:
    write_rfqs(
        tmp_path / "rec" / "rfqs-1.parquet",
        [
            rfq_row("moved", ts=0, mids=("0.49", "0.40"), accepted_side="yes",
                    accepted_price="0.48", accepted_contracts="10", confirm="confirmed",
                    executed="10", accepted_after=accepted_after, closed_after=20.0),
        ],
    )  # fmt: skip
    # A quote that lives past the 10 s horizon (quotes.ttl_seconds is 10 by default).
    settings = Settings.model_validate({"quotes": {"last_look": last_look, "ttl_seconds": 30}})
    result = run(load_flow(tmp_path / "rec"), RECORDED, settings=settings)
    row = _row(result, "moved")
    assert (row["filled_side"] == "yes") is filled
    if not filled:
        assert row["reason"] == "declined:last_look"
    assert result.summary["last_look_declines"] == (0 if filled else 1)


def test_recorded_model_caps_the_recorded_size_at_what_we_offered(tmp_path: Path) -> None:
    # A $5.00 budget RFQ: the live quote's NO at 0.45 offered floor(5.00 / 0.45) = 11
    # contracts and the requester took 11; our NO at 0.48 offers floor(5.00 / 0.48) =
    # floor(10.41..) = 10, so at most 10 fill.
    write_rfqs(
        tmp_path / "rec" / "rfqs-1.parquet",
        [
            rfq_row("budget", ts=0, contracts=None, target_cost="5.00", accepted_side="no",
                    accepted_price="0.45", accepted_contracts="11", confirm="confirmed",
                    executed="11"),
        ],
    )  # fmt: skip
    result = run(load_flow(tmp_path / "rec"), RECORDED)

    row = _row(result, "budget")
    assert (row["filled_side"], row["fill_price"], row["filled_contracts"]) == (
        "no",
        D("0.48"),
        D(10),
    )
    # NO 10 is a position of -10.
    assert D(result.summary["contracts_bought"]) == 10


def test_recorded_model_fills_the_accepted_size_of_a_quote_the_live_run_did_not_confirm(
    tmp_path: Path,
) -> None:
    # The live run declined to confirm (so nothing says what the exchange would have
    # executed): the replay takes the recorded acceptance's 7 of the 10 offered, in full.
    write_rfqs(
        tmp_path / "rec" / "rfqs-1.parquet",
        [
            rfq_row("declined", ts=0, accepted_side="yes", accepted_price="0.48",
                    accepted_contracts="7", confirm="declined", executed=None),
            rfq_row("later", ts=30),
        ],
    )  # fmt: skip
    result = run(load_flow(tmp_path / "rec"), RECORDED)

    assert _row(result, "declined")["filled_contracts"] == D(7)
    assert _row(result, "later")["position"] == D(7)


def test_recorded_model_gives_no_fill_for_a_confirmed_quote_the_exchange_never_executed(
    tmp_path: Path,
) -> None:
    write_rfqs(
        tmp_path / "rec" / "rfqs-1.parquet",
        [
            rfq_row("voided", ts=0, accepted_side="yes", accepted_price="0.48",
                    accepted_contracts="10", confirm="confirmed", executed=None),
            # A later RFQ in the same market: its row shows the position left (none).
            rfq_row("later", ts=30),
        ],
    )  # fmt: skip
    result = run(load_flow(tmp_path / "rec"), RECORDED)

    assert _row(result, "voided")["filled_side"] is None
    assert _row(result, "later")["position"] == 0
    assert result.summary["fills"] == 0
    assert D(result.summary["contracts_bought"]) == 0


def test_recorded_model_commits_only_the_executed_contracts_of_a_partial_execution(
    tmp_path: Path,
) -> None:
    write_rfqs(
        tmp_path / "rec" / "rfqs-1.parquet",
        [
            rfq_row("partial", ts=0, accepted_side="yes", accepted_price="0.48",
                    accepted_contracts="10", confirm="confirmed", executed="4"),
            rfq_row("later", ts=30),
        ],
    )  # fmt: skip
    result = run(load_flow(tmp_path / "rec"), RECORDED)

    assert _row(result, "partial")["filled_contracts"] == D(4)
    # YES 4 committed: the later row sees a position of +4.
    assert _row(result, "later")["position"] == D(4)
    assert D(result.summary["contracts_bought"]) == 4


def _yes_then_no(tmp_path: Path) -> Path:
    """YES 10 at 0.48 in M-A, then NO 6 at 0.38 in M-A (which closes 6 of the 10)."""
    directory = tmp_path / "rec"
    write_rfqs(
        directory / "rfqs-1.parquet",
        [
            # mid 0.50: yes 0.48, no 0.48; the requester takes YES 10 at 0.48.
            rfq_row("buy-yes", ts=0, market="M-A", accepted_side="yes", accepted_price="0.48",
                    accepted_contracts="10", confirm="confirmed", executed="10"),
            # mid 0.60: yes 0.58, no (0.40 - 0.02) = 0.38; the requester takes NO 6 at 0.38.
            rfq_row("buy-no", ts=30, market="M-A", bid="0.59", ask="0.61", contracts="6",
                    accepted_side="no", accepted_price="0.38", accepted_contracts="6",
                    confirm="confirmed", executed="6"),
        ],
    )  # fmt: skip
    return directory


def test_recorded_model_realizes_pnl_when_a_no_buy_closes_a_yes_position(tmp_path: Path) -> None:
    result = run(load_flow(_yes_then_no(tmp_path)), RECORDED, fees=FeeModel(fee_type="quadratic"))

    assert _row(result, "buy-no")["no_bid"] == D("0.38")
    # YES 10 at 0.48: position +10, cost 10 * 0.48 = 4.80.
    # NO 6 at 0.38 nets 6 pairs, each paying $1: realized = 6 * (1 - 0.38) - released cost
    # 4.80 * 6 / 10 = 2.88 -> 3.72 - 2.88 = 0.84. Left: YES 4 costing 4.80 - 2.88 = 1.92.
    assert D(result.summary["realized_pnl"]) == D("0.84")
    assert D(result.summary["fees"]) == 0
    # Marked at the last mid, 0.60: 4 * 0.60 - 1.92 = 2.40 - 1.92 = 0.48.
    assert D(result.summary["mtm_pnl"]) == D("0.48")
    # 0.84 + 0.48 = 1.32.
    assert D(result.summary["total_pnl"]) == D("1.32")
    assert result.columns["realized_pnl"][-1] == D("0.84")


def test_recorded_model_charges_maker_fees_rounded_as_the_exchange_does(tmp_path: Path) -> None:
    # The default fee schedule, quadratic_with_maker_fees, at the cent's balance precision.
    result = run(load_flow(_yes_then_no(tmp_path)), RECORDED, fees=None)

    # YES 10 at 0.48: 0.0175 * 10 * 0.48 * 0.52 = 0.04368 -> ceiled to 0.0437; the balance
    # change -4.80 - 0.0437 = -4.8437 floors to -4.85, a rounding fee of 0.0063: 0.05 in all.
    assert _row(result, "buy-yes")["fee"] == D("0.05")
    # NO 6 at 0.38: 0.0175 * 6 * 0.38 * 0.62 = 0.024738 -> 0.0248; -2.28 - 0.0248 = -2.3048
    # floors to -2.31, a rounding fee of 0.0052: 0.03 in all.
    assert _row(result, "buy-no")["fee"] == D("0.03")
    # 0.05 + 0.03 = 0.08.
    assert D(result.summary["fees"]) == D("0.08")
    # Realized net of fees: 0.84 - 0.08 = 0.76.
    assert D(result.summary["realized_pnl"]) == D("0.76")
    # 0.76 + 0.48 marked to market = 1.24.
    assert D(result.summary["total_pnl"]) == D("1.24")


# --------------------------------------------------------------------------- threshold


def _one_quote(tmp_path: Path, mids: tuple[str, str]) -> Path:
    directory = tmp_path / "rec"
    # mid 0.50: yes 0.48, no 0.48.
    write_rfqs(directory / "rfqs-1.parquet", [rfq_row("r0", ts=0, mids=mids)])
    return directory


def test_threshold_model_accepts_the_side_within_requester_edge_of_its_value(
    tmp_path: Path,
) -> None:
    # 1 s mid 0.51: YES gives up 0.51 - 0.48 = 0.03 > 0.02, NO (1 - 0.51) - 0.48 = 0.01 <= 0.02.
    flow = load_flow(_one_quote(tmp_path, ("0.51", "0.40")))
    result = run(flow, FillModel(name="threshold", requester_edge=D("0.02")))

    row = _row(result, "r0")
    assert (row["filled_side"], row["fill_price"], row["filled_contracts"]) == (
        "no",
        D("0.48"),
        D(10),
    )
    assert row["position"] == D(-10)
    assert result.summary["fills"] == 1


def test_threshold_model_declines_to_fill_when_no_side_is_within_requester_edge(
    tmp_path: Path,
) -> None:
    # 1 s mid 0.51: YES gives up 0.03, NO gives up 0.01; both above an edge of 0.005.
    flow = load_flow(_one_quote(tmp_path, ("0.51", "0.40")))
    result = run(flow, FillModel(name="threshold", requester_edge=D("0.005")))

    assert _row(result, "r0")["filled_side"] is None
    assert result.summary["fills"] == 0


def test_threshold_model_accepts_a_bid_exactly_requester_edge_below_its_value(
    tmp_path: Path,
) -> None:
    # 1 s mid 0.505: YES gives up 0.505 - 0.48 = 0.025; NO (1 - 0.505) - 0.48 = 0.015.
    flow = load_flow(_one_quote(tmp_path, ("0.505", "0.40")))

    at_edge = run(flow, FillModel(name="threshold", requester_edge=D("0.015")))
    assert _row(at_edge, "r0")["filled_side"] == "no"
    # Just under: 0.015 > 0.0149, and 0.025 too: no fill.
    under = run(flow, FillModel(name="threshold", requester_edge=D("0.0149")))
    assert _row(under, "r0")["filled_side"] is None


def test_threshold_model_takes_the_side_that_costs_the_requester_least(tmp_path: Path) -> None:
    # Edge 0.05, 1 s mid 0.51: YES gives up 0.03 and NO 0.01, both within: NO costs less.
    flow = load_flow(_one_quote(tmp_path, ("0.51", "0.40")))
    result = run(flow, FillModel(name="threshold", requester_edge=D("0.05")))

    assert _row(result, "r0")["filled_side"] == "no"


def test_threshold_model_judges_by_the_chosen_horizon(tmp_path: Path) -> None:
    # 10 s mid 0.40: YES gives up 0.40 - 0.48 = -0.08 (the requester gains); NO gives up
    # (1 - 0.40) - 0.48 = 0.12 > 0.02. YES fills.
    flow = load_flow(_one_quote(tmp_path, ("0.51", "0.40")))
    result = run(flow, FillModel(name="threshold", requester_edge=D("0.02"), horizon=10))

    row = _row(result, "r0")
    assert (row["filled_side"], row["filled_contracts"]) == ("yes", D(10))
    # The fill's markout: 1 s: 0.51 - 0.48 = 0.03; 10 s: 0.40 - 0.48 = -0.08.
    assert row["fill_markout_1s"] == D("0.03")
    assert row["fill_markout_10s"] == D("-0.08")


def test_threshold_model_refuses_a_horizon_the_recording_does_not_have(tmp_path: Path) -> None:
    flow = load_flow(_one_quote(tmp_path, ("0.51", "0.40")))
    with pytest.raises(ReplayError, match=r"threshold horizon 60s is not recorded"):
        run(flow, FillModel(name="threshold", horizon=60))


def test_replay_cli_refuses_a_threshold_horizon_that_is_not_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = _one_quote(tmp_path, ("0.51", "0.40"))
    out = tmp_path / "out"
    argv = ["replay", str(recording), "--strategy", "fixed_spread", "--fill-model", "threshold",
            "--threshold-horizon", "60", "--out", str(out)]  # fmt: skip
    assert main(argv) != 0
    assert "--threshold-horizon 60" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------- settlement


def test_settlement_closes_open_positions_at_zero_or_one(tmp_path: Path) -> None:
    directory = tmp_path / "rec"
    write_rfqs(
        directory / "rfqs-1.parquet",
        [
            # 1 s mid 0.47: YES gives up 0.47 - 0.48 = -0.01 <= 0.02; NO 0.53 - 0.48 = 0.05.
            # -> buys YES 10 at 0.48 in M-A (cost 4.80).
            rfq_row("yes-a", ts=0, market="M-A", mids=("0.47", "0.47")),
            # 1 s mid 0.55: YES gives up 0.07; NO 0.45 - 0.48 = -0.03 <= 0.02.
            # -> buys NO 10 at 0.48 in M-B (cost 4.80).
            rfq_row("no-b", ts=5, market="M-B", mids=("0.55", "0.55")),
            # After both settled: a stale view, so no quote; its row shows M-A's position.
            rfq_row("after", ts=120, market="M-A", stale=True),
        ],
    )
    write_settlements(directory / "settlements-1.parquet", [(60, "M-A", "0"), (61, "M-B", "0")])
    result = run(load_flow(directory), FillModel(name="threshold", requester_edge=D("0.02")))

    assert _row(result, "yes-a")["filled_side"] == "yes"
    assert _row(result, "no-b")["filled_side"] == "no"
    after = _row(result, "after")
    assert after["reason"] == "stale_market_data"
    assert after["position"] == 0
    # M-A settles at 0: YES 10 pays 0, realized 0 - 4.80 = -4.80.
    # M-B settles at 0: NO pays 1 - 0 = 1 a contract, realized 10 - 4.80 = 5.20.
    # Total -4.80 + 5.20 = 0.40, and nothing left to mark.
    assert after["realized_pnl"] == D("0.40")
    assert D(result.summary["realized_pnl"]) == D("0.40")
    assert D(result.summary["mtm_pnl"]) == 0


def test_settlement_at_one_pays_a_yes_position_in_full(tmp_path: Path) -> None:
    directory = tmp_path / "rec"
    # As above: YES 10 at 0.48 in M-A, cost 4.80.
    write_rfqs(directory / "rfqs-1.parquet", [rfq_row("yes-a", ts=0, mids=("0.47", "0.47"))])
    write_settlements(directory / "settlements-1.parquet", [(60, "MKT-A", "1")])
    result = run(load_flow(directory), FillModel(name="threshold", requester_edge=D("0.02")))

    assert _row(result, "yes-a")["filled_side"] == "yes"
    # 10 * 1 - 4.80 = 5.20.
    assert D(result.summary["realized_pnl"]) == D("5.20")
    assert D(result.summary["mtm_pnl"]) == 0


# --------------------------------------------------------------------------- risk


def test_a_fill_that_would_break_the_position_limit_is_declined_and_limits_later_quotes(
    tmp_path: Path,
) -> None:
    settings = Settings(risk=RiskSettings(max_position_per_market=D(15)))
    write_rfqs(
        tmp_path / "rec" / "rfqs-1.parquet",
        [
            # Quoted at 0 with nothing held: YES 10 -> 10 <= 15. Accepted at 1 s, executed at 2 s.
            rfq_row("first", ts=0, accepted_side="yes", accepted_price="0.48",
                    accepted_contracts="10", accepted_after=1, confirm="confirmed",
                    executed="10", closed_after=2),
            # Quoted at 0.5 s, before anything is reserved: 10 <= 15 passes. Accepted at
            # 1.2 s while "first" holds 10: 0 committed + 10 pending + 10 = 20 > 15: declined.
            rfq_row("second", ts=0.5, accepted_side="yes", accepted_price="0.48",
                    accepted_contracts="10", accepted_after=0.7, confirm="confirmed",
                    executed="10", closed_after=1.5),
            # At 5 s, holding YES 10: a YES side would allow 10 + 10 = 20 > 15 and is dropped;
            # NO allows 10 - 10 = 0, which passes.
            rfq_row("limited", ts=5),
        ],
    )  # fmt: skip
    result = run(load_flow(tmp_path / "rec"), RECORDED, settings=settings)

    first, second, limited = (_row(result, r) for r in ("first", "second", "limited"))
    assert first["filled_contracts"] == D(10)
    assert second["filled_side"] is None
    assert second["reason"].startswith("declined:")
    assert "max_position_per_market" in second["reason"]
    assert limited["position"] == D(10)
    assert (limited["decision"], limited["yes_bid"], limited["no_bid"]) == (
        "quoted",
        D(0),
        D("0.48"),
    )
    assert result.summary["fills"] == 1


# --------------------------------------------------------------------------- determinism


def test_two_replays_of_the_same_recording_give_identical_columns(tmp_path: Path) -> None:
    synthesize(tmp_path / "rec", rfqs=200, seed=11, horizons=(1, 10))
    model = FillModel(name="threshold", requester_edge=D("0.02"))

    first = run(load_flow(tmp_path / "rec"), model, fees=None)
    second = run(load_flow(tmp_path / "rec"), model, fees=None)

    # Something happened worth comparing: quotes and fills.
    assert first.summary["quoted"] > 0
    assert first.summary["fills"] > 0
    assert first.columns == second.columns
    assert first.summary == second.summary


# --------------------------------------------------------------------------- bad input


def test_a_recording_of_an_unknown_schema_version_is_refused_naming_file_and_version(
    tmp_path: Path,
) -> None:
    path = write_rfqs(tmp_path / "rec" / "rfqs-1.parquet", [rfq_row("r0", ts=0)], version="99")

    with pytest.raises(RecordingError) as caught:
        load_recording([tmp_path / "rec"])
    message = str(caught.value)
    assert str(path) in message
    assert "version 99" in message


def test_a_truncated_file_is_skipped_and_the_rest_replayed(tmp_path: Path) -> None:
    directory = tmp_path / "rec"
    write_rfqs(directory / "rfqs-1.parquet", [rfq_row("a0", ts=0), rfq_row("a1", ts=5)])
    broken = write_rfqs(directory / "rfqs-2.parquet", [rfq_row("b0", ts=10), rfq_row("b1", ts=15)])
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])

    recording = load_recording([directory])
    assert [path for path, _ in recording.skipped] == [broken]
    result = run(load_flow(directory), MARKOUT)
    assert result.columns["rfq_id"] == ["a0", "a1"]
    assert result.summary["rfqs"] == 2
    assert result.summary["quoted"] == 2


def test_a_strategy_that_raises_on_every_rfq_is_counted_and_skipped(tmp_path: Path) -> None:
    write_rfqs(
        tmp_path / "rec" / "rfqs-1.parquet",
        [rfq_row("r0", ts=0), rfq_row("r1", ts=5, market="M-B"), rfq_row("r2", ts=10)],
    )
    router = StrategyRouter([Route(patterns=("*",), strategy=Exploding(ExplodingParams()))])
    result = run(load_flow(tmp_path / "rec"), MARKOUT, router=router)

    assert result.columns["decision"] == ["skipped"] * 3
    assert result.columns["reason"] == ["strategy_error"] * 3
    assert result.summary["strategy_errors"] == 3
    assert result.summary["quoted"] == 0
    assert "boom on r0" in result.summary["first_strategy_error"]


def test_sweep_of_an_undeclared_parameter_fails_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = write_rfqs(tmp_path / "rec" / "rfqs-1.parquet", [rfq_row("r0", ts=0)])
    out = tmp_path / "out"
    argv = ["replay", str(recording), "--strategy", "fixed_spread",
            "--sweep", "no_such_knob=0.01:0.03:0.01", "--out", str(out)]  # fmt: skip

    assert main(argv) != 0
    assert "no_such_knob" in capsys.readouterr().err
    assert not out.exists()


def test_sweep_jobs_refuses_an_undeclared_parameter() -> None:
    with pytest.raises(SweepError, match="no_such_knob"):
        sweep_jobs("fixed_spread", {}, [("no_such_knob", [D("0.01")])])


def test_parse_sweep_ranges_include_the_stop_value() -> None:
    assert parse_sweep(["half_spread=0.01:0.03:0.01"]) == [
        ("half_spread", [D("0.01"), D("0.02"), D("0.03")])
    ]
    # 1, 1.5, 2: the stop itself is the last value.
    assert parse_sweep(["x=1:2:0.5"]) == [("x", [D("1"), D("1.5"), D("2")])]
    # A stop between steps: 0, 0.3, 0.6, 0.9 (1.2 would pass it).
    assert parse_sweep(["x=0:1:0.3"]) == [("x", [D("0"), D("0.3"), D("0.6"), D("0.9")])]
    # start == stop: the one value.
    assert parse_sweep(["x=0.05:0.05:0.01"]) == [("x", [D("0.05")])]
    assert parse_sweep(["x=a,b"]) == [("x", ["a", "b"])]


# --------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("synthetic") / "rec"
    synthesize(directory, rfqs=300, seed=5, horizons=(1, 10))
    return directory


def _check_result(out: Path, labels: set[str]) -> None:
    document = json.loads((out / "result.json").read_text())
    assert {entry["label"] for entry in document["strategies"]} == labels
    assert document["rfqs"] == 300
    table = pq.read_table(out / "quotes.parquet")
    # 300 RFQs x one row per label.
    assert table.num_rows == 300 * len(labels)
    counts = {label: 0 for label in labels}
    for label in table.column("label").to_pylist():
        counts[label] += 1
    assert counts == dict.fromkeys(labels, 300)


def test_replay_cli_compares_two_strategies_side_by_side(
    synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["replay", str(synthetic),
            "--strategy", "fixed_spread", "--params", '{"half_spread": "0.02"}',
            "--strategy", "inventory_skew",
            "--fill-model", "threshold", "--jobs", "2", "--out", str(out)]  # fmt: skip

    assert main(argv) == 0, capsys.readouterr().err
    _check_result(out, {"fixed_spread half_spread=0.02", "inventory_skew"})


def test_replay_cli_sweeps_a_parameter_over_three_values(
    synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["replay", str(synthetic), "--strategy", "fixed_spread",
            "--sweep", "half_spread=0.01:0.03:0.01", "--fill-model", "threshold",
            "--jobs", "2", "--out", str(out)]  # fmt: skip

    assert main(argv) == 0, capsys.readouterr().err
    _check_result(
        out,
        {
            "fixed_spread half_spread=0.01",
            "fixed_spread half_spread=0.02",
            "fixed_spread half_spread=0.03",
        },
    )
