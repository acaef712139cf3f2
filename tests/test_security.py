"""Security: key material never leaves the process, and the mock's controls are guarded.

1. The real daemon runs as a subprocess (JSON logs at DEBUG) with a generated key whose key
   id is a distinctive string, through RFQs, accepts, a WebSocket drop, injected 429s and
   500s, requests the exchange rejects, and start-ups that fail on a wrong key. Every line
   it printed, every ``/metrics``, ``/healthz`` and ``/readyz`` body, every journal row and
   the journal's raw bytes, and the text of every error message and exception are searched
   for the key id, the PEM, its base64 body (whole, per line and in fragments) and the raw
   private key bytes (hex and base64).
2. A private key file readable by group or others is reported at start-up (and by
   ``mmbot check-config``) with a ``private_key_permissions`` warning; 0600 and 0400 are not.
3. The scrape endpoints expose no key id, key material, key path, or RFQ/quote ids.
4. Every ``/_mock/`` control endpoint answers 401 without the control token, or with a
   wrong one, and works with it; the mock listens on loopback by default.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import signal
import sqlite3
import stat
import sys
import traceback
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from mmbot import cli
from mmbot.clients import build_signer
from mmbot.config import ConfigError, KalshiSettings
from mmbot.kalshi.auth import KeyLoadError, Signer
from mmbot.kalshi.rest import KalshiRestClient
from mmbot.mock import cli as mock_cli
from mmbot.mock.server import CONTROL_PREFIX, MockConfig, MockExchange
from tests.support.daemon import FLAT, REPO, journal_rows, write_config
from tests.support.env import subprocess_env
from tests.support.polling import eventually

FAST = 0.05
REQUESTER_KEY_ID = "security-requester"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Every Ed25519 PKCS#8 PEM body starts with the same DER header; after it, the key.
_ED25519_PKCS8_PREFIX = len("MC4CAQAwBQYDK2VwBCIEI")
_FRAGMENT = 16


# ----------------------------------------------------------------------------- key material


@dataclass(frozen=True)
class Secrets:
    """A generated Ed25519 key and every spelling of it that must never be shown."""

    key_id: str
    private: ed25519.Ed25519PrivateKey
    pem: str
    body: str  # the PEM's base64, lines joined

    @classmethod
    def generate(cls, label: str = "SECRETKEYID") -> Secrets:
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
        return cls(f"{label}-{uuid.uuid4().hex}", key, pem, body)

    def needles(self) -> dict[str, str]:
        """What to search for, by name."""
        raw = self.private.private_bytes_raw()
        der = self.private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        found = {
            "key id": self.key_id,
            "PEM": self.pem,
            "PEM body": self.body,
            "raw key hex": raw.hex(),
            "raw key HEX": raw.hex().upper(),
            "raw key base64": base64.b64encode(raw).decode(),
            "raw key base64url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
            "DER hex": der.hex(),
        }
        for n, line in enumerate(self.pem.splitlines()):
            if line and not line.startswith("-----"):
                found[f"PEM body line {n}"] = line
        # Fragments of the key-specific part of the body: a truncated or wrapped echo.
        tail = self.body[_ED25519_PKCS8_PREFIX:]
        for start in range(0, len(tail) - _FRAGMENT + 1, 4):
            found[f"PEM body fragment @{start}"] = tail[start : start + _FRAGMENT]
        return found

    def broken_pem(self) -> str:
        """The PEM with its body cut short: it no longer loads, yet is mostly the key."""
        lines = self.pem.splitlines()
        return "\n".join([lines[0], lines[1][:-4], *lines[2:]]) + "\n"


def leaks(text: str, *secrets: Secrets) -> list[str]:
    """Names of the secrets that appear in ``text``."""
    return [name for s in secrets for name, needle in s.needles().items() if needle in text]


def assert_clean(where: str, text: str, *secrets: Secrets) -> None:
    found = leaks(text, *secrets)
    assert not found, f"{where} shows {found}:\n{text[:4000]}"


def write_key(path: Path, pem: str, mode: int = 0o600) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(pem)
    path.chmod(mode)
    return path


def test_the_scanner_finds_every_spelling() -> None:
    """The scan itself can fail: each needle is found where it is."""
    s = Secrets.generate()
    raw = s.private.private_bytes_raw()
    for text in (
        s.pem,
        s.key_id,
        raw.hex(),
        base64.b64encode(raw).decode(),
        s.broken_pem(),
        json.dumps({"pem": s.pem}),
    ):
        assert leaks(f"before {text} after", s), text
    assert not leaks(Secrets.generate().pem, s)


# ----------------------------------------------------------------------------- subprocesses


def _env(**extra: str) -> dict[str, str]:
    return subprocess_env(
        drop=[mock_cli.CONTROL_TOKEN_ENV],
        **{
            "MMBOT_METRICS__PORT": "0",
            "MMBOT_LOG__LEVEL": "DEBUG",
            "MMBOT_LOG__FORMAT": "json",
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            **extra,
        },
    )


@dataclass
class Child:
    """A ``python -m mmbot`` child; stdout and stderr collected line by line."""

    process: asyncio.subprocess.Process
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def lines(self) -> list[str]:
        return self.stdout + self.stderr

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == name:
                    found.append(event)
        return found

    async def finished(self, within: float = 30.0) -> int:
        async with asyncio.timeout(within):
            code = await self.process.wait()
            await asyncio.gather(*self.readers)
        return code


@contextlib.asynccontextmanager
async def child(args: list[str], env: Mapping[str, str], cwd: Path) -> AsyncIterator[Child]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mmbot",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        limit=1 << 22,
    )
    running = Child(process)

    async def drain(stream: asyncio.StreamReader | None, into: list[str]) -> None:
        assert stream is not None
        async for raw in stream:
            into.append(raw.decode(errors="replace").rstrip("\n"))

    running.readers = [
        asyncio.create_task(drain(process.stdout, running.stdout)),
        asyncio.create_task(drain(process.stderr, running.stderr)),
    ]
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for task in running.readers:
            task.cancel()


# ----------------------------------------------------------------------------- the run


@dataclass
class Run:
    """Everything the daemon and the commands around it showed during the scenario."""

    secrets: Secrets
    wrong: Secrets  # registered on the mock with another public key: always refused
    key_path: Path
    journal: Path
    daemon_code: int
    daemon_lines: list[str]
    permission_warnings: int
    scrapes: list[tuple[str, str]]
    errors: list[tuple[str, str]]
    ids: set[str]
    communications_id: str
    injected: dict[str, float]
    confirms: int


async def _scenario(tmp: Path) -> Run:
    secrets = Secrets.generate()
    wrong = Secrets.generate("SECRETWRONGKEYID")
    key_path = write_key(tmp / "secret-kalshi-key.pem", secrets.pem)
    requester_key = ed25519.Ed25519PrivateKey.generate()
    journal = tmp / "journal.sqlite"
    config = MockConfig(seed=5, markets=30, rfq_rate=0.0, time_scale=FAST, market_step_seconds=0)
    scrapes: list[tuple[str, str]] = []
    errors: list[tuple[str, str]] = []
    async with MockExchange(config) as mock, httpx.AsyncClient(timeout=10) as http:
        maker = mock.register_key(secrets.key_id, secrets.private.public_key())
        mock.register_key(REQUESTER_KEY_ID, requester_key.public_key())
        # The wrong key id exists, but belongs to another key: every signature is refused.
        mock.register_key(wrong.key_id, ed25519.Ed25519PrivateKey.generate().public_key())
        markets = [m for m in mock.exchange.markets.values() if not m.hvm]
        settings: dict[str, Any] = {
            "kalshi": {
                "rest_url": mock.rest_url,
                "ws_url": mock.ws_url,
                "ws_reconnect_min_seconds": 0.05,
                "ws_reconnect_max_seconds": 0.2,
                "retry_deadline_seconds": 1,
            },
            "journal": {"path": str(journal)},
            "quotes": {"ttl_seconds": 60, "min_edge": "0.01"},
            "strategies": {"routes": [{"match": ["MOCK-*"], "strategy": FLAT}]},
            "marketdata": {"ttl_seconds": 30, "refresh_seconds": 0.5},
            "shutdown": {"timeout_seconds": 5},
            "run": {"status_interval_seconds": 1},
        }
        config_path = write_config(tmp / "mmbot.toml", settings)
        env = _env(
            MMBOT_KALSHI__KEY_ID=secrets.key_id,
            MMBOT_KALSHI__PRIVATE_KEY_PATH=str(key_path),
        )

        async def control(name: str, body: Mapping[str, Any] | None = None) -> Any:
            url = f"{mock.base_url}{CONTROL_PREFIX}/{name}"
            response = await http.post(url, json=dict(body or {}), headers=mock.control_headers)
            assert response.status_code in (200, 201), response.text
            return response.json()

        def rfq(ticker: str, **extra: Any) -> dict[str, Any]:
            return {
                "market_ticker": ticker,
                "contracts_fp": "5",
                "wants": "yes",
                "reservation": "0.99",
                "decision_delay_seconds": 0.2,
                "lifetime_seconds": 200,
                **extra,
            }

        async with child(["run", "--config", str(config_path)], env, tmp) as daemon:

            def metrics_url() -> str | None:
                if daemon.process.returncode is not None:
                    raise AssertionError("the daemon exited:\n" + "\n".join(daemon.lines))
                found = daemon.events("metrics_listening")
                return str(found[0]["url"]) if found else None

            base = await eventually(metrics_url, "the metrics endpoint", 30)

            async def scrape() -> int:
                status = 0
                for path in ("/metrics", "/healthz", "/readyz"):
                    response = await http.get(base + path)
                    scrapes.append((path, response.text))
                    if path == "/readyz":
                        status = response.status_code
                return status

            async def ready(within: float = 20.0) -> None:
                async with asyncio.timeout(within):
                    for _ in itertools.count():
                        if await scrape() == 200:
                            return
                        await asyncio.sleep(0.1)

            await ready(30)

            # Writes answered 500, then 429, then a mix while requesters accept.
            for knobs, counter, market in (
                ({"write_5xx_fraction": 1.0}, "injected_5xx", markets[0]),
                ({"write_5xx_fraction": 0, "write_429_fraction": 1.0}, "injected_429", markets[1]),
            ):
                await control("faults", knobs)
                await control("rfqs", rfq(market.ticker))
                await eventually(partial(_counted, mock, counter), counter, 20)
            await control("faults", {"write_429_fraction": 0.3, "write_5xx_fraction": 0.3})
            for market in markets[2:8]:
                await control("rfqs", rfq(market.ticker))
                await asyncio.sleep(0.1)
            await scrape()
            await control("faults", {"write_429_fraction": 0, "write_5xx_fraction": 0})

            # Accepted quotes, confirmed and executed.
            for market in markets[12:15]:
                await control("rfqs", rfq(market.ticker))
            await eventually(lambda: journal_rows(journal, "confirm_sent"), "a confirm", 20)
            await scrape()

            # The WebSocket drops; the daemon reconnects and reconciles.
            handshakes = mock.stats.ws_handshakes
            await control("drop_ws")
            await eventually(lambda: mock.stats.ws_handshakes > handshakes, "a reconnect", 20)
            await ready()

            # Requests the exchange rejects: quotes on RFQs gone before the quote arrives,
            # and an RFQ its requester deletes at once.
            for market in markets[15:18]:
                await control("rfqs", rfq(market.ticker, lifetime_seconds=0.01))
            signer = Signer(REQUESTER_KEY_ID, requester_key)
            async with KalshiRestClient(mock.rest_url, signer) as requester:
                rfq_id = await requester.create_rfq(markets[18].ticker, contracts=5)
                await requester.delete_rfq(rfq_id)
            await asyncio.sleep(1.5)  # two status lines, metrics refreshed
            await scrape()

            daemon.process.send_signal(signal.SIGTERM)
            code = await daemon.finished()
            daemon_lines = daemon.lines
            permission_warnings = len(daemon.events("private_key_permissions"))

        injected: dict[str, float] = {
            "429": mock.stats.injected_429,
            "5xx": mock.stats.injected_5xx,
        }
        confirms = len(journal_rows(journal, "confirm_sent"))

        # Start-ups and commands that fail. The wrong key id is sent with the real key: the
        # exchange refuses it, and each failure names a cause without naming either.
        wrong_env = _env(
            MMBOT_KALSHI__KEY_ID=wrong.key_id,
            MMBOT_KALSHI__PRIVATE_KEY=secrets.pem,
            MMBOT_KALSHI__REST_URL=mock.rest_url,
            MMBOT_KALSHI__WS_URL=mock.ws_url,
            MMBOT_JOURNAL__PATH=str(tmp / "refused.sqlite"),
        )
        broken_path = write_key(tmp / "broken.pem", secrets.broken_pem())
        broken_env = _env(
            MMBOT_KALSHI__KEY_ID=secrets.key_id, MMBOT_KALSHI__PRIVATE_KEY_PATH=str(broken_path)
        )
        broken_inline_env = _env(
            MMBOT_KALSHI__KEY_ID=secrets.key_id, MMBOT_KALSHI__PRIVATE_KEY=secrets.broken_pem()
        )
        both_env = {**env, "MMBOT_KALSHI__PRIVATE_KEY": secrets.pem}  # both set: an error
        commands = [
            ("run with a refused key", ["run", "--duration", "5"], wrong_env, False),
            ("whoami with a refused key", ["whoami"], wrong_env, False),
            ("quotes list with a refused key", ["quotes", "list"], wrong_env, False),
            ("check-config with a broken key file", ["check-config"], broken_env, False),
            ("check-config with a broken key", ["check-config"], broken_inline_env, False),
            ("run with a broken key", ["run"], broken_inline_env, False),
            ("check-config with two keys", ["check-config"], both_env, False),
            ("check-config --json", ["check-config", "--json"], env, True),
            ("check-config", ["check-config"], env, True),
            ("whoami", ["whoami", "--json"], {**env, **_urls(mock)}, True),
        ]
        for what, args, command_env, succeeds in commands:
            async with child(args, command_env, tmp) as command:
                status = await command.finished()
            text = "\n".join(command.lines)
            assert (status == 0) == succeeds, f"{what}: exit {status}\n{text}"
            errors.append((f"`mmbot {' '.join(args)}` ({what})", text))

        # Exceptions raised in-process, as a caller would see them (no log redaction here).
        for label, fail in (
            ("Signer.from_pem", lambda: Signer.from_pem(secrets.key_id, secrets.broken_pem())),
            (
                "build_signer",
                lambda: build_signer(
                    KalshiSettings(key_id=secrets.key_id, private_key=secrets.broken_pem())
                ),
            ),
            (
                "KalshiSettings",
                lambda: KalshiSettings(
                    key_id=secrets.key_id,
                    private_key=secrets.pem,
                    private_key_path=key_path,
                    rest_url="not a url",
                ),
            ),
        ):
            try:
                fail()
            except (KeyLoadError, ConfigError, ValueError) as exc:
                errors.append((label, _exception_text(exc)))
            else:
                raise AssertionError(f"{label} did not fail")
        async with KalshiRestClient(
            mock.rest_url, Signer(wrong.key_id, secrets.private), retry_deadline_seconds=0
        ) as refused:
            try:
                await refused.get_communications_id()
            except Exception as exc:
                errors.append(("a refused REST call", _exception_text(exc)))
            else:
                raise AssertionError("the exchange accepted a wrong key")

        injected["auth_failures"] = mock.stats.auth_failures
        ids = set(mock.exchange.rfqs) | set(mock.exchange.quotes)
        for record in mock.exchange.quotes.values():
            with contextlib.suppress(AttributeError):
                ids.add(str(record.creator_order_id))
        return Run(
            secrets=secrets,
            wrong=wrong,
            key_path=key_path,
            journal=journal,
            daemon_code=code,
            daemon_lines=daemon_lines,
            permission_warnings=permission_warnings,
            scrapes=scrapes,
            errors=errors,
            ids={i for i in ids if i and i != "None"},
            communications_id=maker.communications_id,
            injected=injected,
            confirms=confirms,
        )


def _counted(mock: MockExchange, counter: str) -> bool:
    return bool(getattr(mock.stats, counter))


def _urls(mock: MockExchange) -> dict[str, str]:
    return {"MMBOT_KALSHI__REST_URL": mock.rest_url, "MMBOT_KALSHI__WS_URL": mock.ws_url}


def _exception_text(exc: BaseException) -> str:
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The scenario, once for the module (it takes a few seconds of real time)."""
    return asyncio.run(_scenario(tmp_path_factory.mktemp("security")))


