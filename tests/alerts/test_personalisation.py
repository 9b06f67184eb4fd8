"""Per-patient parameters: Goals, validity periods, rule toggles."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.alerts.personalisation import (
    Override,
    PatientConfig,
    RuleToggle,
    effective_params,
    is_enabled,
    overrides_from_goal,
)
from service.alerts.results import Limit, Severity
from service.alerts.rules import default_rule_set
from tests.alerts.helpers import alerts, at, m, run


def _goal(code: str, target: dict, status: str = "active") -> dict:  # type: ignore[type-arg]
    return {
        "resourceType": "Goal",
        "id": "g1",
        "lifecycleStatus": status,
        "startDate": "2026-10-01",
        "expressedBy": {"reference": "Practitioner/nurse-1"},
        "target": [
            {"measure": {"coding": [{"system": "http://loinc.org", "code": code}]}, **target}
        ],
    }


def test_goal_dry_weight_in_pounds() -> None:
    [o] = overrides_from_goal(
        _goal(
            "29463-7",
            {
                "detailQuantity": {
                    "value": 172,
                    "system": "http://unitsofmeasure.org",
                    "code": "[lb_av]",
                }
            },
        )
    )
    assert (o.param, o.rule_id, o.source, o.author) == (
        "dry_weight_kg",
        None,
        "Goal/g1",
        "Practitioner/nurse-1",
    )
    assert o.value == pytest.approx(78.02, abs=0.01)
    assert o.valid_from == datetime(2026, 9, 30, 22, 0, tzinfo=UTC)  # local midnight


def test_goal_usual_spo2_and_range_limits() -> None:
    goal = _goal("2708-6", {"detailQuantity": {"value": 91, "code": "%"}})
    goal["target"].append(
        {
            "measure": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "detailRange": {
                "low": {"value": 45, "code": "/min"},
                "high": {"value": 120, "code": "/min"},
            },
        }
    )
    got = {(o.rule_id, o.param): o.value for o in overrides_from_goal(goal)}
    assert got == {
        (None, "usual_spo2"): 91,
        ("HF-HR-LOW", "orange_below"): 45,
        ("HF-HR-HIGH", "orange_above"): 120,
        ("COPD-HR-HIGH", "orange_at"): 120,
    }


def test_cancelled_goal_gives_nothing() -> None:
    goal = _goal("29463-7", {"detailQuantity": {"value": 78, "code": "kg"}}, status="cancelled")
    assert overrides_from_goal(goal) == []


def test_personal_hr_limit_from_goal_changes_the_alert() -> None:
    goal = _goal("8867-4", {"detailRange": {"high": {"value": 120, "code": "/min"}}})
    config = PatientConfig("p1", frozenset({"HF"}), overrides=tuple(overrides_from_goal(goal)))
    assert run([m("h", "hr", 115, at())], config) == []
    a = alerts(run([m("h", "hr", 121, at())], config))
    # Dutch by default; the limit from the Goal is marked personal.
    assert a["HF-HR-HIGH"].text == (
        "Hoge hartfrequentie: Pols 121/min (persoonlijke grens > 120/min), 2 nov 08:00"
    )
    assert a["HF-HR-HIGH"].limit == Limit("hr", ">", 120, "/min", personal=True)


def test_threshold_change_applies_only_from_valid_from() -> None:
    # From day 5 the clinician accepts HR up to 125; an old reading of 118 still uses 110.
    config = PatientConfig(
        "p1",
        frozenset({"HF"}),
        overrides=(Override("orange_above", 125, at(days=5), rule_id="HF-HR-HIGH"),),
    )
    rule = default_rule_set().get("HF-HR-HIGH")
    assert effective_params(rule, config, at(days=4))["orange_above"] == 110
    assert effective_params(rule, config, at(days=5))["orange_above"] == 125
    assert alerts(run([m("h", "hr", 118, at(days=4))], config))["HF-HR-HIGH"].severity is (
        Severity.ORANGE
    )
    assert run([m("h", "hr", 118, at(days=6))], config) == []


def test_patient_override_beats_programme_override() -> None:
    config = PatientConfig(
        "p1",
        frozenset({"HF"}),
        programme_overrides=(Override("delta_kg", 1.5, at(days=-9), rule_id="HF-WT-1D"),),
        overrides=(Override("delta_kg", 0.8, at(days=-1), rule_id="HF-WT-1D"),),
    )
    assert effective_params(default_rule_set().get("HF-WT-1D"), config, at())["delta_kg"] == 0.8


def test_rule_disabled_for_patient_from_a_date() -> None:
    config = PatientConfig(
        "p1", frozenset({"HF"}), toggles=(RuleToggle("HF-SPO2-LOW", False, at(days=1)),)
    )
    rule = default_rule_set().get("HF-SPO2-LOW")
    assert is_enabled(rule, config, at()) and not is_enabled(rule, config, at(days=2))
    assert "HF-SPO2-LOW" in alerts(run([m("s", "spo2", 88, at())], config))
    assert run([m("s", "spo2", 88, at(days=2))], config) == []
