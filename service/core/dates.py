"""FHIR date/dateTime/instant values as ranges of UTC microseconds.

Every date is indexed and searched as an inclusive range ``[low, high]``: ``2026`` covers the
whole year, ``2026-11-01T08:00:00+01:00`` a single second, an instant with milliseconds a single
millisecond. Values without an offset are read in the server's zone (dates have no offset).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from functools import lru_cache

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = 1_000_000

_PATTERN = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$",
    re.ASCII,  # \d is [0-9], not every Unicode digit
)


class DateFormatError(ValueError):
    """A string that is not a FHIR date, dateTime or instant."""


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch for an aware datetime."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime for microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=micros)


def format_instant(micros: int) -> str:
    """A FHIR instant (UTC, millisecond precision) for microseconds since the epoch."""
    return from_micros(micros).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def parse_range(value: str, zone: tzinfo) -> tuple[int, int]:
    """The inclusive UTC microsecond range a FHIR date/dateTime/instant string denotes.

    ``zone`` reads values without an offset. Raises :class:`DateFormatError` for anything else.
    """
    # A write parses its effective time several times (profile check, search index, alert
    # engine), each with another zone; for a value with an offset the zone plays no part, so
    # those share one cache entry.
    if value.endswith("Z") or _OWN_OFFSET.search(value):
        zone = UTC
    return _parse_range(value, zone)


_OWN_OFFSET = re.compile(r"T.*[+-]\d\d:\d\d$", re.ASCII)


@lru_cache(maxsize=4096)
def _parse_range(value: str, zone: tzinfo) -> tuple[int, int]:
    match = _PATTERN.match(value)
    if match is None:
        raise DateFormatError(f"'{value}' is not a valid FHIR date/dateTime")
    g = match.groupdict()
    try:
        year = int(g["y"])
        tz: tzinfo = zone
        if g["tz"]:
            tz = UTC if g["tz"] == "Z" else _offset(g["tz"])
        if g["m"] is None:
            start = datetime(year, 1, 1, tzinfo=tz)
            end = datetime(year + 1, 1, 1, tzinfo=tz)
        elif g["d"] is None:
            month = int(g["m"])
            start = datetime(year, month, 1, tzinfo=tz)
            ny, nm = _add_months(year, month, 1)
            end = datetime(ny, nm, 1, tzinfo=tz)
        elif g["H"] is None:
            start = datetime(year, int(g["m"]), int(g["d"]), tzinfo=tz)
            # Local calendar day: 23 or 25 hours on DST days, so add a day in local time.
            end = datetime.combine(start.date() + timedelta(days=1), start.timetz())
        else:
            fraction = g["f"] or ""
            micro = int((fraction + "000000")[:6]) if fraction else 0
            # A leap second (:60) is valid FHIR but no Python datetime: read it as :59.
            second = min(int(g["S"]), 59) if g["S"] is not None else 0
            start = datetime(
                year, int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]), second, micro, tzinfo=tz
            )
            if g["S"] is None:
                step = timedelta(minutes=1)
            elif not fraction:
                step = timedelta(seconds=1)
            else:
                step = timedelta(microseconds=10 ** max(0, 6 - len(fraction)))
            end = start + step
    except (ValueError, OverflowError) as exc:  # month 13, day 31 in April, 9999-12-31+1
        raise DateFormatError(f"'{value}' is not a valid FHIR date/dateTime: {exc}") from exc
    return to_micros(start), to_micros(end) - 1


_EARLIEST_ZONE = timezone(timedelta(hours=14))
_LATEST_ZONE = timezone(timedelta(hours=-12))


def possible_instants(value: str) -> tuple[datetime, datetime]:
    """The earliest and latest instants ``value`` can mean, for plausibility checks.

    A value without a time has no zone, so it is widened to every zone on earth (UTC+14 to
    UTC-12): a check that rejects only when even the most favourable reading fails never
    rejects a legitimate local date. A time without an offset is an error (FHIR requires one).
    """
    match = _PATTERN.match(value)
    if match and match.group("H") and not match.group("tz"):
        raise DateFormatError(
            f"'{value}' has a time but no timezone offset; FHIR requires one (e.g. Z or +01:00)"
        )
    if match and match.group("H") and match.group("S") is None:
        raise DateFormatError(f"'{value}' is not a valid FHIR dateTime (seconds are required)")
    low = parse_range(value, _EARLIEST_ZONE)[0]
    high = parse_range(value, _LATEST_ZONE)[1]
    if match and match.group("H"):  # a time with an offset denotes one instant
        high = low
    return from_micros(low), from_micros(high)


#: The days a device clock that was never set shows: the Unix epoch, and 2000-01-01, where the
#: real-time clocks of many home measuring devices start counting after a battery change.
UNSET_CLOCK_DAYS = frozenset({date(1970, 1, 1), date(2000, 1, 1)})


def shows_unset_clock(moment: datetime) -> bool:
    """True when an aware ``moment`` (in its original offset) lies on an unset clock's day.

    The day counts both as written (in its own offset) and in UTC: a device counting from its
    epoch in UTC may be shown in any zone.
    """
    return moment.date() in UNSET_CLOCK_DAYS or moment.astimezone(UTC).date() in UNSET_CLOCK_DAYS


def unset_clock(value: str) -> bool:
    """True when the FHIR dateTime/instant ``value`` is plainly a device clock that was never set.

    Only a value with a time of day counts: a date alone (``2000-01-01``) is what an EHR
    records, not a device clock. See :data:`UNSET_CLOCK_DAYS`.
    """
    match = _PATTERN.match(value)
    if match is None or match.group("H") is None or not match.group("tz"):
        return False
    tz = UTC if match.group("tz") == "Z" else _offset(match.group("tz"))
    try:
        low = parse_range(value, UTC)[0]
    except DateFormatError:
        return False
    return shows_unset_clock(from_micros(low).astimezone(tz))


def _offset(text: str) -> timezone:
    sign = 1 if text[0] == "+" else -1
    return timezone(sign * timedelta(hours=int(text[1:3]), minutes=int(text[4:6])))
