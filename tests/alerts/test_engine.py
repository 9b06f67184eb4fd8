"""Engine: late and out-of-order data, retraction, duplicates, statuses, multimorbidity."""

from __future__ import annotations

from datetime import timedelta

from service.alerts.episodes import Action, AlertStatus
from service.alerts.results import Severity
from tests.alerts.helpers import BOTH, alerts, at, by_rule, m, run, symptom, weights


def test_late_weight_from_yesterday_creates_gain_and_coalesces() -> None:
    # Day 0: 80.0, day 2: 81.0 known.  A late 81.2 for day 1 arrives: yesterday's 1-day gain
    # (+1.2) is created; one episode, not two.
    before = [*weights(80.0), m("w2", "weight", 81.0, at(days=2))]
    state = [c.alert for c in run(before)]
    assert state == []
    late = m("w1", "weight", 81.2, at(days=1), received=at(days=2, hours=2))
    changes = run([*before, late], episodes=state, changed=["w1"], now=at(days=2, hours=2))
    a = alerts(changes)
    assert list(a) == ["HF-WT-1D"]
    assert a["HF-WT-1D"].text == "Weight gain in 1 day: +1.2 kg (limit > +1 kg), 3 Nov 08:00"
    assert a["HF-WT-1D"].detail == "81.2 kg; lowest of the 1 day before: 80 kg on 2 Nov"
    assert a["HF-WT-1D"].late is True
    assert a["HF-WT-1D"].period_start == at(days=1)


def test_backfill_of_many_days_gives_one_episode_per_rule() -> None:
    ms = weights(80.0, 81.2, 82.4, 83.6, 84.8, 86.0)
    changes = run(ms)
    weight_alerts = [c for c in changes if c.alert and c.alert.rule_id.startswith("HF-WT")]
    assert len(weight_alerts) == 1
    assert weight_alerts[0].alert.severity is Severity.ORANGE
    assert set(weight_alerts[0].alert.evidence) >= {"w1", "w5"}


def test_very_late_data_raises_at_most_info() -> None:
    late = m("b1", "sbp", 75, at(), received=at(days=4))
    a = alerts(run([late], now=at(days=4)))
    assert a["HF-SBP-LOW"].severity is Severity.INFO
    assert a["HF-SBP-LOW"].text == (
        "Low systolic blood pressure: SBP 75 mmHg (limit < 80 mmHg), 2 Nov 08:00; "
        "received 96 h after measurement"
    )


def test_symptoms_arriving_after_vitals_upgrade_the_alert() -> None:
    ms = weights(80.0, 81.3)
    first = alerts(run(ms))
    assert first["HF-WT-1D"].severity is Severity.ORANGE
    sym = symptom("s1", "62744007", at(days=1, hours=3))
    changes = run([*ms, sym], episodes=list(first.values()), changed=["s1"])
    change = by_rule(changes)["HF-WT-1D"]
    assert (change.action, change.notify) == (Action.UPGRADE, True)
    assert change.alert.severity is Severity.RED
    assert change.alert.text == (
        "Weight gain in 1 day: +1.3 kg (limit > +1 kg) with symptoms (orthopnoea), 3 Nov 08:00"
    )


def test_entered_in_error_retracts_the_alert() -> None:
    ms = weights(80.0, 81.5)
    state = list(alerts(run(ms)).values())
    wrong = m("w1", "weight", 81.5, at(days=1), status="entered-in-error")
    change = by_rule(run([ms[0], wrong], episodes=state, changed=["w1"]))["HF-WT-1D"]
    assert change.action is Action.RETRACT
    assert change.alert.status is AlertStatus.ENTERED_IN_ERROR
    assert change.alert.evidence == ("w0",)


def test_entered_in_error_keeps_alert_that_still_qualifies() -> None:
    ms = [m("h1", "hr", 115, at()), m("h2", "hr", 117, at(hours=2))]
    state = list(alerts(run(ms)).values())
    wrong = m("h2", "hr", 117, at(hours=2), status="entered-in-error")
    change = by_rule(run([ms[0], wrong], episodes=state, changed=["h2"]))["HF-HR-HIGH"]
    assert change.action is Action.ATTACH
    assert change.alert.status is AlertStatus.ACTIVE
    assert change.alert.evidence == ("h1",)


