"""What ``pip install`` puts on a machine: mmbot's own names only, every package listed."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_under_mmbot_is_listed_for_installation() -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])  # type: ignore[index]
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts) for init in ROOT.glob("mmbot/**/__init__.py")
    }
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - on_disk == {"mmbot_strategies"}


@pytest.mark.slow
def test_the_wheel_installs_no_generic_top_level_names(tmp_path: Path) -> None:
    subprocess.run(  # noqa: S603 (our own interpreter and checkout)
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("mmbot-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"mmbot", "mmbot_strategies"}
    assert "mmbot_strategies/fixed_spread.py" in names
    assert "mmbot/bench/harness.py" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "fixed_spread = mmbot_strategies.fixed_spread:FixedSpread" in text
