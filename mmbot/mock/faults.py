"""Fault injection knobs for the mock exchange.

:class:`FaultConfig` is the validated, plain-data description of which faults to inject;
:class:`Faults` is its live counterpart inside a running server: it owns the seeded random
generator every fault draw comes from and remembers when handshake refusal started.
The server (:mod:`mmbot.mock.server`) decides where each fault applies:

* ``write_429_fraction`` / ``write_5xx_fraction``: that share of authenticated
  POST/PUT/DELETE requests is answered 429 ``{"error": "too many requests"}`` (Kalshi's
  rate-limit body) or 500 with an ErrorResponse, before the exchange is touched;
* ``latency_ms``: added to every REST response under ``/trade-api/v2``;
* ``refuse_handshakes_seconds``: WebSocket handshakes get HTTP 503 for that long,
  counted from when the value is set;
* ``malformed_fraction``: a malformed frame (invalid JSON or an event that breaks its
  schema) is sent right before that share of events, so no real event is lost;
* ``duplicate_fraction``: that share of events is sent twice;
* ``reorder_fraction``: that share of events is held back and sent after the next event
  on the same connection, or after 50 ms if none comes.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

__all__ = ["FaultConfig", "FaultConfigError", "Faults"]

_FRACTIONS = frozenset(
    {
        "write_429_fraction",
        "write_5xx_fraction",
        "malformed_fraction",
        "duplicate_fraction",
        "reorder_fraction",
    }
)


class FaultConfigError(ValueError):
    """A fault setting is unknown or out of range; the message names the field."""


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Which faults the mock exchange injects; all zero means a well-behaved exchange."""

    write_429_fraction: float = 0.0
    write_5xx_fraction: float = 0.0
    latency_ms: float = 0.0
    refuse_handshakes_seconds: float = 0.0
    malformed_fraction: float = 0.0
    duplicate_fraction: float = 0.0
    reorder_fraction: float = 0.0

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            # bool is an int subclass; "true" is not a fraction anyone means.
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FaultConfigError(f"{spec.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise FaultConfigError(f"{spec.name} must be a finite number >= 0, got {value}")
            if spec.name in _FRACTIONS and value > 1:
                raise FaultConfigError(f"{spec.name} must be within [0, 1], got {value}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of every knob, in declaration order."""
        return tuple(spec.name for spec in fields(cls))

    def to_dict(self) -> dict[str, float]:
        """The knobs as a JSON-ready mapping."""
        return asdict(self)

    def updated(self, changes: Mapping[str, Any]) -> FaultConfig:
        """A copy with ``changes`` applied; unknown names or bad values raise FaultConfigError."""
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise FaultConfigError(
                f"unknown fault field(s): {', '.join(unknown)}; "
                f"known: {', '.join(self.field_names())}"
            )
        return replace(self, **dict(changes))


class Faults:
    """The live fault state of one server: current knobs, seeded draws, refusal deadline."""

    def __init__(
        self,
        config: FaultConfig,
        *,
        seed: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # A string seed keeps this stream independent of the other generators seeded
        # from the same exchange seed.
        self._rng = random.Random(f"mmbot-mock-faults:{seed}")  # noqa: S311 - simulation
        self._clock = clock
        self._config = config
        self._refuse_until = 0.0
        self._arm_refusal(config)

    @property
    def config(self) -> FaultConfig:
        """The knobs in force."""
        return self._config

    def set(self, config: FaultConfig) -> None:
        """Replace every knob; a positive ``refuse_handshakes_seconds`` starts counting now."""
        self._config = config
        self._arm_refusal(config)

    def update(self, changes: Mapping[str, Any]) -> FaultConfig:
        """Change some knobs (validated as a whole) and return the resulting configuration."""
        config = self._config.updated(changes)
        self._config = config
        if "refuse_handshakes_seconds" in changes:
            self._arm_refusal(config)
        return config

    def _arm_refusal(self, config: FaultConfig) -> None:
        self._refuse_until = self._clock() + config.refuse_handshakes_seconds

    def refusing_handshakes(self) -> bool:
        """True while WebSocket handshakes are to be refused."""
        return self._clock() < self._refuse_until

    def refusal_remaining_seconds(self) -> float:
        """How much longer handshakes will be refused (0 when they are accepted)."""
        return max(0.0, self._refuse_until - self._clock())

    def draw(self, fraction: float) -> bool:
        """True with probability ``fraction``; no draw is spent on 0 or 1."""
        if fraction <= 0:
            return False
        if fraction >= 1:
            return True
        return self._rng.random() < fraction

    def choose(self, options: int) -> int:
        """A seeded index in ``range(options)``."""
        return self._rng.randrange(options)

    def write_fault(self) -> int | None:
        """The status to inject on a write request (429 or 500), or None to serve it."""
        if self.draw(self._config.write_429_fraction):
            return 429
        if self.draw(self._config.write_5xx_fraction):
            return 500
        return None
