"""The strategy API: loading, parameter validation, routing, safe_quote and price helpers."""

from __future__ import annotations

import asyncio
import inspect
import re
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError

import mmbot.strategy as strategy_module
from mmbot.strategy import (
    ENTRY_POINT_GROUP,
    FillInfo,
    MarketView,
    QuoteIntent,
    Rfq,
    Route,
    Strategy,
    StrategyError,
    StrategyParams,
    StrategyRouter,
    available_strategies,
    build_strategy,
    clamp_pair,
    load_strategy_class,
    round_down_to_grid,
    safe_quote,
)
from mmbot_strategies.fixed_spread import FixedSpread
from mmbot_strategies.inventory_skew import InventorySkew
from mmbot_strategies.size_aware import SizeAware
from tests.support.factories import CENT_GRID, GRIDS, TAILS_GRID, quotable_prices, rfq
from tests.support.factories import market_view as market

D = Decimal
RFQ = rfq(D(100))


# --------------------------------------------------------------------------- test-local strategies


class EchoParams(StrategyParams):
    yes: Decimal = D("0.40")
    no: Decimal = D("0.50")
    label: str = "echo"
    count: int = 1
    seconds: float = 1.0


class Echo(Strategy[EchoParams]):
    """Returns its parameters as the quote."""

    name = "echo"
    Params = EchoParams

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        return QuoteIntent(self.params.yes, self.params.no)


class RequiredParams(StrategyParams):
    edge: Decimal


class Required(Strategy[RequiredParams]):
    name = "required"
    Params = RequiredParams

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        return None


class LaxParams(BaseModel):
    # A plain pydantic model, without extra="forbid": unknown keys must still be refused.
    model_config = ConfigDict(extra="ignore")
    edge: Decimal = D("0.01")


class Lax(Strategy[LaxParams]):
    name = "lax"
    Params = LaxParams

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        return None


class Nameless(Strategy[EchoParams]):
    Params = EchoParams

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        return None


class Paramless(Strategy[EchoParams]):
    name = "paramless"

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        return None


class DictParams(Strategy[EchoParams]):
    name = "dict_params"
    Params = dict  # type: ignore[assignment]

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        return None


class NoQuote(Strategy[EchoParams]):
    name = "no_quote"
    Params = EchoParams


class FailingInit(Strategy[EchoParams]):
    name = "failing_init"
    Params = EchoParams

    def __init__(self, params: EchoParams) -> None:
        raise RuntimeError("cannot start")

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        return None


class NotAStrategy:
    name = "nope"
    Params = EchoParams


def _path(cls: type) -> str:
    return f"{__name__}:{cls.__qualname__}"


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize(
    ("ref", "cls"),
    [("fixed_spread", FixedSpread), ("inventory_skew", InventorySkew), ("size_aware", SizeAware)],
)
def test_shipped_strategies_load_by_entry_point_name(ref: str, cls: type[Strategy[Any]]) -> None:
    assert load_strategy_class(ref) is cls
    assert cls.name == ref


def test_shipped_strategies_are_registered() -> None:
    assert {"fixed_spread", "inventory_skew", "size_aware"} <= set(available_strategies())


def test_load_by_module_path() -> None:
    assert load_strategy_class("mmbot_strategies.size_aware:SizeAware") is SizeAware
    assert load_strategy_class("  mmbot_strategies.fixed_spread:FixedSpread ") is FixedSpread


def test_load_a_test_local_strategy_by_path() -> None:
    assert load_strategy_class(_path(Echo)) is Echo
    built = build_strategy(_path(Echo), {"yes": "0.3"})
    assert isinstance(built, Echo)
    assert built.params == EchoParams(yes=D("0.3"))


@pytest.mark.parametrize("ref", ["", "   "])
def test_empty_reference(ref: str) -> None:
    with pytest.raises(StrategyError, match="no strategy given"):
        load_strategy_class(ref)


