"""HF-COMBO: several independent signs of worsening heart failure within 72 h → red."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from service.alerts.aggregation import of_concept
from service.alerts.baselines import reading_baseline
from service.alerts.kinds.common import ids, need, num
from service.alerts.measurements import Measurement
from service.alerts.results import RuleResult, Severity
from service.alerts.rules import EvalContext, Params


def composite(params: Params, window: Sequence[Measurement], ctx: EvalContext) -> RuleResult | None:
    """≥ min_criteria of {component rules firing, SBP drop vs baseline} in window_hours."""
    at = ctx.anchor.effective
    since = at - timedelta(hours=need(params, "window_hours"))
    recent = [m for m in window if since <= m.effective <= at]
    met: list[RuleResult] = []
    if ctx.evaluate_other is not None:
        for rule_id in ctx.rule.options.get("component_rules", []):
            # The latest qualifying evaluation of each component counts once.
            for m in reversed(recent):
                result = ctx.evaluate_other(rule_id, m)
                if result is not None:
                    met.append(result)
                    break
    drop = _sbp_drop(params, window, recent, ctx)
    if drop is not None:
        met.append(drop)
    if len(met) < need(params, "min_criteria"):
        return None
    evidence = tuple(dict.fromkeys(e for r in met for e in r.evidence))
    text = f"{len(met)} signs of worsening within {num(need(params, 'window_hours'))} h: " + (
        "; ".join(f"{r.rule_id}: {r.text}" for r in met)
    )
    return RuleResult(ctx.rule.id, Severity.RED, text, evidence, at)


def _sbp_drop(
    params: Params,
    window: Sequence[Measurement],
    recent: Sequence[Measurement],
    ctx: EvalContext,
) -> RuleResult | None:
    """The lowest recent SBP when it is ≥ sbp_drop below the personal median."""
    readings = of_concept(recent, "sbp")
    if not readings:
        return None
    baseline = reading_baseline(
        [m for m in of_concept(window, "sbp") if m.effective <= ctx.anchor.effective],
        ctx.anchor.effective,
        ctx.tz,
        clinician_value=None,
        window_days=int(need(params, "window_days")),
        exclude_recent_days=int(need(params, "exclude_recent_days")),
        min_values=int(need(params, "min_values")),
        unit="mmHg",
    )
    lowest = min(readings, key=lambda m: m.value)
    if baseline is None or baseline.value - lowest.value < need(params, "sbp_drop"):
        return None
    text = f"SBP {num(lowest.value)} mmHg, -{num(baseline.value - lowest.value)} vs baseline"
    return RuleResult("SBP-DROP", Severity.ORANGE, text, ids([lowest]), lowest.effective, baseline)
