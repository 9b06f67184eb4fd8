"""Patient-local calendar days across DST changes in Europe/Amsterdam."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from service.alerts.days import day_length, day_start, local_day
from service.alerts.engine import evaluate
from service.alerts.measurements import Measurement
from tests.alerts.helpers import HF, alerts, m


def test_dst_days_are_23_and_25_hours() -> None:
    assert day_length(date(2026, 3, 29)) == timedelta(hours=23)  # last Sunday of March
    assert day_length(date(2026, 10, 25)) == timedelta(hours=25)  # last Sunday of October
    assert day_start(date(2026, 10, 26)) == datetime(2026, 10, 25, 23, 0, tzinfo=UTC)


def test_local_day_near_midnight() -> None:
    assert local_day(datetime(2026, 3, 28, 23, 30, tzinfo=UTC)) == date(2026, 3, 29)
    assert local_day(datetime(2026, 10, 25, 22, 30, tzinfo=UTC)) == date(2026, 10, 25)


def _weights(times_values: list[tuple[datetime, float]]) -> list[Measurement]:
    return [m(f"w{i}", "weight", v, t) for i, (t, v) in enumerate(times_values)]


def test_yesterday_is_a_calendar_day_over_spring_forward() -> None:
    # Saturday 23:30 CET and Sunday 23:45 CEST are 23 h 15 min apart, yet consecutive days.
    ms = _weights(
        [
            (datetime(2026, 3, 28, 22, 30, tzinfo=UTC), 80.0),
            (datetime(2026, 3, 29, 21, 45, tzinfo=UTC), 81.1),
        ]
    )
    a = alerts(evaluate(HF, ms, [], datetime(2026, 3, 30, 8, 0, tzinfo=UTC)))
    assert a["HF-WT-1D"].text == "Weight gain in 1 day: +1.1 kg (limit > +1 kg), 29 Mar 23:45"
    assert a["HF-WT-1D"].detail == "81.1 kg; lowest of the 1 day before: 80 kg on 28 Mar"


def test_after_spring_forward_monday_0030_is_not_sunday() -> None:
    # Sunday 22:30Z is Monday 00:30 CEST: Saturday -> Monday is 2 days, no 1-day gain.
    ms = _weights(
        [
            (datetime(2026, 3, 28, 6, 30, tzinfo=UTC), 80.0),
            (datetime(2026, 3, 29, 22, 30, tzinfo=UTC), 81.5),
        ]
    )
    assert alerts(evaluate(HF, ms, [], datetime(2026, 3, 30, 8, 0, tzinfo=UTC))) == {}


def test_yesterday_over_fall_back_uses_local_days() -> None:
    # Sunday 25 Oct 00:30 local (Sat 22:30Z) and Monday 26 Oct 00:10 local (Sun 23:10Z):
    # 24 h 40 min apart but consecutive calendar days -> the 1-day rule applies.
    ms = _weights(
        [
            (datetime(2026, 10, 24, 22, 30, tzinfo=UTC), 80.0),
            (datetime(2026, 10, 25, 23, 10, tzinfo=UTC), 81.2),
        ]
    )
    a = alerts(evaluate(HF, ms, [], datetime(2026, 10, 26, 8, 0, tzinfo=UTC)))
    assert a["HF-WT-1D"].text == "Weight gain in 1 day: +1.2 kg (limit > +1 kg), 26 Oct 00:10"
    assert a["HF-WT-1D"].detail == "81.2 kg; lowest of the 1 day before: 80 kg on 25 Oct"
