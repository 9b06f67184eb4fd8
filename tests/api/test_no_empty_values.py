"""FHIR JSON has no empty arrays or objects: none in any response (a searchset with no match has
no ``entry``), and ``_count=0`` answers the total (fhirpy's ``count()`` sends ``_count=0``)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.factories import heart_rate, weight

VITAL = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                     "code": "vital-signs"}]}


def empties(node: Any, path: str = "$") -> list[str]:
    """The paths of every empty array or object (and empty string) in a JSON document."""
    if isinstance(node, dict):
        found = [path] if not node else []
        for key, value in node.items():
            found += empties(value, f"{path}.{key}")
        return found
    if isinstance(node, list):
        found = [path] if not node else []
        for index, value in enumerate(node):
            found += empties(value, f"{path}[{index}]")
        return found
    return [path] if node == "" else []


def _json(response: Any) -> Any:
    assert response.headers["content-type"].startswith("application/fhir+json"), response.text
    return response.json()


def test_no_response_holds_an_empty_array_or_object(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    created = client.post("/fhir/Observation", json=weight(pid)).json()
    client.post("/fhir/Observation", json=heart_rate(pid))
    plan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": f"Patient/{pid}"},
        "instantiatesCanonical": ["http://telemon.example.org/fhir/PlanDefinition/copd"],
    }
    assert client.post("/fhir/CarePlan", json=plan).status_code == 201
    fast = heart_rate(pid, bpm=135) | {"category": [VITAL]}  # raises COPD-HR-HIGH: a Flag
    assert client.post("/fhir/Observation", json=fast).status_code == 201
    bmi = weight(pid) | {"code": {"coding": [{"system": "http://loinc.org", "code": "39156-5"}]},
                         "valueQuantity": {"value": 24.2, "system": "http://unitsofmeasure.org",
                                           "unit": "kg/m2", "code": "kg/m2"},
                         "category": [VITAL]}
    empty_transaction = {"resourceType": "Bundle", "type": "transaction"}
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Observation/{created['id']}"}},
            {"request": {"method": "GET", "url": "Observation/missing"}},
        ],
    }
    responses = {
        "metadata": client.get("/fhir/metadata"),
        "search, no match": client.get("/fhir/Observation", params={"patient": "nobody"}),
        "search, _count=0": client.get("/fhir/Observation", params={"_count": "0"}),
        "search, _summary=count": client.get("/fhir/Patient", params={"_summary": "count"}),
        "search, unknown parameter": client.get("/fhir/Observation", params={"colour": "red"}),
        "search with _include": client.get(
            "/fhir/Observation", params={"patient": pid, "_include": "Observation:patient"}
        ),
        "Flags": client.get("/fhir/Flag", params={"patient": pid}),
        "$lastn, no match": client.get("/fhir/Observation/$lastn", params={"patient": "nobody"}),
        "$lastn": client.get("/fhir/Observation/$lastn", params={"patient": pid}),
        "history, no versions": client.get("/fhir/Device/_history"),
        "history": client.get(f"/fhir/Observation/{created['id']}/_history"),
        "conformance search, no match": client.get("/fhir/ValueSet", params={"url": "x"}),
        "transaction, no entries": client.post("/fhir", json=empty_transaction),
        "batch": client.post("/fhir", json=batch),
        "create, OperationOutcome": client.post(
            "/fhir/Observation", json=bmi, headers={"Prefer": "return=OperationOutcome"}
        ),
        "400": client.post("/fhir/Observation", json={"resourceType": "Observation"}),
        "404": client.get("/fhir/Observation/missing"),
        "422": client.post("/fhir/Observation", json=weight(pid, kg=900)),
    }
    problems = {name: empties(_json(r)) for name, r in responses.items()}
    assert {name: found for name, found in problems.items() if found} == {}
    bundle = _json(responses["search, no match"])
    assert bundle["type"] == "searchset" and "entry" not in bundle and bundle["link"]
    assert "entry" not in _json(responses["transaction, no entries"])
    assert "entry" not in _json(responses["history, no versions"])
    assert len(_json(responses["Flags"])["entry"]) == 1  # the Flag itself has no empties


def test_count_zero_answers_the_total_without_entries(
    client: TestClient, make_patient: Any
) -> None:
    pid = make_patient()
    for kg in (80.1, 80.2, 80.3):
        assert client.post("/fhir/Observation", json=weight(pid, kg=kg)).status_code == 201
    bundle = client.get("/fhir/Observation", params={"patient": pid, "_count": "0"}).json()
    assert bundle["total"] == 3 and "entry" not in bundle
    none = client.get("/fhir/Observation", params={"patient": "nobody", "_count": "0"}).json()
    assert none["total"] == 0 and "entry" not in none
    # as fhirpy's count() asks it: a POST _search works the same way
    form = client.post(
        "/fhir/Observation/_search",
        content=f"patient={pid}&_count=0",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ).json()
    assert form["total"] == 3 and "entry" not in form
