"""The instants a FHIR date/dateTime string can denote (used by the profile validator)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.core.dates import possible_instants as instant_bounds


def test_full_datetime_is_one_instant() -> None:
    low, high = instant_bounds("2024-03-31T02:30:00.123+02:00")
    assert low == high == datetime(2024, 3, 31, 0, 30, 0, 123000, tzinfo=UTC)


def test_partial_dates_cover_every_zone() -> None:
    low, high = instant_bounds("2024-02")
    assert low == datetime(2024, 1, 31, 10, 0, tzinfo=UTC)  # 1 Feb 00:00 at UTC+14
    assert high == datetime(2024, 3, 1, 11, 59, 59, 999999, tzinfo=UTC)  # 29 Feb 24:00 at UTC-12


def test_leap_second_is_accepted() -> None:
    low, _ = instant_bounds("2016-12-31T23:59:60Z")
    assert low == datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2024-06-01T10:00:00", "no timezone offset"),
        ("2024-06-01T10:00+01:00", "seconds are required"),
        ("2024-04-31", "not a valid"),
        ("2024-06-01T10:00:00+25:00", "not a valid"),
        ("yesterday", "not a valid"),
    ],
)
def test_rejects(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        instant_bounds(value)
