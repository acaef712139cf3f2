"""The list of every leaf setting, as `mmbot check-config` and --help describe them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from mmbot.config.models import Settings

__all__ = ["ConfigKey", "config_keys"]


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """Description of one leaf setting, addressed by its dotted key."""

    key: str
    secret: bool
    expected: str
    description: str
    default: Any
    value_type: type
    # False for lists and tables (strategy routes and parameters): no command-line flag.
    scalar: bool = True


def _walk_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            yield from _walk_fields(info.annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", info


def _base_type(annotation: Any) -> Any:
    # Strip Annotated and Optional (settings are unset by omission, so None needs no words).
    if get_origin(annotation) is Annotated:
        return _base_type(get_args(annotation)[0])
    args = get_args(annotation)
    if get_origin(annotation) is not Literal and type(None) in args:
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) == 1:
            return _base_type(rest[0])
    return annotation


def _describe_bounds(info: FieldInfo) -> str:
    bounds: dict[str, Any] = {}
    for meta in info.metadata:
        for name in ("gt", "ge", "lt", "le"):
            if isinstance(meta, getattr(annotated_types, name.capitalize())):
                bounds[name] = getattr(meta, name)
    if "ge" in bounds and "le" in bounds:
        return f" from {bounds['ge']} to {bounds['le']}"
    words = {"gt": "greater than", "ge": "of at least", "lt": "less than", "le": "of at most"}
    return "".join(f" {words[name]} {value}" for name, value in bounds.items())


def _describe_expected(info: FieldInfo, base: Any) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("expected"), str):
        return str(extra["expected"])
    if get_origin(base) is Literal:
        return "one of: " + ", ".join(str(choice) for choice in get_args(base))
    if base is int:
        return "a whole number" + _describe_bounds(info)
    if base is float:
        return "a number" + _describe_bounds(info)
    if base is Decimal:
        return "a decimal number" + _describe_bounds(info)
    if base is bool:
        return "true or false"
    if base is Path:
        return "a file path"
    if get_origin(base) is list:
        return "a list"
    if get_origin(base) is dict:
        return "a table"
    return "a string"


def _value_type(base: Any) -> type:
    if get_origin(base) is Literal:
        return str
    return base if isinstance(base, type) else str


def _build_keys() -> dict[str, ConfigKey]:
    keys: dict[str, ConfigKey] = {}
    for dotted, info in _walk_fields(Settings):
        base = _base_type(info.annotation)
        keys[dotted] = ConfigKey(
            key=dotted,
            secret=base is SecretStr,
            expected=_describe_expected(info, base),
            description=info.description or "",
            default=info.get_default(call_default_factory=True),
            value_type=_value_type(base),
            scalar=get_origin(base) not in (list, dict),
        )
    return keys


_KEYS = _build_keys()


def config_keys() -> tuple[ConfigKey, ...]:
    """Return every leaf setting, in declaration order."""
    return tuple(_KEYS.values())
