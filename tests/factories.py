"""Factories for FHIR resources used across the tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
BSN = "http://fhir.nl/fhir/NamingSystem/bsn"
VITAL = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs",
        }
    ]
}
# Valid BSNs (11-proef) for test patients.
BSNS = ["111222333", "123456782", "999999990", "999991772", "999990408", "999998286"]


def when(days_ago: float = 0, *, hour: int = 8) -> str:
    """An effective time ``days_ago`` days before today, at ``hour`` UTC (with offset)."""
    moment = datetime.now(UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    moment -= timedelta(days=days_ago)
    if moment > datetime.now(UTC):
        moment -= timedelta(days=1)
    return moment.isoformat()


def patient(bsn: str | None = None, family: str = "Jansen", given: str = "Piet") -> dict[str, Any]:
    """A Patient, optionally with a BSN identifier."""
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"family": family, "given": [given]}],
        "gender": "male",
        "birthDate": "1950-03-02",
    }
    if bsn:
        res["identifier"] = [{"system": BSN, "value": bsn}]
    return res


def _obs(
    patient_id: str, code: str, display: str, effective: str, ident: str | None
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [VITAL],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": effective,
    }
    res["identifier"] = [{"system": "urn:telemon:test", "value": ident or str(uuid.uuid4())}]
    return res


def quantity(value: float, unit: str) -> dict[str, Any]:
    """A UCUM Quantity."""
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def weight(
    patient_id: str, kg: float = 80.5, effective: str | None = None, ident: str | None = None,
    unit: str = "kg",
) -> dict[str, Any]:
    """A body-weight Observation."""
    res = _obs(patient_id, "29463-7", "Body weight", effective or when(), ident)
    res["valueQuantity"] = quantity(kg, unit)
    return res


def heart_rate(patient_id: str, bpm: float = 72, effective: str | None = None) -> dict[str, Any]:
    """A heart-rate Observation."""
    res = _obs(patient_id, "8867-4", "Heart rate", effective or when(), None)
    res["valueQuantity"] = quantity(bpm, "/min")
    return res


def spo2(patient_id: str, pct: float = 96, effective: str | None = None) -> dict[str, Any]:
    """An SpO2 Observation."""
    res = _obs(patient_id, "2708-6", "Oxygen saturation", effective or when(), None)
    res["valueQuantity"] = quantity(pct, "%")
    return res


def blood_pressure(
    patient_id: str, systolic: float = 128, diastolic: float = 82, effective: str | None = None
) -> dict[str, Any]:
    """A blood-pressure panel with systolic and diastolic components."""
    res = _obs(patient_id, "85354-9", "Blood pressure panel", effective or when(), None)
    res["component"] = [
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
         "valueQuantity": quantity(systolic, "mm[Hg]")},
        {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
         "valueQuantity": quantity(diastolic, "mm[Hg]")},
    ]
    return res


def transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    """A transaction Bundle of the given entries."""
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def post_entry(resource: dict[str, Any], full_url: str | None = None,
               if_none_exist: str | None = None) -> dict[str, Any]:
    """A POST entry for a transaction or batch."""
    request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    entry: dict[str, Any] = {"resource": resource, "request": request}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def device(patient_id: str | None = None, serial: str | None = None) -> dict[str, Any]:
    """A Device (e.g. a scale), optionally with the patient it is with."""
    res: dict[str, Any] = {
        "resourceType": "Device",
        "status": "active",
        "identifier": [{"system": "urn:telemon:serial", "value": serial or str(uuid.uuid4())}],
    }
    if patient_id:
        res["patient"] = {"reference": f"Patient/{patient_id}"}
    return res


def batch(*entries: dict[str, Any]) -> dict[str, Any]:
    """A batch Bundle of the given entries."""
    return {"resourceType": "Bundle", "type": "batch", "entry": list(entries)}


def put_entry(resource: dict[str, Any], if_match: str | None = None) -> dict[str, Any]:
    """A PUT entry (the resource must carry its id)."""
    request: dict[str, Any] = {
        "method": "PUT",
        "url": f"{resource['resourceType']}/{resource['id']}",
    }
    if if_match:
        request["ifMatch"] = if_match
    return {"resource": resource, "request": request}


def request_entry(method: str, url: str) -> dict[str, Any]:
    """A GET or DELETE entry."""
    return {"request": {"method": method, "url": url}}


def match_ids(bundle: dict[str, Any]) -> list[str]:
    """The ids of a searchset's ``match`` entries, in order."""
    return [
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == "match"
    ]


