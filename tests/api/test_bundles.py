"""Transaction and batch Bundles at POST /fhir."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import factories as f

PATIENT_URN = "urn:uuid:6f3b1c2e-8a41-4c3e-9a51-2d8f0e7b9c10"


def _count(client: TestClient, res_type: str) -> int:
    total: int = client.get(f"/fhir/{res_type}", params={"_summary": "count"}).json()["total"]
    return total


def _status_codes(bundle: dict[str, Any]) -> list[int]:
    return [int(e["response"]["status"].split()[0]) for e in bundle["entry"]]


def _linked_bundle() -> dict[str, Any]:
    """A new Patient plus two Observations that refer to it by its urn:uuid fullUrl."""
    return f.transaction(
        f.post_entry(f.weight("x", effective=f.when(1)), None),
        f.post_entry(f.patient(f.BSNS[3], family="Urn"), PATIENT_URN),
        f.post_entry(f.heart_rate("x", effective=f.when(1)), None),
    )


def _point_at_urn(bundle: dict[str, Any]) -> dict[str, Any]:
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Observation":
            entry["resource"]["subject"] = {"reference": PATIENT_URN}
    return bundle


def test_transaction_resolves_urn_uuid_references(client: TestClient) -> None:
    response = client.post("/fhir", json=_point_at_urn(_linked_bundle()))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    assert _status_codes(result) == [201, 201, 201]
    locations = [e["response"]["location"] for e in result["entry"]]
    assert locations[0].startswith("Observation/")
    assert locations[1].startswith("Patient/")
    assert all(loc.endswith("/_history/1") for loc in locations)
    pid = locations[1].split("/")[1]
    for loc in (locations[0], locations[2]):
        obs = client.get(f"/fhir/{loc.rsplit('/_history', 1)[0]}").json()
        assert obs["subject"] == {"reference": f"Patient/{pid}"}
    assert client.get(f"/fhir/Observation?patient={pid}&_summary=count").json()["total"] == 2


def test_transaction_prefer_representation_returns_resources(client: TestClient) -> None:
    response = client.post(
        "/fhir",
        json=_point_at_urn(_linked_bundle()),
        headers={"Prefer": "return=representation"},
    )
    assert response.status_code == 200
    resources = [e["resource"] for e in response.json()["entry"]]
    assert [r["resourceType"] for r in resources] == ["Observation", "Patient", "Observation"]
    assert resources[0]["subject"]["reference"] == f"Patient/{resources[1]['id']}"


def _bad_structure(entry: dict[str, Any]) -> None:
    entry["resource"]["valueQuantity"]["value"] = "eighty"


def _bad_element(entry: dict[str, Any]) -> None:
    entry["resource"]["colour"] = "blue"


def _bad_subject(entry: dict[str, Any]) -> None:
    entry["resource"]["subject"] = {"reference": "Patient/does-not-exist"}


def _future(entry: dict[str, Any]) -> None:
    entry["resource"]["effectiveDateTime"] = "2099-01-01T08:00:00Z"


@pytest.mark.parametrize(
    ("spoil", "status", "expression"),
    [
        (_bad_structure, 400, "Bundle.entry[2].resource.valueQuantity.value"),
        (_bad_element, 400, "Bundle.entry[2].resource.colour"),
        (_bad_subject, 422, "Bundle.entry[2].resource.subject"),
        (_future, 422, "Bundle.entry[2].resource.effective"),
    ],
)
def test_transaction_is_all_or_nothing(
    client: TestClient,
    make_patient: Any,
    spoil: Callable[[dict[str, Any]], None],
    status: int,
    expression: str,
) -> None:
    existing = make_patient(family="Before")
    current = client.get(f"/fhir/Patient/{existing}").json()
    bundle = f.transaction(
        f.post_entry(f.patient(family="New"), PATIENT_URN),
        f.post_entry({**f.weight("x"), "subject": {"reference": PATIENT_URN}}),
        f.post_entry({**f.weight("x"), "subject": {"reference": PATIENT_URN}}),
        f.put_entry({**current, "name": [{"family": "After"}]}),
        f.post_entry(f.heart_rate(existing)),
    )
    spoil(bundle["entry"][2])
    response = client.post("/fhir", json=bundle)
    assert response.status_code == status, response.text
    exprs = f.expressions(response.json())
    assert any(x.startswith(expression) for x in exprs), exprs
    assert _count(client, "Patient") == 1
    assert _count(client, "Observation") == 0
    after = client.get(f"/fhir/Patient/{existing}")
    assert after.json()["name"][0]["family"] == "Before"
    assert after.headers["ETag"] == 'W/"1"'


def test_transaction_stale_if_match_rolls_back(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    current = client.get(f"/fhir/Patient/{pid}").json()
    bundle = f.transaction(
        f.post_entry(f.weight(pid)),
        f.put_entry({**current, "name": [{"family": "Stale"}]}, if_match='W/"9"'),
    )
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 412
    assert any(x.startswith("Bundle.entry[1]") for x in f.expressions(response.json()))
    assert _count(client, "Observation") == 0


def test_transaction_delete_of_unknown_rolls_back(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    bundle = f.transaction(
        f.post_entry(f.weight(pid)),
        f.request_entry("DELETE", "Observation/not-there"),
    )
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 404
    assert _count(client, "Observation") == 0


def test_transaction_delete_and_update(client: TestClient, make_patient: Any) -> None:
    pid = make_patient(family="Old")
    obs = client.post("/fhir/Observation", json=f.weight(pid)).json()["id"]
    current = client.get(f"/fhir/Patient/{pid}").json()
    bundle = f.transaction(
        f.request_entry("DELETE", f"Observation/{obs}"),
        f.put_entry({**current, "name": [{"family": "New"}]}, if_match='W/"1"'),
    )
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    assert _status_codes(response.json()) == [200, 200]
    assert client.get(f"/fhir/Observation/{obs}").status_code == 410
    assert client.get(f"/fhir/Patient/{pid}").json()["name"][0]["family"] == "New"


def test_transaction_conditional_create_reuses_existing(client: TestClient) -> None:
    existing = client.post("/fhir/Patient", json=f.patient(f.BSNS[4], family="Known")).json()
    bundle = f.transaction(
        f.post_entry(
            f.patient(f.BSNS[4], family="Duplicate"),
            PATIENT_URN,
            if_none_exist=f"identifier={f.BSN}|{f.BSNS[4]}",
        ),
        f.post_entry({**f.weight("x"), "subject": {"reference": PATIENT_URN}}),
    )
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    result = response.json()
    assert _status_codes(result) == [200, 201]
    assert result["entry"][0]["response"]["location"].startswith(f"Patient/{existing['id']}/")
    assert _count(client, "Patient") == 1
    obs_loc = result["entry"][1]["response"]["location"].rsplit("/_history", 1)[0]
    obs = client.get(f"/fhir/{obs_loc}").json()
    assert obs["subject"]["reference"] == f"Patient/{existing['id']}"
    assert client.get(f"/fhir/Patient/{existing['id']}").json()["name"][0]["family"] == "Known"


def test_transaction_conditional_create_creates_when_absent(client: TestClient) -> None:
    bundle = f.transaction(
        f.post_entry(
            f.patient(f.BSNS[5]), PATIENT_URN, if_none_exist=f"identifier={f.BSNS[5]}"
        ),
        f.post_entry({**f.weight("x"), "subject": {"reference": PATIENT_URN}}),
    )
    first = client.post("/fhir", json=bundle)
    assert _status_codes(first.json()) == [201, 201]
    second = client.post("/fhir", json=bundle)
    assert _status_codes(second.json()) == [200, 201]
    assert _count(client, "Patient") == 1
    assert _count(client, "Observation") == 2


def test_transaction_with_get_entry(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    bundle = f.transaction(f.post_entry(f.weight(pid)), f.request_entry("GET", f"Patient/{pid}"))
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200
    assert _status_codes(response.json()) == [201, 200]


def test_batch_processes_entries_independently(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    bad = f.weight("no-such-patient")
    bundle = f.batch(
        f.post_entry(f.weight(pid, ident="batch-good")),
        f.post_entry(bad),
        f.request_entry("GET", f"Patient/{pid}"),
        f.request_entry("GET", "Patient/missing"),
        f.post_entry({**f.weight(pid), "colour": "blue"}),
        {"request": {"method": "HEAD", "url": "Patient/x"}},  # PATCH is supported
    )
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "batch-response"
    assert _status_codes(result) == [201, 422, 200, 404, 400, 400]
    assert result["entry"][2]["resource"]["id"] == pid
    bad_exprs = f.expressions(result["entry"][1]["response"]["outcome"])
    assert bad_exprs == ["Bundle.entry[1].resource.subject"]
    unknown = f.expressions(result["entry"][4]["response"]["outcome"])
    assert any(x.startswith("Bundle.entry[4].resource.colour") for x in unknown), unknown
    assert f.expressions(result["entry"][5]["response"]["outcome"]) == [
        "Bundle.entry[5].request.method"
    ]
    stored = client.get("/fhir/Observation", params={"_summary": "count"}).json()
    assert stored["total"] == 1
    good = client.get("/fhir/Observation", params={"identifier": "batch-good"}).json()
    assert len(f.match_ids(good)) == 1


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        (f.patient(), "resourceType"),
        ({"resourceType": "Bundle", "type": "collection"}, "Bundle.type"),
        ({"resourceType": "Bundle", "type": "transaction", "entry": {"a": 1}}, "Bundle.entry"),
        (f.transaction({"request": {"method": "POST"}}), "Bundle.entry[0].request.url"),
        (f.transaction({"resource": f.patient()}), "Bundle.entry[0].request"),
        (
            f.transaction(
                {"request": {"method": "POST", "url": "Medication"}, "resource": f.patient()}
            ),
            "Bundle.entry[0].request.url",
        ),
    ],
)
def test_malformed_bundles_are_400(
    client: TestClient, body: dict[str, Any], expression: str
) -> None:
    response = client.post("/fhir", json=body)
    assert response.status_code in (400, 404), response.text
    assert response.status_code != 404 or expression.endswith("request.url")
    exprs = f.expressions(response.json())
    assert any(x.startswith(expression) for x in exprs), exprs


def test_bundle_entry_limit_is_413(settings: Any) -> None:
    from service.app import create_app

    settings.bundle_max_entries = 3
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        entries = [f.post_entry(f.patient()) for _ in range(4)]
        response = client.post("/fhir", json=f.batch(*entries))
        assert response.status_code == 413
        assert f.expressions(response.json()) == ["Bundle.entry"]
        assert _count(client, "Patient") == 0


def test_transaction_put_creates_and_is_referenced(client: TestClient) -> None:
    patient = {**f.patient(family="Put"), "id": "tx-put-1"}
    bundle = f.transaction(
        f.post_entry({**f.weight("x"), "subject": {"reference": "Patient/tx-put-1"}}),
        f.put_entry(patient),
    )
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    assert _status_codes(response.json()) == [201, 201]
    assert client.get("/fhir/Patient/tx-put-1").json()["name"][0]["family"] == "Put"
    assert _count(client, "Observation") == 1


def test_transaction_reference_to_deleted_in_same_bundle_fails(
    client: TestClient, make_patient: Any
) -> None:
    pid = make_patient()
    bundle = f.transaction(
        f.post_entry(f.weight(pid)),
        f.request_entry("DELETE", f"Patient/{pid}"),
    )
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 422, response.text
    assert f.expressions(response.json()) == ["Bundle.entry[0].resource.subject"]
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200


def _one_issue(response: Any) -> tuple[str, str]:
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    return issue["expression"][0], issue["diagnostics"]


def test_transaction_writing_the_same_resource_twice_is_400(
    client: TestClient, make_patient: Any
) -> None:
    pid = make_patient(family="Once")
    current = client.get(f"/fhir/Patient/{pid}").json()
    twice = f.transaction(
        f.put_entry({**current, "name": [{"family": "First"}]}),
        f.post_entry(f.weight(pid)),
        f.put_entry({**current, "name": [{"family": "Second"}]}),
    )
    where, message = _one_issue(client.post("/fhir", json=twice))
    assert where == "Bundle.entry[2].request.url"
    assert f"Patient/{pid}" in message and "entry 0" in message
    put_and_delete = f.transaction(
        f.put_entry({**current, "name": [{"family": "Gone"}]}),
        f.request_entry("DELETE", f"Patient/{pid}"),
    )
    assert _one_issue(client.post("/fhir", json=put_and_delete))[0] == (
        "Bundle.entry[1].request.url"
    )
    assert client.get(f"/fhir/Patient/{pid}").json()["name"][0]["family"] == "Once"
    assert _count(client, "Observation") == 0  # nothing of either Bundle was written


def test_transaction_with_a_repeated_full_url_is_400(client: TestClient) -> None:
    bundle = f.transaction(
        f.post_entry(f.patient(f.BSNS[4], family="A"), PATIENT_URN),
        f.post_entry(f.patient(f.BSNS[5], family="B"), PATIENT_URN),
    )
    assert _one_issue(client.post("/fhir", json=bundle))[0] == "Bundle.entry[1].fullUrl"
    assert _count(client, "Patient") == 0


def test_transaction_conditional_creates_of_one_resource_are_400(
    client: TestClient, make_patient: Any
) -> None:
    criteria = f"identifier={f.BSN}|{f.BSNS[4]}"
    same_criteria = f.transaction(
        f.post_entry(f.patient(f.BSNS[4]), if_none_exist=criteria),
        f.post_entry(f.patient(f.BSNS[4]), if_none_exist=criteria),
    )
    where, _ = _one_issue(client.post("/fhir", json=same_criteria))
    assert where == "Bundle.entry[1].request.ifNoneExist"
    assert _count(client, "Patient") == 0
    pid = make_patient(bsn=f.BSNS[4], family="Known")
    current = client.get(f"/fhir/Patient/{pid}").json()
    resolves_to_a_put = f.transaction(
        f.put_entry({**current, "name": [{"family": "Changed"}]}),
        f.post_entry(f.patient(f.BSNS[4]), if_none_exist=criteria),
    )
    where, message = _one_issue(client.post("/fhir", json=resolves_to_a_put))
    assert where == "Bundle.entry[1].request.ifNoneExist" and f"Patient/{pid}" in message
    assert client.get(f"/fhir/Patient/{pid}").json()["name"][0]["family"] == "Known"


def test_batch_may_touch_one_resource_in_several_entries(
    client: TestClient, make_patient: Any
) -> None:
    pid = make_patient()
    bundle = {**f.transaction(f.request_entry("GET", f"Patient/{pid}"),
                              f.request_entry("GET", f"Patient/{pid}")), "type": "batch"}
    assert _status_codes(client.post("/fhir", json=bundle).json()) == [200, 200]
    reads = f.transaction(f.request_entry("GET", f"Patient/{pid}"),
                          f.request_entry("GET", f"Patient/{pid}"))
    assert _status_codes(client.post("/fhir", json=reads).json()) == [200, 200]
