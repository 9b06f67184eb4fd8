"""Cross-patient matrix: a patient-A token against each of patient B's resources through every
interaction returns nothing of B (reads: the never-existed 404; writes: 403) — OWASP API1."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi.testclient import TestClient

from tests.auth.conftest import BSN_A, World, pgo_token
from tests.factories import weight

SCOPE = (
    "launch/patient patient/Patient.rs patient/Observation.cruds patient/Device.rs "
    "patient/AuditEvent.rs"
)


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if "resource" in e}


def test_patient_a_token_sees_nothing_of_b(
    oauth_client: TestClient, oauth_db: Any, world: World
) -> None:
    from service.auth import clients
    from tests.auth.conftest import REDIRECT, register

    client, secret = clients.new_pgo("matrix.example.org", "Matrix PGO", [REDIRECT], SCOPE)
    register(oauth_db, client)
    token = pgo_token(oauth_client, (client.client_id, secret), BSN_A, scope=SCOPE)
    h = {"Authorization": f"Bearer {token['access_token']}"}
    http = oauth_client
    b_ids = {world.b, world.obs_b, world.dev_b}
    never = http.get("/fhir/Observation/does-not-exist", headers=h)
    assert never.status_code == 404

    def same_as_missing(url: str, missing: str) -> None:
        got = http.get(url, headers=h)
        ref = http.get(missing, headers=h)
        assert got.status_code == ref.status_code == 404, url
        assert got.json() == {
            **ref.json(),
            "issue": [
                {**i, "diagnostics": i["diagnostics"].replace("does-not-exist", u)}
                for i, u in zip(ref.json()["issue"], [url.split("/")[3]], strict=False)
            ],
        }, url

    # read, vread, instance history: exactly the not-found answer
    same_as_missing(f"/fhir/Observation/{world.obs_b}", "/fhir/Observation/does-not-exist")
    same_as_missing(f"/fhir/Patient/{world.b}", "/fhir/Patient/does-not-exist")
    same_as_missing(f"/fhir/Device/{world.dev_b}", "/fhir/Device/does-not-exist")
    for url in (
        f"/fhir/Observation/{world.obs_b}/_history/1",
        f"/fhir/Observation/{world.obs_b}/_history",
    ):
        assert http.get(url, headers=h).status_code == 404, url
    # own data works
    assert http.get(f"/fhir/Observation/{world.obs_a}", headers=h).status_code == 200
    assert http.get(f"/fhir/Observation/{world.obs_a}/_history/1", headers=h).status_code == 200
    # every search parameter, POST _search, _include, _id, type history, $lastn
    searches = [
        f"/fhir/Observation?patient={world.b}",
        f"/fhir/Observation?subject=Patient/{world.b}",
        f"/fhir/Observation?subject:Patient={world.b}",
        f"/fhir/Observation?_id={world.obs_b}",
        f"/fhir/Observation?device=Device/{world.dev_b}",
        "/fhir/Observation?code=http://loinc.org|29463-7",
        "/fhir/Observation?_include=Observation:device&_include=Observation:subject",
        "/fhir/Patient?identifier=http://fhir.nl/fhir/NamingSystem/bsn|123456782",
        f"/fhir/Patient?_id={world.b}",
        "/fhir/Patient?family=Bakker",
        f"/fhir/Device?patient={world.b}",
        "/fhir/Observation/_history",
        f"/fhir/Observation/$lastn?patient={world.b}",
        "/fhir/Observation/$lastn?max=10",
        f"/fhir/AuditEvent?patient={world.b}",
    ]
    for url in searches:
        response = http.get(url, headers=h)
        assert response.status_code == 200, (url, response.text)
        assert not (_ids(response.json()) & b_ids), url
    posted = http.post(
        "/fhir/Observation/_search",
        content=f"patient={world.b}",
        headers={**h, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert posted.status_code == 200 and not (_ids(posted.json()) & b_ids)
    # own includes still work; B's device is not pulled in through an include
    inc = http.get("/fhir/Observation?_include=Observation:device", headers=h).json()
    assert world.dev_a in _ids(inc)
    # paging links replayed with another token: B's token pages only B's data
    page = http.get("/fhir/Observation?_count=1", headers=h).json()
    token_b = pgo_token(oauth_client, (client.client_id, secret), "123456782", scope=SCOPE)
    hb = {"Authorization": f"Bearer {token_b['access_token']}"}
    first_b = http.get("/fhir/Observation?_count=1", headers=hb).json()
    assert _ids(first_b) <= {world.obs_b}
    nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
    if nxt:
        replay = http.get(urlsplit(nxt[0])._replace(scheme="", netloc="").geturl(), headers=hb)
        assert not (_ids(replay.json()) & {world.obs_a, world.a, world.dev_a})
    # writes into B's compartment: 403
    assert http.post("/fhir/Observation", json=weight(world.b), headers=h).status_code == 403
    current = http.get(f"/fhir/Observation/{world.obs_a}", headers=h).json()
    moved = {**current, "subject": {"reference": f"Patient/{world.b}"}}
    assert http.put(f"/fhir/Observation/{world.obs_a}", json=moved, headers=h).status_code == 403
    stolen = {**weight(world.a), "id": world.obs_b}
    assert http.put(f"/fhir/Observation/{world.obs_b}", json=stolen, headers=h).status_code == 403
    assert http.delete(f"/fhir/Observation/{world.obs_b}", headers=h).status_code == 403
    # a Bundle: one foreign entry fails the whole transaction; batch reads of B are 404
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": weight(world.a), "request": {"method": "POST", "url": "Observation"}},
            {"resource": weight(world.b), "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    assert http.post("/fhir", json=tx, headers=h).status_code == 403
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Observation/{world.obs_b}"}},
            {"request": {"method": "GET", "url": f"Patient/{world.b}"}},
            {"request": {"method": "GET", "url": f"Observation/{world.obs_a}"}},
        ],
    }
    out = http.post("/fhir", json=batch, headers=h).json()
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == ["404 Not Found", "404 Not Found", "200 OK"]
    assert world.obs_b not in str(out).replace(f"Observation/{world.obs_b} is not known", "")
    # B's data is untouched
    fhir = oauth_client.app.state.telemon.fhir  # type: ignore[attr-defined]
    assert fhir.read("Observation", world.obs_b).version_id == 2


def test_scopes_limit_types_and_interactions(
    oauth_client: TestClient, world: World, pgo: tuple[str, str]
) -> None:
    token = pgo_token(oauth_client, pgo, BSN_A, scope="patient/Observation.rs")
    h = {"Authorization": f"Bearer {token['access_token']}"}
    assert oauth_client.get(f"/fhir/Patient/{world.a}", headers=h).status_code == 403
    assert (
        oauth_client.post("/fhir/Observation", json=weight(world.a), headers=h).status_code == 403
    )
    assert oauth_client.get("/fhir/Observation", headers=h).status_code == 200
