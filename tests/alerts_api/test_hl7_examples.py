"""The FHIR R4 vital-sign examples (../shared/realdata/hl7-r4-vitals) are evaluated by the rules.

Posted as they are, for a patient enrolled in both programmes, except that ``subject`` and the
blood pressure's ``performer`` point at resources of this server and the effective times are
moved to the days before the (pinned) now: the examples date from 1999-2016, and the rules look
at recent days. Each one comes back without a "not evaluated" warning, and what it shows raises
what it should: the heart rate of 44/min HF-HR-LOW, the respiratory rate of 26/min
COPD-RR-HIGH, and the weight of 185 [lb_av] is read as 83.9 kg.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.alerts_api.conftest import Api, at, priority, rule_of, text, weight

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "hl7-r4-vitals"


def _example(name: str, pid: str, practitioner: str, when: str) -> dict[str, Any]:
    resource: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    resource["subject"] = {"reference": f"Patient/{pid}"}
    for performer in resource.get("performer", []):
        performer["reference"] = f"Practitioner/{practitioner}"
    resource["effectiveDateTime"] = when
    return resource


@pytest.fixture
def practitioner(api: Api) -> str:
    body = {"resourceType": "Practitioner", "name": [{"family": "Example"}]}
    response = api.client.post("/fhir/Practitioner", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_the_hl7_vital_sign_examples_are_evaluated(api: Api, practitioner: str) -> None:
    assert EXAMPLES.is_dir(), f"{EXAMPLES} is missing (../shared beside the clone)"
    pid = api.enrol(programmes=["HF", "COPD"])
    names = {
        "observation-example": at(3),  # body weight 185 [lb_av]
        "observation-example-bloodpressure": at(minutes=60),  # 107/60 mm[Hg]
        "observation-example-body-temperature": at(minutes=50),  # 36.5 Cel
        "observation-example-satO2": at(minutes=40),  # 95 %
        "observation-example-heart-rate": at(minutes=30),  # 44/min
        "observation-example-respiratory-rate": at(minutes=20),  # 26/min
    }
    for name, when in names.items():
        response = api.client.post(
            "/fhir/Observation",
            json=_example(name, pid, practitioner, when),
            headers={"Prefer": "return=OperationOutcome"},
        )
        assert response.status_code == 201, (name, response.text)
        severities = {issue["severity"] for issue in response.json()["issue"]}
        assert severities == {"information"}, (name, response.text)  # no "not evaluated"
    active = {rule_of(f): priority(f) for f in api.flags(pid, status="active")}
    assert active == {"HF-HR-LOW": "PM", "COPD-RR-HIGH": "PM"}
    assert "HR 44/min (limit < 50/min)" in text(api.flag(pid, "HF-HR-LOW") or {"code": {}})
    # the 185 lb weight is 83.9 kg: 86.5 kg three days later is a gain of 2.6 kg
    api.post(weight(pid, 86.5, at(0)))
    gain = api.flag(pid, "HF-WT-3D")
    assert gain is not None and "Weight gain in 3 days: +2.6 kg" in text(gain)
