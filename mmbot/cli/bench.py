"""``mmbot bench``: the latency, throughput and memory benchmark (see benchmarks/README.md).

It runs a mock exchange process, the daemon, a naive baseline quoter and a lean quoter
against it, and prints a table of RFQ-to-quote and accept-to-confirm percentiles, CPU per
1,000 RFQs, peak RSS, 429 and shed counts with the daemon/baseline and daemon/lean ratios;
it also writes JSON and a latency CDF plot. ``--quick`` runs short phases and no soak
(under two minutes).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from mmbot.eventloop import EventLoopChoice

if TYPE_CHECKING:
    from mmbot.config import Settings

__all__ = ["main", "register"]


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--quick", action="store_true", help="short phases, no soak (under two minutes)")
    add(
        "--json-out",
        type=Path,
        metavar="PATH",
        help="where to write the figures as JSON (default: benchmarks/results/bench[-quick].json)",
    )
    add(
        "--plot",
        type=Path,
        metavar="PATH",
        help="where to draw the latency CDF PNG (default: next to the JSON)",
    )
    add("--log-dir", type=Path, metavar="DIR", help="keep the processes' stdout/stderr here")
    add("--warmup-seconds", type=_positive, metavar="S", help="warm-up per phase (excluded)")
    add("--measure-seconds", type=_positive, metavar="S", help="measured window per phase")
    add("--low-rate", type=_positive, metavar="R", help="RFQ/s of the latency phases (100)")
    add("--high-rate", type=_positive, metavar="R", help="RFQ/s of the throttled phases (1000)")
    add(
        "--budget-tokens-per-second",
        type=_positive,
        metavar="T",
        help="write budget of the throttled phases, tokens/s (200 = 100 quotes/s)",
    )
    add("--budget-capacity", type=_positive, metavar="T", help="its bucket capacity (200)")
    add("--markets", type=int, metavar="N", help="markets the RFQs are spread over (100)")
    add("--accept-fraction", type=float, metavar="F", help="share of quotes accepted (0.1)")
    add(
        "--rfq-lifetime-seconds",
        type=_positive,
        metavar="S",
        help="seconds before a requester deletes its RFQ (3)",
    )
    add("--no-baseline-high", action="store_true", help="skip the baseline at the high rate")
    add("--no-lean-high", action="store_true", help="skip the lean quoter at the high rate")
    add(
        "--daemon-event-loop",
        choices=get_args(EventLoopChoice),
        help="run.event_loop in the daemon's config (default: not written, so auto)",
    )
    add(
        "--daemon-recording",
        action="store_true",
        help="the daemon records its run for research (recording.enabled) while measured",
    )
    add(
        "--daemon-md-stream",
        choices=("on", "off"),
        help="marketdata.stream in the daemon's config (default: not written, so on)",
    )
    add(
        "--daemon-last-look",
        choices=("on", "off"),
        help="quotes.last_look in the daemon's config (default: not written, so on)",
    )
    add(
        "--md-updates-per-second",
        type=float,
        metavar="N",
        help="order-book changes/s the exchange publishes during daemon phases (0)",
    )
    add(
        "--lean-event-loop",
        choices=get_args(EventLoopChoice),
        help="event loop of the lean quoter (auto)",
    )
    add("--no-soak", action="store_true", help="skip the soak (full run)")
    add(
        "--no-pin",
        action="store_true",
        help="do not pin the exchange and the quoter to separate CPUs",
    )
    add("--soak-rate", type=_positive, metavar="R", help="RFQ/s offered during the soak (2000)")
    add("--soak-rfqs", type=int, metavar="N", help="RFQs the soak processes (1,000,000)")
    add("--soak-checkpoint", type=int, metavar="N", help="first RSS sample at (100,000)")
    add("--soak-max-seconds", type=_positive, metavar="S", help="soak time limit (1200)")
    add(
        "--phases",
        metavar="LIST",
        help="comma-separated subset: daemon_low, baseline_low, lean_low, daemon_high, "
        "baseline_high, lean_high, soak",
    )


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
) -> None:
    """Add the ``bench`` subcommand to the ``mmbot`` parser."""
    parser = subparsers.add_parser(
        "bench",
        parents=parents,
        allow_abbrev=False,
        help="benchmark the daemon against a naive and a lean baseline on the mock exchange",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    _add_arguments(parser)
    parser.set_defaults(func=_run)


def _options(args: argparse.Namespace) -> object:
    from mmbot.bench.harness import BenchOptions

    options = BenchOptions.quick_run() if args.quick else BenchOptions()
    mapping = {
        "warmup_seconds": args.warmup_seconds,
        "measure_seconds": args.measure_seconds,
        "low_rate": args.low_rate,
        "high_rate": args.high_rate,
        "budget_tokens_per_second": args.budget_tokens_per_second,
        "budget_capacity": args.budget_capacity,
        "markets": args.markets,
        "accept_fraction": args.accept_fraction,
        "rfq_lifetime_seconds": args.rfq_lifetime_seconds,
        "soak_rate": args.soak_rate,
        "soak_rfqs": args.soak_rfqs,
        "soak_checkpoint": args.soak_checkpoint,
        "soak_max_seconds": args.soak_max_seconds,
        "json_out": args.json_out,
        "plot": args.plot,
        "log_dir": args.log_dir,
        "daemon_event_loop": args.daemon_event_loop,
        "daemon_recording": args.daemon_recording,
        "md_updates_per_second": args.md_updates_per_second,
        "lean_event_loop": args.lean_event_loop,
    }
    for name, value in mapping.items():
        if value is not None:
            setattr(options, name, value)
    if args.daemon_md_stream is not None:
        options.daemon_md_stream = args.daemon_md_stream == "on"
    if args.daemon_last_look is not None:
        options.daemon_last_look = args.daemon_last_look == "on"
    if args.no_baseline_high:
        options.baseline_high = False
    if args.no_lean_high:
        options.lean_high = False
    if args.no_soak:
        options.soak = False
    if args.no_pin:
        options.pin_cpus = False
    if args.phases:
        options.phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    return options


def _run(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """Run the benchmark and print the table."""
    del settings  # the daemon under test gets its own configuration
    try:
        from mmbot.bench.harness import BenchOptions, run_bench
    except ImportError as exc:
        print(
            f"error: the benchmarks package is not importable ({exc}); install mmbot "
            "from a checkout (pip install -e .) to get it",
            file=sys.stderr,
        )
        return 1
    options = _options(args)
    assert isinstance(options, BenchOptions)
    try:
        run_bench(options)
    except (RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks`` (same flags as ``mmbot bench``)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    _add_arguments(parser)
    return _run(parser.parse_args(argv))
