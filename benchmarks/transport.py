"""What should sit under httpx in mmbot's REST client? Measure one signed quote POST.

Runs ``python -m benchmarks.transport``. Each client variant sends N sequential signed
``POST /trade-api/v2/communications/quotes`` requests (JSON body of about 120 bytes,
answered 201 ``{"id": ...}``) over one keep-alive connection and reports the round-trip
p50/p90/p99/max and the client's CPU time per request. The variants take turns in rotating
rounds, so load from elsewhere on the machine falls on all of them alike. Servers run in
their own processes (one per variant, pinned to the second core when there is one), so
the client never shares a loop or a core with a server:

``mock``
    mmbot's own :class:`~mmbot.mock.server.MockExchange` (aiohttp), which authenticates
    the Ed25519 signature and runs the exchange's quote rules: the realistic case.
``raw``
    a bare asyncio HTTP/1.1 server that answers every request with a fixed 201: the
    server costs next to nothing, so what remains is the client's cost.

Variants: ``httpx`` (default httpcore transport), ``httpx-mmbot`` (httpx over
:class:`mmbot.kalshi.http.AiohttpTransport`, what the REST client uses), ``aiohttp``
(``ClientSession`` directly), ``raw`` (a keep-alive asyncio stream with the request written
by hand: the floor) and, when their packages are installed, ``httpx2`` (the httpx fork,
default transport) and ``httpx-aiohttp`` (httpx over ``httpx_aiohttp.AiohttpTransport``).
Every variant signs each request with the same :class:`~mmbot.kalshi.auth.Signer` and
decodes the response's JSON id, so they do the same work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric import ed25519

from mmbot.kalshi.auth import KalshiAuth, Signer

__all__ = ["Result", "main", "run"]

KEY_ID = "bench-maker-key"
QUOTES_PATH = "/trade-api/v2/communications/quotes"
RAW_BODY = b'{"id":"5f0c6a9e-2b7d-4c1e-8f3a-9d2e1b0c4a7f"}'

#: One request: returns the decoded quote id (so every variant parses the answer).
Sender = Callable[[], Awaitable[str]]
#: Opens a client against (base URL, signer, request body) and yields its sender.
Variant = Callable[[str, Signer, bytes], AbstractAsyncContextManager[Sender]]


# ----------------------------------------------------------------------------- servers


def _pin(cpu: int) -> None:
    # Two cores: client on one, server on the other, so neither steals the other's CPU.
    with contextlib.suppress(AttributeError, OSError):
        if len(os.sched_getaffinity(0)) >= 2:
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[cpu]})


async def _wait_for_stop(conn: Connection) -> None:
    # The parent's "stop" (or its death, which closes the pipe) ends the server.
    with contextlib.suppress(EOFError, OSError):
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)


async def _serve_mock(conn: Connection, public_raw: bytes) -> None:
    """Start a MockExchange with one open RFQ from a simulated requester; report it."""
    from mmbot.mock.server import MockConfig, MockExchange

    # No market walk and no simulated flow: the RFQ stays open and its prices stay valid.
    config = MockConfig(seed=7, market_step_seconds=0, rfq_rate=0.0, requesters=1)
    async with MockExchange(config) as mock:
        mock.register_key(KEY_ID, ed25519.Ed25519PublicKey.from_public_bytes(public_raw))
        market = next(m for m in mock.exchange.markets.values() if not m.hvm)
        requester = mock.exchange.add_user(simulated=True)
        rfq = mock.exchange.create_rfq(
            requester,
            {"market_ticker": market.ticker, "contracts_fp": "10.00", "rest_remainder": False},
        )
        body = orjson.dumps(
            {
                "rfq_id": rfq.id,
                "yes_bid": f"{market.yes_bid():.4f}",
                "no_bid": f"{market.no_bid():.4f}",
                "rest_remainder": False,
                "post_only": True,
            }
        )
        conn.send({"url": mock.base_url, "body": body})
        await _wait_for_stop(conn)


class _FixedAnswer(asyncio.Protocol):
    """HTTP/1.1 keep-alive server protocol answering every request with one fixed 201."""

    RESPONSE = (
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(RAW_BODY), RAW_BODY)
    )

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to answer on."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        """Answer each complete request in the buffer (pipelined ones too)."""
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in bytes(self._buffer[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            total = end + 4 + length
            if len(self._buffer) < total:
                return
            del self._buffer[:total]
            assert self._transport is not None
            self._transport.write(self.RESPONSE)


async def _serve_raw(conn: Connection) -> None:
    """Serve the fixed 201 on an ephemeral loopback port; report its URL."""
    server = await asyncio.get_running_loop().create_server(_FixedAnswer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn.send({"url": f"http://127.0.0.1:{port}", "body": b'{"rfq_id":"x","yes_bid":"0.5"}'})
    async with server:
        await _wait_for_stop(conn)


def _server_main(kind: str, conn: Connection, public_raw: bytes) -> None:
    """Entry point of a server process."""
    _pin(1)
    if kind == "mock":
        import logging

        import structlog

        # The mock logs each request at debug/info; silence it so logging is not measured.
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
        asyncio.run(_serve_mock(conn, public_raw))
    else:
        asyncio.run(_serve_raw(conn))


@contextlib.contextmanager
def _server(kind: str, public_raw: bytes) -> Iterator[dict[str, Any]]:
    """Run a server in a fresh process; yield ``{"url", "body"}``."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_server_main, args=(kind, child, public_raw), daemon=True)
    process.start()
    try:
        if not parent.poll(30):
            raise RuntimeError(f"{kind} server did not start")
        yield parent.recv()
    finally:
        with contextlib.suppress(OSError):
            parent.send("stop")
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()


