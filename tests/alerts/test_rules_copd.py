"""COPD rules: fire/no-fire boundaries, baselines and severity levels (docs/alerts/rules.md)."""

from __future__ import annotations

import pytest

from service.alerts.episodes import EpisodeChange
from service.alerts.measurements import Measurement
from service.alerts.personalisation import Override, PatientConfig, RuleToggle
from service.alerts.results import Limit, Severity
from tests.alerts.helpers import COPD, alerts, at, m
from tests.alerts.helpers import run as run_engine


def run(ms: list[Measurement], config: PatientConfig = COPD) -> list[EpisodeChange]:
    """Evaluate for a COPD-only patient unless told otherwise."""
    return run_engine(ms, config)


def _level(rule: str, ms: list[Measurement], config: PatientConfig = COPD) -> Severity | None:
    a = alerts(run(ms, config))
    return a[rule].severity if rule in a else None


@pytest.mark.parametrize(
    ("spo2", "expected"),
    [(90, None), (89, Severity.ORANGE), (85, Severity.ORANGE), (84, Severity.RED)],
)
def test_spo2_abs_levels(spo2: float, expected: Severity | None) -> None:
    assert _level("COPD-SPO2-ABS", [m("s", "spo2", spo2, at())]) is expected


def test_spo2_abs_skipped_on_oxygen() -> None:
    assert _level("COPD-SPO2-ABS", [m("s", "spo2", 84, at(), on_supplemental_oxygen=True)]) is None


def _usual(spo2_today: float, yesterday: float | None = None) -> list[Measurement]:
    ms = [m(f"b{i}", "spo2", 95, at(days=i)) for i in range(6)]  # baseline 95 (room air)
    ms.append(m("o2", "spo2", 88, at(days=5, hours=1), on_supplemental_oxygen=True))
    if yesterday is not None:
        ms.append(m("y", "spo2", yesterday, at(days=9)))
    ms.append(m("t", "spo2", spo2_today, at(days=10)))
    return ms


@pytest.mark.parametrize(("today", "expected"), [(92, None), (91, Severity.ORANGE)])
def test_spo2_drop_boundary_is_4_points_below_room_air_baseline(
    today: float, expected: Severity | None
) -> None:
    a = alerts(run(_usual(today)))
    assert (a["COPD-SPO2-DROP"].severity if "COPD-SPO2-DROP" in a else None) is expected
    if expected:
        drop = a["COPD-SPO2-DROP"]
        assert drop.text == (
            "SpO2 drop from usual: 91 %, 4 points below usual 95 % (personal limit ≤ 91 %), "
            "12 Nov 08:00"
        )
        assert drop.detail == "Baseline 95 % (median 14 d excl. last 2 d, room air, n=6)"
        assert drop.limit == Limit("spo2", "<=", 91, "%", personal=True)


def test_spo2_drop_red_on_two_consecutive_days() -> None:
    a = alerts(run(_usual(91, yesterday=90.5)))
    # yesterday alone opened orange; today upgrades to red in the same episode
    assert a["COPD-SPO2-DROP"].severity is Severity.RED
    assert a["COPD-SPO2-DROP"].evidence == ("y", "t")


def test_spo2_drop_uses_clinician_usual_spo2() -> None:
    config = PatientConfig(
        "p1", frozenset({"COPD"}), overrides=(Override("usual_spo2", 90, at(days=-1)),)
    )
    assert _level("COPD-SPO2-DROP", [m("t", "spo2", 87, at())], config) is None
    assert _level("COPD-SPO2-DROP", [m("t", "spo2", 86, at())], config) is None  # merged
    a = alerts(run([m("t", "spo2", 86, at())], config))
    assert a["COPD-SPO2-ABS"].severity is Severity.ORANGE  # the stronger in the SpO2 group
    reasons = a["COPD-SPO2-ABS"].reasons  # Dutch: the config sets no language
    assert any(r.startswith("SpO2-daling t.o.v. gebruikelijke waarde: 86 %") for r in reasons)


@pytest.mark.parametrize(
    ("rr", "expected"),
    [(23, None), (24, Severity.ORANGE), (30, Severity.ORANGE), (31, Severity.RED)],
)
def test_rr_levels(rr: float, expected: Severity | None) -> None:
    assert _level("COPD-RR-HIGH", [m("r", "rr", rr, at())]) is expected


@pytest.mark.parametrize(
    ("hr", "expected"),
    [(109, None), (110, Severity.ORANGE), (130, Severity.ORANGE), (131, Severity.RED)],
)
def test_copd_hr_levels(hr: float, expected: Severity | None) -> None:
    assert _level("COPD-HR-HIGH", [m("h", "hr", hr, at())]) is expected