# ====================================================================== 1. the secret scan


@pytest.mark.slow  # the module's `run`: daemon and CLI children against a mock, ~8 s
def test_the_run_did_what_the_scan_relies_on(run: Run) -> None:
    assert run.daemon_code == 0, "\n".join(run.daemon_lines[-50:])
    assert run.injected["429"] > 0, run.injected
    assert run.injected["5xx"] > 0, run.injected
    assert run.confirms > 0
    assert len(run.daemon_lines) > 30
    assert any('"level": "debug"' in line or '"level":"debug"' in line for line in run.daemon_lines)
    assert len(run.scrapes) >= 15
    assert run.injected["auth_failures"] > 0  # the refused commands reached the exchange


@pytest.mark.slow  # the module's `run`: daemon and CLI children against a mock, ~8 s
def test_no_daemon_output_line_shows_key_material(run: Run) -> None:
    for line in run.daemon_lines:
        assert_clean("daemon output line", line, run.secrets)
    assert_clean("daemon output", "\n".join(run.daemon_lines), run.secrets)
    assert run.permission_warnings == 0  # the key file is 0600


@pytest.mark.slow  # the module's `run`: daemon and CLI children against a mock, ~8 s
def test_no_journal_row_or_byte_shows_key_material(run: Run) -> None:
    uri = run.journal.resolve().as_uri() + "?mode=ro"
    rows = 0
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert "events" in tables
        for table in tables:
            cursor = conn.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from sqlite
            columns = [d[0] for d in cursor.description]
            for row in cursor:
                rows += 1
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, bytes):
                        text = value.decode("latin-1") + " " + value.hex()
                    else:
                        text = str(value)
                    assert_clean(f"journal {table}.{column}", text, run.secrets)
    assert rows > 20
    # Also every byte of the files (free pages, the WAL) as the disk holds them.
    for path in run.journal.parent.glob(run.journal.name + "*"):
        assert_clean(f"journal file {path.name}", path.read_bytes().decode("latin-1"), run.secrets)


