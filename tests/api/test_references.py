"""One reference rule at every write entry point: POST, PUT, transaction and batch.

A reference to a type telemon stores must resolve (wherever it sits, not only in the elements
search indexes); a reference to a type it does not store is kept as an external reference; an
unresolved ``urn:uuid:`` is refused and never stored. ``telemon import`` is tested in
tests/bulk/test_importer.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import factories as f

ENTRY_POINTS = ["post", "put", "transaction", "batch"]


def _write(client: TestClient, via: str, resource: dict[str, Any]) -> tuple[int, Any]:
    """Write ``resource`` through one entry point: (status of the write, its JSON)."""
    if via == "post":
        response = client.post(f"/fhir/{resource['resourceType']}", json=resource)
        return response.status_code, response.json()
    if via == "put":
        resource = resource | {"id": str(uuid.uuid4())}
        response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
        return response.status_code, response.json()
    bundle = (f.transaction if via == "transaction" else f.batch)(f.post_entry(resource))
    response = client.post("/fhir", json=bundle)
    if via == "transaction" or response.status_code != 200:
        return response.status_code, response.json()
    [entry] = response.json()["entry"]
    status = int(entry["response"]["status"].split()[0])
    return status, entry["response"].get("outcome") or entry


def _expressions(outcome: dict[str, Any]) -> list[str]:
    return [e for issue in outcome["issue"] for e in issue.get("expression", [])]


def _where(via: str, element: str) -> str:
    """The expression an entry point gives for ``element`` of the written resource."""
    root = "Bundle.entry[0].resource" if via in ("transaction", "batch") else "Observation"
    return f"{root}.{element}"


def _count(client: TestClient, res_type: str) -> int:
    total: int = client.get(f"/fhir/{res_type}", params={"_summary": "count"}).json()["total"]
    return total


@pytest.mark.parametrize("via", ENTRY_POINTS)
def test_a_reference_to_a_stored_type_must_resolve_wherever_it_is(
    client: TestClient, make_patient: Any, via: str
) -> None:
    pid = make_patient()
    obs = f.weight(pid) | {"performer": [{"reference": "Practitioner/nobody"}]}

    status, outcome = _write(client, via, obs)

    assert status == 422, outcome
    assert _expressions(outcome) == [_where(via, "performer[0]")]
    assert "Practitioner/nobody does not exist" in outcome["issue"][0]["diagnostics"]
    assert _count(client, "Observation") == 0


@pytest.mark.parametrize("via", ENTRY_POINTS)
def test_references_to_stored_resources_and_to_other_types_are_kept(
    client: TestClient, make_patient: Any, via: str
) -> None:
    pid = make_patient()
    practitioner = client.post(
        "/fhir/Practitioner", json={"resourceType": "Practitioner", "name": [{"family": "Arts"}]}
    ).json()["id"]
    external = {
        "encounter": {"reference": "Encounter/example"},
        "partOf": [{"reference": "Procedure/ob"}],
        "device": {"reference": "DeviceMetric/example"},
        "performer": [
            {"reference": f"Practitioner/{practitioner}"},
            {"reference": "Organization/1832473e-2fe0-452d-abe9-3cdb9879522f"},
        ],
    }

    status, _ = _write(client, via, f.weight(pid) | external)

    assert status in (200, 201)
    [stored] = client.get("/fhir/Observation", params={"patient": pid}).json()["entry"]
    assert {k: stored["resource"][k] for k in external} == external


@pytest.mark.parametrize("via", ENTRY_POINTS)
def test_an_unresolved_urn_uuid_is_refused_everywhere(
    client: TestClient, make_patient: Any, via: str
) -> None:
    pid = make_patient()
    urn = f"urn:uuid:{uuid.uuid4()}"
    obs = f.weight(pid) | {"encounter": {"reference": urn}}

    status, outcome = _write(client, via, obs)

    assert status == 422, outcome
    assert _expressions(outcome) == [_where(via, "encounter")]
    assert urn in outcome["issue"][0]["diagnostics"]
    assert _count(client, "Observation") == 0


def test_an_unresolved_urn_uuid_subject_in_a_transaction_rolls_it_back(
    client: TestClient,
) -> None:
    bundle = f.transaction(
        f.post_entry(f.patient(), "urn:uuid:6f3b1c2e-8a41-4c3e-9a51-2d8f0e7b9c10"),
        f.post_entry({**f.weight("x"), "subject": {"reference": "urn:uuid:not-in-bundle"}}),
    )

    response = client.post("/fhir", json=bundle)

    assert response.status_code == 422
    assert _expressions(response.json()) == ["Bundle.entry[1].resource.subject"]
    assert _count(client, "Patient") == 0


def test_a_transaction_resolves_urn_uuid_in_any_element(client: TestClient) -> None:
    patient_urn, device_urn = (f"urn:uuid:{uuid.uuid4()}" for _ in range(2))
    obs = {**f.weight("x"), "subject": {"reference": patient_urn}}
    obs["derivedFrom"] = [{"reference": device_urn}]  # not a search parameter: still resolved
    bundle = f.transaction(
        f.post_entry(obs),
        f.post_entry(f.patient(), patient_urn),
        f.post_entry(f.device(), device_urn),
    )

    response = client.post("/fhir", json=bundle)

    assert response.status_code == 200, response.text
    obs_at, patient_at, device_at = (
        e["response"]["location"].rsplit("/_history", 1)[0] for e in response.json()["entry"]
    )
    stored = client.get(f"/fhir/{obs_at}").json()
    assert stored["subject"]["reference"] == patient_at
    assert stored["derivedFrom"] == [{"reference": device_at}]
