"""Operator commands (whoami, rfqs list, quotes list/cancel-all) against the mock exchange."""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mmbot.cli import entry, main
from mmbot.cli.entry import EXIT_BROKEN_PIPE
from mmbot.mock.scripting import RecordedRequest, Scripting
from mmbot.mock.server import MockExchange
from tests.support.keys import KEY_ID, TestKey
from tests.support.payloads import REST_QUOTE as QUOTE


@pytest.fixture(autouse=True)
def _clean_env(no_mmbot_env: None) -> None:
    """Before any fixture of this module sets variables of its own."""


@pytest.fixture
async def mock(rsa_key: TestKey) -> AsyncIterator[MockExchange]:
    async with MockExchange.scripted({KEY_ID: rsa_key.public}) as srv:
        yield srv


@pytest.fixture
def server(mock: MockExchange) -> Scripting:
    """The mock's scripting API: scripted replies and the record of requests."""
    return mock.scripting


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch, mock: MockExchange, rsa_key_file: Path) -> None:
    monkeypatch.setenv("MMBOT_KALSHI__KEY_ID", KEY_ID)
    monkeypatch.setenv("MMBOT_KALSHI__PRIVATE_KEY_PATH", str(rsa_key_file))
    monkeypatch.setenv("MMBOT_KALSHI__REST_URL", mock.rest_url)
    monkeypatch.setenv("MMBOT_KALSHI__RETRY_DEADLINE_SECONDS", "0.3")
    monkeypatch.setenv("MMBOT_LOG__FORMAT", "json")


async def run_cli(*argv: str) -> int:
    # main() owns its event loop (asyncio.run); the mock exchange runs in ours.
    return await asyncio.to_thread(main, list(argv))


@pytest.mark.usefixtures("configured")
async def test_whoami(server: Scripting, capsys: pytest.CaptureFixture[str]) -> None:
    server.script(
        "GET", "/communications/id", [(200, {"communications_id": "comm-42"})], repeat_last=True
    )
    assert await run_cli("whoami") == 0
    out = capsys.readouterr().out
    assert "comm-42" in out
    assert await run_cli("whoami", "--json") == 0
    out = capsys.readouterr().out
    assert '"communications_id":"comm-42"' in out
    # A local server is no Kalshi environment.
    assert '"environment":"custom"' in out
    assert all(r.auth_ok for r in server.requests)


