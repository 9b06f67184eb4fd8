"""Heart-failure rules: fire/no-fire boundaries and severity levels (docs/alerts/rules.md)."""

from __future__ import annotations

import pytest

from service.alerts.results import Limit, Severity
from tests.alerts.helpers import alerts, at, m, run, symptom, weights

DIZZY, SOB, CHEST = "404640003", "267036007", "29857009"


@pytest.mark.parametrize(("today", "fires"), [(80.9, False), (81.0, False), (81.1, True)])
def test_wt_1d_boundary_is_strictly_more_than_1_kg(today: float, fires: bool) -> None:
    a = alerts(run(weights(80.0, today)))
    assert ("HF-WT-1D" in a) is fires
    if fires:
        assert a["HF-WT-1D"].severity is Severity.ORANGE
        assert a["HF-WT-1D"].text == "Weight gain in 1 day: +1.1 kg (limit > +1 kg), 3 Nov 08:00"
        assert a["HF-WT-1D"].detail == "81.1 kg; lowest of the 1 day before: 80 kg on 2 Nov"
        assert a["HF-WT-1D"].evidence == ("w1", "w0")


@pytest.mark.parametrize(("today", "fires"), [(79.9, False), (80.1, False), (80.2, True)])
def test_wt_3d_boundary_against_minimum_of_three_days(today: float, fires: bool) -> None:
    # min of the three previous days is 78.1 -> needs > 80.1
    a = alerts(run(weights(78.1, 78.6, 79.4, today)))
    assert ("HF-WT-3D" in a) is fires


def test_wt_3d_text_matches_the_example() -> None:
    a = alerts(run(weights(78.1, 78.5, 79.6, 80.5)))
    assert a["HF-WT-3D"].text == "Weight gain in 3 days: +2.4 kg (limit > +2 kg), 5 Nov 08:00"
    assert a["HF-WT-3D"].detail == "80.5 kg; lowest of the 3 days before: 78.1 kg on 2 Nov"
    assert a["HF-WT-3D"].severity is Severity.ORANGE
    assert set(a["HF-WT-3D"].evidence) == {"w3", "w0"}


def test_weight_gain_is_red_with_symptoms_the_same_day() -> None:
    ms = [*weights(80.0, 81.5), symptom("s1", SOB, at(days=1, hours=2))]
    a = alerts(run(ms))
    assert a["HF-WT-1D"].severity is Severity.RED
    assert a["HF-WT-1D"].text == (
        "Weight gain in 1 day: +1.5 kg (limit > +1 kg) with symptoms (shortness of breath), "
        "3 Nov 08:00"
    )
    assert "s1" in a["HF-WT-1D"].evidence


def test_only_first_weight_of_the_day_counts() -> None:
    ms = [*weights(80.0, 80.5), m("late", "weight", 82.0, at(days=1, hours=10))]
    assert "HF-WT-1D" not in alerts(run(ms))


@pytest.mark.parametrize(
    ("today", "expected"),
    [(80.4, None), (80.5, Severity.ORANGE), (81.9, Severity.ORANGE), (82.0, Severity.RED)],
)
def test_wt_base_against_dry_weight(today: float, expected: Severity | None) -> None:
    from service.alerts.personalisation import Override, PatientConfig

    config = PatientConfig(
        "p1", frozenset({"HF"}), overrides=(Override("dry_weight_kg", 78.0, at(days=-30)),)
    )
    a = alerts(run(weights(today), config))  # a single weight: no day-to-day rule can fire
    if expected is None:
        assert "HF-WT-BASE" not in a
        return
    alert = a["HF-WT-BASE"]
    assert alert.severity is expected
    # Dutch (the config sets no language); the method on the second line.
    assert "boven basiswaarde 78 kg (persoonlijke grens ≥ 80,5 kg), 2 nov 08:00" in alert.text
    assert alert.detail == "Basiswaarde 78 kg (ingesteld door behandelaar)"
    assert alert.baseline is not None and alert.baseline.value == 78.0


