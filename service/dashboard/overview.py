"""What the patient pages show: the enrolled patients, and one patient's measurements, alerts
and chart lines over a period.

Measurements are read as the alert engine reads them (:func:`from_observation`: codes mapped to
concepts, units converted to the canonical unit), so a chart shows the values the rules saw.
The lines come from the patient's programme configuration (:meth:`AlertService.load_config`)
and the rule set (:mod:`service.dashboard.thresholds`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from service.alerts.coverage import not_evaluated
from service.alerts.ingest import PROGRAMMES, AlertService
from service.alerts.measurements import (
    Measurement,
    ObservationError,
    from_observation,
    parse_instant,
)
from service.alerts.personalisation import PatientConfig
from service.alerts.rules import default_rule_set
from service.audit.events import Touched
from service.core.concepts import CHARTS
from service.core.dates import from_micros
from service.core.outcome import FhirError
from service.dashboard.thresholds import ThresholdLine, patient_lines
from service.dashboard.worklist import (
    AlertItem,
    PatientName,
    alert_item,
    patient_name,
    search_all,
    sort_key,
    touched,
)
from service.fhir.service import FhirService
from service.storage.repository import StoredVersion

log = logging.getLogger(__name__)

#: Observation statuses shown on the charts (preliminary ones too: they are data, not yet final).
SHOWN_STATUSES = frozenset({"final", "amended", "corrected", "preliminary"})


@dataclass(slots=True)
class Overview:
    """One patient over a period: measurements, alerts and the lines to draw."""

    patient: PatientName
    programmes: list[str]
    since: datetime
    until: datetime
    measurements: list[Measurement]
    alerts: list[AlertItem]
    lines: list[ThresholdLine]
    truncated: bool
    touched: list[Touched]
    not_evaluated: list[NotEvaluatedReading] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NotEvaluatedReading:
    """A vital sign of the period that no alert rule of the patient's programmes evaluates."""

    observation_id: str
    when: datetime
    what: str  # the code's display or text, else the code
    value: str
    why: str


def _what(code: Any) -> str:
    """A code's text, else its first coding's display, else its first code."""
    if not isinstance(code, dict):
        return ""
    codings = [c for c in code.get("coding") or () if isinstance(c, dict)]
    found = code.get("text") or next((c.get("display") for c in codings if c.get("display")), "")
    return str(found or next((c.get("code") for c in codings if c.get("code")), ""))


def _value(resource: dict[str, Any]) -> str:
    """The value of a reading as sent (a Quantity, or its components' values)."""
    quantities = [resource.get("valueQuantity")] + [
        c.get("valueQuantity") for c in resource.get("component") or () if isinstance(c, dict)
    ]
    return " / ".join(
        f"{q.get('value', '')} {q.get('unit') or q.get('code') or ''}".strip()
        for q in quantities
        if isinstance(q, dict)
    )


def not_evaluated_readings(
    rows: list[StoredVersion], config: PatientConfig | None, at: datetime
) -> list[NotEvaluatedReading]:
    """The period's vital signs that no alert rule of the patient's programmes evaluates."""
    if config is None:
        return []  # not enrolled: no rule evaluates anything, and none is expected to
    found = []
    rule_set = default_rule_set()
    for row in rows:
        resource = orjson.loads(row.content or "{}")
        warning = not_evaluated(resource, config, rule_set, at)
        if warning is None:
            continue
        try:
            when = parse_instant(resource.get("effectiveDateTime") or "")[0]
        except ObservationError:
            when = from_micros(row.last_updated)
        found.append(
            NotEvaluatedReading(
                row.res_id, when, _what(resource.get("code")), _value(resource), warning.diagnostics
            )
        )
    return found


def _measurements(rows: list[StoredVersion]) -> list[Measurement]:
    out: list[Measurement] = []
    for row in rows:
        try:
            found = from_observation(orjson.loads(row.content or "{}"))
        except ObservationError as exc:  # stored, but not a measurement the charts know
            log.debug("Observation/%s not charted: %s", row.res_id, exc)
            continue
        out.extend(m for m in found if m.status in SHOWN_STATUSES and m.implausible is None)
    return out


