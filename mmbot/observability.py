"""Prometheus metrics and the ``/metrics``, ``/healthz`` and ``/readyz`` endpoints.

The metric family names are a public contract (dashboards and alert rules query them);
renaming one is a breaking change. Three kinds of figures feed them:

* decisions and fills are counted from the journal (:meth:`Metrics.on_journal_record` is
  a journal listener), so the counters agree with the durable record by construction;
* REST calls and latencies are pushed by the REST client, the quote manager and the
  WebSocket client (:meth:`Metrics.on_rest_response`, :meth:`Metrics.rfq_to_quote`,
  :meth:`Metrics.accept_to_confirm`, :meth:`Metrics.ws_feed_delay`);
* state (open quotes, exposure, P&L, WebSocket counters, readiness) is read from the
  running daemon at scrape time through a :class:`Monitored` source, so a scrape sees one
  consistent picture and the hot path pays nothing for it.

Label values are bounded: reasons and endpoints come from fixed sets in the code, and a
guard folds anything past :data:`MAX_LABEL_VALUES` distinct values into ``other``. No RFQ,
quote or market id is ever a label.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Protocol

import orjson
import structlog
from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from mmbot import __version__
from mmbot.buildinfo import build_commit
from mmbot.config import ConfigError, ConfigProblem, MetricsSettings
from mmbot.kalshi.bookfeed import FeedStats
from mmbot.logs import records_dropped

__all__ = [
    "FAMILIES",
    "MAX_LABEL_VALUES",
    "PROCESS_FAMILIES",
    "Health",
    "Metrics",
    "MetricsServer",
    "Monitored",
    "State",
]

log = structlog.get_logger("mmbot.observability")

# A `_created` timestamp series per counter and histogram doubles the output and no
# dashboard or rule here reads it. The switch is process-wide, and mmbot owns its process.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Distinct values one label may take before further values are folded into ``other``.
MAX_LABEL_VALUES: Final = 64
_OTHER: Final = "other"

# Frame in to quote acknowledged: the target is a few milliseconds, so the buckets are
# dense below 10 ms and sparse above, up to the create deadline.
_QUOTE_BUCKETS: Final = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
# Accept in to confirm acknowledged: the window is 3 s on High Volatility Markets and
# about 30 s elsewhere.
_CONFIRM_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0,
)  # fmt: skip
# How far an accepted side's value fell between the quote and the last look, in dollars
# per contract. Dense around the cent-sized tolerances. Non-negative: a histogram with a
# negative bound loses its _sum series, so a move our way is observed as 0.
_LAST_LOOK_BUCKETS: Final = (
    0.0, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25,
)  # fmt: skip
_REST_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Exchange send to our receipt: under a millisecond from a colocated host, tens of ms over
# the internet, seconds only when the exchange (or our clock) is in trouble.
_FEED_DELAY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
# An order-book change at the exchange to the book we hold: the target is 50 ms at p99, so
# the buckets are dense around it.
_MD_LAG_BUCKETS: Final = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
)  # fmt: skip

#: Every family mmbot exports (names as exposed, without ``_total``/``_bucket`` suffixes
#: for counters and histograms) and its type. Tests check the dashboard and the alert
#: rules against this list, and that a scrape exposes exactly these.
FAMILIES: Final[dict[str, str]] = {
    # The contract named in the operations issue.
    "mmbot_rfqs_received_total": "counter",
    "mmbot_quotes_created_total": "counter",
    "mmbot_quotes_deleted_total": "counter",
    "mmbot_quotes_confirmed_total": "counter",
    "mmbot_quotes_declined_total": "counter",
    "mmbot_quotes_executed_total": "counter",
    "mmbot_open_quotes": "gauge",
    "mmbot_exposure_dollars": "gauge",
    "mmbot_realized_pnl_dollars": "gauge",
    "mmbot_rfq_to_quote_seconds": "histogram",
    "mmbot_confirm_latency_seconds": "histogram",
    "mmbot_ws_reconnects_total": "counter",
    "mmbot_ws_frames_invalid_total": "counter",
    "mmbot_rest_requests_total": "counter",
    "mmbot_rate_limited_total": "counter",
    "mmbot_build_info": "gauge",
    # Supporting figures an operator needs to act on the ones above.
    "mmbot_rfqs_skipped_total": "counter",
    "mmbot_quotes_replaced_total": "counter",
    "mmbot_quotes_failed_total": "counter",
    "mmbot_quotes_accepted_total": "counter",
    "mmbot_confirms_failed_total": "counter",
    "mmbot_reconciliations_total": "counter",
    "mmbot_rest_request_duration_seconds": "histogram",
    "mmbot_ws_frames_total": "counter",
    "mmbot_ws_frames_unknown_total": "counter",
    "mmbot_ws_connected": "gauge",
    "mmbot_ws_feed_delay_seconds": "histogram",
    "mmbot_ws_feed_clock_skew_total": "counter",
    "mmbot_ready": "gauge",
    "mmbot_kill_switch": "gauge",
    "mmbot_shadow_mode": "gauge",
    "mmbot_exposure_limit_dollars": "gauge",
    "mmbot_daily_loss_limit_dollars": "gauge",
    "mmbot_unrealized_pnl_dollars": "gauge",
    "mmbot_daily_pnl_dollars": "gauge",
    "mmbot_realized_pnl_today_dollars": "gauge",
    "mmbot_fees_today_dollars": "gauge",
    "mmbot_position_contracts": "gauge",
    "mmbot_positions_open": "gauge",
    "mmbot_marketdata_age_seconds": "gauge",
    "mmbot_journal_backlog_rows": "gauge",
    "mmbot_journal_rows_lost_total": "counter",
    "mmbot_journal_healthy": "gauge",
    "mmbot_quote_queue_depth": "gauge",
    "mmbot_quote_queue_peak": "gauge",
    "mmbot_rate_limit_waiters": "gauge",
    "mmbot_tasks_in_flight": "gauge",
    "mmbot_log_records_dropped_total": "counter",
    "mmbot_recording_enabled": "gauge",
    "mmbot_recording_rows_total": "counter",
    "mmbot_recording_rows_dropped_total": "counter",
    "mmbot_last_look_move_dollars": "histogram",
    "mmbot_marketdata_update_lag_seconds": "histogram",
    "mmbot_marketdata_stream_connected": "gauge",
    "mmbot_marketdata_stream_markets": "gauge",
    "mmbot_marketdata_stream_messages_total": "counter",
    "mmbot_marketdata_stream_gaps_total": "counter",
    "mmbot_marketdata_stream_malformed_total": "counter",
    "mmbot_marketdata_stream_resyncs_total": "counter",
}


#: The process's own figures, from prometheus_client's process collector (read from /proc,
#: so exported on Linux only): CPU, memory, file descriptors and start time. The last one
#: shows restarts.
PROCESS_FAMILIES: Final[dict[str, str]] = {
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
}


@dataclass(frozen=True, slots=True)
class Health:
    """Readiness and why not: the body of ``/readyz``."""

    ready: bool
    reasons: tuple[str, ...] = ()
    websocket_subscribed: bool = False
    market_data_age_seconds: float | None = None
    kill_switch: bool = False

    def to_json(self) -> dict[str, Any]:
        """The JSON body of ``/readyz``."""
        age = self.market_data_age_seconds
        return {
            "ready": self.ready,
            "reasons": list(self.reasons),
            "websocket_subscribed": self.websocket_subscribed,
            "market_data_age_seconds": None if age is None else round(age, 3),
            "kill_switch": self.kill_switch,
        }


@dataclass(frozen=True, slots=True)
class State:
    """The daemon's state at one instant, as the metrics report it."""

    open_quotes: int = 0
    exposure: Decimal = Decimal(0)
    exposure_limit: Decimal = Decimal(0)
    daily_loss_limit: Decimal = Decimal(0)
    realized_pnl: Decimal = Decimal(0)
    unrealized_pnl: Decimal = Decimal(0)
    daily_pnl: Decimal = Decimal(0)
    #: Realised since UTC midnight, including what was rebuilt from the journal at start.
    realized_pnl_today: Decimal = Decimal(0)
    #: Fees paid since UTC midnight, including what was rebuilt from the journal at start.
    fees_today: Decimal = Decimal(0)
    ws_frames: int = 0
    ws_invalid: int = 0
    ws_unknown: int = 0
    ws_reconnects: int = 0
    #: The order-book stream's counters (:class:`mmbot.kalshi.bookfeed.FeedStats`); None
    #: when market data is polled only.
    md: FeedStats | None = None
    journal_backlog: int = 0
    journal_lost: int = 0
    journal_healthy: bool = True
    quote_queue_depth: int = 0
    quote_queue_peak: int = 0
    read_waiters: int = 0
    write_waiters: int = 0
    tasks_in_flight: int = 0
    #: Net contracts per market (YES > 0, NO < 0), flat markets left out.
    positions: Mapping[str, Decimal] = field(default_factory=dict)
    health: Health = field(default_factory=lambda: Health(ready=False, reasons=("starting",)))
    #: Shadow mode (``run.shadow``): every RFQ priced, no write request sent.
    shadow: bool = False


