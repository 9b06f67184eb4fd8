"""Canonical measurements mapped from FHIR R4 Observation JSON.

Units, implausible values, statuses and times: docs/alerts/engine.md#data-edge-cases.

Which code means which concept, and in which units, is the concept table's
(:mod:`service.core.concepts`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from service.alerts import codes
from service.alerts.days import DEFAULT_TZ, day_start
from service.alerts.units import UnsupportedUnit, implausibility, to_canonical
from service.core import concepts
from service.core.dates import shows_unset_clock

EVALUABLE_STATUSES = frozenset({"final", "amended", "corrected"})
# Stored and shown, but never alerted on.
PRELIMINARY = "preliminary"
ENTERED_IN_ERROR = "entered-in-error"

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HAS_OFFSET = re.compile(r"(Z|[+-]\d{2}:\d{2})$")


class ObservationError(ValueError):
    """An Observation the alert core cannot read (caller answers 422)."""


@dataclass(frozen=True, slots=True)
class Measurement:
    """One canonical measurement.  ``value`` is in the concept's canonical unit."""

    observation_id: str
    patient_id: str
    concept: str
    value: float
    original_value: float | str | bool
    original_unit: str | None
    effective: datetime
    original_offset: timedelta | None = None
    status: str = "final"
    device: str | None = None
    on_supplemental_oxygen: bool | None = None
    identifier: str | None = None
    code: str | None = None
    # For concept "symptom" / "anthonisen": which finding or item was answered.
    detail: str | None = None
    implausible: str | None = None
    warning: str | None = None
    received: datetime | None = None

    @property
    def evaluable(self) -> bool:
        """True when rules may use this measurement (plausible, and a status that is evaluated)."""
        return self.status in EVALUABLE_STATUSES and self.implausible is None

    @property
    def unit(self) -> str:
        """The canonical unit shown to clinicians."""
        found = concepts.BY_KEY.get(self.concept)
        return found.shown_unit if found is not None else ""

    def mark_implausible(self, reason: str) -> Measurement:
        """A copy marked implausible (kept, never silently dropped or converted)."""
        return replace(self, implausible=reason)


def parse_instant(text: str) -> tuple[datetime, timedelta | None]:
    """A FHIR dateTime/instant as (aware UTC datetime, original offset).

    A date without time is read as the start of that Europe/Amsterdam day (offset None); a time
    without an offset is rejected because FHIR requires one.
    """
    if _DATE_ONLY.match(text):
        return day_start(date.fromisoformat(text), DEFAULT_TZ), None
    if "T" not in text or not _HAS_OFFSET.search(text):
        raise ObservationError(f"dateTime {text!r} needs a time with an offset")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ObservationError(f"invalid dateTime {text!r}") from exc
    return moment.astimezone(UTC), moment.utcoffset()


def _effective(resource: dict[str, Any]) -> tuple[datetime, timedelta | None]:
    if "effectiveDateTime" in resource:
        return parse_instant(resource["effectiveDateTime"])
    if "effectiveInstant" in resource:
        return parse_instant(resource["effectiveInstant"])
    period = resource.get("effectivePeriod") or {}
    # A period-measured value belongs to the moment it was complete.
    point = period.get("end") or period.get("start")
    if point:
        return parse_instant(point)
    raise ObservationError("Observation has no effective[x]")


def _concept(code: dict[str, Any] | None) -> tuple[str, str] | None:
    found = concepts.concept_of(code)
    return (found[0].key, found[1]) if found is not None else None


def _has_code(code: dict[str, Any] | None, system: str, value: str) -> bool:
    return any(
        c.get("system") == system and c.get("code") == value for c in (code or {}).get("coding", [])
    )


def _reference_id(ref: dict[str, Any] | None, prefix: str) -> str | None:
    if not ref:
        return None
    text = ref.get("reference")
    if text:
        return str(text).removeprefix(prefix)
    ident = ref.get("identifier") or {}
    return ident.get("value") or ref.get("display")


def _oxygen(resource: dict[str, Any]) -> bool | None:
    for comp in resource.get("component", []):
        if _has_code(comp.get("code"), concepts.SNOMED, codes.SUPPLEMENTAL_OXYGEN):
            if "valueBoolean" in comp:
                return bool(comp["valueBoolean"])
            if "valueQuantity" in comp:  # an O2 flow: any flow means supplemental oxygen
                return float(comp["valueQuantity"].get("value", 0)) > 0
    return None


