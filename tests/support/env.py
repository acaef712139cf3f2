"""Environments free of the developer's own ``MMBOT_*`` settings.

A variable left in the shell running the tests (``MMBOT_KALSHI__KEY_ID``, a log level, ...)
would otherwise reach the settings under test or a daemon child, and a test would pass or
fail depending on whose machine runs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pytest

PREFIX = "MMBOT_"


def is_mmbot_var(name: str, *, ignore_case: bool = True) -> bool:
    """Whether ``name`` is one of mmbot's settings variables."""
    # The settings read names case-insensitively, so "mmbot_x" counts as much as "MMBOT_X".
    return (name.upper() if ignore_case else name).startswith(PREFIX)


def clear_mmbot_env(monkeypatch: pytest.MonkeyPatch, *, ignore_case: bool = True) -> None:
    """Remove every ``MMBOT_*`` variable from this process for the rest of the test."""
    for name in list(os.environ):
        if is_mmbot_var(name, ignore_case=ignore_case):
            monkeypatch.delenv(name)


def subprocess_env(
    *, ignore_case: bool = True, drop: Iterable[str] = (), **extra: str
) -> dict[str, str]:
    """This environment for a child process: without ``MMBOT_*`` and ``drop``, plus ``extra``."""
    dropped = set(drop)
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in dropped and not is_mmbot_var(name, ignore_case=ignore_case)
    }
    env.update(extra)
    return env
