"""What a search returns besides its matches, through HTTP on both backends: ``_revinclude``
(with its cap), ``_elements``, ``_summary`` and ``_total``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests import factories as f

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}


def _post(client: TestClient, resource: dict[str, Any]) -> str:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    rid: str = response.json()["id"]
    return rid


def _bundle(client: TestClient, res_type: str, params: list[tuple[str, str]]) -> dict[str, Any]:
    response = client.get(f"/fhir/{res_type}", params=params)
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    return bundle


def _by_mode(bundle: dict[str, Any], mode: str) -> set[tuple[str, str]]:
    return {
        (e["resource"]["resourceType"], e["resource"].get("id", ""))
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == mode
    }


def _outcomes(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        issue
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == "outcome"
        for issue in e["resource"]["issue"]
    ]


@pytest.fixture
def two(client: TestClient) -> dict[str, str]:
    """Patients A and B; A has two Flags and a weight, B one Flag and a weight."""
    a = _post(client, f.patient(f.BSNS[0], family="Aalders"))
    b = _post(client, f.patient(f.BSNS[1], family="Bakker"))
    return {
        "a": a, "b": b,
        "flag_a1": _post(client, f.flag(a)), "flag_a2": _post(client, f.flag(a, "inactive")),
        "flag_b": _post(client, f.flag(b)),
        "obs_a": _post(client, f.weight(a)), "obs_b": _post(client, f.weight(b)),
    }


def test_revinclude_flags_of_the_patient_found_by_bsn(
    client: TestClient, two: dict[str, str]
) -> None:
    bundle = _bundle(client, "Patient", [
        ("identifier", f"{f.BSN}|{f.BSNS[0]}"), ("_revinclude", "Flag:patient"),
    ])
    assert _by_mode(bundle, "match") == {("Patient", two["a"])}
    assert _by_mode(bundle, "include") == {("Flag", two["flag_a1"]), ("Flag", two["flag_a2"])}
    assert _outcomes(bundle) == []
    assert bundle["link"][0]["url"].endswith("&_revinclude=Flag%3Apatient")


def test_revinclude_every_patient_observations_and_flags(
    client: TestClient, two: dict[str, str]
) -> None:
    bundle = _bundle(client, "Patient", [
        ("_revinclude", "Observation:patient"), ("_revinclude", "Flag:subject"),
    ])
    assert _by_mode(bundle, "match") == {("Patient", two["a"]), ("Patient", two["b"])}
    assert _by_mode(bundle, "include") == {
        ("Observation", two["obs_a"]), ("Observation", two["obs_b"]),
        ("Flag", two["flag_a1"]), ("Flag", two["flag_a2"]), ("Flag", two["flag_b"]),
    }
    # only the page's matches count: page 1 of 1 patient, its resources only
    page = _bundle(client, "Patient", [("_revinclude", "Flag:patient"), ("_count", "1")])
    (patient,) = _by_mode(page, "match")
    flags = {two["a"]: {two["flag_a1"], two["flag_a2"]}, two["b"]: {two["flag_b"]}}
    assert {i for _, i in _by_mode(page, "include")} == flags[patient[1]]


def test_revinclude_through_a_non_compartment_reference(
    client: TestClient, two: dict[str, str]
) -> None:
    scale = _post(client, f.device(two["a"], serial="scale-1"))
    body = f.weight(two["a"])
    body["device"] = {"reference": f"Device/{scale}"}
    measured = _post(client, body)
    bundle = _bundle(client, "Device", [("_revinclude", "Observation:device")])
    assert _by_mode(bundle, "include") == {("Observation", measured)}


def test_revinclude_cap_says_so(capped: TestClient) -> None:
    pid = _post(capped, f.patient(f.BSNS[0]))
    for _ in range(3):
        _post(capped, f.flag(pid))
    bundle = _bundle(capped, "Patient", [("_revinclude", "Flag:patient")])
    assert len(_by_mode(bundle, "include")) == 2
    (warning,) = _outcomes(bundle)
    assert warning["severity"] == "warning"
    assert warning["expression"] == ["_revinclude"]
    assert "TELEMON_MAX_REVINCLUDE" in warning["diagnostics"]
    # exactly at the cap: no warning
    flags = _bundle(capped, "Flag", [])
    _post(capped, f.patient(f.BSNS[1]))
    assert capped.delete(f"/fhir/Flag/{f.match_ids(flags)[0]}").status_code == 200
    bundle = _bundle(capped, "Patient", [("_revinclude", "Flag:patient")])
    assert len(_by_mode(bundle, "include")) == 2
    assert _outcomes(bundle) == []


@pytest.fixture
def capped(settings: Settings) -> Iterator[TestClient]:
    """An app with TELEMON_MAX_REVINCLUDE=2."""
    app = create_app(settings.model_copy(update={"max_revinclude": 2}))
    with TestClient(app, base_url="http://testserver") as c:
        c.headers["Content-Type"] = "application/fhir+json"
        yield c


def test_unsupported_revinclude_warns(client: TestClient, two: dict[str, str]) -> None:
    bundle = _bundle(client, "Patient", [
        ("_revinclude", "Flag:programme"), ("_revinclude:iterate", "Flag:nothing"),
    ])
    assert _by_mode(bundle, "include") == set()
    assert {e for i in _outcomes(bundle) for e in i["expression"]} == {
        "_revinclude", "_revinclude:iterate"
    }
    strict = client.get(
        "/fhir/Patient", params={"_revinclude": "Nope:patient"},
        headers={"Prefer": "handling=strict"},
    )
    assert strict.status_code == 400
    assert f.expressions(strict.json()) == ["_revinclude"]


def test_iterate_follows_what_was_included(client: TestClient, two: dict[str, str]) -> None:
    evidence = _post(client, f.weight(two["a"]))
    alert = f.flag(two["a"])
    alert["extension"] = [{
        "url": "http://hl7.org/fhir/StructureDefinition/flag-detail",
        "valueReference": {"reference": f"Observation/{evidence}"},
    }]
    flag = _post(client, alert)
    # the patient, its alerts, and each alert's evidence
    bundle = _bundle(client, "Patient", [
        ("_id", two["a"]), ("_revinclude", "Flag:patient"), ("_include:iterate", "Flag:detail"),
    ])
    assert _by_mode(bundle, "include") == {
        ("Flag", two["flag_a1"]), ("Flag", two["flag_a2"]), ("Flag", flag),
        ("Observation", evidence),
    }
    # without :iterate the Flags' references are not followed
    plain = _bundle(client, "Patient", [("_id", two["a"]), ("_revinclude", "Flag:patient")])
    assert ("Observation", evidence) not in _by_mode(plain, "include")
    # from a measurement: its patient, and that patient's alerts
    bundle = _bundle(client, "Observation", [
        ("_id", two["obs_b"]), ("_include", "Observation:patient"),
        ("_revinclude:iterate", "Flag:patient"),
    ])
    assert _by_mode(bundle, "include") == {("Patient", two["b"]), ("Flag", two["flag_b"])}
    assert _by_mode(bundle, "match") == {("Observation", two["obs_b"])}


def _resources(bundle: dict[str, Any], mode: str = "match") -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == mode]


def test_elements_keeps_mandatory_and_tags_subsetted(
    client: TestClient, two: dict[str, str]
) -> None:
    bundle = _bundle(client, "Observation", [
        ("patient", two["a"]), ("_elements", "value,effective[x]"),
        ("_include", "Observation:patient"),
    ])
    (obs,) = _resources(bundle)
    # status and code are mandatory (1..1); category and subject were not asked for
    assert set(obs) == {
        "resourceType", "id", "meta", "status", "code", "valueQuantity", "effectiveDateTime"
    }
    assert obs["meta"]["tag"] == [SUBSETTED]
    assert obs["meta"]["versionId"] == "1"
    # included resources are whole
    (patient,) = _resources(bundle, "include")
    assert "name" in patient and "tag" not in patient.get("meta", {})
    flag = _resources(_bundle(client, "Flag", [("_id", two["flag_b"]), ("_elements", "id")]))[0]
    assert set(flag) == {"resourceType", "id", "meta", "status", "code", "subject"}
    # the stored resource is untouched
    whole = client.get(f"/fhir/Observation/{two['obs_a']}").json()
    assert "category" in whole and "tag" not in whole["meta"]


def test_summary_modes(client: TestClient, two: dict[str, str]) -> None:
    text = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">A</div>'}
    observation = f.weight(two["a"])
    observation["text"] = text
    observation["note"] = [{"text": "after breakfast"}]
    oid = _post(client, observation)

    def one(mode: str) -> dict[str, Any]:
        (resource,) = _resources(_bundle(client, "Observation", [("_id", oid), ("_summary", mode)]))
        return resource

    summary = one("true")
    assert {"code", "status", "subject", "valueQuantity", "effectiveDateTime"} <= set(summary)
    assert not {"text", "note", "category"} & set(summary)  # not summary elements
    assert set(one("text")) == {"resourceType", "id", "meta", "text", "status", "code"}
    data = one("data")
    assert "text" not in data and data["note"] == observation["note"]
    for resource in (summary, one("text"), data):
        assert SUBSETTED in resource["meta"]["tag"]
    full = one("false")
    assert full["text"] == text and "tag" not in full["meta"]


def test_total_modes(client: TestClient, two: dict[str, str]) -> None:
    assert "total" not in _bundle(client, "Flag", [])
    assert "total" not in _bundle(client, "Flag", [("_total", "none")])
    assert _bundle(client, "Flag", [("_total", "accurate")])["total"] == 3
    assert _bundle(client, "Flag", [("_total", "estimate"), ("status", "active")])["total"] == 2
    chained = _bundle(client, "Flag", [("_total", "accurate"), ("patient.identifier", f.BSNS[0])])
    assert chained["total"] == 2
    assert _bundle(client, "Flag", [("_summary", "count")])["total"] == 3
    bad = _bundle(client, "Flag", [("_total", "lots")])
    assert "total" not in bad and _outcomes(bad)[0]["expression"] == ["_total"]
