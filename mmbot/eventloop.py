"""The event loop a command runs on: uvloop when chosen and importable, else asyncio's own.

``run.event_loop`` picks it. ``auto`` takes uvloop when it can be imported and asyncio's
loop otherwise; ``uvloop`` insists on it, so a machine without it stops at start-up with a
configuration error naming the key; ``asyncio`` never tries it. A setting that names a loop
the machine cannot give is an error rather than a warning because it is most likely a
deployment that lost a dependency, and latency would change silently.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar, get_args

from mmbot.config import ConfigError, ConfigProblem
from mmbot.logs import get_logger

__all__ = ["EVENT_LOOP_KEY", "EventLoopChoice", "LoopFactory", "run", "select_loop"]

EventLoopChoice = Literal["auto", "uvloop", "asyncio"]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]
#: The setting that chooses the loop, named in every error about it.
EVENT_LOOP_KEY = "run.event_loop"

_T = TypeVar("_T")
_log = get_logger("mmbot.eventloop")


def _import_uvloop() -> tuple[Any, str | None]:
    try:
        return importlib.import_module("uvloop"), None
    except ImportError as exc:
        return None, str(exc)


def select_loop(choice: str, *, source: str | None = None) -> tuple[str, LoopFactory | None]:
    """Return the loop's name and factory for ``choice`` (factory None: asyncio's default).

    ``source`` says where the setting came from, for the error message. Raises ConfigError
    naming ``run.event_loop`` when ``choice`` is unknown, or is ``uvloop`` and uvloop
    cannot be imported.
    """
    choices = get_args(EventLoopChoice)
    if choice not in choices:
        raise ConfigError(
            [
                ConfigProblem(
                    keys=(EVENT_LOOP_KEY,),
                    expected="one of: " + ", ".join(choices),
                    got=repr(choice),
                    sources=(source,),
                )
            ]
        )
    if choice == "asyncio":
        # None, not asyncio.new_event_loop: asyncio.Runner then also makes the loop the
        # thread's current one, exactly as asyncio.run does.
        return "asyncio", None
    uvloop, reason = _import_uvloop()
    if uvloop is not None:
        factory: LoopFactory = uvloop.new_event_loop
        return "uvloop", factory
    if choice == "auto":
        return "asyncio", None
    raise ConfigError(
        [
            ConfigProblem(
                keys=(EVENT_LOOP_KEY,),
                expected="auto or asyncio on a machine where uvloop cannot be imported",
                got=repr(choice),
                note=f"install uvloop, or choose another loop ({reason})",
                sources=(source,),
            )
        ]
    )


def run(
    main: Callable[[], Coroutine[Any, Any, _T]], choice: str, *, source: str | None = None
) -> _T:
    """Run ``main()`` to completion on the loop ``choice`` selects, like ``asyncio.run``.

    ``main`` is a factory so that a refused choice never creates a coroutine left unawaited.
    """
    name, factory = select_loop(choice, source=source)
    _log.info("event loop", loop=name, setting=choice)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())
