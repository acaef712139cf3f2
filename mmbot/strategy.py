"""The strategy API: how you tell mmbot what to bid when an RFQ arrives.

Five-minute tutorial
====================

What a strategy is
    A class with one method, ``quote(rfq, market)``. mmbot calls it once for every RFQ on a
    market routed to your strategy and sends what it returns as a two-sided quote. Return
    a :class:`QuoteIntent` to quote, or ``None`` to let the RFQ pass.

    ``quote`` runs on the daemon's hot path, between the RFQ arriving and the quote leaving,
    so it must be *pure, synchronous and fast*: no network, no files, no sleeping, no
    ``async``; just arithmetic on its arguments (and on state the strategy keeps itself).

Prices
    Prices are dollars per contract, as :class:`~decimal.Decimal` (never float: 0.1 has no
    exact binary float). ``yes_bid`` is what you pay for one YES contract if the requester
    sells you YES; ``no_bid`` is what you pay for one NO contract. ``Decimal(0)`` declines
    that side. A contract pays $1 to the side that wins, so a quote must keep
    ``yes_bid + no_bid <= 1`` and each price must sit on the market's price grid
    (``market.price_ranges``): :func:`round_down_to_grid` and :func:`clamp_pair` do both.

What you are given
    ``rfq`` (:class:`mmbot.kalshi.models.Rfq`): ``market_ticker``, ``event_ticker``, the size
    as ``contracts_fp`` *or* as a dollar budget ``target_cost_dollars``, ``is_combo``.
    ``market`` (:class:`MarketView`): the book (``yes_bid``, ``yes_ask``, ``last_price``,
    and ``mid``, None on a crossed book), the price grid, how old the data is and where it
    came from (``age_seconds``, ``stale``, ``source``: ``"stream"`` or ``"rest"``), whether
    it is a High Volatility Market (``hvm``) and our net ``position`` (> 0 YES, < 0 NO).

Parameters
    Declare them as a pydantic model, subclassing :class:`StrategyParams`: a field per
    parameter with a type, a default and, for money, ``Decimal``. The config's table of
    parameters is validated against it, and a mistake (an unknown name, ``"abc"`` for a
    price, a float for money) is reported by name before the daemon starts. A field
    declared ``float`` is refused too, unless it is a time named ``*_seconds``. Your
    strategy reads them as ``self.params``.

A complete strategy (save as ``my_strategies/edge.py``)::

    from decimal import Decimal

    from mmbot.strategy import (
        MarketView,
        QuoteIntent,
        Rfq,
        Strategy,
        StrategyParams,
        round_down_to_grid,
    )


    class EdgeParams(StrategyParams):
        edge: Decimal = Decimal("0.03")  # dollars below the mid, on each side


    class Edge(Strategy[EdgeParams]):
        '''Bid `edge` below the mid for YES and below 1 - mid for NO.'''

        name = "edge"
        Params = EdgeParams

        def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
            mid = market.mid
            if mid is None or market.stale:
                return None  # no trustworthy reference price: do not quote
            yes = round_down_to_grid(mid - self.params.edge, market.price_ranges)
            no = round_down_to_grid(1 - mid - self.params.edge, market.price_ranges)
            if yes == 0 and no == 0:
                return None
            return QuoteIntent(yes_bid=yes, no_bid=no)

Using it
    Point the daemon's strategy setting at ``my_strategies.edge:Edge`` (any importable
    ``package.module:ClassName``) with its parameters, e.g. ``{edge = "0.05"}``. To use a
    short name instead, register it as an entry point of your package and reinstall::

        [project.entry-points."mmbot.strategies"]
        edge = "my_strategies.edge:Edge"

    Routes send markets to strategies by glob patterns on the market or event ticker
    (:class:`StrategyRouter`); a market no route matches is not quoted.

Testing it (plain pytest, no daemon needed)::

    from decimal import Decimal

    from mmbot.strategy import MarketView, PriceRange, QuoteIntent, Rfq, build_strategy

    def test_edge_bids_below_the_mid() -> None:
        strategy = build_strategy("my_strategies.edge:Edge", {"edge": "0.05"})
        cent_grid = (PriceRange(start=Decimal(0), end=Decimal(1), step=Decimal("0.01")),)
        market = MarketView(
            ticker="KXRAIN-25", event_ticker="KXRAIN", yes_bid=Decimal("0.40"),
            yes_ask=Decimal("0.44"), last_price=None, price_ranges=cent_grid,
        )
        rfq = Rfq(id="r1", market_ticker="KXRAIN-25", contracts_fp=Decimal(100))
        assert strategy.quote(rfq, market) == QuoteIntent(Decimal("0.37"), Decimal("0.53"))

What the daemon does around you
    It calls ``quote`` through :func:`safe_quote`, so an exception or a malformed result
    skips that RFQ (and is logged, with the file:line in your code that raised and, the
    first time at each place, the traceback) instead of stopping the daemon; a strategy
    failing 20 RFQs in a row is logged as an error, ``strategy_failing``.
    It then rounds prices to the grid, applies its own minimum edge and risk limits, and
    may drop a side or the whole quote; it withdraws the quote after ``ttl_seconds``.
    ``on_start`` runs once before the first quote; ``on_fill`` runs when one of our
    trades executes. Both are optional and, like ``quote``, must be quick.

The last look (optional)
    When a requester accepts one of your quotes, the daemon looks again before it
    confirms. Stale market data declines the acceptance outright; otherwise it calls
    ``confirm(accept, market)`` with an :class:`AcceptInfo` (side, our price, size, the
    reference mid the quote was priced against, ``tolerance``) and the market as it
    stands now. Return True to confirm, False or a short reason to decline (journaled
    as ``last_look``). The default declines when the accepted side lost more than
    ``quotes.last_look_tolerance`` since the quote was priced; an exception declines.

Shipped strategies live in the ``strategies`` package (``fixed_spread``,
``inventory_skew``, ``size_aware``): read them as worked examples.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from mmbot.kalshi.models import MveLeg, PriceRange, Rfq
from mmbot.lastlook import AcceptInfo, default_last_look
from mmbot.strategy_failures import failed, strategy_failure

__all__ = [
    "ENTRY_POINT_GROUP",
    "AcceptInfo",
    "FillInfo",
    "MarketView",
    "MveLeg",
    "PriceRange",
    "QuoteIntent",
    "Rfq",
    "Route",
    "Strategy",
    "StrategyError",
    "StrategyParams",
    "StrategyRouter",
    "available_strategies",
    "build_strategy",
    "clamp_pair",
    "load_strategy_class",
    "round_down_to_grid",
    "safe_quote",
]

#: Entry-point group under which packages register strategies by short name.
ENTRY_POINT_GROUP = "mmbot.strategies"

_ZERO = Decimal(0)
_ONE = Decimal(1)
_TWO = Decimal(2)
_MAX_SHOWN = 60
_PATH_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


class StrategyError(ValueError):
    """A strategy cannot be loaded or configured; the message says what to fix."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        """Hold ``message`` and, for parameter errors, one line per bad parameter."""
        self.problems = tuple(problems)
        text = message + "".join(f"\n  {problem}" for problem in self.problems)
        super().__init__(text)


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True, slots=True)
class QuoteIntent:
    """What a strategy bids per contract for YES and for NO (``Decimal(0)`` declines a side)."""

    yes_bid: Decimal
    no_bid: Decimal
    ttl_seconds: float | None = None  # None: the configured quotes.ttl_seconds

    def __post_init__(self) -> None:
        # Failing here, inside the strategy's own code, gives its author a traceback that
        # points at the line that built the bad quote.
        problem = _intent_problem(self)
        if problem is not None:
            kind, text = problem
            raise kind(text)


def _intent_problem(intent: QuoteIntent) -> tuple[type[Exception], str] | None:
    for side in ("yes_bid", "no_bid"):
        value = getattr(intent, side)
        if isinstance(value, float):
            return TypeError, f"{side} is the float {value!r}; prices must be Decimal values"
        if not isinstance(value, Decimal):
            return TypeError, f"{side} must be a Decimal, got {type(value).__name__}"
        if not value.is_finite():
            return ValueError, f"{side} is {value}, not a finite price"
        if value < 0:
            return ValueError, f"{side} {value} is negative"
        if value > _ONE:
            return ValueError, f"{side} {value} is above 1 dollar"
    total = intent.yes_bid + intent.no_bid
    if total > _ONE:
        return ValueError, f"yes_bid + no_bid = {total} exceeds 1 (clamp_pair lowers the pair)"
    ttl = intent.ttl_seconds
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float):
            return TypeError, f"ttl_seconds must be a number of seconds, got {type(ttl).__name__}"
        if not math.isfinite(ttl) or ttl <= 0:
            return ValueError, f"ttl_seconds must be a positive number of seconds, got {ttl!r}"
    return None


@dataclass(frozen=True, slots=True)
class MarketView:
    """What the daemon knows about a market when an RFQ arrives."""

    ticker: str
    event_ticker: str
    yes_bid: Decimal | None  # best YES bid on the book
    yes_ask: Decimal | None  # best YES ask
    last_price: Decimal | None
    price_ranges: tuple[PriceRange, ...]  # the quote grid
    hvm: bool = False  # High Volatility Market: 3 s to confirm an accepted quote
    age_seconds: float = 0.0  # how old this market data is
    stale: bool = False  # older than marketdata.ttl_seconds: strategies should decline
    position: Decimal = _ZERO  # our net position: > 0 YES contracts, < 0 NO contracts
    # Where the book came from: "stream" (the live order book) or "rest" (a poll).
    source: str = "rest"

    @property
    def mid(self) -> Decimal | None:
        """Reference price of YES: the book's mid, else the last trade; None if crossed."""
        if self.yes_bid is not None and self.yes_ask is not None:
            # A crossed or locked book says one side is out of date: no reference at all.
            return (self.yes_bid + self.yes_ask) / _TWO if self.yes_bid < self.yes_ask else None
        return self.last_price

    def tick_at(self, price: Decimal) -> Decimal:
        """Grid step at ``price`` (the finer one on a boundary between two bands)."""
        steps = [r.step for r in self.price_ranges if r.step > 0 and r.start <= price <= r.end]
        if not steps:
            raise ValueError(f"{self.ticker}: price {price} is outside the market's price grid")
        return min(steps)