def test_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(StrategyError) as info:
        load_strategy_class("martingale")
    message = str(info.value)
    assert "unknown strategy 'martingale'" in message
    assert "available: fixed_spread, inventory_skew, size_aware" in message
    assert "'package.module:ClassName'" in message


def test_unknown_name_suggests_a_near_miss() -> None:
    with pytest.raises(StrategyError, match="did you mean 'fixed_spread'"):
        load_strategy_class("fixed_sprad")


def test_dotted_name_without_colon_explains_the_path_syntax() -> None:
    with pytest.raises(StrategyError, match="with a colon"):
        load_strategy_class("mmbot_strategies.fixed_spread.FixedSpread")


@pytest.mark.parametrize(
    "ref", ["a:b:c", ":FixedSpread", "mmbot_strategies.fixed_spread:", "a-b:C"]
)
def test_malformed_path(ref: str) -> None:
    with pytest.raises(StrategyError, match=r"bad strategy path .*'package\.module:ClassName'"):
        load_strategy_class(ref)


def test_missing_module() -> None:
    with pytest.raises(StrategyError, match=re.escape("no module named 'no_such_package.edge'")):
        load_strategy_class("no_such_package.edge:Edge")


def test_missing_attribute() -> None:
    with pytest.raises(
        StrategyError, match=re.escape("module 'mmbot_strategies.fixed_spread' has no attribute")
    ):
        load_strategy_class("mmbot_strategies.fixed_spread:FixedSpreed")


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path for throw-away plug-in modules, unloaded afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_module_with_a_missing_dependency_names_the_dependency(plugin_dir: Path) -> None:
    (plugin_dir / "needs_dep.py").write_text("import no_such_dependency_xyz\n")
    with pytest.raises(StrategyError) as info:
        load_strategy_class("needs_dep:Edge")
    assert "importing 'needs_dep' failed" in str(info.value)
    assert "no_such_dependency_xyz" in str(info.value)


def test_module_that_fails_at_import(plugin_dir: Path) -> None:
    (plugin_dir / "broken_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    with pytest.raises(StrategyError, match="RuntimeError: boom at import"):
        load_strategy_class("broken_plugin:Edge")


def test_module_with_a_syntax_error(plugin_dir: Path) -> None:
    (plugin_dir / "bad_syntax.py").write_text("def oops(:\n")
    with pytest.raises(StrategyError, match="importing 'bad_syntax' failed: SyntaxError"):
        load_strategy_class("bad_syntax:Edge")


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("mmbot.strategy:build_strategy", "function build_strategy is not a subclass"),
        (_path(NotAStrategy), "NotAStrategy is not a subclass of mmbot.strategy.Strategy"),
        ("mmbot.strategy:ENTRY_POINT_GROUP", "a str object is not a subclass"),
        ("mmbot.strategy:Strategy", "is the abstract base class"),
        (_path(Nameless), 'has no name: set the class attribute name = "..."'),
        (_path(Paramless), "has no Params model"),
        (_path(DictParams), "has no Params model"),
        (_path(NoQuote), r"does not implement quote\(rfq, market\)"),
    ],
)
def test_classes_that_are_not_usable_strategies(ref: str, expected: str) -> None:
    with pytest.raises(StrategyError, match=expected):
        load_strategy_class(ref)


def _fake_entry_points(*eps: EntryPoint) -> Any:
    def fake(*, group: str) -> tuple[EntryPoint, ...]:
        return tuple(ep for ep in eps if ep.group == group)

    return fake


