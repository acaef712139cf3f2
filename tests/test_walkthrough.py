"""The README's walk-through of the production example against the mock, run as written.

The section "Walk-through: the production example against the mock" shows two terminals:
``mmbot mock-exchange`` in one, and in the other the ``export`` lines of the overrides
followed by ``mmbot check-config`` and ``mmbot run`` with config/production.example.toml.
This test takes those commands from README.md and runs them in child processes, from a
directory holding a ``config`` link to this checkout's config/ (the README runs them from
the checkout; here the relative journal and kill-switch paths land in ``tmp_path``).

Only three things differ from the README, each checked against it first: the four values
the mock prints replace their ``...``/``PORT`` placeholders, ``metrics.port`` is a free
port rather than the README's fixed one (tests never take a fixed port), and
``--duration`` is shorter.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from tests.support.env import subprocess_env
from tests.support.net import free_port
from tests.support.readme import ROOT, fenced_blocks, section

SECTION = "Walk-through: the production example against the mock"
CONFIG = "config/production.example.toml"
BANNER_KEYS = {
    "MMBOT_KALSHI__KEY_ID",
    "MMBOT_KALSHI__PRIVATE_KEY_PATH",
    "MMBOT_KALSHI__REST_URL",
    "MMBOT_KALSHI__WS_URL",
}
# What the README says must be overridden, and why (the section's bullet list).
OVERRIDES = BANNER_KEYS | {
    "MMBOT_STRATEGIES__ROUTES",
    "MMBOT_JOURNAL__PATH",
    "MMBOT_RISK__KILL_SWITCH_FILE",
    "MMBOT_METRICS__PORT",
}
DURATION = "12"


# --------------------------------------------------------------------------- the README


def _terminals() -> tuple[list[list[str]], list[list[str]]]:
    """The two terminals' command lines, each split as the shell would (comments dropped)."""
    blocks = [body for lang, body in fenced_blocks(section(SECTION)) if lang == "sh"]
    assert len(blocks) == 2, f"{SECTION!r} must show two sh blocks, one per terminal"
    first, second = (
        [words for line in body.splitlines() if (words := shlex.split(line, comments=True))]
        for body in blocks
    )
    return first, second


def _walkthrough() -> tuple[list[str], dict[str, str], list[list[str]]]:
    """The mock's argv, the second terminal's exports, and its mmbot commands, in order."""
    first, second = _terminals()
    assert len(first) == 1, f"the first terminal runs one command: {first}"
    mock = first[0]
    assert mock[:2] == ["mmbot", "mock-exchange"], mock
    exports: dict[str, str] = {}
    commands: list[list[str]] = []
    for words in second:
        if words[0] == "export":
            assert not commands, f"exports come before the commands: {words}"
            assert len(words) == 2, f"one NAME=VALUE per export: {words}"
            assert "=" in words[1], f"one NAME=VALUE per export: {words}"
            name, value = words[1].split("=", 1)
            exports[name] = value
        else:
            assert words[0] == "mmbot", f"the second terminal runs only mmbot: {words}"
            commands.append(words)
    return mock, exports, commands


def test_the_walkthrough_names_every_override_and_runs_the_production_example() -> None:
    mock, exports, commands = _walkthrough()
    assert "--port" not in mock, "the mock picks a free port by itself; the banner names it"
    assert set(exports) == OVERRIDES
    # Relative paths, so the journal and kill switch land where the commands are run.
    for name in ("MMBOT_JOURNAL__PATH", "MMBOT_RISK__KILL_SWITCH_FILE"):
        assert not Path(exports[name]).is_absolute(), f"{name}={exports[name]}"
    routes = json.loads(exports["MMBOT_STRATEGIES__ROUTES"])
    assert any("MOCK-*" in route["match"] for route in routes), routes
    assert [words[:2] for words in commands] == [["mmbot", "--config"], ["mmbot", "run"]]
    check, run = commands
    assert check == ["mmbot", "--config", CONFIG, "check-config"]
    assert run[:4] == ["mmbot", "run", "--config", CONFIG]
    assert "--duration" in run
    text = section(SECTION)
    for name in OVERRIDES - BANNER_KEYS:
        key = name.removeprefix("MMBOT_").lower().replace("__", ".")
        assert f"`{key}`" in text, f"the walk-through does not say why it overrides {key}"


# --------------------------------------------------------------------------- running it


def _placeholder(value: str) -> re.Pattern[str]:
    """The README's ``...``/``PORT`` placeholder value as a pattern for the real one."""
    pattern = re.escape(value).replace(re.escape("..."), ".+").replace("PORT", r"\d+")
    return re.compile(pattern)


def _wait(probe: Callable[[], Any], what: str, within: float, proc: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"exit {proc.returncode} while waiting for {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {within} s waiting for {what}")


def _events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line still being written
    return events


def _event(path: Path, name: str, **fields: Any) -> dict[str, Any] | None:
    for event in _events(path):
        if event.get("event") == name and all(event.get(k) == v for k, v in fields.items()):
            return event
    return None


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