@dataclass(frozen=True, slots=True)
class FillInfo:
    """A trade of ours that executed, passed to ``on_fill``."""

    quote_id: str
    rfq_id: str
    market_ticker: str
    side: Literal["yes", "no"]  # the outcome we bought
    price: Decimal
    contracts: Decimal


# --------------------------------------------------------------------------- the base classes


class StrategyParams(BaseModel):
    """Base for a strategy's ``Params``: immutable, unknown keys rejected, no float for money."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _refuse_float_money(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic would quietly turn 0.1 into Decimal("0.1"); a float reaching a money
        # field means some layer parsed the number lossily, which is the bug to surface.
        name = info.field_name
        if isinstance(value, float) and name is not None:
            field = cls.model_fields.get(name)
            if field is not None and _wants_decimal(field.annotation):
                raise PydanticCustomError(
                    "float_money", "expected a decimal number, not a float (write it as a string)"
                )
        return value


P = TypeVar("P", bound=BaseModel)


class Strategy(Generic[P]):
    """Base class of every strategy."""

    #: Short name used in logs and metrics.
    name: ClassVar[str]
    #: The pydantic model the config's parameters are validated against.
    Params: ClassVar[type[BaseModel]]

    def __init__(self, params: P) -> None:
        """Keep the validated parameters as ``self.params``."""
        self.params = params

    def quote(self, rfq: Rfq, market: MarketView) -> QuoteIntent | None:
        """Price one RFQ: pure, synchronous and fast; ``None`` means do not quote."""
        raise NotImplementedError

    def confirm(self, accept: AcceptInfo, market: MarketView) -> bool | str:
        """Last look at an acceptance: True confirms; False or a reason declines it.

        Called when a requester accepts, with the market as it stands now (never stale:
        the daemon declines on stale data before asking). Pure and fast like ``quote``.
        The default declines when the accepted side lost more than
        ``quotes.last_look_tolerance`` of value since the quote was priced.
        """
        return default_last_look(accept, market.mid)

    def on_start(self) -> None:
        """Run once before the first quote (optional)."""

    def on_fill(self, fill: FillInfo) -> None:
        """Run when one of our trades executes (optional)."""

    def __repr__(self) -> str:
        """Show the strategy's name and parameters."""
        return f"<{type(self).__name__} {getattr(self, 'name', '?')!r} {self.params!r}>"


