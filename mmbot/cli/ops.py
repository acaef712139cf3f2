"""Operator commands on top of the REST client: whoami, rfqs list, quotes list, quotes cancel-all.

These are the first things an operator runs against a new key, and
``quotes cancel-all`` is the manual kill switch. Failures print one line that
says what went wrong and exit 1; they never print a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, TextIO

import orjson

from mmbot.clients import auth_refused_message, build_rest_client, build_signer
from mmbot.config import ConfigError, Settings, environment_of
from mmbot.kalshi.errors import AuthError, KalshiError, NotFoundError, TransportError
from mmbot.kalshi.models import Quote, Rfq
from mmbot.kalshi.rest import KalshiRestClient
from mmbot.logs import configure_logging

__all__ = ["register"]

# Deletes are bounded by the write bucket anyway; this only caps sockets in flight.
_CANCEL_CONCURRENCY = 16

Command = Callable[[argparse.Namespace, KalshiRestClient], Awaitable[int]]


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
) -> None:
    """Add the operator subcommands to the ``mmbot`` parser."""
    whoami = subparsers.add_parser(
        "whoami", parents=parents, help="show the account's communications id"
    )
    _add_json_flag(whoami)
    whoami.set_defaults(func=_runner(_whoami))

    rfqs = subparsers.add_parser("rfqs", help="inspect RFQs")
    rfqs_sub = rfqs.add_subparsers(dest="rfqs_command", required=True, metavar="COMMAND")
    rfqs_list = rfqs_sub.add_parser("list", parents=parents, help="list RFQs (all pages)")
    rfqs_list.add_argument("--status", help="only RFQs with this status (open, closed)")
    rfqs_list.add_argument("--market", metavar="TICKER", help="only RFQs on this market")
    _add_json_flag(rfqs_list)
    rfqs_list.set_defaults(func=_runner(_rfqs_list))

    quotes = subparsers.add_parser("quotes", help="inspect and cancel our own quotes")
    quotes_sub = quotes.add_subparsers(dest="quotes_command", required=True, metavar="COMMAND")
    quotes_list = quotes_sub.add_parser(
        "list", parents=parents, help="list our own quotes (all pages)"
    )
    quotes_list.add_argument("--status", help="only quotes with this status (e.g. open)")
    _add_json_flag(quotes_list)
    quotes_list.set_defaults(func=_runner(_quotes_list))
    cancel_all = quotes_sub.add_parser(
        "cancel-all", parents=parents, help="delete every open quote of ours (kill switch)"
    )
    cancel_all.add_argument(
        "--yes", action="store_true", help="do not ask for confirmation (needed without a TTY)"
    )
    cancel_all.set_defaults(func=_runner(_cancel_all))


def _add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def _runner(command: Command) -> Callable[[argparse.Namespace, Settings], Awaitable[int]]:
    """Wrap a command: build the client, run it, and turn every failure into one line."""

    async def run(args: argparse.Namespace, settings: Settings) -> int:
        _quiet_default_logging(args, settings)
        try:
            signer = build_signer(settings.kalshi)
        except ConfigError as exc:
            _fail(f"cannot authenticate: {exc}")
            return 1
        try:
            async with build_rest_client(settings.kalshi, signer) as client:
                return await command(args, client)
        except AuthError as exc:
            _fail(auth_refused_message(exc, settings.kalshi))
        except TransportError as exc:
            _fail(f"cannot reach {settings.kalshi.rest_url}: {exc.message}")
        except KalshiError as exc:
            _fail(str(exc))
        return 1

    return run


def _quiet_default_logging(args: argparse.Namespace, settings: Settings) -> None:
    # An operator at a terminal wants the answer or one error line, not INFO chatter such
    # as retries; an explicitly chosen log.level is respected.
    sources = getattr(args, "config_sources", None) or {}
    if sources.get("log.level") == "default":
        configure_logging("WARNING", settings.log.resolved_format(sys.stderr), sys.stderr)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _print_json(record: dict[str, Any], out: TextIO) -> None:
    out.write(orjson.dumps(_plain(record), default=str).decode() + "\n")


def _print_table(headers: Sequence[str], rows: list[list[str]], out: TextIO) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in [list(headers), *rows]:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        out.write("\n")


def _text(value: object) -> str:
    if value is None:
        return "-"
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


async def _whoami(args: argparse.Namespace, client: KalshiRestClient) -> int:
    comm_id = await client.get_communications_id()
    environment = environment_of(client.base_url)
    if args.json:
        _print_json(
            {"communications_id": comm_id, "environment": environment, "rest_url": client.base_url},
            sys.stdout,
        )
    else:
        _print_table(
            ["communications_id", "environment", "rest_url"],
            [[comm_id, environment, client.base_url]],
            sys.stdout,
        )
    return 0


async def _rfqs_list(args: argparse.Namespace, client: KalshiRestClient) -> int:
    rfqs: list[Rfq] = [
        rfq async for rfq in client.iter_rfqs(status=args.status, market_ticker=args.market)
    ]
    if args.json:
        for rfq in rfqs:
            _print_json(rfq.model_dump(mode="python", exclude_none=True), sys.stdout)
        return 0
    rows = [
        [
            r.id,
            r.market_ticker,
            _text(r.contracts_fp),
            _text(r.target_cost_dollars),
            _text(r.status),
            _text(r.created_ts),
        ]
        for r in rfqs
    ]
    _print_table(
        ["ID", "MARKET", "CONTRACTS", "TARGET_COST", "STATUS", "CREATED"], rows, sys.stdout
    )
    print(f"{len(rfqs)} RFQ(s)")
    return 0


async def _own_quotes(client: KalshiRestClient, status: str | None) -> list[Quote]:
    return [q async for q in client.iter_quotes(user_filter="self", status=status)]


async def _quotes_list(args: argparse.Namespace, client: KalshiRestClient) -> int:
    quotes = await _own_quotes(client, args.status)
    if args.json:
        for quote in quotes:
            _print_json(quote.model_dump(mode="python", exclude_none=True), sys.stdout)
        return 0
    rows = [
        [
            q.id,
            q.rfq_id,
            q.market_ticker,
            _text(q.yes_bid_dollars),
            _text(q.no_bid_dollars),
            q.status,
            _text(q.created_ts),
        ]
        for q in quotes
    ]
    headers = ["ID", "RFQ", "MARKET", "YES_BID", "NO_BID", "STATUS", "CREATED"]
    _print_table(headers, rows, sys.stdout)
    print(f"{len(quotes)} quote(s)")
    return 0


def _confirmed_by_user(count: int) -> bool:
    if not sys.stdin.isatty():
        _fail(f"refusing to cancel {count} open quote(s) without --yes (no terminal to ask)")
        return False
    answer = input(f"Delete {count} open quote(s)? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


async def _cancel_all(args: argparse.Namespace, client: KalshiRestClient) -> int:
    quotes = await _own_quotes(client, Quote.OPEN)
    if not quotes:
        print("no open quotes")
        return 0
    if not args.yes and not _confirmed_by_user(len(quotes)):
        return 1

    limit = asyncio.Semaphore(_CANCEL_CONCURRENCY)
    gone: list[str] = []
    failures: list[str] = []

    async def cancel(quote: Quote) -> bool:
        async with limit:
            try:
                await client.delete_quote(quote.id, rfq_id=quote.rfq_id)
            except NotFoundError:
                # Accepted, executed or withdrawn meanwhile: no longer open either way.
                gone.append(quote.id)
                return False
            except KalshiError as exc:
                failures.append(f"{quote.id}: {exc}")
                return False
            return True

    results = await asyncio.gather(*(cancel(q) for q in quotes))
    cancelled = sum(results)
    print(f"cancelled {cancelled} of {len(quotes)} open quote(s)")
    if gone:
        print(f"{len(gone)} were no longer open")
    for failure in failures:
        _fail(f"could not cancel {failure}")
    # A kill switch must say whether it worked: look again for anything still open.
    remaining = await _own_quotes(client, Quote.OPEN)
    if remaining:
        _fail(f"{len(remaining)} quote(s) still open: {', '.join(q.id for q in remaining[:10])}")
        return 1
    return 1 if failures else 0
