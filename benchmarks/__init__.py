"""Benchmarks of the mmbot daemon against the mock exchange (``mmbot bench``).

See ``benchmarks/README.md`` for what is measured, how, and how to reproduce a run.
"""

from __future__ import annotations
