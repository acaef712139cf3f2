"""Old home of :mod:`tests.support.polling`, kept only for test modules not yet moved over.

test_mock_contract.py, test_mock_faults.py and test_mock_server.py still import it from here;
delete this module once they import ``tests.support.polling``.
"""

from tests.support.polling import eventually

__all__ = ["eventually"]
