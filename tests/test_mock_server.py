"""MockExchange over real loopback sockets: REST, auth, control endpoints, flows, the CLI.

The project's own clients (KalshiRestClient, CommunicationsStream) drive the server, as
the daemon will in dry-run mode; raw httpx requests check exact bodies and statuses.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from structlog.testing import capture_logs

from mmbot import cli
from mmbot.fees import FeeModel
from mmbot.kalshi.auth import ACCESS_SIGNATURE_HEADER, KalshiAuth, Signer
from mmbot.kalshi.errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    ServerError,
)
from mmbot.kalshi.models import (
    QuoteAccepted,
    QuoteCreated,
    QuoteExecuted,
    RfqCreated,
    RfqDeleted,
    UnknownMessage,
)
from mmbot.kalshi.rest import KalshiRestClient
from mmbot.mock.driver import partial_contracts
from mmbot.mock.exchange import ExchangeEvent
from mmbot.mock.server import MockConfig, MockExchange
from mmbot.mock.sim import SimMarket
from tests.support.env import clear_mmbot_env, subprocess_env
from tests.support.factories import cent_market
from tests.support.keys import KEY_ID, TestKey
from tests.support.mock import now_ms, rest
from tests.support.polling import eventually
from tests.support.streams import consuming_mock

MAKER_KEY_ID = "maker-key-7c41"
# Short enough that a whole accept/confirm/execute cycle takes a fraction of a second,
# long enough (0.6 s to confirm on a standard market) not to race a busy machine.
FAST = 0.02


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
async def mock(rsa_key: TestKey, ed25519_key: TestKey) -> AsyncIterator[MockExchange]:
    # No market walk: prices read from the simulation stay valid for the whole test.
    config = MockConfig(seed=1, time_scale=FAST, market_step_seconds=0)
    async with MockExchange(config) as server:
        server.register_key(KEY_ID, rsa_key.public)
        server.register_key(MAKER_KEY_ID, ed25519_key.public)
        yield server


def control_url(mock: MockExchange, name: str) -> str:
    return f"{mock.base_url}/_mock/{name}"


# ----------------------------------------------------------------------------- authentication


async def test_signed_requests_work_with_rsa_and_ed25519_keys(any_key: TestKey) -> None:
    async with MockExchange() as mock:
        user = mock.register_key(KEY_ID, any_key.public)
        async with rest(mock, any_key.signer()) as client:
            assert await client.get_communications_id() == user.communications_id


def _shifted_ms(offset_ms: int) -> int:
    return now_ms() + offset_ms


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("unsigned", "missing"),
        ("other_key", "invalid KALSHI-ACCESS-SIGNATURE"),
        ("stale", "too old"),
        ("future", "in the future"),
        ("unknown_key_id", "unknown API key"),
    ],
)
async def test_bad_authentication_is_401_with_an_error_body(
    mock: MockExchange, rsa_key: TestKey, ed25519_key: TestKey, case: str, fragment: str
) -> None:
    window_ms = int(mock.config.timestamp_window_seconds * 1000)
    signers: dict[str, Signer | None] = {
        "unsigned": None,
        # Registered key id, but signed with another key (the maker's).
        "other_key": Signer(KEY_ID, ed25519_key.private),
        "stale": Signer(KEY_ID, rsa_key.private, clock_ms=lambda: now_ms() - window_ms - 5000),
        "future": Signer(KEY_ID, rsa_key.private, clock_ms=lambda: now_ms() + window_ms + 5000),
        "unknown_key_id": Signer("nobody-registered-this", rsa_key.private),
    }
    signer = signers[case]
    async with rest(mock, signer) as client:
        with pytest.raises(AuthError) as caught:
            await client.get_communications_id()
    assert caught.value.status == 401
    assert caught.value.code == "unauthorized"
    assert fragment in caught.value.message

    # The raw body is the documented ErrorResponse and never repeats the signature.
    auth = KalshiAuth(signer) if signer is not None else None
    async with httpx.AsyncClient(auth=auth) as http:
        response = await http.get(mock.rest_url + "/communications/rfqs")
    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"code", "message"}
    signature = response.request.headers.get(ACCESS_SIGNATURE_HEADER)
    if signature:
        assert signature not in response.text
    assert mock.stats.auth_failures == 2


async def test_timestamps_inside_the_window_are_accepted(
    mock: MockExchange, rsa_key: TestKey
) -> None:
    window_ms = int(mock.config.timestamp_window_seconds * 1000)
    for offset in (-window_ms // 2, window_ms // 2):
        signer = Signer(KEY_ID, rsa_key.private, clock_ms=functools.partial(_shifted_ms, offset))
        async with rest(mock, signer) as client:
            assert (await client.get_communications_id()).startswith("comm_")


async def test_public_endpoints_need_no_signature(mock: MockExchange) -> None:
    async with rest(mock, None) as client:
        page = await client.list_markets(limit=5)
        assert len(page.items) == 5
        assert page.cursor
        market = await client.get_market(page.items[0].ticker)
        assert market.price_ranges
        assert (await client.get_exchange_status()).trading_active
        # The order book carries `security` in the OpenAPI document.
        with pytest.raises(AuthError):
            await client.get_orderbook(market.ticker)


async def test_each_user_gets_its_own_communications_id(
    mock: MockExchange, rsa_key: TestKey, ed25519_key: TestKey
) -> None:
    async with (
        rest(mock, rsa_key.signer()) as requester,
        rest(mock, ed25519_key.signer(MAKER_KEY_ID)) as maker,
    ):
        first = await requester.get_communications_id()
        second = await maker.get_communications_id()
    assert first != second
    assert {first, second} <= {u.communications_id for u in mock.exchange.users.values()}


# ----------------------------------------------------------------------------- REST surface


async def test_markets_filters_pagination_and_orderbook(
    mock: MockExchange, rsa_key: TestKey
) -> None:
    everything = list(mock.exchange.markets)
    async with rest(mock, rsa_key.signer()) as client:
        seen = [m.ticker async for m in client.iter_markets(limit=7)]
        assert seen == everything  # generation order, every market once
        combos = [m.ticker async for m in client.iter_markets(mve_filter="only")]
        assert combos == [t for t, m in mock.exchange.markets.items() if m.mve_collection_ticker]
        plain = [m.ticker async for m in client.iter_markets(mve_filter="exclude")]
        assert sorted(combos + plain) == sorted(everything)
        wanted = everything[:3]
        assert [m.ticker for m in (await client.list_markets(tickers=wanted)).items] == wanted
        event = mock.exchange.markets[everything[0]].event_ticker
        by_event = (await client.list_markets(event_ticker=event)).items
        assert {m.event_ticker for m in by_event} == {event}
        assert len((await client.list_markets(status="open")).items) == len(everything)
        assert (await client.list_markets(status="closed")).items == []
        with pytest.raises(BadRequestError):
            await client.list_markets(status="bogus")

        ticker = cent_market(mock).ticker
        book = await client.get_orderbook(ticker, depth=3)
        # Up to three levels a side; fewer when the touch sits near the end of the grid.
        assert 0 < len(book.yes) <= 3
        assert 0 < len(book.no) <= 3
        market = mock.exchange.markets[ticker]
        assert book.yes[-1].price == market.yes_bid()  # best price last
        assert book.no[-1].price == market.no_bid()
        full = await client.get_orderbook(ticker)
        assert len(full.yes) >= len(book.yes)
        assert full.yes[-len(book.yes) :] == book.yes  # the same book until the market moves
        with pytest.raises(BadRequestError):
            await client.get_orderbook(ticker, depth=101)
        with pytest.raises(NotFoundError):
            await client.get_orderbook("NO-SUCH-MARKET")


async def test_errors_keep_the_documented_body_shape(mock: MockExchange, rsa_key: TestKey) -> None:
    ticker = cent_market(mock).ticker
    async with rest(mock, rsa_key.signer()) as client:
        with pytest.raises(NotFoundError) as missing:
            await client.get_rfq("no-such-rfq")
        assert missing.value.code == "not_found"
        await client.create_rfq(ticker, contracts="5")
        with pytest.raises(ConflictError) as conflict:
            await client.create_rfq(ticker, contracts="5")
        assert conflict.value.status == 409

    signed = KalshiAuth(rsa_key.signer())
    async with httpx.AsyncClient(auth=signed) as http:
        for method, path, status in (
            ("GET", "/no/such/path", 404),
            ("PATCH", "/communications/rfqs", 405),
            ("POST", "/communications/rfqs", 400),  # empty body
        ):
            response = await http.request(method, mock.rest_url + path)
            assert response.status_code == status, (method, path)
            body = response.json()
            assert isinstance(body["code"], str)
            assert isinstance(body["message"], str)
            assert set(body) <= {"code", "message", "details"}


async def test_invalid_json_body_is_400(mock: MockExchange, rsa_key: TestKey) -> None:
    async with httpx.AsyncClient(auth=KalshiAuth(rsa_key.signer())) as http:
        for content in (b"{not json", b"[1, 2]"):
            response = await http.post(
                mock.rest_url + "/communications/rfqs",
                content=content,
                headers={"Content-Type": "application/json"},
            )
            assert response.status_code == 400
            assert response.json()["code"] == "invalid_body"
    assert mock.exchange.rfqs == {}


async def test_an_unexpected_exception_is_a_logged_500(
    mock: MockExchange, rsa_key: TestKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_: Any, **__: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(mock.exchange, "list_rfqs", explode)
    async with rest(mock, rsa_key.signer()) as client:
        with capture_logs() as logs, pytest.raises(ServerError) as caught:
            await client.list_rfqs()
        assert caught.value.status == 500
        assert caught.value.code == "internal_error"
        assert "boom" not in caught.value.message  # no internals leak to clients
        failures = [e for e in logs if e["event"] == "mock_request_failed"]
        assert failures
        assert failures[0]["exc_info"] is True
        # The server keeps serving.
        assert (await client.get_communications_id()).startswith("comm_")
    assert mock.stats.internal_errors == 1


# ----------------------------------------------------------------------------- control endpoints


async def test_control_endpoints(mock: MockExchange) -> None:
    async with httpx.AsyncClient(headers=mock.control_headers) as http:
        faults = (await http.get(control_url(mock, "faults"))).json()
        assert faults["write_429_fraction"] == 0
        assert set(faults) >= {"latency_ms", "reorder_fraction", "refuse_handshakes_seconds"}

        changed = await http.post(control_url(mock, "faults"), json={"duplicate_fraction": 0.5})
        assert changed.status_code == 200
        assert changed.json()["duplicate_fraction"] == 0.5
        assert mock.faults.config.duplicate_fraction == 0.5
        for bad in ({"no_such_knob": 1}, {"reorder_fraction": 1.5}, {"latency_ms": -1}):
            response = await http.post(control_url(mock, "faults"), json=bad)
            assert response.status_code == 400, bad
            assert response.json()["code"] == "invalid_fault"
        assert mock.faults.config.duplicate_fraction == 0.5  # unchanged by the bad ones

        assert (await http.post(control_url(mock, "drop_ws"))).json() == {"dropped": 0}

        state = (await http.get(control_url(mock, "state"))).json()
        assert state["users"] == 2 + mock.config.requesters
        assert state["registered_users"] == 2
        assert state["rfqs"] == state["quotes"] == state["fills"] == 0
        assert state["faults"]["duplicate_fraction"] == 0.5

        ticker = cent_market(mock).ticker
        for bad_rfq in (
            {"market_ticker": "NOPE", "contracts_fp": "5"},
            {"market_ticker": ticker},
            {"market_ticker": ticker, "contracts_fp": "5", "wants": "maybe"},
            {"market_ticker": ticker, "contracts_fp": "5", "reservation": "1.5"},
            {"market_ticker": ticker, "contracts_fp": "5", "reservation": 0.5},
        ):
            response = await http.post(control_url(mock, "rfqs"), json=bad_rfq)
            assert response.status_code == 400, bad_rfq
        users_before = len(mock.exchange.users)
        created = await http.post(
            control_url(mock, "rfqs"), json={"market_ticker": ticker, "target_cost_dollars": "25"}
        )
        assert created.status_code == 201
        rfq = mock.exchange.rfqs[created.json()["id"]]
        assert rfq.creator.simulated
        assert rfq.target_cost == Decimal(25)
        assert len(mock.exchange.users) == users_before
        assert (await http.get(control_url(mock, "state"))).json()["open_rfqs"] == 1


def test_partial_acceptances_are_whole_contracts_within_the_offer() -> None:
    assert partial_contracts(Decimal(100), None) is None
    assert partial_contracts(Decimal(100), Decimal("0.333")) == Decimal(33)
    assert partial_contracts(Decimal(3), Decimal("0.25")) == Decimal(1)  # at least one
    assert partial_contracts(Decimal("0.50"), Decimal("0.5")) is None  # below one: all of it
    assert partial_contracts(Decimal(10), Decimal(1)) is None


# ----------------------------------------------------------------------------- flows


async def test_full_requester_maker_flow_over_rest_and_ws(
    mock: MockExchange, rsa_key: TestKey, ed25519_key: TestKey
) -> None:
    market = cent_market(mock)
    yes_bid, no_bid = market.yes_bid(), market.no_bid()
    contracts = Decimal(10)
    requester_signer, maker_signer = rsa_key.signer(), ed25519_key.signer(MAKER_KEY_ID)
    async with (
        rest(mock, requester_signer) as requester,
        rest(mock, maker_signer) as maker,
        consuming_mock(mock, requester_signer) as requester_ws,
        consuming_mock(mock, maker_signer) as maker_ws,
    ):
        rfq_id = await requester.create_rfq(market.ticker, contracts=contracts)
        seen = await maker_ws.next_of(RfqCreated)
        assert seen.msg.id == rfq_id
        assert seen.msg.creator_id == ""  # requesters stay anonymous until they deal
        assert seen.msg.contracts_fp == contracts

        quote_id = await maker.create_quote(rfq_id, yes_bid, no_bid, post_only=True)
        offered = await requester_ws.next_of(QuoteCreated)
        assert offered.msg.quote_id == quote_id
        assert offered.msg.yes_bid_dollars == yes_bid

        await requester.accept_quote(quote_id, "yes", rfq_id=rfq_id)
        accepted = await maker_ws.next_of(QuoteAccepted)
        assert accepted.msg.accepted_side == "yes"
        assert accepted.msg.contracts_accepted_fp == contracts
        await maker.confirm_quote(quote_id, rfq_id=rfq_id)

        maker_exec = await maker_ws.next_of(QuoteExecuted)
        requester_exec = await requester_ws.next_of(QuoteExecuted)
        assert maker_exec.msg.quote_id == requester_exec.msg.quote_id == quote_id
        assert maker_exec.msg.order_id != requester_exec.msg.order_id
        assert (await maker_ws.next_of(RfqDeleted)).msg.id == rfq_id

        # Each party finds its own order among its fills.
        maker_fills = [f async for f in maker.iter_fills()]
        assert [f.order_id for f in maker_fills] == [maker_exec.msg.order_id]
        assert maker_fills[0].outcome_side == "yes"  # accepted "yes": the maker buys YES
        assert maker_fills[0].yes_price_dollars == yes_bid
        assert maker_fills[0].count_fp == contracts
        requester_fills = [f async for f in requester.iter_fills()]
        assert [f.order_id for f in requester_fills] == [requester_exec.msg.order_id]
        assert requester_fills[0].outcome_side == "no"

        maker_positions = await maker.list_positions()
        assert [(p.ticker, p.position_fp) for p in maker_positions.market_positions] == [
            (market.ticker, contracts)
        ]
        assert [e.event_ticker for e in maker_positions.event_positions] == [market.event_ticker]
        requester_positions = (await requester.list_positions()).market_positions
        assert [p.position_fp for p in requester_positions] == [-contracts]

        # Kalshi's fee model: the maker (quoter) pays the maker fee, the requester the taker's.
        maker_fee = FeeModel().fill_fee(yes_bid, contracts, maker=True)
        requester_fee = FeeModel().fill_fee(1 - yes_bid, contracts, maker=False)
        assert (maker_fills[0].fee_cost, requester_fills[0].fee_cost) == (maker_fee, requester_fee)
        start = mock.exchange.starting_balance
        maker_balance = (await maker.get_balance()).balance_dollars
        assert maker_balance == start - yes_bid * contracts - maker_fee
        requester_balance = (await requester.get_balance()).balance_dollars
        assert requester_balance == start - (1 - yes_bid) * contracts - requester_fee
        quote = await maker.get_quote(quote_id, rfq_id=rfq_id)
        assert quote.status == "executed"
        assert quote.creator_order_id == maker_exec.msg.order_id


async def test_a_simulated_requester_accepts_a_makers_quote(
    mock: MockExchange, ed25519_key: TestKey
) -> None:
    market = cent_market(mock)
    maker_signer = ed25519_key.signer(MAKER_KEY_ID)
    async with rest(mock, maker_signer) as maker, consuming_mock(mock, maker_signer) as maker_ws:
        async with httpx.AsyncClient(headers=mock.control_headers) as http:
            response = await http.post(
                control_url(mock, "rfqs"),
                json={
                    "market_ticker": market.ticker,
                    "contracts_fp": "7",
                    "wants": "yes",
                    "reservation": "0.99",
                    "decision_delay_seconds": 1.0,
                },
            )
        assert response.status_code == 201
        rfq_id = response.json()["id"]
        assert (await maker_ws.next_of(RfqCreated)).msg.id == rfq_id

        quote_id = await maker.create_quote(rfq_id, market.yes_bid(), market.no_bid())
        accepted = await maker_ws.next_of(QuoteAccepted)
        assert accepted.msg.quote_id == quote_id
        # Wanting YES, the requester hits the maker's NO bid.
        assert accepted.msg.accepted_side == "no"
        assert accepted.msg.contracts_accepted_fp == Decimal(7)

        await maker.confirm_quote(quote_id, rfq_id=rfq_id)
        executed = await maker_ws.next_of(QuoteExecuted)
        assert executed.msg.quote_id == quote_id
    assert mock.driver.stats.acceptances == 1


async def _first_rfqs(seed: int, count: int) -> list[tuple[str, str | None, str | None]]:
    """The first ``count`` RFQs a mock with this seed broadcasts, as the stream's fields."""
    got: list[tuple[str, str | None, str | None]] = []
    enough = asyncio.Event()

    def record(event: ExchangeEvent) -> None:
        if event.type == "rfq_created" and len(got) < count:
            msg = event.messages[None]
            got.append(
                (msg["market_ticker"], msg.get("contracts_fp"), msg.get("target_cost_dollars"))
            )
            if len(got) == count:
                enough.set()

    async with MockExchange(MockConfig(seed=seed, rfq_rate=400.0)) as mock:
        mock.exchange.listeners.append(record)
        async with asyncio.timeout(5):
            await enough.wait()
    return got


