"""The limits drawn on a patient's charts, from the rule set and the patient's personalisation.

Nothing here holds a number of its own: the alert limits are the ``bands`` of the threshold
rules with the parameters in force for this patient (:func:`effective_params`: programme
defaults, then the clinician's Goals), and the personal reference values (dry weight, usual
SpO2, CAT baseline) are the patient-level overrides that Goals set. Bands that apply only with
symptoms are not drawn: they are not a limit of the measurement alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from service.alerts.personalisation import (
    GOAL_TARGETS,
    Override,
    PatientConfig,
    effective_params,
    is_enabled,
)
from service.alerts.rules import RuleDefinition
from service.core import concepts
from service.core.messages import concept_name, has_message, message

#: Line levels from least to most severe; "reference" is a personal value, not an alert limit.
LEVELS = ("reference", "info", "orange", "red")


@dataclass(frozen=True, slots=True)
class ThresholdLine:
    """A horizontal line on the charts of one concept."""

    concept: str
    value: float
    level: str  # one of LEVELS
    label: str
    personal: bool = False  # set by the patient's Goals rather than the programme default


def _format(value: float) -> str:
    return f"{value:g}"


def alert_limits(
    config: PatientConfig, rules: Iterable[RuleDefinition], at: datetime, language: str = "en"
) -> list[ThresholdLine]:
    """The limits of the patient's enabled threshold rules in force at ``at`` (labels in
    ``language``)."""
    lines: list[ThresholdLine] = []
    for rule in rules:
        bands = rule.options.get("bands") or []
        if not bands or not is_enabled(rule, config, at):
            continue
        params = effective_params(rule, config, at)
        defaults = rule.defaults()
        for band in bands:
            value = params.get(band["param"])
            if band.get("with_symptom") or value is None:
                continue
            concept = band["concept"]
            label = concepts.BY_KEY[concept].label if concept in concepts.BY_KEY else concept
            name = concept_name(concept, language, label)
            lines.append(
                ThresholdLine(
                    concept,
                    float(value),
                    band["severity"],
                    f"{name} {band['op']} {_format(value)} ({rule.id})",
                    personal=value != defaults.get(band["param"]),
                )
            )
    return merge(lines)


def _concept_of_param(param: str) -> str | None:
    """The measured concept of a patient-level parameter that a Goal sets (dry weight → weight)."""
    for concept, slots in GOAL_TARGETS.items():
        if any(rule is None and name == param for rule, name in slots.get("quantity", [])):
            return concept
    return None


def personal_references(
    config: PatientConfig, at: datetime, language: str = "en"
) -> list[ThresholdLine]:
    """The patient-level values from Goals in force at ``at`` (the latest per parameter)."""
    latest: dict[str, Override] = {}
    for override in sorted(config.overrides, key=lambda o: o.valid_from):
        if override.rule_id is None and override.in_force(at) and override.value is not None:
            latest[override.param] = override
    lines = []
    for param, override in latest.items():
        concept = _concept_of_param(param)
        if concept is None or override.value is None:
            continue
        unit = concepts.BY_KEY[concept].shown_unit
        what = param.removesuffix("_kg").replace("_", " ")
        if has_message(f"param.{param}"):
            what = message(f"param.{param}", language)
        source = f", {override.source}" if override.source else ""
        personal = message("ui.personal", language)
        label = f"{what} {_format(override.value)} {unit} ({personal}{source})".replace("  ", " ")
        lines.append(ThresholdLine(concept, override.value, "reference", label, personal=True))
    return lines


def merge(lines: Sequence[ThresholdLine]) -> list[ThresholdLine]:
    """One line per (concept, value): the most severe level, the labels joined."""
    merged: dict[tuple[str, float], ThresholdLine] = {}
    for line in lines:
        key = (line.concept, line.value)
        seen = merged.get(key)
        if seen is None:
            merged[key] = line
            continue
        worst = max(seen.level, line.level, key=LEVELS.index)
        label = seen.label if line.label in seen.label else f"{seen.label}; {line.label}"
        merged[key] = ThresholdLine(
            line.concept, line.value, worst, label, seen.personal or line.personal
        )
    return sorted(merged.values(), key=lambda line: (line.concept, line.value))


def patient_lines(
    config: PatientConfig, rules: Iterable[RuleDefinition], at: datetime, language: str = "en"
) -> list[ThresholdLine]:
    """Every line for the patient's charts: alert limits and personal reference values."""
    return [
        *alert_limits(config, rules, at, language),
        *personal_references(config, at, language),
    ]