@pytest.mark.parametrize(
    ("temp", "expected"),
    [(37.9, None), (38.0, Severity.ORANGE), (38.9, Severity.ORANGE), (39.0, Severity.RED)],
)
def test_temp_levels(temp: float, expected: Severity | None) -> None:
    assert _level("COPD-TEMP", [m("t", "temp", temp, at())]) is expected


def _anth(*items: str) -> list[Measurement]:
    return [m(f"a{i}", "anthonisen", 1, at(hours=i), detail=d) for i, d in enumerate(items)]


def test_anthonisen_two_orange_three_action_plan() -> None:
    assert _level("COPD-SYMPTOM-ANTH", _anth("increased-dyspnoea")) is None
    a = alerts(run(_anth("increased-dyspnoea", "increased-sputum-volume")))
    assert a["COPD-SYMPTOM-ANTH"].severity is Severity.ORANGE
    a = alerts(
        run(_anth("increased-dyspnoea", "increased-sputum-volume", "increased-sputum-purulence"))
    )
    assert a["COPD-SYMPTOM-ANTH"].text == (
        "Anthonisen symptoms: 3/3 (more dyspnoea, more sputum, purulent sputum); "
        "start action plan, 2 Nov 10:00"
    )


def test_anthonisen_one_item_with_high_rr_is_red() -> None:
    ms = [*_anth("increased-dyspnoea"), m("r", "rr", 26, at(hours=2))]
    a = alerts(run(ms))
    assert a["COPD-SYMPTOM-ANTH"].severity is Severity.RED
    assert a["COPD-SYMPTOM-ANTH"].evidence == ("a0", "r")


def test_cat_rise_big_and_consecutive_small() -> None:
    base = [m(f"c{i}", "cat", v, at(days=7 * i)) for i, v in enumerate([12, 10, 11])]
    big = alerts(run([*base, m("c3", "cat", 15, at(days=21))]))
    assert big["COPD-CAT-RISE"].text == (
        "CAT score rise: CAT 15, +4 above baseline 11 (personal limit ≥ 15), 23 Nov 08:00"
    )
    assert big["COPD-CAT-RISE"].detail == "Baseline 11 (median of last 3 assessments, n=3)"
    assert _level("COPD-CAT-RISE", [*base, m("c3", "cat", 14, at(days=21))]) is None
    two = [*base, m("c3", "cat", 13, at(days=21)), m("c4", "cat", 13, at(days=28))]
    a = alerts(run(two))
    assert a["COPD-CAT-RISE"].severity is Severity.ORANGE
    assert a["COPD-CAT-RISE"].evidence == ("c3", "c4")


def test_ccq_rise_one_point_once() -> None:
    base = [m(f"q{i}", "ccq", v, at(days=7 * i)) for i, v in enumerate([1.2, 1.0, 1.1])]
    assert _level("COPD-CCQ-RISE", [*base, m("q3", "ccq", 2.0, at(days=21))]) is None
    assert _level("COPD-CCQ-RISE", [*base, m("q3", "ccq", 2.1, at(days=21))]) is Severity.ORANGE


def test_pef_rule_disabled_by_default_and_enabled_per_patient() -> None:
    ms = [m(f"p{i}", "pef", 300, at(days=i)) for i in range(5)]
    ms.append(m("low", "pef", 170, at(days=6)))
    assert _level("COPD-PEF-DROP", ms) is None
    config = PatientConfig(
        "p1", frozenset({"COPD"}), toggles=(RuleToggle("COPD-PEF-DROP", True, at(days=-1)),)
    )
    a = alerts(run(ms, config))
    assert a["COPD-PEF-DROP"].severity is Severity.ORANGE
    # Dutch (the config sets no language): decimal comma, Dutch title and limit.
    assert a["COPD-PEF-DROP"].text == (
        "Piekstroom onder persoonlijk beste: 170 L/min = 57 % van basiswaarde 300 L/min "
        "(persoonlijke grens < 180 L/min), 8 nov 08:00"
    )


def test_rome_composite_three_criteria_red() -> None:
    ms = [m("d", "dyspnoea", 6, at()), m("r", "rr", 24, at(hours=1)), m("h", "hr", 96, at(hours=2))]
    a = alerts(run(ms))
    assert a["COPD-ROME-COMPOSITE"].severity is Severity.RED
    assert a["COPD-ROME-COMPOSITE"].text == (
        "Moderate exacerbation criteria (Rome): 3 criteria within 24 h: "
        "Dyspnoea 6/10, RR 24/min, HR 96/min, 2 Nov 10:00"
    )
    assert _level("COPD-ROME-COMPOSITE", [*ms[:2], m("h", "hr", 94, at(hours=2))]) is None
