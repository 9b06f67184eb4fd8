"""GEN-IMPLAUSIBLE: ask the patient or nurse to verify a reading outside plausible ranges."""

from __future__ import annotations

from collections.abc import Sequence

from service.alerts.kinds.common import headline
from service.alerts.measurements import Measurement
from service.alerts.results import RuleResult, Severity
from service.alerts.rules import EvalContext, Params
from service.core.messages import message


def implausible(
    params: Params, window: Sequence[Measurement], ctx: EvalContext
) -> RuleResult | None:
    """An implausible anchor → info "verify measurement" (never a clinical alert)."""
    anchor = ctx.anchor
    if anchor.implausible is None:
        return None
    unit = f" {anchor.original_unit}" if anchor.original_unit else ""
    finding = message(
        "alert.implausible",
        ctx.language,
        value=f"{anchor.original_value}{unit}",
        reason=anchor.implausible,
    )
    text = headline(ctx, finding, anchor.effective)
    return RuleResult(ctx.rule.id, Severity.INFO, text, (anchor.observation_id,), anchor.effective)
