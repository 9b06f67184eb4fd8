"""The dashboard with the demo data at every pinned time of day (tests.clock.ANY_HOUR).

The worklist shows the scripted episodes' alerts, and the patient page's period ends at the
service's "now": its newest weight is the last morning's, and it is marked as the evidence of
the open weight alert.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import orjson
import pytest
from fastapi.testclient import TestClient

from service.demo.data import DemoSummary
from tests.clock import ANY_HOUR, PinnedClock
from tests.dashboard.conftest import fhir_of


@pytest.fixture(params=list(ANY_HOUR.values()), ids=list(ANY_HOUR))
def clock(request: pytest.FixtureRequest) -> PinnedClock:
    """The service clock, pinned to each instant of ANY_HOUR in turn."""
    instant: datetime = request.param
    return PinnedClock(instant)


def test_the_worklist_and_a_patient_page_at_any_hour(
    logged_in: TestClient, demo: DemoSummary, clock: PinnedClock
) -> None:
    worklist = logged_in.get("/dashboard")
    assert worklist.status_code == 200
    for rule in ("HF-WT-3D", "HF-COMBO", "COPD-SPO2-ABS", "COPD-RR-HIGH"):
        assert rule in worklist.text
    assert "Willem Bakker" not in worklist.text  # the stable contrast has no alerts

    hf = demo.patients[0]
    page = logged_in.get(f"/dashboard/patients/{hf.patient_id}")
    assert page.status_code == 200
    fhir = fhir_of(logged_in)
    weights = fhir.search(
        "Observation",
        [("patient", hf.patient_id), ("code", "http://loinc.org|29463-7"), ("_sort", "-date")],
    ).matches
    newest = weights[0].res_id
    assert demo.last_day is not None
    last_morning = datetime.fromisoformat(
        orjson.loads(weights[0].content or "{}")["effectiveDateTime"]
    )
    assert last_morning.astimezone(fhir.zone).date() == demo.last_day
    assert clock() - last_morning < timedelta(days=2)
    weight_chart = re.search(r'<svg[^>]*id="chart-weight".*?</svg>', page.text, re.S)
    assert weight_chart is not None
    # the newest weight is drawn, and ringed as evidence of the open weight alert
    assert f'data-ref="{newest}"' in weight_chart.group(0)
    assert 'class="evidence evidence-' in weight_chart.group(0)