def test_entry_point_that_fails_to_load(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint(name="ghost", value="no_such_package.ghost:Ghost", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(strategy_module, "entry_points", _fake_entry_points(ep))
    with pytest.raises(
        StrategyError, match=re.escape("entry point 'no_such_package.ghost:Ghost' failed")
    ):
        load_strategy_class("ghost")


def test_entry_point_registered_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = (
        EntryPoint(name="dup", value="pkg_a:Dup", group=ENTRY_POINT_GROUP),
        EntryPoint(name="dup", value="pkg_b:Dup", group=ENTRY_POINT_GROUP),
    )
    monkeypatch.setattr(strategy_module, "entry_points", _fake_entry_points(*eps))
    with pytest.raises(StrategyError, match=r"more than one package \(pkg_a:Dup, pkg_b:Dup\)"):
        load_strategy_class("dup")


def test_the_same_entry_point_seen_twice_is_not_a_conflict(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint(name="echo", value=_path(Echo), group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(strategy_module, "entry_points", _fake_entry_points(ep, ep))
    assert load_strategy_class("echo") is Echo


def test_entry_point_of_a_non_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint(name="bad", value=_path(NotAStrategy), group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(strategy_module, "entry_points", _fake_entry_points(ep))
    with pytest.raises(StrategyError, match="is not a subclass"):
        load_strategy_class("bad")


def test_no_registered_strategies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(strategy_module, "entry_points", _fake_entry_points())
    with pytest.raises(
        StrategyError, match=re.escape("no strategies are registered in 'mmbot.strategies'")
    ):
        load_strategy_class("fixed_spread")


# --------------------------------------------------------------------------- parameters


def test_params_from_strings_ints_and_decimals() -> None:
    built = build_strategy(_path(Echo), {"yes": "0.25", "no": D("0.5"), "count": 3, "seconds": 2})
    assert built.params == EchoParams(yes=D("0.25"), no=D("0.5"), count=3, seconds=2.0)


def test_no_params_means_defaults() -> None:
    assert build_strategy("fixed_spread", None).params == FixedSpread.Params()
    assert build_strategy("fixed_spread", {}).params == FixedSpread.Params()


def _problems(ref: str, params: Any) -> tuple[str, ...]:
    with pytest.raises(StrategyError) as info:
        build_strategy(ref, params)
    message = str(info.value)
    # A readable summary, not a pydantic dump.
    assert "validation error" not in message
    assert "errors.pydantic.dev" not in message
    return info.value.problems


def test_invalid_params_message_names_the_strategy_and_counts() -> None:
    with pytest.raises(StrategyError) as info:
        build_strategy("fixed_spread", {"half_spread": "wide", "min_price": "-1"})
    first_line = str(info.value).splitlines()[0]
    assert first_line == "strategy 'fixed_spread': 2 invalid parameters"


def test_path_reference_is_shown_next_to_the_name() -> None:
    with pytest.raises(StrategyError, match=r"^strategy 'echo' \(tests\.test_strategy:Echo\)"):
        build_strategy(_path(Echo), {"yes": "x"})


def test_unknown_parameter_with_suggestion() -> None:
    assert _problems("fixed_spread", {"half_sprad": "0.03"}) == (
        "half_sprad: unknown parameter (did you mean 'half_spread'?); "
        "known: half_spread, min_price, require_fresh",
    )


def test_unknown_parameter_rejected_even_without_extra_forbid() -> None:
    assert _problems(_path(Lax), {"egde": "0.1"}) == (
        "egde: unknown parameter (did you mean 'edge'?); known: edge",
    )


def test_float_for_money_is_refused() -> None:
    assert _problems("fixed_spread", {"half_spread": 0.03}) == (
        "half_spread: expected a decimal number, got the float 0.03 (floats cannot hold money "
        'exactly: write "0.03")',
    )


def test_float_for_money_is_refused_even_in_a_plain_model() -> None:
    (problem,) = _problems(_path(Lax), {"edge": 0.1})
    assert problem.startswith("edge: expected a decimal number, got the float 0.1")


def test_float_for_seconds_is_fine() -> None:
    assert build_strategy("size_aware", {"max_age_seconds": 1.5}).params.max_age_seconds == 1.5


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"half_spread": "wide"}, "half_spread: expected a decimal number, got 'wide'"),
        ({"half_spread": "NaN"}, "half_spread: must be a finite number, got 'NaN'"),
        ({"half_spread": "-0.01"}, "half_spread: must be greater than or equal to 0, got '-0.01'"),
        ({"half_spread": D("0.6")}, "half_spread: must be less than or equal to 0.5, got 0.6"),
        ({"min_price": "1"}, "min_price: must be less than 1, got '1'"),
        ({"require_fresh": "maybe"}, "require_fresh: expected true or false, got 'maybe'"),
        ({"half_spread": [1]}, "half_spread: expected a decimal number, got [1]"),
    ],
)
def test_bad_values_name_the_parameter_and_expectation(
    params: dict[str, Any], expected: str
) -> None:
    assert _problems("fixed_spread", params) == (expected,)


def test_every_bad_parameter_is_reported_at_once() -> None:
    problems = _problems(
        "inventory_skew",
        {"half_spread": "x", "max_position": "0", "max_skew": 0.1, "bogus": 1},
    )
    assert len(problems) == 4
    assert {p.split(":")[0] for p in problems} == {
        "half_spread",
        "max_position",
        "max_skew",
        "bogus",
    }


def test_wrong_types_of_other_kinds() -> None:
    problems = _problems(_path(Echo), {"count": "many", "seconds": "soon", "label": 5})
    assert set(problems) == {
        "count: expected a whole number, got 'many'",
        "seconds: expected a number, got 'soon'",
        "label: expected a string, got 5",
    }


def test_missing_required_parameter() -> None:
    assert _problems(_path(Required), {}) == ("edge: required parameter is missing",)


def test_cross_parameter_rule() -> None:
    assert _problems("size_aware", {"max_half_spread": "0.01"}) == (
        "parameters: max_half_spread (0.01) must be at least base_half_spread (0.02)",
    )


def test_params_must_be_a_table() -> None:
    with pytest.raises(StrategyError, match="parameters must be a table of names to values"):
        build_strategy("fixed_spread", ["half_spread"])  # type: ignore[arg-type]


def test_parameter_names_must_be_strings() -> None:
    assert _problems("fixed_spread", {1: "x"}) == ("1: parameter names must be strings",)


def test_failing_constructor_is_a_strategy_error() -> None:
    with pytest.raises(StrategyError, match="'failing_init': creating it failed: RuntimeError"):
        build_strategy(_path(FailingInit), {})


def test_strategy_params_refuse_floats_when_built_directly() -> None:
    with pytest.raises(ValidationError, match="expected a decimal number, not a float"):
        EchoParams(yes=0.4)
    assert EchoParams(seconds=0.5).seconds == 0.5


def test_strategy_params_are_frozen_and_strict() -> None:
    params = EchoParams()
    with pytest.raises(ValidationError):
        params.yes = D("0.1")  # type: ignore[misc]
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        EchoParams(nope=1)  # type: ignore[call-arg]


# --------------------------------------------------------------------------- routing


def _echo() -> Echo:
    return Echo(EchoParams())


def test_router_first_match_wins() -> None:
    first, second = _echo(), _echo()
    router = StrategyRouter(
        [Route(("KXBTC*",), first), Route(("KX*",), second), Route(("KXBTC-25",), _echo())]
    )
    assert router.route("KXBTC-25", "KXBTC") is first
    assert router.route("KXETH-25", "KXETH") is second


def test_router_matches_market_or_event_ticker() -> None:
    by_event, by_market = _echo(), _echo()
    router = StrategyRouter(
        [Route(("KXELECTION",), by_event), Route(("KXRAIN-25JUN*", "KXSNOW-*"), by_market)]
    )
    assert router.route("KXELECTION-25-DEM", "KXELECTION") is by_event
    assert router.route("KXRAIN-25JUN30", "KXRAIN") is by_market
    assert router.route("KXSNOW-1", "KXSNOW") is by_market
    assert router.route("KXRAIN-25JUL01", "KXRAIN") is None


def test_router_without_a_match_returns_none() -> None:
    router = StrategyRouter([Route(("KXBTC*",), _echo())])
    assert router.route("KXETH-25", "KXETH") is None
    assert router.route("KXETH-25", None) is None
    assert router.route("KXETH-25", "") is None
    assert StrategyRouter([]).route("KXBTC-25", "KXBTC") is None


def test_router_globs_are_case_sensitive_and_anchored() -> None:
    strategy = _echo()
    router = StrategyRouter([Route(("KXBTC-2?", "KXET[AH]*"), strategy)])
    assert router.route("kxbtc-25", "kxbtc") is None
    assert router.route("KXBTC-25", "X") is strategy
    assert router.route("KXBTC-255", "X") is None  # "?" is exactly one character
    assert router.route("KXETH-1", "X") is strategy
    assert router.route("KXETC-1", "X") is None
    assert router.route("XKXETH-1", "X") is None  # anchored at the start
    assert router.route("X", "KXETA") is strategy


def test_router_strategies_are_distinct_in_route_order() -> None:
    a, b = _echo(), _echo()
    router = StrategyRouter([Route(("A*",), a), Route(("B*",), b), Route(("C*",), a)])
    assert router.strategies() == (a, b)


def test_route_patterns_are_checked() -> None:
    with pytest.raises(TypeError, match=r"must be a tuple, e\.g\. \('KX\*',\)"):
        Route("KX*", _echo())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty strings"):
        Route((), _echo())
    with pytest.raises(ValueError, match="non-empty strings"):
        Route(("",), _echo())
    with pytest.raises(TypeError, match="must be a Strategy"):
        Route(("KX*",), object())  # type: ignore[arg-type]
    assert Route(["A*", "B*"], _echo()).patterns == ("A*", "B*")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- safe_quote


class Scripted(Strategy[EchoParams]):
    """Returns (or raises) whatever the test put in ``result``."""

    name = "scripted"
    Params = EchoParams

    def __init__(self, result: Any) -> None:
        super().__init__(EchoParams())
        self.result = result

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        if isinstance(self.result, BaseException):
            raise self.result
        if callable(self.result):
            return self.result()  # type: ignore[no-any-return]
        return self.result  # type: ignore[no-any-return]


def _forged(yes: Any, no: Any, ttl: Any = None) -> QuoteIntent:
    """A QuoteIntent that skipped its own checks, as a careless plug-in could build one."""
    intent = object.__new__(QuoteIntent)
    object.__setattr__(intent, "yes_bid", yes)
    object.__setattr__(intent, "no_bid", no)
    object.__setattr__(intent, "ttl_seconds", ttl)
    return intent


def test_safe_quote_passes_a_good_intent_through() -> None:
    intent = QuoteIntent(D("0.40"), D("0.55"), ttl_seconds=5.0)
    assert safe_quote(Scripted(intent), RFQ, market()) == (intent, None)


def test_safe_quote_none_is_a_plain_decline() -> None:
    assert safe_quote(Scripted(None), RFQ, market()) == (None, None)


def test_safe_quote_both_sides_zero_is_a_decline() -> None:
    assert safe_quote(Scripted(QuoteIntent(D(0), D(0))), RFQ, market()) == (None, None)


def test_safe_quote_catches_exceptions() -> None:
    intent, reason = safe_quote(Scripted(ZeroDivisionError("division by zero")), RFQ, market())
    assert intent is None
    assert reason == "quote() raised ZeroDivisionError: division by zero"


def test_safe_quote_truncates_long_exception_messages() -> None:
    _, reason = safe_quote(Scripted(ValueError("x" * 5000)), RFQ, market())
    assert reason is not None
    assert len(reason) < 400


def test_safe_quote_does_not_swallow_keyboard_interrupt() -> None:
    with pytest.raises(KeyboardInterrupt):
        safe_quote(Scripted(KeyboardInterrupt()), RFQ, market())


def test_safe_quote_float_returning_strategy() -> None:
    # Building the intent with a float fails inside the strategy; safe_quote reports it.
    intent, reason = safe_quote(Scripted(lambda: QuoteIntent(0.4, D("0.5"))), RFQ, market())  # type: ignore[arg-type]
    assert intent is None
    assert reason == (
        "quote() raised TypeError: yes_bid is the float 0.4; prices must be Decimal values"
    )


@pytest.mark.parametrize(
    ("forged", "expected"),
    [
        (_forged(0.4, D("0.5")), "yes_bid is the float 0.4; prices must be Decimal values"),
        (_forged(D("0.4"), 0.5), "no_bid is the float 0.5; prices must be Decimal values"),
        (_forged(D("0.4"), "0.5"), "no_bid must be a Decimal, got str"),
        (_forged(D("NaN"), D("0.5")), "yes_bid is NaN, not a finite price"),
        (_forged(D("0.4"), D("-Infinity")), "no_bid is -Infinity, not a finite price"),
        (_forged(D("-0.01"), D("0.5")), "yes_bid -0.01 is negative"),
        (_forged(D("1.01"), D(0)), "yes_bid 1.01 is above 1 dollar"),
        (_forged(D("0.6"), D("0.5")), "yes_bid + no_bid = 1.1 exceeds 1"),
        (_forged(D("0.4"), D("0.5"), "5"), "ttl_seconds must be a number of seconds, got str"),
        (_forged(D("0.4"), D("0.5"), -1.0), "ttl_seconds must be a positive number"),
        (_forged(D("0.4"), D("0.5"), float("nan")), "ttl_seconds must be a positive number"),
    ],
)
def test_safe_quote_rejects_malformed_intents(forged: QuoteIntent, expected: str) -> None:
    intent, reason = safe_quote(Scripted(forged), RFQ, market())
    assert intent is None
    assert reason is not None
    assert reason.startswith("quote() returned an invalid QuoteIntent: ")
    assert expected in reason


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ((D("0.4"), D("0.5")), "quote() returned tuple, expected QuoteIntent or None"),
        ({"yes_bid": "0.4"}, "quote() returned dict, expected QuoteIntent or None"),
        (D("0.4"), "quote() returned Decimal, expected QuoteIntent or None"),
    ],
)
def test_safe_quote_rejects_wrong_return_types(result: Any, expected: str) -> None:
    assert safe_quote(Scripted(result), RFQ, market()) == (None, expected)


