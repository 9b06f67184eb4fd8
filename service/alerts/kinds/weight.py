"""Weight rules on the first weight of each local day: HF-WT-1D/3D, HF-WT-BASE, HF-WT-LOSS."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from service.alerts.aggregation import daily_first, of_concept
from service.alerts.baselines import daily_value_baseline
from service.alerts.days import local_day
from service.alerts.kinds.common import (
    end_of_local_day,
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
from service.core.messages import day_text, days_text, message, quantity


def _today(
    window: Sequence[Measurement], ctx: EvalContext
) -> tuple[dict[date, Measurement], date, Measurement] | None:
    """The daily weights, the anchor's day and that day's weight (None if the anchor isn't it)."""
    daily = daily_first(window, "weight", ctx.tz)
    day = local_day(ctx.anchor.effective, ctx.tz)
    today = daily.get(day)
    # Only the first weight of the day is evaluated; later ones of the same day change nothing.
    if today is None or today.observation_id != ctx.anchor.observation_id:
        return None
    return daily, day, today


def weight_gain_days(
    params: Params, window: Sequence[Measurement], ctx: EvalContext
) -> RuleResult | None:
    """daily_weight(d) - min(daily_weight(d-days..d-1)) > delta_kg; red with symptoms."""
    found = _today(window, ctx)
    if found is None:
        return None
    daily, day, today = found
    span = int(need(params, "days"))
    earlier = [daily[d] for k in range(1, span + 1) if (d := day - timedelta(days=k)) in daily]
    if not earlier:
        return None
    ref = min(earlier, key=lambda m: m.value)
    gain = today.value - ref.value
    delta = need(params, "delta_kg")
    if gain <= delta:
        return None
    symptoms = symptoms_for(params, window, ctx)
    lang = ctx.language
    # The rule's span, not the days since the lowest weight: the title says "in 3 days" too.
    limit = Limit("weight", ">", ref.value + delta, "kg", since=ref.effective)
    finding = message(
        "alert.weight_gain",
        lang,
        gain=quantity(gain, "kg", lang, sign=True),
        limit=message("alert.limit", lang, op=">", value=quantity(delta, "kg", lang, sign=True)),
        symptoms=symptom_phrase(symptoms, lang),
    )
    detail = message(
        "alert.weight_gain_detail",
        lang,
        today=quantity(today.value, "kg", lang),
        days=days_text(span, lang),
        ref=quantity(ref.value, "kg", lang),
        ref_day=day_text(ref.effective, ctx.tz, lang),
    )
    return RuleResult(
        rule_id=ctx.rule.id,
        severity=Severity.RED if symptoms else Severity.ORANGE,
        text=headline(ctx, finding, today.effective),
        evidence=ids([today, ref, *symptoms]),
        triggered_at=today.effective,
        detail=detail,
        limit=limit,
    )


def _weight_baseline(params: Params, daily: dict[date, Measurement], day: date) -> Baseline | None:
    return daily_value_baseline(
        daily,
        day,
        clinician_value=params.get("dry_weight_kg"),
        window_days=int(need(params, "window_days")),
        exclude_recent_days=int(need(params, "exclude_recent_days")),
        min_values=int(need(params, "min_values")),
        unit="kg",
    )


def weight_above_baseline(
    params: Params, window: Sequence[Measurement], ctx: EvalContext
) -> RuleResult | None:
    """daily_weight(d) - baseline ≥ delta_kg → orange; ≥ red_delta_kg or symptoms → red."""
    found = _today(window, ctx)
    if found is None:
        return None
    daily, day, today = found
    baseline = _weight_baseline(params, daily, day)
    if baseline is None:  # a new patient: only the day-to-day rules run
        return None
    gain = today.value - baseline.value
    delta = need(params, "delta_kg")
    if gain < delta:
        return None
    symptoms = symptoms_for(params, window, ctx)
    red = gain >= need(params, "red_delta_kg") or bool(symptoms)
    lang = ctx.language
    limit = Limit("weight", ">=", baseline.value + delta, "kg", personal=True)
    finding = message(
        "alert.weight_base",
        lang,
        value=quantity(today.value, "kg", lang),
        gain=quantity(gain, "kg", lang, sign=True),
        baseline=baseline.shown(lang),
        limit=limit_of(limit, ctx),
        symptoms=symptom_phrase(symptoms, lang),
    )
    return RuleResult(
        rule_id=ctx.rule.id,
        severity=Severity.RED if red else Severity.ORANGE,
        text=headline(ctx, finding, today.effective),
        evidence=ids([today, *symptoms]),
        triggered_at=today.effective,
        baseline=baseline,
        detail=baseline.describe(lang),
        limit=limit,
    )


def weight_loss(
    params: Params, window: Sequence[Measurement], ctx: EvalContext
) -> RuleResult | None:
    """Below baseline - below_baseline_kg, or a fall > fall_kg in fall_days → info.

    Orange when the same day also shows SBP below ``sbp_below`` or dizziness.
    """
    found = _today(window, ctx)
    if found is None:
        return None
    daily, day, today = found
    lang = ctx.language
    findings: list[tuple[str, str, Limit]] = []  # (finding, detail, limit)
    evidence = [today]
    value = quantity(today.value, "kg", lang)
    baseline = _weight_baseline(params, daily, day)
    below = need(params, "below_baseline_kg")
    if baseline is not None and today.value <= baseline.value - below:
        limit = Limit("weight", "<=", baseline.value - below, "kg", personal=True)
        finding = message(
            "alert.weight_loss_base",
            lang,
            value=value,
            change=quantity(today.value - baseline.value, "kg", lang, sign=True),
            baseline=baseline.shown(lang),
            limit=limit_of(limit, ctx),
        )
        findings.append((finding, baseline.describe(lang), limit))
    span = int(need(params, "fall_days"))
    earlier = [daily[d] for k in range(1, span + 1) if (d := day - timedelta(days=k)) in daily]
    if earlier:
        ref = max(earlier, key=lambda m: m.value)
        fall = need(params, "fall_kg")
        if ref.value - today.value > fall:
            limit = Limit("weight", "<", ref.value - fall, "kg", since=ref.effective)
            finding = message(
                "alert.weight_loss_fall",
                lang,
                value=value,
                change=quantity(today.value - ref.value, "kg", lang, sign=True),
                days=days_text(span, lang),
                limit=message(
                    "alert.limit", lang, op="<", value=quantity(-fall, "kg", lang, sign=True)
                ),
            )
            detail = message(
                "alert.weight_loss_fall_detail",
                lang,
                days=days_text(span, lang),
                ref=quantity(ref.value, "kg", lang),
                ref_day=day_text(ref.effective, ctx.tz, lang),
            )
            findings.append((finding, detail, limit))
            evidence.append(ref)
    if not findings:
        return None
    severity = Severity.INFO
    since, until = today.effective - timedelta(hours=24), end_of_local_day(today.effective, ctx)
    low_sbp = [
        m
        for m in of_concept(window, "sbp")
        if since <= m.effective <= until and m.value < need(params, "sbp_below")
    ]
    dizzy = symptoms_for(params, window, ctx)
    extra = ""
    if low_sbp:
        severity = Severity.ORANGE
        evidence.extend(low_sbp)
        lowest = quantity(min(m.value for m in low_sbp), "mmHg", lang)
        extra = "; " + message("alert.low_sbp_same_day", lang, value=lowest)
    if dizzy:
        severity = Severity.ORANGE
        evidence.extend(dizzy)
        extra += symptom_phrase(dizzy, lang)
    finding = "; ".join(f for f, _, _ in findings) + extra
    return RuleResult(
        rule_id=ctx.rule.id,
        severity=severity,
        text=headline(ctx, finding, today.effective),
        evidence=ids(evidence),
        triggered_at=today.effective,
        baseline=baseline,
        detail="; ".join(d for _, d, _ in findings),
        limit=findings[0][2],
    )