@pytest.mark.slow  # the module's `run`: daemon and CLI children against a mock, ~8 s
def test_no_error_message_shows_key_material(run: Run) -> None:
    assert len(run.errors) >= 10
    for where, text in run.errors:
        assert_clean(where, text, run.secrets, run.wrong)
        assert "PRIVATE KEY-----" not in text, where


# ====================================================================== 2. key file permissions


def _chmod_or_skip(path: Path, mode: int) -> None:
    path.chmod(mode)
    if stat.S_IMODE(path.stat().st_mode) != mode:
        pytest.skip(f"chmod {mode:o} has no effect on this file system")


def _json_events(text: str, name: str) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == name:
                found.append(event)
    return found


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes only")
@pytest.mark.parametrize(
    ("mode", "warns"),
    [(0o644, True), (0o640, True), (0o600, False), (0o400, False)],
    ids=["0644", "0640", "0600", "0400"],
)
def test_check_config_warns_about_a_key_file_others_can_read(
    mode: int,
    warns: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_mmbot_env: None,
) -> None:
    secrets = Secrets.generate()
    path = write_key(tmp_path / "kalshi.pem", secrets.pem)
    _chmod_or_skip(path, mode)
    monkeypatch.setenv("MMBOT_KALSHI__KEY_ID", secrets.key_id)
    monkeypatch.setenv("MMBOT_KALSHI__PRIVATE_KEY_PATH", str(path))
    monkeypatch.setenv("MMBOT_LOG__FORMAT", "json")
    assert cli.main(["check-config"]) == 0  # a warning, not an error
    out, err = capsys.readouterr()
    events = _json_events(err, "private_key_permissions")
    if warns:
        assert len(events) == 1, err
        (event,) = events
        assert event["level"] == "warning"
        assert event["path"] == str(path)
        assert event["mode"] == f"{mode:04o}"
        assert "chmod 600" in event["fix"]
    else:
        assert events == [], err
    assert_clean("check-config", out + err, secrets)


