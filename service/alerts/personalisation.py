"""Parameters in force at a moment: programme defaults, then programme and patient overrides.

Every override has a validity period so that a threshold change applies from ``valid_from`` on
and never re-fires history (docs/alerts/engine.md#personal-thresholds).  Clinician Goals map
to overrides (dry weight, usual SpO2, personal limits).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from service.alerts.days import DEFAULT_TZ
from service.alerts.measurements import parse_instant
from service.alerts.rules import RuleDefinition
from service.alerts.units import UnsupportedUnit, to_canonical
from service.core import concepts
from service.core.messages import DEFAULT_LANGUAGE


@dataclass(frozen=True, slots=True)
class Override:
    """A parameter value set by a programme or clinician.

    ``rule_id`` None means "every rule that has this parameter" (dry weight, usual SpO2).
    """

    param: str
    value: float | None
    valid_from: datetime
    valid_to: datetime | None = None
    rule_id: str | None = None
    author: str | None = None
    source: str | None = None  # e.g. "Goal/123"

    def in_force(self, at: datetime) -> bool:
        """Whether the override applies at ``at``."""
        return self.valid_from <= at and (self.valid_to is None or at < self.valid_to)


@dataclass(frozen=True, slots=True)
class RuleToggle:
    """A per-patient enable/disable of one rule from ``valid_from``."""

    rule_id: str
    enabled: bool
    valid_from: datetime
    valid_to: datetime | None = None
    author: str | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    """A clinician-set pause (admission, holiday) that suppresses missing-data alerts."""

    start: datetime
    end: datetime | None = None
    reason: str = ""

    def covers(self, at: datetime) -> bool:
        """Whether ``at`` falls inside the pause."""
        return self.start <= at and (self.end is None or at < self.end)


@dataclass(frozen=True, slots=True)
class PatientConfig:
    """Everything patient-specific the engine needs besides measurements and episodes."""

    patient_id: str
    programmes: frozenset[str]  # {"HF"}, {"COPD"} or both
    programme_overrides: tuple[Override, ...] = ()
    overrides: tuple[Override, ...] = ()
    toggles: tuple[RuleToggle, ...] = ()
    pauses: tuple[Pause, ...] = ()
    tz: ZoneInfo = DEFAULT_TZ
    language: str = DEFAULT_LANGUAGE  # of the alert texts (TELEMON_LANGUAGE)


def _apply(
    params: dict[str, float | None], rule_id: str, layer: Iterable[Override], at: datetime
) -> None:
    # Within a layer the latest valid_from wins; a rule-specific override beats a generic one.
    in_force = sorted(
        (o for o in layer if o.in_force(at) and o.rule_id in (None, rule_id) and o.param in params),
        key=lambda o: (o.rule_id is not None, o.valid_from),
    )
    for override in in_force:
        params[override.param] = override.value


def effective_params(
    rule: RuleDefinition, config: PatientConfig, at: datetime
) -> dict[str, float | None]:
    """The rule's parameters in force at ``at`` (the measurement's effective time)."""
    params = rule.defaults()
    _apply(params, rule.id, config.programme_overrides, at)
    _apply(params, rule.id, config.overrides, at)
    return params


def is_enabled(rule: RuleDefinition, config: PatientConfig, at: datetime) -> bool:
    """Whether the rule runs for this patient at ``at`` (default, then latest toggle)."""
    toggles = sorted(
        (
            t
            for t in config.toggles
            if t.rule_id == rule.id
            and t.valid_from <= at
            and (t.valid_to is None or at < t.valid_to)
        ),
        key=lambda t: t.valid_from,
    )
    return toggles[-1].enabled if toggles else rule.enabled_by_default


def is_paused(config: PatientConfig, at: datetime) -> bool:
    """Whether a clinician pause covers ``at``."""
    return any(p.covers(at) for p in config.pauses)


# The concept of Goal.target.measure (any code of it in the concept table) -> which parameters
# a detailQuantity, or the low and high of a detailRange, set.  (rule_id None = patient-level
# value used by several rules.)
_Target = tuple[str | None, str]
GOAL_TARGETS: dict[str, dict[str, list[_Target]]] = {
    "weight": {"quantity": [(None, "dry_weight_kg")]},
    "spo2": {
        "quantity": [(None, "usual_spo2")],
        "low": [("HF-SPO2-LOW", "orange_below"), ("COPD-SPO2-ABS", "orange_below")],
    },
    "hr": {
        "low": [("HF-HR-LOW", "orange_below")],
        "high": [("HF-HR-HIGH", "orange_above"), ("COPD-HR-HIGH", "orange_at")],
    },
    "sbp": {"low": [("HF-SBP-LOW", "orange_below")], "high": [("HF-SBP-HIGH", "orange_above")]},
    "rr": {"high": [("COPD-RR-HIGH", "orange_at")]},
    "temp": {"high": [("COPD-TEMP", "orange_at")]},
    "nyha": {"quantity": [(None, "nyha_baseline")]},
    "pef": {"quantity": [(None, "pef_baseline")]},
    "cat": {"quantity": [(None, "cat_baseline")]},
    "ccq": {"quantity": [(None, "ccq_baseline")]},
}
_ACTIVE_GOAL = frozenset({"proposed", "planned", "accepted", "active", "on-hold"})


class GoalError(ValueError):
    """A Goal that cannot be turned into overrides."""


def _measure_concept(target: dict[str, Any]) -> str | None:
    """The concept of a Goal target's measure, when the rules take thresholds for it."""
    for system, code in concepts.codings(target.get("measure")):
        found = concepts.concept_by_code(system, code)
        if found is not None and found.key in GOAL_TARGETS:
            return found.key
    return None