def test_safe_quote_rejects_an_async_quote() -> None:
    async def later() -> QuoteIntent:
        await asyncio.sleep(0)
        return QuoteIntent(D("0.4"), D("0.5"))

    coroutine = later()
    intent, reason = safe_quote(Scripted(coroutine), RFQ, market())
    assert intent is None
    assert reason is not None
    assert "returned a coroutine" in reason
    # Closed, so no "coroutine was never awaited" warning later.
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED


@pytest.mark.parametrize(
    ("kwargs", "error", "expected"),
    [
        ({"yes_bid": 0.4, "no_bid": D("0.5")}, TypeError, "yes_bid is the float 0.4"),
        ({"yes_bid": 1, "no_bid": D("0.5")}, TypeError, "yes_bid must be a Decimal, got int"),
        ({"yes_bid": D("0.4"), "no_bid": D("-0.1")}, ValueError, "no_bid -0.1 is negative"),
        ({"yes_bid": D("0.5"), "no_bid": D("0.51")}, ValueError, "exceeds 1"),
        ({"yes_bid": D("0.4"), "no_bid": D("0.5"), "ttl_seconds": 0}, ValueError, "ttl_seconds"),
        ({"yes_bid": D("0.4"), "no_bid": D("0.5"), "ttl_seconds": True}, TypeError, "got bool"),
    ],
)
def test_quote_intent_checks_itself(kwargs: dict[str, Any], error: type, expected: str) -> None:
    with pytest.raises(error, match=expected):
        QuoteIntent(**kwargs)


