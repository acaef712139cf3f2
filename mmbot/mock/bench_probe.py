"""The benchmark probe: request-to-response timing on the mock exchange's own clock.

While the probe is enabled the server stamps, with ``time.perf_counter_ns()`` on its
own clock: each ``rfq_created`` and ``quote_accepted`` frame as it is handed to a
maker's socket, and each create-quote and confirm request as it enters the server
(before authentication). The first successful quote per RFQ and the confirm of each
accepted quote are paired with their frame; the differences are the samples.
"""

from __future__ import annotations

import time
from typing import Any, Final

from aiohttp import web

__all__ = ["RECEIVED_NS", "BenchProbe"]

# When a request entered the server (perf_counter_ns), for the benchmark probe.
RECEIVED_NS: Final = web.RequestKey("mmbot_received_ns", int)
# Unmatched frame stamps kept at most; the oldest go first (RFQs nobody quoted).
_MAX_PENDING_STAMPS: Final = 200_000


class BenchProbe:
    """Benchmark timestamps on the exchange's clock: O(1) work per event.

    ``rfq_to_quote_ns`` holds, per RFQ, the time from its ``rfq_created`` frame being
    handed to the maker's socket to the first create-quote request for it that the
    exchange accepted entering the server; ``accept_to_confirm_ns`` the same from a
    ``quote_accepted`` frame to its confirm request.
    """

    def __init__(self) -> None:
        self.enabled = False
        #: When false, frames and requests are still paired (and counted) but no samples kept.
        self.keep_samples = True
        self._rfq_sent: dict[str, int] = {}
        self._accept_sent: dict[str, int] = {}
        self.rfq_to_quote_ns: list[int] = []
        self.accept_to_confirm_ns: list[int] = []
        self.rfq_frames = 0
        self.accept_frames = 0
        self.quotes_matched = 0
        self.confirms_matched = 0

    def reset(self) -> None:
        """Forget every stamp and sample (the start of a measured window)."""
        self._rfq_sent.clear()
        self._accept_sent.clear()
        self.rfq_to_quote_ns = []
        self.accept_to_confirm_ns = []
        self.rfq_frames = self.accept_frames = 0
        self.quotes_matched = self.confirms_matched = 0

    def frame_sent(self, kind: str, key: str) -> None:
        """Stamp an event frame handed to a maker's socket (first stamp per key wins)."""
        now = time.perf_counter_ns()
        if kind == "rfq_created":
            pending = self._rfq_sent
            self.rfq_frames += 1
        else:
            pending = self._accept_sent
            self.accept_frames += 1
        if key in pending:
            return
        pending[key] = now
        if len(pending) > _MAX_PENDING_STAMPS:
            del pending[next(iter(pending))]

    def quote_received(self, rfq_id: str, received_ns: int) -> None:
        """Pair an accepted create-quote request with its RFQ's frame (first quote only)."""
        sent = self._rfq_sent.pop(rfq_id, None)
        if sent is None:
            return
        self.quotes_matched += 1
        if self.keep_samples:
            self.rfq_to_quote_ns.append(received_ns - sent)

    def confirm_received(self, quote_id: str, received_ns: int) -> None:
        """Pair an accepted confirm request with its ``quote_accepted`` frame."""
        sent = self._accept_sent.pop(quote_id, None)
        if sent is None:
            return
        self.confirms_matched += 1
        if self.keep_samples:
            self.accept_to_confirm_ns.append(received_ns - sent)

    def snapshot(self) -> dict[str, Any]:
        """Samples and counters as JSON-ready data."""
        return {
            "enabled": self.enabled,
            "rfq_frames": self.rfq_frames,
            "accept_frames": self.accept_frames,
            "quotes_matched": self.quotes_matched,
            "confirms_matched": self.confirms_matched,
            "rfq_to_quote_ns": self.rfq_to_quote_ns,
            "accept_to_confirm_ns": self.accept_to_confirm_ns,
        }
