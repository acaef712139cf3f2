"""Replay throughput: how long one strategy takes over a large recording.

::

    python -m benchmarks.replay [--rfqs 1000000] [--fill-model threshold] [--keep DIR]

Writes a synthetic recording of ``--rfqs`` RFQs (the mock's simulated flow, see
:mod:`mmbot.mock.synthetic`; reused from ``--keep DIR`` when it already holds one of that
size), then replays ``fixed_spread`` over it exactly as ``mmbot replay`` does and prints
the time of each phase (reading the files, preparing the rows, the replay itself, writing
the result) and the RFQs replayed per second.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from mmbot.config import Settings
from mmbot.mock.synthetic import synthesize
from mmbot.research.recording import load_recording
from mmbot.research.replay import FillModel, flow_of
from mmbot.research.sweep import Job, run_jobs


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rfqs", type=int, default=1_000_000)
    parser.add_argument(
        "--fill-model", choices=("markout", "recorded", "threshold"), default="threshold"
    )
    parser.add_argument("--keep", type=Path, help="where the synthetic recording is kept")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mmbot-bench-replay-") as tmp:
        recording_dir = args.keep or Path(tmp) / "recording"
        marker = recording_dir / f".rfqs-{args.rfqs}"
        figures: dict[str, float | int | str] = {"rfqs": args.rfqs, "fill_model": args.fill_model}
        if not marker.exists():
            started = time.perf_counter()
            synthesize(recording_dir, rfqs=args.rfqs, seed=1)
            marker.touch()
            figures["synthesize_seconds"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        recording = load_recording([recording_dir])
        loaded = time.perf_counter()
        flow = flow_of(recording)
        prepared = time.perf_counter()
        run_jobs(
            flow,
            [Job("fixed_spread", "fixed_spread", {})],
            Settings(),
            FillModel(args.fill_model),
            Path(tmp) / "result",
            recordings=[str(recording_dir)],
        )
        done = time.perf_counter()
        figures.update(
            {
                "read_seconds": round(loaded - started, 2),
                "prepare_seconds": round(prepared - loaded, 2),
                "replay_and_write_seconds": round(done - prepared, 2),
                "total_seconds": round(done - started, 2),
                "rfqs_per_second": round(args.rfqs / (done - started)),
            }
        )
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
