"""Real-world data through the API: late and out-of-order readings, retractions, corrections,
units, implausible values and DST days (docs/alerts/engine.md#data-edge-cases)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.alerts_api.conftest import (
    LATE,
    TZ,
    Api,
    at,
    bp,
    details,
    has_ext,
    hr,
    local_at,
    observation,
    priority,
    qty,
    rule_of,
    spo2,
    temp,
    text,
    weight,
)

WEIGHT_RULES = ("HF-WT-1D", "HF-WT-3D", "HF-WT-BASE")


def _weight_flags(api: Api, pid: str) -> list[dict[str, Any]]:
    return [f for f in api.flags(pid) if rule_of(f) in WEIGHT_RULES]


# -- late and out-of-order data (GEN-LATE) ----------------------------------------------------


def test_late_weight_from_yesterday_creates_an_alert(api: Api) -> None:
    """Yesterday's weight arriving today is evaluated in yesterday's window, marked late."""
    pid = api.enrol(programmes="HF")
    api.post(weight(pid, 80.0, at(2)), weight(pid, 81.0, at(0)))
    assert _weight_flags(api, pid) == []  # +1.0 in 2 days: nothing
    late, = api.post(weight(pid, 81.3, at(1)))  # received > 24 h after it was measured
    flag = api.flag(pid, "HF-WT-1D")
    assert flag is not None and flag["status"] == "active" and priority(flag) == "PM"
    assert "Weight gain in 1 day: +1.3 kg" in text(flag)
    assert late["id"] in details(flag) and has_ext(flag, LATE)


def test_out_of_order_weight_changes_todays_three_day_delta(api: Api) -> None:
    """A late, lower weight two days back makes today's gain over 3 days exceed 2 kg."""
    pid = api.enrol(programmes="HF")
    api.post(weight(pid, 80.0, at(3)), weight(pid, 82.0, at(0)))
    assert _weight_flags(api, pid) == []  # +2.0 in 3 days is not > 2.0
    api.post(weight(pid, 79.5, at(2)))
    flag = api.flag(pid, "HF-WT-3D")
    assert flag is not None and priority(flag) == "PM"
    assert "Weight gain in 3 days: +2.5 kg" in text(flag)
    assert "lowest of the 3 days before: 79.5 kg" in text(flag)  # two days before
    assert not has_ext(flag, LATE)  # the anchor (today's weight) was on time


def test_late_policy_boundaries(api: Api) -> None:
    """GEN-LATE: <= 24 h on time; > 24 h marked late; > 72 h at most info for a new episode."""
    cases = [(23, "PH", False, ""), (25, "PH", True, ""), (73, "PL", True, "received 73 h")]
    for hours, prio, late, fragment in cases:
        pid = api.enrol(programmes="COPD")
        # Lateness is measured from the arrival (the service clock), not from BASE: taken
        # ``hours`` before it, give or take 3 min.
        taken = api.clock().astimezone(TZ) - timedelta(hours=hours, minutes=-3)
        api.post(temp(pid, 39.5, taken.isoformat()))
        flag = api.flag(pid, "COPD-TEMP")
        assert flag is not None, hours
        assert (priority(flag), has_ext(flag, LATE)) == (prio, late), hours
        assert "Temperature 39.5 °C (limit ≥ 39 °C)" in text(flag) and fragment in text(flag)


def test_earlier_weight_of_the_same_day_arriving_late(api: Api) -> None:
    """The daily weight is the first of the local day: an earlier one arriving later takes
    its place, and an alert built on the displaced weight does not stay."""
    pid = api.enrol(programmes="HF")
    api.post(weight(pid, 80.0, at(1)), weight(pid, 81.5, at(0, minutes=30)))
    flag = api.flag(pid, "HF-WT-1D")
    assert flag is not None and "Weight gain in 1 day: +1.5 kg" in text(flag)
    api.post(weight(pid, 80.2, at(0, minutes=90)))  # taken before, sent after: +0.2 kg
    flag = api.flag(pid, "HF-WT-1D")
    assert flag is not None and flag["status"] == "entered-in-error"
    api.post(weight(pid, 81.4, at(0, minutes=120)))  # earlier still, and +1.4 kg: alerts again
    active = api.flags(pid, "HF-WT-1D", status="active")
    assert len(active) == 1 and "Weight gain in 1 day: +1.4 kg" in text(active[0])


