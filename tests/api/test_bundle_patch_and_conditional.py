"""PATCH entries (a Binary with a JSON Patch, or a FHIRPath Patch Parameters) and conditional
PUT/PATCH/DELETE URLs (``Type?criteria``) inside transaction and batch Bundles."""

from __future__ import annotations

import base64
import json
from typing import Any

from fastapi.testclient import TestClient

from tests import factories as f


def _binary(ops: list[dict[str, Any]]) -> dict[str, Any]:
    data = base64.b64encode(json.dumps(ops).encode()).decode()
    return {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}


def _entry(method: str, url: str, resource: dict[str, Any] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"request": {"method": method, "url": url}}
    if resource is not None:
        entry["resource"] = resource
    return entry


def _statuses(bundle: dict[str, Any]) -> list[str]:
    return [e["response"]["status"] for e in bundle["entry"]]


def _by_bsn(bsn: str) -> str:
    return f"Patient?identifier={f.BSN}|{bsn}"


def test_transaction_with_patch_and_conditional_entries(client: TestClient) -> None:
    a = client.post("/fhir/Patient", json=f.patient(f.BSNS[1])).json()["id"]
    b = client.post("/fhir/Patient", json=f.patient(f.BSNS[2])).json()["id"]
    gone = client.post("/fhir/Patient", json=f.patient(f.BSNS[3])).json()["id"]
    bundle = f.transaction(
        _entry("PATCH", f"Patient/{a}", _binary([
            {"op": "replace", "path": "/gender", "value": "female"},
        ])),
        _entry("PATCH", _by_bsn(f.BSNS[2]), f.fhirpath_patch(
            f.operation("replace", "Patient.birthDate", value={"valueDate": "1960-01-01"})
        )),
        _entry("PUT", _by_bsn(f.BSNS[4]), f.patient(f.BSNS[4], family="Nieuw")),
        _entry("PUT", _by_bsn(f.BSNS[1]), f.patient(f.BSNS[1], family="Anders")),
        _entry("DELETE", _by_bsn(f.BSNS[3])),
        _entry("DELETE", _by_bsn(f.BSNS[5])),  # matches nothing
    )
    # the conditional PUT of BSN 1 and the PATCH of Patient/a write the same resource
    refused = client.post("/fhir", json=bundle)
    assert refused.status_code == 400, refused.text
    assert f.expressions(refused.json()) == ["Bundle.entry[3].request.url"]
    assert client.get(f"/fhir/Patient/{a}").json()["meta"]["versionId"] == "1"

    del bundle["entry"][3]
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    assert _statuses(response.json()) == [
        "200 OK", "200 OK", "201 Created", "200 OK", "200 OK"
    ]
    assert client.get(f"/fhir/Patient/{a}").json()["gender"] == "female"
    assert client.get(f"/fhir/Patient/{b}").json()["birthDate"] == "1960-01-01"
    assert client.get(f"/fhir/Patient/{gone}").status_code == 410
    created = client.get(f"/fhir/{_by_bsn(f.BSNS[4])}").json()["entry"]
    assert created[0]["resource"]["name"][0]["family"] == "Nieuw"
    nothing = response.json()["entry"][4]["response"]
    assert "etag" not in nothing and nothing["outcome"]["issue"][0]["severity"] == "information"


def test_transaction_is_all_or_nothing_with_a_failing_patch(client: TestClient) -> None:
    a = client.post("/fhir/Patient", json=f.patient(f.BSNS[1])).json()["id"]
    bundle = f.transaction(
        _entry("PUT", _by_bsn(f.BSNS[2]), f.patient(f.BSNS[2])),
        _entry("PATCH", f"Patient/{a}", _binary([
            {"op": "test", "path": "/gender", "value": "female"},
        ])),
    )
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 422, response.text
    assert client.get(f"/fhir/{_by_bsn(f.BSNS[2])}").json().get("entry") is None
    no_match = f.transaction(_entry("PATCH", _by_bsn(f.BSNS[5]), _binary([])))
    assert client.post("/fhir", json=no_match).status_code == 404


def test_batch_with_patch_and_conditional_entries(client: TestClient) -> None:
    a = client.post("/fhir/Patient", json=f.patient(f.BSNS[1])).json()["id"]
    for _ in range(2):
        client.post("/fhir/Patient", json=f.patient(f.BSNS[3]))
    bundle = f.batch(
        _entry("PATCH", f"Patient/{a}", _binary([
            {"op": "replace", "path": "/gender", "value": "female"},
        ])),
        _entry("PATCH", f"Patient/{a}", {"resourceType": "Binary", "contentType": "text/plain",
                                         "data": "eA=="}),
        _entry("PUT", _by_bsn(f.BSNS[2]), f.patient(f.BSNS[2])),
        _entry("DELETE", _by_bsn(f.BSNS[3])),  # two matches
        _entry("PATCH", _by_bsn(f.BSNS[1]), f.fhirpath_patch(
            f.operation("replace", "Patient.gender", value={"valueCode": "other"})
        )),
    )
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    assert _statuses(response.json()) == [
        "200 OK", "400 Bad Request", "201 Created", "412 Precondition Failed", "200 OK"
    ]
    stored = client.get(f"/fhir/Patient/{a}").json()
    assert stored["gender"] == "other" and stored["meta"]["versionId"] == "3"
