"""Patient-reported rules: HF-SYMPTOM, HF-NYHA-UP and COPD-SYMPTOM-ANTH."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from service.alerts.aggregation import of_concept, present_symptoms
from service.alerts.kinds.common import headline, ids, need, symptom_name
from service.alerts.measurements import Measurement
from service.alerts.results import Baseline, RuleResult, Severity
from service.alerts.rules import EvalContext, Params
from service.core.messages import has_message, message, number

_SEVERITY_WORD = {1: "mild", 2: "moderate", 3: "severe"}
_ANTHONISEN = ("increased-dyspnoea", "increased-sputum-volume", "increased-sputum-purulence")


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
    lang = ctx.language
    names = ", ".join(
        f"{symptom_name(m.detail or '', lang)} "
        f"({message('severity.' + _SEVERITY_WORD.get(int(m.value), 'yes'), lang)})"
        for m in present
    )
    return RuleResult(
        rule_id=ctx.rule.id,
        severity=Severity.RED if red else Severity.ORANGE,
        text=headline(ctx, message("alert.symptoms", lang, names=names), at),
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
    lang = ctx.language
    versus = "" if base is None else message("alert.nyha_versus", lang, value=number(base, lang))
    finding = message("alert.nyha", lang, value=number(anchor.value, lang), versus=versus)
    return RuleResult(
        rule_id=ctx.rule.id,
        severity=Severity.RED if red else Severity.ORANGE,
        text=headline(ctx, finding, anchor.effective),
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
    lang = ctx.language
    names = ", ".join(
        message(f"anthonisen.{m.detail}", lang)
        if has_message(f"anthonisen.{m.detail}")
        else m.detail or ""
        for m in present
    )
    plan = message("alert.action_plan", lang) if len(present) == len(_ANTHONISEN) else ""
    finding = message("alert.anthonisen", lang, n=len(present), names=names, plan=plan)
    evidence = list(present)
    detail = ""
    if escalation is not None:
        # The escalating rule's title in the headline, its whole text on the second line.
        title = escalation.text.split(":", 1)[0]
        finding += "; " + message("alert.escalation", lang, text=title)
        detail = escalation.text
        evidence_ids = ids(evidence) + escalation.evidence
    else:
        evidence_ids = ids(evidence)
    return RuleResult(
        rule_id=ctx.rule.id,
        severity=Severity.RED if escalation is not None else Severity.ORANGE,
        text=headline(ctx, finding, at),
        detail=detail,
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