def test_backfill_makes_one_episode_per_rule(api: Api) -> None:
    """Five days of rising weights in one transaction: one weight-gain Flag, not five."""
    pid = api.enrol(programmes="HF")
    readings = [weight(pid, 80.0 + 1.1 * i, at(4 - i)) for i in range(5)]
    assert api.transaction(*readings).status_code == 200
    flags = _weight_flags(api, pid)
    assert len(flags) == 1 and flags[0]["status"] == "active"
    assert len(details(flags[0])) >= 4


# -- entered-in-error, deletion, correction --------------------------------------------------


def test_entered_in_error_retracts_the_alert(api: Api) -> None:
    """PUT the evidence as entered-in-error: the Flag becomes entered-in-error."""
    pid = api.enrol(programmes="HF")
    reading, = api.post(bp(pid, 79, 50, at(minutes=30)))
    flag = api.flag(pid, "HF-SBP-LOW")
    assert flag is not None and flag["status"] == "active"
    api.put({**reading, "status": "entered-in-error"})
    flag = api.flag(pid, "HF-SBP-LOW")
    assert flag is not None and flag["status"] == "entered-in-error"
    assert len(api.notified) == 2  # the EHR is told about the retraction


def test_retracting_one_of_two_readings_keeps_the_alert(api: Api) -> None:
    """An alert that still qualifies without the retracted reading stays active without it."""
    pid = api.enrol(programmes="HF")
    first, second = api.post(bp(pid, 88, 60, at(minutes=60)), bp(pid, 87, 60, at(minutes=30)))
    api.put({**second, "status": "entered-in-error"})
    flag = api.flag(pid, "HF-SBP-LOW")
    assert flag is not None and flag["status"] == "active"
    assert details(flag) == [first["id"]]


def test_deleting_the_evidence_retracts_the_alert(api: Api) -> None:
    """DELETE of the only evidence: the Flag becomes entered-in-error."""
    pid = api.enrol(programmes="COPD")
    reading, = api.post(temp(pid, 39.2, at(minutes=30)))
    assert (api.flag(pid, "COPD-TEMP") or {}).get("status") == "active"
    assert api.client.delete(f"/fhir/Observation/{reading['id']}").status_code in (200, 204)
    flag = api.flag(pid, "COPD-TEMP")
    assert flag is not None and flag["status"] == "entered-in-error"


def test_corrected_value_is_re_evaluated(api: Api) -> None:
    """A corrected value upgrades the alert; corrected to normal, the alert does not stay."""
    pid = api.enrol(programmes="HF")
    reading, = api.post(hr(pid, 115, at(minutes=30)))
    flag = api.flag(pid, "HF-HR-HIGH")
    assert flag is not None and priority(flag) == "PM"
    corrected = {**reading, "status": "corrected", "valueQuantity": {**reading["valueQuantity"]}}
    corrected["valueQuantity"]["value"] = 135
    api.put(corrected)
    flag = api.flag(pid, "HF-HR-HIGH")
    assert flag is not None and priority(flag) == "PH" and "HR 135/min" in text(flag)
    corrected["valueQuantity"]["value"] = 72
    api.put(corrected)
    flag = api.flag(pid, "HF-HR-HIGH")
    # raised on a value now known to be wrong: retracted, like entered-in-error evidence
    assert flag is not None
    assert flag["status"] == "entered-in-error", text(flag)
    assert details(flag) == []


def test_correction_keeps_an_alert_that_still_qualifies(api: Api) -> None:
    """Corrected to another qualifying value: the same Flag stays active, no new Flag version."""
    pid = api.enrol(programmes="HF")
    reading, = api.post(hr(pid, 115, at(minutes=30)))
    flag = api.flag(pid, "HF-HR-HIGH")
    assert flag is not None
    api.put({**reading, "status": "amended"})  # a new version with the same value
    again = api.flag(pid, "HF-HR-HIGH")
    assert again is not None and again["status"] == "active"
    assert again["meta"]["versionId"] == flag["meta"]["versionId"]
    assert details(again) == [reading["id"]]


# -- units and implausible values -------------------------------------------------------------


