"""Day-based alert rules at every pinned time of day (tests.clock.ANY_HOUR), through the API.

"Today" is the patient's local calendar day at the service's now: just after midnight, just
before it, and on the days the clocks change, a weight taken minutes ago is today's weight and
the mornings before it are the days before.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

import pytest

from tests.alerts_api.conftest import TZ, Api, bp, priority, rule_of, temp, text, weight
from tests.clock import ANY_HOUR, PinnedClock


@pytest.fixture(params=list(ANY_HOUR.values()), ids=list(ANY_HOUR))
def clock(request: pytest.FixtureRequest) -> PinnedClock:
    """The service clock, pinned to each instant of ANY_HOUR in turn."""
    instant: datetime = request.param
    return PinnedClock(instant)


def test_weight_gain_days_and_thresholds_at_any_hour(api: Api, clock: PinnedClock) -> None:
    now = clock().astimezone(TZ)
    today = now.date()

    def morning(days_before: int) -> str:
        return datetime.combine(today - timedelta(days=days_before), time(7, 0), TZ).isoformat()

    just_now = (now - timedelta(minutes=20)).isoformat()
    assert datetime.fromisoformat(just_now).astimezone(TZ).date() == today  # still today
    pid = api.enrol(programmes=["HF", "COPD"])
    api.post(
        weight(pid, 79.0, morning(3)),
        weight(pid, 79.2, morning(2)),
        weight(pid, 79.6, morning(1)),
    )
    assert api.flags(pid) == []  # no gain yet
    api.post(weight(pid, 81.3, just_now))  # +2.3 kg in 3 days, +1.7 kg since yesterday
    (gain,) = api.flags(pid, status="active")
    assert rule_of(gain) == "HF-WT-3D" and priority(gain) == "PM"
    assert "Weight gain in 3 days: +2.3 kg" in text(gain)
    assert "Weight gain in 1 day: +1.7 kg (limit > +1 kg)" in text(gain)  # merged: a reason

    api.post(
        bp(pid, 205, 95, (now - timedelta(minutes=12)).isoformat()),
        temp(pid, 39.6, (now - timedelta(minutes=5)).isoformat()),
    )
    active = {rule_of(f): priority(f) for f in api.flags(pid, status="active")}
    assert active == {"HF-WT-3D": "PM", "HF-SBP-HIGH": "PH", "COPD-TEMP": "PH"}