def load_overview(fhir: FhirService, patient_id: str, since: datetime, until: datetime) -> Overview:
    """The patient's data from ``since`` to ``until`` (404 FhirError for an unknown patient)."""
    found = fhir.search("Patient", [("_id", patient_id)], strict=True).matches
    if not found:
        raise FhirError.not_found(f"Patient/{patient_id} is not known")
    stored_patient = found[0]
    start = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    observations, _, more_obs = search_all(
        fhir, "Observation", [("patient", patient_id), ("date", f"ge{start}"), ("_sort", "-date")]
    )
    flags, _, more_flags = search_all(fhir, "Flag", [("patient", patient_id)])
    alerts = [
        a
        for a in map(alert_item, flags)
        if a is not None
        and a.status != "entered-in-error"
        and (a.is_open or (a.end or a.start) >= since)
    ]
    # the open ones as on the worklist, then the closed ones, newest first
    alerts = sorted((a for a in alerts if a.is_open), key=sort_key) + sorted(
        (a for a in alerts if not a.is_open), key=lambda a: a.start, reverse=True
    )
    with fhir.db.read() as conn:
        config = AlertService(fhir).load_config(conn, patient_id)
    unevaluated = not_evaluated_readings(observations, config, until)
    lines: list[ThresholdLine] = []
    programmes: list[str] = []
    if config is not None:
        rules = default_rule_set().for_programmes(set(config.programmes))
        lines = patient_lines(config, rules, until, fhir.language)
        programmes = sorted(config.programmes)  # codes (HF, COPD): the page names them
    shown = {a.flag_id for a in alerts}
    return Overview(
        patient=patient_name(stored_patient),
        programmes=programmes,
        since=since,
        until=until,
        measurements=_measurements(observations),
        alerts=alerts,
        lines=lines,
        truncated=more_obs or more_flags,
        touched=list(
            touched([stored_patient, *observations, *(f for f in flags if f.res_id in shown)], fhir)
        ),
        not_evaluated=unevaluated,
    )


#: How far back the worklist looks for each patient's last measurements.
ADHERENCE_DAYS = 30


def latest_per_chart(measurements: list[Measurement]) -> dict[str, datetime]:
    """When the last measurement of each chart's kind was taken (chart key → time), in the
    order of the charts."""
    latest: dict[str, datetime] = {}
    for spec in CHARTS:
        times = [m.effective for m in measurements if m.concept in spec.concepts]
        if times:
            latest[spec.key] = max(times)
    return latest


def load_last_seen(
    fhir: FhirService, patient_ids: list[str], now: datetime
) -> tuple[dict[str, dict[str, datetime]], list[Touched]]:
    """Per patient the last measurement of each kind in the last :data:`ADHERENCE_DAYS` days,
    and the Observations read (for the audit trail)."""
    since = (now - timedelta(days=ADHERENCE_DAYS)).strftime("%Y-%m-%dT%H:%M:%SZ")
    found: dict[str, dict[str, datetime]] = {}
    rows: list[StoredVersion] = []
    for patient_id in patient_ids:
        observations, _, _ = search_all(
            fhir, "Observation", [("patient", patient_id), ("date", f"ge{since}")]
        )
        found[patient_id] = latest_per_chart(_measurements(observations))
        rows.extend(observations)
    return found, list(touched(rows, fhir))


@dataclass(slots=True)
class EnrolledPatient:
    """A patient in a telemonitoring programme, with the programmes' names."""

    patient: PatientName
    programmes: list[str]


def load_enrolled(fhir: FhirService) -> tuple[list[EnrolledPatient], list[Touched]]:
    """The patients with an active programme CarePlan, by name."""
    plans, included, _ = search_all(
        fhir, "CarePlan", [("status", "active"), ("_include", "CarePlan:patient")]
    )
    programmes: dict[str, set[str]] = {}
    for plan in plans:
        resource = orjson.loads(plan.content or "{}")
        found = {
            PROGRAMMES[c] for c in resource.get("instantiatesCanonical", []) if c in PROGRAMMES
        }
        if found and plan.patient_id:
            programmes.setdefault(plan.patient_id, set()).update(found)
    patients = [
        EnrolledPatient(
            patient_name(p), sorted(programmes[p.res_id])
        )
        for p in included
        if p.res_type == "Patient" and p.res_id in programmes
    ]
    patients.sort(key=lambda e: (e.patient.name.lower(), e.patient.patient_id))
    shown = [p for p in included if p.res_id in programmes]
    return patients, list(touched(shown, fhir))
