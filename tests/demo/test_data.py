"""``service.demo.data``: demo patients with weeks of measurements and the scripted episodes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from statistics import median
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from service.auth.identity import practitioner_by_uzi
from service.bootstrap import build_service
from service.core.clock import Clock
from service.demo import data as demo
from service.fhir.service import FhirService
from service.settings import Settings
from service.validation import is_valid_bsn
from tests.clock import ANY_HOUR, PinnedClock


@pytest.fixture
def service(settings: Settings, clock: Clock) -> Iterator[FhirService]:
    """A FHIR service on the test database, its clock pinned."""
    svc = build_service(settings, clock=clock)
    yield svc
    svc.db.dispose()


def _series(service: FhirService, patient_id: str, code: str) -> list[dict[str, Any]]:
    """The patient's Observations with ``code``, oldest first."""
    params = [("patient", patient_id), ("code", f"http://loinc.org|{code}")]
    result = service.search("Observation", [*params, ("_sort", "date"), ("_count", "500")])
    return [json.loads(m.content or "{}") for m in result.matches]


def _by_day(service: FhirService, observations: list[dict[str, Any]]) -> dict[date, float]:
    return {
        datetime.fromisoformat(o["effectiveDateTime"]).astimezone(service.zone).date(): o[
            "valueQuantity"
        ]["value"]
        for o in observations
    }


def test_demo_patients_weeks_of_data_episodes_and_idempotence(service: FhirService) -> None:
    now = service.clock()
    summary = demo.load_demo(service)

    assert [p.name for p in summary.patients] == [
        "Hendrik Jansen",
        "Anna de Vries",
        "Willem Bakker",
    ]
    # The clinician, and per patient: the Patient, its CarePlan, its Devices and Observations.
    assert summary.created == 1 + sum(
        p.observations + 2 + len(p.device_ids) for p in summary.patients
    )
    assert summary.skipped == 0
    # the dashboard's demo login: the clinician's UZI number finds one Practitioner
    assert practitioner_by_uzi(service, summary.clinician_uzi).name == summary.clinician_name
    hf, copd, both = summary.patients
    daily_series = (
        (hf, "29463-7", "scale"),
        (copd, "2708-6", "oximeter"),
        (both, "29463-7", "scale"),
    )
    for p, daily, device in daily_series:
        assert is_valid_bsn(p.bsn)
        series = _series(service, p.patient_id, daily)
        first, last = (
            datetime.fromisoformat(o["effectiveDateTime"]) for o in (series[0], series[-1])
        )
        assert last - first >= timedelta(weeks=6)
        assert last <= now
        assert last.utcoffset() in (
            timedelta(hours=1),
            timedelta(hours=2),
        )  # Amsterdam, with offset
        assert all(o["device"]["reference"] == f"Device/{p.device_ids[device]}" for o in series)
    for p in (hf, both):  # the heart-failure programme: blood pressure too
        assert len(_series(service, p.patient_id, "85354-9")) >= 6
    # only what the rules of their programmes read (nothing listed as "not evaluated")
    assert _series(service, copd.patient_id, "29463-7") == []

    # Enrolled in their programmes, so the scripted episodes raised alerts while loading.
    def open_rules(patient_id: str) -> set[str]:
        flags = service.search("Flag", [("patient", patient_id), ("status", "active")]).matches
        return {json.loads(f.content or "{}")["code"]["coding"][0]["code"] for f in flags}

    assert "HF-WT-3D" in open_rules(hf.patient_id)
    assert {"COPD-SPO2-ABS", "COPD-RR-HIGH"} <= open_rules(copd.patient_id)
    assert open_rules(both.patient_id) == set()  # the stable contrast
    # ... and the summary lists them, reddest first.
    for p in summary.patients:
        assert {a.split(" ")[0] for a in p.alerts} == open_rules(p.patient_id)
    assert "HF-WT-3D (orange)" in hf.alerts
    assert {p.name: p.alerts for p in summary.patients} == DEMO_ALERTS
    colours = [a.split(" ")[1] for a in copd.alerts]
    assert colours == sorted(colours, key=["(red)", "(orange)", "(info)"].index)

    # Heart failure: more than 2 kg up within 3 days in the final week, pulse up, SpO2 down.
    kg = _by_day(service, _series(service, hf.patient_id, "29463-7"))
    final = sorted(kg)[-7:]
    rise = max(kg[d] - min(kg.get(d - timedelta(days=n), kg[d]) for n in (1, 2, 3)) for d in final)
    assert rise >= 2.0
    hr = list(_by_day(service, _series(service, hf.patient_id, "8867-4")).values())
    assert hr[-1] >= median(hr[:-7]) + 15
    spo2 = list(_by_day(service, _series(service, hf.patient_id, "2708-6")).values())
    assert spo2[-1] < median(spo2[:-7])

    # COPD: SpO2 4+ points below the baseline, breathing faster.
    spo2 = list(_by_day(service, _series(service, copd.patient_id, "2708-6")).values())
    assert spo2[-1] <= median(spo2[:-7]) - 4
    rr = list(_by_day(service, _series(service, copd.patient_id, "9279-1")).values())
    assert rr[-1] >= median(rr[:-4]) + 6

    # Both conditions: stable weight.
    kg = _by_day(service, _series(service, both.patient_id, "29463-7"))
    assert max(kg.values()) - min(kg.values()) < 3

    again = demo.load_demo(service)
    assert (again.created, again.skipped) == (0, summary.created)
    assert [p.patient_id for p in again.patients] == [p.patient_id for p in summary.patients]


