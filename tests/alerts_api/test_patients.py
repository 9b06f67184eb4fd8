"""Who gets which rules: enrolment, multimorbidity, personal Goals, rule toggles."""

from __future__ import annotations

from tests.alerts_api.conftest import (
    PLANS,
    Api,
    at,
    bp,
    details,
    goal_quantity,
    goal_range,
    hr,
    pef,
    priority,
    rule_of,
    spo2,
    temp,
    text,
    weight,
)

SPO2_RULES = {"HF-SPO2-LOW", "COPD-SPO2-ABS", "COPD-SPO2-DROP"}


def test_not_enrolled_patients_never_get_a_flag(api: Api) -> None:
    """No CarePlan, an inactive one, or one for another plan: nothing is evaluated."""
    bare = api.patient()
    completed = api.patient()
    api.client.post("/fhir/CarePlan", json={
        "resourceType": "CarePlan", "status": "completed", "intent": "plan",
        "subject": {"reference": f"Patient/{completed}"},
        "instantiatesCanonical": [PLANS["HF"]],
    })
    other = api.patient()
    api.client.post("/fhir/CarePlan", json={
        "resourceType": "CarePlan", "status": "active", "intent": "plan",
        "subject": {"reference": f"Patient/{other}"},
        "instantiatesCanonical": ["http://example.org/PlanDefinition/diabetes"],
    })
    for pid in (bare, completed, other):
        api.post(bp(pid, 70, 40, at(minutes=30)), spo2(pid, 80, at(minutes=20)),
                 temp(pid, 40.0, at(minutes=10)))
        assert api.flags(pid) == []
    assert api.notified == []


def test_multimorbid_patient_gets_both_rule_sets_and_one_spo2_alert(api: Api) -> None:
    """HF + COPD: HF and COPD rules both run; overlapping SpO2 and HR rules merge."""
    pid = api.enrol(programmes=("HF", "COPD"))
    reading, = api.post(spo2(pid, 89, at(minutes=60)))
    merged = [f for f in api.flags(pid) if rule_of(f) in SPO2_RULES]
    assert len(merged) == 1
    flag = merged[0]
    assert rule_of(flag) == "HF-SPO2-LOW" and priority(flag) == "PH"
    assert details(flag) == [reading["id"]]
    assert text(flag).startswith("Low SpO2: SpO2 89 % (limit < 90 %)")
    assert "Low SpO2 at rest on room air: SpO2 89 % (limit < 90 %)" in text(flag)

    api.post(hr(pid, 111, at(minutes=50)))
    hr_flags = [f for f in api.flags(pid) if rule_of(f) in {"HF-HR-HIGH", "COPD-HR-HIGH"}]
    assert len(hr_flags) == 1 and "High heart rate (COPD): HR 111/min (limit ≥ 110/min)" in text(
        hr_flags[0]
    )

    api.post(weight(pid, 80.0, at(1)), weight(pid, 81.5, at(0)), temp(pid, 38.4, at(minutes=40)))
    rules = {rule_of(f) for f in api.flags(pid)}
    assert {"HF-WT-1D", "COPD-TEMP"} <= rules  # one rule of each programme


def test_goals_personalise_thresholds(api: Api) -> None:
    """Dry weight, usual SpO2 and personal limits (Goal.target detailQuantity/detailRange)."""
    # usual SpO2 95 % (clinician-set): 92 is only -3, 91 is -4
    copd = api.enrol(programmes="COPD", goals=[goal_quantity("2708-6", 95, "%")])
    api.post(spo2(copd, 92, at(minutes=90)))
    assert api.flag(copd, "COPD-SPO2-DROP") is None
    api.post(spo2(copd, 91, at(minutes=60)))
    flag = api.flag(copd, "COPD-SPO2-DROP")
    assert flag is not None and priority(flag) == "PM"
    assert "91 %, 4 points below usual 95 % (personal limit ≤ 91 %)" in text(flag)
    assert "Baseline 95 % (clinician-set)" in text(flag)

    # a chronically hypoxaemic COPD patient: personal lower SpO2 limit 88 % instead of 90 %
    low = api.enrol(programmes="COPD", goals=[goal_range("2708-6", "%", low=88)])
    api.post(spo2(low, 88, at(minutes=90)))
    assert [f for f in api.flags(low) if rule_of(f) in SPO2_RULES] == []
    api.post(spo2(low, 87, at(minutes=60)))
    flag = api.flag(low, "COPD-SPO2-ABS")
    assert flag is not None and "SpO2 87 % (personal limit < 88 %)" in text(flag)

    # HF: dry weight 75 kg in lb, personal HR limit 120
    hf = api.enrol(
        programmes="HF",
        goals=[
            goal_quantity("29463-7", 165.346, "[lb_av]"),  # 75.0 kg
            goal_range("8867-4", "/min", high=120),
        ],
    )
    api.post(hr(hf, 115, at(minutes=90)), weight(hf, 77.4, at(1)))
    assert api.flags(hf) == []  # 115 is not above 120; +2.4 kg is below +2.5
    api.post(hr(hf, 121, at(minutes=60)), weight(hf, 77.5, at(0)))
    flag = api.flag(hf, "HF-HR-HIGH")
    assert flag is not None and "HR 121/min (personal limit > 120/min)" in text(flag)
    flag = api.flag(hf, "HF-WT-BASE")
    assert flag is not None and "77.5 kg, +2.5 kg above baseline 75 kg" in text(flag)


def test_goal_applies_from_its_start_date(api: Api) -> None:
    """A threshold change never re-fires history: readings before Goal.startDate keep the
    limit in force at their effective time."""
    pid = api.patient()
    api.enrol(pid, "HF", goals=[goal_range("8867-4", "/min", high=100)])  # from 2020
    today = at(0)[:10]
    later = api.goal(pid, goal_range("8867-4", "/min", high=90), start=today)
    plan = api.client.get("/fhir/CarePlan", params={"patient": pid}).json()["entry"][0]["resource"]
    plan["goal"].append({"reference": f"Goal/{later}"})
    api.put(plan)
    api.post(hr(pid, 95, at(1)))  # yesterday: limit 100
    assert api.flag(pid, "HF-HR-HIGH") is None
    api.post(hr(pid, 95, at(0)))  # today: limit 90
    flag = api.flag(pid, "HF-HR-HIGH")
    assert flag is not None and "HR 95/min (personal limit > 90/min)" in text(flag)


def test_rule_disabled_for_one_patient(api: Api) -> None:
    """doNotPerform on an activity with the rule's code switches that rule off, others stay."""
    pid = api.enrol(programmes="HF", disable=["HF-SBP-LOW"])
    api.post(bp(pid, 75, 45, at(minutes=60)), hr(pid, 39, at(minutes=30)))
    assert api.flag(pid, "HF-SBP-LOW") is None
    assert (api.flag(pid, "HF-HR-LOW") or {}).get("status") == "active"
    # COPD-PEF-DROP is off by default: a very low peak flow raises nothing
    copd = api.enrol(programmes="COPD", goals=[goal_quantity("19935-6", 400, "L/min")])
    api.post(pef(copd, 150, at(minutes=30)))
    assert api.flags(copd) == []
