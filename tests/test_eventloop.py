"""mmbot.eventloop: which loop `mmbot run` gets for each run.event_loop value."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

import pytest

from mmbot.config import ConfigError
from mmbot.eventloop import EVENT_LOOP_KEY, run, select_loop


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import uvloop`` fail, as on a machine without it."""
    monkeypatch.setitem(sys.modules, "uvloop", None)


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_never_tries_uvloop(no_uvloop: None) -> None:
    assert select_loop("asyncio") == ("asyncio", None)
    assert run(_loop_module, "asyncio").startswith("asyncio")


def test_auto_falls_back_to_asyncio_without_uvloop(no_uvloop: None) -> None:
    assert select_loop("auto") == ("asyncio", None)
    assert run(_loop_module, "auto").startswith("asyncio")


def test_uvloop_without_uvloop_stops_with_an_error_naming_the_key(no_uvloop: None) -> None:
    created = []

    def main() -> Coroutine[Any, Any, None]:
        created.append(True)
        raise AssertionError("main must not be created when the loop is refused")

    with pytest.raises(ConfigError) as info:
        run(main, "uvloop", source="config file /etc/mmbot.toml")
    assert not created
    (problem,) = info.value.problems
    assert problem.key == EVENT_LOOP_KEY == "run.event_loop"
    assert problem.got == "'uvloop'"
    text = str(info.value)
    assert text.startswith("run.event_loop: expected auto or asyncio")
    assert "install uvloop" in text
    assert text.endswith("(from config file /etc/mmbot.toml)")


def test_an_unknown_choice_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"run\.event_loop: expected one of: auto, uvloop"):
        select_loop("trio")


def test_uvloop_is_used_when_chosen_or_auto_and_importable() -> None:
    uvloop = pytest.importorskip("uvloop")
    for choice in ("uvloop", "auto"):
        name, factory = select_loop(choice)
        assert (name, factory) == ("uvloop", uvloop.new_event_loop)
        assert run(_loop_module, choice).startswith("uvloop")


@pytest.mark.parametrize("choice", ["asyncio", "auto"])
def test_run_returns_the_result_and_closes_its_loop(choice: str) -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> int:
        loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0)
        return 42

    assert run(main, choice) == 42
    assert loops[0].is_closed()


def test_run_propagates_the_coroutine_exception() -> None:
    async def main() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run(main, "asyncio")
