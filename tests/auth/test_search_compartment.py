"""Chains, ``_has``, ``_include`` and ``_revinclude`` with real tokens: a patient-A token never
reaches patient B's data through them, the scopes cover every type a search reads, and the
audit trail names every patient whose data a search returned."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.auth import clients
from tests.auth.conftest import (
    BSN_A,
    BSN_B,
    REDIRECT,
    World,
    backend_token,
    make_backend,
    pgo_token,
    register,
)
from tests.factories import BSN, flag

WEIGHT = "http://loinc.org|29463-7"
FULL = (
    "launch/patient patient/Patient.rs patient/Observation.rs patient/Device.rs "
    "patient/Flag.rs"
)


def _headers(http: TestClient, db: Any, scope: str) -> dict[str, str]:
    client, secret = clients.new_pgo("search.example.org", "Search PGO", [REDIRECT], scope)
    register(db, client)
    token = pgo_token(http, (client.client_id, secret), BSN_A, scope=scope)
    return {"Authorization": f"Bearer {token['access_token']}"}


def _ids(http: TestClient, url: str, h: dict[str, str]) -> set[str]:
    response = http.get(url, headers=h)
    assert response.status_code == 200, (url, response.text)
    return {e["resource"]["id"] for e in response.json().get("entry", []) if "resource" in e
            and e["resource"]["resourceType"] != "OperationOutcome"}


@pytest.fixture
def flags(oauth_client: TestClient, world: World) -> dict[str, str]:
    """An active Flag for A and for B."""
    fhir = oauth_client.app.state.telemon.fhir  # type: ignore[attr-defined]
    return {"a": fhir.create(flag(world.a)).res_id, "b": fhir.create(flag(world.b)).res_id}


def test_patient_token_stays_in_its_compartment(
    oauth_client: TestClient, oauth_db: Any, world: World, flags: dict[str, str]
) -> None:
    h = _headers(oauth_client, oauth_db, FULL)
    http = oauth_client
    serial_b = http.app.state.telemon.fhir.read(  # type: ignore[attr-defined]
        "Device", world.dev_b
    )
    b_serial = serial_b.content.split('"value":"')[1].split('"')[0]
    a_all = {world.a, world.obs_a, world.dev_a, flags["a"]}
    cases = {
        f"/fhir/Observation?patient.identifier={BSN}|{BSN_B}": set(),
        f"/fhir/Observation?subject:Patient.identifier={BSN_B}": set(),
        f"/fhir/Observation?patient.identifier={BSN}|{BSN_A}": {world.obs_a},
        f"/fhir/Flag?patient.identifier={BSN_B}": set(),
        "/fhir/Flag?patient.family=Bakker": set(),
        f"/fhir/Observation?device:Device.identifier={b_serial}": set(),
        "/fhir/Patient?_has:Flag:patient:status=active": {world.a},
        f"/fhir/Patient?_has:Observation:patient:code={WEIGHT}": {world.a},
        f"/fhir/Device?_has:Observation:device:code={WEIGHT}": {world.dev_a},
        "/fhir/Patient?_revinclude=Flag:patient&_revinclude=Observation:patient": {
            world.a, flags["a"], world.obs_a
        },
        f"/fhir/Patient?_id={world.b}&_revinclude=Flag:patient": set(),
        "/fhir/Device?_revinclude=Observation:device": {world.dev_a, world.obs_a},
        "/fhir/Flag?_include=Flag:patient": {flags["a"], world.a},
        f"/fhir/Observation?_include=Observation:device&_total=accurate&code={WEIGHT}": {
            world.obs_a, world.dev_a
        },
        # iterate: from A's device to what points at it, from A's flag to its patient
        "/fhir/Device?_revinclude=Observation:device&_include:iterate=Observation:patient"
        "&_revinclude:iterate=Flag:patient": {world.dev_a, world.obs_a, world.a, flags["a"]},
    }
    for url, expected in cases.items():
        assert _ids(http, url, h) == expected, url
    # the totals count only the compartment too
    chained = http.get(f"/fhir/Flag?_total=accurate&patient.identifier={BSN_B}", headers=h)
    assert chained.json()["total"] == 0
    has = http.get("/fhir/Patient?_summary=count&_has:Flag:patient:status=active", headers=h)
    assert has.json()["total"] == 1
    assert not (set().union(*cases.values()) - a_all)


def test_scopes_cover_every_type_a_search_reads(
    oauth_client: TestClient, oauth_db: Any, world: World, flags: dict[str, str]
) -> None:
    h = _headers(oauth_client, oauth_db, "launch/patient patient/Observation.rs")
    http = oauth_client
    for url, needs in (
        (f"/fhir/Observation?patient.identifier={BSN_A}", "Patient"),
        ("/fhir/Observation?_include=Observation:patient", "Patient"),
        (f"/fhir/Observation?device:Device.identifier={BSN_A}", "Device"),
    ):
        response = http.get(url, headers=h)
        assert response.status_code == 403, url
        assert f"patient/{needs}.s" in response.json()["issue"][0]["diagnostics"]
    # an _include without a known target type leaves out what the scopes do not cover
    assert _ids(http, "/fhir/Observation?_include=Observation:subject", h) == {world.obs_a}
    # the searched type itself needs its scope as before; _has and _revinclude need theirs
    h2 = _headers(oauth_client, oauth_db, "launch/patient patient/Patient.rs")
    for url in ("/fhir/Patient?_has:Flag:patient:status=active",
                "/fhir/Patient?_revinclude=Flag:patient"):
        response = http.get(url, headers=h2)
        assert response.status_code == 403, url
        assert "patient/Flag.s" in response.json()["issue"][0]["diagnostics"]


def test_every_patient_returned_is_audited(
    oauth_client: TestClient, oauth_db: Any, world: World, flags: dict[str, str]
) -> None:
    scope = "system/AuditEvent.rs system/Patient.rs system/Observation.rs system/Flag.rs"
    ehr = make_backend(oauth_db, scope)
    token = backend_token(oauth_client, ehr, scope).json()["access_token"]
    h = {"Authorization": f"Bearer {token}"}
    http = oauth_client
    query = f"identifier={BSN}|{BSN_B}&_revinclude=Flag:patient"
    assert _ids(http, f"/fhir/Patient?{query}", h) == {world.b, flags["b"]}
    assert _ids(http, f"/fhir/Observation?patient.identifier={BSN_A}", h) == {world.obs_a}
    bundle = http.get("/fhir/AuditEvent?_count=500&subtype=search-type", headers=h).json()
    events = [e["resource"] for e in bundle["entry"]]

    def patients_of(fragment: str) -> set[str]:
        searched = [
            e for e in events
            if any(fragment in base64.b64decode(ent.get("query", "")).decode()
                   for ent in e["entity"])
        ]
        assert searched, fragment
        return {
            ent["what"]["reference"]
            for e in searched
            for ent in e["entity"]
            if ent.get("role", {}).get("code") == "1"
        }

    assert patients_of("_revinclude") == {f"Patient/{world.b}"}
    assert patients_of("patient.identifier") == {f"Patient/{world.a}"}
