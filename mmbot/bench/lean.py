"""The lean quoter: what plain Python does on this machine, a floor for the daemon's latency.

The same protocol work as the naive baseline, done as cheaply as Python allows: a
``websockets`` client subscribed to ``communications`` (no compression, frames read as
bytes), ``orjson`` to parse each frame, and one signed ``aiohttp`` POST per
``rfq_created`` at the baseline's fixed prices over one kept-alive ``ClientSession``; one
PUT confirm per ``quote_accepted``. No strategy, no risk checks, no rate limiting, no
queue, no journal, no logging. Run as a process::

    python -m mmbot.bench.lean --rest-url URL --ws-url URL --key-id ID --key-path PEM

``--event-loop auto|uvloop|asyncio`` picks the loop as ``run.event_loop`` does for the
daemon. It prints ``ready (event loop: NAME)`` on stdout once subscribed and runs until
SIGTERM or SIGINT, then prints one JSON line of counters and exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import websockets

from mmbot.bench.baseline import COUNTERS, NO_BID, YES_BID, quoter_parser
from mmbot.kalshi.auth import Signer

__all__ = ["LeanQuoter", "main"]

_JSON = {"Content-Type": "application/json"}
_LOOPS = ("auto", "uvloop", "asyncio")
_SUBSCRIBE = orjson.dumps(
    {"id": 1, "cmd": "subscribe", "params": {"channels": ["communications"]}}
).decode()


class LeanQuoter:
    """One session, one socket, a task per request and a handful of counters."""

    def __init__(self, rest_url: str, ws_url: str, signer: Signer) -> None:
        """Quote every RFQ seen on ``ws_url`` through ``rest_url``, signed by ``signer``."""
        self.rest_url = rest_url.rstrip("/")
        self.ws_url = ws_url
        self.signer = signer
        # Kalshi signs the path without the host: computed once, not per request.
        self._quotes_path = urlsplit(self.rest_url).path + "/communications/quotes"
        self._quotes_url = self.rest_url + "/communications/quotes"
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        # Held only so that running tasks are not garbage collected mid-flight.
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event, on_ready: Callable[[], None] | None = None) -> None:
        """Subscribe and quote every RFQ until ``stop`` is set; call ``on_ready()`` once."""
        connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=60)
        timeout = aiohttp.ClientTimeout(total=10.0)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            headers = self.signer.headers("GET", self.ws_url)
            async with websockets.connect(
                self.ws_url, additional_headers=headers, max_queue=None, compression=None
            ) as ws:
                await ws.send(_SUBSCRIBE)
                if on_ready is not None:
                    on_ready()
                receiver = asyncio.create_task(self._receive(ws, session))
                await stop.wait()
                receiver.cancel()
                await asyncio.gather(receiver, return_exceptions=True)
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=2.0)

    async def _receive(self, ws: Any, session: aiohttp.ClientSession) -> None:
        loads = orjson.loads
        while True:
            frame = loads(await ws.recv(decode=False))
            self.counts["frames"] += 1
            kind = frame.get("type")
            if kind == "rfq_created":
                self._spawn(self._quote(session, frame["msg"]["id"]))
            elif kind == "quote_accepted":
                self._spawn(self._confirm(session, frame["msg"]["quote_id"]))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quote(self, session: aiohttp.ClientSession, rfq_id: str) -> None:
        self.counts["quotes_sent"] += 1
        body = orjson.dumps(
            {"rfq_id": rfq_id, "yes_bid": YES_BID, "no_bid": NO_BID, "rest_remainder": False}
        )
        headers = self.signer.headers("POST", self._quotes_path) | _JSON
        await self._send(session, "POST", self._quotes_url, body, headers, "quotes")

    async def _confirm(self, session: aiohttp.ClientSession, quote_id: str) -> None:
        self.counts["confirms_sent"] += 1
        suffix = f"/{quote_id}/confirm"
        headers = self.signer.headers("PUT", self._quotes_path + suffix) | _JSON
        await self._send(session, "PUT", self._quotes_url + suffix, b"{}", headers, "confirms")

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        body: bytes,
        headers: dict[str, str],
        what: str,
    ) -> None:
        try:
            async with session.request(method, url, data=body, headers=headers) as response:
                # Read to the end so the connection goes back to the pool for the next one.
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            self.counts[f"{what}_failed"] += 1
            return
        if status < 300:
            self.counts[f"{what}_ok"] += 1
        elif status == 429:
            self.counts[f"{what}_429"] += 1
        else:
            self.counts[f"{what}_failed"] += 1


def _select_loop(choice: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    # mmbot.eventloop.select_loop's rules without its imports (pydantic, structlog): they
    # would add some 13 MB to this process's RSS and nothing to what it measures.
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", None


async def _main(args: argparse.Namespace, pem: bytes, loop_name: str) -> int:
    signer = Signer.from_pem(args.key_id, pem)
    quoter = LeanQuoter(args.rest_url, args.ws_url, signer)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def finish() -> None:
        # Report and leave at once, like the naive baseline: pending requests are abandoned.
        print(orjson.dumps(quoter.counts).decode(), flush=True)
        os._exit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, finish)
    await quoter.run(stop, lambda: print(f"ready (event loop: {loop_name})", flush=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the lean quoter until SIGTERM."""
    parser = quoter_parser("python -m mmbot.bench.lean")
    parser.add_argument("--event-loop", choices=_LOOPS, default="auto")
    args = parser.parse_args(argv)
    try:
        loop_name, factory = _select_loop(args.event_loop)
    except ImportError as exc:
        parser.error(f"--event-loop uvloop: uvloop cannot be imported ({exc})")
    pem = Path(args.key_path).read_bytes()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_main(args, pem, loop_name))


if __name__ == "__main__":
    sys.exit(main())