def test_unit_conversions(api: Api) -> None:
    """[lb_av], g, [degF], kPa and an SpO2 fraction (unit 1) are converted before the rules."""
    hf = api.enrol(programmes="HF")
    api.post(weight(hf, 80000, at(2), unit="g"), weight(hf, 176.37, at(1), unit="[lb_av]"))
    assert _weight_flags(api, hf) == []  # 80.0 kg -> 80.0 kg
    api.post(weight(hf, 178.8, at(0), unit="[lb_av]"))  # 81.1 kg
    flag = api.flag(hf, "HF-WT-1D")
    assert flag is not None and "Weight gain in 1 day: +1.1 kg" in text(flag)

    api.post(bp(hf, 12.0, 8.0, at(minutes=90), unit="kPa"))  # 90.0 mmHg: not < 90
    assert api.flag(hf, "HF-SBP-LOW") is None
    api.post(bp(hf, 11.8, 8.0, at(minutes=60), unit="kPa"))  # 88.5 mmHg
    flag = api.flag(hf, "HF-SBP-LOW")
    assert flag is not None and "SBP 88.5 mmHg (limit < 90 mmHg)" in text(flag)

    api.post(spo2(hf, 0.92, at(minutes=90), unit="1"))  # 92 %
    assert api.flag(hf, "HF-SPO2-LOW") is None
    api.post(spo2(hf, 0.91, at(minutes=60), unit="1"))
    flag = api.flag(hf, "HF-SPO2-LOW")
    assert flag is not None and priority(flag) == "PM" and "SpO2 91 % (limit < 92 %)" in text(flag)

    copd = api.enrol(programmes="COPD")
    api.post(temp(copd, 100.2, at(minutes=90), unit="[degF]"))  # 37.9 °C
    assert api.flag(copd, "COPD-TEMP") is None
    api.post(temp(copd, 100.4, at(minutes=60), unit="[degF]"))  # 38.0 °C
    flag = api.flag(copd, "COPD-TEMP")
    assert flag is not None and priority(flag) == "PM" and "Temperature 38 °C" in text(flag)


def test_implausible_values_are_rejected_and_never_alert(api: Api) -> None:
    """700 kg, 98.6 'Cel', SpO2 0.95 '%', HR 0, reversed BP, a future time: 422, no Flag."""
    hf = api.enrol(programmes=("HF", "COPD"))
    future = weight(hf, 80.0, at(0))
    future["effectiveDateTime"] = at(days=-1)
    cases = {
        "weight 700 kg": weight(hf, 700, at(0)),
        "98.6 Cel": temp(hf, 98.6, at(0)),
        "SpO2 0.95 %": spo2(hf, 0.95, at(0)),
        "HR 0": hr(hf, 0, at(0)),
        "BP 80/120": bp(hf, 80, 120, at(0)),
        "tomorrow": future,
    }
    for name, resource in cases.items():
        response = api.client.post("/fhir/Observation", json=resource)
        assert response.status_code == 422, (name, response.text)
    hint = api.client.post("/fhir/Observation", json=cases["98.6 Cel"]).json()
    assert "[degF]" in str(hint)  # the outcome suggests the unit that was meant
    assert api.flags(hf) == []
    assert not api.client.get("/fhir/Observation", params={"patient": hf}).json().get("entry")


# -- DST days: "yesterday" is a local calendar day ----------------------------------------------


def test_weight_days_are_local_calendar_days_around_dst(api: Api) -> None:
    """Spring: 00:30 on 30 March is a new local day though still 29 March in UTC. Autumn:
    25 October lasts 25 h; its daily weight is its first one, not the one 25 h later."""
    spring = api.enrol(programmes="HF")
    api.post(
        weight(spring, 80.0, local_at("2026-03-29", "07:00")),  # 05:00 UTC (CEST)
        weight(spring, 81.1, local_at("2026-03-30", "00:30")),  # 22:30 UTC on 29 March
    )
    flag = api.flag(spring, "HF-WT-1D")
    assert flag is not None and "Weight gain in 1 day: +1.1 kg" in text(flag)
    assert flag["period"]["start"] == "2026-03-29T22:30:00Z"

    autumn = api.enrol(programmes="HF")
    api.post(
        weight(autumn, 79.5, local_at("2026-10-24", "07:00")),
        weight(autumn, 80.0, local_at("2026-10-25", "00:30")),  # first of the 25 h day
        weight(autumn, 81.5, local_at("2026-10-25", "23:30")),  # 24 h later, same local day
    )
    assert _weight_flags(api, autumn) == []
    api.post(weight(autumn, 81.2, local_at("2026-10-26", "07:00")))
    flag = api.flag(autumn, "HF-WT-1D")
    assert flag is not None and "Weight gain in 1 day: +1.2 kg" in text(flag)
    # these readings are weeks old: a new episode from them is info only (GEN-LATE)
    assert priority(flag) == "PL" and has_ext(flag, LATE)