class Monitored(Protocol):
    """What the metrics and health endpoints read from the running daemon."""

    def state(self) -> State:
        """The current state, computed once per scrape."""
        ...

    def health(self) -> Health:
        """Readiness, computed on each ``/readyz``."""
        ...


def _position_families(positions: Mapping[str, Decimal] | None) -> Iterator[Metric]:
    """Per-market positions, the largest MAX_LABEL_VALUES by size, and how many there are.

    Bounded by size rather than first seen: the markets an operator must see are the ones
    holding the most contracts, and a market that went flat drops out of the series.
    """
    by_market = GaugeMetricFamily(
        "mmbot_position_contracts",
        f"net contracts held per market (YES > 0, NO < 0); the {MAX_LABEL_VALUES} largest",
        labels=["market"],
    )
    count = GaugeMetricFamily("mmbot_positions_open", "markets in which we hold a position")
    if positions is not None:
        held = [(market, net) for market, net in positions.items() if net != 0]
        held.sort(key=lambda item: (-abs(item[1]), item[0]))
        for market, net in held[:MAX_LABEL_VALUES]:
            # The exposition format is text of a float; contracts stay Decimal up to here.
            by_market.add_metric([market], float(net))
        count.add_metric([], len(held))
    yield by_market
    yield count


class _BoundedLabel:
    """Admits up to ``limit`` distinct values; later new values become ``other``."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        text = value or "none"
        if text in self._seen:
            return text
        if len(self._seen) >= self._limit:
            return _OTHER
        self._seen.add(text)
        return text


class Metrics:
    """Every metric family mmbot exports, in a registry of its own."""

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        """Create the families in ``registry`` (a new one by default)."""
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._source: Monitored | None = None
        # A scrape reads a handful of small /proc files: kernel memory, not disk, so the
        # event loop that serves /metrics is not held up.
        ProcessCollector(registry=reg)

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
            # prometheus_client appends _total itself.
            return Counter(name.removesuffix("_total"), doc, list(labels), registry=reg)

        self.rfqs_received = counter("mmbot_rfqs_received_total", "RFQs received")
        self.rfqs_skipped = counter(
            "mmbot_rfqs_skipped_total", "RFQs not quoted, by reason", ["reason"]
        )
        self.quotes_created = counter("mmbot_quotes_created_total", "quotes created")
        self.quotes_replaced = counter(
            "mmbot_quotes_replaced_total", "quotes replaced at new prices"
        )
        self.quotes_failed = counter(
            "mmbot_quotes_failed_total", "quote creations the exchange refused or that failed"
        )
        self.quotes_deleted = counter(
            "mmbot_quotes_deleted_total", "quotes withdrawn, by reason", ["reason"]
        )
        self.quotes_accepted = counter(
            "mmbot_quotes_accepted_total", "acceptances of our quotes received"
        )
        self.quotes_confirmed = counter("mmbot_quotes_confirmed_total", "quotes confirmed")
        self.quotes_declined = counter(
            "mmbot_quotes_declined_total", "accepted quotes not confirmed, by reason", ["reason"]
        )
        self.confirms_failed = counter(
            "mmbot_confirms_failed_total", "confirmations that failed at the exchange"
        )
        self.quotes_executed = counter("mmbot_quotes_executed_total", "quotes executed (fills)")
        self.reconciliations = counter(
            "mmbot_reconciliations_total", "reconciliations with the exchange, by trigger",
            ["trigger"],
        )  # fmt: skip
        self.rest_requests = counter(
            "mmbot_rest_requests_total",
            "REST requests sent (each retry counts), by endpoint and HTTP status",
            ["endpoint", "status"],
        )
        self.rate_limited = counter(
            "mmbot_rate_limited_total", "REST requests answered 429 (rate limited)"
        )
        self.rest_duration = Histogram(
            "mmbot_rest_request_duration_seconds",
            "REST request round trip, by endpoint",
            ["endpoint"],
            buckets=_REST_BUCKETS,
            registry=reg,
        )
        self.rfq_to_quote_seconds = Histogram(
            "mmbot_rfq_to_quote_seconds",
            "from an RFQ's WebSocket frame received to its quote acknowledged",
            buckets=_QUOTE_BUCKETS,
            registry=reg,
        )
        self.confirm_latency_seconds = Histogram(
            "mmbot_confirm_latency_seconds",
            "from an acceptance's WebSocket frame received to the confirmation acknowledged",
            buckets=_CONFIRM_BUCKETS,
            registry=reg,
        )
        self.last_look_move_dollars = Histogram(
            "mmbot_last_look_move_dollars",
            "at each last look, how far the accepted side's value fell since the quote "
            "was priced (dollars per contract; a move our way counts as 0)",
            buckets=_LAST_LOOK_BUCKETS,
            registry=reg,
        )
        self.md_update_lag_seconds = Histogram(
            "mmbot_marketdata_update_lag_seconds",
            "from an order-book change's ts_ms at the exchange to the book the strategy "
            "reads being updated (our wall clock)",
            buckets=_MD_LAG_BUCKETS,
            registry=reg,
        )
        self.ws_feed_delay_seconds = Histogram(
            "mmbot_ws_feed_delay_seconds",
            "from the exchange's sending_ts_ms to the frame received (our wall clock); "
            "future stamps (clock skew) count as 0",
            buckets=_FEED_DELAY_BUCKETS,
            registry=reg,
        )
        self.ws_feed_clock_skew = counter(
            "mmbot_ws_feed_clock_skew_total",
            "frames stamped later than we received them: the exchange's clock is ahead of ours",
        )
        self._reasons = {
            "skipped": _BoundedLabel(),
            "deleted": _BoundedLabel(),
            "declined": _BoundedLabel(),
            "trigger": _BoundedLabel(),
        }
        self._endpoints = _BoundedLabel()
        self._statuses = _BoundedLabel()
        # Kind -> what to count; a dict lookup per journal row.
        self._by_kind: dict[str, Counter] = {
            "rfq_seen": self.rfqs_received,
            "quote_created": self.quotes_created,
            "quote_replaced": self.quotes_replaced,
            "quote_failed": self.quotes_failed,
            "accept_received": self.quotes_accepted,
            "confirm_sent": self.quotes_confirmed,
            "confirm_failed": self.confirms_failed,
            "execution": self.quotes_executed,
        }
        self._by_kind_reason: dict[str, tuple[Counter, _BoundedLabel]] = {
            "rfq_skipped": (self.rfqs_skipped, self._reasons["skipped"]),
            "quote_deleted": (self.quotes_deleted, self._reasons["deleted"]),
            "confirm_declined": (self.quotes_declined, self._reasons["declined"]),
            "reconciled": (self.reconciliations, self._reasons["trigger"]),
        }
        #: The research recorder's counts, while a run records.
        self.recording: RecordingStats | None = None
        reg.register(_StateCollector(self))

    # ------------------------------------------------------------------ sources

    def bind(self, source: Monitored | None) -> None:
        """Read state and readiness from ``source`` (the engine) from now on."""
        self._source = source

    def bind_recording(self, stats: RecordingStats | None) -> None:
        """Read the research recorder's counts from ``stats`` from now on (None: not recording)."""
        self.recording = stats

    @property
    def source(self) -> Monitored | None:
        """The bound daemon, if any."""
        return self._source

    def health(self) -> Health:
        """Readiness of the bound daemon; not ready while none is bound."""
        if self._source is None:
            return Health(ready=False, reasons=("starting",))
        return self._source.health()

    # ------------------------------------------------------------------ sinks

    def on_journal_record(self, kind: str, reason: str | None) -> None:
        """Count one journal row (a :class:`~mmbot.journal.Journal` listener)."""
        plain = self._by_kind.get(kind)
        if plain is not None:
            plain.inc()
            return
        labelled = self._by_kind_reason.get(kind)
        if labelled is not None:
            counter, bound = labelled
            counter.labels(bound(reason)).inc()

    def on_rest_response(self, endpoint: str, status: str, seconds: float) -> None:
        """Count one REST attempt: ``status`` is the HTTP status or ``error``."""
        name = self._endpoints(endpoint)
        self.rest_requests.labels(name, self._statuses(status)).inc()
        self.rest_duration.labels(name).observe(seconds)
        if status == "429":
            self.rate_limited.inc()

    def rfq_to_quote(self, seconds: float) -> None:
        """Observe one RFQ frame-to-quote-acknowledged latency."""
        self.rfq_to_quote_seconds.observe(seconds)

    def accept_to_confirm(self, seconds: float) -> None:
        """Observe one acceptance frame-to-confirm-acknowledged latency."""
        self.confirm_latency_seconds.observe(seconds)

    def last_look_move(self, moved: Decimal) -> None:
        """Observe how far (dollars) an accepted side moved against us by its last look."""
        # A histogram takes floats; the decision itself was made on the exact Decimal.
        self.last_look_move_dollars.observe(float(moved) if moved > 0 else 0.0)

    def md_update_lag(self, seconds: float) -> None:
        """Observe how far one applied order-book delta trailed the exchange's change."""
        # A stamp from a clock ahead of ours would be negative: the delay is then unknown,
        # and 0 is the least wrong bucket for it (the ws feed delay counts such skew).
        self.md_update_lag_seconds.observe(seconds if seconds > 0 else 0.0)

    def ws_feed_delay(self, seconds: float) -> None:
        """Observe one frame's exchange-to-daemon delay (``CommunicationsStream.on_feed_delay``).

        The two clocks differ: a negative delay (the exchange's clock ahead of ours) is
        counted in ``mmbot_ws_feed_clock_skew_total`` and observed as 0, so the histogram
        keeps one observation per stamped frame and the skew stays visible. A delay
        inflated by our clock running ahead lands in the top buckets.
        """
        if seconds < 0:
            self.ws_feed_clock_skew.inc()
            seconds = 0.0
        self.ws_feed_delay_seconds.observe(seconds)

    # ------------------------------------------------------------------ exposition

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition text for a scrape and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class RecordingStats(Protocol):
    """What the research recorder counts (:class:`mmbot.research.recorder.RecorderStats`)."""

    rows: int
    dropped: int


