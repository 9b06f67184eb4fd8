"""Rule kinds: the table of pure functions that rule definitions refer to by name."""

from __future__ import annotations

from service.alerts.kinds.composite import composite
from service.alerts.kinds.copd import baseline_drop, baseline_ratio, criteria_count, score_rise
from service.alerts.kinds.general import implausible
from service.alerts.kinds.symptoms import anthonisen, nyha_rise, symptom_report
from service.alerts.kinds.thresholds import threshold
from service.alerts.kinds.weight import weight_above_baseline, weight_gain_days, weight_loss
from service.alerts.rules import RuleFunction

# "missing-data" and "late-policy" rules are not evaluated per measurement: the sweep and the
# engine's late-data policy read their parameters.
KINDS: dict[str, RuleFunction] = {
    "weight-gain-days": weight_gain_days,
    "weight-above-baseline": weight_above_baseline,
    "weight-loss": weight_loss,
    "threshold": threshold,
    "symptom-report": symptom_report,
    "nyha-rise": nyha_rise,
    "anthonisen": anthonisen,
    "composite": composite,
    "baseline-drop": baseline_drop,
    "score-rise": score_rise,
    "baseline-ratio": baseline_ratio,
    "criteria-count": criteria_count,
    "implausible": implausible,
}
