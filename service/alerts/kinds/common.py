"""Helpers shared by the rule kinds: parameter access, number formatting, the "Sym" modifier."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from service.alerts.aggregation import present_symptoms
from service.alerts.days import day_start, local_day
from service.alerts.measurements import Measurement
from service.alerts.results import Limit
from service.alerts.rules import EvalContext, Params
from service.core.concepts import SYMPTOM_NAMES
from service.core.messages import has_message, limit_text, message, rule_title, when_text


class MissingParameter(KeyError):
    """A rule needs a parameter that has neither default nor override."""


def need(params: Params, name: str) -> float:
    """The numeric value of a required parameter."""
    value = params.get(name)
    if value is None:
        raise MissingParameter(name)
    return float(value)


def headline(ctx: EvalContext, finding: str, at: datetime, rule_id: str | None = None) -> str:
    """``{title}: {finding}, {when}``: the text leads with the rule's own title (its code)."""
    rule = rule_id or ctx.rule.id
    title = rule_title(rule, ctx.language, ctx.rule.title if rule == ctx.rule.id else rule)
    when = when_text(at, ctx.tz, ctx.language)
    return message("alert.headline", ctx.language, title=title, finding=finding, when=when)


def limit_of(limit: Limit, ctx: EvalContext) -> str:
    """The limit as a text shows it (``grens < 90 %``)."""
    return limit_text(limit.op, limit.value, limit.unit, ctx.language, personal=limit.personal)


def end_of_local_day(at: datetime, ctx: EvalContext) -> datetime:
    """The last moment of the anchor's local day, in UTC."""
    return day_start(local_day(at, ctx.tz) + timedelta(days=1), ctx.tz) - timedelta(microseconds=1)


def symptoms_for(
    params: Params, window: Sequence[Measurement], ctx: EvalContext
) -> list[Measurement]:
    """Qualifying symptoms for the "Sym" modifier (docs/alerts/rules.md#sym).

    Answers from the last ``symptom_hours`` or later on the same local day count: symptom
    questionnaires often arrive after the vitals and must be able to upgrade the alert.
    """
    codes = ctx.rule.options.get("symptom_codes")
    if not codes:
        return []
    at = ctx.anchor.effective
    hours = params.get("symptom_hours") or 24
    since = at - timedelta(hours=float(hours))
    return present_symptoms(window, since, end_of_local_day(at, ctx), codes)


def symptom_name(code: str, language: str) -> str:
    """A symptom's name in ``language`` (the concept table's display for unknown codes)."""
    key = f"symptom.{code}"
    return message(key, language) if has_message(key) else SYMPTOM_NAMES.get(code, code)


def symptom_phrase(symptoms: Sequence[Measurement], language: str) -> str:
    """``" met klachten (duizeligheid)"`` or the empty string."""
    if not symptoms:
        return ""
    names = sorted({symptom_name(m.detail or "", language) for m in symptoms})
    return " " + message("alert.with_symptoms", language, names=", ".join(names))


def ids(measurements: Sequence[Measurement]) -> tuple[str, ...]:
    """Observation ids, de-duplicated, in first-seen order."""
    return tuple(dict.fromkeys(m.observation_id for m in measurements))
