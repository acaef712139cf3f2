"""``mmbot synthesize``: a synthetic recording of the mock exchange's flow, for research.

The mock's markets, requesters and random walks, run in simulated time rather than waited
for, and written with the daemon's own recorder: a synthetic recording has a dry-run's
columns (``fair_value`` included) but no decisions or fills (``decision`` is
``synthetic``), so replay it with ``--fill-model markout`` or ``threshold``. The same
arguments give the same rows.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mmbot.cli.ops import _fail, _quiet_default_logging
from mmbot.config import Settings

__all__ = ["register"]


def _whole(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise argparse.ArgumentTypeError(f"expected a whole number {bounds}, got {text!r}")
        return value

    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _horizons(text: str) -> tuple[int, ...]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole seconds separated by commas, e.g. 1,10,60,300, got {text!r}"
        ) from None
    if not values or any(v <= 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(
            f"expected distinct positive whole seconds, e.g. 1,10,60,300, got {text!r}"
        )
    return tuple(sorted(values))


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
) -> None:
    """Add the ``synthesize`` subcommand to the ``mmbot`` parser."""
    parser = subparsers.add_parser(
        "synthesize",
        parents=parents,
        allow_abbrev=False,
        help="write a synthetic recording of the mock exchange's flow, faster than real time",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    add = parser.add_argument
    add("--rfqs", type=_whole(0), required=True, metavar="N", help="RFQs to write")
    add("--out", type=Path, required=True, metavar="DIR", help="the recording directory")
    add("--seed", type=_whole(-(2**63)), default=0, metavar="S", help="seed (default: 0)")
    add(
        "--markets",
        type=_whole(1, 10_000),
        default=20,
        metavar="M",
        help="simulated markets (default: 20)",
    )
    add(
        "--rfq-rate",
        type=_rate,
        default=10.0,
        metavar="R",
        help="simulated RFQs per second; sets how far the markets walk between RFQs (default: 10)",
    )
    add(
        "--hvm-fraction",
        type=_fraction,
        default=0.2,
        metavar="F",
        help="share of combo (HVM) markets (default: 0.2)",
    )
    add(
        "--horizons",
        type=_horizons,
        default=(1, 10, 60, 300),
        metavar="H,H,...",
        help="markout horizons in seconds (default: 1,10,60,300)",
    )
    parser.set_defaults(func=_synthesize)


def _synthesize(args: argparse.Namespace, settings: Settings) -> int:
    """Write the recording and say how many RFQs went where, in how long."""
    _quiet_default_logging(args, settings)
    # Imported here: the research package pulls in pyarrow, which other commands never need.
    from mmbot.mock.synthetic import synthesize

    out: Path = args.out
    if out.exists() and not out.is_dir():
        _fail(f"--out {out}: not a directory")
        return 1
    if out.is_dir() and any(out.glob("*.parquet")):
        print(
            f"warning: {out} already holds *.parquet files; they are read together with "
            "these by replay",
            file=sys.stderr,
        )
    started = time.perf_counter()
    try:
        recorder = synthesize(
            out,
            rfqs=args.rfqs,
            seed=args.seed,
            markets=args.markets,
            rfq_rate=args.rfq_rate,
            hvm_fraction=args.hvm_fraction,
            horizons=args.horizons,
        )
    except OSError as exc:
        _fail(f"cannot write the recording to {out}: {exc}")
        return 1
    elapsed = time.perf_counter() - started
    stats = recorder.stats
    if stats.errors or stats.dropped:
        _fail(f"{stats.dropped} RFQs could not be written to {out} (see the log)")
        return 1
    files = "file" if stats.files == 1 else "files"
    print(
        f"wrote {stats.rows} synthetic RFQs ({args.markets} markets, seed {args.seed}, "
        f"horizons {','.join(str(h) for h in args.horizons)} s) to {out} "
        f"in {stats.files} {files}, in {elapsed:.1f} s"
    )
    sys.stdout.flush()
    return 0
