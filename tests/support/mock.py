"""Talking to a running MockExchange from the tests of the mock itself."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mmbot.kalshi.rest import KalshiRestClient

if TYPE_CHECKING:
    from mmbot.kalshi.auth import Signer
    from mmbot.mock.server import MockExchange


def now_ms() -> int:
    """The wall clock in epoch milliseconds, as a request signature stamps it."""
    return time.time_ns() // 1_000_000


def rest(
    mock: MockExchange, signer: Signer | None, *, unthrottled_writes: bool = False
) -> KalshiRestClient:
    """A client of ``mock`` that never retries, so each failure surfaces at once.

    ``unthrottled_writes`` gives it a huge write bucket: after a 429 the client empties its
    own bucket, and the default refill would make each later write wait a tenth of a second.
    """
    if unthrottled_writes:
        return KalshiRestClient(
            mock.rest_url,
            signer,
            retry_deadline_seconds=0.0,
            write_tokens_per_second=1_000_000,
            write_bucket_capacity=1_000_000,
        )
    return KalshiRestClient(mock.rest_url, signer, retry_deadline_seconds=0.0)
