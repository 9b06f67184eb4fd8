"""Every code of the concept table, through the API, raises the alert its concept should raise.

For each concept (and the blood-pressure panel) a scenario that raises one rule; it is run once
per code of the concept, with that code in every Observation it posts, on a patient enrolled in
both programmes. The vital signs are posted in the category ``vital-signs`` and must come back
without a "not evaluated" warning. A code added to the table is run here without further ado; a
concept added without a scenario fails :func:`test_every_concept_has_a_scenario`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from service.alerts.rules import default_rule_set
from service.core import concepts
from service.core.concepts import Code
from tests.alerts_api.conftest import (
    NYHA,
    SEVERITY,
    Api,
    at,
    goal_quantity,
    observation,
    priority,
    qty,
    rule_of,
    text,
)

VITAL = [{"coding": [{"system": concepts.OBSERVATION_CATEGORY, "code": "vital-signs"}]}]
Posts = Callable[[str, Code], list[dict[str, Any]]]


def obs(pid: str, code: Code, when: str, **value: Any) -> dict[str, Any]:
    """An Observation coded ``code`` (vital signs in their category)."""
    extra: dict[str, Any] = {}
    found = concepts.concept_by_code(*code.key)
    if concepts.panel_of({"coding": [code.coding()]}) or (found and found.vital_sign):
        extra["category"] = VITAL
    return observation(pid, code.code, when, system=code.system, **extra, **value)


def component(code: Code | str, value: float, unit: str = "mm[Hg]") -> dict[str, Any]:
    """A blood-pressure component (a LOINC code given as a string)."""
    system, code_value = (concepts.LOINC, code) if isinstance(code, str) else code.key
    coding = {"system": system, "code": code_value}
    return {"code": {"coding": [coding]}, "valueQuantity": qty(value, unit)}


def snomed(code: str) -> dict[str, Any]:
    """A SNOMED CT answer (valueCodeableConcept)."""
    return {"coding": [{"system": concepts.SNOMED, "code": code}]}


def bp_panel(
    code: str, systolic: str, sbp: float, diastolic: str, dbp: float
) -> Posts:
    """Posts of one blood-pressure panel; "under test" stands for the code under test."""
    return lambda p, c: [
        panel(
            p,
            c if code == "under test" else code,
            at(minutes=30),
            component(c if systolic == "under test" else systolic, sbp),
            component(c if diastolic == "under test" else diastolic, dbp),
        )
    ]


def panel(pid: str, code: Code | str, when: str, *components: dict[str, Any]) -> dict[str, Any]:
    """A blood-pressure panel (85354-9 unless another panel code is given)."""
    found = concepts.entry(concepts.LOINC, code) if isinstance(code, str) else code
    assert found is not None
    return obs(pid, found, when, component=list(components))


@dataclass(frozen=True)
class Scenario:
    """Posts with the code under test that raise ``rule`` with ``prio``, once history is in."""

    rule: str
    prio: str | None
    posts: Posts
    history: Posts | None = None
    goals: tuple[dict[str, Any], ...] = ()
    enable: tuple[str, ...] = ()


def _quantity(value: float, unit: str) -> Posts:
    return lambda p, c: [obs(p, c, at(minutes=30), valueQuantity=qty(value, unit))]


def _score(history: float, value: float) -> tuple[Posts, Posts]:
    def before(p: str, c: Code) -> list[dict[str, Any]]:
        return [obs(p, c, at(d), valueQuantity=qty(history, "{score}")) for d in (6, 4, 2)]

    return before, _quantity(value, "{score}")


def _other_item(code: Code) -> Code:
    return next(c for c in concepts.ANTHONISEN.codes if c != code)


CAT_BEFORE, CAT_NOW = _score(10, 14)
CCQ_BEFORE, CCQ_NOW = _score(2.0, 3.0)
HF_SYMPTOM_CODES = set(default_rule_set().get("HF-SYMPTOM").options["symptom_codes"])

SCENARIOS: dict[str, Scenario] = {
    "weight": Scenario(
        "HF-WT-3D",
        "PM",
        history=lambda p, c: [obs(p, c, at(3), valueQuantity=qty(80.0, "kg"))],
        posts=lambda p, c: [obs(p, c, at(0), valueQuantity=qty(82.5, "kg"))],
    ),
    # systolic and diastolic: on their own, and as the component of a panel
    "sbp": Scenario("HF-SBP-HIGH", "PH", _quantity(210, "mm[Hg]")),
    "sbp in a panel": Scenario(
        "HF-SBP-HIGH",
        "PH",
        bp_panel("85354-9", "under test", 210, "8462-4", 90),
    ),
    "dbp": Scenario("HF-SBP-HIGH", "PH", _quantity(125, "mm[Hg]")),
    "dbp in a panel": Scenario(
        "HF-SBP-HIGH",
        "PH",
        bp_panel("85354-9", "8480-6", 150, "under test", 125),
    ),
    "bp": Scenario(
        "HF-SBP-HIGH",
        "PH",
        bp_panel("under test", "8480-6", 210, "8462-4", 125),
    ),
    "hr": Scenario("HF-HR-HIGH", "PH", _quantity(135, "/min")),
    "spo2": Scenario("HF-SPO2-LOW", "PH", _quantity(84, "%")),
    "rr": Scenario("COPD-RR-HIGH", "PH", _quantity(31, "/min")),
    "temp": Scenario("COPD-TEMP", "PH", _quantity(41.5, "Cel")),
    "pef": Scenario(
        "COPD-PEF-DROP",
        "PM",
        _quantity(239, "L/min"),
        goals=(goal_quantity("19935-6", 400, "L/min"),),
        enable=("COPD-PEF-DROP",),
    ),
    "nyha": Scenario(
        "HF-NYHA-UP",
        "PH",
        lambda p, c: [
            obs(p, c, at(minutes=30), valueCodeableConcept=snomed(NYHA[4]))
        ],
        goals=(goal_quantity("88020-3", 2, "1"),),
    ),
    "cat": Scenario("COPD-CAT-RISE", "PM", CAT_NOW, history=CAT_BEFORE),
    "ccq": Scenario("COPD-CCQ-RISE", "PM", CCQ_NOW, history=CCQ_BEFORE),
    "dyspnoea": Scenario(
        "COPD-ROME-COMPOSITE",
        "PH",
        lambda p, c: [
            obs(p, c, at(minutes=50), valueQuantity=qty(5, "{score}")),
            observation(p, "8867-4", at(minutes=40), valueQuantity=qty(95, "/min")),
            observation(p, "9279-1", at(minutes=30), valueQuantity=qty(24, "/min")),
        ],
    ),
    "anthonisen": Scenario(
        "COPD-SYMPTOM-ANTH",
        "PM",
        lambda p, c: [
            obs(p, c, at(minutes=40), valueBoolean=True),
            obs(p, _other_item(c), at(minutes=30), valueBoolean=True),
        ],
    ),
    "symptom": Scenario(
        "HF-SYMPTOM",
        None,  # PM, or PH for the red findings (chest pain, shortness of breath)
        lambda p, c: [
            obs(p, c, at(minutes=30), valueCodeableConcept=snomed(SEVERITY["moderate"]))
        ],
    ),
}
#: Heart-failure findings of the Belgian IG ValueSet that no rule takes as a warning sign
#: (HF-SYMPTOM's symptom_codes leave them out): stored and shown, never an alert on their own.
NOT_WARNING_SIGNS = {"84229001", "80313002", "64379006", "40917007"}


def _cases() -> list[tuple[str, tuple[Code, ...]]]:
    cases = []
    for concept in concepts.CONCEPTS:
        cases.append((concept.key, concept.codes))
        if concept.key in concepts.BLOOD_PRESSURE.components and concept.key != "hr":
            cases.append((f"{concept.key} in a panel", concept.codes))
    cases.append((concepts.BLOOD_PRESSURE.key, concepts.BLOOD_PRESSURE.codes))
    return cases


def _warnings(response: Any) -> list[dict[str, Any]]:
    return [i for i in response.json().get("issue", []) if i["severity"] == "warning"]


def _run(api: Api, name: str, code: Code) -> list[str]:
    """One code through its concept's scenario; the problems found."""
    scenario = SCENARIOS[name]
    where = f"{name} {code.system}|{code.code}"
    pid = api.enrol(programmes=["HF", "COPD"], goals=scenario.goals, enable=scenario.enable)
    if scenario.history is not None:
        response = api.transaction(*scenario.history(pid, code))
        if response.status_code != 200:
            return [f"{where}: history {response.status_code} {response.text}"]
    problems = []
    for resource in scenario.posts(pid, code):
        response = api.client.post(
            "/fhir/Observation", json=resource, headers={"Prefer": "return=OperationOutcome"}
        )
        if response.status_code != 201:
            problems.append(f"{where}: {response.status_code} {response.text}")
        elif _warnings(response):
            problems.append(f"{where}: not evaluated? {_warnings(response)}")
    expected = scenario.rule
    if name == "symptom" and code.code in NOT_WARNING_SIGNS:
        if api.flags(pid, expected):
            problems.append(f"{where}: {expected} raised by a finding that is not a warning sign")
        return problems
    flag = api.flag(pid, expected)
    if flag is None:
        raised = [f"{rule_of(f)}: {text(f)}" for f in api.flags(pid)]
        problems.append(f"{where}: no {expected} (raised: {raised})")
    elif flag["status"] != "active" or scenario.prio not in (None, priority(flag)):
        problems.append(f"{where}: {expected} {flag['status']} {priority(flag)}")
    return problems


