"""``mmbot run``: the market maker, against the configured exchange or a dry-run mock.

``--dry-run`` starts the mock exchange in-process on loopback, with simulated
requesters (``dry_run.*`` settings) and an ephemeral key that exists only in
memory, and runs the daemon against it: nothing reaches Kalshi and no account is
needed. Its journal is kept, in ``journal.path`` when that is set and otherwise in
``./mmbot-dry-run/RUN_ID.sqlite`` (one file per run, under the working directory); the
summary at exit says where. Both modes print a one-line status every
``run.status_interval_seconds`` and a summary at exit (with JSON logs: ``status`` and
``run_summary`` events); ``--duration`` stops either by itself. ``--shadow``
(``run.shadow``) prices every RFQ as live but sends no write request: the REST client
is read-only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import structlog
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import BaseModel

from mmbot import __version__, eventloop
from mmbot.buildinfo import build_commit
from mmbot.cli.argtypes import positive_seconds
from mmbot.clients import (
    auth_refused_message,
    build_communications_stream,
    build_orderbook_feed,
    build_rest_client,
    build_signer,
    describe_exchange,
)
from mmbot.config import (
    REDACTED,
    ConfigError,
    ConfigProblem,
    RouteSettings,
    Settings,
    redacted_dump,
)
from mmbot.daemon import build_engine
from mmbot.engine import Engine, StartupRefused
from mmbot.journal import Journal, JournalError, Summary
from mmbot.kalshi.auth import Signer
from mmbot.kalshi.errors import AuthError, KalshiError
from mmbot.logs import (
    bind_process_fields,
    configured_format,
    flush_output,
    json_event_line,
    output_writer,
)
from mmbot.observability import Metrics, MetricsServer
from mmbot.strategy import Route, StrategyError, StrategyRouter, build_strategy

if TYPE_CHECKING:
    # Only for annotations: pyarrow loads when a run records, the mock on a dry-run.
    from mmbot.mock.sim import SimMarket
    from mmbot.research.recorder import Recorder

__all__ = ["build_router", "describe_routes", "register", "run_daemon", "run_record"]

_LOGGER = "mmbot.run"
#: Where a dry-run without journal.path keeps its journals, relative to the working directory.
DRY_RUN_JOURNAL_DIR = Path("mmbot-dry-run")
log = structlog.get_logger(_LOGGER)


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
) -> None:
    """Add ``mmbot run``."""
    run = subparsers.add_parser(
        "run",
        parents=parents,
        help="run the market maker (--dry-run: against an embedded mock exchange)",
        description="Run the market maker until SIGTERM/SIGINT or --duration.",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="run against an in-process mock exchange with simulated requesters; the "
        "journal is kept in journal.path if set, else in ./mmbot-dry-run/RUN_ID.sqlite",
    )
    run.add_argument(
        "--duration",
        type=positive_seconds,
        metavar="SECONDS",
        help="stop by itself after this many seconds",
    )
    run.add_argument(
        "--adopt-orphans",
        action="store_true",
        help="start even when the account holds open or accepted quotes this journal did not "
        "create (another mmbot on the same key, or a lost journal), and withdraw them",
    )
    run.add_argument(
        "--shadow",
        action="store_true",
        help="shadow mode (sets run.shadow): price every RFQ on the live feed and record what "
        "would have been quoted, sending no write request of any kind; combines with --dry-run",
    )
    run.set_defaults(func=_run_command)


def _run_command(args: argparse.Namespace, settings: Settings) -> int:
    sources = getattr(args, "config_sources", None) or {}
    if getattr(args, "shadow", False):
        # The flag is the setting, so everything downstream reads run.shadow alone.
        run_settings = settings.run.model_copy(update={"shadow": True})
        settings = settings.model_copy(update={"run": run_settings})
        sources = {**sources, "run.shadow": "--shadow flag"}
    # Bound here, not only in run_daemon: the event loop's choice is logged before it runs.
    run_id = _bind_run_fields()
    # Run here rather than returned as a coroutine for the CLI's asyncio.run: the loop is
    # a setting (run.event_loop), and a refused one is a ConfigError the CLI reports.
    return eventloop.run(
        lambda: run_daemon(
            settings,
            dry_run=args.dry_run,
            duration=args.duration,
            sources=sources,
            adopt_orphans=args.adopt_orphans,
            run_id=run_id,
        ),
        settings.run.event_loop,
        source=sources.get("run.event_loop"),
    )


def kill_switch_problem(settings: Settings, sources: Mapping[str, str]) -> ConfigProblem | None:
    """A kill-switch file nobody could create (its directory is missing), or None."""
    path = settings.risk.kill_switch_file
    if path is None or path.parent.is_dir():
        return None
    # The daemon only looks for the file; without its directory `touch` fails at the
    # moment the switch is needed, so this is found now instead.
    why = "is not a directory" if path.parent.exists() else "does not exist"
    return ConfigProblem(
        keys=("risk.kill_switch_file",),
        expected="a file in an existing directory",
        got=repr(str(path)),
        note=f"directory {path.parent} {why}",
        sources=(sources.get("risk.kill_switch_file"),),
    )


def shadow_records(settings: Settings, sources: Mapping[str, str]) -> Settings:
    """The settings with recording on in shadow mode, unless recording.enabled was set.

    A shadow run exists to record what it would have quoted and how that marked out; one
    that records nothing leaves only journal rows. Set ``recording.enabled = false`` to
    shadow without recording.
    """
    if not settings.run.shadow or settings.recording.enabled:
        return settings
    if sources.get("recording.enabled", "default") != "default":
        return settings
    recording = settings.recording.model_copy(update={"enabled": True})
    return settings.model_copy(update={"recording": recording})


def recording_problem(settings: Settings, sources: Mapping[str, str]) -> ConfigProblem | None:
    """A research recording directory that cannot be created or written, or None."""
    recording = settings.recording
    if not recording.enabled:
        return None
    path = recording.path
    # The nearest existing ancestor decides: the recorder creates what is missing below it.
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return None
    why = (
        f"{existing} is not a directory"
        if not existing.is_dir()
        else f"{existing} is not writable by this user"
    )
    return ConfigProblem(
        keys=("recording.path",),
        expected="a directory that exists or can be created, writable",
        got=repr(str(path)),
        note=why,
        sources=(sources.get("recording.path"),),
    )


def _bind_run_fields(run_id: str | None = None) -> str:
    """Put ``run_id`` (a new one if None), version and pid on every later log line; the id."""
    # The journal's own format (UTC start time, then random), so log lines and journal rows
    # of one run share the id they are found by.
    run_id = run_id or f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
    # Process-wide, not contextvars: every thread (the journal writer) and every library's
    # stdlib logger (aiohttp, websockets) gets the fields too; see bind_process_fields.
    bind_process_fields(run_id=run_id, version=__version__, pid=os.getpid())
    return run_id


def build_router(settings: Settings, *, dry_run: bool = False) -> StrategyRouter:
    """Build the strategy routes, or raise ConfigError naming the route at fault.

    The default strategy is built even when no route uses it: check-config (which calls
    this too) and every run then refuse a bad default alike, not only a dry-run that
    falls back to it.
    """
    config = settings.strategies
    routes_config = list(config.routes)
    default_keys = ("strategies.default", "strategies.params")
    implicit = not routes_config and dry_run
    if implicit:
        # A dry-run with no routes would quote nothing; quote everything with the default.
        routes_config = [RouteSettings(match=["*"])]
    routes: list[Route] = []
    problems: list[ConfigProblem] = []
    if not any(route.strategy is None for route in routes_config):
        try:
            build_strategy(config.default, config.params)
        except StrategyError as exc:
            problems.append(_strategy_problem(default_keys, exc))
    for index, route in enumerate(routes_config):
        ref = route.strategy or config.default
        params = {**config.params, **route.params} if route.strategy is None else route.params
        try:
            routes.append(Route(patterns=tuple(route.match), strategy=build_strategy(ref, params)))
        except StrategyError as exc:
            keys = default_keys if implicit else (f"strategies.routes[{index}]",)
            problems.append(_strategy_problem(keys, exc))
    if problems:
        raise ConfigError(problems)
    return StrategyRouter(routes)


def _strategy_problem(keys: tuple[str, ...], exc: StrategyError) -> ConfigProblem:
    """A strategy that cannot be built, as one configuration problem on one line."""
    # One line per problem: the CLI prints each problem on a single line.
    first, *rest = str(exc).splitlines()
    note = "; ".join([first, *(line.strip() for line in rest)])
    return ConfigProblem(keys=keys, note=note)


def describe_routes(router: StrategyRouter) -> list[dict[str, Any]]:
    """Each route's patterns, strategy class and resolved parameters, as plain JSON values."""
    described = []
    for route in router.routes:
        strategy = route.strategy
        cls = type(strategy)
        params = strategy.params
        described.append(
            {
                "match": list(route.patterns),
                "strategy": strategy.name,
                "class": f"{cls.__module__}:{cls.__qualname__}",
                # mode="json": Decimals as exact strings, never floats.
                "params": (
                    params.model_dump(mode="json") if isinstance(params, BaseModel) else None
                ),
            }
        )
    return described


