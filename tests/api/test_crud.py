"""Create, read, vread, update (If-Match), delete and history through HTTP."""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from fastapi.testclient import TestClient

from tests import factories as f

_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def _create(client: TestClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_create_returns_201_location_etag_and_meta(client: TestClient) -> None:
    response = client.post("/fhir/Patient", json=f.patient(f.BSNS[0]))
    assert response.status_code == 201, response.text
    body = response.json()
    pid = body["id"]
    assert response.headers["Location"] == f"http://testserver/fhir/Patient/{pid}/_history/1"
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Last-Modified"].endswith("GMT")
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    assert body["meta"]["versionId"] == "1"
    assert _INSTANT.match(body["meta"]["lastUpdated"])
    assert body["identifier"][0]["value"] == f.BSNS[0]


def test_create_ignores_client_id_and_meta(client: TestClient) -> None:
    resource = f.patient()
    resource["id"] = "chosen-by-client"
    resource["meta"] = {"versionId": "7", "lastUpdated": "2001-01-01T00:00:00Z"}
    body = _create(client, resource)
    assert body["id"] != "chosen-by-client"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"] != "2001-01-01T00:00:00Z"
    assert client.get("/fhir/Patient/chosen-by-client").status_code == 404


def test_create_prefer_minimal_has_no_body(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient", json=f.patient(), headers={"Prefer": "return=minimal"}
    )
    assert response.status_code == 201
    assert response.content == b""
    assert re.search(r"/Patient/[^/]+/_history/1$", response.headers["Location"])


def test_read_returns_stored_resource(client: TestClient) -> None:
    created = _create(client, f.patient(family="de Vries"))
    response = client.get(f"/fhir/Patient/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["ETag"] == 'W/"1"'


def test_read_unknown_is_404_with_outcome(client: TestClient) -> None:
    response = client.get("/fhir/Patient/does-not-exist")
    assert response.status_code == 404
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "not-found"


def test_unknown_resource_type_is_404(client: TestClient) -> None:
    response = client.get("/fhir/Medication/1")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


def test_observation_subject_must_exist(client: TestClient) -> None:
    response = client.post("/fhir/Observation", json=f.weight("no-such-patient"))
    assert response.status_code == 422, response.text
    assert f.expressions(response.json()) == ["Observation.subject"]  # once, not per parameter
    assert client.get("/fhir/Observation").json().get("entry", []) == []


def test_observation_subject_deleted_patient_rejected(
    client: TestClient, make_patient: Any
) -> None:
    pid = make_patient()
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 200
    response = client.post("/fhir/Observation", json=f.weight(pid))
    assert response.status_code == 422
    assert "Observation.subject" in f.expressions(response.json())


def test_update_creates_new_version_and_vread_keeps_old(
    client: TestClient, make_patient: Any
) -> None:
    pid = make_patient(family="Old")
    v1 = client.get(f"/fhir/Patient/{pid}").json()
    changed = {**v1, "name": [{"family": "New", "given": ["Piet"]}]}
    response = client.put(f"/fhir/Patient/{pid}", json=changed, headers={"If-Match": 'W/"1"'})
    assert response.status_code == 200, response.text
    assert response.headers["ETag"] == 'W/"2"'
    body = response.json()
    assert body["meta"]["versionId"] == "2"
    assert body["name"][0]["family"] == "New"
    assert body["meta"]["lastUpdated"] >= v1["meta"]["lastUpdated"]

    assert client.get(f"/fhir/Patient/{pid}").json()["name"][0]["family"] == "New"
    old = client.get(f"/fhir/Patient/{pid}/_history/1")
    assert old.status_code == 200
    assert old.json()["name"][0]["family"] == "Old"
    assert old.json()["meta"]["versionId"] == "1"
    assert old.headers["ETag"] == 'W/"1"'
    assert client.get(f"/fhir/Patient/{pid}/_history/2").json()["name"][0]["family"] == "New"
    assert client.get(f"/fhir/Patient/{pid}/_history/3").status_code == 404
    assert client.get(f"/fhir/Patient/{pid}/_history/abc").status_code == 404


def test_update_with_stale_if_match_is_412_and_changes_nothing(
    client: TestClient, make_patient: Any
) -> None:
    pid = make_patient(family="Keep")
    current = client.get(f"/fhir/Patient/{pid}").json()
    changed = {**current, "name": [{"family": "Lost"}]}
    response = client.put(f"/fhir/Patient/{pid}", json=changed, headers={"If-Match": 'W/"5"'})
    assert response.status_code == 412
    assert f.expressions(response.json()) == ["If-Match"]
    after = client.get(f"/fhir/Patient/{pid}")
    assert after.json()["name"][0]["family"] == "Keep"
    assert after.headers["ETag"] == 'W/"1"'


def test_update_with_malformed_if_match_is_400(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    current = client.get(f"/fhir/Patient/{pid}").json()
    response = client.put(f"/fhir/Patient/{pid}", json=current, headers={"If-Match": "one"})
    assert response.status_code == 400
    assert f.expressions(response.json()) == ["If-Match"]


def test_update_id_must_match_url(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    current = client.get(f"/fhir/Patient/{pid}").json()
    response = client.put(f"/fhir/Patient/{pid}", json={**current, "id": "other"})
    assert response.status_code == 400
    assert "Patient.id" in f.expressions(response.json())


def test_update_unknown_id_creates_it(client: TestClient) -> None:
    resource = {**f.patient(), "id": "client-chosen-1"}
    response = client.put("/fhir/Patient/client-chosen-1", json=resource)
    assert response.status_code == 201, response.text
    assert response.headers["Location"].endswith("/Patient/client-chosen-1/_history/1")
    assert client.get("/fhir/Patient/client-chosen-1").json()["meta"]["versionId"] == "1"


def test_update_with_if_match_on_missing_resource_is_412(client: TestClient) -> None:
    resource = {**f.patient(), "id": "never-there"}
    response = client.put("/fhir/Patient/never-there", json=resource, headers={"If-Match": 'W/"1"'})
    assert response.status_code == 412
    assert client.get("/fhir/Patient/never-there").status_code == 404


def test_delete_then_gone(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    response = client.delete(f"/fhir/Patient/{pid}")
    assert response.status_code == 200
    assert response.headers["ETag"] == 'W/"2"'
    assert response.json()["resourceType"] == "OperationOutcome"

    gone = client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert client.get(f"/fhir/Patient/{pid}/_history/1").status_code == 200
    assert client.get(f"/fhir/Patient/{pid}/_history/2").status_code == 410
    search = client.get(f"/fhir/Patient?_id={pid}").json()
    assert f.match_ids(search) == []
    # Deleting again is harmless; an unknown id is 404.
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 200
    assert client.delete("/fhir/Patient/never-existed").status_code == 404


def test_recreate_after_delete_via_put(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    client.delete(f"/fhir/Patient/{pid}")
    response = client.put(f"/fhir/Patient/{pid}", json={**f.patient(family="Back"), "id": pid})
    assert response.status_code == 201
    assert response.json()["meta"]["versionId"] == "3"
    assert client.get(f"/fhir/Patient/{pid}").json()["name"][0]["family"] == "Back"


def test_instance_history_newest_first(client: TestClient, make_patient: Any) -> None:
    pid = make_patient(family="A")
    for family in ("B", "C"):
        current = client.get(f"/fhir/Patient/{pid}").json()
        resp = client.put(f"/fhir/Patient/{pid}", json={**current, "name": [{"family": family}]})
        assert resp.status_code == 200
    client.delete(f"/fhir/Patient/{pid}")
    response = client.get(f"/fhir/Patient/{pid}/_history")
    assert response.status_code == 200
    bundle = response.json()
    assert bundle["type"] == "history"
    assert bundle["total"] == 4
    entries = bundle["entry"]
    assert entries[0]["request"]["method"] == "DELETE"
    assert entries[0]["response"]["status"].startswith("410")
    assert [e["resource"]["meta"]["versionId"] for e in entries[1:]] == ["3", "2", "1"]
    assert [e["resource"]["name"][0]["family"] for e in entries[1:]] == ["C", "B", "A"]
    assert entries[-1]["request"]["method"] == "POST"
    assert entries[1]["request"] == {"method": "PUT", "url": f"Patient/{pid}"}


def test_instance_history_unknown_is_404(client: TestClient) -> None:
    assert client.get("/fhir/Patient/nobody/_history").status_code == 404


def test_type_history_covers_all_resources_of_the_type(
    client: TestClient, make_patient: Any
) -> None:
    first = make_patient(family="One")
    second = make_patient(family="Two")
    current = client.get(f"/fhir/Patient/{first}").json()
    client.put(f"/fhir/Patient/{first}", json={**current, "name": [{"family": "Uno"}]})
    client.post("/fhir/Observation", json=f.weight(second))
    bundle = client.get("/fhir/Patient/_history").json()
    assert bundle["type"] == "history"
    pairs = [(e["resource"]["id"], e["resource"]["meta"]["versionId"]) for e in bundle["entry"]]
    assert sorted(pairs) == sorted([(first, "1"), (first, "2"), (second, "1")])
    assert pairs[0] == (first, "2")  # newest first
    assert all(e["resource"]["resourceType"] == "Patient" for e in bundle["entry"])
    limited = client.get("/fhir/Patient/_history?_count=1").json()
    assert len(limited["entry"]) == 1


def test_device_crud(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    created = _create(client, f.device(pid, serial="SN-1"))
    assert client.get(f"/fhir/Device/{created['id']}").json()["identifier"][0]["value"] == "SN-1"
    search = client.get(f"/fhir/Device?patient={pid}").json()
    assert f.match_ids(search) == [created["id"]]
    assert client.delete(f"/fhir/Device/{created['id']}").status_code == 200
    assert client.get(f"/fhir/Device/{created['id']}").status_code == 410


def test_history_since(client: TestClient, make_patient: Any) -> None:
    pid = make_patient(family="A")
    current = client.get(f"/fhir/Patient/{pid}").json()
    time.sleep(0.01)
    updated = client.put(f"/fhir/Patient/{pid}", json={**current, "name": [{"family": "B"}]})
    since = updated.json()["meta"]["lastUpdated"]
    bundle = client.get(f"/fhir/Patient/{pid}/_history", params={"_since": since}).json()
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["2"]
    typed = client.get("/fhir/Patient/_history", params={"_since": since}).json()
    assert [e["resource"]["meta"]["versionId"] for e in typed["entry"]] == ["2"]
    for value in ("yesterday", "9999-12-31"):
        bad = client.get(f"/fhir/Patient/{pid}/_history", params={"_since": value})
        assert bad.status_code == 400, value
        assert f.expressions(bad.json()) == ["_since"]


def test_decimal_precision_is_kept_on_create_read_and_in_bundles(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=f.patient()).json()["id"]
    body = f.weight(pid, 80.5)
    raw = re.sub(rb'"value": ?80\.5', b'"value":80.50', client_json(body))
    created = client.post("/fhir/Observation", content=raw)
    assert created.status_code == 201, created.text
    assert b'"value":80.50' in created.content
    read = client.get(f"/fhir/Observation/{created.json()['id']}")
    assert b'"value":80.50' in read.content
    bundle = client_json(f.transaction(f.post_entry(f.weight(pid, 81.5))))
    response = client.post("/fhir", content=bundle.replace(b"81.5", b"81.500"))
    assert response.status_code == 200, response.text
    location = response.json()["entry"][0]["response"]["location"]
    assert b'"value":81.500' in client.get(f"/fhir/{location}").content
    found = client.get("/fhir/Observation", params={"patient": pid, "value-quantity": "80.5"})
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [created.json()["id"]]


def client_json(resource: dict[str, Any]) -> bytes:
    """A resource as compact JSON bytes (so a test can change how a number is written)."""
    return orjson.dumps(resource)
