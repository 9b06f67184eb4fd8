"""GEN-MISSING sweep: missing weights, overdue questionnaires, silence, pauses."""

from __future__ import annotations

from service.alerts.engine import sweep_missing
from service.alerts.episodes import Action
from service.alerts.personalisation import PatientConfig, Pause
from service.alerts.results import Severity
from tests.alerts.helpers import COPD, HF, at, m, weights


def test_weight_missing_two_days_info_three_days_orange() -> None:
    ms = weights(80.0)  # day 0
    assert sweep_missing(HF, ms, [], at(days=2)) == []  # only day 1 complete and missing
    [info] = sweep_missing(HF, ms, [], at(days=3))
    assert (info.action, info.alert.severity, info.alert.text) == (
        Action.OPEN,
        Severity.INFO,
        "Measurements missing: no weight for 2 days",
    )
    [up] = sweep_missing(HF, ms, [info.alert], at(days=4))
    assert (up.action, up.alert.severity) == (Action.UPGRADE, Severity.ORANGE)
    assert up.alert.text == "Measurements missing: no weight for 3 days"


def test_sweep_is_idempotent_within_a_day_and_resolves_on_new_data() -> None:
    ms = weights(80.0)
    [opened] = sweep_missing(HF, ms, [], at(days=3))
    assert sweep_missing(HF, ms, [opened.alert], at(days=3, hours=5)) == []
    [closed] = sweep_missing(
        HF, [*ms, *weights(80.2, start=3)], [opened.alert], at(days=3, hours=6)
    )
    assert closed.action is Action.RESOLVE and closed.alert.period_end == at(days=3, hours=6)


def test_pause_suppresses_and_days_before_its_end_do_not_count() -> None:
    paused = PatientConfig("p1", frozenset({"HF"}), pauses=(Pause(at(days=1), None, "admission"),))
    assert sweep_missing(paused, weights(80.0), [], at(days=6)) == []
    ended = PatientConfig("p1", frozenset({"HF"}), pauses=(Pause(at(days=1), at(days=5)),))
    assert sweep_missing(ended, weights(80.0), [], at(days=6)) == []
    [info] = sweep_missing(ended, weights(80.0), [], at(days=7))
    assert info.alert.text == "Metingen ontbreken: geen gewicht sinds 2 dagen"  # Dutch default


def test_copd_questionnaire_overdue_by_two_days() -> None:
    ms = [m("c", "cat", 12, at()), *[m(f"s{d}", "spo2", 95, at(days=d)) for d in range(10)]]
    assert sweep_missing(COPD, ms, [], at(days=8)) == []  # 8 days since: 1 day overdue
    [info] = sweep_missing(COPD, ms, [], at(days=9))
    assert info.alert.text == "Measurements missing: questionnaire overdue by 2 days"
    assert info.alert.severity is Severity.INFO


def test_no_data_at_all_for_seven_days_is_orange() -> None:
    ms = [m("c", "cat", 12, at())]
    assert sweep_missing(COPD, ms, [], at(days=7)) == []
    [orange] = sweep_missing(COPD, ms, [], at(days=8))
    assert orange.alert.severity is Severity.ORANGE
    assert orange.alert.text == "Measurements missing: no measurements at all for 7 days"
