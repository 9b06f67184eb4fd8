"""Scopes and the patient compartment are enforced per Bundle entry: in a batch each denied entry
gets its own 403 (reads outside the compartment the not-found 404) while permitted entries
succeed; a transaction with one denied entry is a 403 as a whole and writes nothing."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.auth.conftest import BSN_A, World, pgo_token
from tests.factories import weight


def _observations_of(http: TestClient, patient_id: str) -> int:
    fhir = http.app.state.telemon.fhir  # type: ignore[attr-defined]
    return len(fhir.search("Observation", [("patient", patient_id)]).matches)


def test_batch_entries_are_authorised_one_by_one(
    oauth_client: TestClient, world: World, pgo: tuple[str, str]
) -> None:
    token = pgo_token(oauth_client, pgo, BSN_A, scope="patient/Observation.rs patient/Patient.rs")
    h = {"Authorization": f"Bearer {token['access_token']}"}
    before = _observations_of(oauth_client, world.a)
    batch: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Observation/{world.obs_a}"}},  # allowed
            {"resource": weight(world.a), "request": {"method": "POST", "url": "Observation"}},
            {"request": {"method": "GET", "url": f"Device/{world.dev_a}"}},  # no Device scope
            {"request": {"method": "GET", "url": f"Observation/{world.obs_b}"}},  # other patient
            {"request": {"method": "DELETE", "url": f"Observation/{world.obs_a}"}},  # no .d
            {"request": {"method": "GET", "url": f"Patient/{world.a}"}},  # allowed
        ],
    }
    response = oauth_client.post("/fhir", json=batch, headers=h)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert [e["response"]["status"] for e in entries] == [
        "200 OK",
        "403 Forbidden",
        "403 Forbidden",
        "404 Not Found",
        "403 Forbidden",
        "200 OK",
    ]
    assert entries[0]["resource"]["id"] == world.obs_a
    assert entries[5]["resource"]["id"] == world.a
    for denied in (entries[1], entries[2], entries[4]):
        assert denied["response"]["outcome"]["issue"][0]["code"] == "forbidden"
    assert world.obs_b not in str(entries[3]["response"]["outcome"]).replace(
        f"Observation/{world.obs_b} is not known", ""
    )
    assert _observations_of(oauth_client, world.a) == before  # the denied create wrote nothing


def test_transaction_with_one_denied_entry_is_refused_whole(
    oauth_client: TestClient, world: World, pgo: tuple[str, str]
) -> None:
    scope = "patient/Observation.cruds patient/Patient.rs"
    from service.auth import clients
    from tests.auth.conftest import REDIRECT, register

    client, secret = clients.new_pgo("writer.example.org", "Schrijvende PGO", [REDIRECT], scope)
    register(oauth_client.app.state.telemon.fhir.db, client)  # type: ignore[attr-defined]
    token = pgo_token(oauth_client, (client.client_id, secret), BSN_A, scope=scope)
    h = {"Authorization": f"Bearer {token['access_token']}"}
    before = _observations_of(oauth_client, world.a)
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": weight(world.a), "request": {"method": "POST", "url": "Observation"}},
            {"request": {"method": "GET", "url": f"Device/{world.dev_a}"}},  # no Device scope
        ],
    }
    response = oauth_client.post("/fhir", json=transaction, headers=h)
    assert response.status_code == 403
    assert response.json()["resourceType"] == "OperationOutcome"
    assert _observations_of(oauth_client, world.a) == before
    # the same transaction without the denied entry goes through
    transaction["entry"] = transaction["entry"][:1]
    assert oauth_client.post("/fhir", json=transaction, headers=h).status_code == 200
    assert _observations_of(oauth_client, world.a) == before + 1
