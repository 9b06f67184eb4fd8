"""Every rule of rules/default.json at its fire/no-fire boundary, via ``POST /fhir/Observation``.

One table row per rule: the programme(s), Goals and rule toggles of the CarePlan, and steps.
Each step posts Observations and then checks the rule's Flag: ``None`` (no Flag at all) or the
Flag's priority (PL/PM/PH) and fragments of its text. A row typically goes "just below the
threshold → at the threshold (orange) → red", so the red step is an upgrade of the same Flag.
GEN-MISSING (the sweep) and GEN-LATE (a policy on other rules) are in their own modules.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.alerts_api.conftest import (
    Api,
    at,
    bp,
    details,
    goal_quantity,
    hr,
    item,
    nyha,
    pef,
    priority,
    rr,
    score,
    spo2,
    symptom,
    temp,
    text,
    weight,
)

Obs = Callable[[str], list[dict[str, Any]]]


@dataclass(frozen=True)
class Step:
    """Post ``obs(patient)``, then expect no Flag (priority None) or one with these texts."""

    obs: Obs
    priority: str | None
    texts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    """One rule's scenario."""

    programmes: tuple[str, ...]
    steps: tuple[Step, ...]
    goals: tuple[dict[str, Any], ...] = ()
    enable: tuple[str, ...] = ()
    history: Obs | None = None  # posted first (one transaction), never checked
    rule: str = field(default="")


def none(obs: Obs) -> Step:
    """A step that must not raise the rule."""
    return Step(obs, None)


def fires(obs: Obs, prio: str, *texts: str) -> Step:
    """A step after which the rule's Flag is active with this priority and texts."""
    return Step(obs, prio, texts)


HF, COPD = ("HF",), ("COPD",)
CAT, CCQ, VAS = "cat-total", "ccq-total", "dyspnoea-vas"