# --------------------------------------------------------------------------- loading


def available_strategies() -> tuple[str, ...]:
    """Names registered in the ``mmbot.strategies`` entry-point group, sorted."""
    return tuple(sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}))


def load_strategy_class(ref: str) -> type[Strategy[Any]]:
    """Load a strategy class by entry-point name or ``package.module:ClassName`` path."""
    if not isinstance(ref, str) or not ref.strip():
        raise StrategyError(
            "no strategy given: use a registered name such as 'fixed_spread' "
            "or a 'package.module:ClassName' path"
        )
    ref = ref.strip()
    obj = _load_path(ref) if ":" in ref else _load_entry_point(ref)
    return _check_class(obj, ref)


def _load_path(ref: str) -> object:
    if not _PATH_RE.fullmatch(ref):
        raise StrategyError(f"bad strategy path {ref!r}: expected 'package.module:ClassName'")
    module_name, _, attr_path = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise StrategyError(
                f"strategy {ref!r}: no module named {module_name!r} "
                "(is its package installed, or on PYTHONPATH?)"
            ) from None
        # The module exists but one of its own imports does not: say which.
        raise StrategyError(
            f"strategy {ref!r}: importing {module_name!r} failed: {_exception_text(exc)}"
        ) from exc
    except Exception as exc:
        raise StrategyError(
            f"strategy {ref!r}: importing {module_name!r} failed: {_exception_text(exc)}"
        ) from exc
    obj: object = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise StrategyError(
                f"strategy {ref!r}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    return obj


def _load_entry_point(ref: str) -> object:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == ref:
            # The same distribution can be seen twice (e.g. an editable install next to a
            # stale one); only different targets are a real conflict.
            found.setdefault(ep.value, ep)
    if not found:
        raise StrategyError(_unknown_strategy_message(ref))
    if len(found) > 1:
        targets = ", ".join(sorted(found))
        raise StrategyError(
            f"strategy {ref!r} is registered by more than one package ({targets}); "
            "use a 'package.module:ClassName' path to pick one"
        )
    (ep,) = found.values()
    try:
        return ep.load()
    except Exception as exc:
        raise StrategyError(
            f"strategy {ref!r}: entry point {ep.value!r} failed to load: {_exception_text(exc)}"
        ) from exc


def _unknown_strategy_message(ref: str) -> str:
    names = available_strategies()
    if names:
        text = f"unknown strategy {ref!r}; available: {', '.join(names)}"
    else:
        text = f"unknown strategy {ref!r}; no strategies are registered in {ENTRY_POINT_GROUP!r}"
    close = difflib.get_close_matches(ref, names, n=1)
    if close:
        text += f" (did you mean {close[0]!r}?)"
    if "." in ref:
        text += "; a class is named as 'package.module:ClassName', with a colon"
    else:
        text += "; or give a 'package.module:ClassName' path"
    return text


def _check_class(obj: object, ref: str) -> type[Strategy[Any]]:
    if not (isinstance(obj, type) and issubclass(obj, Strategy)):
        raise StrategyError(
            f"strategy {ref!r}: {_describe_object(obj)} is not a subclass of "
            "mmbot.strategy.Strategy"
        )
    label = f"strategy {ref!r}: class {obj.__qualname__}"
    if obj is Strategy:
        raise StrategyError(f"{label} is the abstract base class; name a subclass of it")
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise StrategyError(f'{label} has no name: set the class attribute name = "..."')
    params = getattr(obj, "Params", None)
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise StrategyError(
            f"{label} has no Params model: set Params to a pydantic model "
            "(a subclass of mmbot.strategy.StrategyParams)"
        )
    if obj.quote is Strategy.quote:
        raise StrategyError(f"{label} does not implement quote(rfq, market)")
    return obj


def _describe_object(obj: object) -> str:
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    kind = type(obj).__name__
    return f"{kind} {qualname}" if isinstance(qualname, str) else f"a {kind} object"


def _exception_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


# --------------------------------------------------------------------------- parameters


def build_strategy(ref: str, params: Mapping[str, Any] | None = None) -> Strategy[Any]:
    """Load a strategy class, validate ``params`` against its ``Params`` and instantiate it."""
    cls = load_strategy_class(ref)
    _refuse_float_fields(cls, ref.strip())
    validated = _validate_params(cls, ref.strip(), {} if params is None else params)
    try:
        return cls(validated)
    except Exception as exc:
        raise StrategyError(
            f"strategy {cls.name!r}: creating it failed: {_exception_text(exc)}"
        ) from exc


def _strategy_label(cls: type[Strategy[Any]], ref: str) -> str:
    return f"strategy {cls.name!r}" + ("" if ref == cls.name else f" ({ref})")


def _refuse_float_fields(cls: type[Strategy[Any]], ref: str) -> None:
    """Refuse a Params model with a float field, unless it is a time (``*_seconds``)."""
    # A float parameter validates from the config but the strategy then does Decimal
    # arithmetic with it (Decimal - float raises TypeError), failing on every RFQ: refused
    # here, when the strategy is built, so check-config and run both report it.
    bad = [
        name
        for name, field in cls.Params.model_fields.items()
        if float in _leaf_types(field.annotation) and not _is_time(name)
    ]
    if bad:
        label = _strategy_label(cls, ref)
        model = cls.Params.__qualname__
        raise StrategyError(
            f"{label}: {model} declares float field(s) {', '.join(bad)}; "
            "declare money and sizes as Decimal (only times named *_seconds may be float)",
            [f"{name}: declared float, use Decimal" for name in bad],
        )


def _is_time(name: str) -> bool:
    return name == "seconds" or name.endswith("_seconds")


def _validate_params(cls: type[Strategy[Any]], ref: str, params: object) -> BaseModel:
    label = _strategy_label(cls, ref)
    if not isinstance(params, Mapping):
        raise StrategyError(
            f"{label}: parameters must be a table of names to values, got {type(params).__name__}"
        )
    model = cls.Params
    fields = model.model_fields
    accepted = {name: name for name in fields}
    accepted.update({f.alias: name for name, f in fields.items() if isinstance(f.alias, str)})
    problems: list[str] = []
    reported: set[str] = set()
    for key, value in params.items():
        if not isinstance(key, str):
            problems.append(f"{key!r}: parameter names must be strings")
            reported.add(str(key))
            continue
        field_name = accepted.get(key)
        if field_name is None:
            # Checked here rather than left to extra="forbid", so a Params model that
            # forgot it still cannot silently ignore a misspelt parameter.
            problems.append(_unknown_param(key, tuple(fields)))
            reported.add(key)
        elif isinstance(value, float) and _wants_decimal(fields[field_name].annotation):
            problems.append(
                f"{key}: expected a decimal number, got the float {value!r} "
                f'(floats cannot hold money exactly: write "{value}")'
            )
            reported.add(key)
    try:
        validated = model.model_validate(dict(params))
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = error["loc"]
            head = str(loc[0]) if loc else ""
            if head in reported or error["type"] == "extra_forbidden":
                continue
            reported.add(head)
            problems.append(_describe_error(error, fields))
    else:
        if not problems:
            return validated
    count = len(problems)
    raise StrategyError(f"{label}: {count} invalid parameter{'s' if count != 1 else ''}", problems)


def _unknown_param(key: str, known: tuple[str, ...]) -> str:
    text = f"{key}: unknown parameter"
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        text += f" (did you mean {close[0]!r}?)"
    return text + (f"; known: {', '.join(known)}" if known else "; this strategy takes none")


def _describe_error(error: Any, fields: Mapping[str, Any]) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    kind = str(error["type"])
    if kind == "missing":
        return f"{loc}: required parameter is missing"
    if not loc:
        return f"parameters: {_plain_message(error['msg'])}"
    got = _show(error["input"])
    field = fields.get(str(error["loc"][0]))
    if field is not None and (kind.endswith(("_type", "_parsing")) or kind == "float_money"):
        return f"{loc}: expected {_expected(field.annotation)}, got {got}"
    return f"{loc}: {_plain_message(error['msg'])}, got {got}"


def _plain_message(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if message.startswith("Input should be "):
        message = "must be " + message.removeprefix("Input should be ")
    return message


def _show(value: object) -> str:
    text = repr(value) if isinstance(value, str | float) else str(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


_EXPECTED_WORDS: dict[object, str] = {
    Decimal: "a decimal number",
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "a string",
}


def _expected(annotation: object) -> str:
    if typing.get_origin(annotation) is Literal:
        return "one of: " + ", ".join(repr(choice) for choice in typing.get_args(annotation))
    words = []
    for leaf in _leaf_types(annotation) - {type(None)}:
        if typing.get_origin(leaf) is Literal:
            words.append(_expected(leaf))
        else:
            words.append(_EXPECTED_WORDS.get(leaf, getattr(leaf, "__name__", str(leaf))))
    return " or ".join(sorted(words)) or "a valid value"


def _leaf_types(annotation: object) -> set[object]:
    if typing.get_origin(annotation) is typing.Annotated:
        return _leaf_types(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is Literal:
        return {annotation}
    args = typing.get_args(annotation)
    if not args or typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return {annotation}
    return set().union(*(_leaf_types(arg) for arg in args))


def _wants_decimal(annotation: object) -> bool:
    return Decimal in _leaf_types(annotation)


# --------------------------------------------------------------------------- routing


@dataclass(frozen=True, slots=True)
class Route:
    """Markets whose market or event ticker matches one of ``patterns`` go to ``strategy``."""

    patterns: tuple[str, ...]
    strategy: Strategy[Any]

    def __post_init__(self) -> None:
        # A bare string is a sequence of one-letter patterns: almost certainly a mistake.
        if isinstance(self.patterns, str):
            raise TypeError(f"Route patterns must be a tuple, e.g. ({self.patterns!r},)")
        patterns = tuple(self.patterns)
        if not patterns or not all(isinstance(p, str) and p for p in patterns):
            raise ValueError(f"Route patterns must be non-empty strings, got {patterns!r}")
        if not isinstance(self.strategy, Strategy):
            raise TypeError(f"Route strategy must be a Strategy, got {type(self.strategy)!r}")
        object.__setattr__(self, "patterns", patterns)


class StrategyRouter:
    """Picks the strategy for a market: the first route whose glob matches wins."""

    def __init__(self, routes: Sequence[Route]) -> None:
        """Compile the routes' patterns once, keeping their order."""
        self.routes = tuple(routes)
        # One regex per route: matching on the hot path is then a single C-level call.
        self._compiled = tuple(
            (re.compile("|".join(fnmatch.translate(p) for p in route.patterns)), route.strategy)
            for route in self.routes
        )

    def route(self, market_ticker: str, event_ticker: str | None) -> Strategy[Any] | None:
        """Strategy for a market, or ``None`` when no route matches (the market is not quoted)."""
        for regex, strategy in self._compiled:
            if regex.match(market_ticker) or (event_ticker and regex.match(event_ticker)):
                return strategy
        return None

    def strategies(self) -> tuple[Strategy[Any], ...]:
        """Each distinct strategy instance once, in route order (for on_start / on_fill)."""
        seen: dict[int, Strategy[Any]] = {}
        for route in self.routes:
            seen.setdefault(id(route.strategy), route.strategy)
        return tuple(seen.values())


# --------------------------------------------------------------------------- calling a strategy


def safe_quote(
    strategy: Strategy[Any], rfq: Rfq, market: MarketView
) -> tuple[QuoteIntent | None, str | None]:
    """Call ``strategy.quote``; any failure becomes ``(None, reason)`` instead of an exception.

    Failures are also kept per strategy (:func:`strategy_failure`): where in its code the
    exception was raised, and how many calls in a row failed.
    """
    try:
        result = strategy.quote(rfq, market)
    except Exception as exc:
        error = f"quote() raised {_exception_text(exc)}"
        failed(strategy, error, exc)
        return None, error
    problem = _result_problem(result)
    if problem is not None:
        failed(strategy, problem, None)
        return None, problem
    record = strategy_failure(strategy)
    if record is not None and record.streak:
        record.streak = 0
        record.streak_reported = False
    if result is None or (result.yes_bid == 0 and result.no_bid == 0):
        return None, None
    return result, None


def _result_problem(result: object) -> str | None:
    if result is None:
        return None
    if not isinstance(result, QuoteIntent):
        if inspect.iscoroutine(result):
            # Closing it avoids a "coroutine was never awaited" warning at garbage collection.
            result.close()
            return "quote() returned a coroutine: quote must be a plain, not async, method"
        return f"quote() returned {type(result).__name__}, expected QuoteIntent or None"
    # QuoteIntent checks itself when built, but a plug-in can still bypass __init__.
    problem = _intent_problem(result)
    if problem is not None:
        return f"quote() returned an invalid QuoteIntent: {problem[1]}"
    return None


# --------------------------------------------------------------------------- price helpers


def round_down_to_grid(price: Decimal, price_ranges: Sequence[PriceRange]) -> Decimal:
    """Largest quotable grid price (strictly between 0 and 1) <= ``price``; 0 if there is none."""
    if not isinstance(price, Decimal) or not price.is_finite():
        raise ValueError(f"expected a finite Decimal price, got {price!r}")
    best = _ZERO
    for band in price_ranges:
        start, step = band.start, band.step
        if step <= 0 or price < start:
            continue
        # Decimal // truncates toward zero, which is floor here since both sides are >= 0.
        candidate = start + ((min(price, band.end) - start) // step) * step
        if candidate >= _ONE:
            # A bid of 1 dollar (or more) can never pay off and is not a valid quote price.
            candidate = start + ((_ONE - start) // step) * step
            if candidate >= _ONE:
                candidate -= step
            if candidate < start:
                continue
        if candidate > best:
            best = candidate
    return best


def clamp_pair(yes: Decimal, no: Decimal, max_sum: Decimal) -> tuple[Decimal, Decimal]:
    """Lower ``yes`` and ``no`` so that ``yes + no <= max_sum``, keeping both >= 0."""
    for label, value in (("yes", yes), ("no", no), ("max_sum", max_sum)):
        if not isinstance(value, Decimal) or not value.is_finite():
            raise ValueError(f"clamp_pair: {label} must be a finite Decimal, got {value!r}")
    if max_sum < 0:
        raise ValueError(f"clamp_pair: max_sum must not be negative, got {max_sum}")
    yes, no = max(yes, _ZERO), max(no, _ZERO)
    excess = yes + no - max_sum
    if excess <= 0:
        return yes, no
    # Share the cut equally, so the difference between the two prices (a strategy's skew)
    # survives; a side that would go below zero stops at zero and the other pays the rest.
    half = excess / _TWO
    if yes <= half:
        return _ZERO, max_sum
    if no <= half:
        return max_sum, _ZERO
    new_yes = yes - half
    return new_yes, max_sum - new_yes