def test_quote_intent_accepts_edges() -> None:
    assert QuoteIntent(D(1), D(0)).yes_bid == 1
    assert QuoteIntent(D("0.5"), D("0.5"), ttl_seconds=3).ttl_seconds == 3


# --------------------------------------------------------------------------- market view, hooks


def test_mid_is_the_book_middle_or_the_last_price() -> None:
    assert market().mid == D("0.42")
    assert market(yes_ask=D("0.41")).mid == D("0.405")
    assert market(yes_ask=None, last_price=D("0.43")).mid == D("0.43")
    assert market(yes_bid=None, last_price=D("0.43")).mid == D("0.43")
    assert market(yes_bid=None, yes_ask=None).mid is None


def test_tick_at_reads_the_grid() -> None:
    view = market(price_ranges=TAILS_GRID)
    assert view.tick_at(D("0.05")) == D("0.001")
    assert view.tick_at(D("0.50")) == D("0.01")
    assert view.tick_at(D("0.95")) == D("0.001")
    assert view.tick_at(D("0.10")) == D("0.001")  # a shared boundary takes the finer step
    assert market().tick_at(D("0.37")) == D("0.01")
    with pytest.raises(ValueError, match="outside the market's price grid"):
        view.tick_at(D("1.5"))
    with pytest.raises(ValueError, match="outside"):
        market(price_ranges=()).tick_at(D("0.5"))


