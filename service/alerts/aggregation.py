"""A patient's measurement window and the per-rule aggregations the rules read from it.

Legitimate repeated readings are aggregated per rule: the first weight of the local day, the
mean of BP readings within 10 min (docs/alerts/engine.md#duplicates-and-repeated-readings); and
symptom answers present in a period (the "Sym" modifier).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from statistics import fmean
from zoneinfo import ZoneInfo

from service.alerts.days import local_day
from service.alerts.measurements import Measurement


class Window(list[Measurement]):
    """A patient's measurement window, indexed by concept once.

    Rules ask "the readings of concept X" thousands of times per evaluation; answering from an
    index instead of rescanning the window keeps evaluation linear in the window size.
    """

    def __init__(self, measurements: Iterable[Measurement] = ()) -> None:
        super().__init__(measurements)
        self.by_concept: dict[str, list[Measurement]] = {}
        for m in self:
            self.by_concept.setdefault(m.concept, []).append(m)
        for readings in self.by_concept.values():
            readings.sort(key=lambda m: m.effective)
        self._times = {c: [m.effective for m in ms] for c, ms in self.by_concept.items()}

    def between(self, concept: str, start: datetime, end: datetime) -> list[Measurement]:
        """Readings of ``concept`` with ``start <= effective <= end``, in time order."""
        times = self._times.get(concept)
        if not times:
            return []
        return self.by_concept[concept][bisect_left(times, start) : bisect_right(times, end)]


def of_concept(window: Iterable[Measurement], concept: str) -> list[Measurement]:
    """The readings of one concept, in window (time) order."""
    if isinstance(window, Window):
        return list(window.by_concept.get(concept, ()))
    return [m for m in window if m.concept == concept]


def daily_first(
    window: Sequence[Measurement], concept: str, tz: ZoneInfo
) -> dict[date, Measurement]:
    """The first reading of each patient-local day (the HF "daily weight").

    See docs/alerts/rules.md#conventions.
    """
    days: dict[date, Measurement] = {}
    for m in sorted(of_concept(window, concept), key=lambda m: m.effective):
        days.setdefault(local_day(m.effective, tz), m)
    return days


def mean_within(
    window: Sequence[Measurement], concept: str, until: datetime, span: timedelta
) -> tuple[float, list[Measurement]] | None:
    """Mean of the readings in ``[until - span, until]`` and the readings used (BP)."""
    if isinstance(window, Window):
        used = window.between(concept, until - span, until)
    else:
        used = [m for m in of_concept(window, concept) if until - span <= m.effective <= until]
    if not used:
        return None
    return fmean(m.value for m in used), used


def present_symptoms(
    window: Sequence[Measurement],
    since: datetime,
    until: datetime,
    codes: Iterable[str] | None = None,
) -> list[Measurement]:
    """Symptom answers that are present (severity >= mild) in ``[since, until]``."""
    wanted = set(codes) if codes is not None else None
    return [
        m
        for m in of_concept(window, "symptom")
        if since <= m.effective <= until and m.value >= 1 and (wanted is None or m.detail in wanted)
    ]