# -- code variants and statuses ---------------------------------------------------------------


def test_vendor_code_variants_and_stand_alone_components(api: Api) -> None:
    """3141-9 weight, 59417-6 SpO2, 76528-9 RR and a stand-alone 8480-6 SBP are understood."""
    both = api.enrol(programmes=("HF", "COPD"))
    api.post(
        observation(both, "3141-9", at(1), valueQuantity=qty(80.0, "kg")),
        observation(both, "3141-9", at(0), valueQuantity=qty(81.2, "kg")),
        observation(both, "59417-6", at(minutes=60), valueQuantity=qty(88, "%")),
        observation(both, "76528-9", at(minutes=50), valueQuantity=qty(25, "/min")),
        observation(both, "8480-6", at(minutes=40), valueQuantity=qty(85, "mm[Hg]")),
    )
    texts = {rule_of(f): text(f) for f in api.flags(both)}
    assert "Weight gain in 1 day: +1.2 kg" in texts["HF-WT-1D"]
    assert "SpO2 88 % (limit < 90 %)" in texts["HF-SPO2-LOW"]
    assert "RR 25/min (limit ≥ 24/min)" in texts["COPD-RR-HIGH"]
    assert "SBP 85 mmHg (limit < 90 mmHg)" in texts["HF-SBP-LOW"]


def test_preliminary_readings_alert_only_once_final(api: Api) -> None:
    """preliminary: stored, not evaluated; the same reading made final alerts."""
    pid = api.enrol(programmes="HF")
    reading = bp(pid, 75, 45, at(minutes=30))
    reading["status"] = "preliminary"
    api.post(reading)
    assert api.flags(pid) == []
    api.put({**reading, "status": "final"})
    flag = api.flag(pid, "HF-SBP-LOW")
    assert flag is not None and priority(flag) == "PH" and details(flag) == [reading["id"]]


def test_one_transaction_for_two_patients(api: Api) -> None:
    """A device gateway's Bundle with readings of two patients alerts each of them."""
    hf = api.enrol(programmes="HF")
    copd = api.enrol(programmes="COPD")
    response = api.transaction(hr(hf, 45, at(minutes=20)), temp(copd, 38.5, at(minutes=20)))
    assert response.status_code == 200, response.text
    assert [priority(f) for f in api.flags(hf, "HF-HR-LOW")] == ["PM"]
    assert [priority(f) for f in api.flags(copd, "COPD-TEMP")] == ["PM"]
    assert api.flags(hf, "COPD-TEMP") == [] and api.flags(copd, "HF-HR-LOW") == []


def test_one_transaction_for_several_patients_evaluates_each_with_its_own_enrolment(
    api: Api,
) -> None:
    """A Bundle for three patients (one HF, one COPD, one not enrolled): each by its own rules."""
    hf = api.enrol(programmes="HF")
    copd = api.enrol(programmes="COPD")
    outsider = api.patient()
    entries = [
        {"resource": r, "request": {"method": "POST", "url": "Observation"}}
        for r in (
            weight(hf, 80.0, at(1)),
            weight(hf, 82.5, at(0)),  # +2.5 kg in a day: an HF weight rule
            weight(copd, 80.0, at(1)),
            weight(copd, 82.5, at(0)),  # the same gain: no HF rule for a COPD patient
            spo2(outsider, 80, at(0)),  # far below any threshold, but not enrolled
        )
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    assert api.client.post("/fhir", json=bundle).status_code == 200
    assert {rule_of(f) for f in api.flags(hf)} & set(WEIGHT_RULES)
    assert not _weight_flags(api, copd)
    assert api.flags(outsider) == []
