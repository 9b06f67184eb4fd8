"""PATCH and conditional update/patch/delete under OAuth: the patient compartment (another
patient's data is the never-existed 404, or 403 for a write into it), scopes (``.u`` for a
patch; conditional writes also need ``.s``, and ``.c`` to create) and the audit trail."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from fastapi.testclient import TestClient

from service.auth import clients
from tests.auth.conftest import (
    BSN_A,
    REDIRECT,
    World,
    backend_token,
    make_backend,
    pgo_token,
    register,
)
from tests.factories import weight

JSON_PATCH = "application/json-patch+json"
NOTE = [{"op": "add", "path": "/note", "value": [{"text": "patched"}]}]


def _writer(http: TestClient, scope: str) -> dict[str, str]:
    """Headers with a PGO token for patient A with ``scope``."""
    client, secret = clients.new_pgo("writer.example.org", "Schrijvende PGO", [REDIRECT], scope)
    register(http.app.state.telemon.fhir.db, client)  # type: ignore[attr-defined]
    token = pgo_token(http, (client.client_id, secret), BSN_A, scope=scope)
    return {"Authorization": f"Bearer {token['access_token']}"}


def _system(http: TestClient, db: Any, scope: str) -> dict[str, str]:
    backend = make_backend(db, scope)
    token = backend_token(http, backend, scope).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _stored(http: TestClient, obs_id: str) -> dict[str, Any]:
    fhir = http.app.state.telemon.fhir  # type: ignore[attr-defined]
    content: dict[str, Any] = orjson.loads(fhir.read("Observation", obs_id).content)
    return content


def _version(http: TestClient, obs_id: str) -> int:
    return int(_stored(http, obs_id)["meta"]["versionId"])


def _ident(http: TestClient, obs_id: str) -> str:
    ident = _stored(http, obs_id)["identifier"][0]
    return f"{ident['system']}|{ident['value']}"


def _identified(resource: dict[str, Any], ident: str) -> dict[str, Any]:
    system, _, value = ident.partition("|")
    return {**resource, "identifier": [{"system": system, "value": value}]}


def test_patient_token_patches_only_its_own_compartment(
    oauth_client: TestClient, world: World
) -> None:
    http = oauth_client
    h = _writer(http, "patient/Observation.cruds patient/Patient.rs")
    patch = {**h, "Content-Type": JSON_PATCH}
    other = http.patch(f"/fhir/Observation/{world.obs_b}", json=NOTE, headers=patch)
    assert other.status_code == 404  # as if it did not exist
    assert _version(http, world.obs_b) == 2
    own = http.patch(f"/fhir/Observation/{world.obs_a}", json=NOTE, headers=patch)
    assert own.status_code == 200, own.text
    move = [{"op": "replace", "path": "/subject/reference", "value": f"Patient/{world.b}"}]
    moved = http.patch(f"/fhir/Observation/{world.obs_a}", json=move, headers=patch)
    assert moved.status_code == 403  # not into another patient's compartment
    # conditional writes see only the compartment: B's Observation matches nothing
    b_ident = _ident(http, world.obs_b)
    cond = http.patch(f"/fhir/Observation?identifier={b_ident}", json=NOTE, headers=patch)
    assert cond.status_code == 404
    body = _identified(weight(world.b), b_ident)
    put = http.put(f"/fhir/Observation?identifier={b_ident}", json=body, headers=h)
    assert put.status_code == 403  # the create it turns into is in B's compartment
    gone = http.delete(f"/fhir/Observation?identifier={b_ident}", headers=h)
    assert gone.status_code == 200 and gone.json()["issue"][0]["severity"] == "information"
    assert _version(http, world.obs_b) == 2  # B's data untouched throughout
    a_ident = _ident(http, world.obs_a)
    mine = _identified(weight(world.b), a_ident)
    stolen = http.put(f"/fhir/Observation?identifier={a_ident}", json=mine, headers=h)
    assert stolen.status_code == 403  # updating A's into B's compartment


def test_scopes(oauth_client: TestClient, oauth_db: Any, world: World) -> None:
    http = oauth_client
    reader = _writer(http, "patient/Observation.rs")
    for response in (
        http.patch(
            f"/fhir/Observation/{world.obs_a}", json=NOTE,
            headers={**reader, "Content-Type": JSON_PATCH},
        ),
        http.put(f"/fhir/Observation?patient={world.a}", json=weight(world.a), headers=reader),
        http.delete(f"/fhir/Observation?patient={world.a}", headers=reader),
    ):
        assert response.status_code == 403, response.text
    # .cud (v1 write): a patch, but no conditional write (that searches)
    v1 = _system(http, oauth_db, "system/Observation.cud")
    ok = http.patch(
        f"/fhir/Observation/{world.obs_b}", json=NOTE, headers={**v1, "Content-Type": JSON_PATCH}
    )
    assert ok.status_code == 200, ok.text
    ident = _ident(http, world.obs_b)
    assert http.put(
        f"/fhir/Observation?identifier={ident}", json=weight(world.b), headers=v1
    ).status_code == 403
    # .us without .c: updates the match, but may not create when nothing matches
    us = _system(http, oauth_db, "system/Observation.us")
    body = _identified(weight(world.b), ident)
    assert http.put(
        f"/fhir/Observation?identifier={ident}", json=body, headers=us
    ).status_code == 200
    assert http.put(
        "/fhir/Observation?identifier=urn:telemon:test|new-one", json=weight(world.b), headers=us
    ).status_code == 403


def test_patches_and_conditional_writes_are_audited(
    oauth_client: TestClient, oauth_db: Any, world: World
) -> None:
    http = oauth_client
    h = _system(http, oauth_db, "system/Observation.cruds system/AuditEvent.rs")
    patch = {**h, "Content-Type": JSON_PATCH}
    done = http.patch(f"/fhir/Observation/{world.obs_a}", json=NOTE, headers=patch)
    assert done.status_code == 200
    stale = http.patch(
        f"/fhir/Observation/{world.obs_a}", json=NOTE, headers={**patch, "If-Match": 'W/"1"'}
    )
    assert stale.status_code == 412
    created = http.put(
        "/fhir/Observation?identifier=urn:telemon:test|audited-1",
        json=weight(world.b, ident="audited-1"), headers=h,
    )
    assert created.status_code == 201, created.text
    assert http.delete(
        "/fhir/Observation?identifier=urn:telemon:test|audited-1", headers=h
    ).status_code == 200
    bundle = http.get("/fhir/AuditEvent?_count=500", headers=h).json()
    events = [e["resource"] for e in bundle.get("entry", [])]

    def of(code: str, outcome: str) -> list[dict[str, Any]]:
        return [
            e for e in events if e["subtype"][0]["code"] == code and e["outcome"] == outcome
        ]

    patched = of("patch", "0")
    assert len(patched) == 1 and patched[0]["action"] == "U"
    refs = {ent.get("what", {}).get("reference") for ent in patched[0]["entity"]}
    assert any(str(r).startswith(f"Observation/{world.obs_a}") for r in refs), refs
    assert f"Patient/{world.a}" in refs
    assert len(of("patch", "4")) == 1  # the refused one is logged too
    new_id = created.json()["id"]
    assert any(new_id in str(e["entity"]) for e in of("update", "0"))
    deletes = of("delete", "0")
    assert any(new_id in str(e["entity"]) for e in deletes)
    assert all(any("query" in ent for ent in e["entity"]) for e in deletes)


def test_bundle_patch_entries_are_confined(oauth_client: TestClient, world: World) -> None:
    http = oauth_client
    h = _writer(http, "patient/Observation.rud patient/Patient.rs")
    binary = {
        "resourceType": "Binary",
        "contentType": JSON_PATCH,
        "data": base64.b64encode(orjson.dumps(NOTE)).decode(),
    }
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": binary, "request": {"method": "PATCH", "url": f"Observation/{world.obs_b}"}},
        {"resource": binary, "request": {"method": "PATCH", "url": f"Observation/{world.obs_a}"}},
        # conditional: needs .s, which this token lacks
        {"request": {"method": "DELETE", "url": f"Observation?patient={world.a}"}},
    ]}
    response = http.post("/fhir", json=batch, headers=h)
    assert response.status_code == 200, response.text
    assert [e["response"]["status"] for e in response.json()["entry"]] == [
        "404 Not Found", "200 OK", "403 Forbidden"
    ]
    assert _version(http, world.obs_b) == 2
    assert _version(http, world.obs_a) == 3