CASES: dict[str, Case] = {
    # -- heart failure: weight (first weight of each local day) ----------------------------
    "HF-WT-1D": Case(
        HF,
        history=lambda p: [weight(p, 80.0, at(3))],
        steps=(
            none(lambda p: [weight(p, 81.0, at(2))]),  # +1.0 kg is not > 1.0
            fires(lambda p: [weight(p, 80.0, at(1)), weight(p, 81.1, at(0))], "PM",
                  "Weight gain in 1 day: +1.1 kg"),
            fires(lambda p: [symptom(p, "dyspnoea", "moderate", at(0, minutes=5))], "PH",
                  "Weight gain in 1 day: +1.1 kg", "with symptoms (shortness of breath)"),
        ),
    ),
    "HF-WT-3D": Case(
        HF,
        history=lambda p: [weight(p, 80.0, at(4)), weight(p, 80.7, at(3)), weight(p, 81.4, at(2))],
        steps=(
            none(lambda p: [weight(p, 82.0, at(1))]),  # +2.0 vs 80.0 three days before
            fires(lambda p: [weight(p, 82.8, at(0))], "PM",
                  "Weight gain in 3 days: +2.1 kg"),
            fires(lambda p: [symptom(p, "oedema", "mild", at(0, minutes=5))], "PH",
                  "Weight gain in 3 days: +2.1 kg", "with symptoms (oedema)"),
        ),
    ),
    "HF-WT-BASE": Case(
        HF,
        goals=(goal_quantity("29463-7", 80, "kg"),),  # dry weight
        steps=(
            none(lambda p: [weight(p, 82.4, at(1))]),
            fires(lambda p: [weight(p, 82.5, at(0))], "PM",
                  "Weight above baseline: 82.5 kg, +2.5 kg above baseline 80 kg "
                  "(personal limit ≥ 82.5 kg)", "Baseline 80 kg (clinician-set)"),
            fires(lambda p: [symptom(p, "dyspnoea", "mild", at(0, minutes=5))], "PH",
                  "+2.5 kg above baseline 80 kg", "with symptoms"),
        ),
    ),
    "HF-WT-LOSS": Case(
        HF,
        history=lambda p: [weight(p, 80.0, at(2))],
        steps=(
            none(lambda p: [weight(p, 78.0, at(1))]),  # a fall of 2.0 is not > 2.0
            fires(lambda p: [weight(p, 77.9, at(0))], "PL",
                  "Weight loss (over-diuresis): 77.9 kg, -2.1 kg in 3 days (limit < -2 kg)",
                  "Highest of the 3 days before: 80 kg"),
            fires(lambda p: [bp(p, 88, 60, at(0, minutes=5))], "PM",
                  "-2.1 kg in 3 days", "SBP 88 mmHg"),
        ),
    ),
    # -- heart failure: per-reading thresholds ---------------------------------------------
    "HF-SBP-LOW": Case(
        HF,
        steps=(
            none(lambda p: [bp(p, 90, 60, at(minutes=90))]),
            fires(lambda p: [bp(p, 89, 60, at(minutes=60))], "PM", "SBP 89 mmHg (limit < 90 mmHg)"),
            fires(lambda p: [bp(p, 79, 50, at(minutes=30))], "PH", "SBP 79 mmHg (limit < 80 mmHg)"),
        ),
    ),
    "HF-SBP-HIGH": Case(
        HF,
        steps=(
            none(lambda p: [bp(p, 170, 90, at(minutes=90))]),
            fires(lambda p: [bp(p, 171, 90, at(minutes=60))], "PM",
                  "SBP 171 mmHg (limit > 170 mmHg)"),
            fires(lambda p: [bp(p, 200, 100, at(minutes=30))], "PH",
                  "SBP 200 mmHg (limit ≥ 200 mmHg)"),
        ),
    ),
    "HF-SBP-HIGH/DBP": Case(
        HF,
        rule="HF-SBP-HIGH",
        steps=(
            none(lambda p: [bp(p, 160, 119, at(minutes=60))]),
            fires(lambda p: [bp(p, 165, 120, at(minutes=30))], "PH",
                  "DBP 120 mmHg (limit ≥ 120 mmHg)"),
        ),
    ),
    "HF-HR-LOW": Case(
        HF,
        steps=(
            none(lambda p: [hr(p, 50, at(minutes=90))]),
            fires(lambda p: [hr(p, 49, at(minutes=60))], "PM", "HR 49/min (limit < 50/min)"),
            fires(lambda p: [hr(p, 39, at(minutes=30))], "PH", "HR 39/min (limit < 40/min)"),
        ),
    ),
    "HF-HR-HIGH": Case(
        HF,
        steps=(
            none(lambda p: [hr(p, 110, at(minutes=90))]),
            fires(lambda p: [hr(p, 111, at(minutes=60))], "PM", "HR 111/min (limit > 110/min)"),
            fires(lambda p: [hr(p, 131, at(minutes=30))], "PH", "HR 131/min (limit > 130/min)"),
        ),
    ),
    "HF-SPO2-LOW": Case(
        HF,
        steps=(
            none(lambda p: [spo2(p, 92, at(minutes=90))]),
            fires(lambda p: [spo2(p, 91, at(minutes=60))], "PM", "SpO2 91 % (limit < 92 %)"),
            fires(lambda p: [spo2(p, 89, at(minutes=30))], "PH", "SpO2 89 % (limit < 90 %)"),
        ),
    ),
    "HF-SYMPTOM": Case(
        HF,
        steps=(
            # fatigue is not a qualifying finding; "absent" is no symptom
            none(lambda p: [symptom(p, "fatigue", "severe", at(minutes=90)),
                            symptom(p, "dyspnoea", "absent", at(minutes=80))]),
            fires(lambda p: [symptom(p, "oedema", "mild", at(minutes=60))], "PM",
                  "Heart-failure symptoms reported: oedema (mild)"),
            fires(lambda p: [symptom(p, "chest-pain", "severe", at(minutes=30))], "PH",
                  "chest pain (severe)", "oedema (mild)"),
        ),
    ),
    "HF-NYHA-UP": Case(
        HF,
        goals=(goal_quantity("88020-3", 2, "1"),),  # clinician-set class II
        steps=(
            none(lambda p: [nyha(p, 2, at(minutes=90))]),
            fires(lambda p: [nyha(p, 3, at(minutes=60))], "PM",
                  "NYHA class worse than set class: class 3 reported (set by clinician: class 2)"),
            fires(lambda p: [nyha(p, 4, at(minutes=30))], "PH", "class 4 reported"),
        ),
    ),
    "HF-COMBO": Case(
        HF,
        steps=(
            none(lambda p: [hr(p, 111, at(minutes=90))]),  # one sign (HF-HR-HIGH) only
            fires(lambda p: [symptom(p, "dyspnoea", "moderate", at(minutes=60))], "PH",
                  "Signs of worsening heart failure: 2 signs within 72 h",
                  "Heart-failure symptoms reported: shortness of breath",
                  "High heart rate: HR 111/min"),
        ),
    ),
    # -- COPD ------------------------------------------------------------------------------
    "COPD-SPO2-ABS": Case(
        COPD,
        steps=(
            none(lambda p: [spo2(p, 90, at(minutes=90))]),
            fires(lambda p: [spo2(p, 89, at(minutes=60))], "PM", "SpO2 89 % (limit < 90 %)"),
            fires(lambda p: [spo2(p, 84, at(minutes=30))], "PH", "SpO2 84 % (limit < 85 %)"),
        ),
    ),
    "COPD-SPO2-DROP": Case(
        COPD,
        # usual SpO2 = median of room-air readings 14 d excluding the last 2 (n >= 4)
        history=lambda p: [spo2(p, 96, at(d)) for d in (2, 3, 4, 5)],
        steps=(
            none(lambda p: [spo2(p, 93, at(minutes=90))]),
            fires(lambda p: [spo2(p, 92, at(minutes=60))], "PM",
                  "SpO2 drop from usual: 92 %, 4 points below usual 96 % (personal limit ≤ 92 %)",
                  "Baseline 96 % (median 14 d excl. last 2 d, room air, n=4)"),
            # answers from before the reading, posted after it: the reading is re-evaluated
            fires(lambda p: [item(p, "increased-dyspnoea", True, at(minutes=75)),
                             item(p, "increased-sputum-volume", True, at(minutes=70))], "PH",
                  "92 %, 4 points below usual", "with 2 Anthonisen criteria"),
        ),
    ),
    "COPD-RR-HIGH": Case(
        COPD,
        steps=(
            none(lambda p: [rr(p, 23, at(minutes=90))]),
            fires(lambda p: [rr(p, 24, at(minutes=60))], "PM", "RR 24/min (limit ≥ 24/min)"),
            fires(lambda p: [rr(p, 31, at(minutes=30))], "PH", "RR 31/min (limit > 30/min)"),
        ),
    ),
    "COPD-HR-HIGH": Case(
        COPD,
        steps=(
            none(lambda p: [hr(p, 109, at(minutes=90))]),
            fires(lambda p: [hr(p, 110, at(minutes=60))], "PM", "HR 110/min (limit ≥ 110/min)"),
            fires(lambda p: [hr(p, 131, at(minutes=30))], "PH", "HR 131/min (limit > 130/min)"),
        ),
    ),
    "COPD-TEMP": Case(
        COPD,
        steps=(
            none(lambda p: [temp(p, 37.9, at(minutes=90))]),
            fires(lambda p: [temp(p, 38.0, at(minutes=60))], "PM",
                  "Temperature 38 °C (limit ≥ 38 °C)"),
            fires(lambda p: [temp(p, 39.0, at(minutes=30))], "PH",
                  "Temperature 39 °C (limit ≥ 39 °C)"),
        ),
    ),
    "COPD-SYMPTOM-ANTH": Case(
        COPD,
        steps=(
            none(lambda p: [item(p, "increased-dyspnoea", True, at(minutes=90)),
                            item(p, "increased-sputum-purulence", False, at(minutes=90))]),
            fires(lambda p: [item(p, "increased-sputum-volume", True, at(minutes=60))], "PM",
                  "Anthonisen symptoms: 2/3 (more dyspnoea, more sputum)"),
            fires(lambda p: [rr(p, 24, at(minutes=30))], "PH",
                  "Anthonisen symptoms: 2/3", "with High respiratory rate",
                  "High respiratory rate: RR 24/min (limit ≥ 24/min)"),
        ),
    ),
    "COPD-CAT-RISE": Case(
        COPD,
        history=lambda p: [score(p, CAT, 10, at(d)) for d in (6, 4, 2)],
        steps=(
            none(lambda p: [score(p, CAT, 13, at(minutes=60))]),
            fires(lambda p: [score(p, CAT, 14, at(minutes=30))], "PM",
                  "CAT score rise: CAT 14, +4 above baseline 10 (personal limit ≥ 14)",
                  "Baseline 10 (median of last 3 assessments, n=3)"),
        ),
    ),
    "COPD-CCQ-RISE": Case(
        COPD,
        history=lambda p: [score(p, CCQ, 2.0, at(d)) for d in (6, 4, 2)],
        steps=(
            none(lambda p: [score(p, CCQ, 2.9, at(minutes=60))]),
            fires(lambda p: [score(p, CCQ, 3.0, at(minutes=30))], "PM",
                  "CCQ 3, +1 above baseline 2 (personal limit ≥ 3)"),
        ),
    ),
    "COPD-PEF-DROP": Case(
        COPD,
        enable=("COPD-PEF-DROP",),  # off by default (opt-in per patient)
        goals=(goal_quantity("19935-6", 400, "L/min"),),
        steps=(
            none(lambda p: [pef(p, 320, at(minutes=90))]),  # exactly 80 %
            fires(lambda p: [pef(p, 319, at(minutes=60))], "PL",
                  "319 L/min = 80 % of baseline 400 L/min (personal limit < 320 L/min)",
                  "Baseline 400 L/min (clinician-set)"),
            fires(lambda p: [pef(p, 239, at(minutes=30))], "PM", "239 L/min = 60 %"),
        ),
    ),
    "COPD-ROME-COMPOSITE": Case(
        COPD,
        steps=(
            none(lambda p: [score(p, VAS, 5, at(minutes=90)), hr(p, 95, at(minutes=80)),
                            rr(p, 23, at(minutes=70))]),
            fires(lambda p: [rr(p, 24, at(minutes=30))], "PH",
                  "3 criteria within 24 h: Dyspnoea 5/10, RR 24/min, HR 95/min"),
        ),
    ),
    # -- general -----------------------------------------------------------------------------
    "GEN-IMPLAUSIBLE": Case(
        COPD,
        steps=(
            none(lambda p: [score(p, CAT, 40, at(minutes=90))]),
            fires(lambda p: [score(p, CAT, 41, at(minutes=60))], "PL",
                  "Verify measurement: 41 {score}", "cat 41 outside plausible range 0-40"),
        ),
    ),
    "GEN-IMPLAUSIBLE/weight": Case(
        HF,
        rule="GEN-IMPLAUSIBLE",
        history=lambda p: [weight(p, 80.0, at(minutes=180))],
        steps=(
            fires(lambda p: [weight(p, 85.1, at(minutes=60))], "PL",
                  "Verify measurement: 85.1 kg",
                  "weight changed +5.1 kg within 24 h: another person on the scale?"),
        ),
    ),
    "GEN-IMPLAUSIBLE/weight-5.0": Case(
        HF,
        rule="GEN-IMPLAUSIBLE",
        history=lambda p: [weight(p, 80.0, at(minutes=180))],
        steps=(none(lambda p: [weight(p, 85.0, at(minutes=60))]),),
    ),
}


