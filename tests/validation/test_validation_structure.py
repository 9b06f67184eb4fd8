"""Base FHIR structure validation: resource type, model errors as FHIRPath, dom-2/3/4, txt-1."""

from __future__ import annotations

from typing import Any

import pytest

from service.core.outcome import FhirError
from service.validation import SUPPORTED_TYPES, validate_structure

WEIGHT: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "w1",
    "meta": {"profile": ["http://telemon.example.org/fhir/StructureDefinition/telemon-bodyweight"]},
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                }
            ]
        }
    ],
    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2024-06-01T10:00:00+02:00",
    "valueQuantity": {
        "value": 80.5,
        "unit": "kg",
        "system": "http://unitsofmeasure.org",
        "code": "kg",
    },
}


def reject(data: Any, expected: str | None = None) -> FhirError:
    with pytest.raises(FhirError) as caught:
        validate_structure(data, expected)
    assert caught.value.status == 400
    return caught.value


def by_expression(error: FhirError) -> dict[str, str]:
    return {e: issue.diagnostics for issue in error.issues for e in issue.expression}


def with_(**changes: Any) -> dict[str, Any]:
    return {**WEIGHT, **changes}


def test_valid_r4_resources() -> None:
    assert validate_structure(WEIGHT, "Observation") == "Observation"
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "123456782"}],
        "name": [{"family": "Jansen", "given": ["Jan"]}],
        "gender": "male",
        "birthDate": "1950-03-01",
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Jan <b>Jansen</b></p></div>',
        },
    }
    assert validate_structure(patient) == "Patient"
    device = {
        "resourceType": "Device",
        "identifier": [{"system": "urn:oid:2.16.528.1", "value": "SN-1"}],
        "status": "active",
        "manufacturer": "Acme",
        "deviceName": [{"name": "Acme Scale", "type": "user-friendly-name"}],
        "patient": {"reference": "Patient/p1"},
    }
    assert validate_structure(device, "Device") == "Device"


def test_supported_types() -> None:
    assert {"Patient", "Device", "Observation", "Bundle", "PlanDefinition"} <= SUPPORTED_TYPES


@pytest.mark.parametrize("data", [[], "x", 3, None])
def test_body_must_be_an_object(data: Any) -> None:
    assert "JSON object" in reject(data).issues[0].diagnostics


@pytest.mark.parametrize("data", [{"id": "x"}, {"resourceType": 3}])
def test_resource_type_missing(data: Any) -> None:
    assert by_expression(reject(data)).keys() == {"resourceType"}


def test_resource_type_mismatch() -> None:
    error = reject(WEIGHT, "Patient")
    assert by_expression(error) == {
        "resourceType": "resourceType 'Observation' does not match the expected type 'Patient'"
    }


def test_unsupported_type() -> None:
    error = reject({"resourceType": "Medication"})
    assert error.issues[0].code == "not-supported"
    assert error.issues[0].expression == ("resourceType",)


def test_unknown_element() -> None:
    error = reject(with_(foo=1, valueQuantity={**WEIGHT["valueQuantity"], "precision": 2}))
    assert by_expression(error) == {
        "Observation.foo": "Unknown element 'foo'",
        "Observation.valueQuantity.precision": "Unknown element 'precision'",
    }


def test_missing_required_element() -> None:
    data = dict(WEIGHT)
    del data["status"]
    assert by_expression(reject(data)) == {
        "Observation.status": "Required element 'status' is missing"
    }


@pytest.mark.parametrize(
    ("changes", "expression", "message"),
    [
        ({"valueQuantity": {"value": "80.5"}}, "Observation.valueQuantity.value", "JSON number"),
        ({"valueQuantity": {"value": True}}, "Observation.valueQuantity.value", "JSON number"),
        ({"status": 1}, "Observation.status", "JSON string"),
        ({"id": 5}, "Observation.id", "JSON string"),
        ({"code": [{"text": "x"}]}, "Observation.code", "Must not be an array"),
        ({"category": {"text": "x"}}, "Observation.category", "JSON array"),
    ],
)
def test_wrong_json_types(changes: dict[str, Any], expression: str, message: str) -> None:
    assert message in by_expression(reject(with_(**changes)))[expression]


def test_integer_and_boolean_types() -> None:
    component = [
        {"code": {"text": "a"}, "valueInteger": 3.0},
        {"code": {"text": "b"}, "valueInteger": "3"},
        {"code": {"text": "c"}, "valueBoolean": "true"},
    ]
    found = by_expression(reject(with_(component=component)))
    assert "JSON integer" in found["Observation.component[0].valueInteger"]
    assert "JSON integer" in found["Observation.component[1].valueInteger"]
    assert "JSON boolean" in found["Observation.component[2].valueBoolean"]


