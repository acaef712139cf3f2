"""Old home of :mod:`tests.support.streams`, kept only for test modules not yet moved over.

test_mock_faults.py and test_mock_server.py still import it from here; delete this module
once they import ``tests.support.streams``.
"""

from tests.support.streams import Consumer, consuming, consuming_mock, until

__all__ = ["Consumer", "consuming", "consuming_mock", "until"]
