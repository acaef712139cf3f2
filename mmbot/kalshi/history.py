"""History listings the exchange can answer: bounded by ``min_ts``/``max_ts``, paged, retried.

Kalshi answers an unbounded ``GET /communications/quotes`` (or ``/portfolio/fills``) over a
long history with 500/504 (field reports), so every history listing here is cut into windows
of at most ``window_seconds``, each paged with the cursor to its end.

* Windows run oldest to newest. Quotes are filtered on their last update, so a quote updated
  while the walk runs moves into a newer window: one still ahead, where it is found again,
  never one already passed.
* ``min_ts``/``max_ts`` are Unix seconds; the documents say "after" and "before" without
  saying whether the bound is included. Neighbouring windows overlap by one second, so an
  item exactly on a boundary is listed under either reading; items are de-duplicated by id.
* Each page request is retried by :meth:`~mmbot.kalshi.rest.KalshiRestClient._call` (5xx,
  transport failures) within the client's retry deadline. A window that still fails is split
  in half, down to ``min_window_seconds`` (a smaller window is a cheaper query for the
  exchange), then retried with backoff; once a window has kept failing for
  ``deadline_seconds`` the walk raises :class:`HistoryWindowError`, a ``KalshiError``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import structlog

from mmbot.kalshi.backoff import Backoff
from mmbot.kalshi.errors import KalshiError, PaginationError, ServerError, TransportError

__all__ = [
    "HistoryWindowError",
    "HistoryWindows",
    "Page",
    "fill_key",
    "iter_history",
    "paginate",
    "windows",
]

log = structlog.get_logger("mmbot.kalshi.history")

T = TypeVar("T")

#: Seconds neighbouring windows share: covers a boundary item whether bounds are inclusive.
_OVERLAP: Final = 1
#: Added past "now" to the newest window: the exchange's clock may run ahead of ours.
_CLOCK_SLACK_SECONDS: Final = 60


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a cursor-paginated list; ``cursor`` is None on the last page."""

    items: list[T]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class HistoryWindows:
    """How history listings are bounded: how far back, in windows of what size, how patient."""

    #: Default reach of a listing that names no ``min_ts``.
    lookback_seconds: int = 86_400
    #: Widest ``max_ts - min_ts`` of one query.
    window_seconds: int = 21_600
    #: How long one window may keep failing before the listing gives up.
    deadline_seconds: float = 30.0
    #: Failing windows are halved down to this span, no further.
    min_window_seconds: int = 60

    def __post_init__(self) -> None:
        if self.window_seconds <= _OVERLAP or self.min_window_seconds <= _OVERLAP:
            raise ValueError(f"history windows must span more than {_OVERLAP} s")
        if not 0 < self.window_seconds <= self.lookback_seconds:
            raise ValueError("history window_seconds must be within (0, lookback_seconds]")
        if not math.isfinite(self.deadline_seconds) or self.deadline_seconds < 0:
            raise ValueError("history deadline_seconds must be a finite number >= 0")


class HistoryWindowError(KalshiError):
    """A history window kept failing past the deadline; ``window`` is its (min_ts, max_ts)."""

    def __init__(self, message: str, *, window: tuple[int, int], **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.window = window


def windows(start: int, end: int, size: int) -> list[tuple[int, int]]:
    """``[start, end]`` as windows of at most ``size`` seconds, oldest first, 1 s overlapping."""
    if size <= _OVERLAP:
        raise ValueError(f"a window must span more than {_OVERLAP} s")
    out: list[tuple[int, int]] = []
    low = start
    while True:
        high = min(low + size, end)
        out.append((low, high))
        if high >= end:
            return out
        low = high - _OVERLAP


async def paginate(fetch: Callable[[str | None], Awaitable[Page[T]]]) -> AsyncIterator[T]:
    """Every item of a cursor-paginated listing; a repeated cursor raises PaginationError."""
    cursor: str | None = None
    seen: set[str] = set()
    while True:
        page = await fetch(cursor)
        for item in page.items:
            yield item
        if page.cursor is None:
            return
        if page.cursor in seen:
            raise PaginationError(f"server repeated cursor {page.cursor[:40]!r}")
        seen.add(page.cursor)
        cursor = page.cursor


def fill_key(fill: Any) -> str | None:
    """A fill's identity for de-duplication: its fill id, else its trade id."""
    key = getattr(fill, "fill_id", None) or getattr(fill, "trade_id", None)
    return str(key) if key else None


async def iter_history(
    list_page: Callable[..., Awaitable[Page[T]]],
    filters: Mapping[str, Any],
    config: HistoryWindows,
    *,
    key: Callable[[T], str | None],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    now: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> AsyncIterator[T]:
    """Every item of ``list_page(**filters)`` over bounded windows, each once (by ``key``).

    ``filters`` may carry ``min_ts``/``max_ts`` to narrow the range; by default (and at
    most) it is the last ``config.lookback_seconds``, up to now.
    """
    rest = {k: v for k, v in filters.items() if k not in ("min_ts", "max_ts", "cursor")}
    wall = int(now())
    start = filters.get("min_ts")
    end = filters.get("max_ts")
    # Never past the lookback, asked or not: a far-reaching range is many windows of reads.
    floor = wall - config.lookback_seconds
    start = floor if start is None else max(floor, int(start))
    end = wall + _CLOCK_SLACK_SECONDS if end is None else int(end)
    if end < start:
        return
    # A stack, newest window at the bottom: halves of a failed window go on top, older first.
    pending = windows(start, end, config.window_seconds)[::-1]
    seen: set[str] = set()
    backoff = Backoff(base=0.05, cap=2.0, rng=rng or random.Random())  # noqa: S311 - jitter
    failing_since: float | None = None
    while pending:
        low, high = pending.pop()

        async def fetch(cursor: str | None, low: int = low, high: int = high) -> Page[T]:
            return await list_page(min_ts=low, max_ts=high, cursor=cursor, **rest)

        try:
            async for item in paginate(fetch):
                item_key = key(item)
                if item_key is not None:
                    if item_key in seen:
                        continue
                    seen.add(item_key)
                yield item
        except (ServerError, TransportError) as exc:
            # Items already yielded from this window stay yielded; its retry skips them by key.
            clock = monotonic()
            failing_since = clock if failing_since is None else failing_since
            failed_for = clock - failing_since
            if failed_for >= config.deadline_seconds:
                raise HistoryWindowError(
                    f"history window {low}..{high} still failing after {failed_for:.1f}s: {exc}",
                    window=(low, high),
                    status=exc.status,
                    code=exc.code,
                    method=exc.method,
                    path=exc.path,
                ) from exc
            # Four seconds at least: halves of a narrower window, overlapping, would not shrink.
            if high - low > max(config.min_window_seconds, 4):
                middle = (low + high) // 2
                pending.extend([(middle - _OVERLAP, high), (low, middle)])
                log.info("history_window_split", low=low, high=high, error=str(exc))
                continue
            delay = min(backoff.next_delay(), config.deadline_seconds - failed_for)
            log.info("history_window_retry", low=low, high=high, delay_s=round(delay, 3))
            pending.append((low, high))
            await sleep(delay)
            continue
        failing_since = None
        backoff.reset()