def test_demo_values_are_deterministic_per_seed_and_do_not_depend_on_the_date() -> None:
    zone = ZoneInfo("Europe/Amsterdam")

    def readings(seed: str, last: date) -> list[Any]:
        now = datetime.combine(last, time(12, 0), zone)
        days = [last - timedelta(days=n) for n in range(41, -1, -1)]
        return list(demo._measurements(demo._PEOPLE[0], days, seed, now, zone))

    # the week after the switch to summer time: local mornings with both offsets
    spring = readings("7:hf", date(2026, 3, 30))
    assert spring == readings("7:hf", date(2026, 3, 30))
    assert spring != readings("8:hf", date(2026, 3, 30))
    assert {r.at.utcoffset() for r in spring} == {timedelta(hours=1), timedelta(hours=2)}
    # another last day (another weekday, another season): the same series, moved in time
    autumn = readings("7:hf", date(2026, 11, 19))
    assert [(r.kind, r.values) for r in autumn] == [(r.kind, r.values) for r in spring]
    assert {r.day - s.day for r, s in zip(autumn, spring, strict=True)} == {
        date(2026, 11, 19) - date(2026, 3, 30)
    }


#: The alerts the demo leaves open, reddest first: the same whenever it is loaded.
DEMO_ALERTS = {
    "Hendrik Jansen": ["HF-COMBO (red)", "HF-WT-3D (orange)", "HF-HR-HIGH (info)"],
    "Anna de Vries": [
        "COPD-ROME-COMPOSITE (red)",
        "COPD-RR-HIGH (orange)",
        "COPD-SPO2-ABS (orange)",
        "COPD-TEMP (orange)",
        "COPD-HR-HIGH (info)",
    ],
    "Willem Bakker": [],
}


@pytest.mark.parametrize("instant", list(ANY_HOUR.values()), ids=list(ANY_HOUR))
def test_demo_tells_the_same_story_at_any_hour(settings: Settings, instant: datetime) -> None:
    """Loaded at any time of day, on the days the clocks change too: the last morning with
    data and the alerts of the scripted episodes are the same."""
    service = build_service(settings, clock=PinnedClock(instant))
    try:
        summary = demo.load_demo(service, weeks=3)
        local = instant.astimezone(service.zone)
        morning_done = local.time() >= time(8, 30)
        expected_last = local.date() if morning_done else local.date() - timedelta(days=1)
        assert summary.last_day == expected_last
        assert {p.name: p.alerts for p in summary.patients} == DEMO_ALERTS
        hf = summary.patients[0]
        weights = _series(service, hf.patient_id, "29463-7")
        last = datetime.fromisoformat(weights[-1]["effectiveDateTime"])
        assert last.astimezone(service.zone).date() == expected_last
        assert last <= instant
    finally:
        service.db.dispose()