def test_unknown_required_code() -> None:
    found = by_expression(reject(with_(status="done")))
    assert found["Observation.status"].startswith("Unknown code 'done'")
    patient = {"resourceType": "Patient", "gender": "M"}
    assert "Unknown code 'M'" in by_expression(reject(patient))["Patient.gender"]


def test_all_errors_in_one_outcome_with_nested_paths() -> None:
    data = with_(
        component=[
            {"code": {"text": "ok"}, "valueQuantity": {"value": 1}},
            {"code": {"text": "bad"}, "valueQuantity": {"value": 1, "code": 5}},
        ],
        issued="yesterday",
    )
    found = by_expression(reject(data))
    assert set(found) == {"Observation.component[1].valueQuantity.code", "Observation.issued"}


def test_datetime_without_offset_is_explained() -> None:
    found = by_expression(reject(with_(effectiveDateTime="2024-06-01T10:00:00")))
    assert "no timezone offset" in found["Observation.effectiveDateTime"]


def test_period_without_offset_is_explained() -> None:
    data = with_(effectiveDateTime=None, effectivePeriod={"start": "2024-06-01T10:00:00"})
    del data["effectiveDateTime"]
    found = by_expression(reject(data))
    assert "no timezone offset" in found["Observation.effectivePeriod.start"]


def test_invalid_calendar_date() -> None:
    found = by_expression(reject({"resourceType": "Patient", "birthDate": "1980-02-30"}))
    assert "'1980-02-30'" in found["Patient.birthDate"]


def test_two_choice_values() -> None:
    error = reject(with_(valueString="80 kg"))
    assert error.issues[0].expression == ("Observation.valueQuantity", "Observation.valueString")
    assert "Only one value[x]" in error.issues[0].diagnostics


def contained_patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p", **extra}


def test_contained_must_be_referenced() -> None:
    ok = with_(contained=[contained_patient()], subject={"reference": "#p"})
    assert validate_structure(ok) == "Observation"  # subject smuggling is a profile rule (422)
    error = reject(with_(contained=[contained_patient()]))
    assert by_expression(error).keys() == {"Observation.contained[0]"}
    assert "dom-3" in error.issues[0].diagnostics


def test_nested_contained_dom2() -> None:
    inner = contained_patient(contained=[{"resourceType": "Patient", "id": "q"}])
    found = by_expression(reject(with_(contained=[inner], subject={"reference": "#p"})))
    assert "dom-2" in found["Observation.contained[0]"]


def test_contained_version_id_dom4() -> None:
    inner = contained_patient(meta={"versionId": "1"})
    found = by_expression(reject(with_(contained=[inner], subject={"reference": "#p"})))
    assert "dom-4" in found["Observation.contained[0].meta.versionId"]


@pytest.mark.parametrize("inner", [{"resourceType": "Bogus", "id": "p"}, {"id": "p"}])
def test_contained_without_a_known_resource_type(inner: dict[str, Any]) -> None:
    found = by_expression(reject(with_(contained=[inner], subject={"reference": "#p"})))
    assert "Not a known FHIR resource type" in found["Observation.contained[0].resourceType"]


def test_bundle_entries_are_validated_with_paths() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": WEIGHT, "request": {"method": "POST", "url": "Observation"}},
            {"resource": {**WEIGHT, "status": "bogus", "valueQuantity": {"value": "1"}}},
        ],
    }
    found = by_expression(reject(bundle, "Bundle"))
    assert set(found) == {
        "Bundle.entry[1].resource.status",
        "Bundle.entry[1].resource.valueQuantity.value",
    }


@pytest.mark.parametrize(
    "div",
    [
        "<div><script>alert(1)</script></div>",
        "<div><SCRIPT src=x></SCRIPT></div>",
        '<div><iframe src="https://evil"></iframe></div>',
        '<div><form action="https://evil"><input name="bsn"/></form></div>',
        '<div><img src="x" onerror="alert(1)"/></div>',
        '<div><a href="javascript:alert(1)">x</a></div>',
        '<div><a href="jav&#x61;script:alert(1)">x</a></div>',
        '<div><a href="java\tscript:alert(1)">x</a></div>',
        "just text",
    ],
)
def test_dangerous_narrative(div: str) -> None:
    error = reject(with_(text={"status": "generated", "div": div}))
    assert by_expression(error).keys() == {"Observation.text.div"}


def test_dangerous_narrative_in_contained_resource() -> None:
    inner = contained_patient(text={"status": "generated", "div": "<div><script/></div>"})
    found = by_expression(reject(with_(contained=[inner], subject={"reference": "#p"})))
    assert "txt-1" in found["Observation.contained[0].text.div"]


def test_harmless_narrative() -> None:
    div = '<div xmlns="http://www.w3.org/1999/xhtml"><p>Weight online=yes; formal</p></div>'
    assert validate_structure(with_(text={"status": "generated", "div": div}))
