"""COPD rules against personal baselines: SpO2 drop, CAT/CCQ rise, PEF ratio, Rome criteria."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from service.alerts.aggregation import of_concept
from service.alerts.baselines import previous_scores_baseline, reading_baseline
from service.alerts.days import local_day
from service.alerts.kinds.common import headline, ids, limit_of, need
from service.alerts.measurements import Measurement
from service.alerts.results import Baseline, Limit, RuleResult, Severity
from service.alerts.rules import EvalContext, Params
from service.core.messages import concept_name, message, number, quantity


def _spo2_baseline(
    params: Params, window: Sequence[Measurement], ctx: EvalContext
) -> Baseline | None:
    """Usual SpO2: clinician value, else the room-air median 14 d excluding the last 2."""
    readings = [m for m in of_concept(window, "spo2") if m.effective <= ctx.anchor.effective]
    return reading_baseline(
        readings,
        ctx.anchor.effective,
        ctx.tz,
        clinician_value=params.get("usual_spo2"),
        window_days=int(need(params, "window_days")),
        exclude_recent_days=int(need(params, "exclude_recent_days")),
        min_values=int(need(params, "min_values")),
        unit="%",
        room_air_only=True,
    )


def baseline_drop(
    params: Params, window: Sequence[Measurement], ctx: EvalContext
) -> RuleResult | None:
    """SpO2 ≤ baseline - drop_pts → orange; red on 2 consecutive days or with Anthonisen ≥ 2."""
    anchor = ctx.anchor
    if anchor.concept != "spo2" or anchor.on_supplemental_oxygen:
        return None  # on extra O2 the room-air baseline does not apply
    baseline = _spo2_baseline(params, window, ctx)
    if baseline is None:
        return None
    limit = baseline.value - need(params, "drop_pts")
    if anchor.value > limit:
        return None
    evidence = [anchor]
    reasons: list[str] = []
    yesterday = local_day(anchor.effective, ctx.tz) - timedelta(days=1)
    low_yesterday = [
        m
        for m in of_concept(window, "spo2")
        if local_day(m.effective, ctx.tz) == yesterday
        and not m.on_supplemental_oxygen
        and m.value <= limit
    ]
    lang = ctx.language
    if low_yesterday:
        evidence.append(low_yesterday[0])
        reasons.append(message("alert.also_yesterday", lang))
    since = anchor.effective - timedelta(hours=need(params, "anthonisen_hours"))
    items = {
        m.detail: m
        for m in of_concept(window, "anthonisen")
        if since <= m.effective <= anchor.effective
    }
    present = [m for m in items.values() if m.value >= 1]
    if len(present) >= need(params, "anthonisen_min"):
        evidence.extend(present)
        reasons.append(message("alert.with_anthonisen", lang, n=len(present)))
    bound = Limit("spo2", "<=", limit, "%", personal=True)
    finding = message(
        "alert.spo2_drop",
        lang,
        value=quantity(anchor.value, "%", lang),
        drop=number(baseline.value - anchor.value, lang),
        baseline=baseline.shown(lang),
        limit=limit_of(bound, ctx),
        reasons="".join(f"; {r}" for r in reasons),
    )
    return RuleResult(
        rule_id=ctx.rule.id,
        severity=Severity.RED if reasons else Severity.ORANGE,
        text=headline(ctx, finding, anchor.effective),
        evidence=ids(evidence),
        triggered_at=anchor.effective,
        baseline=baseline,
        detail=baseline.describe(lang),
        limit=bound,
    )


def score_rise(
    params: Params, window: Sequence[Measurement], ctx: EvalContext
) -> RuleResult | None:
    """Score >= baseline + big_rise once, or >= baseline + small_rise on consecutive assessments.

    The baseline is the clinician value or the median of the assessments before the ones judged.
    """
    anchor = ctx.anchor
    concept = ctx.rule.concepts[0]
    if anchor.concept != concept:
        return None
    history = [m for m in of_concept(window, concept) if m.effective < anchor.effective]
    clinician = params.get(ctx.rule.options.get("baseline_param", ""))
    count = int(need(params, "baseline_count"))
    lang = ctx.language
    label = concept_name(concept, lang, concept.upper())
    # Scores have no unit in texts ("CAT 22", not "22 points").
    baseline = previous_scores_baseline(history, clinician_value=clinician, count=count, unit="")
    big = need(params, "big_rise")
    if baseline is not None and anchor.value - baseline.value >= big:
        bound = Limit(concept, ">=", baseline.value + big, "", personal=True)
        finding = message(
            "alert.score_rise",
            lang,
            what=label,
            value=number(anchor.value, lang),
            rise=number(anchor.value - baseline.value, lang),
            baseline=baseline.shown(lang),
            limit=limit_of(bound, ctx),
        )
        return _at_anchor(ctx, Severity.ORANGE, finding, baseline, bound)
    run_length = int(need(params, "consecutive"))
    earlier = len(history) - (run_length - 1)
    if earlier < 0:
        return None
    run = [*history[earlier:], anchor]
    baseline = previous_scores_baseline(
        history[:earlier], clinician_value=clinician, count=count, unit=""
    )
    small = need(params, "small_rise")
    if baseline is None or any(m.value < baseline.value + small for m in run):
        return None
    bound = Limit(concept, ">=", baseline.value + small, "", personal=True)
    finding = message(
        "alert.score_run",
        lang,
        what=label,
        values=", ".join(number(m.value, lang) for m in run),
        n=run_length,
        rise=number(small, lang),
        baseline=baseline.shown(lang),
        limit=limit_of(bound, ctx),
    )
    return RuleResult(
        ctx.rule.id,
        Severity.ORANGE,
        headline(ctx, finding, anchor.effective),
        ids(run),
        anchor.effective,
        baseline=baseline,
        detail=baseline.describe(lang),
        limit=bound,
    )


def baseline_ratio(
    params: Params, window: Sequence[Measurement], ctx: EvalContext
) -> RuleResult | None:
    """PEF below info/orange percentages of the personal baseline (COPD-PEF-DROP, opt-in)."""
    anchor = ctx.anchor
    if anchor.concept != "pef":
        return None
    readings = [m for m in of_concept(window, "pef") if m.effective <= anchor.effective]
    baseline = reading_baseline(
        readings,
        anchor.effective,
        ctx.tz,
        clinician_value=params.get("pef_baseline"),
        window_days=int(need(params, "window_days")),
        exclude_recent_days=int(need(params, "exclude_recent_days")),
        min_values=int(need(params, "min_values")),
        unit="L/min",
    )
    if baseline is None or baseline.value <= 0:
        return None
    pct = anchor.value / baseline.value * 100
    if pct < need(params, "orange_below_pct"):
        severity, bound_pct = Severity.ORANGE, need(params, "orange_below_pct")
    elif pct < need(params, "info_below_pct"):
        severity, bound_pct = Severity.INFO, need(params, "info_below_pct")
    else:
        return None
    lang = ctx.language
    bound = Limit("pef", "<", baseline.value * bound_pct / 100, "L/min", personal=True)
    finding = message(
        "alert.pef",
        lang,
        value=quantity(anchor.value, "L/min", lang),
        pct=quantity(round(pct), "%", lang),
        baseline=baseline.shown(lang),
        limit=limit_of(bound, ctx),
    )
    return _at_anchor(ctx, severity, finding, baseline, bound)


def _at_anchor(
    ctx: EvalContext, severity: Severity, finding: str, baseline: Baseline, limit: Limit
) -> RuleResult:
    """A result resting on the anchor alone, against a personal baseline."""
    anchor = ctx.anchor
    return RuleResult(
        ctx.rule.id,
        severity,
        headline(ctx, finding, anchor.effective),
        (anchor.observation_id,),
        anchor.effective,
        baseline=baseline,
        detail=baseline.describe(ctx.language),
        limit=limit,
    )


def criteria_count(
    params: Params, window: Sequence[Measurement], ctx: EvalContext
) -> RuleResult | None:
    """≥ min_criteria Rome criteria within window_hours → red (COPD-ROME-COMPOSITE)."""
    at = ctx.anchor.effective
    since = at - timedelta(hours=need(params, "window_hours"))
    recent = [m for m in window if since <= m.effective <= at]

    def worst(concept: str, high: bool) -> Measurement | None:
        values = of_concept(recent, concept)
        if not values:
            return None
        return max(values, key=lambda m: m.value) if high else min(values, key=lambda m: m.value)

    lang = ctx.language
    met: list[tuple[str, Measurement]] = []
    for concept, param, unit in (("dyspnoea", "dyspnoea_at", "/10"), ("rr", "rr_at", "/min"), (
        "hr", "hr_at", "/min"
    )):
        m = worst(concept, high=True)
        if m is not None and m.value >= need(params, param):
            shown = f"{concept_name(concept, lang)} {quantity(m.value, unit, lang)}"
            met.append((shown, m))
    spo2 = worst("spo2", high=False)
    baseline = _spo2_baseline(params, window, ctx)
    if spo2 is not None:
        dropped = baseline is not None and baseline.value - spo2.value > need(
            params, "spo2_drop_above"
        )
        if spo2.value < need(params, "spo2_below") or dropped:
            met.append((f"SpO2 {quantity(spo2.value, '%', lang)}", spo2))
    if len(met) < need(params, "min_criteria"):
        return None
    finding = message(
        "alert.criteria",
        lang,
        n=len(met),
        hours=number(need(params, "window_hours"), lang),
        items=", ".join(label for label, _ in met),
    )
    return RuleResult(
        ctx.rule.id,
        Severity.RED,
        headline(ctx, finding, at),
        ids([m for _, m in met]),
        at,
        baseline=baseline,
        detail=baseline.describe(lang) if baseline is not None else "",
    )
