"""HF-COMBO: several signs of worsening heart failure within a window → red.

See docs/alerts/rules.md#hf-combo.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from service.alerts.aggregation import of_concept
from service.alerts.baselines import reading_baseline
from service.alerts.kinds.common import headline, ids, need
from service.alerts.measurements import Measurement
from service.alerts.results import RuleResult, Severity
from service.alerts.rules import EvalContext, Params
from service.core.messages import message, number, quantity


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
    lang = ctx.language
    # The headline names each sign by its rule's title; the signs' own texts are the detail.
    finding = message(
        "alert.combo",
        lang,
        n=len(met),
        hours=number(need(params, "window_hours"), lang),
        items="; ".join(r.text.split(":", 1)[0] for r in met),
    )
    detail = "\n".join(r.text for r in met)
    return RuleResult(
        ctx.rule.id, Severity.RED, headline(ctx, finding, at), evidence, at, detail=detail
    )


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
    lang = ctx.language
    finding = message(
        "alert.sbp_drop",
        lang,
        value=quantity(lowest.value, "mmHg", lang),
        drop=quantity(baseline.value - lowest.value, "mmHg", lang),
        baseline=baseline.shown(lang),
    )
    text = headline(ctx, finding, lowest.effective, rule_id="SBP-DROP")
    return RuleResult(
        "SBP-DROP", Severity.ORANGE, text, ids([lowest]), lowest.effective, baseline,
        detail=baseline.describe(lang),
    )