def _canonical(concept: str, quantity: dict[str, Any]) -> float:
    value = float(quantity["value"])
    if concepts.BY_KEY[concept].value != "Quantity":  # NYHA class: the class number itself
        return value
    try:
        return to_canonical(concept, value, quantity.get("code", quantity.get("unit", "")))[0]
    except UnsupportedUnit as exc:
        raise GoalError(str(exc)) from exc


def overrides_from_goal(goal: dict[str, Any], recorded: datetime | None = None) -> list[Override]:
    """Map a FHIR Goal to patient overrides.

    ``target.measure`` picks the parameters; ``detailQuantity`` sets a value (dry weight, usual
    SpO2, NYHA class), ``detailRange`` low/high set personal limits.  Validity starts at
    ``startDate`` (else ``statusDate``, else ``recorded``); inactive Goals yield nothing.
    """
    if goal.get("resourceType") != "Goal":
        raise GoalError("not a Goal")
    if goal.get("lifecycleStatus") not in _ACTIVE_GOAL:
        return []
    start = goal.get("startDate") or goal.get("statusDate")
    valid_from = parse_instant(start)[0] if start else recorded
    if valid_from is None:
        raise GoalError("Goal has no startDate/statusDate and no recorded time was given")
    source = f"Goal/{goal['id']}" if "id" in goal else None
    author = (goal.get("expressedBy") or {}).get("reference")
    result: list[Override] = []
    for target in goal.get("target", []):
        concept = _measure_concept(target)
        if concept is None:
            continue
        slots = GOAL_TARGETS[concept]
        values: list[tuple[str, dict[str, Any]]] = []
        if "detailQuantity" in target:
            values.append(("quantity", target["detailQuantity"]))
        if "detailInteger" in target:
            values.append(("quantity", {"value": target["detailInteger"]}))
        for end in ("low", "high"):
            if end in target.get("detailRange", {}):
                values.append((end, target["detailRange"][end]))
        for slot, quantity in values:
            value = _canonical(concept, quantity)
            for rule_id, param in slots.get(slot, []):
                result.append(Override(param, value, valid_from, None, rule_id, author, source))
    return result
