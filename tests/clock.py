"""Pinned clocks for the tests that depend on the time of day (demo, alerts, dashboard).

The service takes its "now" from a clock (:mod:`service.core.clock`); these tests hand it one pinned
to a chosen instant, so that they pass whenever they run. :data:`NOW` is the instant most of them
use; the tests of ``test_any_hour`` modules run again at every instant of :data:`ANY_HOUR`: just
after and just before local midnight, around the demo's morning cut-off (08:30) and on both days
that Europe/Amsterdam switches between winter and summer time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

TZ = ZoneInfo("Europe/Amsterdam")

#: The instant the time-dependent tests run at, unless they run at every one of ANY_HOUR: a
#: Wednesday morning after every date the API guides' examples use.
NOW = datetime(2026, 11, 25, 10, 15, tzinfo=TZ)

#: Local times of day at which the clock-sensitive tests must pass, by test id.
ANY_HOUR: dict[str, datetime] = {
    "winter-00.30": datetime(2026, 1, 13, 0, 30, tzinfo=TZ),
    "winter-08.29": datetime(2026, 1, 13, 8, 29, tzinfo=TZ),
    "winter-23.30": datetime(2026, 1, 13, 23, 30, tzinfo=TZ),
    # 29 March 2026: 02:00 CET becomes 03:00 CEST (a 23-hour day)
    "spring-switch-00.30": datetime(2026, 3, 29, 0, 30, tzinfo=TZ),
    "spring-switch-23.30": datetime(2026, 3, 29, 23, 30, tzinfo=TZ),
    # 25 October 2026: 03:00 CEST becomes 02:00 CET (a 25-hour day); 02:30 comes twice
    "autumn-switch-02.30-again": datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=TZ),
    "autumn-switch-23.30": datetime(2026, 10, 25, 23, 30, tzinfo=TZ),
}


class PinnedClock:
    """A clock that starts at ``start`` and then runs at the speed of real time.

    It moves on, so that versions written one after the other still get increasing
    ``lastUpdated`` stamps; ``start`` itself is fixed, so the time of day is the one chosen.
    """

    def __init__(self, start: datetime) -> None:
        # in UTC: wall-clock arithmetic on a local time would lose the fold of a repeated hour
        self.start = start.astimezone(UTC)
        self._started = time.monotonic()

    def __call__(self) -> datetime:
        """The pinned instant plus the real time elapsed since the clock was made."""
        return self.start + timedelta(seconds=time.monotonic() - self._started)

    def advance(self, delta: timedelta) -> None:
        """Move the clock ``delta`` ahead (processing that happens later)."""
        self.start += delta
