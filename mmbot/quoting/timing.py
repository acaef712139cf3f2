"""The exchange's time limits on a quote, and the deadlines and delays the daemon keeps.

The flows read these as ``timing.NAME`` when they need them, never imported by value, so a
test can patch one in place (as it could when they were globals of one module).
"""

from __future__ import annotations

__all__ = ["confirm_window_seconds"]

_CONFIRM_WINDOW = (30.0, 3.0)  # standard, High Volatility Market
_EXECUTION_TIMER = (15.0, 1.0)
# Confirm well inside the window: the requester's clock started before our event arrived.
_CONFIRM_SHARE = 0.8
# After the execution timer, how long to wait for quote_executed before asking over REST.
_EXECUTION_GRACE_SECONDS = 5.0
# Repeated looks at a quote whose execution is late back off to this interval: a look-up
# that keeps failing must not cost a read every five seconds for as long as it fails.
_EXECUTION_CHECK_MAX_SECONDS = 60.0
_CREATE_DEADLINE_SECONDS = 2.0
_DELETE_DEADLINE_SECONDS = 2.0
# A withdrawal whose DELETE failed tries again after a full-jitter backoff up to this cap:
# short enough that a quote outlives an exchange blip by seconds, not minutes.
_WITHDRAW_RETRY_BASE_SECONDS = 0.25
_WITHDRAW_RETRY_CAP_SECONDS = 2.0
# Delays before each look at the fills of an execution: the fills listing may trail the
# quote_executed event by a moment.
_FILL_LOOKUP_DELAYS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def confirm_window_seconds(hvm: bool) -> float:
    """Time the exchange allows to confirm an accepted quote."""
    return _CONFIRM_WINDOW[1] if hvm else _CONFIRM_WINDOW[0]
