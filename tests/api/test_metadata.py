"""GET /fhir/metadata: a CapabilityStatement that is true about what the server does."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import factories as f

#: A harmless sample value per search parameter type.
SAMPLES = {
    "token": "x",
    "reference": "Patient/x",
    "date": "2026-03",
    "quantity": "gt5",
    "string": "a",
    "uri": "http://example.org/x",
    "number": "1",
}

REQUIRED_PARAMS = {
    "Observation": {
        "patient",
        "subject",
        "code",
        "category",
        "date",
        "identifier",
        "status",
        "device",
        "value-quantity",
        "_id",
        "_lastUpdated",
    },
    "Patient": {"identifier", "name", "birthdate", "_id", "_lastUpdated"},
    "Device": {"_id", "_lastUpdated"},
}


@pytest.fixture
def statement(client: TestClient) -> dict[str, Any]:
    """The server's CapabilityStatement."""
    response = client.get("/fhir/metadata")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    return body


def _resources(statement: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["type"]: r for r in statement["rest"][0]["resource"]}


def test_statement_shape(statement: dict[str, Any]) -> None:
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    assert statement["status"] == "active"
    assert "application/fhir+json" in statement["format"]
    assert statement["implementation"]["url"] == "http://testserver/fhir"
    rest = statement["rest"]
    assert len(rest) == 1
    assert rest[0]["mode"] == "server"
    assert {i["code"] for i in rest[0]["interaction"]} == {"transaction", "batch"}


def test_statement_lists_the_stored_types(statement: dict[str, Any]) -> None:
    resources = _resources(statement)
    for name in ("Observation", "Patient", "Device"):
        entry = resources[name]
        codes = {i["code"] for i in entry["interaction"]}
        assert codes >= {
            "read",
            "vread",
            "update",
            "delete",
            "create",
            "search-type",
            "history-instance",
            "history-type",
        }
        assert entry["versioning"] == "versioned-update"
        assert entry["conditionalCreate"] is True
        names = {p["name"] for p in entry["searchParam"]}
        assert names >= REQUIRED_PARAMS[name], name
    assert "Observation:patient" in resources["Observation"]["searchInclude"]
    lastn = [op for op in resources["Observation"]["operation"] if op["name"] == "lastn"]
    assert len(lastn) == 1


def test_every_listed_search_parameter_works(client: TestClient, statement: dict[str, Any]) -> None:
    checked = 0
    for entry in statement["rest"][0]["resource"]:
        if "search-type" not in {i["code"] for i in entry["interaction"]}:
            continue
        for param in entry.get("searchParam", []):
            value = SAMPLES[param["type"]]
            response = client.get(
                f"/fhir/{entry['type']}",
                params={param["name"]: value},
                headers={"Prefer": "handling=strict"},
            )
            assert response.status_code == 200, (entry["type"], param, response.text)
            bundle = response.json()
            assert bundle["type"] == "searchset"
            outcomes = [e for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"]
            assert outcomes == [], (entry["type"], param["name"])
            checked += 1
        for include in entry.get("searchInclude", []):
            response = client.get(
                f"/fhir/{entry['type']}",
                params={"_include": include},
                headers={"Prefer": "handling=strict"},
            )
            assert response.status_code == 200, (include, response.text)
    assert checked >= sum(len(v) for v in REQUIRED_PARAMS.values())


def test_listed_parameters_filter(
    client: TestClient, statement: dict[str, Any], make_patient: Any
) -> None:
    """Each listed Observation parameter, given a value nothing has, finds nothing."""
    pid = make_patient()
    client.post("/fhir/Observation", json=f.weight(pid, effective="2025-06-01T08:00:00Z"))
    misses = {
        "token": "no-such-code",
        "reference": "Patient/nobody",
        "date": "1999",
        "quantity": "gt100000",
        "string": "zzz",
        "uri": "http://nothing.example.org",
        "number": "-999999",
    }
    obs = _resources(statement)["Observation"]
    for param in obs["searchParam"]:
        bundle = client.get("/fhir/Observation", params={param["name"]: misses[param["type"]]})
        assert bundle.status_code == 200
        assert f.match_ids(bundle.json()) == [], param["name"]
    everything = client.get("/fhir/Observation").json()
    assert len(f.match_ids(everything)) == 1


def test_listed_profiles_are_served(client: TestClient, statement: dict[str, Any]) -> None:
    profiles = [
        url for r in statement["rest"][0]["resource"] for url in r.get("supportedProfile", [])
    ]
    assert profiles, "the Observation profiles should be listed"
    for url in profiles:
        response = client.get("/fhir/StructureDefinition", params={"url": url})
        assert response.status_code == 200
        entries = response.json()["entry"]
        assert len(entries) == 1, url
        sd = entries[0]["resource"]
        assert client.get(f"/fhir/StructureDefinition/{sd['id']}").json()["url"] == url


def test_metadata_negotiation(client: TestClient) -> None:
    response = client.get("/fhir/metadata", headers={"Accept": "application/fhir+xml"})
    assert response.status_code == 406
    assert response.json()["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/metadata", headers={"Accept": "application/json"}).status_code == 200


def test_statement_states_the_reference_rule(statement: dict[str, Any]) -> None:
    stored = [r for r in statement["rest"][0]["resource"] if "versioning" in r]
    assert stored and all(
        r["referencePolicy"] == ["literal", "logical", "enforced"] for r in stored
    )
    assert "external reference" in statement["rest"][0]["documentation"]
