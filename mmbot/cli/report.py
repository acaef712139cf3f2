"""``mmbot report RESULT``: the research report of a replay, as HTML and JSON.

RESULT is a directory written by ``mmbot replay``. The report is one self-contained
``report.html`` (plots embedded, nothing fetched when it is opened, so it can be mailed
or attached to an issue) and ``report.json`` with the same figures, written into RESULT
unless ``--out`` names another directory. A missing or invalid RESULT, or a missing
matplotlib, is one ``error:`` line and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mmbot.cli.ops import _fail, _quiet_default_logging
from mmbot.config import Settings

__all__ = ["register"]


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
) -> None:
    """Add the ``report`` subcommand to the ``mmbot`` parser."""
    parser = subparsers.add_parser(
        "report",
        parents=parents,
        allow_abbrev=False,
        help="write the HTML and JSON research report of a replay RESULT directory",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("result", type=Path, metavar="RESULT", help="directory of mmbot replay")
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="where to write the report (default: RESULT)"
    )
    parser.set_defaults(func=_report)


def _report(args: argparse.Namespace, settings: Settings) -> int:
    """Load RESULT, write report.html and report.json, print their paths."""
    _quiet_default_logging(args, settings)
    # Imported here: the research package pulls in pyarrow, which other commands never need.
    from mmbot.research.report import ReportDependencyError, write_report
    from mmbot.research.results import ResultError, load_result

    try:
        result = load_result(args.result)
        html_path, json_path = write_report(result, args.out or args.result)
    except (ResultError, ReportDependencyError) as exc:
        _fail(str(exc))
        return 1
    except OSError as exc:
        _fail(f"cannot write the report: {exc}")
        return 1
    print(html_path)
    print(json_path)
    sys.stdout.flush()
    return 0
