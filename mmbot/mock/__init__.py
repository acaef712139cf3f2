"""Mock Kalshi exchange for dry runs and tests."""
