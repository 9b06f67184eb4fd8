"""A vital sign that no alert rule evaluates is stored (201) but never in silence.

The write carries a warning (in the OperationOutcome with ``Prefer: return=OperationOutcome``,
in a Bundle entry's ``response.outcome``), and it is logged and counted
(``telemon_observations_not_evaluated_total``).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import REGISTRY

from service.core import concepts
from tests.alerts_api.conftest import Api, at, observation, qty

VITAL = [{"coding": [{"system": concepts.OBSERVATION_CATEGORY, "code": "vital-signs"}]}]
LAB = [{"coding": [{"system": concepts.OBSERVATION_CATEGORY, "code": "laboratory"}]}]
OUTCOME = {"Prefer": "return=OperationOutcome"}


def bmi(pid: str, category: list[dict[str, Any]] = VITAL) -> dict[str, Any]:
    """A body mass index (LOINC 39156-5): a vital sign no rule reads."""
    body = observation(pid, "39156-5", at(minutes=20), valueQuantity=qty(27.1, "kg/m2"))
    body["code"]["coding"][0]["display"] = "Body mass index (BMI) [Ratio]"
    return body | {"category": category}


def temperature(pid: str) -> dict[str, Any]:
    """An oral temperature, in the category vital-signs."""
    body = observation(pid, "8331-1", at(minutes=10), valueQuantity=qty(37.2, "Cel"))
    return body | {"category": VITAL}


def _counted(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "telemon_observations_not_evaluated_total", {"reason": reason}
    )
    return value or 0.0


def _warnings(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in outcome.get("issue", []) if i["severity"] == "warning"]


def test_an_unknown_vital_sign_code_is_stored_with_a_warning(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    pid = api.enrol(programmes=["HF", "COPD"])
    before = _counted("unknown-code")
    with caplog.at_level(logging.WARNING, logger="service.alerts.ingest"):
        response = api.client.post("/fhir/Observation", json=bmi(pid), headers=OUTCOME)
    assert response.status_code == 201
    assert response.json()["resourceType"] == "OperationOutcome"
    (warning,) = _warnings(response.json())
    assert warning["code"] == "code-invalid"
    assert warning["expression"] == ["Observation.code"]
    assert warning["diagnostics"].startswith("LOINC 39156-5 (Body mass index (BMI) [Ratio])")
    assert "not evaluated by any alert rule" in warning["diagnostics"]
    obs_id = response.headers["Location"].split("/")[-3]
    assert api.read("Observation", obs_id)["code"]["coding"][0]["code"] == "39156-5"  # stored
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"Observation/{obs_id}" in m and "unknown-code" in m for m in logged), logged
    assert _counted("unknown-code") == before + 1
    # without the Prefer header: 201 and the resource, as always (the log and metric count it)
    plain = api.client.post("/fhir/Observation", json=bmi(pid))
    assert plain.status_code == 201 and plain.json()["resourceType"] == "Observation"
    assert _counted("unknown-code") == before + 2


def test_a_measurement_no_rule_of_the_programmes_reads_is_stored_with_a_warning(api: Api) -> None:
    hf_only = api.enrol(programmes="HF")
    before = _counted("no-rule")
    response = api.client.post("/fhir/Observation", json=temperature(hf_only), headers=OUTCOME)
    assert response.status_code == 201
    (warning,) = _warnings(response.json())
    assert "(heart failure) reads body temperature" in warning["diagnostics"]
    assert _counted("no-rule") == before + 1
    # for a patient in the COPD programme the temperature is evaluated: no warning
    copd = api.enrol(programmes="COPD")
    response = api.client.post("/fhir/Observation", json=temperature(copd), headers=OUTCOME)
    assert response.status_code == 201 and _warnings(response.json()) == []
    # ... unless the clinician switched its only rule off for this patient
    no_temp = api.enrol(programmes="COPD", disable=["COPD-TEMP"])
    response = api.client.post("/fhir/Observation", json=temperature(no_temp), headers=OUTCOME)
    assert len(_warnings(response.json())) == 1


def test_no_warning_outside_the_vital_signs_or_for_patients_not_enrolled(api: Api) -> None:
    before = _counted("unknown-code")
    enrolled = api.enrol(programmes=["HF", "COPD"])
    response = api.client.post("/fhir/Observation", json=bmi(enrolled, LAB), headers=OUTCOME)
    assert response.status_code == 201 and _warnings(response.json()) == []
    not_enrolled = api.patient()
    response = api.client.post("/fhir/Observation", json=bmi(not_enrolled), headers=OUTCOME)
    assert response.status_code == 201 and _warnings(response.json()) == []
    assert _counted("unknown-code") == before


def test_a_transaction_entry_carries_the_warning_in_its_outcome(api: Api) -> None:
    pid = api.enrol(programmes="HF")
    evaluated = observation(pid, "8867-4", at(minutes=5), valueQuantity=qty(70, "/min"))
    response = api.transaction(evaluated | {"category": VITAL}, bmi(pid))
    assert response.status_code == 200, response.text
    first, second = response.json()["entry"]
    assert first["response"]["status"] == "201 Created" and "outcome" not in first["response"]
    assert second["response"]["status"] == "201 Created"
    (warning,) = _warnings(second["response"]["outcome"])
    assert "LOINC 39156-5" in warning["diagnostics"]
