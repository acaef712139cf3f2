"""Running replays: several strategies or a parameter grid, in parallel, into a RESULT directory.

Each strategy or parameter set (a *label*) is one independent replay, so a grid spreads
over processes; the recording is read once, before the workers fork, and shared by them.
Each worker writes its own rows to ``quotes.parquet/part-NNNN.parquet`` (a directory that
pyarrow, polars and DuckDB read as one table) and returns only its summary, so a large
grid never gathers every row in one process.

A ``--sweep`` names a parameter the strategy declares (checked before anything runs) and
its values: ``name=start:stop:step`` (stop included) or ``name=a,b,c``.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from mmbot.config import Settings
from mmbot.research import schema
from mmbot.research.replay import FillModel, Flow, LabelResult, params_label, replay
from mmbot.strategy import Route, StrategyError, StrategyRouter, build_strategy, load_strategy_class

__all__ = [
    "METRICS",
    "Job",
    "SweepError",
    "parse_sweep",
    "run_jobs",
    "sort_key",
    "sweep_jobs",
]

RESULT_FORMAT: Final = "mmbot-replay-result"
RESULT_VERSION: Final = 1
#: What a sweep's table can be sorted by (markout_<h> for any recorded horizon).
METRICS: Final = ("pnl", "sharpe", "fill_rate", "markout_<h>")


class SweepError(ValueError):
    """A sweep or strategy specification that cannot run; the message says why."""


@dataclass(frozen=True)
class Job:
    """One replay to run: a label, and the strategy routes it prices with."""

    label: str
    strategy: str | None  # None: the routes of the configuration
    params: Mapping[str, Any]


def _values(name: str, text: str) -> list[Decimal | str]:
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise SweepError(f"--sweep {name}={text}: a range is start:stop:step")
        try:
            start, stop, step = (Decimal(p) for p in parts)
        except InvalidOperation:
            raise SweepError(
                f"--sweep {name}={text}: start, stop and step must be numbers"
            ) from None
        if step <= 0 or stop < start:
            raise SweepError(f"--sweep {name}={text}: needs step > 0 and stop >= start")
        values: list[Decimal | str] = []
        value = start
        while value <= stop:
            values.append(value)
            value += step
        if len(values) > 1000:
            raise SweepError(f"--sweep {name}={text}: {len(values)} values; at most 1000")
        return values
    return [v.strip() for v in text.split(",") if v.strip()]


def parse_sweep(specs: Sequence[str]) -> list[tuple[str, list[Decimal | str]]]:
    """``name=start:stop:step`` or ``name=a,b,c`` specifications, parsed."""
    parsed: list[tuple[str, list[Decimal | str]]] = []
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise SweepError(f"--sweep {spec!r}: expected name=start:stop:step or name=a,b,c")
        if any(name == other for other, _ in parsed):
            raise SweepError(f"--sweep names {name} twice")
        values = _values(name, text.strip())
        if not values:
            raise SweepError(f"--sweep {spec!r}: no values")
        parsed.append((name, values))
    return parsed


def sweep_jobs(
    strategy: str, base: Mapping[str, Any], sweeps: Sequence[tuple[str, Sequence[Any]]]
) -> list[Job]:
    """One job per point of the grid; a parameter the strategy does not declare is an error."""
    try:
        cls = load_strategy_class(strategy)
    except StrategyError as exc:
        raise SweepError(str(exc)) from exc
    params_model = getattr(cls, "Params", None)
    declared = tuple(getattr(params_model, "model_fields", {}) or ())
    for name, _ in sweeps:
        if name not in declared:
            known = ", ".join(declared) or "none"
            raise SweepError(
                f"--sweep {name}: strategy {strategy} declares no parameter {name} "
                f"(its parameters: {known})"
            )
    jobs: list[Job] = []
    names = [name for name, _ in sweeps]
    for point in itertools.product(*(values for _, values in sweeps)):
        params = {**base, **{n: str(v) for n, v in zip(names, point, strict=True)}}
        swept = {n: str(v) for n, v in zip(names, point, strict=True)}
        jobs.append(Job(params_label(strategy, swept) if swept else strategy, strategy, params))
    return jobs


#: Builds the configuration's routes (the command line's builder, which names the key at
#: fault in a bad route).
RouterFactory = Callable[[Settings], StrategyRouter]


def build_job_router(
    job: Job, settings: Settings, config_routes: RouterFactory | None
) -> StrategyRouter:
    """The routes a job prices with: its one strategy for every market, or the config's."""
    if job.strategy is None:
        if config_routes is None:
            raise SweepError(f"{job.label}: no strategy, and no way to build the config's routes")
        return config_routes(settings)
    return StrategyRouter(
        [Route(patterns=("*",), strategy=build_strategy(job.strategy, job.params))]
    )


# Set in the parent before the workers fork, so they share it instead of each reading it.
_FLOW: Flow | None = None
_SETTINGS: Settings | None = None
_MODEL: FillModel | None = None
_OUT: Path | None = None
_ROUTES: RouterFactory | None = None