@pytest.mark.slow  # a daemon child, run until it has started
@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes only")
async def test_the_daemon_warns_at_start_up_about_a_key_file_others_can_read(
    tmp_path: Path,
) -> None:
    secrets = Secrets.generate()
    path = write_key(tmp_path / "kalshi.pem", secrets.pem)
    _chmod_or_skip(path, 0o644)
    async with MockExchange(MockConfig(markets=5, time_scale=FAST)) as mock:
        mock.register_key(secrets.key_id, secrets.private.public_key())
        env = _env(
            MMBOT_KALSHI__KEY_ID=secrets.key_id,
            MMBOT_KALSHI__PRIVATE_KEY_PATH=str(path),
            MMBOT_LOG__LEVEL="INFO",
            MMBOT_JOURNAL__PATH=str(tmp_path / "journal.sqlite"),
            **_urls(mock),
        )
        async with child(["run", "--duration", "1"], env, tmp_path) as daemon:
            code = await daemon.finished()
    text = "\n".join(daemon.lines)
    assert code == 0, text
    (event,) = daemon.events("private_key_permissions")
    assert (event["level"], event["path"], event["mode"]) == ("warning", str(path), "0644")
    assert_clean("daemon output", text, secrets)


# ====================================================================== 3. scrape endpoints