def _run_case(api: Api, name: str, case: Case) -> list[str]:
    """Run one row; the problems found (empty when it behaves)."""
    rule = case.rule or name
    pid = api.enrol(
        programmes=case.programmes,
        goals=case.goals,
        enable=case.enable,
    )
    if case.history is not None:
        response = api.transaction(*case.history(pid))
        assert response.status_code == 200, response.text
    problems: list[str] = []
    flag_id: str | None = None
    for index, step in enumerate(case.steps):
        posted = api.post(*step.obs(pid))
        found = api.flags(pid, rule)
        where = f"{name} step {index}"
        if step.priority is None:
            if found:
                problems.append(f"{where}: expected no Flag, got {[text(f) for f in found]}")
            continue
        if len(found) != 1:
            problems.append(f"{where}: expected one Flag, got {[text(f) for f in found]}")
            continue
        flag = found[0]
        if flag["status"] != "active" or priority(flag) != step.priority:
            problems.append(f"{where}: {flag['status']} {priority(flag)} != {step.priority}")
        missing = [t for t in step.texts if t not in text(flag)]
        if missing:
            problems.append(f"{where}: {missing} not in {text(flag)!r}")
        if flag_id is not None and flag["id"] != flag_id:
            problems.append(f"{where}: a new Flag {flag['id']} instead of {flag_id}")
        flag_id = flag["id"]
        if not {o["id"] for o in posted} & set(details(flag)) and index == 1:
            problems.append(f"{where}: the triggering Observation is not in flag-detail")
    return problems


HF_CASES = [n for n, c in CASES.items() if c.programmes == HF]
COPD_CASES = [n for n, c in CASES.items() if c.programmes == COPD]


@pytest.mark.parametrize("names", [HF_CASES, COPD_CASES], ids=["HF", "COPD"])
def test_rule_boundaries(api: Api, names: list[str]) -> None:
    """Each rule stays silent just below its threshold and fires with the right priority at it."""
    problems = [p for name in names for p in _run_case(api, name, CASES[name])]
    assert not problems, "\n".join(problems)


def test_the_table_covers_every_rule() -> None:
    """Every rule of the default rule set has a row here or a test module of its own."""
    path = Path(__file__).resolve().parents[2] / "service/alerts/rules/default.json"
    rules = {r["id"] for r in json.loads(path.read_text())["rules"]}
    covered = {c.rule or n for n, c in CASES.items()} | {"GEN-MISSING", "GEN-LATE"}
    assert rules == covered
