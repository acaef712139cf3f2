"""Guard: no float ever holds a price, a size or an amount of money anywhere in the package.

Floats are fine for seconds and rate-limit tokens; they are never fine for money. These
checks fail as soon as a model field or a parameter that names money is typed float, or
a money-named value is passed through float().
"""

from __future__ import annotations

import ast
import inspect
import re
import typing
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import BaseModel

import mmbot
from mmbot.kalshi import models
from tests.support.money import float_money_offences

PACKAGE = Path(mmbot.__file__).parent
MODEL_MONEY_FIELD = re.compile(r"(_dollars|_fp)$|^(price|count|start|end|step|fee_cost)$")


def _wire_models() -> list[type[BaseModel]]:
    return [
        obj
        for _, obj in inspect.getmembers(models, inspect.isclass)
        if issubclass(obj, BaseModel) and obj.__module__ == models.__name__
    ]


@pytest.mark.parametrize("model", _wire_models(), ids=lambda m: m.__name__)
def test_money_fields_of_wire_models_are_decimal(model: type[BaseModel]) -> None:
    for name, field in model.model_fields.items():
        if not MODEL_MONEY_FIELD.search(name):
            continue
        assert _leaf_types(field.annotation) - {type(None)} == {Decimal}, f"{model.__name__}.{name}"


def _leaf_types(annotation: object) -> set[object]:
    """The concrete types an annotation admits, looking through Optional and Annotated."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _leaf_types(typing.get_args(annotation)[0])
    args = typing.get_args(annotation)
    if not args:
        return {annotation}
    return set().union(*(_leaf_types(arg) for arg in args))


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_no_money_named_float_in_source(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert float_money_offences(tree) == []


def test_the_source_check_catches_offences() -> None:
    # Prove the scan is not vacuous.
    bad = ast.parse("def f(yes_bid: float, n: int) -> None:\n    x = float(price_dollars)\n")
    assert float_money_offences(bad) == ["parameter yes_bid", "float() of price_dollars"]