def _recording_families(stats: RecordingStats | None, *, described: bool = False) -> list[Metric]:
    """The research recorder's families: zero (and disabled) while a run does not record."""
    enabled = GaugeMetricFamily("mmbot_recording_enabled", "1 while this run records for research")
    rows = CounterMetricFamily("mmbot_recording_rows", "RFQ rows written to the research recording")
    dropped = CounterMetricFamily(
        "mmbot_recording_rows_dropped",
        "RFQ rows the research recording could not write (logged as recording_write_failed)",
    )
    if not described:
        enabled.add_metric([], 1.0 if stats is not None else 0.0)
        rows.add_metric([], stats.rows if stats is not None else 0)
        dropped.add_metric([], stats.dropped if stats is not None else 0)
    return [enabled, rows, dropped]


class _StateCollector(Collector):
    """Families read from the daemon at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        # Declared without values, so the registry knows the names without a scrape.
        return [*self._families(None), *_recording_families(None, described=True)]

    def collect(self) -> Iterable[Metric]:
        source = self._metrics.source
        state = source.state() if source is not None else State()
        return [*self._families(state), *_recording_families(self._metrics.recording)]

    @staticmethod
    def _families(state: State | None) -> Iterator[Metric]:
        def gauge(name: str, doc: str, value: float | Decimal | int | bool) -> Metric:
            family = GaugeMetricFamily(name, doc)
            if state is not None:
                # The exposition format is text of a float; Decimal stays exact up to here.
                family.add_metric([], float(value))
            return family

        def counter(name: str, doc: str, value: int) -> Metric:
            family = CounterMetricFamily(name.removesuffix("_total"), doc)
            if state is not None:
                family.add_metric([], value)
            return family

        s = state or State()
        yield gauge("mmbot_open_quotes", "quotes of ours live on the exchange", s.open_quotes)
        yield gauge(
            "mmbot_exposure_dollars",
            "dollars at risk: cost of positions plus reserved fills",
            s.exposure,
        )
        yield gauge("mmbot_exposure_limit_dollars", "risk.max_exposure_dollars", s.exposure_limit)
        yield gauge(
            "mmbot_daily_loss_limit_dollars", "risk.max_daily_loss_dollars", s.daily_loss_limit
        )
        yield gauge(
            "mmbot_realized_pnl_dollars", "realised P&L of this run, net of fees", s.realized_pnl
        )
        yield gauge(
            "mmbot_unrealized_pnl_dollars",
            "open positions marked at the reference mid",
            s.unrealized_pnl,
        )
        yield gauge(
            "mmbot_daily_pnl_dollars",
            "today's P&L as the daily loss limit reads it: realised since UTC midnight, "
            "positions marked to market, pending fills at their worst",
            s.daily_pnl,
        )
        yield gauge(
            "mmbot_realized_pnl_today_dollars",
            "P&L realised since UTC midnight net of fees, this run's and earlier runs' "
            "(from the journal)",
            s.realized_pnl_today,
        )
        yield gauge(
            "mmbot_fees_today_dollars",
            "fees paid since UTC midnight, this run's and earlier runs' (from the journal); "
            "already out of mmbot_realized_pnl_today_dollars",
            s.fees_today,
        )
        yield from _position_families(s.positions if state is not None else None)
        yield counter("mmbot_ws_frames_total", "WebSocket frames received", s.ws_frames)
        yield counter(
            "mmbot_ws_frames_invalid_total",
            "WebSocket frames that could not be parsed (counted and logged, then dropped)",
            s.ws_invalid,
        )
        yield counter(
            "mmbot_ws_frames_unknown_total",
            "WebSocket messages of a type mmbot does not know",
            s.ws_unknown,
        )
        yield counter(
            "mmbot_ws_reconnects_total", "WebSocket resubscriptions after a drop", s.ws_reconnects
        )
        md = s.md
        yield gauge(
            "mmbot_marketdata_stream_connected",
            "1 while the order-book WebSocket is connected",
            md is not None and md.connected,
        )
        yield gauge(
            "mmbot_marketdata_stream_markets",
            "markets followed on the order-book stream",
            md.markets if md is not None else 0,
        )
        yield counter(
            "mmbot_marketdata_stream_messages_total",
            "order-book snapshots and deltas applied",
            md.snapshots + md.deltas if md is not None else 0,
        )
        yield counter(
            "mmbot_marketdata_stream_gaps_total",
            "sequence gaps on the order-book stream (its books resynchronised)",
            md.gaps if md is not None else 0,
        )
        yield counter(
            "mmbot_marketdata_stream_malformed_total",
            "order-book frames that could not be read (counted, logged, books resynchronised)",
            md.malformed if md is not None else 0,
        )
        yield counter(
            "mmbot_marketdata_stream_resyncs_total",
            "snapshot requests after a gap or an unreadable frame",
            md.resyncs if md is not None else 0,
        )
        health = s.health
        yield gauge(
            "mmbot_ws_connected", "1 while the WebSocket is subscribed", health.websocket_subscribed
        )
        yield gauge("mmbot_ready", "1 while /readyz answers 200", health.ready)
        yield gauge("mmbot_kill_switch", "1 while the kill switch is on", health.kill_switch)
        yield gauge(
            "mmbot_shadow_mode", "1 in shadow mode: RFQs priced, no write request sent", s.shadow
        )
        age = health.market_data_age_seconds
        yield gauge(
            "mmbot_marketdata_age_seconds",
            "seconds since market data was last fetched successfully",
            -1.0 if age is None else age,
        )
        yield gauge(
            "mmbot_journal_backlog_rows", "journal rows not yet committed", s.journal_backlog
        )
        yield counter(
            "mmbot_journal_rows_lost_total",
            "journal rows that could not be written (logged instead)",
            s.journal_lost,
        )
        yield gauge("mmbot_journal_healthy", "1 while journal writes succeed", s.journal_healthy)
        yield gauge(
            "mmbot_quote_queue_depth",
            "new quotes waiting for write budget (bounded by quotes.max_queued)",
            s.quote_queue_depth,
        )
        yield gauge(
            "mmbot_quote_queue_peak", "the most new quotes ever waiting at once", s.quote_queue_peak
        )
        waiters = GaugeMetricFamily(
            "mmbot_rate_limit_waiters", "requests waiting for rate-limit tokens", labels=["lane"]
        )
        if state is not None:
            waiters.add_metric(["read"], float(s.read_waiters))
            waiters.add_metric(["write"], float(s.write_waiters))
        yield waiters
        yield gauge(
            "mmbot_tasks_in_flight",
            "event handlers running (RFQs being priced or sent, confirms, deletes)",
            s.tasks_in_flight,
        )
        # Process-wide rather than the daemon's: output is dropped before any daemon is bound.
        yield counter(
            "mmbot_log_records_dropped_total",
            "log and status lines dropped: output not keeping up, or not writable",
            records_dropped(),
        )
        info = GaugeMetricFamily(
            "mmbot_build_info",
            "mmbot build: version, git commit and Python",
            labels=["version", "commit", "python"],
        )
        info.add_metric([__version__, build_commit(), platform.python_version()], 1.0)
        yield info


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``metrics.host``:``metrics.port``."""

    def __init__(self, metrics: Metrics, settings: MetricsSettings) -> None:
        """Prepare the server; nothing listens before :meth:`start`."""
        self._metrics = metrics
        self._settings = settings
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        host = self._settings.host
        # A wildcard address is reached through loopback of its own family.
        shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, host)  # noqa: S104
        if ":" in shown and not shown.startswith("["):
            shown = f"[{shown}]"
        return f"http://{shown}:{self.port}"

    async def start(self) -> None:
        """Listen, or raise ConfigError naming ``metrics.port`` when the port is taken."""
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._settings.host, self._settings.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            address = f"{self._settings.host}:{self._settings.port}"
            raise ConfigError(
                [
                    ConfigProblem(
                        keys=("metrics.port", "metrics.host"),
                        note=f"cannot listen on {address}: {exc.strerror or exc}; "
                        "choose a free port (0 picks one) or set metrics.enabled = false",
                    )
                ]
            ) from None
        self._runner = runner
        # The bound address tells the port the OS chose when metrics.port is 0.
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else self._settings.port
        log.info("metrics_listening", url=self.url)

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _scrape(self, request: web.Request) -> web.Response:
        body, content_type = self._metrics.render(request.headers.get("Accept"))
        response = web.Response(body=body)
        # aiohttp refuses a charset inside content_type=; set the header whole.
        response.headers["Content-Type"] = content_type
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        # Answering at all is the signal: the event loop is alive and serving.
        return _json(200, {"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        try:
            health = self._metrics.health()
        except Exception:
            log.exception("readiness_check_failed")
            health = Health(ready=False, reasons=("readiness check failed",))
        return _json(200 if health.ready else 503, health.to_json())


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
