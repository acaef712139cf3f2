"""Exponential backoff with full jitter, shared by REST retries and WebSocket reconnects."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter.

    Full jitter (a uniform draw between 0 and the capped exponential) spreads out
    clients that failed together, so a recovering exchange is not hit by a
    synchronized wave of retries.
    """

    base: float = 0.05
    cap: float = 5.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        """Return the next delay in seconds and advance the attempt counter."""
        # Bound the exponent: beyond ~60 doublings the cap has long been reached.
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 60)))
        self.attempt += 1
        return self.rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        """Start again from the smallest delay (after a success)."""
        self.attempt = 0