class _Children:
    """Child processes started by the test, each stopped (SIGINT, then SIGKILL) at the end."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd, self.env = cwd, env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.outputs: list[IO[bytes]] = []

    def start(self, argv: list[str], output: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        assert argv[0] == "mmbot"
        out = output.open("wb")
        self.outputs.append(out)
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter, the README's arguments
            [sys.executable, "-m", "mmbot", *argv[1:]],
            cwd=self.cwd,
            env={**self.env, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)
        for out in self.outputs:
            out.close()


@pytest.fixture
def children(tmp_path: Path) -> Iterator[_Children]:
    work = tmp_path / "checkout"
    work.mkdir()
    (work / "config").symlink_to(ROOT / "config", target_is_directory=True)
    # This checkout's mmbot, without the developer's MMBOT_* settings; unbuffered, so the
    # banner and the daemon's events reach their files as they happen.
    env = subprocess_env(drop=["PYTHONPATH"], PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    kids = _Children(work, env)
    try:
        yield kids
    finally:
        kids.close()
        # On a failure, pytest shows what each child said and how it exited.
        print("exit codes:", [proc.returncode for proc in kids.procs])
        for path in sorted(tmp_path.glob("*.out")):
            print(f"--- {path.name} ---\n{path.read_text(errors='replace')}")


def _banner(path: Path) -> dict[str, str] | None:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    found = dict(line.split("=", 1) for line in lines if line.startswith("MMBOT_KALSHI__"))
    return found if set(found) == BANNER_KEYS else None


@pytest.mark.slow  # the mock and a daemon as child processes, about fifteen seconds
def test_the_readme_walkthrough_quotes_the_mock_with_the_production_example(
    tmp_path: Path, children: _Children
) -> None:
    mock_argv, exports, (check_argv, run_argv) = _walkthrough()
    work = children.cwd

    # Terminal 1: the mock, exactly as written.
    mock_out = tmp_path / "mock.out"
    mock = children.start(mock_argv, mock_out, {})
    banner: dict[str, str] = _wait(lambda: _banner(mock_out), "the mock's banner", 30, mock)
    assert banner["MMBOT_KALSHI__REST_URL"].startswith("http://127.0.0.1:")

    # Terminal 2: the exports, with the banner's values where the README has placeholders.
    env = dict(exports)
    for name in BANNER_KEYS:
        assert _placeholder(exports[name]).fullmatch(banner[name]), (
            f"the README's {name}={exports[name]} does not look like the mock's {banner[name]}"
        )
        env[name] = banner[name]
    port = free_port()
    env["MMBOT_METRICS__PORT"] = str(port)

    check = subprocess.run(  # noqa: S603 - our own interpreter, the README's arguments
        [sys.executable, "-m", "mmbot", *check_argv[1:]],
        cwd=work,
        env={**children.env, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "warning" not in check.stderr, check.stderr  # the key loads and signs
    for name in OVERRIDES:
        assert f"# environment variable {name}" in check.stdout, f"{name} did not take"

    argv = list(run_argv)
    argv[argv.index("--duration") + 1] = DURATION
    run_out = tmp_path / "run.out"
    run = children.start(argv, run_out, env)

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    _wait(ready, "/readyz to answer 200", 20, run)
    started = _event(run_out, "daemon_started")
    assert started is not None
    assert started["kill_switch_file"] == exports["MMBOT_RISK__KILL_SWITCH_FILE"]
    _wait(lambda: _event(run_out, "quote_sent"), "a quote on a mock market", 10, run)

    # The kill switch is where the README says: touching it engages it, removing it resumes.
    stop = work / exports["MMBOT_RISK__KILL_SWITCH_FILE"]
    stop.touch()
    _wait(lambda: _event(run_out, "kill_switch_on", file=stop.name), "kill_switch_on", 5, run)
    stop.unlink()
    _wait(lambda: _event(run_out, "kill_switch_off", file=stop.name), "kill_switch_off", 5, run)

    assert run.wait(timeout=60) == 0, run_out.read_text(errors="replace")
    summaries = [e for e in _events(run_out) if e.get("event") == "run_summary"]
    assert len(summaries) == 1, summaries
    summary = summaries[0]
    assert summary["exit_code"] == 0
    assert summary["quotes_created"] > 0, summary
    assert "unrouted_market" not in summary["rfqs_skipped_by_reason"], summary

    journal = work / exports["MMBOT_JOURNAL__PATH"]
    with contextlib.closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as conn:
        quoted = conn.execute(
            "SELECT count(*) FROM events WHERE kind = 'quote_created' AND market LIKE 'MOCK-%'"
        ).fetchone()[0]
    assert quoted == summary["quotes_created"]

    # Terminal 1 again: Ctrl-C stops the mock cleanly and takes its throwaway key with it.
    _stop(mock)
    assert mock.returncode == 0, mock_out.read_text(errors="replace")
    assert not Path(banner["MMBOT_KALSHI__PRIVATE_KEY_PATH"]).exists()