@pytest.mark.slow  # the module's `run`: daemon and CLI children against a mock, ~8 s
def test_metrics_and_health_expose_nothing_sensitive(run: Run) -> None:
    paths = {path for path, _ in run.scrapes}
    assert paths == {"/metrics", "/healthz", "/readyz"}
    assert run.ids, "the run created RFQs and quotes"
    for path, body in run.scrapes:
        assert_clean(path, body, run.secrets)
        for needle in (str(run.key_path), run.key_path.name, run.communications_id):
            assert needle not in body, f"{path} shows {needle!r}"
        shown = [i for i in run.ids if i in body]
        assert not shown, f"{path} shows RFQ/quote ids {shown[:5]}"
        assert not UUID.search(body), f"{path} shows an id: {UUID.search(body)}"
    metrics = [body for path, body in run.scrapes if path == "/metrics"]
    assert any("mmbot_" in body for body in metrics)
    for body in metrics:
        for line in body.splitlines():
            if line.startswith("#") or "{" not in line:
                continue
            labels = line[line.index("{") + 1 : line.rindex("}")]
            for value in re.findall(r'="((?:[^"\\]|\\.)*)"', labels):
                assert "/" not in value, f"a path-like label value: {line}"


# ====================================================================== 4. control endpoints


def _control_routes(mock: MockExchange) -> list[tuple[str, str]]:
    runner = mock._runner  # the routes exactly as the server registered them
    assert runner is not None
    routes = []
    for route in runner.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith(CONTROL_PREFIX + "/") and route.method != "HEAD":
            routes.append((route.method, path))
    return routes


