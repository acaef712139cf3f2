"""``mmbot compare A B``: two replay RESULTs or recordings side by side.

Each of A and B is a replay RESULT directory (it holds ``result.json``) or else a recording
(a directory of recording files, or one file). For each strategy label, and each market a
label quoted, it prints quotes, fills, fill rate, realized and total P&L and the mean
markout at each horizon, for A, for B and B - A. A recording is aggregated as recorded,
per the strategy that ran: its P&L is not computed and shows as "-". ``--json`` prints the
same as one JSON document, with every market. A missing or invalid argument is one
``error:`` line and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from mmbot.cli.ops import _fail, _quiet_default_logging
from mmbot.config import Settings

__all__ = ["register"]


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text!r}")
    return value


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
) -> None:
    """Add the ``compare`` subcommand to the ``mmbot`` parser."""
    parser = subparsers.add_parser(
        "compare",
        parents=parents,
        allow_abbrev=False,
        help="compare two replay RESULTs or recordings per strategy label and per market",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("a", type=Path, metavar="A", help="the first RESULT or recording")
    parser.add_argument("b", type=Path, metavar="B", help="the second RESULT or recording")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.add_argument(
        "--top-markets",
        type=_count,
        default=10,
        metavar="N",
        help="markets shown per label, most quoted first; 0 shows all (default: 10)",
    )
    parser.set_defaults(func=_compare)


def _compare(args: argparse.Namespace, settings: Settings) -> int:
    """Load both sides, RESULT or recording, and print them side by side."""
    _quiet_default_logging(args, settings)
    # Imported here: the research package pulls in pyarrow, which other commands never need.
    from mmbot.research.compare import compare, format_comparison, from_recording, from_result
    from mmbot.research.recording import RecordingError, load_recording
    from mmbot.research.results import RESULT_FILE, ResultError, load_result

    sides = []
    for path in (args.a, args.b):
        try:
            # A missing path gets the RESULT loader's own "no such RESULT directory".
            if (path / RESULT_FILE).is_file() or not path.exists():
                sides.append(from_result(load_result(path), str(path)))
                continue
            recording = load_recording([path])
        except ResultError as exc:
            _fail(str(exc))
            return 1
        except RecordingError as exc:
            _fail(f"{path}: not a replay RESULT (no {RESULT_FILE}) nor a usable recording: {exc}")
            return 1
        for skipped, why in recording.skipped:
            print(f"warning: skipped {skipped}: {why}", file=sys.stderr)
        sides.append(from_recording(recording, str(path)))
    a, b = sides
    comparison = compare(a, b)
    if args.json:
        print(json.dumps(comparison.to_json(), indent=2))
    else:
        print(format_comparison(comparison, args.top_markets or None))
    return 0
