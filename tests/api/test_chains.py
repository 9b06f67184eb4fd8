"""Chained search and ``_has`` through HTTP, on both backends.

Every test stores resources of a second patient that must NOT match, so a chain that is
silently ignored (or resolved too widely) fails the test.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import factories as f

BSN_A, BSN_B = f.BSNS[0], f.BSNS[1]
WEIGHT = f"{f.LOINC}|29463-7"
HEART_RATE = f"{f.LOINC}|8867-4"


def _post(client: TestClient, resource: dict[str, Any]) -> str:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    rid: str = response.json()["id"]
    return rid


def _ids(client: TestClient, res_type: str, params: dict[str, str]) -> set[str]:
    response = client.get(f"/fhir/{res_type}", params=params)
    assert response.status_code == 200, response.text
    return set(f.match_ids(response.json()))


@pytest.fixture
def two(client: TestClient) -> dict[str, str]:
    """Patients A (Aalders) and B (Bakker), each with a weight, a heart rate, a Flag, a
    CarePlan and a Device that measured the weight; B's Flag is inactive."""
    ids: dict[str, str] = {}
    for key, bsn, family, status in (("a", BSN_A, "Aalders", "active"),
                                     ("b", BSN_B, "Bakker", "inactive")):
        pid = _post(client, f.patient(bsn, family=family))
        dev = _post(client, f.device(pid, serial=f"scale-{key}"))
        body = f.weight(pid)
        body["device"] = {"reference": f"Device/{dev}"}
        ids.update({
            key: pid, f"dev_{key}": dev, f"weight_{key}": _post(client, body),
            f"hr_{key}": _post(client, f.heart_rate(pid)),
            f"flag_{key}": _post(client, f.flag(pid, status=status)),
            f"plan_{key}": _post(client, f.care_plan(pid)),
        })
    return ids


def test_observation_by_patient_bsn_every_form(client: TestClient, two: dict[str, str]) -> None:
    both = {two["weight_a"], two["hr_a"]}
    for name in ("patient.identifier", "subject.identifier", "subject:Patient.identifier",
                 "patient:Patient.identifier"):
        assert _ids(client, "Observation", {name: f"{f.BSN}|{BSN_A}"}) == both, name
    assert _ids(client, "Observation", {"patient.identifier": BSN_B}) == {
        two["weight_b"], two["hr_b"]
    }
    # the EHR's question: this patient's weights
    assert _ids(
        client, "Observation", {"patient.identifier": f"{f.BSN}|{BSN_A}", "code": WEIGHT}
    ) == {two["weight_a"]}
    assert _ids(client, "Observation", {"patient.identifier": f"{f.BSN}|000000000"}) == set()
    assert _ids(client, "Observation", {"patient.identifier": f"urn:other|{BSN_A}"}) == set()
    # values are OR-ed, as for any token
    assert len(_ids(client, "Observation", {"patient.identifier": f"{BSN_A},{BSN_B}"})) == 4


def test_chains_on_flag_careplan_and_device(client: TestClient, two: dict[str, str]) -> None:
    bsn = f"{f.BSN}|{BSN_B}"
    assert _ids(client, "Flag", {"patient.identifier": bsn}) == {two["flag_b"]}
    assert _ids(client, "Flag", {"subject:Patient.identifier": bsn}) == {two["flag_b"]}
    assert _ids(client, "CarePlan", {"patient.identifier": bsn}) == {two["plan_b"]}
    assert _ids(client, "Device", {"patient.identifier": bsn}) == {two["dev_b"]}
    # string and other parameters of the target; a reference that is not the compartment one
    assert _ids(client, "Flag", {"patient.family": "aald"}) == {two["flag_a"]}
    assert _ids(client, "Flag", {"patient.name:exact": "Bakker"}) == {two["flag_b"]}
    serial = "urn:telemon:serial|scale-a"
    assert _ids(client, "Observation", {"device:Device.identifier": serial}) == {two["weight_a"]}
    assert _ids(client, "Observation", {"patient._id": two["b"], "code": HEART_RATE}) == {
        two["hr_b"]
    }