async def test_every_control_endpoint_needs_the_token(any_key: Any) -> None:
    async with MockExchange(MockConfig(markets=5, time_scale=FAST)) as mock:
        mock.register_key("sec-key", any_key.public)
        routes = _control_routes(mock)
        assert len(routes) >= 11, routes
        before = mock.faults.config.to_dict()
        token = mock.control_token
        assert len(token) >= 24
        assert mock.control_headers == {"Authorization": f"Bearer {token}"}
        refused = [
            {},
            {"Authorization": "Bearer " + token[:-1] + ("A" if token[-1] != "A" else "B")},
            {"Authorization": "Bearer"},
            {"Authorization": f"Basic {token}"},
            {"Authorization": token},
            {"Authorization": f"Bearer {token}x"},
            {"X-Control-Token": token},
        ]
        async with httpx.AsyncClient(timeout=5) as http:
            for method, path in [*routes, ("GET", CONTROL_PREFIX + "/no_such_thing")]:
                for headers in refused:
                    body = {"write_429_fraction": 1.0, "rate": 10, "market_ticker": "X"}
                    response = await http.request(
                        method, mock.base_url + path, headers=headers, json=body
                    )
                    assert response.status_code == 401, (method, path, headers, response.text)
                    assert response.json()["code"] == "unauthorized"
                    assert token not in response.text
            assert mock.faults.config.to_dict() == before  # nothing changed
            assert mock.bench_source is None
            for method, path in routes:
                response = await http.request(
                    method, mock.base_url + path, headers=mock.control_headers, json={}
                )
                # Authorized: the endpoint itself answers (an empty body may be a 400).
                assert response.status_code in (200, 201, 400), (method, path, response.text)
            lower = {"Authorization": f"bearer {token}"}
            state = await http.get(mock.base_url + CONTROL_PREFIX + "/state", headers=lower)
            assert state.status_code == 200
            # The exchange's own API is unaffected by the control token.
            markets = await http.get(mock.rest_url + "/markets")
            assert markets.status_code == 200


