"""A failing strategy is reported where it fails, once with a traceback, and loudly if it persists.

Also: a Params model that declares money as float is refused when the strategy is built.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, MutableMapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from mmbot.cli import main
from mmbot.logs import configure_logging, flush_output
from mmbot.strategy import (
    MarketView,
    QuoteIntent,
    Rfq,
    Strategy,
    StrategyError,
    StrategyParams,
    build_strategy,
    round_down_to_grid,
    safe_quote,
)
from mmbot.strategy_failures import FAILING_STREAK, strategy_failure
from tests.support.env import clear_mmbot_env
from tests.support.factories import rfq as make_rfq
from tests.support.quoting import Boom, Harness, VirtualTimers

HERE = Path(__file__).resolve()
D = Decimal
RFQ = make_rfq(D(100))
MARKET = MarketView(
    ticker="M-1",
    event_ticker="M",
    yes_bid=D("0.40"),
    yes_ask=D("0.44"),
    last_price=None,
    price_ranges=(),
)


def _line_of(marker: str) -> int:
    """The line of this file that holds ``marker`` (a comment on the line that raises)."""
    for number, line in enumerate(HERE.read_text(encoding="utf-8").splitlines(), start=1):
        if line.rstrip().endswith(f"# {marker}"):
            return number
    raise AssertionError(marker)


class Flaky(Strategy[StrategyParams]):
    """Fails in one of two places, or succeeds, as the test says."""

    name = "flaky"
    Params = StrategyParams

    def __init__(self) -> None:
        super().__init__(StrategyParams())
        self.mode = "divide"

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        if self.mode == "divide":
            return QuoteIntent(D(1) / D(0), D(0))  # raises: divide
        if self.mode == "grid":
            # The error is raised inside mmbot's helper; the strategy's own line is the one.
            price = round_down_to_grid(D("NaN"), market.price_ranges)  # raises: grid
            return QuoteIntent(price, D(0))
        if self.mode == "bad_result":
            return "0.40"  # type: ignore[return-value]
        return None


def test_safe_quote_records_the_line_of_the_strategy_that_raised() -> None:
    strategy = Flaky()
    intent, error = safe_quote(strategy, RFQ, MARKET)
    assert intent is None
    assert error is not None
    assert error.startswith("quote() raised DivisionByZero")
    failure = strategy_failure(strategy)
    assert failure is not None
    assert failure.site == f"{HERE}:{_line_of('raises: divide')}"
    assert failure.error == error
    assert isinstance(failure.exception, ArithmeticError)
    assert failure.streak == 1


def test_an_error_raised_in_mmbot_code_points_at_the_strategy_line_that_called_it() -> None:
    strategy = Flaky()
    strategy.mode = "grid"
    safe_quote(strategy, RFQ, MARKET)
    failure = strategy_failure(strategy)
    assert failure is not None
    assert failure.site == f"{HERE}:{_line_of('raises: grid')}"


def test_a_repeated_error_keeps_no_exception_to_format_and_a_new_place_does() -> None:
    strategy = Flaky()
    safe_quote(strategy, RFQ, MARKET)
    failure = strategy_failure(strategy)
    assert failure is not None
    failure.exception = None  # as the responder does once it has logged the traceback
    safe_quote(strategy, RFQ, MARKET)
    assert failure.exception is None  # the same place: nothing to format again
    assert failure.streak == 2
    strategy.mode = "grid"
    safe_quote(strategy, RFQ, MARKET)
    assert failure.exception is not None  # a new place: its traceback is owed
    assert failure.streak == 3


def test_a_malformed_result_counts_as_a_failure_without_a_place() -> None:
    strategy = Flaky()
    strategy.mode = "bad_result"
    _, error = safe_quote(strategy, RFQ, MARKET)
    failure = strategy_failure(strategy)
    assert failure is not None
    assert failure.error == error == "quote() returned str, expected QuoteIntent or None"
    assert failure.site is None
    assert failure.streak == 1


def test_a_success_ends_the_failure_streak() -> None:
    strategy = Flaky()
    for _ in range(3):
        safe_quote(strategy, RFQ, MARKET)
    failure = strategy_failure(strategy)
    assert failure is not None
    assert failure.streak == 3
    strategy.mode = "decline"
    assert safe_quote(strategy, RFQ, MARKET) == (None, None)
    assert failure.streak == 0


def test_a_strategy_that_never_failed_has_no_failure_record() -> None:
    strategy = Flaky()
    strategy.mode = "decline"
    safe_quote(strategy, RFQ, MARKET)
    assert strategy_failure(strategy) is None


# --------------------------------------------------------------------------- through the responder


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    timers = VirtualTimers(asyncio.get_running_loop())
    timers.install()
    try:
        yield Harness(timers)
    finally:
        timers.uninstall()


def _boom(h: Harness) -> Strategy[Any]:
    strategy = h.router.route("B-1", "B")
    assert isinstance(strategy, Boom)
    return strategy


async def _fail(h: Harness, times: int) -> list[MutableMapping[str, Any]]:
    with capture_logs() as logs:
        for _ in range(times):
            await h.qm.on_rfq(h.rfq("B-1"))
    return logs


def _named(logs: list[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


async def test_a_strategy_error_logs_its_traceback_once_and_its_place_every_time(
    harness: Harness,
) -> None:
    logs = await _fail(harness, 3)
    errors = _named(logs, "strategy_error")
    assert len(errors) == 3
    failure = strategy_failure(_boom(harness))
    assert failure is not None
    assert failure.site is not None
    site = failure.site
    assert "tests/support/quoting.py:" in site
    assert all(entry["at"] == site and entry["strategy"] == "boom" for entry in errors)
    assert isinstance(errors[0]["exc_info"], ZeroDivisionError)
    assert all("exc_info" not in entry for entry in errors[1:])
    assert _named(logs, "strategy_failing") == []


async def test_a_strategy_failing_every_rfq_is_reported_once_per_streak(
    harness: Harness,
) -> None:
    logs = await _fail(harness, FAILING_STREAK - 1)
    assert _named(logs, "strategy_failing") == []
    logs = await _fail(harness, 1 + FAILING_STREAK)
    [failing] = _named(logs, "strategy_failing")
    assert failing["log_level"] == "error"
    assert failing["strategy"] == "boom"
    assert failing["failures"] == FAILING_STREAK
    assert failing["last_error"] == "quote() raised ZeroDivisionError: strategy bug"
    assert "tests/support/quoting.py:" in failing["at"]
    # One success ends the streak; a new streak is reported again.
    boom = _boom(harness)
    boom.quote = lambda rfq, market: None  # type: ignore[method-assign]
    await harness.qm.on_rfq(harness.rfq("B-1"))
    del boom.quote
    logs = await _fail(harness, FAILING_STREAK)
    assert len(_named(logs, "strategy_failing")) == 1


async def test_the_first_strategy_error_reaches_the_log_with_its_traceback(
    harness: Harness,
) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    for _ in range(2):
        await harness.qm.on_rfq(harness.rfq("B-1"))
    assert flush_output()
    events = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    first, second = [e for e in events if e["event"] == "strategy_error"]
    assert "Traceback" in first["exception"]
    assert 'raise ZeroDivisionError("strategy bug")' in first["exception"]
    assert "exception" not in second
    assert first["at"] == second["at"]


# --------------------------------------------------------------------------- float parameters


class FloatMoneyParams(StrategyParams):
    edge: float = 0.03
    max_wait_seconds: float = 1.5
    cap: Decimal | float | None = None


class FloatMoney(Strategy[FloatMoneyParams]):
    name = "float_money"
    Params = FloatMoneyParams

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        return None


class SecondsParams(StrategyParams):
    seconds: float = 1.0
    ttl_seconds: float | None = None
    edge: Decimal = D("0.03")


class Seconds(Strategy[SecondsParams]):
    name = "seconds"
    Params = SecondsParams

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        return None


def test_a_params_model_with_a_float_money_field_is_refused_when_built() -> None:
    with pytest.raises(StrategyError) as caught:
        build_strategy(f"{__name__}:FloatMoney")
    text = str(caught.value)
    assert text.startswith(f"strategy 'float_money' ({__name__}:FloatMoney): FloatMoneyParams")
    assert "edge, cap" in text
    assert "Decimal" in text
    # max_wait_seconds is a time: allowed.
    assert caught.value.problems == (
        "edge: declared float, use Decimal",
        "cap: declared float, use Decimal",
    )


def test_float_times_named_in_seconds_are_allowed() -> None:
    strategy = build_strategy(f"{__name__}:Seconds", {"ttl_seconds": 2.5})
    assert strategy.params.ttl_seconds == 2.5


@pytest.mark.parametrize(
    "ref",
    [
        "fixed_spread",
        "inventory_skew",
        "size_aware",
        "strategies.fixed_spread:FixedSpread",
        "strategies.size_aware:SizeAware",
    ],
)
def test_the_bundled_strategies_still_build(ref: str) -> None:
    build_strategy(ref)


def test_the_example_plugin_still_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = HERE.parents[1] / "examples" / "strategy_plugin"
    monkeypatch.syspath_prepend(str(plugin))
    build_strategy("acme_strategies.book_spread:BookSpread")


def test_check_config_refuses_a_float_money_field(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clear_mmbot_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMBOT_LOG__FORMAT", "json")
    monkeypatch.setenv("MMBOT_STRATEGIES__DEFAULT", f"{__name__}:FloatMoney")
    assert main(["check-config"]) == 1
    err = capsys.readouterr().err
    assert "strategies.default" in err
    assert "FloatMoneyParams declares float field(s) edge, cap" in err
