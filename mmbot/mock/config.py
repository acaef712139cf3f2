"""The mock exchange server's settings (:class:`MockConfig`) and counters (:class:`MockStats`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from decimal import Decimal

from mmbot.mock.faults import FaultConfig
from mmbot.mock.informed import (
    DEFAULT_INFORMED_FRACTION,
    DEFAULT_INFORMED_MOVE_THRESHOLD,
    threshold_micros,
)

__all__ = ["MockConfig", "MockStats"]


@dataclass(frozen=True, slots=True)
class MockConfig:
    """How to run the mock exchange; the defaults suit tests (no simulated RFQ flow)."""

    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 0
    markets: int = 20
    #: RFQs per second from the simulated requesters; 0 disables the arrival stream.
    rfq_rate: float = 0.0
    hvm_fraction: float = 0.2
    #: Multiplies confirmation windows, execution timers, requester lifetimes and delays.
    time_scale: float = 1.0
    ping_interval_seconds: float = 10.0
    #: How far a request's timestamp may be from the server clock, either way.
    timestamp_window_seconds: float = 30.0
    requesters: int = 5
    #: Frames (events, replies, pings) a WebSocket connection may have waiting to be sent.
    ws_queue_frames: int = 1000
    market_step_seconds: float = 1.0
    #: Share (0..1) of simulated RFQs whose requester is informed: instead of shopping
    #: within a reservation it waits, and accepts a quote right after fair has moved
    #: against the maker by more than ``informed_move_threshold`` since the quote was
    #: made (picking off stale quotes); 0 turns informed requesters off.
    informed_fraction: float = DEFAULT_INFORMED_FRACTION
    #: The move of the hidden fair value, in dollars (a Decimal such as ``"0.02"``),
    #: an informed requester needs before accepting; strictly more than this counts.
    informed_move_threshold: Decimal = DEFAULT_INFORMED_MOVE_THRESHOLD
    faults: FaultConfig = field(default_factory=FaultConfig)
    #: Per-user write token bucket refill (tokens/s); 0 turns rate limiting off.
    write_tokens_per_second: float = 0.0
    #: Per-user write bucket size in tokens (defaults to one second of refill when 0).
    write_bucket_capacity: float = 0.0
    #: Widest ``max_ts - min_ts`` a quote or fill listing may ask for; one without both
    #: bounds, or wider, answers 500 as Kalshi does (field reports: 500/504 on long history).
    max_history_window_seconds: float = 43_200.0
    #: Bearer token the ``/_mock/`` control endpoints require; None: a random one per
    #: :class:`~mmbot.mock.server.MockExchange` (read it from its ``control_token``).
    control_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        token = self.control_token
        if token is not None and (len(token) < 8 or not all("!" <= c <= "~" for c in token)):
            raise ValueError("control_token must be at least 8 printable ASCII characters")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be within 0..65535, got {self.port}")
        if self.markets < 0:
            raise ValueError("markets cannot be negative")
        if self.requesters < 0:
            raise ValueError("requesters cannot be negative")
        if self.ws_queue_frames < 1:
            raise ValueError("ws_queue_frames must be at least 1")
        if not 0 <= self.hvm_fraction <= 1:
            raise ValueError("hvm_fraction must be within [0, 1]")
        if not 0 <= self.informed_fraction <= 1:
            raise ValueError("informed_fraction must be within [0, 1]")
        # Raises on a non-Decimal, out of [0, 1) or finer than a millionth.
        threshold_micros(self.informed_move_threshold)
        for name in (
            "rfq_rate",
            "market_step_seconds",
            "write_tokens_per_second",
            "write_bucket_capacity",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0")
        for name in (
            "time_scale",
            "ping_interval_seconds",
            "timestamp_window_seconds",
            "max_history_window_seconds",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0")


@dataclass(slots=True)
class MockStats:
    """Server-side counters: what was served and which faults were injected."""

    requests: int = 0
    #: Requests of any method but GET outside ``/_mock/``: how a test proves nothing wrote.
    non_get_requests: int = 0
    rate_limited_429: int = 0
    auth_failures: int = 0
    internal_errors: int = 0
    injected_429: int = 0
    injected_5xx: int = 0
    injected_503: int = 0
    delayed_responses: int = 0
    injected_latency_ms: float = 0.0
    ws_handshakes: int = 0
    ws_refused: int = 0
    ws_overflows: int = 0
    frames_sent: int = 0
    events_sent: int = 0
    malformed_sent: int = 0
    duplicates_sent: int = 0
    reordered: int = 0
    pings_sent: int = 0
    tampered_price: int = 0
    tampered_size: int = 0
    tampered_market: int = 0
    injected_frames: int = 0

    def to_dict(self) -> dict[str, float]:
        """The counters as a JSON-ready mapping."""
        return asdict(self)
