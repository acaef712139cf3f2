"""Settable clocks for code that takes a ``clock`` callable, so no test waits on real time."""

from __future__ import annotations

from datetime import datetime, timedelta


class FakeClock:
    """A monotonic clock in float seconds that reads ``now`` until the test moves it."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self.now += seconds


class FakeWallClock:
    """A wall clock that reads the aware datetime ``now`` until the test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        """Move the clock by ``timedelta(**delta)`` (negative values move it back)."""
        self.now += timedelta(**delta)
