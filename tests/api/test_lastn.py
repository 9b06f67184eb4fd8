"""Observation/$lastn: the newest N Observations per code per patient."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import factories as f

LASTN = "/fhir/Observation/$lastn"


@pytest.fixture
def history(client: TestClient, make_patient: Any) -> dict[str, Any]:
    """Two patients with weights and heart rates on different days (name → id)."""
    p1, p2 = make_patient(), make_patient()
    ids: dict[str, Any] = {"p1": p1, "p2": p2}

    def add(name: str, resource: dict[str, Any]) -> None:
        response = client.post("/fhir/Observation", json=resource)
        assert response.status_code == 201, response.text
        ids[name] = response.json()["id"]

    # Inserted out of date order, so that insertion order cannot pass for date order.
    add("w1_d2", f.weight(p1, kg=81, effective=f.when(2)))
    add("w1_d1", f.weight(p1, kg=80, effective=f.when(1)))
    add("w1_d3", f.weight(p1, kg=82, effective=f.when(3)))
    add("hr1_d5", f.heart_rate(p1, bpm=70, effective=f.when(5)))
    add("hr1_d4", f.heart_rate(p1, bpm=75, effective=f.when(4)))
    add("w2_d6", f.weight(p2, kg=60, effective=f.when(6)))
    return ids


def _lastn(client: TestClient, params: dict[str, str], names: dict[str, Any]) -> list[str]:
    response = client.get(LASTN, params=params)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "searchset"
    found = f.match_ids(bundle)
    assert bundle["total"] == len(found)
    by_id = {v: k for k, v in names.items()}
    return [by_id[i] for i in found]


def test_latest_one_per_code(client: TestClient, history: dict[str, Any]) -> None:
    found = _lastn(client, {"patient": history["p1"]}, history)
    assert sorted(found) == ["hr1_d4", "w1_d1"]


def test_max_per_code(client: TestClient, history: dict[str, Any]) -> None:
    found = _lastn(client, {"patient": history["p1"], "max": "2"}, history)
    assert sorted(found) == ["hr1_d4", "hr1_d5", "w1_d1", "w1_d2"]
    many = _lastn(client, {"patient": history["p1"], "max": "10"}, history)
    assert sorted(many) == ["hr1_d4", "hr1_d5", "w1_d1", "w1_d2", "w1_d3"]


def test_newest_first_per_patient(client: TestClient, history: dict[str, Any]) -> None:
    found = _lastn(client, {"patient": history["p1"], "code": "29463-7", "max": "3"}, history)
    assert found == ["w1_d1", "w1_d2", "w1_d3"]


def test_per_patient_without_patient_filter(client: TestClient, history: dict[str, Any]) -> None:
    found = _lastn(client, {}, history)
    assert sorted(found) == ["hr1_d4", "w1_d1", "w2_d6"]
    weights = _lastn(client, {"code": f"{f.LOINC}|29463-7"}, history)
    assert sorted(weights) == ["w1_d1", "w2_d6"]


def test_filters_apply_before_ranking(client: TestClient, history: dict[str, Any]) -> None:
    # Only measurements up to 2 days ago count: the latest weight is then day 2.
    until = f.when(2)[:10]
    found = _lastn(client, {"patient": history["p1"], "date": f"le{until}"}, history)
    assert sorted(found) == ["hr1_d4", "w1_d2"]
    none = _lastn(client, {"patient": history["p1"], "category": "laboratory"}, history)
    assert none == []


def test_deleted_and_updated_observations(client: TestClient, history: dict[str, Any]) -> None:
    assert client.delete(f"/fhir/Observation/{history['w1_d1']}").status_code == 200
    assert sorted(_lastn(client, {"patient": history["p1"]}, history)) == ["hr1_d4", "w1_d2"]
    # Moving the day-5 heart rate to today makes it the latest.
    current = client.get(f"/fhir/Observation/{history['hr1_d5']}").json()
    moved = {**current, "effectiveDateTime": f.when(0, hour=0)}
    response = client.put(f"/fhir/Observation/{history['hr1_d5']}", json=moved)
    assert response.status_code == 200, response.text
    assert sorted(_lastn(client, {"patient": history["p1"]}, history)) == ["hr1_d5", "w1_d2"]


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5"])
def test_invalid_max_is_400(client: TestClient, value: str) -> None:
    response = client.get(LASTN, params={"max": value})
    assert response.status_code == 400
    assert f.expressions(response.json()) == ["max"]


def test_unknown_parameter_warning_and_strict(client: TestClient, history: dict[str, Any]) -> None:
    response = client.get(LASTN, params={"patient": history["p1"], "colour": "red"})
    assert response.status_code == 200
    entries = response.json()["entry"]
    outcomes = [e for e in entries if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1
    assert outcomes[0]["resource"]["issue"][0]["expression"] == ["colour"]
    assert len([e for e in entries if e["search"]["mode"] == "match"]) == 2
    strict = client.get(
        LASTN,
        params={"patient": history["p1"], "colour": "red"},
        headers={"Prefer": "handling=strict"},
    )
    assert strict.status_code == 400
    assert f.expressions(strict.json()) == ["colour"]