# ----------------------------------------------------------------------------- clients


def _httpx_client(base: str, signer: Signer, transport: httpx.AsyncBaseTransport | None) -> Any:
    # Built as KalshiRestClient built its client before it sent requests straight to the
    # transport (the rest-client variant measures what it does now).
    return httpx.AsyncClient(
        base_url=base + "/trade-api/v2/",
        auth=KalshiAuth(signer),
        timeout=httpx.Timeout(10.0),
        headers={"Accept": "application/json", "User-Agent": "mmbot"},
        transport=transport,
    )


@contextlib.asynccontextmanager
async def _via_httpx(
    base: str, signer: Signer, body: bytes, transport: httpx.AsyncBaseTransport | None
) -> AsyncIterator[Sender]:
    """Yield a sender that posts through httpx over ``transport``, as rest.py does."""
    headers = {"Content-Type": "application/json"}
    async with _httpx_client(base, signer, transport) as client:

        async def send() -> str:
            response = await client.request(
                "POST", "communications/quotes", content=body, headers=headers
            )
            if response.status_code != 201:
                raise RuntimeError(f"{response.status_code}: {response.text}")
            return str(orjson.loads(response.content)["id"])

        yield send


def httpx_default(base: str, signer: Signer, body: bytes) -> AbstractAsyncContextManager[Sender]:
    """(a) httpx with its default (httpcore) transport."""
    return _via_httpx(base, signer, body, None)


def httpx_aiohttp(base: str, signer: Signer, body: bytes) -> AbstractAsyncContextManager[Sender]:
    """(b) httpx over the httpx-aiohttp transport."""
    from httpx_aiohttp import AiohttpTransport

    return _via_httpx(base, signer, body, AiohttpTransport())


def httpx_mmbot(base: str, signer: Signer, body: bytes) -> AbstractAsyncContextManager[Sender]:
    """(e) httpx over mmbot's transport on one aiohttp session, as the REST client runs."""
    from mmbot.kalshi.http import AiohttpTransport

    return _via_httpx(base, signer, body, AiohttpTransport())


@contextlib.asynccontextmanager
async def rest_client(base: str, signer: Signer, body: bytes) -> AsyncIterator[Sender]:
    """(g) mmbot's own KalshiRestClient.create_quote: httpx requests straight to the transport.

    The whole client path: price validation, the JSON body, the write bucket (sized never
    to wait), signing, the request and the decoded id.
    """
    from decimal import Decimal

    from mmbot.kalshi.rest import KalshiRestClient

    fields = orjson.loads(body)
    rfq_id = str(fields["rfq_id"])
    yes = Decimal(str(fields.get("yes_bid", "0.5")))
    no = Decimal(str(fields.get("no_bid", "0.4")))
    client = KalshiRestClient(
        base + "/trade-api/v2",
        signer,
        write_tokens_per_second=1e9,
        write_bucket_capacity=1e9,
        timeout_seconds=10.0,
    )
    async with client:

        async def send() -> str:
            return await client.create_quote(rfq_id, yes, no)

        yield send