def test_wt_base_silent_without_five_baseline_values() -> None:
    a = alerts(run(weights(78.0, 78.0, 78.0, 78.0, 79.0, 80.0, 80.9)))
    assert "HF-WT-BASE" not in a


def test_wt_loss_info_and_orange_with_low_sbp() -> None:
    a = alerts(run(weights(80.0, 79.5, 79.0, 77.9)))
    assert a["HF-WT-LOSS"].severity is Severity.INFO
    assert a["HF-WT-LOSS"].text == (
        "Weight loss (over-diuresis): 77.9 kg, -2.1 kg in 3 days (limit < -2 kg), 5 Nov 08:00"
    )
    assert a["HF-WT-LOSS"].detail == "Highest of the 3 days before: 80 kg on 2 Nov"
    ms = [*weights(80.0, 79.5, 79.0, 77.9), m("b1", "sbp", 85, at(days=3, minutes=5))]
    assert alerts(run(ms))["HF-WT-LOSS"].severity is Severity.ORANGE


@pytest.mark.parametrize(
    ("sbp", "expected"),
    [(90, None), (89, Severity.ORANGE), (80, Severity.ORANGE), (79, Severity.RED)],
)
def test_sbp_low_levels(sbp: float, expected: Severity | None) -> None:
    a = alerts(run([m("b", "sbp", sbp, at())]))
    assert (a["HF-SBP-LOW"].severity if "HF-SBP-LOW" in a else None) is expected


def test_sbp_low_red_with_dizziness() -> None:
    a = alerts(run([m("b", "sbp", 88, at()), symptom("d", DIZZY, at(minutes=-30))]))
    assert a["HF-SBP-LOW"].severity is Severity.RED
    assert a["HF-SBP-LOW"].text == (
        "Low systolic blood pressure: SBP 88 mmHg (limit < 90 mmHg) with symptoms (dizziness), "
        "2 Nov 08:00"
    )


def test_sbp_high_uses_mean_of_readings_within_10_minutes() -> None:
    ms = [m("b1", "sbp", 176, at()), m("b2", "sbp", 166, at(minutes=3))]
    a = alerts(run(ms))
    assert a["HF-SBP-HIGH"].severity is Severity.ORANGE
    # the second evaluation (mean 171) still qualifies, attaches and describes the episode
    assert a["HF-SBP-HIGH"].text == (
        "High blood pressure: SBP 171 mmHg, mean of 2 readings (limit > 170 mmHg), 2 Nov 08:03"
    )
    assert a["HF-SBP-HIGH"].evidence == ("b1", "b2")


@pytest.mark.parametrize(
    ("sbp", "dbp", "expected"),
    [
        (170, 90, None),
        (171, 90, Severity.ORANGE),
        (199, 119, Severity.ORANGE),
        (200, 90, Severity.RED),
        (150, 120, Severity.RED),
    ],
)
def test_sbp_high_levels(sbp: float, dbp: float, expected: Severity | None) -> None:
    a = alerts(run([m("b", "sbp", sbp, at()), m("b", "dbp", dbp, at())]))
    assert (a["HF-SBP-HIGH"].severity if "HF-SBP-HIGH" in a else None) is expected


@pytest.mark.parametrize(
    ("hr", "expected"),
    [(50, None), (49, Severity.ORANGE), (40, Severity.ORANGE), (39, Severity.RED)],
)
def test_hr_low_levels(hr: float, expected: Severity | None) -> None:
    a = alerts(run([m("h", "hr", hr, at())]))
    assert (a["HF-HR-LOW"].severity if "HF-HR-LOW" in a else None) is expected


