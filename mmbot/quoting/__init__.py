"""The quote lifecycle: create, replace, expire, confirm, delete (see :mod:`.manager`).

* :mod:`.manager`: :class:`QuoteManager`, the facade the engine drives;
* :mod:`.book`: :class:`QuoteBook`, our quotes and every index over them;
* :mod:`.pricing`: :func:`price_quote`, an RFQ's quote (or why none) as one pure function;
* :mod:`.gateway`: :class:`QuoteGateway`, the REST calls quoting makes;
* :mod:`.respond`, :mod:`.withdraw`, :mod:`.accept`, :mod:`.execution`: the flows;
* :mod:`.timing`: the exchange's time limits and our deadlines;
* :mod:`.stats`: counters and latencies.
"""

from mmbot.quoting.book import LiveQuote, QuoteBook
from mmbot.quoting.gateway import QuoteGateway
from mmbot.quoting.manager import QuoteManager
from mmbot.quoting.pricing import (
    Decline,
    Priced,
    QuoteRisk,
    expected_value,
    price_quote,
    rfq_contracts,
    shape_prices,
)
from mmbot.quoting.stats import Counters, LatencyObserver
from mmbot.quoting.timing import confirm_window_seconds

__all__ = [
    "Counters",
    "Decline",
    "LatencyObserver",
    "LiveQuote",
    "Priced",
    "QuoteBook",
    "QuoteGateway",
    "QuoteManager",
    "QuoteRisk",
    "confirm_window_seconds",
    "expected_value",
    "price_quote",
    "rfq_contracts",
    "shape_prices",
]
