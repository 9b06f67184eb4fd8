"""The instants a FHIR ``date``/``dateTime``/``instant`` string can denote, for plausibility checks.

A partial value (``2024``, ``2024-05``, ``2024-05-01``) has no zone, so it is widened to every zone
on earth (UTC+14 ... UTC-12): a check that rejects only when even the most favourable reading fails
never rejects a legitimate local date.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta, timezone

_PATTERN = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2}):(?P<S>\d{2})(?:\.(?P<f>\d+))?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_EARLIEST_ZONE = timezone(timedelta(hours=14))
_LATEST_ZONE = timezone(timedelta(hours=-12))


def instant_bounds(value: str) -> tuple[datetime, datetime]:
    """The earliest and latest aware instants ``value`` can mean.

    Raises ``ValueError`` with a readable message for malformed values and for a time without a
    timezone offset (FHIR requires the offset whenever a time is given).
    """
    match = _PATTERN.fullmatch(value)
    if match is None:
        raise ValueError(f"'{value}' is not a valid FHIR date/dateTime")
    g = match.groupdict()
    if g["H"] is not None and g["tz"] is None:
        raise ValueError(
            f"'{value}' has a time but no timezone offset; FHIR requires one (e.g. Z or +01:00)"
        )
    year = int(g["y"])
    try:
        if g["H"] is None:
            month_lo, month_hi = (int(g["m"]),) * 2 if g["m"] else (1, 12)
            day_lo = int(g["d"]) if g["d"] else 1
            day_hi = int(g["d"]) if g["d"] else calendar.monthrange(year, month_hi)[1]
            low = datetime(year, month_lo, day_lo, tzinfo=_EARLIEST_ZONE)
            high = datetime(year, month_hi, day_hi, tzinfo=_LATEST_ZONE) + timedelta(days=1)
            return low, high - timedelta(microseconds=1)
        # The regex guarantees FHIR syntax; the C parser is the fast way to the value. A leap
        # second (:60) is valid FHIR but no Python datetime: read it as :59.
        text = value
        if g["S"] == "60":
            text = value[: match.start("S")] + "59" + value[match.end("S") :]
        moment = datetime.fromisoformat(text)
    except ValueError as exc:  # day 31 in April, hour 25, offset +25:00, ...
        raise ValueError(f"'{value}' is not a valid FHIR date/dateTime: {exc}") from None
    return moment, moment