@pytest.mark.parametrize(
    ("hr", "sym", "expected"),
    [
        (110, False, None),
        (111, False, Severity.ORANGE),
        (101, True, Severity.ORANGE),
        (100, True, None),
        (130, False, Severity.ORANGE),
        (131, False, Severity.RED),
    ],
)
def test_hr_high_levels(hr: float, sym: bool, expected: Severity | None) -> None:
    ms = [m("h", "hr", hr, at())] + ([symptom("s", SOB, at(minutes=-5))] if sym else [])
    a = alerts(run(ms))
    assert (a["HF-HR-HIGH"].severity if "HF-HR-HIGH" in a else None) is expected


def test_hr_high_info_on_two_days_above_baseline() -> None:
    ms = [m(f"h{i}", "hr", 70, at(days=i)) for i in range(6)]
    ms += [m("h6", "hr", 84, at(days=6)), m("h7", "hr", 85, at(days=7))]
    a = alerts(run(ms))
    assert a["HF-HR-HIGH"].severity is Severity.INFO
    assert a["HF-HR-HIGH"].text == (
        "High heart rate: HR 85/min, 2 days in a row ≥ 20 % above baseline 70/min "
        "(personal limit ≥ 84/min), 9 Nov 08:00"
    )
    assert a["HF-HR-HIGH"].limit == Limit("hr", ">=", 84, "/min", personal=True)
    assert a["HF-HR-HIGH"].evidence == ("h7", "h6")


@pytest.mark.parametrize(
    ("spo2", "expected"),
    [(92, None), (91, Severity.ORANGE), (90, Severity.ORANGE), (89, Severity.RED)],
)
def test_hf_spo2_levels(spo2: float, expected: Severity | None) -> None:
    a = alerts(run([m("s", "spo2", spo2, at())]))
    assert (a["HF-SPO2-LOW"].severity if "HF-SPO2-LOW" in a else None) is expected


def test_hf_spo2_skipped_on_supplemental_oxygen() -> None:
    assert alerts(run([m("s", "spo2", 86, at(), on_supplemental_oxygen=True)])) == {}


def test_symptom_orange_and_severe_chest_pain_red() -> None:
    a = alerts(run([symptom("s1", "267038008", at(), severity=1)]))
    assert a["HF-SYMPTOM"].severity is Severity.ORANGE
    assert a["HF-SYMPTOM"].text == "Heart-failure symptoms reported: oedema (mild), 2 Nov 08:00"
    a = alerts(run([symptom("s2", CHEST, at(), severity=3)]))
    assert a["HF-SYMPTOM"].severity is Severity.RED
    assert alerts(run([symptom("s3", SOB, at(), severity=0)])) == {}


def test_nyha_rise_against_clinician_class() -> None:
    from service.alerts.personalisation import Override, PatientConfig

    config = PatientConfig(
        "p1", frozenset({"HF"}), overrides=(Override("nyha_baseline", 2, at(days=-10)),)
    )
    assert alerts(run([m("n", "nyha", 2, at())], config)) == {}
    a = alerts(run([m("n", "nyha", 3, at())], config))
    assert (a["HF-NYHA-UP"].severity, a["HF-NYHA-UP"].text) == (
        Severity.ORANGE,
        "NYHA-klasse hoger dan vastgesteld: klasse 3 gemeld (vastgesteld: klasse 2), 2 nov 08:00",
    )
    assert alerts(run([m("n", "nyha", 4, at())], config))["HF-NYHA-UP"].severity is Severity.RED


def test_combo_red_with_weight_gain_and_symptoms_within_72h() -> None:
    ms = [*weights(78.0, 78.2, 78.4, 80.6), symptom("s1", "267038008", at(days=2), severity=1)]
    a = alerts(run(ms))
    assert a["HF-COMBO"].severity is Severity.RED
    assert a["HF-COMBO"].text == (
        "Signs of worsening heart failure: 2 signs within 72 h: "
        "Weight gain in 3 days; Heart-failure symptoms reported, 5 Nov 08:00"
    )
    assert a["HF-COMBO"].detail.startswith("Weight gain in 3 days: +2.6 kg (limit > +2 kg)")
    assert {"w3", "s1"} <= set(a["HF-COMBO"].evidence)
