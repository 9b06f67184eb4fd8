"""NEN 7513 audit trail: AuditEvents for reads, searches (one per patient), writes, failures and
access to the log itself; append-only; a patient sees only the events about them."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.auth.conftest import BSN_A, World, backend_token, make_backend, pgo_token
from tests.factories import weight


def _events(http: TestClient, h: dict[str, str], query: str = "") -> list[dict[str, Any]]:
    bundle = http.get(f"/fhir/AuditEvent?_count=500{query}", headers=h).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def test_audit_trail(oauth_client: TestClient, oauth_db: Any, world: World) -> None:
    admin = make_backend(
        oauth_db, "system/AuditEvent.rs system/Observation.cruds system/Patient.rs"
    )
    admin_token = backend_token(
        oauth_client, admin, "system/AuditEvent.rs system/Observation.cruds"
    ).json()["access_token"]
    ha = {"Authorization": f"Bearer {admin_token}", "X-Request-Id": "req-42"}
    http = oauth_client
    assert http.get(f"/fhir/Observation/{world.obs_a}", headers=ha).status_code == 200
    assert http.get("/fhir/Observation", headers=ha).status_code == 200  # spans A and B
    assert http.post("/fhir/Observation", json=weight(world.b), headers=ha).status_code == 201
    assert http.get("/fhir/Observation/nope", headers=ha).status_code == 404
    assert http.get("/fhir/Observation").status_code == 401
    events = _events(http, ha)
    reads = [e for e in events if e["subtype"][0]["code"] == "read" and e["outcome"] == "0"]
    assert reads and reads[0]["action"] == "R"
    assert any(ent["what"].get("reference") == f"Patient/{world.a}" for ent in reads[0]["entity"])
    assert reads[0]["agent"][1]["altId"] == admin.client_id
    assert any(
        ent.get("what", {}).get("identifier", {}).get("value") == "req-42"
        for ent in reads[0]["entity"]
    )
    searches = [e for e in events if e["subtype"][0]["code"] == "search-type"]
    patients = {
        ent["what"]["reference"]
        for e in searches
        for ent in e["entity"]
        if ent.get("role", {}).get("code") == "1"
    }
    assert {f"Patient/{world.a}", f"Patient/{world.b}"} <= patients  # one event per patient
    assert all(any("query" in ent for ent in e["entity"]) for e in searches)
    assert any(e["action"] == "C" for e in events)
    assert any(e["outcome"] == "4" and e["subtype"][0]["code"] == "read" for e in events)
    assert any(e["outcome"] == "4" and "401" in e.get("outcomeDesc", "") for e in events)
    # reading the log is itself logged
    again = _events(http, ha)
    assert any(e["subtype"][0]["code"] == "search-type" and "AuditEvent" in str(e) for e in again)
    # append-only: no create, update or delete of AuditEvents (405)
    one = events[0]
    assert http.put(f"/fhir/AuditEvent/{one['id']}", json=one, headers=ha).status_code == 405
    assert http.delete(f"/fhir/AuditEvent/{one['id']}", headers=ha).status_code == 405
    assert http.post("/fhir/AuditEvent", json=one, headers=ha).status_code == 405


def test_patient_sees_who_looked_at_their_data(
    oauth_client: TestClient, oauth_db: Any, world: World, pgo: tuple[str, str]
) -> None:
    ehr = make_backend(oauth_db, "system/Observation.rs")
    ehr_token = backend_token(oauth_client, ehr, "system/Observation.rs").json()["access_token"]
    oauth_client.get(
        f"/fhir/Observation/{world.obs_a}", headers={"Authorization": f"Bearer {ehr_token}"}
    )
    oauth_client.get(
        f"/fhir/Observation/{world.obs_b}", headers={"Authorization": f"Bearer {ehr_token}"}
    )
    token = pgo_token(
        oauth_client, pgo, BSN_A, scope="patient/AuditEvent.rs patient/Observation.rs"
    )
    h = {"Authorization": f"Bearer {token['access_token']}"}
    mine = _events(oauth_client, h)
    assert mine, "the patient sees events about them"
    for event in mine:
        assert f"Patient/{world.a}" in str(event) and f"Patient/{world.b}" not in str(event)
    assert any(ehr.client_id in str(e) for e in mine)  # the EHR's read is visible
