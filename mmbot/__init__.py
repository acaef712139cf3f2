"""mmbot: an automated market maker for Kalshi's RFQ rail."""

__version__ = "0.1.0"