def test_market_view_defaults() -> None:
    view = market()
    assert (view.hvm, view.age_seconds, view.stale, view.position) == (False, 0.0, False, D(0))


def test_hooks_default_to_doing_nothing() -> None:
    strategy = _echo()
    strategy.on_start()
    strategy.on_fill(FillInfo("q1", "r1", "KXRAIN-25", "yes", D("0.40"), D(10)))
    assert "echo" in repr(strategy)


# --------------------------------------------------------------------------- price helpers


QUOTABLE = {name: quotable_prices(grid) for name, grid in GRIDS.items()}


@pytest.mark.parametrize(
    ("price", "grid", "expected"),
    [
        ("0.4567", "cent", "0.45"),
        ("0.45", "cent", "0.45"),
        ("0.0567", "tails", "0.056"),
        ("0.4567", "tails", "0.45"),
        ("0.9567", "tails", "0.956"),
        ("0.1005", "tails", "0.100"),
        ("0.0999", "tails", "0.099"),
        ("0.999", "cent", "0.99"),
        ("1", "cent", "0.99"),
        ("5", "tails", "0.999"),
        ("0.009", "cent", "0"),
        ("0.01", "cent", "0.01"),
        ("0", "cent", "0"),
        ("-0.5", "cent", "0"),
    ],
)
def test_round_down_to_grid_examples(price: str, grid: str, expected: str) -> None:
    assert round_down_to_grid(D(price), GRIDS[grid]) == D(expected)


