"""Helpers shared by the test modules; nothing here is collected as a test.

* :mod:`tests.support.env` - environments free of the developer's ``MMBOT_*`` settings.
* :mod:`tests.support.clock` - settable clocks for code that takes a ``clock`` callable.
* :mod:`tests.support.factories` - price grids, markets and RFQs built from few arguments.
* :mod:`tests.support.money` - the scan that finds floats holding money in Python source.
* :mod:`tests.support.quoting` - a QuoteManager over a scripted in-memory exchange.
* :mod:`tests.support.daemon` - the real daemon against the mock exchange, in or out of process.
* :mod:`tests.support.payloads` - valid example frames and REST bodies from Kalshi's docs.
* :mod:`tests.support.strategies_hostile` - Hypothesis strategies that break those examples.
* :mod:`tests.support.streams` - consuming a CommunicationsStream as the daemon does.
* :mod:`tests.support.polling` - waiting, within a bound, for a running system to get there.
* :mod:`tests.support.net` - loopback ports for servers a test starts.
* :mod:`tests.support.keys` - the API key id and the TestKey type the key fixtures make.
* :mod:`tests.support.mock` - a REST client of a running mock that never retries; now_ms.
* :mod:`tests.support.metric_contract` - the metric names and labels operators rely on.
* :mod:`tests.support.chaos_report` - ``python -m tests.support.chaos_report``: the chaos table.

Test modules import from here, never from one another (``tests/test_layout.py`` checks it).
"""
