"""The shipped example configuration must stay valid."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmbot.config import load_settings_with_sources

EXAMPLES = sorted((Path(__file__).parent.parent / "config").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MMBOT_"):
            monkeypatch.delenv(name)
    settings, sources = load_settings_with_sources(path)
    assert sources["kalshi.rest_url"] == f"config file {path}"
    assert settings.kalshi.write_bucket_capacity >= 10


def test_there_is_an_example() -> None:
    assert EXAMPLES
