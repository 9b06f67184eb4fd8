"""Conditional update, patch and delete (``PUT``/``PATCH``/``DELETE [type]?criteria``) through
HTTP on both backends, including parallel conditional updates against a live server."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests import factories as f

JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def _by_bsn(bsn: str) -> str:
    return f"identifier={f.BSN}|{bsn}"


def _count(client: TestClient | httpx.Client, url: str, **params: str) -> int:
    total: int = client.get(url, params={**params, "_summary": "count"}).json()["total"]
    return total


def test_conditional_update_creates_then_updates(client: TestClient) -> None:
    created = client.put(f"/fhir/Patient?{_by_bsn(f.BSNS[1])}", json=f.patient(f.BSNS[1]))
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    assert created.headers["Location"].endswith(f"/Patient/{pid}/_history/1")
    updated = client.put(
        f"/fhir/Patient?{_by_bsn(f.BSNS[1])}", json=f.patient(f.BSNS[1], family="Updated")
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["id"] == pid and updated.headers["ETag"] == 'W/"2"'
    assert client.get(f"/fhir/Patient/{pid}").json()["name"][0]["family"] == "Updated"
    assert _count(client, "/fhir/Patient") == 1


def test_conditional_update_body_id(client: TestClient) -> None:
    pid = client.put(f"/fhir/Patient?{_by_bsn(f.BSNS[1])}", json=f.patient(f.BSNS[1])).json()["id"]
    same = client.put(
        f"/fhir/Patient?{_by_bsn(f.BSNS[1])}", json={**f.patient(f.BSNS[1]), "id": pid}
    )
    assert same.status_code == 200, same.text
    other = client.put(
        f"/fhir/Patient?{_by_bsn(f.BSNS[1])}", json={**f.patient(f.BSNS[1]), "id": "someone-else"}
    )
    assert other.status_code == 400
    assert f.expressions(other.json()) == ["Patient.id"]
    # no match, with an id: created under that id; an id some other resource holds: 409
    chosen = client.put(
        f"/fhir/Patient?{_by_bsn(f.BSNS[2])}", json={**f.patient(f.BSNS[2]), "id": "chosen-1"}
    )
    assert chosen.status_code == 201 and chosen.json()["id"] == "chosen-1"
    taken = client.put(
        f"/fhir/Patient?{_by_bsn(f.BSNS[3])}", json={**f.patient(f.BSNS[3]), "id": pid}
    )
    assert taken.status_code == 409
    assert client.get(f"/fhir/Patient/{pid}").json()["identifier"][0]["value"] == f.BSNS[1]


def test_conditional_update_with_several_matches_is_412(client: TestClient) -> None:
    for family in ("A", "B"):
        assert client.post("/fhir/Patient", json=f.patient(family=family)).status_code == 201
    response = client.put("/fhir/Patient?birthdate=1950-03-02", json=f.patient(family="C"))
    assert response.status_code == 412
    assert f.expressions(response.json()) == ["url"]
    assert _count(client, "/fhir/Patient", family="C") == 0


@pytest.mark.parametrize("query", ["", "?_format=json", "?nonsense=1"])
def test_conditional_update_needs_known_criteria(client: TestClient, query: str) -> None:
    response = client.put(f"/fhir/Patient{query}", json=f.patient())
    assert response.status_code == 400, response.text
    assert _count(client, "/fhir/Patient") == 0


def test_conditional_update_validates_like_update(client: TestClient) -> None:
    bad = {**f.patient(f.BSNS[1]), "gender": "sometimes"}
    response = client.put(f"/fhir/Patient?{_by_bsn(f.BSNS[1])}", json=bad)
    assert response.status_code == 400
    assert "Patient.gender" in f.expressions(response.json())
    assert _count(client, "/fhir/Patient") == 0


def test_conditional_patch(client: TestClient) -> None:
    ops = [{"op": "replace", "path": "/gender", "value": "female"}]
    none = client.patch(f"/fhir/Patient?{_by_bsn(f.BSNS[1])}", json=ops, headers=JSON_PATCH)
    assert none.status_code == 404
    pid = client.post("/fhir/Patient", json=f.patient(f.BSNS[1])).json()["id"]
    one = client.patch(f"/fhir/Patient?{_by_bsn(f.BSNS[1])}", json=ops, headers=JSON_PATCH)
    assert one.status_code == 200, one.text
    assert one.json()["id"] == pid and one.json()["gender"] == "female"
    client.post("/fhir/Patient", json=f.patient(f.BSNS[1]))
    several = client.patch(f"/fhir/Patient?{_by_bsn(f.BSNS[1])}", json=ops, headers=JSON_PATCH)
    assert several.status_code == 412


def test_conditional_delete(client: TestClient) -> None:
    none = client.delete(f"/fhir/Patient?{_by_bsn(f.BSNS[1])}")
    assert none.status_code == 200
    assert none.json()["issue"][0]["severity"] == "information"
    pid = client.post("/fhir/Patient", json=f.patient(f.BSNS[1])).json()["id"]
    keep = client.post("/fhir/Patient", json=f.patient(f.BSNS[2])).json()["id"]
    one = client.delete(f"/fhir/Patient?{_by_bsn(f.BSNS[1])}")
    assert one.status_code == 200, one.text
    assert one.headers["ETag"] == 'W/"2"'
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410
    assert client.get(f"/fhir/Patient/{keep}").status_code == 200
    for _ in range(2):
        client.post("/fhir/Patient", json=f.patient(f.BSNS[3]))
    several = client.delete(f"/fhir/Patient?{_by_bsn(f.BSNS[3])}")
    assert several.status_code == 412
    assert _count(client, "/fhir/Patient", identifier=f"{f.BSN}|{f.BSNS[3]}") == 2


def test_parallel_conditional_updates_leave_one_resource(
    live_server: str, http: httpx.Client
) -> None:
    pid = http.post(f"{live_server}/Patient", json=f.patient()).json()["id"]
    ident = "parallel-put-1"
    url = f"{live_server}/Observation?identifier=urn:telemon:test|{ident}"
    workers = 12
    barrier = Barrier(workers)

    def attempt(n: int) -> tuple[int, str]:
        body: dict[str, Any] = f.weight(pid, 70 + n, ident=ident, effective=f.when(1))
        barrier.wait(timeout=10)
        response = http.put(url, json=body)
        return response.status_code, response.json().get("id", "")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(attempt, range(workers)))
    assert Counter(status for status, _ in results) == {201: 1, 200: workers - 1}, results
    assert len({rid for _, rid in results}) == 1
    assert _count(http, f"{live_server}/Observation") == 1
    history = http.get(f"{live_server}/Observation/{results[0][1]}/_history").json()
    assert history["total"] == workers  # every writer's version, none lost
