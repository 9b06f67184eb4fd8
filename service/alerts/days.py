"""Patient-local calendar days.

"Yesterday" is a calendar day in the patient's zone, never "24 h ago": DST transition days in
Europe/Amsterdam last 23 h (last Sunday of March) or 25 h (last Sunday of October).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

DEFAULT_TZ = ZoneInfo("Europe/Amsterdam")


@lru_cache(maxsize=65_536)  # baselines ask for the same readings' days over and over
def local_day(instant: datetime, tz: ZoneInfo = DEFAULT_TZ) -> date:
    """The patient-local calendar day on which an aware instant falls."""
    return instant.astimezone(tz).date()


def day_start(day: date, tz: ZoneInfo = DEFAULT_TZ) -> datetime:
    """The UTC instant at which a local calendar day begins."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def day_length(day: date, tz: ZoneInfo = DEFAULT_TZ) -> timedelta:
    """How long a local calendar day lasts (23, 24 or 25 h around DST changes)."""
    return day_start(day + timedelta(days=1), tz) - day_start(day, tz)
