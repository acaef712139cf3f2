"""Assembly of the daemon: the one place its parts are built and wired to one another.

The exchange clients, the journal and the metrics are made (and closed) by the caller,
which owns their lifetimes; :func:`build_engine` builds everything that lives inside them:
the risk book, market data, the quote manager and the engine.
"""

from __future__ import annotations

from collections.abc import Callable

from mmbot.config import Settings
from mmbot.engine import Engine, ReconcileRequests
from mmbot.fees import FeeModel
from mmbot.journal import Journal
from mmbot.kalshi.bookfeed import OrderbookFeed
from mmbot.kalshi.rest import KalshiRestClient
from mmbot.kalshi.ws import CommunicationsStream
from mmbot.marketdata import MarketData
from mmbot.observability import Metrics
from mmbot.quoting import QuoteManager
from mmbot.quoting.respond import DecisionObserver
from mmbot.risk import RiskBook, RiskLimits
from mmbot.strategy import StrategyRouter
from mmbot.tasks import TaskSupervisor

__all__ = ["build_engine", "risk_limits"]


def risk_limits(settings: Settings) -> RiskLimits:
    """The risk limits the settings ask for."""
    risk = settings.risk
    return RiskLimits(
        max_contracts_per_rfq=risk.max_contracts_per_rfq,
        max_position_per_market=risk.max_position_per_market,
        max_exposure_dollars=risk.max_exposure_dollars,
        max_open_quotes=risk.max_open_quotes,
        max_daily_loss_dollars=risk.max_daily_loss_dollars,
    )


def build_engine(
    settings: Settings,
    *,
    rest: KalshiRestClient,
    stream: CommunicationsStream,
    journal: Journal,
    feed: OrderbookFeed | None = None,
    router: StrategyRouter,
    metrics: Metrics | None = None,
    status: Callable[[str], None] | None = None,
    adopt_orphans: bool = False,
    observer: DecisionObserver | None = None,
) -> Engine:
    """Build the risk book, market data, quote manager and engine, wired to one another.

    ``feed`` (if any) streams the books of the markets RFQs come for; REST polls only
    what it does not cover. ``metrics`` (if any) observes the quote latencies, the stream's
    feed delay and the books' lag, and reads its state from the engine;
    ``status`` is given the periodic status line, when logs are not JSON; with JSON logs the
    engine logs a ``status`` event instead (see :meth:`Engine.report_status`). With
    ``run.shadow`` set, ``rest`` must be read-only and nothing is quoted. ``observer`` (the
    research recorder) is told of every RFQ and how it was priced, so of each quote a shadow
    run would have sent.
    """
    shadow = settings.run.shadow
    if shadow and not rest.read_only:
        # The client is what guarantees that nothing is written; never shadow without it.
        raise ValueError("shadow mode needs a read-only REST client (read_only=True)")
    risk = RiskBook(risk_limits(settings))
    # Every price stored marks the risk book's positions and pending fills to market.
    market_data = MarketData(
        rest,
        ttl_seconds=settings.marketdata.ttl_seconds,
        refresh_seconds=settings.marketdata.refresh_seconds,
        price_listeners=(risk.mark,),
        feed=feed,
    )
    reconcile_requests = ReconcileRequests()
    # One supervisor for every event's task, the engine's and the quote manager's alike.
    tasks = TaskSupervisor()
    quotes = QuoteManager(
        rest,
        market_data,
        router,
        risk,
        journal,
        settings.quotes,
        latency=metrics,
        on_reconcile_needed=reconcile_requests,
        tasks=tasks,
        shadow=shadow,
        observer=observer,
        fee_model=FeeModel.from_settings(settings.fees),
    )
    # The one registration after construction: the quote manager reads market data and
    # market data tells it of refreshes, so one of the two has to exist first.
    market_data.on_refresh = quotes.on_market
    engine = Engine(
        settings,
        rest=rest,
        stream=stream,
        journal=journal,
        risk=risk,
        router=router,
        market_data=market_data,
        quotes=quotes,
        reconcile_requests=reconcile_requests,
        tasks=tasks,
        status=status,
        adopt_orphans=adopt_orphans,
    )
    if metrics is not None:
        metrics.bind(engine)
        # The stream is built before the metrics are known to it (see clients.py).
        stream.on_feed_delay = metrics.ws_feed_delay
        if feed is not None:
            feed.on_lag = metrics.md_update_lag
    return engine
