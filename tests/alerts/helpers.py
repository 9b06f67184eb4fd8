"""Builders for alert tests: FHIR Observations, measurements, engine runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from service.alerts.engine import evaluate
from service.alerts.episodes import Alert, EpisodeChange
from service.alerts.measurements import Measurement
from service.alerts.personalisation import PatientConfig

PATIENT = "p1"
# English texts: the assertions below read the English catalogue (Dutch is tested in
# test_texts.py).
HF = PatientConfig(PATIENT, frozenset({"HF"}), language="en")
COPD = PatientConfig(PATIENT, frozenset({"COPD"}), language="en")
BOTH = PatientConfig(PATIENT, frozenset({"HF", "COPD"}), language="en")
# Noon in Amsterdam in November (UTC+1), far from DST changes.
T0 = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)


def at(days: float = 0, hours: float = 0, minutes: float = 0) -> datetime:
    """T0 shifted by whole days/hours/minutes."""
    return T0 + timedelta(days=days, hours=hours, minutes=minutes)


def m(
    oid: str,
    concept: str,
    value: float,
    when: datetime,
    **kwargs: Any,
) -> Measurement:
    """A canonical measurement for patient p1."""
    return Measurement(
        observation_id=oid,
        patient_id=PATIENT,
        concept=concept,
        value=value,
        original_value=value,
        original_unit=None,
        effective=when,
        **kwargs,
    )


def symptom(oid: str, code: str, when: datetime, severity: int = 2) -> Measurement:
    """An HF symptom answer (SNOMED finding) with a severity ordinal."""
    return m(oid, "symptom", severity, when, detail=code)


def weights(*values: float, start: float = 0, prefix: str = "w") -> list[Measurement]:
    """One weight per day from day ``start``: w0, w1, ..."""
    return [m(f"{prefix}{i}", "weight", v, at(days=start + i)) for i, v in enumerate(values)]


def run(
    measurements: Sequence[Measurement],
    config: PatientConfig = HF,
    episodes: Sequence[Alert] = (),
    now: datetime | None = None,
    changed: Sequence[str] | None = None,
) -> list[EpisodeChange]:
    """Evaluate everything; ``now`` defaults to one hour after the last measurement."""
    now = now or max(x.effective for x in measurements) + timedelta(hours=1)
    return evaluate(config, measurements, episodes, now, changed=changed)


def by_rule(changes: Sequence[EpisodeChange]) -> dict[str, EpisodeChange]:
    """Changes keyed by rule id (one alert per rule in these tests)."""
    return {c.alert.rule_id: c for c in changes if c.alert is not None}


def alerts(changes: Sequence[EpisodeChange]) -> dict[str, Alert]:
    """Alert states keyed by rule id."""
    return {rule: c.alert for rule, c in by_rule(changes).items() if c.alert is not None}


def observation(code: str, value: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A FHIR Observation JSON with one LOINC code."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-11-02T08:00:00+01:00",
    }
    if value is not None:
        resource["valueQuantity"] = value
    resource.update(extra)
    return resource


def qty(value: float, code: str) -> dict[str, Any]:
    """A UCUM Quantity."""
    return {"value": value, "system": "http://unitsofmeasure.org", "code": code}