def test_retried_identifier_and_near_duplicate_count_once() -> None:
    # 80.0 yesterday; today 81.2 arrives three times (retry with identifier, and a near-duplicate
    # from the same device 30 s later): still one reading, one alert, one evidence id.
    ms = [
        *weights(80.0),
        m("a", "weight", 81.2, at(days=1), identifier="dev|1", device="scale"),
        m("b", "weight", 81.2, at(days=1), identifier="dev|1", device="scale"),
        m("c", "weight", 81.2, at(days=1, minutes=0.5), device="scale"),
    ]
    a = alerts(run(ms))
    assert a["HF-WT-1D"].evidence == ("a", "w0")


def test_preliminary_and_cancelled_are_not_evaluated() -> None:
    assert run([m("b", "sbp", 70, at(), status="preliminary")]) == []
    assert run([m("b", "sbp", 70, at(), status="cancelled")]) == []


def test_implausible_reading_raises_verify_info_not_clinical_alert() -> None:
    fever = m("t", "temp", 98.6, at(), implausible="temp 98.6 outside plausible range 30-43")
    a = alerts(run([fever], config=BOTH))
    assert list(a) == ["GEN-IMPLAUSIBLE"]
    assert a["GEN-IMPLAUSIBLE"].severity is Severity.INFO
    assert a["GEN-IMPLAUSIBLE"].text.startswith("Verify measurement: 98.6")


def test_weight_jump_over_5_kg_is_verify_not_weight_alert() -> None:
    ms = [*weights(80.0), m("x", "weight", 86.5, at(hours=20))]
    a = alerts(run(ms))
    assert list(a) == ["GEN-IMPLAUSIBLE"]
    assert "another person on the scale" in a["GEN-IMPLAUSIBLE"].text


def test_future_timestamp_is_implausible() -> None:
    a = alerts(run([m("b", "sbp", 70, at(days=1))], now=at()))
    assert list(a) == ["GEN-IMPLAUSIBLE"]


def test_multimorbid_spo2_gives_one_alert_with_both_reasons() -> None:
    a = alerts(run([m("s", "spo2", 88, at())], config=BOTH))
    spo2 = {k: v for k, v in a.items() if "SPO2" in k}
    assert list(spo2) == ["HF-SPO2-LOW"]
    assert spo2["HF-SPO2-LOW"].severity is Severity.RED
    # The Flag's code is HF-SPO2-LOW: its own finding leads, the COPD rule's is a reason.
    assert spo2["HF-SPO2-LOW"].text.startswith("Low SpO2: SpO2 88 % (limit < 90 %)")
    assert spo2["HF-SPO2-LOW"].reasons == (
        "Low SpO2 at rest on room air: SpO2 88 % (limit < 90 %), 2 Nov 08:00",
    )


def test_multimorbid_runs_both_rule_sets() -> None:
    ms = [*weights(80.0, 81.5), m("r", "rr", 25, at(days=1, hours=1))]
    assert {"HF-WT-1D", "COPD-RR-HIGH"} <= set(alerts(run(ms, config=BOTH)))


def test_hr_group_merges_across_programmes() -> None:
    a = alerts(run([m("h", "hr", 112, at())], config=BOTH))
    assert list(a) == ["HF-HR-HIGH"]
    assert a["HF-HR-HIGH"].reasons == (
        "High heart rate (COPD): HR 112/min (limit ≥ 110/min), 2 Nov 08:00",
    )
    assert a["HF-HR-HIGH"].period_start == at()
    assert a["HF-HR-HIGH"].last_triggered_at == at() + timedelta(0)


def test_two_readings_at_the_same_instant_are_both_evaluated() -> None:
    """A BP monitor's pulse and an oximeter's, stamped to the same second: the high one raises
    its alert whichever Observation id sorts first (one evaluation per instant dropped it when
    the normal one came first)."""
    for normal, high in (("a-normal", "b-high"), ("b-normal", "a-high")):
        changes = run([m(normal, "hr", 72, at()), m(high, "hr", 135, at())])
        raised = alerts(changes)
        assert "HF-HR-HIGH" in raised, (normal, high)
        assert raised["HF-HR-HIGH"].evidence == (high,)


def test_readings_at_the_same_instant_clear_an_alert_once() -> None:
    """An alert closes after two evaluations that no longer qualify: a pulse and another reading
    of the same instant are one such evaluation, not two."""
    readings = [
        m("high", "hr", 135, at()),
        m("normal-1", "hr", 72, at(hours=4)),
        m("normal-2", "hr", 70, at(hours=4)),
    ]
    assert alerts(run(readings))["HF-HR-HIGH"].status is AlertStatus.ACTIVE
    later = [*readings, m("normal-3", "hr", 71, at(hours=8))]
    assert alerts(run(later))["HF-HR-HIGH"].status is AlertStatus.INACTIVE