def test_round_down_without_a_grid_declines() -> None:
    assert round_down_to_grid(D("0.5"), ()) == 0


def test_round_down_rejects_non_finite_and_float() -> None:
    with pytest.raises(ValueError, match="finite Decimal"):
        round_down_to_grid(D("NaN"), CENT_GRID)
    with pytest.raises(ValueError, match="finite Decimal"):
        round_down_to_grid(0.5, CENT_GRID)  # type: ignore[arg-type]


@given(
    price=st.decimals(min_value=-1, max_value=2, places=5, allow_nan=False, allow_infinity=False),
    grid=st.sampled_from(sorted(GRIDS)),
)
def test_round_down_to_grid_is_the_largest_quotable_price_below(price: Decimal, grid: str) -> None:
    result = round_down_to_grid(price, GRIDS[grid])
    below = [p for p in QUOTABLE[grid] if p <= price]
    assert result == (below[-1] if below else 0)
    assert result == 0 or 0 < result < 1


@pytest.mark.parametrize(
    ("yes", "no", "max_sum", "expected"),
    [
        ("0.40", "0.50", "1", ("0.40", "0.50")),
        ("0.60", "0.50", "1", ("0.55", "0.45")),
        ("0.60", "0.50", "0.98", ("0.54", "0.44")),
        ("0.95", "0.03", "0.90", ("0.90", "0")),
        ("0.03", "0.95", "0.90", ("0", "0.90")),
        ("-0.10", "0.50", "1", ("0", "0.50")),
        ("-0.10", "1.20", "1", ("0", "1")),
        ("0.50", "0.50", "0", ("0", "0")),
    ],
)
def test_clamp_pair_examples(yes: str, no: str, max_sum: str, expected: tuple[str, str]) -> None:
    assert clamp_pair(D(yes), D(no), D(max_sum)) == (D(expected[0]), D(expected[1]))


