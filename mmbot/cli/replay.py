"""``mmbot replay``: strategies over recordings, side by side or over a parameter grid.

Quoting and risk settings (``quotes.*``, ``risk.*``, ``fees.*``) come from the
configuration, as for ``mmbot run``; the strategies from ``--strategy``/``--params`` pairs,
a ``--sweep`` grid over one strategy, or else the configuration's own routes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from mmbot.config import Settings
from mmbot.strategy import StrategyError, StrategyRouter

if TYPE_CHECKING:
    from mmbot.research.sweep import Job

__all__ = ["register"]


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
) -> None:
    """Add ``mmbot replay``."""
    replay = subparsers.add_parser(
        "replay",
        parents=parents,
        help="replay strategies over recordings: P&L, fills and markouts, side by side",
        description=(
            "Replay strategies over recorded RFQs through the daemon's own pricing and risk. "
            "Compare several with repeated --strategy/--params, or sweep a grid with --sweep. "
            "Writes a RESULT directory for `mmbot report`."
        ),
    )
    replay.add_argument(
        "recordings", nargs="+", metavar="RECORDING", type=Path, help="recording dirs or files"
    )
    replay.add_argument(
        "--strategy",
        action="append",
        default=[],
        metavar="NAME",
        help="a strategy to replay (repeatable; default: the configuration's routes)",
    )
    replay.add_argument(
        "--params",
        action="append",
        default=[],
        metavar="JSON",
        help="parameters of the --strategy in the same position, as a JSON object",
    )
    replay.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="NAME=START:STOP:STEP",
        help="sweep a parameter of the (one) strategy; NAME=a,b,c lists values (repeatable)",
    )
    replay.add_argument(
        "--fill-model",
        choices=("markout", "recorded", "threshold"),
        default="markout",
        help="markout: no fills; recorded: replay recorded accepts (pessimistic); "
        "threshold: accept a bid within --requester-edge of the mid (optimistic)",
    )
    replay.add_argument(
        "--requester-edge",
        default="0.02",
        metavar="DOLLARS",
        help="threshold model: what a requester gives up against the mid, a contract (0.02)",
    )
    replay.add_argument(
        "--threshold-horizon",
        type=int,
        metavar="SECONDS",
        help="threshold model: the horizon whose mid judges a bid (default: the first)",
    )
    replay.add_argument(
        "--sort",
        default="pnl",
        metavar="METRIC",
        help="sort the table by pnl, sharpe, fill_rate or markout_<h> (default pnl)",
    )
    replay.add_argument(
        "--jobs", type=int, metavar="N", help="worker processes (default: one per core)"
    )
    replay.add_argument(
        "--out",
        type=Path,
        default=Path("replay-result"),
        metavar="DIR",
        help="the RESULT directory to write (default ./replay-result)",
    )
    replay.add_argument("--json", action="store_true", help="print result.json instead of a table")
    replay.set_defaults(func=_replay)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: pyarrow loads only for the research commands.
    from mmbot.research.recording import RecordingError, load_recording
    from mmbot.research.replay import FillModel, ReplayError, flow_of
    from mmbot.research.sweep import SweepError, run_jobs, sort_key

    try:
        edge = Decimal(args.requester_edge)
    except InvalidOperation:
        return _fail(f"--requester-edge {args.requester_edge!r}: expected dollars, e.g. 0.01")
    if not edge.is_finite() or edge < 0:
        return _fail(f"--requester-edge {args.requester_edge}: expected dollars >= 0")
    if args.jobs is not None and args.jobs < 1:
        return _fail("--jobs: expected a whole number of at least 1")
    try:
        jobs = _jobs(args, settings)
    except (SweepError, StrategyError) as exc:
        return _fail(str(exc))
    except ValueError as exc:
        return _fail(str(exc))
    started = time.perf_counter()
    try:
        recording = load_recording(args.recordings)
    except RecordingError as exc:
        return _fail(str(exc))
    for path, why in recording.skipped:
        print(f"warning: skipped {path}: {why}", file=sys.stderr)
    model = FillModel(name=args.fill_model, requester_edge=edge, horizon=args.threshold_horizon)
    try:
        key = sort_key(args.sort, recording.horizons)
    except SweepError as exc:
        return _fail(str(exc))
    if model.horizon is not None and model.horizon not in recording.horizons:
        return _fail(
            f"--threshold-horizon {model.horizon}: recorded horizons are "
            + ", ".join(str(h) for h in recording.horizons)
        )
    flow = flow_of(recording)
    try:
        document = run_jobs(
            flow,
            jobs,
            settings,
            model,
            args.out,
            config_routes=_config_routes,
            recordings=[str(p) for p in args.recordings],
            processes=args.jobs,
        )
    except ReplayError as exc:
        return _fail(str(exc))
    elapsed = time.perf_counter() - started
    document["strategies"].sort(key=key)
    if args.json:
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(_table(document, recording.horizons))
    print(
        f"{len(flow.rows)} RFQs x {len(jobs)} strategies, fill model {model.name}, "
        f"in {elapsed:.1f} s; result in {args.out} (mmbot report {args.out})"
    )
    return 0


def _jobs(args: argparse.Namespace, settings: Settings) -> list[Job]:
    """The replays asked for; raises SweepError, StrategyError or ValueError before any runs."""
    from mmbot.research.replay import params_label
    from mmbot.research.sweep import Job, parse_sweep, sweep_jobs
    from mmbot.strategy import build_strategy

    strategies: list[str] = args.strategy
    raw_params: list[str] = args.params
    if len(raw_params) > len(strategies):
        raise ValueError("--params without a --strategy before it")
    params: list[dict[str, Any]] = []
    for text in raw_params:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"--params {text!r}: not JSON ({exc})") from exc
        if not isinstance(value, dict):
            raise ValueError(f"--params {text!r}: expected a JSON object")
        params.append(value)
    params += [{} for _ in range(len(strategies) - len(params))]
    sweeps = parse_sweep(args.sweep)
    if sweeps:
        if len(strategies) > 1:
            raise ValueError("--sweep varies one strategy; give at most one --strategy")
        name = strategies[0] if strategies else settings.strategies.default
        base = params[0] if strategies else dict(settings.strategies.params)
        return list(sweep_jobs(name, base, sweeps))
    if not strategies:
        return [Job("config", None, {})]
    # Built now, so a bad name or parameter stops everything before any replay runs.
    jobs = []
    labels: set[str] = set()
    for name, values in zip(strategies, params, strict=True):
        build_strategy(name, values)
        label = params_label(name, values)
        while label in labels:
            label += "'"
        labels.add(label)
        jobs.append(Job(label, name, values))
    return jobs


def _config_routes(settings: Settings) -> StrategyRouter:
    """The configuration's routes, as ``mmbot run --dry-run`` would build them."""
    from mmbot.cli.run import build_router

    return build_router(settings, dry_run=True)


def _table(document: dict[str, Any], horizons: Sequence[int]) -> str:
    shown = [h for h in horizons][:3]
    header = [
        "strategy",
        "quoted",
        "fills",
        "fill rate",
        "realised $",
        "MtM $",
        "total $",
        "fees $",
    ]
    header += ["sharpe"] + [f"markout {h}s" for h in shown]
    lines = [header]
    for entry in document["strategies"]:
        s = entry["summary"]
        row = [
            entry["label"],
            str(s["quoted"]),
            str(s["fills"]),
            f"{Decimal(s['fill_rate']):.3f}",
            f"{Decimal(s['realized_pnl']):.2f}",
            f"{Decimal(s['mtm_pnl']):.2f}",
            f"{Decimal(s['total_pnl']):.2f}",
            f"{Decimal(s['fees']):.2f}",
            s["sharpe_daily"] or "-",
        ]
        for h in shown:
            value = s["markout"].get(str(h))
            row.append(f"{Decimal(value):.4f}" if value is not None else "-")
        lines.append(row)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    out = []
    for number, row in enumerate(lines):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells))
        if number == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
