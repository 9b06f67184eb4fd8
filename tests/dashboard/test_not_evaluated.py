"""The patient page lists the vital signs that no alert rule evaluates."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from service.core import concepts
from service.demo.data import DemoSummary
from tests.clock import PinnedClock
from tests.dashboard.conftest import fhir_of

VITAL = [{"coding": [{"system": concepts.OBSERVATION_CATEGORY, "code": "vital-signs"}]}]


def _vital(patient_id: str, code: str, display: str, value: float, unit: str, when: str) -> Any:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": VITAL,
        "code": {"coding": [{"system": concepts.LOINC, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": concepts.UCUM, "code": unit},
    }


def test_the_patient_page_lists_what_no_alert_rule_evaluates(
    logged_in: TestClient, demo: DemoSummary, clock: PinnedClock
) -> None:
    hf, copd, _ = demo.patients
    page = logged_in.get(f"/dashboard/patients/{hf.patient_id}")
    assert page.status_code == 200
    assert 'id="not-evaluated"' not in page.text  # the demo sends what the rules read

    fhir = fhir_of(logged_in)
    when = (clock() - timedelta(hours=1)).isoformat()
    bmi = fhir.create(_vital(hf.patient_id, "39156-5", "Body mass index", 27.3, "kg/m2", when))
    temp = fhir.create(_vital(hf.patient_id, "8331-1", "Oral temperature", 38.4, "Cel", when))
    assert [i.severity for i in bmi.issues + temp.issues] == ["warning", "warning"]

    page = logged_in.get(f"/dashboard/patients/{hf.patient_id}")
    section = re.search(r'<section class="panel" id="not-evaluated".*?</section>', page.text, re.S)
    assert section is not None
    listed = section.group(0)
    assert "Not evaluated by any alert rule" in listed
    assert f'data-observation="{bmi.res_id}"' in listed and "Body mass index" in listed
    assert "27.3 kg/m2" in listed and "LOINC 39156-5" in listed
    assert f'data-observation="{temp.res_id}"' in listed and "38.4 Cel" in listed
    assert "(heart failure) reads body temperature" in listed
    # a temperature is evaluated for the COPD patient: nothing to list there
    fhir.create(_vital(copd.patient_id, "8331-1", "Oral temperature", 38.4, "Cel", when))
    assert 'id="not-evaluated"' not in logged_in.get(f"/dashboard/patients/{copd.patient_id}").text