def _coded_value(concept: str, element: dict[str, Any]) -> tuple[float, str] | None:
    """NYHA class and symptom answers as ordinals; booleans as 0/1."""
    if "valueBoolean" in element:
        return (1.0 if element["valueBoolean"] else 0.0), str(element["valueBoolean"])
    if "valueInteger" in element and concept == "nyha":
        return float(element["valueInteger"]), str(element["valueInteger"])
    table = codes.NYHA_CLASS if concept == "nyha" else codes.SEVERITY_ORDINAL
    for coding in element.get("valueCodeableConcept", {}).get("coding", []):
        if coding.get("code") in table:
            return float(table[coding["code"]]), coding["code"]
    return None


def _measure(
    concept: str, code: str, element: dict[str, Any], base: dict[str, Any]
) -> Measurement | None:
    """Map one value-bearing element (the Observation or a component) to a measurement."""
    if "dataAbsentReason" in element:
        return None
    if concepts.BY_KEY[concept].value != "Quantity":
        coded = _coded_value(concept, element)
        if coded is None:
            return None
        value, original = coded
        m = Measurement(
            concept=concept,
            code=code,
            value=value,
            original_value=original,
            original_unit=None,
            detail=code,
            **base,
        )
        reason = implausibility(concept, value, "")
        return m.mark_implausible(reason) if reason else m
    if "valueInteger" in element:  # questionnaire scores
        quantity: dict[str, Any] = {"value": element["valueInteger"], "code": ""}
    else:
        quantity = element.get("valueQuantity") or {}
    if "value" not in quantity:
        return None
    raw = float(quantity["value"])
    unit = quantity.get("code", quantity.get("unit", ""))
    if quantity.get("system") not in (None, concepts.UCUM):
        raise UnsupportedUnit(f"unit system {quantity.get('system')!r} is not UCUM")
    value, warning = to_canonical(concept, raw, unit)
    m = Measurement(
        concept=concept,
        code=code,
        value=value,
        original_value=quantity["value"],
        original_unit=unit,
        warning=warning,
        **base,
    )
    reason = implausibility(concept, value, unit)
    return m.mark_implausible(reason) if reason else m


def from_observation(
    resource: dict[str, Any], received: datetime | None = None
) -> list[Measurement]:
    """Map a FHIR R4 Observation JSON to canonical measurements.

    A panel (blood pressure: 85354-9, 55284-4 …) yields one measurement per present component
    (sbp, dbp, and hr if sent); a
    component or value with ``dataAbsentReason`` yields nothing.  Unknown codes yield ``[]``.
    Implausible values come back with ``implausible`` set; unknown units raise
    :class:`ObservationError`.
    """
    if resource.get("resourceType") != "Observation":
        raise ObservationError("not an Observation")
    patient = _reference_id(resource.get("subject"), "Patient/")
    if not patient:
        raise ObservationError("Observation has no subject")
    effective, offset = _effective(resource)
    identifiers = resource.get("identifier") or []
    ident = identifiers[0] if identifiers else {}
    base: dict[str, Any] = {
        "observation_id": str(resource.get("id", "")),
        "patient_id": patient,
        "effective": effective,
        "original_offset": offset,
        "status": resource.get("status", "unknown"),
        "device": _reference_id(resource.get("device"), "Device/"),
        "on_supplemental_oxygen": _oxygen(resource),
        "identifier": f"{ident.get('system', '')}|{ident['value']}" if "value" in ident else None,
        "received": received,
    }
    elements: list[tuple[str, str, dict[str, Any]]] = []
    panel = concepts.panel_of(resource.get("code"))
    if panel is not None:
        for comp in resource.get("component", []):
            found = _concept(comp.get("code"))
            if found and found[0] in panel.components:
                elements.append((found[0], found[1], comp))
    else:
        found = _concept(resource.get("code"))
        if found:
            elements.append((found[0], found[1], resource))
    try:
        measured = [_measure(concept, code, el, base) for concept, code, el in elements]
    except UnsupportedUnit as exc:
        raise ObservationError(str(exc)) from exc
    result = [m for m in measured if m is not None]
    return _check_pair_and_clock(result)


def _check_pair_and_clock(result: list[Measurement]) -> list[Measurement]:
    """Reversed BP pairs and broken clocks make every value of the Observation implausible."""
    values = {m.concept: m.value for m in result if m.implausible is None}
    if "sbp" in values and "dbp" in values and values["sbp"] <= values["dbp"]:
        reason = f"SBP {values['sbp']:g} not above DBP {values['dbp']:g}"
        result = [m.mark_implausible(reason) if m.concept in ("sbp", "dbp") else m for m in result]
    return [
        m.mark_implausible(f"effective time {m.effective:%Y-%m-%d}: device clock never set")
        if m.implausible is None and _unset_clock(m)
        else m
        for m in result
    ]


def _unset_clock(m: Measurement) -> bool:
    """The validator's rule (``fhir.dates.unset_clock``); a date without a time never counts."""
    if m.original_offset is None:
        return False
    return shows_unset_clock(m.effective.astimezone(timezone(m.original_offset)))