def test_chain_skips_deleted_targets(client: TestClient, two: dict[str, str]) -> None:
    assert client.delete(f"/fhir/Device/{two['dev_a']}").status_code == 200
    assert _ids(client, "Observation", {"device:Device.identifier": "scale-a"}) == set()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("patient.colour", "patient.colour"),  # unknown parameter of the target
        ("code.identifier", "code.identifier"),  # not a reference parameter
        ("subject:Foo.identifier", "subject:Foo.identifier"),  # unknown type
        ("patient:Device.identifier", "patient:Device.identifier"),  # not a target of patient
        ("patient.organization.name", "patient.organization.name"),  # more than one level
        ("device.identifier", "device.identifier"),  # device can point at any type: ambiguous
        ("patient.identifier:text", "patient.identifier:text"),  # unsupported modifier
        ("_has:Flag:patient:colour", "_has:Flag:patient:colour"),
        ("_has:Foo:patient:status", "_has:Foo:patient:status"),
        ("_has:Flag:programme:status", "_has:Flag:programme:status"),  # a PlanDefinition
        ("_has:Flag:status", "_has:Flag:status"),
    ],
)
def test_unknown_chains_are_400_naming_the_parameter(
    client: TestClient, name: str, expected: str
) -> None:
    res_type = "Patient" if name.startswith("_has") else "Observation"
    response = client.get(f"/fhir/{res_type}", params={name: "x"})
    assert response.status_code == 400, response.text
    assert f.expressions(response.json()) == [expected]


def test_has_patients_with_an_active_alert(client: TestClient, two: dict[str, str]) -> None:
    assert _ids(client, "Patient", {"_has:Flag:patient:status": "active"}) == {two["a"]}
    assert _ids(client, "Patient", {"_has:Flag:subject:status": "inactive"}) == {two["b"]}
    assert _ids(client, "Patient", {"_has:Flag:patient:status": "active,inactive"}) == {
        two["a"], two["b"]
    }
    # a resolved Flag no longer counts
    flag = client.get(f"/fhir/Flag/{two['flag_a']}").json()
    flag["status"] = "inactive"
    assert client.put(f"/fhir/Flag/{two['flag_a']}", json=flag).status_code == 200
    assert _ids(client, "Patient", {"_has:Flag:patient:status": "active"}) == set()


def test_has_observation_code_and_combined(client: TestClient, two: dict[str, str]) -> None:
    third = _post(client, f.patient(f.BSNS[2], family="Claes"))
    _post(client, f.spo2(third))
    both = {two["a"], two["b"]}
    assert _ids(client, "Patient", {"_has:Observation:patient:code": WEIGHT}) == both
    assert _ids(client, "Patient", {"_has:Observation:subject:code": "2708-6"}) == {third}
    assert _ids(
        client, "Patient",
        {"_has:Observation:patient:code": WEIGHT, "_has:Flag:patient:status": "active"},
    ) == {two["a"]}
    assert _ids(
        client, "Patient", {"_has:Observation:patient:code": WEIGHT, "family": "bak"}
    ) == {two["b"]}
    # _has through a reference that is not the compartment one: Devices that measured a weight
    assert _ids(client, "Device", {"_has:Observation:device:code": WEIGHT}) == {
        two["dev_a"], two["dev_b"]
    }
    assert _ids(client, "Device", {"_has:Observation:device:code": HEART_RATE}) == set()


def test_chain_and_has_via_post_search(client: TestClient, two: dict[str, str]) -> None:
    response = client.post(
        "/fhir/Patient/_search", data={"_has:Flag:patient:status": "active"},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert f.match_ids(response.json()) == [two["a"]]
    response = client.post(
        "/fhir/Observation/_search", data={"patient.identifier": BSN_B, "code": WEIGHT},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert f.match_ids(response.json()) == [two["weight_b"]]


def test_chain_pages_and_self_link(client: TestClient, two: dict[str, str]) -> None:
    bundle = client.get(
        "/fhir/Observation", params={"patient.identifier": BSN_A, "_count": "1"}
    ).json()
    assert bundle["link"][0]["url"].endswith(f"?patient.identifier={BSN_A}&_count=1")
    nxt = next(k["url"] for k in bundle["link"] if k["relation"] == "next")
    second = client.get(nxt).json()
    assert set(f.match_ids(bundle)) | set(f.match_ids(second)) == {two["weight_a"], two["hr_a"]}


def test_lastn_by_patient_bsn(client: TestClient, two: dict[str, str]) -> None:
    _post(client, f.weight(two["a"], effective=f.when(3)))  # older: not the last one
    response = client.get("/fhir/Observation/$lastn", params={"patient.identifier": BSN_A})
    assert response.status_code == 200, response.text
    assert set(f.match_ids(response.json())) == {two["weight_a"], two["hr_a"]}