def run_record(
    settings: Settings, router: StrategyRouter, dry_run: bool, journal_path: Path
) -> dict[str, Any]:
    """What tells one run from another, for its ``run_started`` row (secrets redacted)."""
    config = redacted_dump(settings)
    kalshi = config.get("kalshi", {})
    # The key id and key text are already redacted; where the key lives is not to be
    # recorded either, since the journal is shared more widely than the key's host.
    for key in ("key_id", "private_key", "private_key_path"):
        if kalshi.get(key) is not None:
            kalshi[key] = REDACTED
    config.setdefault("journal", {})["path"] = str(journal_path)
    return {
        "mode": "dry-run" if dry_run else "live",
        "version": __version__,
        "commit": build_commit(),
        # Only a dry-run is simulated; a live run has no seed to reproduce it by.
        "seed": settings.dry_run.seed if dry_run else None,
        "strategies": describe_routes(router),
        "config": config,
    }


def _complain(line: str) -> None:
    """Write one line to stderr through the same queue as the logs, in order with them."""
    # print() to stderr from here interleaved with the writer thread's log lines (one could
    # land in the middle of the other), and would block on a stderr nobody reads.
    output_writer(sys.stderr).write(line + "\n")


def _left_open_line(count: int) -> str:
    """The one line a run that could not withdraw everything ends with."""
    if count:
        return (
            f"error: {count} quote(s) of ours were still open on the exchange at exit; "
            "withdraw them with: mmbot quotes cancel-all"
        )
    return (
        "error: the exchange could not be checked for quotes left open at exit; "
        "check with: mmbot quotes list"
    )