def expressions(outcome: dict[str, Any]) -> list[str]:
    """Every ``issue.expression`` of an OperationOutcome, flattened."""
    assert outcome["resourceType"] == "OperationOutcome", outcome
    return [x for issue in outcome["issue"] for x in issue.get("expression", [])]


SIGNING_SECRET_URL = (
    "http://telemon.example.org/fhir/StructureDefinition/subscription-signing-secret"
)
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
PROGRAMME = {
    "HF": "http://telemon.example.org/fhir/PlanDefinition/heart-failure",
    "COPD": "http://telemon.example.org/fhir/PlanDefinition/copd",
}


def subscription(
    endpoint: str,
    criteria: str = "Flag",
    *,
    secret: str | None = "s3cret-" + "x" * 30,
    bearer: str | None = None,
    content: str | None = None,
    heartbeat: int | None = None,
    max_count: int | None = None,
    status: str = "requested",
) -> dict[str, Any]:
    """A rest-hook Subscription (R4 with the R5 Backport extensions) on Flag criteria."""
    channel: dict[str, Any] = {
        "type": "rest-hook",
        "endpoint": endpoint,
        "payload": "application/fhir+json",
    }
    extensions: list[dict[str, Any]] = []
    if secret is not None:
        extensions.append({"url": SIGNING_SECRET_URL, "valueString": secret})
    if heartbeat is not None:
        extensions.append({"url": f"{BACKPORT}/backport-heartbeat-period",
                           "valueUnsignedInt": heartbeat})
    if max_count is not None:
        extensions.append({"url": f"{BACKPORT}/backport-max-count", "valuePositiveInt": max_count})
    if extensions:
        channel["extension"] = extensions
    if bearer is not None:
        channel["header"] = [f"Authorization: Bearer {bearer}"]
    if content is not None:
        channel["_payload"] = {"extension": [
            {"url": f"{BACKPORT}/backport-payload-content", "valueCode": content}]}
    return {
        "resourceType": "Subscription",
        "status": status,
        "reason": "Tell the EHR about telemonitoring alerts",
        "criteria": criteria,
        "channel": channel,
    }


def alert_bundle(count: int, programme: str = "HF", spo2: float = 84.0) -> dict[str, Any]:
    """A transaction that enrols ``count`` new patients in a programme and posts for each an
    SpO2 low enough to raise one alert (HF-SPO2-LOW or COPD-SPO2-ABS)."""
    effective = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()
    entries = []
    for _ in range(count):
        ref = f"urn:uuid:{uuid.uuid4()}"
        entries += [
            post_entry({"resourceType": "Patient", "name": [{"family": "Alert"}]}, ref),
            post_entry({"resourceType": "CarePlan", "status": "active", "intent": "plan",
                        "subject": {"reference": ref},
                        "instantiatesCanonical": [PROGRAMME[programme]]}),
            post_entry({"resourceType": "Observation", "status": "final",
                        "code": {"coding": [{"system": LOINC, "code": "2708-6"}]},
                        "subject": {"reference": ref}, "effectiveDateTime": effective,
                        "valueQuantity": quantity(spo2, "%")}),
        ]
    return transaction(*entries)


def operation(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    """One FHIRPath Patch operation (``value`` as a value[x] dict or a list of parts)."""
    out: list[dict[str, Any]] = [
        {"name": "type", "valueCode": kind},
        {"name": "path", "valueString": path},
    ]
    for name, value in parts.items():
        if name == "value" and isinstance(value, list):
            out.append({"name": "value", "part": value})
        elif name == "value":
            out.append({"name": "value", **value})
        elif isinstance(value, int):
            out.append({"name": name, "valueInteger": value})
        else:
            out.append({"name": name, "valueString": value})
    return {"name": "operation", "part": out}


def fhirpath_patch(*operations: dict[str, Any]) -> dict[str, Any]:
    """A FHIRPath Patch Parameters resource."""
    return {"resourceType": "Parameters", "parameter": list(operations)}


ALERT_RULES = "http://telemon.example.org/fhir/CodeSystem/alert-rules"


def flag(patient_id: str, status: str = "active", code: str = "HF-WEIGHT-3D") -> dict[str, Any]:
    """An alert Flag about a patient (as an EHR or the alert engine would store it)."""
    return {
        "resourceType": "Flag",
        "status": status,
        "code": {"coding": [{"system": ALERT_RULES, "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "period": {"start": when(1)},
    }


def care_plan(patient_id: str, status: str = "active") -> dict[str, Any]:
    """A telemonitoring CarePlan enrolling a patient."""
    return {
        "resourceType": "CarePlan",
        "status": status,
        "intent": "plan",
        "subject": {"reference": f"Patient/{patient_id}"},
    }
