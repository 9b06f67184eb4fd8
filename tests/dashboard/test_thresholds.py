"""Chart lines from the rule set and the patient's personalisation (no numbers of their own)."""

from __future__ import annotations

from datetime import UTC, datetime

from service.alerts.personalisation import Override, PatientConfig, RuleToggle
from service.alerts.rules import default_rule_set
from service.dashboard.thresholds import (
    ThresholdLine,
    alert_limits,
    merge,
    patient_lines,
    personal_references,
)

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
SINCE = datetime(2026, 1, 1, tzinfo=UTC)


def _config(programmes: set[str], **kw: object) -> PatientConfig:
    return PatientConfig("p1", frozenset(programmes), **kw)  # type: ignore[arg-type]


def _lines(config: PatientConfig) -> list[ThresholdLine]:
    rules = default_rule_set().for_programmes(set(config.programmes))
    return alert_limits(config, rules, NOW)


def _default(rule_id: str, param: str) -> float:
    value = default_rule_set().get(rule_id).params[param].default
    assert value is not None
    return value


def test_heart_failure_limits_come_from_the_rules_bands() -> None:
    lines = {(ln.concept, ln.value): ln for ln in _lines(_config({"HF"}))}
    spo2_orange = lines[("spo2", _default("HF-SPO2-LOW", "orange_below"))]
    assert (spo2_orange.level, spo2_orange.personal) == ("orange", False)
    assert spo2_orange.label == f"SpO2 < {_default('HF-SPO2-LOW', 'orange_below'):g} (HF-SPO2-LOW)"
    assert lines[("spo2", _default("HF-SPO2-LOW", "red_below"))].level == "red"
    assert lines[("sbp", _default("HF-SBP-HIGH", "red_at"))].level == "red"
    assert lines[("dbp", _default("HF-SBP-HIGH", "dbp_red_at"))].level == "red"
    assert lines[("hr", _default("HF-HR-HIGH", "orange_above"))].level == "orange"
    # a limit that applies only with symptoms is no line of its own
    with_symptom = _default("HF-HR-HIGH", "orange_above_with_sym")
    assert ("hr", with_symptom) not in lines
    # COPD rules are not this patient's
    assert ("rr", _default("COPD-RR-HIGH", "orange_at")) not in lines


def test_a_goal_changes_the_limit_and_marks_it_personal() -> None:
    personal = Override("orange_above", 95.0, SINCE, rule_id="HF-HR-HIGH", source="Goal/g1")
    lines = {(ln.concept, ln.value): ln for ln in _lines(_config({"HF"}, overrides=(personal,)))}
    assert lines[("hr", 95.0)].personal
    assert ("hr", _default("HF-HR-HIGH", "orange_above")) not in lines
    # an override that starts later is not in force yet
    later = Override("orange_above", 95.0, datetime(2027, 1, 1, tzinfo=UTC), rule_id="HF-HR-HIGH")
    lines = {(ln.concept, ln.value): ln for ln in _lines(_config({"HF"}, overrides=(later,)))}
    assert ("hr", 95.0) not in lines


def test_a_rule_switched_off_for_the_patient_draws_nothing() -> None:
    off = RuleToggle("HF-SPO2-LOW", False, SINCE)
    concepts = {ln.concept for ln in _lines(_config({"HF"}, toggles=(off,)))}
    assert "spo2" not in concepts and "hr" in concepts


def test_both_programmes_share_a_line_at_the_worst_level() -> None:
    lines = _lines(_config({"HF", "COPD"}))
    value = _default("COPD-SPO2-ABS", "orange_below")
    assert value == _default("HF-SPO2-LOW", "red_below")  # the premise of this test
    (shared,) = [ln for ln in lines if (ln.concept, ln.value) == ("spo2", value)]
    assert shared.level == "red"
    assert "HF-SPO2-LOW" in shared.label and "COPD-SPO2-ABS" in shared.label
    assert len({(ln.concept, ln.value) for ln in lines}) == len(lines)


def test_merge_keeps_one_line_per_value() -> None:
    merged = merge(
        [
            ThresholdLine("hr", 110, "orange", "A"),
            ThresholdLine("hr", 110, "red", "B", personal=True),
            ThresholdLine("hr", 50, "info", "C"),
        ]
    )
    assert [(ln.value, ln.level, ln.label, ln.personal) for ln in merged] == [
        (50, "info", "C", False),
        (110, "red", "A; B", True),
    ]


def test_personal_reference_values_from_goals() -> None:
    dry = Override("dry_weight_kg", 78.5, SINCE, source="Goal/dry")
    older = Override("dry_weight_kg", 80.0, datetime(2025, 1, 1, tzinfo=UTC))
    usual = Override("usual_spo2", 94.0, SINCE)
    config = _config({"HF"}, overrides=(older, dry, usual))
    refs = {ln.concept: ln for ln in personal_references(config, NOW)}
    assert refs["weight"].value == 78.5  # the latest one in force
    assert refs["weight"].label == "dry weight 78.5 kg (personal, Goal/dry)"
    assert (refs["weight"].level, refs["weight"].personal) == ("reference", True)
    assert refs["spo2"].value == 94.0
    everything = patient_lines(config, default_rule_set().for_programmes({"HF"}), NOW)
    assert refs["weight"] in everything and any(ln.level == "red" for ln in everything)
