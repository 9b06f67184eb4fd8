"""PATCH through HTTP on both backends: JSON Patch, FHIRPath Patch, merge patch, If-Match,
validation of the result and nothing stored on failure."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import factories as f

JSON_PATCH = {"Content-Type": "application/json-patch+json"}
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
def weight_id(client: TestClient) -> str:
    pid = client.post("/fhir/Patient", json=f.patient(f.BSNS[1])).json()["id"]
    response = client.post("/fhir/Observation", json=f.weight(pid, 80.5))
    assert response.status_code == 201, response.text
    oid: str = response.json()["id"]
    return oid


def _read(client: TestClient, oid: str) -> dict[str, Any]:
    got: dict[str, Any] = client.get(f"/fhir/Observation/{oid}").json()
    return got


def test_json_patch_replace_and_add(client: TestClient, weight_id: str) -> None:
    ops = [
        {"op": "test", "path": "/status", "value": "final"},
        {"op": "replace", "path": "/valueQuantity/value", "value": 81.2},
        {"op": "add", "path": "/note", "value": [{"text": "after dinner"}]},
        {"op": "add", "path": "/note/-", "value": {"text": "second"}},
    ]
    response = client.patch(f"/fhir/Observation/{weight_id}", json=ops, headers=JSON_PATCH)
    assert response.status_code == 200, response.text
    assert response.headers["ETag"] == 'W/"2"'
    body = response.json()
    assert body["valueQuantity"]["value"] == 81.2
    assert [n["text"] for n in body["note"]] == ["after dinner", "second"]
    assert _read(client, weight_id)["meta"]["versionId"] == "2"


def test_json_patch_move_copy_remove(client: TestClient, weight_id: str) -> None:
    ops = [
        {"op": "add", "path": "/note", "value": [{"text": "a"}, {"text": "b"}]},
        {"op": "move", "from": "/note/0", "path": "/note/-"},
        {"op": "copy", "from": "/note/0", "path": "/note/0"},
        {"op": "remove", "path": "/note/2"},
    ]
    response = client.patch(f"/fhir/Observation/{weight_id}", json=ops, headers=JSON_PATCH)
    assert response.status_code == 200, response.text
    assert [n["text"] for n in response.json()["note"]] == ["b", "b"]


def test_failed_test_op_is_422_and_nothing_stored(client: TestClient, weight_id: str) -> None:
    ops = [
        {"op": "replace", "path": "/valueQuantity/value", "value": 90},
        {"op": "test", "path": "/status", "value": "preliminary"},
    ]
    response = client.patch(f"/fhir/Observation/{weight_id}", json=ops, headers=JSON_PATCH)
    assert response.status_code == 422, response.text
    assert f.expressions(response.json()) == ["JsonPatch[1]"]
    stored = _read(client, weight_id)
    assert stored["meta"]["versionId"] == "1" and stored["valueQuantity"]["value"] == 80.5


@pytest.mark.parametrize(
    ("ops", "expression"),
    [
        ([{"op": "delete", "path": "/status"}], "JsonPatch[0].op"),
        ([{"op": "replace", "path": "status", "value": "x"}], "JsonPatch[0].path"),
        ([{"op": "add", "path": "/note"}], "JsonPatch[0].value"),
        (["replace"], "JsonPatch[0]"),
    ],
)
def test_malformed_json_patch_is_400(
    client: TestClient, weight_id: str, ops: list[Any], expression: str
) -> None:
    response = client.patch(f"/fhir/Observation/{weight_id}", json=ops, headers=JSON_PATCH)
    assert response.status_code == 400, response.text
    assert f.expressions(response.json()) == [expression]


def test_patch_that_breaks_structure_is_400(client: TestClient, weight_id: str) -> None:
    ops = [{"op": "replace", "path": "/status", "value": "done-and-dusted"}]
    response = client.patch(f"/fhir/Observation/{weight_id}", json=ops, headers=JSON_PATCH)
    assert response.status_code == 400, response.text
    assert "Observation.status" in f.expressions(response.json())
    assert _read(client, weight_id)["status"] == "final"


def test_patch_that_breaks_the_profile_is_422(client: TestClient, weight_id: str) -> None:
    ops = [{"op": "remove", "path": "/valueQuantity/code"}]
    response = client.patch(f"/fhir/Observation/{weight_id}", json=ops, headers=JSON_PATCH)
    assert response.status_code in (400, 422), response.text
    assert any("valueQuantity" in e for e in f.expressions(response.json())), response.text
    assert _read(client, weight_id)["meta"]["versionId"] == "1"


def test_patch_may_not_change_the_id(client: TestClient, weight_id: str) -> None:
    ops = [{"op": "replace", "path": "/id", "value": "other"}]
    response = client.patch(f"/fhir/Observation/{weight_id}", json=ops, headers=JSON_PATCH)
    assert response.status_code == 400
    assert f.expressions(response.json()) == ["Observation.id"]


def test_if_match(client: TestClient, weight_id: str) -> None:
    ops = [{"op": "replace", "path": "/valueQuantity/value", "value": 79}]
    stale = client.patch(
        f"/fhir/Observation/{weight_id}", json=ops, headers={**JSON_PATCH, "If-Match": 'W/"7"'}
    )
    assert stale.status_code == 412, stale.text
    assert f.expressions(stale.json()) == ["If-Match"]
    fresh = client.patch(
        f"/fhir/Observation/{weight_id}", json=ops, headers={**JSON_PATCH, "If-Match": 'W/"1"'}
    )
    assert fresh.status_code == 200, fresh.text
    again = client.patch(
        f"/fhir/Observation/{weight_id}", json=ops, headers={**JSON_PATCH, "If-Match": 'W/"1"'}
    )
    assert again.status_code == 412  # version 1 is no longer current
    assert _read(client, weight_id)["meta"]["versionId"] == "2"


def test_unknown_and_deleted(client: TestClient, weight_id: str) -> None:
    ops = [{"op": "replace", "path": "/status", "value": "amended"}]
    assert client.patch("/fhir/Observation/nope", json=ops, headers=JSON_PATCH).status_code == 404
    assert client.delete(f"/fhir/Observation/{weight_id}").status_code == 200
    gone = client.patch(f"/fhir/Observation/{weight_id}", json=ops, headers=JSON_PATCH)
    assert gone.status_code == 410


def test_wrong_content_type_is_415(client: TestClient, weight_id: str) -> None:
    response = client.patch(
        f"/fhir/Observation/{weight_id}", content=b"status=x",
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 415
    assert f.expressions(response.json()) == ["Content-Type"]


def test_merge_patch(client: TestClient, weight_id: str) -> None:
    body = {"status": "amended", "note": [{"text": "re-weighed"}], "issued": None}
    response = client.patch(f"/fhir/Observation/{weight_id}", json=body, headers=MERGE)
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["status"] == "amended" and got["note"] == [{"text": "re-weighed"}]
    # application/json with an object (what generic clients such as fhirpy send) merges too
    plain = client.patch(
        f"/fhir/Observation/{weight_id}", json={"status": "corrected"},
        headers={"Content-Type": "application/json"},
    )
    assert plain.status_code == 200 and plain.json()["status"] == "corrected"


def test_fhirpath_patch_replace_add_insert_move_delete(
    client: TestClient, weight_id: str
) -> None:
    patch = f.fhirpath_patch(
        f.operation("replace", "Observation.status", value={"valueCode": "amended"}),
        f.operation("add", "Observation", name="note", value=[
            {"name": "text", "valueMarkdown": "one"}
        ]),
        f.operation("add", "Observation", name="note", value=[
            {"name": "text", "valueMarkdown": "three"}
        ]),
        f.operation("insert", "Observation.note", index=1, value=[
            {"name": "text", "valueMarkdown": "two"}
        ]),
        f.operation("move", "Observation.note", source=2, destination=0),
        f.operation("delete", "Observation.note.where(text='one')"),
        f.operation("replace", "Observation.valueQuantity.value", value={"valueDecimal": 82}),
        f.operation("delete", "Observation.interpretation"),  # absent: no error
    )
    response = client.patch(f"/fhir/Observation/{weight_id}", json=patch)
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["status"] == "amended"
    assert [n["text"] for n in got["note"]] == ["three", "two"]
    assert got["valueQuantity"]["value"] == 82


def test_fhirpath_patch_indexes_first_last(client: TestClient, weight_id: str) -> None:
    setup = [{"op": "add", "path": "/note", "value": [{"text": "a"}, {"text": "b"}]}]
    assert client.patch(
        f"/fhir/Observation/{weight_id}", json=setup, headers=JSON_PATCH
    ).status_code == 200
    patch = f.fhirpath_patch(
        f.operation("replace", "Observation.note[1].text", value={"valueMarkdown": "B"}),
        f.operation("replace", "Observation.note.first().text", value={"valueMarkdown": "A"}),
        f.operation("delete", "Observation.note.last()"),
    )
    response = client.patch(f"/fhir/Observation/{weight_id}", json=patch)
    assert response.status_code == 200, response.text
    assert response.json()["note"] == [{"text": "A"}]


@pytest.mark.parametrize(
    ("operation_", "status"),
    [
        (f.operation("replace", "Observation.note", value={"valueString": "x"}), 422),  # no note
        (f.operation("add", "Observation", name="status", value={"valueCode": "final"}), 422),
        (f.operation("replace", "Observation.code.descendants()", value={"valueString": "x"}), 400),
        (f.operation("explode", "Observation.status"), 400),
        (f.operation("insert", "Observation.category", index=5, value=[]), 422),
    ],
)
def test_fhirpath_patch_errors(
    client: TestClient, weight_id: str, operation_: dict[str, Any], status: int
) -> None:
    response = client.patch(f"/fhir/Observation/{weight_id}", json=f.fhirpath_patch(operation_))
    assert response.status_code == status, response.text
    assert f.expressions(response.json())[0].startswith("Parameters.parameter[0]")
    assert _read(client, weight_id)["meta"]["versionId"] == "1"


def test_fhir_json_body_must_be_parameters(client: TestClient, weight_id: str) -> None:
    response = client.patch(f"/fhir/Observation/{weight_id}", json={"status": "amended"})
    assert response.status_code == 400
    assert f.expressions(response.json()) == ["resourceType"]


def test_patch_of_an_unknown_type_is_404(client: TestClient) -> None:
    response = client.patch("/fhir/Nonsense/1", json=[], headers=JSON_PATCH)
    assert response.status_code == 404


def test_patch_keeps_decimal_digits_and_refuses_empty_values(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=f.patient()).json()["id"]
    raw = f.weight(pid)
    body = json.dumps(raw).replace('"value": 80.5', '"value": 80.50').encode()
    oid = client.post("/fhir/Observation", content=body).json()["id"]
    ops = [{"op": "replace", "path": "/status", "value": "amended"}]
    patched = client.patch(f"/fhir/Observation/{oid}", json=ops, headers=JSON_PATCH)
    assert patched.status_code == 200, patched.text
    assert b'"value":80.50' in patched.content  # the digits as received, not 80.5
    empty = [{"op": "replace", "path": "/status", "value": ""}]
    refused = client.patch(f"/fhir/Observation/{oid}", json=empty, headers=JSON_PATCH)
    assert refused.status_code == 400
    assert f.expressions(refused.json()) == ["Observation.status"]
