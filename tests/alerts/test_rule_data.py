"""The rule data files, the FHIR artefacts derived from them and Flag validity."""

from __future__ import annotations

import json
from pathlib import Path

from fhir.resources.R4B.flag import Flag

from service.alerts.episodes import to_flag
from service.alerts.kinds import KINDS
from service.alerts.rules import default_rule_set
from tests.alerts.helpers import alerts, at, m, run

PROFILES = Path(__file__).resolve().parents[2] / "fhir_profiles"


def test_every_rule_has_a_known_kind_and_documented_parameters() -> None:
    for rule in default_rule_set().rules:
        assert rule.kind in KINDS or rule.kind in ("missing-data", "late-policy"), rule.id
        assert all(spec.mark in ("C", "R", "P") and spec.source for spec in rule.params.values())
    assert not default_rule_set().get("COPD-PEF-DROP").enabled_by_default


def test_codesystem_and_plandefinitions_list_every_rule() -> None:
    ids = {r.id for r in default_rule_set().rules}
    cs = json.loads((PROFILES / "CodeSystem-telemon-alert-rules.json").read_text())
    assert {c["code"] for c in cs["concept"]} == ids
    hf = json.loads((PROFILES / "PlanDefinition-heart-failure.json").read_text())
    copd = json.loads((PROFILES / "PlanDefinition-copd.json").read_text())
    assert hf["url"] == "http://telemon.example.org/fhir/PlanDefinition/heart-failure"
    assert {a["id"] for a in hf["action"]} | {a["id"] for a in copd["action"]} == ids


def test_flag_is_valid_fhir_r4() -> None:
    alert = alerts(run([m("b1", "sbp", 78, at())]))["HF-SBP-LOW"]
    flag = Flag.model_validate(to_flag(alert))
    assert flag.status == "active"
