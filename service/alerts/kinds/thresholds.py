"""Absolute thresholds per reading (BP, HR, SpO2, RR, temperature), bands declared in data.

Each band in the rule's ``options.bands`` names a concept, an operator, the parameter holding
the limit and a severity; ``with_symptom`` bands apply only when "Sym" holds.  The worst
matching band wins.  Rules with ``baseline_rise_pct`` also raise ``info`` when the reading is
that far above the personal median on consecutive days (HF/COPD-HR-HIGH).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from service.alerts.aggregation import mean_within, of_concept
from service.alerts.baselines import reading_baseline
from service.alerts.days import local_day
from service.alerts.kinds.common import (
    headline,
    ids,
    limit_of,
    need,
    symptom_phrase,
    symptoms_for,
)
from service.alerts.measurements import Measurement
from service.alerts.results import Baseline, Limit, RuleResult, Severity
from service.alerts.rules import EvalContext, Params
from service.core.concepts import BY_KEY
from service.core.messages import concept_name, message, number, quantity

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
# Repeated BP readings are averaged within 10 min; other vitals count per reading.
_SPANS = {"mean-10min": timedelta(minutes=10), "per-reading": timedelta(0)}


def _value_at(
    window: Sequence[Measurement], concept: str, ctx: EvalContext
) -> tuple[float, list[Measurement]] | None:
    span = _SPANS.get(ctx.rule.aggregation, timedelta(0))
    found = mean_within(window, concept, ctx.anchor.effective, span)
    if found is None or span:
        return found
    # Per reading: only the anchor's own observation counts.
    used = [m for m in found[1] if m.observation_id == ctx.anchor.observation_id]
    return (used[-1].value, used) if used else None


def threshold(params: Params, window: Sequence[Measurement], ctx: EvalContext) -> RuleResult | None:
    """The worst band matched by the reading (mean) at the anchor, else the baseline rise."""
    if ctx.rule.options.get("skip_on_oxygen") and ctx.anchor.on_supplemental_oxygen:
        return None  # not comparable with room-air limits
    symptoms: list[Measurement] | None = None
    best: tuple[Severity, str, list[Measurement], Limit] | None = None
    for band in ctx.rule.options.get("bands", []):
        hit = _band(band, params, window, ctx)
        if hit is None:
            continue
        if band.get("with_symptom"):
            symptoms = symptoms_for(params, window, ctx) if symptoms is None else symptoms
            if not symptoms:
                continue
            phrase = symptom_phrase(symptoms, ctx.language)
            hit = (hit[0], hit[1] + phrase, hit[2] + symptoms, hit[3])
        if best is None or hit[0] > best[0]:
            best = hit
    if best is not None:
        severity, finding, used, limit = best
        text = headline(ctx, finding, ctx.anchor.effective)
        return RuleResult(
            ctx.rule.id, severity, text, ids(used), ctx.anchor.effective, limit=limit
        )
    if params.get("baseline_rise_pct") is not None:
        return _baseline_rise(params, window, ctx)
    return None


def _band(
    band: dict[str, Any], params: Params, window: Sequence[Measurement], ctx: EvalContext
) -> tuple[Severity, str, list[Measurement], Limit] | None:
    """(severity, finding, readings used, limit) when the band matches."""
    bound = params.get(band["param"])
    found = _value_at(window, band["concept"], ctx)
    if bound is None or found is None:
        return None
    value, used = found
    if not _OPS[band["op"]](value, bound):
        return None
    concept = band["concept"]
    unit = used[0].unit
    lang = ctx.language
    personal = band["param"] in ctx.personal_params
    limit = Limit(concept, band["op"], bound, unit, personal=personal)
    mean = f", {message('alert.mean_of', lang, n=len(used))}" if len(used) > 1 else ""
    finding = message(
        "alert.threshold",
        lang,
        what=concept_name(concept, lang, BY_KEY[concept].label),
        value=quantity(value, unit, lang),
        limit=limit_of(limit, ctx),
        mean=mean,
    )
    return Severity.parse(band["severity"]), finding, used, limit


def _baseline_rise(
    params: Params, window: Sequence[Measurement], ctx: EvalContext
) -> RuleResult | None:
    """Info when the reading and the last one of each preceding day are ≥ baseline + pct."""
    concept = ctx.rule.concepts[0]
    readings = [m for m in of_concept(window, concept) if m.effective <= ctx.anchor.effective]
    baseline: Baseline | None = reading_baseline(
        readings,
        ctx.anchor.effective,
        ctx.tz,
        clinician_value=None,
        window_days=int(need(params, "window_days")),
        exclude_recent_days=int(need(params, "exclude_recent_days")),
        min_values=int(need(params, "min_values")),
        unit=ctx.anchor.unit,
    )
    if baseline is None or ctx.anchor.concept != concept:
        return None
    limit = baseline.value * (1 + need(params, "baseline_rise_pct") / 100)
    day = local_day(ctx.anchor.effective, ctx.tz)
    run: list[Measurement] = [ctx.anchor]
    for back in range(1, int(need(params, "baseline_days_in_row"))):
        wanted = day - timedelta(days=back)
        that_day = [m for m in readings if local_day(m.effective, ctx.tz) == wanted]
        if not that_day:
            return None
        run.append(that_day[-1])
    if any(m.value < limit for m in run):
        return None
    lang = ctx.language
    unit = ctx.anchor.unit
    bound = Limit(concept, ">=", limit, unit, personal=True)
    finding = message(
        "alert.rise",
        lang,
        what=concept_name(concept, lang, BY_KEY[concept].label),
        value=quantity(ctx.anchor.value, unit, lang),
        days=len(run),
        pct=quantity(need(params, "baseline_rise_pct"), "%", lang),
        baseline=baseline.shown(lang),
        limit=limit_of(bound, ctx),
    )
    values = ", ".join(number(m.value, lang) for m in reversed(run))
    detail = f"{baseline.describe(lang)}; {message('alert.rise_detail', lang, values=values)}"
    return RuleResult(
        ctx.rule.id,
        Severity.INFO,
        headline(ctx, finding, ctx.anchor.effective),
        ids(run),
        ctx.anchor.effective,
        baseline=baseline,
        detail=detail,
        limit=bound,
    )
