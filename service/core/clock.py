"""The service's clock: where "now" comes from for validation, stamping, alerts and the demo.

Production uses the real time (:func:`system_clock`). Tests hand the service a clock pinned to
a chosen instant, so that what depends on the time of day (the demo's last morning, alert
windows, "today" on the dashboard) is the same whenever they run.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

#: A function returning the current time, timezone-aware.
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The real current time, in UTC."""
    return datetime.now(UTC)
