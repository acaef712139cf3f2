"""The benchmark behind ``mmbot bench``: harness, baselines, process probes and statistics.

It ships with the package so the command works wherever mmbot is installed; the
stand-alone micro-benchmarks (HTTP clients, signing) stay in the repository's
``benchmarks/`` folder, which is not installed.
"""
