"""Synthetic recordings: the mock exchange's simulated flow, faster than real time.

The mock's own pieces make the flow: :func:`~mmbot.mock.sim.generate_markets` for the
markets and their hidden fair values, :class:`~mmbot.mock.sim.RfqStream` for the
requesters' RFQs (Poisson arrivals, heavy-tailed sizes, a fifth sized by budget), and each
market's own random walk. Time is simulated, not waited for: a market is walked forward
only when it is read, over the time since it was last read, which draws the same
distribution as walking it at every step. Each RFQ row carries the market view at arrival
(the mock's book around the fair value), the mid at every horizon after it, and the fair
value, written by the daemon's own :class:`~mmbot.research.recorder.Recorder`, so a
synthetic recording has a dry-run's columns. It records no decisions and no fills
(``decision`` is ``synthetic``): replay it with the ``markout`` or ``threshold`` model.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from mmbot import __version__
from mmbot.kalshi.models import PriceRange, Rfq
from mmbot.mock.sim import RfqStream, SimMarket, generate_markets
from mmbot.research.recorder import Recorder
from mmbot.research.recording import collector_paused
from mmbot.strategy import MarketView

__all__ = ["synthesize"]

_TWO = Decimal(2)


def _mid(market: SimMarket) -> Decimal:
    return (market.yes_bid() + market.yes_ask()) / _TWO


def synthesize(
    directory: Path,
    *,
    rfqs: int,
    seed: int = 0,
    markets: int = 20,
    rfq_rate: float = 10.0,
    hvm_fraction: float = 0.2,
    horizons: Sequence[int] = (1, 10, 60, 300),
    start: datetime | None = None,
) -> Recorder:
    """Write a recording of ``rfqs`` simulated RFQs into ``directory``; return its recorder.

    The same arguments give the same rows, RFQ ids included.
    """
    with collector_paused():
        return _synthesize(
            directory,
            rfqs=rfqs,
            seed=seed,
            markets=markets,
            rfq_rate=rfq_rate,
            hvm_fraction=hvm_fraction,
            horizons=horizons,
            start=start,
        )


def _synthesize(
    directory: Path,
    *,
    rfqs: int,
    seed: int,
    markets: int,
    rfq_rate: float,
    hvm_fraction: float,
    horizons: Sequence[int],
    start: datetime | None,
) -> Recorder:
    if rfqs < 0:
        raise ValueError("rfqs cannot be negative")
    begin = start or datetime(2026, 1, 1, tzinfo=UTC)
    rng = random.Random(seed)  # noqa: S311 - simulation, not security
    sim_markets = generate_markets(markets, rng, hvm_fraction=hvm_fraction, now=begin)
    stream = RfqStream(seed, rfq_rate, sim_markets, [f"requester-{i}" for i in range(4)])
    walk = random.Random(f"mmbot-synthetic-walk:{seed}")  # noqa: S311 - simulation
    by_ticker = {m.ticker: m for m in sim_markets}
    walked = dict.fromkeys(by_ticker, 0.0)
    grids = {
        m.ticker: tuple(
            PriceRange.model_construct(start=b.start, end=b.end, step=b.step) for b in m.grid
        )
        for m in sim_markets
    }
    ordered = tuple(sorted(set(horizons)))
    run: dict[str, Any] = {
        "run_id": f"synthetic-{seed}",
        "mode": "synthetic",
        "version": __version__,
        "seed": seed,
        "synthetic": {
            "rfqs": rfqs,
            "markets": markets,
            "rfq_rate": rfq_rate,
            "hvm_fraction": hvm_fraction,
        },
    }
    recorder = Recorder(
        directory,
        horizons=ordered,
        run=run,
        mode="synthetic",
        fair_value=lambda _ticker: None,
    )
    directory.mkdir(parents=True, exist_ok=True)

    def advance(ticker: str, now: float) -> SimMarket:
        market = by_ticker[ticker]
        dt = now - walked[ticker]
        if dt > 0:
            market.step(walk, dt)
            walked[ticker] = now
        return market

    # Each RFQ waits for its horizons: (due time, order, row index, horizon index).
    due: list[tuple[float, int, int, int]] = []
    rows: deque[list[Any]] = deque()
    written = 0
    order = 0
    now = 0.0

    def sample_until(limit: float | None) -> None:
        nonlocal order
        while due and (limit is None or due[0][0] <= limit):
            when, _, row, index = heapq.heappop(due)
            entry = rows[row - written]
            entry[3][index] = _mid(advance(entry[0].market_ticker, when))
            entry[4] -= 1

    def flush_complete() -> None:
        nonlocal written
        while rows and rows[0][4] == 0:
            rfq, ts, view, mids, _, fair = rows.popleft()
            recorder.write_synthetic(rfq, ts, view, mids, fair)
            written += 1

    # Copies of one validated RFQ: model_construct would cost six times as much per row.
    template = Rfq.model_validate({"id": "", "market_ticker": ""})
    for number in range(rfqs):
        arrival = stream.next_arrival()
        if arrival is None:
            break
        gap, plan = arrival
        now += gap
        sample_until(now)
        flush_complete()
        market = advance(plan.market_ticker, now)
        bid, ask = market.yes_bid(), market.yes_ask()
        ts = begin + timedelta(seconds=now)
        rfq = template.model_copy(
            update={
                "id": f"syn-{seed}-{number:09d}",
                "creator_id": plan.requester,
                "market_ticker": market.ticker,
                "event_ticker": market.event_ticker,
                "contracts_fp": plan.contracts,
                "target_cost_dollars": plan.target_cost_dollars,
                "rest_remainder": plan.rest_remainder,
                "mve_collection_ticker": market.mve_collection_ticker,
                "created_ts": ts,
            }
        )
        view = MarketView(
            ticker=market.ticker,
            event_ticker=market.event_ticker,
            yes_bid=bid,
            yes_ask=ask,
            last_price=None,
            price_ranges=grids[market.ticker],
            hvm=market.hvm,
        )
        row = number
        rows.append([rfq, ts, view, [None] * len(ordered), len(ordered), market.fair()])
        for index, horizon in enumerate(ordered):
            order += 1
            heapq.heappush(due, (now + horizon, order, row, index))
    sample_until(None)
    flush_complete()
    recorder.close_synthetic()
    return recorder