async def test_the_same_seed_gives_the_same_rfq_stream() -> None:
    first = await _first_rfqs(seed=42, count=15)
    again = await _first_rfqs(seed=42, count=15)
    other = await _first_rfqs(seed=43, count=15)
    assert first == again
    assert first != other


async def test_closing_leaves_no_tasks_timers_or_connections(rsa_key: TestKey) -> None:
    before = asyncio.all_tasks()
    config = MockConfig(rfq_rate=200.0, time_scale=FAST, market_step_seconds=0.01)
    mock = MockExchange(config)
    await mock.start()
    mock.register_key(KEY_ID, rsa_key.public)
    signer = rsa_key.signer()
    async with consuming_mock(mock, signer) as consumer:
        await consumer.next_of(RfqCreated)
        # Something in flight everywhere: simulated RFQs with lifetimes, a live WebSocket.
        assert mock.ws_connection_count == 1
        await mock.close()
        assert mock.ws_connection_count == 0
        assert mock.state()["pending_timers"] == 0
    leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert leftover == set()
    await mock.close()  # idempotent


async def test_a_failing_driver_loop_is_restarted(
    mock: MockExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    original = SimMarket.step

    def flaky(self: SimMarket, rng: Any, dt_seconds: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("walk failed")
        original(self, rng, dt_seconds)

    monkeypatch.setattr(SimMarket, "step", flaky)
    driver = mock.driver
    monkeypatch.setattr(driver, "_step_interval", 0.001)
    monkeypatch.setattr(driver, "_restart_delay", 0.001)
    await driver.stop()
    with capture_logs() as logs:
        driver.start()
        async with asyncio.timeout(3):
            while calls < 2 * len(mock.exchange.markets):  # noqa: ASYNC110 - polls a counter
                await asyncio.sleep(0.002)
    assert driver.stats.task_restarts == 1
    assert any(e["event"] == "mock_driver_task_failed" and e["task"] == "market_walk" for e in logs)


# ----------------------------------------------------------------------------- CLI


async def _read_banner(process: asyncio.subprocess.Process) -> dict[str, str]:
    """Read the startup banner up to the WS env line; return the KEY=VALUE lines."""
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(30):
        while True:
            raw = await process.stdout.readline()
            if not raw:
                raise AssertionError("mock-exchange exited early:\n" + "".join(lines))
            line = raw.decode()
            lines.append(line)
            if line.startswith("MMBOT_KALSHI__WS_URL="):
                break
    assert any(line.startswith("REST  http://127.0.0.1:") for line in lines)
    assert any(line.startswith("WS    ws://127.0.0.1:") for line in lines)
    assert any("mock exchange" in line for line in lines)
    return dict(line.strip().split("=", 1) for line in lines if line.startswith("MMBOT_KALSHI__"))


@pytest.mark.slow  # starts the mock's CLI as a child process
async def test_cli_serves_until_sigint_and_whoami_works_against_it() -> None:
    env = subprocess_env(ignore_case=False, PYTHONUNBUFFERED="1")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mmbot",
        "mock-exchange",
        "--rfq-rate",
        "0",
        "--markets",
        "5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        settings = await _read_banner(process)
        assert set(settings) == {
            "MMBOT_KALSHI__KEY_ID",
            "MMBOT_KALSHI__PRIVATE_KEY_PATH",
            "MMBOT_KALSHI__REST_URL",
            "MMBOT_KALSHI__WS_URL",
        }
        key_path = Path(settings["MMBOT_KALSHI__PRIVATE_KEY_PATH"])
        mode = (await asyncio.to_thread(key_path.stat)).st_mode
        assert mode & 0o777 == 0o600

        whoami = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mmbot",
            "whoami",
            "--json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**env, **settings},
        )
        async with asyncio.timeout(30):
            out, err = await whoami.communicate()
        assert whoami.returncode == 0, err.decode()
        assert '"communications_id":"comm_' in out.decode()

        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(15):
            _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
        assert not await asyncio.to_thread(key_path.exists)  # the key goes with the mock
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize(
    ("argv", "status", "flag"),
    [
        (["--rfq-rate", "-1"], 2, "--rfq-rate"),
        (["--port", "http"], 2, "--port"),
        (["--time-scale", "0"], 2, "--time-scale"),
        (["--hvm-fraction", "2"], 2, "--hvm-fraction"),
        (["--reorder-fraction", "nan"], 2, "--reorder-fraction"),
        (["--public-key", "no-equals-sign"], 2, "--public-key"),
        (["--public-key", "k=/no/such/file.pem"], 1, "--public-key"),
    ],
)
def test_cli_rejects_bad_values_in_one_line(
    argv: list[str],
    status: int,
    flag: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_mmbot_env(monkeypatch, ignore_case=False)
    assert cli.main(["mock-exchange", *argv]) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: ")
    assert flag in err[0]


def test_cli_accepts_public_and_private_key_files(tmp_path: Path, rsa_key: TestKey) -> None:
    from cryptography.hazmat.primitives import serialization

    from mmbot.mock.cli import load_public_key

    private = tmp_path / "private.pem"
    private.write_bytes(rsa_key.pkcs8_pem)
    public = tmp_path / "public.pem"
    public.write_bytes(
        rsa_key.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for path in (private, public):
        assert load_public_key(path).public_numbers() == rsa_key.public.public_numbers()  # type: ignore[union-attr]
    other = ed25519.Ed25519PrivateKey.generate()
    raw = tmp_path / "ed.pem"
    raw.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert isinstance(load_public_key(raw), ed25519.Ed25519PublicKey)


# ----------------------------------------------------------------------------- settlement


async def trade_over_rest(
    mock: MockExchange,
    requester: KalshiRestClient,
    maker: KalshiRestClient,
    market: SimMarket,
    contracts: str,
) -> str:
    """One full RFQ trade on ``market``: the maker buys YES at its bid; returns the quote id."""
    rfq_id = await requester.create_rfq(market.ticker, contracts=contracts)
    quote_id = await maker.create_quote(rfq_id, market.yes_bid(), "0", post_only=False)
    await requester.accept_quote(quote_id, "yes", rfq_id=rfq_id)
    await maker.confirm_quote(quote_id, rfq_id=rfq_id)
    await eventually(lambda: mock.exchange.quotes[quote_id].status == "executed", "the execution")
    return quote_id


async def test_settle_pays_out_closes_rfqs_and_finalizes_the_market(
    mock: MockExchange, rsa_key: TestKey, ed25519_key: TestKey
) -> None:
    market = cent_market(mock)
    yes_bid = market.yes_bid()
    requester_signer, maker_signer = rsa_key.signer(), ed25519_key.signer(MAKER_KEY_ID)
    async with (
        rest(mock, requester_signer) as requester,
        rest(mock, maker_signer) as maker,
        consuming_mock(mock, maker_signer) as maker_ws,
        httpx.AsyncClient(headers=mock.control_headers) as control,
    ):
        await trade_over_rest(mock, requester, maker, market, "10")
        still_open = await requester.create_rfq(market.ticker, contracts="2")
        before = (await maker.get_balance()).balance_dollars
        while True:  # skip the trade's own events
            created = await maker_ws.next_of(RfqCreated)
            if created.msg.id == still_open:
                break

        for bad in (
            {"market_ticker": "NOPE", "result": "yes"},
            {"market_ticker": market.ticker, "result": "maybe"},
            {"market_ticker": market.ticker},
        ):
            response = await control.post(control_url(mock, "settle"), json=bad)
            assert response.status_code == 400, bad
        response = await control.post(
            control_url(mock, "settle"), json={"market_ticker": market.ticker, "result": "yes"}
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["positions_settled"] == 2
        assert (answer["market"]["status"], answer["market"]["result"]) == ("finalized", "yes")

        deleted = await maker_ws.next_of(RfqDeleted)
        assert deleted.msg.id == still_open
        assert (await requester.get_rfq(still_open)).status == "closed"
        settled = await maker.get_market(market.ticker)
        assert (settled.status, settled.result) == ("finalized", "yes")
        assert (await maker.get_balance()).balance_dollars == before + 10
        (position,) = (await maker.list_positions()).market_positions
        assert position.position_fp == 0
        assert position.realized_pnl_dollars == 10 - yes_bid * 10
        assert (await maker.list_positions(count_filter="position")).market_positions == []
        listed = await maker.list_markets(status="settled")
        assert [m.ticker for m in listed.items] == [market.ticker]
        with pytest.raises(BadRequestError):
            await requester.create_rfq(market.ticker, contracts="1")
        again = await control.post(
            control_url(mock, "settle"), json={"market_ticker": market.ticker, "result": "no"}
        )
        assert again.status_code == 400
        state = (await control.get(control_url(mock, "state"))).json()
        assert state["settled_markets"] == [market.ticker]
    # The Python entry point does the same.
    other = cent_market(mock, skip=1)
    assert mock.settle(other.ticker, "no")["market"]["result"] == "no"


async def test_settled_time_filters_on_markets(mock: MockExchange) -> None:
    market = cent_market(mock)
    mock.settle(market.ticker, "no")
    stamp = int(market.settled_time.timestamp()) if market.settled_time else 0
    async with httpx.AsyncClient() as http:
        body = (
            await http.get(mock.rest_url + "/markets", params={"min_settled_ts": stamp - 1})
        ).json()
        assert [m["ticker"] for m in body["markets"]] == [market.ticker]
        assert body["markets"][0]["settlement_value_dollars"] == "0.0000"
        body = (
            await http.get(mock.rest_url + "/markets", params={"max_settled_ts": stamp - 1})
        ).json()
        assert body["markets"] == []


# ----------------------------------------------------------------------------- frame injection


async def test_injected_frames_reach_every_subscriber_or_one_user(
    mock: MockExchange, rsa_key: TestKey, ed25519_key: TestKey
) -> None:
    requester_signer, maker_signer = rsa_key.signer(), ed25519_key.signer(MAKER_KEY_ID)
    maker = next(u for u in mock.exchange.users.values() if u.key_id == MAKER_KEY_ID)
    stranger = mock.exchange.add_user(key_id="nobody")
    hostile = {
        "type": "quote_accepted",
        "msg": {
            "quote_id": "q-forged",
            "rfq_id": "r-forged",
            "quote_creator_id": stranger.communications_id,  # another maker's quote
            "rfq_creator_id": "comm_x",
            "market_ticker": cent_market(mock).ticker,
            "yes_bid_dollars": "0.4000",
            "no_bid_dollars": "0.5000",
            "accepted_side": "yes",
            "contracts_accepted_fp": "5.00",
        },
    }
    async with (
        consuming_mock(mock, requester_signer) as requester_ws,
        consuming_mock(mock, maker_signer) as maker_ws,
        httpx.AsyncClient(headers=mock.control_headers) as control,
    ):
        response = await control.post(
            control_url(mock, "frames"), json={**hostile, "to_user_id": maker.user_id}
        )
        assert response.json() == {"sent": 1}
        forged = await maker_ws.next_of(QuoteAccepted)
        assert forged.msg.quote_creator_id == stranger.communications_id
        assert forged.sid is not None  # filled in from the subscription

        # To everyone, and from Python; a frame that names its sid keeps it.
        assert mock.inject_frame({"type": "mystery", "sid": 99, "msg": {}}) == 2
        assert mock.stats.injected_frames == 3
        assert mock.inject_frame(hostile, maker) == 1
        # The requester got only the mystery frame, exactly as given.
        seen = await requester_ws.next()
        assert isinstance(seen, UnknownMessage)
        assert seen.raw == {"type": "mystery", "sid": 99, "msg": {}}
        bad = await control.post(
            control_url(mock, "frames"), json={**hostile, "to_user_id": "no-such-user"}
        )
        assert bad.status_code == 400
