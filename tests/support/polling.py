"""Waiting for something to become true, for tests that watch a running daemon."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(probe: Callable[[], T | None], what: str, within: float = 8.0) -> T:
    """Poll ``probe`` until it returns something truthy, and return that."""
    try:
        async with asyncio.timeout(within):
            while True:
                value = probe()
                if value:
                    return value
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {within} s waiting for {what}") from None
