"""Which vital signs no alert rule evaluates: never accepted in silence.

An Observation in the category ``vital-signs`` of an enrolled patient is meant to be watched. When
its code is not in the concept table (BMI, height, a code telemon does not know), or it means a
measurement none of the rules of the patient's programmes reads (a temperature of a patient in
the heart-failure programme only), it is stored but no rule looks at it. The write then carries
a :class:`NotEvaluated` warning (the client's OperationOutcome, the log, a metric), and the
dashboard lists the reading as "not evaluated by any alert rule".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.alerts.kinds import KINDS
from service.alerts.personalisation import PatientConfig, is_enabled
from service.alerts.rules import RuleSet
from service.core import concepts
from service.core.outcome import Issue

UNKNOWN_CODE = "unknown-code"
NO_RULE = "no-rule"
_SYSTEM_NAMES = {concepts.LOINC: "LOINC", concepts.SNOMED: "SNOMED CT"}
_PROGRAMME_NAMES = {"HF": "heart failure", "COPD": "COPD"}


@dataclass(frozen=True, slots=True)
class NotEvaluated(Issue):
    """The warning for a vital sign no rule evaluates; ``reason`` is UNKNOWN_CODE or NO_RULE."""

    reason: str = UNKNOWN_CODE


def carried_concepts(resource: dict[str, Any]) -> set[str]:
    """The concepts an Observation's JSON carries (a panel: those of its known components)."""
    panel = concepts.panel_of(resource.get("code"))
    if panel is None:
        found = concepts.concept_of(resource.get("code"))
        return {found[0].key} if found is not None else set()
    components = resource.get("component")
    carried = set()
    for component in components if isinstance(components, list) else ():
        found = concepts.concept_of(component.get("code") if isinstance(component, dict) else None)
        if found is not None and found[0].key in panel.components:
            carried.add(found[0].key)
    return carried


def evaluated_concepts(config: PatientConfig, rule_set: RuleSet, at: datetime) -> set[str]:
    """The concepts the patient's enabled rules read at ``at`` (the catch-all rules aside)."""
    return {
        concept
        for rule in rule_set.for_programmes(set(config.programmes))
        if rule.kind in KINDS and is_enabled(rule, config, at)
        for concept in rule.concepts
        if concept != "*"
    }


def not_evaluated(
    resource: dict[str, Any], config: PatientConfig, rule_set: RuleSet, at: datetime
) -> NotEvaluated | None:
    """The warning for a vital-signs Observation that no rule of ``config`` evaluates, if any.

    None for anything else: another category, an entered-in-error version, or a code one of
    the patient's rules reads.
    """
    if (
        resource.get("resourceType") != "Observation"
        or resource.get("status") == "entered-in-error"
        or not concepts.is_vital_sign(resource)
    ):
        return None
    carried = carried_concepts(resource)
    if not carried:
        return NotEvaluated(
            "code-invalid",
            f"{_describe_code(resource.get('code'))} is not a measurement telemon's alert rules "
            "know: stored, but not evaluated by any alert rule",
            ("Observation.code",),
            "warning",
            UNKNOWN_CODE,
        )
    if carried & evaluated_concepts(config, rule_set, at):
        return None
    names = ", ".join(sorted(concepts.BY_KEY[c].title.lower() for c in carried))
    programmes = ", ".join(_PROGRAMME_NAMES.get(p, p) for p in sorted(config.programmes))
    return NotEvaluated(
        "informational",
        f"No alert rule of the patient's programmes ({programmes}) reads {names}: stored, but "
        "not evaluated by any alert rule",
        ("Observation.code",),
        "warning",
        NO_RULE,
    )


def _describe_code(code: Any) -> str:
    """``LOINC 39156-5 (Body mass index)``: the first coding, or the text, of a code."""
    if isinstance(code, dict):
        for coding in code.get("coding") or ():
            if isinstance(coding, dict) and coding.get("code"):
                system = str(coding.get("system", ""))
                name = _SYSTEM_NAMES.get(system, system or "code")
                display = f" ({coding['display']})" if coding.get("display") else ""
                return f"{name} {coding['code']}{display}"
        if code.get("text"):
            return f"The code '{code['text']}'"
    return "The code"
