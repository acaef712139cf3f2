"""Argument types shared by the subcommands' parsers."""

from __future__ import annotations

import argparse
import math

__all__ = ["positive_seconds"]


def positive_seconds(text: str) -> float:
    """Parse a finite, positive number of seconds, or raise argparse's usage error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    # inf would make a timer that never fires and nan compares false with everything.
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError("expected a positive number of seconds")
    return value
