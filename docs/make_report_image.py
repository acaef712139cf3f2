"""Regenerate docs/research-report.png, the README's sample research report.

    python docs/make_report_image.py [--out docs/research-report.png] [--keep DIR]

Runs the README's research loop on synthetic data: ``mmbot synthesize`` 20,000 RFQs,
``mmbot replay`` four strategies with the optimistic ``threshold`` fill model, and
``mmbot report``. No headless browser is assumed, so instead of a screenshot of
report.html the image tiles four of the report's own embedded plots (decoded from its
base64 PNGs) into one figure with matplotlib. Needs the research extra
(``pip install -e '.[research]'``). Deterministic apart from the PNG encoder.
"""

from __future__ import annotations

import argparse
import base64
import io
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLOT = re.compile(r'data-plot="(\w+)">\s*<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
#: The report's plots shown, in reading order (2 x 2).
SHOWN = ("pnl", "markout", "edge_buckets", "position")
#: Keep the committed image small.
MAX_BYTES = 300_000


def _mmbot(*argv: str) -> None:
    from mmbot.cli import main

    code = main(list(argv))
    if code != 0:
        raise SystemExit(f"mmbot {' '.join(argv)} failed with exit status {code}")


def make_result(work: Path) -> Path:
    """Synthesize, replay and report into ``work``; return the RESULT directory."""
    recording, result = work / "recording", work / "result"
    _mmbot("synthesize", "--rfqs", "20000", "--out", str(recording), "--seed", "0")
    _mmbot(
        "replay",
        str(recording),
        *("--strategy", "fixed_spread", "--params", '{"half_spread": "0.02"}'),
        *("--strategy", "fixed_spread", "--params", '{"half_spread": "0.03"}'),
        *("--strategy", "inventory_skew", "--strategy", "size_aware"),
        *("--fill-model", "threshold", "--requester-edge", "0.04"),
        *("--jobs", "2", "--out", str(result)),
    )
    _mmbot("report", str(result))
    return result


def plots(report_html: Path) -> dict[str, bytes]:
    """The report's embedded plot PNGs by name."""
    found = PLOT.findall(report_html.read_text(encoding="utf-8"))
    return {name: base64.b64decode(data) for name, data in found}


def tile(images: dict[str, bytes], out: Path) -> int:
    """Tile the SHOWN plots 2 x 2 into ``out``; return its size in bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    missing = [name for name in SHOWN if name not in images]
    if missing:
        raise SystemExit(f"the report has no plot {', '.join(missing)}; it has {sorted(images)}")
    for dpi in (110, 90, 75, 60):
        fig, axes = plt.subplots(2, 2, figsize=(14, 9.5))
        for ax, name in zip(axes.flat, SHOWN, strict=True):
            ax.imshow(mpimg.imread(io.BytesIO(images[name]), format="png"))
            ax.set_axis_off()
        fig.suptitle(
            "mmbot report: 4 strategies replayed over 20,000 synthetic RFQs "
            "(fill model threshold, requester edge $0.04)",
            fontsize=13,
        )
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi)
        plt.close(fig)
        size = out.stat().st_size
        if size <= MAX_BYTES:
            return size
    return size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "research-report.png")
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="keep the recording and RESULT in DIR"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mmbot-report-image-") as scratch:
        work = args.keep or Path(scratch)
        result = make_result(work)
        size = tile(plots(result / "report.html"), args.out)
    print(f"{args.out} ({size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