def _work(task: tuple[int, Job]) -> dict[str, Any]:
    index, job = task
    if _FLOW is None or _SETTINGS is None or _MODEL is None or _OUT is None:
        raise RuntimeError("run_jobs sets the replay's inputs before any worker starts")
    router = build_job_router(job, _SETTINGS, _ROUTES)
    result = replay(_FLOW, job.label, router, _SETTINGS, _MODEL)
    _write_rows(result, _OUT / "quotes.parquet" / f"part-{index:04d}.parquet", _FLOW)
    return {
        "label": job.label,
        "strategy": job.strategy or "config",
        "params": dict(job.params),
        "summary": result.summary,
    }


def _write_rows(result: LabelResult, path: Path, flow: Flow) -> None:
    columns = result.columns
    dec = schema.DECIMAL
    types: dict[str, pa.DataType] = {
        "label": pa.string(),
        "ts": pa.timestamp("us", tz="UTC"),
        "rfq_id": pa.string(),
        "market": pa.string(),
        "decision": pa.string(),
        "reason": pa.string(),
        "filled_side": pa.string(),
    }
    order = ["label", "ts", "rfq_id", "market", "rfq_contracts", "decision", "reason"]
    order += ["yes_bid", "no_bid", "mid", "filled_side", "filled_contracts", "fill_price", "fee"]
    order += ["realized_pnl", "mtm_pnl", "position"]
    order += [f"markout_{h}s" for h in flow.horizons]
    order += [f"fill_markout_{h}s" for h in flow.horizons]
    if flow.has_fair_value:
        order += ["fair_value", "fair_markout"]
    arrays = []
    for name in order:
        kind = types.get(name, dec)
        values = columns[name]
        if kind is dec:
            values = [schema.exact(v) for v in values]
        arrays.append(pa.array(values, type=kind))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_arrays(arrays, names=order), path, compression="zstd")


def run_jobs(
    flow: Flow,
    jobs: Sequence[Job],
    settings: Settings,
    model: FillModel,
    out: Path,
    *,
    config_routes: RouterFactory | None = None,
    recordings: Sequence[str],
    processes: int | None = None,
) -> dict[str, Any]:
    """Replay every job (in parallel when there are several) and write the RESULT directory.

    ``config_routes`` builds the configuration's routes, for a job with no strategy of its own.
    """
    global _FLOW, _SETTINGS, _MODEL, _OUT, _ROUTES
    out.mkdir(parents=True, exist_ok=True)
    rows_dir = out / "quotes.parquet"
    if rows_dir.exists():
        for old in rows_dir.glob("part-*.parquet"):
            old.unlink()
    _FLOW, _SETTINGS, _MODEL, _OUT, _ROUTES = flow, settings, model, out, config_routes
    # The recording's rows out of the cyclic collector's sight while replays run: it would
    # otherwise scan them again and again, and in forked workers touch (so copy) their pages.
    gc.freeze()
    try:
        tasks = list(enumerate(jobs))
        workers = min(len(tasks), processes or os.cpu_count() or 1)
        if workers <= 1:
            results = [_work(task) for task in tasks]
        else:
            # fork: the workers share the recording already in memory.
            context = multiprocessing.get_context("fork")
            with context.Pool(workers) as pool:
                results = pool.map(_work, tasks, chunksize=1)
    finally:
        gc.unfreeze()
        _FLOW = _SETTINGS = _MODEL = _OUT = _ROUTES = None
    document: dict[str, Any] = {
        "format": RESULT_FORMAT,
        "version": RESULT_VERSION,
        "fill_model": model.name,
        "requester_edge": str(model.requester_edge) if model.name == "threshold" else None,
        "horizons": list(flow.horizons),
        "recordings": list(recordings),
        "created": datetime.now(UTC).isoformat(),
        "rfqs": len(flow.rows),
        "has_fair_value": flow.has_fair_value,
        "strategies": results,
    }
    (out / "result.json").write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return document


def sort_key(metric: str, horizons: Sequence[int]) -> Any:
    """A key that sorts a result's strategies best first by ``metric``."""
    if metric == "pnl":
        field, sub = "total_pnl", None
    elif metric == "sharpe":
        field, sub = "sharpe_daily", None
    elif metric == "fill_rate":
        field, sub = "fill_rate", None
    elif metric.startswith("markout_"):
        horizon = metric.removeprefix("markout_").removesuffix("s")
        if not horizon.isdigit() or int(horizon) not in horizons:
            raise SweepError(
                f"--sort {metric}: recorded horizons are "
                + ", ".join(f"markout_{h}" for h in horizons)
            )
        field, sub = "markout", horizon
    else:
        raise SweepError(f"--sort {metric}: expected one of {', '.join(METRICS)}")

    def key(entry: Mapping[str, Any]) -> tuple[int, Decimal]:
        summary = entry["summary"]
        value = summary[field][sub] if sub is not None else summary[field]
        if value is None:
            return (1, Decimal(0))
        return (0, -Decimal(str(value)))

    return key
