"""Configuration problems: what is wrong, where it came from, shown without secrets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic_core import PydanticCustomError

from mmbot.logs import redact_text

__all__ = ["REDACTED", "ConfigError", "ConfigProblem"]

REDACTED = "<redacted>"

_MAX_SHOWN_VALUE = 80
_CROSS_FIELD_ERROR = "mmbot_cross_field"


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One configuration problem, about one key or a group of related keys."""

    keys: tuple[str, ...]
    expected: str | None = None
    got: str | None = None
    note: str | None = None
    # Where each key's value came from, aligned with ``keys``; None where unknown.
    sources: tuple[str | None, ...] = ()

    @property
    def key(self) -> str:
        """Return the main dotted key this problem is about."""
        return self.keys[0]

    @property
    def source(self) -> str | None:
        """Return where the main key's value came from, if known."""
        return self.sources[0] if self.sources else None

    def __str__(self) -> str:
        """Render as one line: key, expectation, offending value and source."""
        text = f"{', '.join(self.keys)}: "
        if self.expected is not None:
            text += f"expected {self.expected}"
            if self.got is not None:
                text += f", got {self.got}"
            if self.note is not None:
                text += f"; {self.note}"
        elif self.note is not None:
            text += self.note
        return text + self._origin()

    def _origin(self) -> str:
        known = [(k, s) for k, s in zip(self.keys, self.sources, strict=False) if s is not None]
        if not known:
            return ""
        if len({s for _, s in known}) == 1:
            return f" (from {_describe_source(known[0][1])})"
        return " (" + "; ".join(f"{k} from {_describe_source(s)}" for k, s in known) + ")"


def _describe_source(source: str) -> str:
    return "the default" if source == "default" else source


class ConfigError(Exception):
    """Invalid configuration; ``problems`` lists everything that is wrong."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        """Hold ``problems``; the message lists them one per line."""
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        """Render every problem, one per line."""
        return "\n".join(str(problem) for problem in self.problems)


@dataclass(frozen=True, slots=True)
class _CrossFieldIssue:
    # Keys are relative to the model that raised the issue; the section prefix is added when
    # the pydantic error is translated, since only the error's location knows it.
    fields: tuple[str, ...]
    expected: str
    got: str | None = None


def _cross_field_error(issues: list[_CrossFieldIssue]) -> PydanticCustomError:
    summary = "; ".join(f"{', '.join(i.fields)}: expected {i.expected}" for i in issues)
    return PydanticCustomError(
        _CROSS_FIELD_ERROR, "{summary}", {"summary": summary, "issues": issues}
    )


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    if len(text) > _MAX_SHOWN_VALUE:
        text = text[: _MAX_SHOWN_VALUE - 3] + "..."
    # A non-secret field can still be handed key material by mistake (a PEM pasted into
    # private_key_path); error messages must not echo it.
    return redact_text(text)