@pytest.mark.parametrize(("name", "codes"), _cases(), ids=[n for n, _ in _cases()])
def test_every_code_raises_the_alert_of_its_concept(
    api: Api, name: str, codes: tuple[Code, ...]
) -> None:
    problems = [p for code in codes for p in _run(api, name, code)]
    assert not problems, "\n".join(problems)


def test_every_concept_has_a_scenario() -> None:
    assert {name for name, _ in _cases()} == set(SCENARIOS)
    assert {c.code for c in concepts.SYMPTOM.codes} - HF_SYMPTOM_CODES == NOT_WARNING_SIGNS


def test_the_observations_of_issue_11_raise_their_alerts(api: Api) -> None:
    """A blood pressure coded 55284-4 at 210/125 mmHg and an oral temperature (8331-1) at
    41.5 °C, for a patient in both programmes: accepted once, and alerted on (both were
    accepted and silently ignored before the concept table)."""
    pid = api.enrol(programmes=["HF", "COPD"])
    bp_code = concepts.entry(concepts.LOINC, "55284-4")
    oral = concepts.entry(concepts.LOINC, "8331-1")
    assert bp_code is not None and oral is not None
    api.post(
        panel(pid, bp_code, at(minutes=30), component("8480-6", 210), component("8462-4", 125)),
        obs(pid, oral, at(minutes=20), valueQuantity=qty(41.5, "Cel")),
    )
    active = {rule_of(f): priority(f) for f in api.flags(pid, status="active")}
    assert active == {"HF-SBP-HIGH": "PH", "COPD-TEMP": "PH"}
    assert "SBP 210 mmHg" in text(api.flag(pid, "HF-SBP-HIGH") or {"code": {"text": ""}})
