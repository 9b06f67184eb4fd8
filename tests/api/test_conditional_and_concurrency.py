"""Conditional create (If-None-Exist) and version-aware update under concurrency.

The parallel tests run against a real uvicorn server so that requests truly overlap, and count
what the database holds afterwards through search.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests import factories as f


def test_conditional_create_without_match_creates(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient",
        json=f.patient(f.BSNS[1]),
        headers={"If-None-Exist": f"identifier={f.BSN}|{f.BSNS[1]}"},
    )
    assert response.status_code == 201, response.text
    assert response.headers["ETag"] == 'W/"1"'


def test_conditional_create_with_one_match_returns_existing(client: TestClient) -> None:
    first = client.post("/fhir/Patient", json=f.patient(f.BSNS[1], family="First"))
    assert first.status_code == 201
    pid = first.json()["id"]
    again = client.post(
        "/fhir/Patient",
        json=f.patient(f.BSNS[1], family="Second"),
        headers={"If-None-Exist": f"identifier={f.BSN}|{f.BSNS[1]}"},
    )
    assert again.status_code == 200, again.text
    assert again.json()["id"] == pid
    assert again.json()["name"][0]["family"] == "First"  # the existing resource, unchanged
    assert again.headers["ETag"] == 'W/"1"'
    assert again.headers["Location"].endswith(f"/Patient/{pid}/_history/1")
    count = client.get(f"/fhir/Patient?identifier={f.BSNS[1]}&_summary=count").json()
    assert count["total"] == 1


def test_conditional_create_with_several_matches_is_412(client: TestClient) -> None:
    for family in ("A", "B"):
        assert client.post("/fhir/Patient", json=f.patient(family=family)).status_code == 201
    response = client.post(
        "/fhir/Patient",
        json=f.patient(family="C"),
        headers={"If-None-Exist": "birthdate=1950-03-02"},
    )
    assert response.status_code == 412
    assert f.expressions(response.json()) == ["If-None-Exist"]
    assert client.get("/fhir/Patient?_summary=count").json()["total"] == 2


def test_conditional_create_with_leading_question_mark(client: TestClient) -> None:
    obs_ident = "cond-obs-1"
    pid = client.post("/fhir/Patient", json=f.patient()).json()["id"]
    headers = {"If-None-Exist": f"?identifier=urn:telemon:test|{obs_ident}"}
    first = client.post("/fhir/Observation", json=f.weight(pid, ident=obs_ident), headers=headers)
    second = client.post("/fhir/Observation", json=f.weight(pid, ident=obs_ident), headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]


@pytest.mark.parametrize("criteria", ["", "nonsense-param=1"])
def test_conditional_create_with_bad_criteria_is_400(client: TestClient, criteria: str) -> None:
    response = client.post(
        "/fhir/Patient", json=f.patient(), headers={"If-None-Exist": criteria}
    )
    assert response.status_code == 400, response.text
    assert f.expressions(response.json())
    assert client.get("/fhir/Patient?_summary=count").json()["total"] == 0


@pytest.mark.slow
def test_parallel_conditional_creates_leave_one_resource(
    live_server: str, http: httpx.Client
) -> None:
    pid = http.post(f"{live_server}/Patient", json=f.patient()).json()["id"]
    ident = "parallel-1"
    body = f.weight(pid, ident=ident, effective=f.when(1))
    headers = {"If-None-Exist": f"identifier=urn:telemon:test|{ident}"}
    workers = 20
    barrier = Barrier(workers)

    def attempt(_: int) -> tuple[int, str]:
        barrier.wait(timeout=10)
        response = http.post(f"{live_server}/Observation", json=body, headers=headers)
        return response.status_code, response.json().get("id", "")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(attempt, range(workers)))
    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 1, 200: workers - 1}, results
    assert len({rid for _, rid in results}) == 1
    count = http.get(
        f"{live_server}/Observation",
        params={"identifier": f"urn:telemon:test|{ident}", "_summary": "count"},
    ).json()
    assert count["total"] == 1
    assert http.get(f"{live_server}/Observation", params={"_summary": "count"}).json()["total"] == 1


@pytest.mark.slow
def test_parallel_if_match_updates_exactly_one_wins(
    live_server: str, http: httpx.Client
) -> None:
    created = http.post(f"{live_server}/Patient", json=f.patient(family="Start")).json()
    pid = created["id"]
    workers = 10
    barrier = Barrier(workers)

    def attempt(n: int) -> int:
        resource: dict[str, Any] = {**created, "name": [{"family": f"Writer{n}"}]}
        barrier.wait(timeout=10)
        response = http.put(
            f"{live_server}/Patient/{pid}", json=resource, headers={"If-Match": 'W/"1"'}
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=workers) as pool:
        statuses = Counter(pool.map(attempt, range(workers)))
    assert statuses == {200: 1, 412: workers - 1}
    final = http.get(f"{live_server}/Patient/{pid}")
    assert final.headers["ETag"] == 'W/"2"'
    assert final.json()["name"][0]["family"].startswith("Writer")
    history = http.get(f"{live_server}/Patient/{pid}/_history").json()
    assert history["total"] == 2
