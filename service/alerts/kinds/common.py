"""Helpers shared by the rule kinds: parameter access, number formatting, the "Sym" modifier."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from service.alerts.aggregation import present_symptoms
from service.alerts.days import day_start, local_day
from service.alerts.measurements import Measurement
from service.alerts.rules import EvalContext, Params
from service.concepts import SYMPTOM_NAMES


class MissingParameter(KeyError):
    """A rule needs a parameter that has neither default nor override."""


def need(params: Params, name: str) -> float:
    """The numeric value of a required parameter."""
    value = params.get(name)
    if value is None:
        raise MissingParameter(name)
    return float(value)


def num(value: float) -> str:
    """A number for alert texts: at most one decimal, no trailing ``.0``."""
    return f"{round(value, 1):g}"


def signed(value: float) -> str:
    """A one-decimal number with an explicit sign (``+2.4``)."""
    return f"{value:+.1f}"


def end_of_local_day(at: datetime, ctx: EvalContext) -> datetime:
    """The last moment of the anchor's local day, in UTC."""
    return day_start(local_day(at, ctx.tz) + timedelta(days=1), ctx.tz) - timedelta(microseconds=1)


def symptoms_for(
    params: Params, window: Sequence[Measurement], ctx: EvalContext
) -> list[Measurement]:
    """Qualifying symptoms for the "Sym" modifier (§6).

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


def symptom_phrase(symptoms: Sequence[Measurement]) -> str:
    """``" with symptoms (dizziness)"`` or the empty string."""
    if not symptoms:
        return ""
    names = sorted({SYMPTOM_NAMES.get(m.detail or "", m.detail or "symptom") for m in symptoms})
    return f" with symptoms ({', '.join(names)})"


def ids(measurements: Sequence[Measurement]) -> tuple[str, ...]:
    """Observation ids, de-duplicated, in first-seen order."""
    return tuple(dict.fromkeys(m.observation_id for m in measurements))
