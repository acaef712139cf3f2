"""The mock's per-user write rate limit: Kalshi's token costs and a plain token bucket.

Why not :class:`mmbot.kalshi.ratelimit.TokenBucket`: that one is the daemon's mirror of
the exchange's bucket, and it does a different job with different semantics. It raises
``ValueError`` for a cost above its capacity where the
mock must answer 429 (``write_bucket_capacity`` 5 refuses every 10-token write, as Kalshi
would); it queues waiters by priority and sheds them, which an exchange that answers 429 at
once has no use for; and it keeps its refill stamp private behind an injected clock, where
this one takes ``now`` per call. Keeping the mock's own also keeps the exchange under test
independent of the client it tests: a shared bucket (or shared costs) would let one bug hide
on both sides.
"""

from __future__ import annotations

import time
from typing import Final

from mmbot.mock.http_util import REST_PREFIX

__all__ = ["DEFAULT_WRITE_COST", "QUOTE_WRITE_COST", "TokenBucket", "write_cost"]

#: Tokens a quote create or delete costs, per Kalshi's endpoint documentation.
QUOTE_WRITE_COST: Final = 2
#: Tokens every other write costs.
DEFAULT_WRITE_COST: Final = 10


def write_cost(method: str, path: str) -> int:
    """Tokens a write to ``path`` (under the REST prefix) costs."""
    tail = path.removeprefix(REST_PREFIX)
    if method == "POST" and tail == "/communications/quotes":
        return QUOTE_WRITE_COST
    if method == "DELETE" and "/quotes/" in tail:
        return QUOTE_WRITE_COST
    return DEFAULT_WRITE_COST


class TokenBucket:
    """A token bucket refilled continuously on the monotonic clock."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = time.monotonic()

    def take(self, cost: float, now: float | None = None) -> bool:
        """Spend ``cost`` tokens if the bucket holds them; False (nothing spent) otherwise."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True
