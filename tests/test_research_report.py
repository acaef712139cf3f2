"""``mmbot report`` and ``mmbot compare`` over replay RESULT directories.

The RESULT directories are synthetic (tests/support/research.py), written with pyarrow in
format version 1 exactly as ``mmbot replay`` writes them.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import struct
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mmbot.cli import main
from mmbot.research.compare import compare, format_comparison, from_result
from mmbot.research.report import PLOTS, SECTIONS, WORST_RFQS, mean_band
from mmbot.research.results import QuoteRow, ResultError, load_result
from tests.support.env import clear_mmbot_env
from tests.support.research import LABELS, MARKETS, write_result

# Each test renders plots with matplotlib (a second or more each): CI runs them, the
# inner loop leaves them out.
pytestmark = pytest.mark.slow

_PLOT = re.compile(r'data-plot="(\w+)">\s*<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_mmbot_env(monkeypatch)


@pytest.fixture
def result_dir(tmp_path: Path) -> Path:
    return write_result(tmp_path / "result")


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert data.startswith(_PNG_SIGNATURE)
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _report(result: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[str, dict]:
    assert main(["report", str(result), *extra]) == 0
    html_path, json_path = capsys.readouterr().out.split()
    return Path(html_path).read_text(), json.loads(Path(json_path).read_text())


def test_the_report_embeds_every_plot_as_a_non_empty_image(
    result_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page, _ = _report(result_dir, capsys)
    plots = {name: base64.b64decode(data) for name, data in _PLOT.findall(page)}
    assert set(plots) == set(PLOTS)
    for name, png in plots.items():
        width, height = _png_size(png)
        assert width > 300, name
        assert height > 200, name
        assert len(png) > 10_000, f"{name} is suspiciously small: {len(png)} bytes"
    for name in PLOTS:
        assert f'id="plot-{name}"' in page


def test_the_report_page_is_self_contained(
    result_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page, _ = _report(result_dir, capsys)
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "url(" not in page


def test_the_report_shows_every_label_side_by_side(
    result_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page, _ = _report(result_dir, capsys)
    for label in LABELS:
        # The summary table, the markout table, each group table and the worst-RFQ heading.
        assert page.count(label) >= 5
    for section in ("summary", "pnl", "markout", "edge-buckets", "markets", "size-buckets"):
        assert f'<section id="{section}">' in page
    assert '<section id="worst-rfqs">' in page


def test_the_json_report_has_every_section_for_every_label(
    result_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, report = _report(result_dir, capsys)
    assert tuple(report) == SECTIONS
    for section in SECTIONS[1:]:
        assert set(report[section]) == set(LABELS), section
    meta = json.loads((result_dir / "result.json").read_text())
    for entry in meta["strategies"]:
        summary = report["summary"][entry["label"]]
        assert summary["realized_pnl"] == entry["summary"]["realized_pnl"]
        assert summary["fills"] == entry["summary"]["fills"]
    for label in LABELS:
        curve = report["markout"][label]["quotes"]
        assert [p["horizon"] for p in curve] == meta["horizons"]
        for point in curve:
            # Decimal strings, and the band is centred on the mean.
            mean, low, high = (Decimal(point[k]) for k in ("mean", "low", "high"))
            assert low < mean < high
            assert abs((high - mean) - (mean - low)) <= Decimal("0.000002")
        assert report["edge_buckets"][label], label
        assert set(report["markets"][label]) == set(MARKETS)
        assert report["size_buckets"][label]["unknown"]["rfqs"] > 0
        assert 0 < len(report["worst_rfqs"][label]) <= WORST_RFQS
        assert report["pnl"][label]["points"]
        assert report["position"][label]["markets"]


def test_the_worst_rfqs_are_the_fills_with_the_worst_markout_at_the_longest_horizon(
    result_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, report = _report(result_dir, capsys)
    result = load_result(result_dir)
    longest = str(result.longest_horizon)
    for label in LABELS:
        worst = [Decimal(w["fill_markout"][longest]) for w in report["worst_rfqs"][label]]
        every = sorted(
            r.fill_markout[result.longest_horizon]
            for r in result.quotes[label]
            if r.filled and r.fill_markout[result.longest_horizon] is not None
        )
        assert worst == every[:WORST_RFQS]


def test_the_report_goes_to_out_when_given(
    result_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "elsewhere"
    assert main(["report", str(result_dir), "--out", str(out)]) == 0
    assert capsys.readouterr().out.split() == [str(out / "report.html"), str(out / "report.json")]
    assert not (result_dir / "report.html").exists()


def test_fair_value_markout_is_reported_only_when_the_recording_has_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, plain = _report(write_result(tmp_path / "live"), capsys)
    _, dry_run = _report(write_result(tmp_path / "dry", fair_value=True), capsys)
    for label in LABELS:
        assert plain["markout"][label]["fair"] is None
        assert Decimal(dry_run["markout"][label]["fair"]["mean"]) > 0
    assert plain["meta"]["has_fair_value"] is False
    assert dry_run["meta"]["has_fair_value"] is True


def test_loading_keeps_money_exact(result_dir: Path) -> None:
    result = load_result(result_dir)
    assert result.labels == tuple(LABELS)
    filled = next(r for r in result.quotes[result.labels[0]] if r.filled)
    for value in (filled.fill_price, filled.realized_pnl, filled.mid, filled.fill_markout[1]):
        assert type(value) is Decimal
    assert type(result.strategies[0].total_pnl) is Decimal
    assert filled.ts.tzinfo is not None


def test_rows_written_as_one_part_file_per_worker_load_like_a_single_file(
    tmp_path: Path,
) -> None:
    single = load_result(write_result(tmp_path / "single"))
    parted = load_result(write_result(tmp_path / "parts", parts=True))
    assert parted.quotes == single.quotes


def test_a_result_of_an_unknown_version_is_refused_naming_the_file_and_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result_dir = write_result(tmp_path / "future", version=2)
    with pytest.raises(ResultError, match=r"result\.json: result format version 2 is not"):
        load_result(result_dir)
    assert main(["report", str(result_dir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: ")
    assert "version 2" in err[0]
    assert "result.json" in err[0]
    assert not (result_dir / "report.html").exists()


@pytest.mark.parametrize("command", ["report", "compare"])
def test_a_missing_result_is_one_error_line_and_exit_status_1(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    argv = [command, str(missing)] + ([str(missing)] if command == "compare" else [])
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {missing}: no such RESULT directory"]


def test_a_directory_that_is_not_a_result_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "result.json").write_text('{"format": "something-else", "version": 1}')
    assert main(["report", str(tmp_path)]) == 1
    assert "not a replay result" in capsys.readouterr().err


def test_the_report_without_matplotlib_says_how_to_install_it(
    result_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # None in sys.modules makes `import matplotlib` raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["report", str(result_dir)]) == 1
    err = capsys.readouterr().err
    assert "pip install 'mmbot[research]'" in err
    assert not (result_dir / "report.json").exists()


def test_the_markout_band_is_the_mean_plus_or_minus_1_96_standard_errors() -> None:
    band = mean_band([Decimal(v) for v in ("0.01", "0.02", "0.03", "0.04")])
    assert band is not None
    assert band.stderr is not None
    assert band.mean == Decimal("0.025")
    # sample variance 0.000166..., over n = 4, square root
    assert abs(band.stderr - Decimal("0.006454972243679028")) < Decimal("1e-15")
    assert band.low == band.mean - Decimal("1.96") * band.stderr
    assert mean_band([]) is None
    single = mean_band([Decimal(1)])
    assert single is not None
    assert single.stderr is None
    assert single.low is None


def _row(**changes: Any) -> QuoteRow:
    fields: dict[str, Any] = {
        "label": "x",
        "ts": datetime(2026, 1, 1, tzinfo=UTC),
        "rfq_id": "r",
        "market": "M",
        "rfq_contracts": Decimal(10),
        "decision": "quoted",
        "reason": "",
        "yes_bid": Decimal("0.40"),
        "no_bid": Decimal("0.50"),
        "mid": Decimal("0.45"),
        "filled_side": None,
        "filled_contracts": None,
        "fill_price": None,
        "fee": None,
        "realized_pnl": Decimal(0),
        "mtm_pnl": Decimal(0),
        "position": Decimal(0),
        "markout": {},
        "fill_markout": {},
    }
    return QuoteRow(**(fields | changes))


def test_the_edge_at_rfq_time_is_the_mean_over_quoted_sides_against_the_mid() -> None:
    # YES: 0.45 - 0.40 = 0.05; NO: (1 - 0.45) - 0.50 = 0.05
    assert _row().edge == Decimal("0.05")
    assert _row(no_bid=None, yes_bid=Decimal("0.44")).edge == Decimal("0.01")
    assert _row(mid=None).edge is None
    assert _row(decision="skipped").edge is None


def test_compare_prints_both_sides_for_each_label_and_market(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_result(tmp_path / "a", seed=1)
    b = write_result(tmp_path / "b", seed=2)
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert f"A: {a}" in out
    assert f"B: {b}" in out
    for side in (a, b):
        meta = json.loads((side / "result.json").read_text())
        for entry in meta["strategies"]:
            quoted = str(entry["summary"]["quoted"])
            assert re.search(rf"^\s+quotes\s.*\b{quoted}\b", out, re.MULTILINE)
    for label in LABELS:
        assert f"{label} - all markets" in out
        for market in MARKETS:
            assert f"{label} - market {market}" in out
    for metric in ("fills", "fill rate", "realized P&L", "total P&L", "markout 1s", "markout 300s"):
        assert re.search(rf"^\s+{re.escape(metric)}\s", out, re.MULTILINE), metric


def test_compare_as_json_holds_both_sides_and_their_difference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_result(tmp_path / "a", seed=1)
    b = write_result(tmp_path / "b", seed=2)
    assert main(["compare", str(a), str(b), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["a"], report["b"]) == (str(a), str(b))
    rows = {(r["label"], r["market"]): r for r in report["rows"]}
    assert set(rows) == {(label, m) for label in LABELS for m in (None, *MARKETS)}
    for row in rows.values():
        assert row["a"] is not None
        assert row["b"] is not None
        assert row["b_minus_a"]["quotes"] == row["b"]["quotes"] - row["a"]["quotes"]
        assert set(row["a"]["markout"]) == {"1", "10", "60", "300"}


def test_compare_keeps_a_label_that_only_one_side_has(tmp_path: Path) -> None:
    only_first = {"fixed_spread half_spread=0.02": "0.02"}
    a = from_result(load_result(write_result(tmp_path / "a")))
    b = from_result(load_result(write_result(tmp_path / "b", labels=only_first)))
    comparison = compare(a, b)
    missing = [r for r in comparison.rows if r.b is None]
    assert {r.label for r in missing} == {"fixed_spread half_spread=0.05"}
    assert all(r.a is not None for r in missing)
    assert "(absent)" in format_comparison(comparison)


def test_per_market_realized_pnl_adds_up_to_the_label_realized_pnl(result_dir: Path) -> None:
    side = from_result(load_result(result_dir))
    for label, aggregate in side.labels.items():
        markets = side.markets[label].values()
        assert sum((m.realized_pnl or Decimal(0) for m in markets), Decimal(0)) == (
            aggregate.realized_pnl
        )
        assert sum(m.quotes for m in markets) == aggregate.quotes


def test_the_report_opens_in_a_headless_browser(
    result_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chromium = Path("/usr/bin/chromium")
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("playwright (the dev extra)")
    if not chromium.exists():
        missing.append(f"Chromium at {chromium} (Debian's chromium package)")
    if missing:
        # CI installs both (.ci/run) and sets this, so there the test cannot skip quietly.
        if os.environ.get("CI_REQUIRE_BROWSER") == "1":
            pytest.fail("CI_REQUIRE_BROWSER=1 but missing: " + ", ".join(missing))
        pytest.skip("missing: " + ", ".join(missing))
    from playwright.sync_api import sync_playwright

    page_text, _ = _report(result_dir, capsys)
    with sync_playwright() as p:
        # No network, no first-run or background services: the page is self-contained.
        browser = p.chromium.launch(
            executable_path=str(chromium),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page()
        page.set_content(page_text)
        for name in PLOTS:
            width = page.eval_on_selector(f'[data-plot="{name}"] img', "img => img.naturalWidth")
            assert width > 0, name
        browser.close()
