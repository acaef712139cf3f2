"""Supervision of the daemon's short-lived tasks: one per event, tracked until done.

Every RFQ, acceptance, withdrawal, expiry and reconciliation runs as a task of its own so
that a slow exchange answer holds up nothing else. The :class:`TaskSupervisor` keeps them
all: a failure is logged with the task's name (never lost as an unretrieved exception),
the count is a metric, and shutdown waits for them. The engine owns one and gives its
``spawn`` to the quote manager; the engine's own long-lived loops are supervised (and
restarted) by the engine itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

__all__ = ["TaskSupervisor"]

log = structlog.get_logger("mmbot.tasks")


class TaskSupervisor:
    """Runs coroutines as tracked tasks: errors logged, count known, completion awaitable."""

    def __init__(self) -> None:
        """No task yet."""
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def in_flight(self) -> int:
        """Tasks started and not yet finished."""
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a tracked task named ``name``: errors are logged, never lost."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task_failed", task=task.get_name(), exc_info=task.exception())

    async def wait_idle(self) -> None:
        """Wait for every task, including those started while waiting."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
