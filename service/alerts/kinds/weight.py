"""Weight rules on the first weight of each local day: HF-WT-1D/3D, HF-WT-BASE, HF-WT-LOSS."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from service.alerts.aggregation import daily_first, of_concept
from service.alerts.baselines import daily_value_baseline
from service.alerts.days import local_day
from service.alerts.kinds.common import (
    end_of_local_day,
    ids,
    need,
    signed,
    symptom_phrase,
    symptoms_for,
)
from service.alerts.measurements import Measurement
from service.alerts.results import Baseline, RuleResult, Severity
from service.alerts.rules import EvalContext, Params


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


def _days_text(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


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
    if gain <= need(params, "delta_kg"):
        return None
    symptoms = symptoms_for(params, window, ctx)
    elapsed = (day - local_day(ref.effective, ctx.tz)).days
    text = (
        f"Weight {signed(gain)} kg in {_days_text(elapsed)} "
        f"({ref.value:.1f} → {today.value:.1f} kg){symptom_phrase(symptoms)}"
    )
    return RuleResult(
        rule_id=ctx.rule.id,
        severity=Severity.RED if symptoms else Severity.ORANGE,
        text=text,
        evidence=ids([today, ref, *symptoms]),
        triggered_at=today.effective,
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
    if baseline is None:  # a new patient: only the day-to-day rules run (§7.7)
        return None
    gain = today.value - baseline.value
    if gain < need(params, "delta_kg"):
        return None
    symptoms = symptoms_for(params, window, ctx)
    red = gain >= need(params, "red_delta_kg") or bool(symptoms)
    text = (
        f"Weight {today.value:.1f} kg, {signed(gain)} kg vs baseline "
        f"{baseline.describe()}{symptom_phrase(symptoms)}"
    )
    return RuleResult(
        rule_id=ctx.rule.id,
        severity=Severity.RED if red else Severity.ORANGE,
        text=text,
        evidence=ids([today, *symptoms]),
        triggered_at=today.effective,
        baseline=baseline,
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
    reasons: list[str] = []
    evidence = [today]
    baseline = _weight_baseline(params, daily, day)
    if baseline is not None and today.value <= baseline.value - need(params, "below_baseline_kg"):
        reasons.append(
            f"{signed(today.value - baseline.value)} kg vs baseline {baseline.describe()}"
        )
    span = int(need(params, "fall_days"))
    earlier = [daily[d] for k in range(1, span + 1) if (d := day - timedelta(days=k)) in daily]
    if earlier:
        ref = max(earlier, key=lambda m: m.value)
        if ref.value - today.value > need(params, "fall_kg"):
            elapsed = (day - local_day(ref.effective, ctx.tz)).days
            reasons.append(
                f"{signed(today.value - ref.value)} kg in {_days_text(elapsed)} "
                f"({ref.value:.1f} → {today.value:.1f} kg)"
            )
            evidence.append(ref)
    if not reasons:
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
        extra = f"; SBP {min(m.value for m in low_sbp):.0f} mmHg"
    if dizzy:
        severity = Severity.ORANGE
        evidence.extend(dizzy)
        extra += symptom_phrase(dizzy)
    return RuleResult(
        rule_id=ctx.rule.id,
        severity=severity,
        text=f"Weight loss: {'; '.join(reasons)}{extra}",
        evidence=ids(evidence),
        triggered_at=today.effective,
        baseline=baseline,
    )