@contextlib.asynccontextmanager
async def httpx2_default(base: str, signer: Signer, body: bytes) -> AsyncIterator[Sender]:
    """(f) httpx2, the maintained fork of httpx, with its default transport."""
    import httpx2

    class Auth(httpx2.Auth):
        # KalshiAuth is an httpx.Auth; httpx2 wants its own class. The same signing.
        def auth_flow(self, request: httpx2.Request) -> Iterator[httpx2.Request]:
            path = request.url.raw_path.split(b"?", 1)[0].decode("ascii")
            request.headers.update(signer.headers(request.method, path))
            yield request

    headers = {"Content-Type": "application/json"}
    async with httpx2.AsyncClient(
        base_url=base + "/trade-api/v2/",
        auth=Auth(),
        timeout=httpx2.Timeout(10.0),
        headers={"Accept": "application/json", "User-Agent": "mmbot"},
    ) as client:

        async def send() -> str:
            response = await client.request(
                "POST", "communications/quotes", content=body, headers=headers
            )
            if response.status_code != 201:
                raise RuntimeError(f"{response.status_code}: {response.text}")
            return str(orjson.loads(response.content)["id"])

        yield send


@contextlib.asynccontextmanager
async def aiohttp_direct(base: str, signer: Signer, body: bytes) -> AsyncIterator[Sender]:
    """(c) aiohttp.ClientSession with no httpx on top."""
    url = base + QUOTES_PATH
    fixed = {
        "Accept": "application/json",
        "User-Agent": "mmbot",
        "Content-Type": "application/json",
    }
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10.0)) as session:

        async def send() -> str:
            headers = fixed | signer.headers("POST", QUOTES_PATH)
            async with session.post(url, data=body, headers=headers) as response:
                raw = await response.read()
                if response.status != 201:
                    raise RuntimeError(f"{response.status}: {raw!r}")
            return str(orjson.loads(raw)["id"])

        yield send


@contextlib.asynccontextmanager
async def raw_stream(base: str, signer: Signer, body: bytes) -> AsyncIterator[Sender]:
    """(d) the floor: one asyncio stream, request bytes written by hand, minimal parsing."""
    hostport = base.removeprefix("http://")
    host, _, port = hostport.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST {QUOTES_PATH} HTTP/1.1\r\nHost: {hostport}\r\nAccept: application/json\r\n"
        f"User-Agent: mmbot\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
    )

    async def send() -> str:
        auth = "".join(f"{k}: {v}\r\n" for k, v in signer.headers("POST", QUOTES_PATH).items())
        writer.write((head + auth + "\r\n").encode("latin-1") + body)
        header = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in header.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        raw = await reader.readexactly(length)
        if header[9:12] != b"201":
            raise RuntimeError(f"{header[:12]!r}: {raw!r}")
        return str(orjson.loads(raw)["id"])

    try:
        yield send
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


VARIANTS: dict[str, Variant] = {
    "httpx": httpx_default,
    "httpx-mmbot": httpx_mmbot,
    "rest-client": rest_client,
    "aiohttp": aiohttp_direct,
    "raw": raw_stream,
}
if importlib.util.find_spec("httpx2") is not None:
    VARIANTS["httpx2"] = httpx2_default
if importlib.util.find_spec("httpx_aiohttp") is not None:
    VARIANTS["httpx-aiohttp"] = httpx_aiohttp


# ----------------------------------------------------------------------------- measuring


@dataclass(frozen=True, slots=True)
class Result:
    """Round-trip percentiles (µs) and client CPU per request (µs) of one variant/server."""

    server: str
    variant: str
    n: int
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    mean_us: float
    cpu_us: float


