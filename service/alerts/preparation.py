"""Cleaning a patient's measurements before rules see them (docs/alerts/engine.md#data-edge-cases).

Entered-in-error readings are removed (and reported, so alerts built on them are retracted),
non-final statuses are kept out of evaluation, retries and near-duplicates count once, and
readings from the future or a person swap on the scale become implausible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from service.alerts.measurements import ENTERED_IN_ERROR, EVALUABLE_STATUSES, Measurement

NEAR_DUPLICATE = timedelta(seconds=60)
FUTURE_TOLERANCE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Prepared:
    """Measurements sorted by effective time and split by what rules may do with them."""

    usable: list[Measurement]
    implausible: list[Measurement]
    retracted: frozenset[str]  # observation ids now entered-in-error
    duplicates: frozenset[str]  # observation ids ignored as retries/near-duplicates


def _order(m: Measurement) -> tuple[datetime, str, str]:
    return m.effective, m.observation_id, m.concept


def _is_duplicate(
    m: Measurement, kept: list[Measurement], identifiers: set[tuple[str, str]]
) -> bool:
    if m.identifier is not None and (m.identifier, m.concept) in identifiers:
        return True
    return any(
        k.observation_id != m.observation_id
        and k.concept == m.concept
        and k.value == m.value
        and k.device == m.device
        and abs(k.effective - m.effective) <= NEAR_DUPLICATE
        for k in kept[-10:]  # sorted by time: a near-duplicate is among the last few kept
    )


def prepare(
    measurements: Sequence[Measurement],
    now: datetime,
    *,
    weight_jump_kg: float,
    weight_jump_hours: float,
) -> Prepared:
    """Split measurements into usable, implausible, retracted and duplicate (see module doc)."""
    retracted = frozenset(m.observation_id for m in measurements if m.status == ENTERED_IN_ERROR)
    usable: list[Measurement] = []
    implausible: list[Measurement] = []
    duplicates: set[str] = set()
    identifiers: set[tuple[str, str]] = set()
    for m in sorted(measurements, key=_order):
        # preliminary, registered, cancelled, unknown: stored elsewhere, never alerted on here.
        if m.status not in EVALUABLE_STATUSES or m.observation_id in retracted:
            continue
        if _is_duplicate(m, usable + implausible, identifiers):
            duplicates.add(m.observation_id)
            continue
        if m.identifier is not None:
            identifiers.add((m.identifier, m.concept))
        if m.implausible is None and m.effective > now + FUTURE_TOLERANCE:
            m = m.mark_implausible(f"effective time {m.effective:%Y-%m-%d %H:%M}Z is in the future")
        if m.implausible is None and m.concept == "weight":
            m = _check_weight_jump(m, usable, weight_jump_kg, weight_jump_hours)
        (usable if m.implausible is None else implausible).append(m)
    return Prepared(usable, implausible, retracted, frozenset(duplicates))


def _check_weight_jump(
    m: Measurement, usable: list[Measurement], jump_kg: float, hours: float
) -> Measurement:
    """A change > jump_kg within hours is "another person on the scale?", not a weight alert."""
    previous = [
        k
        for k in usable
        if k.concept == "weight" and m.effective - k.effective <= timedelta(hours=hours)
    ]
    if previous and abs(m.value - previous[-1].value) > jump_kg:
        change = m.value - previous[-1].value
        return m.mark_implausible(
            f"weight changed {change:+.1f} kg within {hours:g} h: another person on the scale?"
        )
    return m