def test_clamp_pair_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="max_sum must not be negative"):
        clamp_pair(D("0.1"), D("0.1"), D("-0.1"))
    with pytest.raises(ValueError, match="yes must be a finite Decimal"):
        clamp_pair(D("NaN"), D("0.1"), D(1))
    with pytest.raises(ValueError, match="no must be a finite Decimal"):
        clamp_pair(D("0.1"), 0.1, D(1))  # type: ignore[arg-type]


money = st.decimals(min_value=-2, max_value=2, places=4, allow_nan=False, allow_infinity=False)


@given(yes=money, no=money, max_sum=st.decimals(min_value=0, max_value=2, places=4))
def test_clamp_pair_bounds(yes: Decimal, no: Decimal, max_sum: Decimal) -> None:
    new_yes, new_no = clamp_pair(yes, no, max_sum)
    assert 0 <= new_yes <= max(yes, D(0))
    assert 0 <= new_no <= max(no, D(0))
    # Lowered exactly as far as needed, no further.
    assert new_yes + new_no == min(max_sum, max(yes, D(0)) + max(no, D(0)))
    # The gap between the two prices survives whenever neither side hit zero.
    if new_yes > 0 and new_no > 0:
        assert new_yes - new_no == max(yes, D(0)) - max(no, D(0))


@given(
    yes=money, no=money, grid=st.sampled_from(sorted(GRIDS)), max_sum=st.sampled_from(["1", "0.98"])
)
def test_clamp_then_round_gives_a_valid_quote(
    yes: Decimal, no: Decimal, grid: str, max_sum: str
) -> None:
    new_yes, new_no = clamp_pair(yes, no, D(max_sum))
    yes_bid = round_down_to_grid(new_yes, GRIDS[grid])
    no_bid = round_down_to_grid(new_no, GRIDS[grid])
    assert yes_bid + no_bid <= D(max_sum)
    for price in (yes_bid, no_bid):
        assert price == 0 or price in QUOTABLE[grid]
    QuoteIntent(yes_bid, no_bid)  # the constructor's own checks pass


# --------------------------------------------------------------------------- the tutorial


def _docstring_block(marker: str) -> str:
    """The indented literal block after the docstring line containing ``marker``."""
    doc = strategy_module.__doc__ or ""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if marker in line) + 1
    while not lines[start].strip():
        start += 1
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = []
    for line in lines[start:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        block.append(line)
    return textwrap.dedent("\n".join(block))


def test_the_tutorial_example_works(plugin_dir: Path) -> None:
    package = plugin_dir / "my_strategies"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "edge.py").write_text(_docstring_block("A complete strategy"))
    namespace: dict[str, Any] = {}
    exec(_docstring_block("Testing it"), namespace)  # noqa: S102 - our own docstring
    namespace["test_edge_bids_below_the_mid"]()
    edge = load_strategy_class("my_strategies.edge:Edge")
    assert edge.name == "edge"
    assert safe_quote(build_strategy("my_strategies.edge:Edge", {}), RFQ, market()) == (
        QuoteIntent(D("0.39"), D("0.55")),
        None,
    )


def test_the_readme_example_matches_the_tutorial() -> None:
    readme = (Path(__file__).parent.parent / "strategies" / "README.md").read_text()
    for line in _docstring_block("A complete strategy").splitlines():
        if line.strip() and "'''" not in line:
            assert line in readme, line
