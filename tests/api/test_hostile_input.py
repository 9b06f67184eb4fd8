"""Regression cases for input that once answered 500 (issue 12, finding 4), on both backends:
non-ASCII digits, NUL characters, and indexed strings longer than the index columns."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import batch, expressions, patient, request_entry, weight

LONG = "x" * 300


def _refused(response: Any, status: int, expression: str | None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    if expression is not None:
        assert expression in expressions(body), body


# -- digits: str.isdigit() is true for '²', then int() raised ---------------------------------


@pytest.mark.parametrize(
    ("path", "expression"),
    [
        ("/fhir/Patient?_count=²", "_count"),
        ("/fhir/Patient?_count=٣", "_count"),
        ("/fhir/Patient/_history?_count=²", "_count"),
        ("/fhir/Observation/$lastn?max=²", "max"),
        ("/fhir/Observation/$lastn?max=0", "max"),
    ],
)
def test_non_ascii_digits_in_parameters_are_a_400(
    client: TestClient, path: str, expression: str
) -> None:
    _refused(client.get(path), 400, expression)


def test_huge_counts_are_capped_not_refused(client: TestClient, make_patient: Any) -> None:
    make_patient()
    response = client.get("/fhir/Patient", params={"_count": "9" * 5000})
    assert response.status_code == 200, response.text
    assert len(response.json()["entry"]) == 1


@pytest.mark.parametrize("version", ["²", "٣", "99999999999", "9" * 30])
def test_vread_of_a_version_that_cannot_exist_is_a_404(
    client: TestClient, make_patient: Any, version: str
) -> None:
    pid = make_patient()
    _refused(client.get(f"/fhir/Patient/{pid}/_history/{version}"), 404, None)


def test_if_match_beyond_any_version_is_a_412(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    body = client.get(f"/fhir/Patient/{pid}").json()
    huge = "9" * 30
    response = client.put(f"/fhir/Patient/{pid}", json=body, headers={"If-Match": f'W/"{huge}"'})
    _refused(response, 412, None)


# -- NUL: PostgreSQL cannot hold it (500), SQLite accepted it ----------------------------------


@pytest.mark.parametrize(
    ("path", "expression"),
    [
        ("/fhir/Patient?name=%00", "name"),
        ("/fhir/Patient?_id=a%00b", "_id"),
        ("/fhir/Patient?na%00me=1", "na\\0me"),
        ("/fhir/Patient/%00", None),
        ("/fhir/Patient/a%00/_history/1", None),
        ("/fhir/Observation/$lastn?code=%00", "code"),
        ("/dashboard/patients/x?days=%00", "days"),
        ("/oauth/authorize?client_id=%00", "client_id"),
    ],
)
def test_nul_in_the_url_is_a_400(client: TestClient, path: str, expression: str | None) -> None:
    _refused(client.get(path), 400, expression)


def test_nul_in_a_header_is_a_400(client: TestClient) -> None:
    _refused(client.get("/fhir/Patient", headers={"Prefer": "handling=\x00"}), 400, "prefer")


def test_nul_in_if_none_exist_is_a_400(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient", json=patient(), headers={"If-None-Exist": "identifier=%00"}
    )
    _refused(response, 400, "identifier")


def test_nul_in_a_search_form_is_a_400(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient/_search",
        content=b"family=a%00",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    _refused(response, 400, "family")


def test_nul_in_a_bundle_entry_search_is_a_400(client: TestClient) -> None:
    response = client.post("/fhir", json=batch(request_entry("GET", "Observation?code=%00")))
    assert response.status_code == 200, response.text
    entry = response.json()["entry"][0]
    assert entry["response"]["status"].startswith("400"), entry


# -- indexed strings longer than the index columns: 500 on PostgreSQL, 201 on SQLite -----------


def test_a_long_identifier_is_stored_and_found(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    ids = {}
    for tail in ("a", "b"):  # two values alike in their first 255 characters
        body = weight(pid)
        body["identifier"] = [{"system": "urn:example:long", "value": LONG + tail}]
        created = client.post("/fhir/Observation", json=body)
        assert created.status_code == 201, created.text
        ids[tail] = created.json()["id"]
    found = client.get("/fhir/Observation", params={"identifier": f"urn:example:long|{LONG}a"})
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [ids["a"]]


def test_a_long_category_code_and_system_are_stored_and_found(
    client: TestClient, make_patient: Any
) -> None:
    pid = make_patient()
    body = weight(pid)
    body["category"].append({"coding": [{"system": "urn:" + LONG, "code": LONG}]})
    created = client.post("/fhir/Observation", json=body)
    assert created.status_code == 201, created.text
    for query in (LONG, f"urn:{LONG}|{LONG}"):
        found = client.get("/fhir/Observation", params={"category": query})
        assert [e["resource"]["id"] for e in found.json()["entry"]] == [created.json()["id"]]


def test_a_long_name_is_stored_and_found_by_its_start(client: TestClient) -> None:
    created = client.post("/fhir/Patient", json=patient(family="Van " + LONG))
    assert created.status_code == 201, created.text
    for params in ({"family": "van x"}, {"family:exact": "Van " + LONG}):
        found = client.get("/fhir/Patient", params=params)
        assert [e["resource"]["id"] for e in found.json()["entry"]] == [created.json()["id"]]


def test_a_reference_to_a_stored_type_with_no_fhir_id_is_a_422(client: TestClient) -> None:
    body = {"resourceType": "Device", "patient": {"reference": "Patient/" + "a" * 70}}
    _refused(client.post("/fhir/Device", json=body), 422, "Device.patient")