async def test_control_tokens_are_random_per_instance_unless_set() -> None:
    async with MockExchange() as one, MockExchange() as two:
        assert one.control_token != two.control_token
    fixed = "a-fixed-control-token"
    async with (
        MockExchange(MockConfig(control_token=fixed)) as mock,
        httpx.AsyncClient(timeout=5) as http,
    ):
        assert mock.control_token == fixed
        headers = {"Authorization": f"Bearer {fixed}"}
        response = await http.get(mock.base_url + CONTROL_PREFIX + "/faults", headers=headers)
        assert response.status_code == 200
    assert fixed not in repr(MockConfig(control_token=fixed))
    for bad in ("", "short", "has space in it", "tab\there-and-more"):
        with pytest.raises(ValueError, match="control_token"):
            MockConfig(control_token=bad)


def test_the_mock_listens_on_loopback_by_default() -> None:
    assert MockConfig().host == "127.0.0.1"
    parser = cli.build_parser()
    args = parser.parse_args(["mock-exchange"])
    assert args.host == "127.0.0.1"


async def test_mock_exchange_command_prints_and_enforces_its_token(tmp_path: Path) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    env = _env(**{mock_cli.CONTROL_TOKEN_ENV: token})
    args = ["mock-exchange", "--rfq-rate", "0", "--markets", "3"]
    async with child(args, env, tmp_path) as server, httpx.AsyncClient(timeout=5) as http:

        def banner() -> dict[str, str] | None:
            if server.process.returncode is not None:
                raise AssertionError("mock-exchange exited:\n" + "\n".join(server.lines))
            if not any(line.startswith("serving") for line in server.stdout):
                return None
            return dict(
                line.split(None, 1)
                for line in server.stdout
                if line.startswith(("REST ", "TOKEN "))
            )

        lines = await eventually(banner, "the mock-exchange banner", 30)
        assert lines["TOKEN"].strip() == token
        rest = lines["REST"].strip()
        assert rest.startswith("http://127.0.0.1:")
        control = rest.split("/trade-api", 1)[0] + CONTROL_PREFIX + "/state"
        assert (await http.get(control)).status_code == 401
        ok = await http.get(control, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        server.process.send_signal(signal.SIGINT)
        assert await server.finished() == 0


def test_mock_exchange_command_rejects_a_weak_token(
    capsys: pytest.CaptureFixture[str], no_mmbot_env: None
) -> None:
    assert cli.main(["mock-exchange", "--control-token", "short"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "--control-token" in err[0]
