"""Patient-reported rules: HF-SYMPTOM, HF-NYHA-UP and COPD-SYMPTOM-ANTH."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from service.alerts.aggregation import of_concept, present_symptoms
from service.alerts.kinds.common import ids, need, num
from service.alerts.measurements import Measurement
from service.alerts.results import Baseline, RuleResult, Severity
from service.alerts.rules import EvalContext, Params
from service.concepts import SYMPTOM_NAMES

_SEVERITY_WORD = {1: "mild", 2: "moderate", 3: "severe"}
_ANTHONISEN = {
    "increased-dyspnoea": "more dyspnoea",
    "increased-sputum-volume": "more sputum",
    "increased-sputum-purulence": "purulent sputum",
}


def symptom_report(
    params: Params, window: Sequence[Measurement], ctx: EvalContext
) -> RuleResult | None:
    """Any qualifying symptom in the window → orange; a severe red-code symptom → red."""
    at = ctx.anchor.effective
    since = at - timedelta(hours=need(params, "window_hours"))
    present = present_symptoms(window, since, at, ctx.rule.options.get("symptom_codes"))
    if not present:
        return None
    red_codes = set(ctx.rule.options.get("red_codes", []))
    red = [m for m in present if m.detail in red_codes and m.value >= need(params, "red_severity")]
    names = ", ".join(
        f"{SYMPTOM_NAMES.get(m.detail or '', m.detail)} ({_SEVERITY_WORD.get(int(m.value), 'yes')})"
        for m in present
    )
    return RuleResult(
        rule_id=ctx.rule.id,
        severity=Severity.RED if red else Severity.ORANGE,
        text=f"Symptoms reported: {names}",
        evidence=ids(present),
        triggered_at=at,
    )


def nyha_rise(params: Params, window: Sequence[Measurement], ctx: EvalContext) -> RuleResult | None:
    """Patient-reported class ≥ clinician-set class + rise → orange; class IV → red."""
    anchor = ctx.anchor
    if anchor.concept != "nyha":
        return None
    red = anchor.value >= need(params, "red_class")
    base = params.get("nyha_baseline")
    rose = base is not None and anchor.value >= base + need(params, "rise")
    if not (red or rose):
        return None
    baseline = Baseline(base, "class", "clinician-set") if base is not None else None
    versus = f" (clinician-set class {num(base)})" if base is not None else ""
    return RuleResult(
        rule_id=ctx.rule.id,
        severity=Severity.RED if red else Severity.ORANGE,
        text=f"NYHA class {num(anchor.value)} reported{versus}",
        evidence=(anchor.observation_id,),
        triggered_at=anchor.effective,
        baseline=baseline,
    )


def anthonisen(
    params: Params, window: Sequence[Measurement], ctx: EvalContext
) -> RuleResult | None:
    """≥ min_items cardinal symptoms in the window → orange (3/3 adds "start action plan").

    Any item together with an escalating rule (SpO2 drop, high RR) in the window → red.
    """
    at = ctx.anchor.effective
    since = at - timedelta(hours=need(params, "window_hours"))
    answers = [m for m in of_concept(window, "anthonisen") if since <= m.effective <= at]
    latest = {m.detail: m for m in answers}  # the newest answer per item counts
    present = [m for m in latest.values() if m.value >= 1]
    if not present:
        return None
    escalation = _escalation(window, since, at, ctx)
    if len(present) < need(params, "min_items") and escalation is None:
        return None
    names = ", ".join(_ANTHONISEN.get(m.detail or "", m.detail or "") for m in present)
    text = f"Anthonisen criteria {len(present)}/3 ({names})"
    if len(present) == len(_ANTHONISEN):
        text += "; start action plan"
    evidence = list(present)
    if escalation is not None:
        text += f"; with {escalation.text}"
        evidence_ids = ids(evidence) + escalation.evidence
    else:
        evidence_ids = ids(evidence)
    return RuleResult(
        rule_id=ctx.rule.id,
        severity=Severity.RED if escalation is not None else Severity.ORANGE,
        text=text,
        evidence=tuple(dict.fromkeys(evidence_ids)),
        triggered_at=at,
    )


def _escalation(
    window: Sequence[Measurement], since: datetime, at: datetime, ctx: EvalContext
) -> RuleResult | None:
    """The first escalating rule that qualifies at a reading inside the window."""
    if ctx.evaluate_other is None:
        return None
    for rule_id in ctx.rule.options.get("escalating_rules", []):
        for m in window:
            if since <= m.effective <= at:
                result = ctx.evaluate_other(rule_id, m)
                if result is not None:
                    return result
    return None