def _summary_fields(summary: Summary) -> dict[str, Any]:
    """The journal's summary of a run as fields of the ``run_summary`` event."""
    out: dict[str, Any] = {}
    for item in fields(summary):
        value = getattr(summary, item.name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[item.name] = value
    return out


@dataclass
class _Target:
    settings: Settings
    signer: Signer
    journal_path: Path
    label: str
    #: The mock's hidden fair value of a market (dry-run only), for the research recording.
    fair_value: Callable[[str], Decimal | None] | None = None


@contextlib.asynccontextmanager
async def _target(
    settings: Settings, *, dry_run: bool, sources: dict[str, str], run_id: str
) -> AsyncIterator[_Target]:
    """The exchange to trade on: the configured one, or a mock started for a dry-run."""
    if not dry_run:
        label = f"live on {describe_exchange(settings.kalshi)}"
        yield _Target(settings, build_signer(settings.kalshi), settings.journal.path, label)
        return
    # Imported here: the live daemon never needs the mock (or aiohttp) loaded.
    from mmbot.mock.server import MockConfig, MockExchange

    dry = settings.dry_run
    config = MockConfig(
        seed=dry.seed,
        markets=dry.markets,
        rfq_rate=dry.rfq_rate,
        hvm_fraction=dry.hvm_fraction,
        time_scale=dry.time_scale,
    )
    key = ed25519.Ed25519PrivateKey.generate()
    key_id = f"dry-run-{uuid.uuid4()}"
    async with MockExchange(config) as mock:
        mock.register_key(key_id, key.public_key())
        urls = {"rest_url": mock.rest_url, "ws_url": mock.ws_url}
        kalshi = settings.kalshi.model_copy(update=urls)
        # A dry-run must not write into the production journal by accident: unless
        # journal.path is set explicitly, it journals into a file of its own, which it keeps.
        explicit = sources.get("journal.path", "default") != "default"
        journal_path = settings.journal.path if explicit else dry_run_journal_path(run_id)
        yield _Target(
            settings.model_copy(update={"kalshi": kalshi}),
            Signer(key_id, key),
            journal_path,
            f"dry-run against the mock exchange at {mock.rest_url}",
            _fair_value_of(mock.exchange.markets),
        )


def _fair_value_of(markets: Mapping[str, SimMarket]) -> Callable[[str], Decimal | None]:
    """Reads the mock's hidden fair value of a market, for a dry-run's recording."""

    def fair_value(ticker: str) -> Decimal | None:
        market = markets.get(ticker)
        return market.fair() if market is not None else None

    return fair_value


def _recorder(
    settings: Settings, router: StrategyRouter, dry_run: bool, target: _Target, run_id: str
) -> Recorder | None:
    """The research recorder the settings ask for, or None."""
    recording = settings.recording
    if not recording.enabled:
        return None
    from mmbot.research.recorder import Recorder

    run = {"run_id": run_id, **run_record(settings, router, dry_run, target.journal_path)}
    mode = "shadow" if settings.run.shadow else str(run["mode"])
    run["mode"] = mode
    return Recorder(
        recording.path,
        horizons=recording.horizons_seconds,
        run=run,
        mode=mode,
        rotate_seconds=recording.rotate_seconds,
        fair_value=target.fair_value,
    )


async def _run_recorded(
    engine: Engine, recorder: Recorder, stop: asyncio.Event, metrics: Metrics
) -> int:
    """Run the engine with ``recorder`` sampling markouts beside it; close it after."""
    recorder.attach(engine.market_data)
    recorder.start()
    metrics.bind_recording(recorder.stats)
    sampler = asyncio.create_task(recorder.run(), name="recording")
    try:
        return await engine.run(stop)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await recorder.close()


def dry_run_journal_path(run_id: str) -> Path:
    """Where a dry-run keeps its journal when journal.path is not set: one file per run."""
    # One file per run, not one shared file: a dry-run rebuilds today's P&L from its journal,
    # so a shared file would carry earlier dry-runs' losses into the next one's risk limits
    # (the same seed would not give the same run), and two dry-runs could not run at once.
    return (DRY_RUN_JOURNAL_DIR / f"{run_id}.sqlite").absolute()


async def run_daemon(
    settings: Settings,
    *,
    dry_run: bool = False,
    duration: float | None = None,
    sources: dict[str, str] | None = None,
    stop: asyncio.Event | None = None,
    out: TextIO | None = None,
    adopt_orphans: bool = False,
    run_id: str | None = None,
) -> int:
    """Run the daemon until a signal, ``duration`` or ``stop``; return the exit code.

    Non-zero when start-up failed, and also when the run ended with quotes the exchange did
    not confirm withdrawn or with journal rows that could not be written: each says so in
    one ``error:`` line. ``run_id`` (new if None) names the run in the journal and on every
    log line.
    """
    run_id = _bind_run_fields(run_id)
    settings = shadow_records(settings, sources or {})
    stream_out = out if out is not None else sys.stdout
    stop = stop or asyncio.Event()
    try:
        router = build_router(settings, dry_run=dry_run)
        # A kill switch that cannot be engaged is found before the first quote, not when
        # an operator reaches for it: fail closed.
        unusable = [
            problem
            for problem in (
                kill_switch_problem(settings, sources or {}),
                recording_problem(settings, sources or {}),
            )
            if problem is not None
        ]
        if unusable:
            raise ConfigError(unusable)
    except ConfigError as exc:
        _complain("error: invalid configuration")
        for problem in exc.problems:
            _complain(f"  {problem}")
        await asyncio.to_thread(flush_output)
        return 1
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    timer = loop.call_later(duration, stop.set) if duration else None

    status_out = output_writer(stream_out)

    def say(line: str) -> None:
        # Queued, not printed: a stdout nobody reads must not stall the event loop.
        status_out.write(line + "\n")

    def announce(event: str, text: str, **fields: str) -> None:
        # With JSON logs every stdout line is an event, so a pipeline reads one format.
        if configured_format() == "json":
            say(json_event_line(event, logger=_LOGGER, **fields))
        else:
            say(text)

    metrics = Metrics()
    server = MetricsServer(metrics, settings.metrics) if settings.metrics.enabled else None
    try:
        if server is not None:
            # Up before anything else, so /healthz answers (and /readyz says "starting")
            # while markets load and the first reconciliation runs.
            await server.start()
            # With JSON logs the server's own metrics_listening event says this already.
            if configured_format() != "json":
                say(f"mmbot: metrics on {server.url}/metrics, health on /healthz and /readyz")
        async with _target(
            settings, dry_run=dry_run, sources=sources or {}, run_id=run_id
        ) as target:
            cfg = target.settings
            journal = Journal(
                target.journal_path, synchronous=cfg.journal.synchronous, run_id=run_id
            )
            journal.add_listener(metrics.on_journal_record)
            try:
                journal.start(detail=run_record(cfg, router, dry_run, target.journal_path))
            except JournalError as exc:
                # Already one line naming the path and the reason (or the pid holding it).
                _complain(f"error: {exc}")
                return 1
            try:
                async with build_rest_client(
                    cfg.kalshi,
                    target.signer,
                    on_response=metrics.on_rest_response,
                    max_queued_quotes=cfg.quotes.max_queued,
                    # Shadow mode's guarantee: the client itself refuses every write.
                    read_only=cfg.run.shadow,
                ) as rest:
                    recorder = _recorder(cfg, router, dry_run, target, run_id)
                    if recorder is not None:
                        journal.add_row_listener(recorder.on_row)
                    engine = build_engine(
                        cfg,
                        rest=rest,
                        stream=build_communications_stream(cfg.kalshi, target.signer),
                        feed=build_orderbook_feed(
                            cfg.kalshi,
                            target.signer,
                            linger_seconds=cfg.marketdata.stream_linger_seconds,
                        )
                        if cfg.marketdata.stream
                        else None,
                        journal=journal,
                        router=router,
                        metrics=metrics,
                        status=say,
                        adopt_orphans=adopt_orphans,
                        observer=recorder,
                    )
                    announce(
                        "daemon_target",
                        f"mmbot: {target.label}; journal {target.journal_path}",
                        target=target.label,
                        journal=str(target.journal_path),
                    )
                    if cfg.run.shadow:
                        announce(
                            "shadow_mode",
                            "mmbot: shadow mode: every RFQ is priced, no write request is sent",
                        )
                    if recorder is None:
                        code = await engine.run(stop)
                    else:
                        code = await _run_recorded(engine, recorder, stop, metrics)
                        announce(
                            "recording_kept",
                            f"mmbot: recording in {recorder.directory} "
                            f"({recorder.stats.rows} RFQs)",
                            path=str(recorder.directory),
                        )
                    # A status event (final=true) with JSON logs, today's status line on a
                    # terminal.
                    engine.report_status(final=True)
                    if not engine.cleanup_verified:
                        _complain(_left_open_line(engine.left_open))
            finally:
                await journal.aclose()
            if journal.lost:
                _complain(
                    f"error: {journal.lost} journal row(s) could not be written to "
                    f"{target.journal_path}; they are in the log as journal_record_lost"
                )
                code = code or 1
            json_logs = configured_format() == "json"
            try:
                summary = journal.summary(journal.run_id)
            except JournalError as exc:
                # The run is over and its outcome already said; a summary that cannot be
                # read (the file was lost) is not a second error.
                if json_logs:
                    line = json_event_line(
                        "run_summary_unavailable", logger=_LOGGER, level="warning", error=str(exc)
                    )
                    say(line)
                else:
                    say(f"mmbot: no summary: {exc}")
            else:
                # JSON logs get one run_summary event, so a pipeline reads a single format.
                if json_logs:
                    fields = _summary_fields(summary)
                    fields["journal"] = str(target.journal_path)
                    say(json_event_line("run_summary", logger=_LOGGER, exit_code=code, **fields))
                else:
                    say(journal.format_summary(summary))
                    if dry_run:
                        say(f"mmbot: journal kept at {target.journal_path}")
            return code
    except (StartupRefused, JournalError) as exc:
        # A journal that cannot be read at start-up (today's P&L, our quotes' records)
        # stops the start like one that cannot be opened: one line, no traceback.
        _complain(f"error: {exc}")
        return 1
    except ConfigError as exc:
        _complain("error: invalid configuration")
        for problem in exc.problems:
            _complain(f"  {problem}")
        return 1
    except AuthError as exc:
        _complain(f"error: {auth_refused_message(exc, settings.kalshi)}")
        return 1
    except KalshiError as exc:
        # Start-up needs the exchange (identity, markets, reconciliation): say why it failed.
        _complain(f"error: cannot start against {settings.kalshi.rest_url}: {exc}")
        return 1
    finally:
        if server is not None:
            await server.stop()
        if timer is not None:
            timer.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)
        # The summary and the last log lines get a bounded time to go out, waited for off
        # the loop; a consumer that never reads costs at most that.
        await asyncio.to_thread(flush_output)
