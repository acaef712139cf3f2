"""What a benchmark run measures: its phases and every knob of ``mmbot bench``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["BenchOptions", "PhaseSpec"]


@dataclass(frozen=True)
class PhaseSpec:
    """One measured phase: who quotes, at what rate, against which write budget."""

    name: str
    quoter: str  # "daemon", "baseline" (naive) or "lean"
    rate: float
    #: Mock and daemon write budget, tokens/s and capacity (quote create = 2 tokens).
    write_tokens_per_second: float
    write_bucket_capacity: float


@dataclass
class BenchOptions:
    """How to run the benchmark; :meth:`quick` and :meth:`full` give the documented sets."""

    low_rate: float = 100.0
    high_rate: float = 1000.0
    warmup_seconds: float = 10.0
    measure_seconds: float = 60.0
    #: Write budget of the throttled phase: 200 tokens/s = 100 quote creations/s.
    budget_tokens_per_second: float = 200.0
    budget_capacity: float = 200.0
    #: Budget of the latency phase: generous, so it measures latency rather than shedding.
    open_tokens_per_second: float = 5000.0
    open_capacity: float = 5000.0
    markets: int = 100
    accept_fraction: float = 0.1
    rfq_lifetime_seconds: float = 3.0
    baseline_high: bool = True
    lean_high: bool = True
    soak: bool = True
    soak_rate: float = 1000.0
    soak_rfqs: int = 1_000_000
    soak_checkpoint: int = 100_000
    soak_max_seconds: float = 1200.0
    seed: int = 0
    #: Pin the exchange to CPU 0 and the quoter under test to CPU 1 (on 2+ CPUs): the
    #: exchange stands in for Kalshi's remote machine, so it should not steal the
    #: quoter's core.
    pin_cpus: bool = True
    quick: bool = False
    json_out: Path | None = None
    plot: Path | None = None
    log_dir: Path | None = None
    phases: tuple[str, ...] = ()
    #: ``run.event_loop`` written into the daemon's config; None leaves the key out (its
    #: default applies).
    daemon_event_loop: str | None = None
    #: Whether the daemon records its run for research (``recording.enabled``).
    daemon_recording: bool = False
    #: ``marketdata.stream`` and ``quotes.last_look`` in the daemon's config; None leaves
    #: the key out (its default applies: both on).
    daemon_md_stream: bool | None = None
    daemon_last_look: bool | None = None
    #: Order-book changes per second the exchange publishes on top of its own walk, during
    #: daemon phases (0: only the walk).
    md_updates_per_second: float = 0.0
    #: ``--event-loop`` of the lean quoter.
    lean_event_loop: str = "auto"

    @classmethod
    def quick_run(cls) -> BenchOptions:
        """Short phases, no soak: under two minutes on a 2-core machine."""
        return cls(warmup_seconds=3.0, measure_seconds=10.0, soak=False, quick=True)

    def phase_specs(self) -> list[PhaseSpec]:
        """The phases this run measures, in order."""
        specs = [
            PhaseSpec(
                "daemon_low",
                "daemon",
                self.low_rate,
                self.open_tokens_per_second,
                self.open_capacity,
            ),
            PhaseSpec(
                "baseline_low",
                "baseline",
                self.low_rate,
                self.open_tokens_per_second,
                self.open_capacity,
            ),
            PhaseSpec(
                "lean_low",
                "lean",
                self.low_rate,
                self.open_tokens_per_second,
                self.open_capacity,
            ),
            PhaseSpec(
                "daemon_high",
                "daemon",
                self.high_rate,
                self.budget_tokens_per_second,
                self.budget_capacity,
            ),
        ]
        if self.baseline_high:
            specs.append(
                PhaseSpec(
                    "baseline_high",
                    "baseline",
                    self.high_rate,
                    self.budget_tokens_per_second,
                    self.budget_capacity,
                )
            )
        if self.lean_high:
            specs.append(
                PhaseSpec(
                    "lean_high",
                    "lean",
                    self.high_rate,
                    self.budget_tokens_per_second,
                    self.budget_capacity,
                )
            )
        if self.phases:
            specs = [s for s in specs if s.name in self.phases]
        return specs
