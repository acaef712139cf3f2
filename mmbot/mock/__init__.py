"""Mock Kalshi exchange for dry runs and tests."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmbot.mock.config import MockConfig
    from mmbot.mock.faults import FaultConfig
    from mmbot.mock.server import MockExchange

__all__ = ["FaultConfig", "MockConfig", "MockExchange"]

# Imported on first use: the state machine and simulation modules stay importable on
# their own, without pulling in the HTTP server.
_EXPORTS = {
    "FaultConfig": "mmbot.mock.faults",
    "MockConfig": "mmbot.mock.config",
    "MockExchange": "mmbot.mock.server",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
