"""Rule sets as versioned data, and the context rule functions receive.

The default rule set is documented per rule in docs/alerts/rules.md.

Rule definitions live in ``rules/*.json`` next to this module; code never branches on a rule id.
Each rule names a *kind*; :data:`service.alerts.kinds.KINDS` maps kinds to pure functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from service.alerts.days import DEFAULT_TZ
from service.alerts.measurements import Measurement
from service.alerts.results import RuleResult, Severity
from service.core.messages import DEFAULT_LANGUAGE

RULES_DIR = Path(__file__).parent / "rules"

Params = Mapping[str, float | None]


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """A rule parameter: its default, unit and where the number comes from."""

    default: float | None
    unit: str
    mark: str  # C confirmed, R recalled, P proposal (docs/alerts/sources.md)
    source: str


@dataclass(frozen=True, slots=True)
class RuleDefinition:
    """One rule of the rule set, as read from the data files."""

    id: str
    version: int
    programme: str  # HF, COPD or GEN
    title: str
    kind: str
    concepts: tuple[str, ...]
    params: Mapping[str, ParamSpec]
    severities: tuple[Severity, ...]
    cooldown_hours: float
    aggregation: str  # first-of-day, mean-10min, per-reading, window, schedule
    enabled_by_default: bool
    merge_group: str | None = None
    # Kind-specific structure (threshold bands, symptom codes...), not clinician parameters.
    options: Mapping[str, Any] = field(default_factory=dict)

    def defaults(self) -> dict[str, float | None]:
        """The programme default of every parameter."""
        return {name: spec.default for name, spec in self.params.items()}


@dataclass(frozen=True, slots=True)
class RuleSet:
    """A versioned collection of rules."""

    version: str
    rules: tuple[RuleDefinition, ...]

    def get(self, rule_id: str) -> RuleDefinition:
        """The rule with id ``rule_id`` (KeyError if absent)."""
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def for_programmes(self, programmes: set[str]) -> list[RuleDefinition]:
        """Rules of the given programmes plus the GEN rules, in file order."""
        return [r for r in self.rules if r.programme in programmes or r.programme == "GEN"]


@dataclass(frozen=True, slots=True)
class EvalContext:
    """What a rule function may know besides its parameters and window."""

    anchor: Measurement  # the measurement the rule is evaluated at
    rule: RuleDefinition
    tz: ZoneInfo = DEFAULT_TZ
    # Evaluate another rule at the same anchor (composites); None when no evaluation is possible.
    evaluate_other: Callable[[str, Measurement], RuleResult | None] | None = None
    language: str = DEFAULT_LANGUAGE  # of the alert texts (TELEMON_LANGUAGE)
    # Parameters set for this patient (a clinician's Goal), not programme defaults.
    personal_params: frozenset[str] = frozenset()


RuleFunction = Callable[[Params, "list[Measurement]", EvalContext], RuleResult | None]


def _rule(raw: dict[str, Any]) -> RuleDefinition:
    params = {
        name: ParamSpec(
            default=spec.get("default"),
            unit=spec.get("unit", ""),
            mark=spec.get("mark", "P"),
            source=spec.get("source", ""),
        )
        for name, spec in raw.get("params", {}).items()
    }
    return RuleDefinition(
        id=raw["id"],
        version=int(raw["version"]),
        programme=raw["programme"],
        title=raw["title"],
        kind=raw["kind"],
        concepts=tuple(raw.get("concepts", ())),
        params=params,
        severities=tuple(Severity.parse(s) for s in raw["severities"]),
        cooldown_hours=float(raw.get("cooldown_hours", 24)),
        aggregation=raw.get("aggregation", "per-reading"),
        enabled_by_default=bool(raw.get("enabled", True)),
        merge_group=raw.get("merge_group"),
        options=raw.get("options", {}),
    )


def load_rule_set(path: Path) -> RuleSet:
    """Read a rule-set JSON file (``{"version": ..., "rules": [...]}``)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return RuleSet(version=data["version"], rules=tuple(_rule(r) for r in data["rules"]))


@cache
def default_rule_set() -> RuleSet:
    """The shipped default rule set (``rules/default.json``)."""
    return load_rule_set(RULES_DIR / "default.json")
