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
  on the same connection, or after 50 ms if none comes;
* ``partial_fill_fraction``: that share of executions fills only part of the accepted
  size: half of it, floored to whole contracts, at least one (a trade of one contract or
  less fills whole). The quote still reports ``executed``; both parties' fills, positions
  and balances reflect only the filled part, and a quote (or RFQ) created with
  ``rest_remainder`` rests the unfilled part as an order. Drawn from a generator of its
  own, so frame faults on other connections do not shift which executions are partial;
* ``fill_listing_delay_seconds``: a fill appears in ``GET /portfolio/fills`` only this
  long after it happened (positions and balances move at once);
* ``delete_503_seconds``: for that long, counted from when the value is set, every
  DELETE of a quote (bare or RFQ-scoped path) is answered 503 with an ErrorResponse
  before the exchange is touched;
* ``clock_skew_seconds``: the exchange's authentication clock runs this far ahead, so
  while it exceeds the timestamp window correctly signed requests and WebSocket
  handshakes get the 401 "KALSHI-ACCESS-TIMESTAMP is too old" a real skew gives;
* ``tamper_accept_price_fraction`` / ``tamper_accept_size_fraction`` /
  ``tamper_accept_market_fraction``: that share of ``quote_accepted`` frames sent to the
  quote's creator (the maker) is altered on the wire only, the exchange's record staying
  as it was: the accepted side's bid becomes ``"0.0100"``; ``contracts_accepted_fp`` and
  the accepted side's ``*_contracts_offered_fp`` become nine times the accepted size; or
  ``market_ticker`` names another market. Each is drawn on its own;
* ``market_updates_per_second``: when > 0, the market-data feed
  (:mod:`mmbot.mock.marketfeed`) moves the fair value of the subscribed markets
  round-robin, one grid tick at a time (alternately up and down), so that about this
  many top-of-book changes a second are published on ``orderbook_delta`` and
  ``ticker``, on top of the normal random walk (0, the default: the walk only);
* ``md_gap_fraction``: that share of ``orderbook_delta`` messages is not sent although
  its ``seq`` is spent, so the subscriber sees a sequence gap (``malformed_fraction``
  applies to market-data frames too).

Every fraction is within [0, 1]; every other knob is a finite number >= 0.
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
        "partial_fill_fraction",
        "tamper_accept_price_fraction",
        "tamper_accept_size_fraction",
        "tamper_accept_market_fraction",
        "md_gap_fraction",
    }
)


#: The share of events a fault hits, within [0, 1]: a probability, never an amount of
#: money (prices and sizes are Decimal everywhere), whatever the knob's name mentions.
Share = float


class FaultConfigError(ValueError):
    """A fault setting is unknown or out of range; the message names the field."""


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Which faults the mock exchange injects; all zero means a well-behaved exchange."""

    write_429_fraction: Share = 0.0
    write_5xx_fraction: Share = 0.0
    latency_ms: float = 0.0
    refuse_handshakes_seconds: float = 0.0
    malformed_fraction: Share = 0.0
    duplicate_fraction: Share = 0.0
    reorder_fraction: Share = 0.0
    partial_fill_fraction: Share = 0.0
    fill_listing_delay_seconds: float = 0.0
    delete_503_seconds: float = 0.0
    clock_skew_seconds: float = 0.0
    tamper_accept_price_fraction: Share = 0.0
    tamper_accept_size_fraction: Share = 0.0
    tamper_accept_market_fraction: Share = 0.0
    #: Top-of-book changes a second the market-data feed forces (0: the random walk only).
    market_updates_per_second: float = 0.0
    md_gap_fraction: Share = 0.0

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
        # Executions draw from their own stream: how many frames went to how many
        # connections must not change which trade is filled partly.
        self._fill_rng = random.Random(f"mmbot-mock-fill-faults:{seed}")  # noqa: S311
        # Market data too: how many book changes were published (which depends on timing)
        # must not change which quote creation gets a 429 or which event is cut off.
        self._md_rng = random.Random(f"mmbot-mock-md-faults:{seed}")  # noqa: S311
        self._clock = clock
        self._config = config
        self._refuse_until = 0.0
        self._delete_503_until = 0.0
        self._arm_refusal(config)
        self._arm_delete_503(config)

    @property
    def config(self) -> FaultConfig:
        """The knobs in force."""
        return self._config

    def set(self, config: FaultConfig) -> None:
        """Replace every knob; timed knobs (handshake refusal, delete 503s) start counting now."""
        self._config = config
        self._arm_refusal(config)
        self._arm_delete_503(config)

    def update(self, changes: Mapping[str, Any]) -> FaultConfig:
        """Change some knobs (validated as a whole) and return the resulting configuration."""
        config = self._config.updated(changes)
        self._config = config
        if "refuse_handshakes_seconds" in changes:
            self._arm_refusal(config)
        if "delete_503_seconds" in changes:
            self._arm_delete_503(config)
        return config

    def _arm_refusal(self, config: FaultConfig) -> None:
        self._refuse_until = self._clock() + config.refuse_handshakes_seconds

    def _arm_delete_503(self, config: FaultConfig) -> None:
        self._delete_503_until = self._clock() + config.delete_503_seconds

    def refusing_quote_deletes(self) -> bool:
        """True while quote DELETEs are to be answered 503."""
        return self._clock() < self._delete_503_until

    def delete_503_remaining_seconds(self) -> float:
        """How much longer quote DELETEs will be answered 503 (0 when they are served)."""
        return max(0.0, self._delete_503_until - self._clock())

    def partial_fill(self) -> bool:
        """Whether the next execution fills only part of its size (``partial_fill_fraction``)."""
        fraction = self._config.partial_fill_fraction
        if fraction <= 0:
            return False
        if fraction >= 1:
            return True
        return self._fill_rng.random() < fraction

    def fill_listing_delay(self) -> float:
        """Seconds a new fill stays out of ``GET /portfolio/fills``."""
        return self._config.fill_listing_delay_seconds

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

    def md_draw(self, fraction: float) -> bool:
        """As :meth:`draw`, from the market-data stream's own generator."""
        if fraction <= 0:
            return False
        if fraction >= 1:
            return True
        return self._md_rng.random() < fraction

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