@pytest.mark.usefixtures("configured")
async def test_rfqs_list_filters_and_follows_every_page(
    server: Scripting, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(req: RecordedRequest) -> tuple[int, Any]:
        n = int(req.query.get("cursor") or 0)
        row = {
            "id": f"rfq-{n}",
            "creator_id": "",
            "market_ticker": "M-1",
            "contracts_fp": "25.00",
            "status": "open",
            "created_ts": "2026-01-01T00:00:00Z",
        }
        return 200, {"rfqs": [row], "cursor": str(n + 1) if n < 2 else ""}

    server.route("GET", "/communications/rfqs", handler)
    assert await run_cli("rfqs", "list", "--status", "open", "--market", "M-1") == 0
    out = capsys.readouterr().out
    for n in range(3):
        assert f"rfq-{n}" in out
    assert "3 RFQ(s)" in out
    assert all(
        r.query["status"] == "open" and r.query["market_ticker"] == "M-1" for r in server.requests
    )


@pytest.mark.usefixtures("configured")
async def test_quotes_list_uses_user_filter_self(
    server: Scripting, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(req: RecordedRequest) -> tuple[int, Any]:
        n = int(req.query.get("cursor") or 0)
        return 200, {"quotes": [{**QUOTE, "id": f"q{n}"}], "cursor": "1" if n == 0 else ""}

    server.route("GET", "/communications/quotes", handler)
    assert await run_cli("quotes", "list", "--status", "open", "--json") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert '"yes_bid_dollars":"0.4100"' in lines[0]
    assert all(r.query["user_filter"] == "self" for r in server.requests)


def _quote_book(server: Scripting, ids: list[str], *, stuck: set[str] = frozenset()) -> set[str]:
    """Serve a stateful set of open quotes, two per page; deletes remove them."""
    open_ids = set(ids)

    def listing(req: RecordedRequest) -> tuple[int, Any]:
        rows = sorted(open_ids)
        start = int(req.query.get("cursor") or 0)
        page = rows[start : start + 2]
        more = start + 2 < len(rows)
        quotes = [{**QUOTE, "id": q, "rfq_id": f"r-{q}"} for q in page]
        return 200, {"quotes": quotes, "cursor": str(start + 2) if more else ""}

    server.route("GET", "/communications/quotes", listing)
    for q in ids:

        def delete(_: RecordedRequest, q: str = q) -> tuple[int, Any]:
            if q in stuck:
                return 500, {"code": "internal", "message": "boom"}
            if q not in open_ids or q == "q-raced":
                open_ids.discard(q)
                return 404, {"code": "not_found", "message": "quote not found"}
            open_ids.discard(q)
            return 204, None

        server.route("DELETE", f"/communications/rfqs/r-{q}/quotes/{q}", delete)
    return open_ids


@pytest.mark.usefixtures("configured")
async def test_cancel_all_deletes_every_open_quote(
    server: Scripting, capsys: pytest.CaptureFixture[str]
) -> None:
    remaining = _quote_book(server, ["q1", "q2", "q3", "q4", "q-raced"])
    assert await run_cli("quotes", "cancel-all", "--yes") == 0
    out = capsys.readouterr().out
    assert "cancelled 4 of 5 open quote(s)" in out
    assert "1 were no longer open" in out
    assert remaining == set()
    deletes = [r for r in server.requests if r.method == "DELETE"]
    assert len(deletes) == 5
    listings = [r for r in server.requests if r.method == "GET"]
    assert all(r.query == {**r.query, "user_filter": "self", "status": "open"} for r in listings)


@pytest.mark.usefixtures("configured")
async def test_cancel_all_refuses_without_yes_when_not_a_tty(
    server: Scripting, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a TTY
    _quote_book(server, ["q1"])
    assert await run_cli("quotes", "cancel-all") == 1
    assert "without --yes" in capsys.readouterr().err
    assert not [r for r in server.requests if r.method == "DELETE"]


@pytest.mark.usefixtures("configured")
async def test_cancel_all_reports_failures_and_leftovers(
    server: Scripting, capsys: pytest.CaptureFixture[str]
) -> None:
    _quote_book(server, ["q1", "q2"], stuck={"q2"})
    assert await run_cli("quotes", "cancel-all", "--yes") == 1
    captured = capsys.readouterr()
    assert "cancelled 1 of 2" in captured.out
    assert "could not cancel q2" in captured.err
    assert "1 quote(s) still open: q2" in captured.err


@pytest.mark.usefixtures("configured")
async def test_cancel_all_with_nothing_open(
    server: Scripting, capsys: pytest.CaptureFixture[str]
) -> None:
    _quote_book(server, [])
    assert await run_cli("quotes", "cancel-all") == 0
    assert "no open quotes" in capsys.readouterr().out


@pytest.mark.usefixtures("configured")
async def test_auth_failure_is_one_line_and_exit_1(
    server: Scripting,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    ed25519_key: TestKey,
    tmp_path: Path,
) -> None:
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(ed25519_key.pkcs8_pem)
    wrong.chmod(0o600)
    monkeypatch.setenv("MMBOT_KALSHI__PRIVATE_KEY_PATH", str(wrong))
    assert await run_cli("whoami") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: authentication refused")
    assert "Traceback" not in err
    assert KEY_ID not in err


@pytest.mark.usefixtures("configured")
async def test_network_failure_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MMBOT_KALSHI__REST_URL", f"http://127.0.0.1:{port}/trade-api/v2")
    assert await run_cli("rfqs", "list") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach http://127.0.0.1:{port}/trade-api/v2")
    assert len(err.strip().splitlines()) == 1


async def test_missing_credentials_name_the_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMBOT_LOG__FORMAT", "json")
    assert await run_cli("whoami") == 1
    assert "kalshi.key_id" in capsys.readouterr().err


@pytest.mark.usefixtures("configured")
async def test_console_script_end_to_end(server: Scripting) -> None:
    server.script("GET", "/communications/id", [(200, {"communications_id": "comm-7"})])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mmbot",
        "whoami",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "comm-7" in out.decode()


@pytest.mark.usefixtures("configured")
async def test_run_with_a_refused_key_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    ed25519_key: TestKey,
    tmp_path: Path,
) -> None:
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(ed25519_key.pkcs8_pem)
    wrong.chmod(0o600)
    monkeypatch.setenv("MMBOT_KALSHI__PRIVATE_KEY_PATH", str(wrong))
    monkeypatch.setenv("MMBOT_JOURNAL__PATH", str(tmp_path / "journal.sqlite"))
    monkeypatch.setenv("MMBOT_METRICS__PORT", "0")
    assert await run_cli("run", "--duration", "5") == 1
    err = capsys.readouterr().err
    # The daemon logs at INFO on stderr; the failure is its last, one-line word.
    assert err.strip().splitlines()[-1].startswith("error: authentication refused")
    assert "Traceback" not in err


def _read_one_line_then_close(argv: list[str], stderr_path: Path) -> tuple[bytes, int]:
    """Run ``mmbot argv`` with stdout a pipe closed after one line; its first line and exit."""
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-m", "mmbot", *argv],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        assert proc.stdout is not None
        try:
            first = proc.stdout.readline()
            # What `head -1` does: stop reading, so the writer's next write fails with EPIPE.
            proc.stdout.close()
            return first, proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.usefixtures("configured")
async def test_quotes_list_into_a_pipe_closed_early_exits_quietly(
    server: Scripting, tmp_path: Path
) -> None:
    # Far more than a pipe buffer (64 KiB on Linux), so the CLI is still writing when the
    # reader goes away, whatever the timing.
    quotes = [{**QUOTE, "id": f"q{n:05}"} for n in range(5000)]
    server.script("GET", "/communications/quotes", [(200, {"quotes": quotes, "cursor": ""})])
    stderr_path = tmp_path / "stderr.txt"
    # The mock exchange runs on this loop: the blocking child is waited for in a thread.
    first, code = await asyncio.to_thread(
        _read_one_line_then_close, ["quotes", "list"], stderr_path
    )
    err = stderr_path.read_text()
    assert first.split()[0] == b"ID"
    assert code == EXIT_BROKEN_PIPE, err
    # No traceback from the command, and no "Exception ignored" from the interpreter's exit.
    assert err == ""


def test_a_closed_stdout_in_any_command_is_handled_once_centrally(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process counterpart of the pipe test: any handler, not just the ops commands.
    def handler(args: object, settings: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(entry, "_check_config", handler)
    monkeypatch.setenv("MMBOT_LOG__FORMAT", "json")
    assert main(["check-config"]) == EXIT_BROKEN_PIPE
    out, err = capsys.readouterr()
    assert out == ""
    assert "command failed" not in err
    assert "Traceback" not in err


def test_a_reader_gone_by_the_final_flush_is_handled_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Output small enough to sit in stdout's buffer fails only when main() flushes it.
    class GoneReader(io.StringIO):
        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(entry, "_check_config", lambda args, settings: 0)
    monkeypatch.setattr(sys, "stdout", GoneReader())
    assert main(["check-config"]) == EXIT_BROKEN_PIPE