def _percentile(sorted_us: list[float], q: float) -> float:
    # Nearest-rank: an actual observed latency, never an interpolation between two.
    index = min(len(sorted_us) - 1, max(0, round(q * len(sorted_us)) - 1))
    return sorted_us[index]


async def _measure(
    server: str, infos: dict[str, dict[str, Any]], n: int, warmup: int, rounds: int
) -> list[Result]:
    """Time ``n`` sequential requests per variant, interleaved in rotating rounds.

    Every variant's client is open at once (each against its own server process) and the
    variants take turns, ``n / rounds`` requests at a time in a rotating order, so a burst
    of load from elsewhere on the machine lands on all of them, not on whichever ran last.
    """
    names = list(infos)
    async with contextlib.AsyncExitStack() as stack:
        senders: dict[str, Sender] = {}
        for name in names:
            info = infos[name]
            variant = VARIANTS[name](info["url"], _SIGNER, info["body"])
            senders[name] = await stack.enter_async_context(variant)
            for _ in range(warmup):
                await senders[name]()
        samples: dict[str, list[int]] = {name: [] for name in names}
        cpu = dict.fromkeys(names, 0.0)
        per_round = -(-n // rounds)
        clock = time.perf_counter_ns
        for index in range(rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                send, out = senders[name], samples[name]
                gc.collect()
                cpu_start = time.process_time()
                for _ in range(per_round):
                    started = clock()
                    await send()
                    out.append(clock() - started)
                cpu[name] += time.process_time() - cpu_start
    results = []
    for name in names:
        us = sorted(s / 1000 for s in samples[name])
        results.append(
            Result(
                server=server,
                variant=name,
                n=len(us),
                p50_us=_percentile(us, 0.50),
                p90_us=_percentile(us, 0.90),
                p99_us=_percentile(us, 0.99),
                max_us=us[-1],
                mean_us=statistics.fmean(us),
                cpu_us=cpu[name] / len(us) * 1e6,
            )
        )
    return results


_KEY = ed25519.Ed25519PrivateKey.generate()
_SIGNER = Signer(KEY_ID, _KEY)


def run(
    servers: list[str],
    variants: list[str],
    n: int,
    warmup: int,
    rounds: int = 10,
) -> list[Result]:
    """Measure every variant against every server kind; one server process per variant."""
    from cryptography.hazmat.primitives import serialization

    public_raw = _KEY.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    _pin(0)
    results = []
    for server in servers:
        # A server process per variant: the mock keeps every quote (and scans them on each
        # new one), so variants sharing one server would slow each other down.
        with contextlib.ExitStack() as stack:
            infos = {name: stack.enter_context(_server(server, public_raw)) for name in variants}
            batch = asyncio.run(_measure(server, infos, n, warmup, rounds))
        for result in batch:
            print(_row(result), flush=True)
        results.extend(batch)
    return results


def _row(r: Result) -> str:
    return (
        f"{r.server:<5} {r.variant:<14} {r.p50_us:8.0f} {r.p90_us:8.0f} {r.p99_us:8.0f} "
        f"{r.max_us:8.0f} {r.cpu_us:8.0f}"
    )


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    """Command line: measure, print a table, optionally write JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transport", description=__doc__)
    parser.add_argument("-n", type=int, default=2000, help="timed requests per run")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests first")
    parser.add_argument("--servers", nargs="+", default=["mock", "raw"], choices=["mock", "raw"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=10, help="interleaved turns per variant")
    parser.add_argument("--json-out", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    print(f"{'srv':<5} {'variant':<14} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'cpu/req':>8}")
    print("(microseconds; cpu/req = client process CPU time per request)")
    results = run(args.servers, args.variants, args.n, args.warmup, args.rounds)
    if args.json_out:
        payload = {
            "n": args.n,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "python": sys.version.split()[0],
            "httpx": httpx.__version__,
            "aiohttp": aiohttp.__version__,
            "httpx2": _version("httpx2"),
            "httpx-aiohttp": _version("httpx-aiohttp"),
            "results": [asdict(r) for r in results],
        }
        with open(args.json_out, "w", encoding="utf-8") as out:
            json.dump(payload, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
