"""The registry (search parameters as data) agrees with the conformance resources served."""

from __future__ import annotations

import json
from pathlib import Path

from service.core.indexing import extract
from service.core.registry import FLAG, FLAG_DETAIL_URL, FLAG_PRIORITY_URL, default_registry

PROFILES = Path(__file__).resolve().parents[2] / "fhir_profiles"


def test_every_custom_parameter_has_a_searchparameter_resource() -> None:
    served = {}
    for path in PROFILES.glob("SearchParameter-*.json"):
        sp = json.loads(path.read_text())
        served[sp["url"]] = sp
    custom = [(t, p) for t in default_registry() for p in t.params.values() if p.definition]
    assert custom, "Flag defines its own search parameters"
    for rtype, param in custom:
        sp = served[param.definition]
        assert sp["code"] == param.name
        assert sp["base"] == [rtype.name]
        assert sp["type"] == param.type


def test_flag_priority_and_detail_are_indexed_from_their_extensions() -> None:
    from zoneinfo import ZoneInfo

    flag = {
        "resourceType": "Flag",
        "id": "f1",
        "status": "active",
        "code": {"coding": [{"system": "urn:rules", "code": "HF-WEIGHT-3D"}]},
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2026-11-20T08:00:00+01:00"},
        "extension": [
            {"url": FLAG_PRIORITY_URL, "valueCodeableConcept": {"coding": [
                {"system": "http://hl7.org/fhir/flag-priority-code", "code": "PH"}]}},
            {"url": FLAG_DETAIL_URL, "valueReference": {"reference": "Observation/o1"}},
            {"url": FLAG_DETAIL_URL, "valueReference": {"reference": "Observation/o2"}},
            {"url": "urn:other", "valueReference": {"reference": "Observation/o3"}},
        ],
    }
    index = extract(flag, FLAG, ZoneInfo("Europe/Amsterdam"))
    assert ("priority", "http://hl7.org/fhir/flag-priority-code", "PH") in index.tokens
    details = {i for p, t, i in index.references if p == "detail"}
    assert details == {"o1", "o2"}  # the unrelated extension is not evidence
    assert index.patient_id == "p1"
    assert index.date_low is not None
