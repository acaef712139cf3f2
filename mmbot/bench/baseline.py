"""The naive baseline quoter the daemon is compared with: naive on purpose.

WebSocket receive, ``json.loads`` per frame, one ``httpx`` POST per ``rfq_created`` frame
at fixed prices, one PUT confirm per ``quote_accepted`` frame. No strategy, no risk checks,
no rate limiting, no queue: each frame gets its own task. Run as a process::

    python -m mmbot.bench.baseline --rest-url URL --ws-url URL --key-id ID --key-path PEM

It prints ``ready`` on stdout once subscribed and runs until SIGTERM or SIGINT, then
prints one JSON line of counters and exits at once (pending requests are abandoned).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import websockets

from mmbot.kalshi.auth import KalshiAuth, Signer

__all__ = ["main"]

# Fixed prices on every market's grid, well inside any min-edge rule (0.01 + 0.01 <= 0.99).
YES_BID = "0.0100"
NO_BID = "0.0100"


#: What a baseline quoter counts and prints at exit; the harness reads them by name.
COUNTERS = (
    "frames",
    "quotes_sent",
    "quotes_ok",
    "quotes_429",
    "quotes_failed",
    "confirms_sent",
    "confirms_ok",
    "confirms_429",
    "confirms_failed",
)


class Baseline:
    """The naive quoter's state: one HTTP client and a handful of counters."""

    def __init__(self, rest_url: str, ws_url: str, signer: Signer) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.ws_url = ws_url
        self.signer = signer
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        # Held only so that running tasks are not garbage collected mid-flight.
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Subscribe and quote every RFQ until ``stop`` is set."""
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(
            auth=KalshiAuth(self.signer), limits=limits, timeout=10.0
        ) as client:
            headers = self.signer.headers("GET", self.ws_url)
            async with websockets.connect(
                self.ws_url, additional_headers=headers, max_queue=None
            ) as ws:
                await ws.send(
                    json.dumps(
                        {"id": 1, "cmd": "subscribe", "params": {"channels": ["communications"]}}
                    )
                )
                print("ready", flush=True)
                receiver = asyncio.create_task(self._receive(ws, client))
                await stop.wait()
                receiver.cancel()
                await asyncio.gather(receiver, return_exceptions=True)
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=2.0)

    async def _receive(self, ws: Any, client: httpx.AsyncClient) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            self.counts["frames"] += 1
            kind = frame.get("type")
            msg = frame.get("msg") or {}
            if kind == "rfq_created":
                self._spawn(self._quote(client, msg["id"]))
            elif kind == "quote_accepted":
                self._spawn(self._confirm(client, msg["quote_id"]))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quote(self, client: httpx.AsyncClient, rfq_id: str) -> None:
        self.counts["quotes_sent"] += 1
        body = {"rfq_id": rfq_id, "yes_bid": YES_BID, "no_bid": NO_BID, "rest_remainder": False}
        try:
            response = await client.post(f"{self.rest_url}/communications/quotes", json=body)
        except httpx.HTTPError:
            self.counts["quotes_failed"] += 1
            return
        self._count("quotes", response.status_code)

    async def _confirm(self, client: httpx.AsyncClient, quote_id: str) -> None:
        self.counts["confirms_sent"] += 1
        url = f"{self.rest_url}/communications/quotes/{quote_id}/confirm"
        try:
            response = await client.put(url, json={})
        except httpx.HTTPError:
            self.counts["confirms_failed"] += 1
            return
        self._count("confirms", response.status_code)

    def _count(self, what: str, status: int) -> None:
        if status < 300:
            self.counts[f"{what}_ok"] += 1
        elif status == 429:
            self.counts[f"{what}_429"] += 1
        else:
            self.counts[f"{what}_failed"] += 1


async def _main(args: argparse.Namespace, pem: bytes) -> int:
    signer = Signer.from_pem(args.key_id, pem)
    baseline = Baseline(args.rest_url, args.ws_url, signer)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def finish() -> None:
        # Report and leave at once: an overloaded baseline may hold thousands of pending
        # requests, and draining them would only delay the next phase.
        print(json.dumps(baseline.counts), flush=True)
        os._exit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, finish)
    await baseline.run(stop)
    return 0


def quoter_parser(prog: str) -> argparse.ArgumentParser:
    """The arguments every baseline quoter takes: where the exchange is, and its key."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--rest-url", required=True)
    parser.add_argument("--ws-url", required=True)
    parser.add_argument("--key-id", required=True)
    parser.add_argument("--key-path", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the baseline quoter until SIGTERM."""
    args = quoter_parser("python -m mmbot.bench.baseline").parse_args(argv)
    return asyncio.run(_main(args, Path(args.key_path).read_bytes()))


if __name__ == "__main__":
    sys.exit(main())
