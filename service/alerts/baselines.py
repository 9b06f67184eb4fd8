"""Personal baselines: clinician-set values first, otherwise medians of recent data.

See docs/alerts/engine.md#baselines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from statistics import median
from zoneinfo import ZoneInfo

from service.alerts.days import local_day
from service.alerts.measurements import Measurement
from service.alerts.results import Baseline


def _window_days(day: date, window_days: int, exclude_recent_days: int) -> tuple[date, date]:
    """First and last local day used: the last ``window_days`` minus the most recent ones.

    Excluding recent days stops the change we want to detect from contaminating the baseline.
    """
    return day - timedelta(days=window_days - 1), day - timedelta(days=exclude_recent_days)


def daily_value_baseline(
    daily: Mapping[date, Measurement],
    day: date,
    *,
    clinician_value: float | None,
    window_days: int,
    exclude_recent_days: int,
    min_values: int,
    unit: str,
) -> Baseline | None:
    """Baseline for a first-of-day series (HF dry weight).

    The clinician value (``streefgewicht``) wins; otherwise the median of the daily values in the
    window, or None when fewer than ``min_values`` exist.
    """
    if clinician_value is not None:
        return Baseline(clinician_value, unit, "clinician-set")
    first, last = _window_days(day, window_days, exclude_recent_days)
    values = [m.value for d, m in daily.items() if first <= d <= last]
    if len(values) < min_values:
        return None
    method = f"median {window_days} d excl. last {exclude_recent_days} d"
    return Baseline(median(values), unit, method, len(values))


def reading_baseline(
    readings: Sequence[Measurement],
    at: datetime,
    tz: ZoneInfo,
    *,
    clinician_value: float | None,
    window_days: int,
    exclude_recent_days: int,
    min_values: int,
    unit: str,
    room_air_only: bool = False,
) -> Baseline | None:
    """Baseline over individual readings (SpO2, HR, SBP, PEF), optionally room-air only."""
    if clinician_value is not None:
        return Baseline(clinician_value, unit, "clinician-set")
    first, last = _window_days(local_day(at, tz), window_days, exclude_recent_days)
    values = [
        m.value
        for m in readings
        if first <= local_day(m.effective, tz) <= last
        and not (room_air_only and m.on_supplemental_oxygen)
    ]
    if len(values) < min_values:
        return None
    suffix = ", room air" if room_air_only else ""
    method = f"median {window_days} d excl. last {exclude_recent_days} d{suffix}"
    return Baseline(median(values), unit, method, len(values))


def previous_scores_baseline(
    previous: Sequence[Measurement], *, clinician_value: float | None, count: int, unit: str
) -> Baseline | None:
    """CAT/CCQ baseline: the clinician value, else the median of the last ``count`` scores."""
    if clinician_value is not None:
        return Baseline(clinician_value, unit, "clinician-set")
    if len(previous) < count:
        return None
    values = [m.value for m in previous[-count:]]
    return Baseline(median(values), unit, f"median of last {count} assessments", count)
