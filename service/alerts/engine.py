"""The alert engine: re-evaluate affected windows and run episodes.

Semantics: docs/alerts/engine.md#episodes and docs/alerts/engine.md#data-edge-cases.

:func:`evaluate` is called after measurements of one patient were stored (new, late,
corrected or entered-in-error); :func:`sweep_missing` periodically for GEN-MISSING.  Both are
pure: the caller loads the inputs and stores the returned alert states (as Flags).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from service.alerts.aggregation import Window
from service.alerts.days import day_start, local_day
from service.alerts.episodes import (
    Action,
    Alert,
    AlertStatus,
    EpisodeChange,
    alert_id,
    decide,
    resolve,
    retract,
)
from service.alerts.kinds import KINDS
from service.alerts.measurements import Measurement
from service.alerts.personalisation import (
    PatientConfig,
    effective_params,
    is_enabled,
    is_paused,
)
from service.alerts.preparation import Prepared, prepare
from service.alerts.results import RuleResult, Severity
from service.alerts.rules import EvalContext, RuleDefinition, RuleSet, default_rule_set
from service.core.messages import message, rule_title

# The longest look-back of any default rule (14-day baselines) plus the day before.
LOOKBACK = timedelta(days=16)

# When several changes hit one alert in a run (a backfill), report the most significant.
_SIGNIFICANCE = [
    Action.SUPPRESSED,
    Action.CLEARING,
    Action.ATTACH,
    Action.RESOLVE,
    Action.UPGRADE,
    Action.RETRACT,
    Action.OPEN,
]


def window_start(changed: Sequence[Measurement]) -> datetime:
    """The earliest effective time the caller must load so every affected window is complete."""
    return min(m.effective for m in changed) - LOOKBACK


@dataclass
class _Episodes:
    """Open and last-closed episode per rule, plus the changes made in this run.

    ``voided``: per rule, the evidence of alerts that are entered-in-error (retracted, or so
    marked by the EHR); findings resting only on that evidence are not raised again.
    """

    open: dict[str, Alert]
    closed: dict[str, Alert]
    changes: dict[str, EpisodeChange] = field(default_factory=dict)
    voided: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, episodes: Sequence[Alert]) -> _Episodes:
        open_, closed = {}, {}
        voided: dict[str, set[str]] = {}
        for alert in sorted(episodes, key=lambda a: a.period_start):
            if alert.is_open:
                open_[alert.rule_id] = alert
            elif alert.status is AlertStatus.INACTIVE:
                closed[alert.rule_id] = alert
            else:
                voided.setdefault(alert.rule_id, set()).update(alert.evidence)
        return cls(open_, closed, voided=voided)

    def is_voided(self, result: RuleResult) -> bool:
        """Whether ``result`` rests only on evidence of an entered-in-error alert of its rule.

        Re-raising it would reopen that alert (same deterministic id): an alert the EHR
        declared an error would come back active at the next unrelated write.
        """
        voided = self.voided.get(result.rule_id)
        return (
            voided is not None
            and result.rule_id not in self.open
            and set(result.evidence) <= voided
        )

    def record(self, change: EpisodeChange) -> None:
        alert = change.alert
        if change.action is Action.NOOP or alert is None:
            return
        if alert.is_open:
            self.open[alert.rule_id] = alert
        else:
            self.open.pop(alert.rule_id, None)
            if alert.status is AlertStatus.INACTIVE:
                self.closed[alert.rule_id] = alert
        previous = self.changes.get(alert.id)
        if previous is None:
            self.changes[alert.id] = change
            return
        action = max(previous.action, change.action, key=_SIGNIFICANCE.index)
        self.changes[alert.id] = EpisodeChange(action, alert, previous.notify or change.notify)


class _Run:
    """One evaluation run for one patient."""

    def __init__(
        self, config: PatientConfig, rule_set: RuleSet, prepared: Prepared, now: datetime
    ) -> None:
        self.config = config
        self.rule_set = rule_set
        self.prepared = prepared
        self.now = now
        self.rules = [r for r in rule_set.for_programmes(set(config.programmes)) if r.kind in KINDS]
        firsts: dict[date, str] = {}
        for m in prepared.usable:
            if m.concept == "weight":
                firsts.setdefault(local_day(m.effective, config.tz), m.observation_id)
        self.daily_first_ids = set(firsts.values())
        self._results: dict[tuple[str, str, str, datetime], RuleResult | None] = {}
        self.window = Window(prepared.usable)

    def applies(self, rule: RuleDefinition, anchor: Measurement) -> bool:
        """Whether ``anchor`` is an evaluation point of ``rule`` (not just "doesn't qualify")."""
        if (anchor.implausible is not None) != (rule.kind == "implausible"):
            return False
        if rule.kind == "implausible":
            return True
        if anchor.concept not in rule.concepts:
            return False
        if rule.aggregation == "first-of-day" and anchor.observation_id not in self.daily_first_ids:
            return False
        if rule.options.get("skip_on_oxygen") and anchor.on_supplemental_oxygen:
            return False
        return is_enabled(rule, self.config, anchor.effective)

    def run_rule(self, rule: RuleDefinition, anchor: Measurement) -> RuleResult | None:
        """Evaluate one rule at one anchor with the parameters in force at its effective time.

        Memoised per run: composites ask for the same (rule, anchor) again and again, and a
        rule is a pure function of the run's inputs.
        """
        key = (rule.id, anchor.observation_id, anchor.concept, anchor.effective)
        if key not in self._results:
            params = effective_params(rule, self.config, anchor.effective)
            personal = frozenset(
                o.param
                for o in self.config.overrides
                if o.in_force(anchor.effective) and o.rule_id in (None, rule.id)
            )
            ctx = EvalContext(
                anchor, rule, self.config.tz, self.evaluate_other, self.config.language, personal
            )
            self._results[key] = KINDS[rule.kind](params, self.window, ctx)
        return self._results[key]

    def evaluate_other(self, rule_id: str, anchor: Measurement) -> RuleResult | None:
        """For composites: another rule at another anchor, if it applies there."""
        rule = self.rule_set.get(rule_id)
        if rule.kind not in KINDS or not self.applies(rule, anchor):
            return None
        return self.run_rule(rule, anchor)


def _merge_groups(
    results: dict[str, RuleResult | None],
    rules: Sequence[RuleDefinition],
    open_rules: set[str],
) -> dict[str, RuleResult | None]:
    """One measurement -> one alert per overlapping group.

    See docs/alerts/engine.md#one-alert-per-measurement.

    The group's alert is the member with an open episode (so a group never has two open
    alerts), else the strongest result.  It takes the strongest severity and keeps its own
    text, baseline and limit, so that its title (the Flag's code) and text lead with the same
    finding; the other members' texts become reasons, their own episodes are left untouched.
    """
    order = {r.id: i for i, r in enumerate(rules)}
    groups: dict[str, list[RuleResult]] = {}
    for rule in rules:
        result = results.get(rule.id)
        if rule.merge_group and result is not None:
            groups.setdefault(rule.merge_group, []).append(result)
    merged = dict(results)
    for members in groups.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda r: (-r.severity, order[r.rule_id]))
        strongest = members[0]
        owner = next((r for r in members if r.rule_id in open_rules), strongest)
        others = [r for r in members if r is not owner]
        merged[owner.rule_id] = replace(
            owner,
            severity=strongest.severity,
            reasons=tuple(r.text for r in others),
            evidence=tuple(dict.fromkeys(e for r in members for e in r.evidence)),
        )
        for member in members:
            if member.rule_id != owner.rule_id:
                del merged[member.rule_id]
    return merged


def _late_policy(
    result: RuleResult,
    anchor: Measurement,
    params: dict[str, float | None],
    ongoing: bool,
    language: str,
) -> tuple[RuleResult, bool]:
    """GEN-LATE: mark late data; very late data raises at most info unless the episode is open."""
    if anchor.received is None:
        return result, False
    delay = anchor.received - anchor.effective
    if delay <= timedelta(hours=params.get("late_hours") or 24):
        return result, False
    cap = timedelta(hours=params.get("info_only_after_hours") or 72)
    if delay > cap and not ongoing and result.severity > Severity.INFO:
        hours = f"{delay.total_seconds() / 3600:.0f}"
        text = f"{result.text}; {message('alert.late', language, hours=hours)}"
        return replace(result, severity=Severity.INFO, text=text), True
    return result, True


def evaluate(
    config: PatientConfig,
    measurements: Sequence[Measurement],
    episodes: Sequence[Alert],
    now: datetime,
    *,
    changed: Sequence[str] | None = None,
    rule_set: RuleSet | None = None,
) -> list[EpisodeChange]:
    """Re-evaluate one patient's rules and return the episode changes to store.

    ``measurements``: the patient's measurements from :func:`window_start` on, any status
    (entered-in-error ones trigger retraction).  ``episodes``: the patient's open alerts and the
    closed ones that may still matter (cooldown, evidence).  ``changed``: observation ids that
    were just stored; every window containing them is re-evaluated (None = everything).
    Re-running with the same inputs returns no changes.
    """
    rule_set = rule_set or default_rule_set()
    gen_params = _gen_params(rule_set, config, now)
    prepared = prepare(
        measurements,
        now,
        weight_jump_kg=gen_params.get("weight_jump_kg") or 5.0,
        weight_jump_hours=gen_params.get("weight_jump_hours") or 24.0,
    )
    state = _Episodes.of([a for a in episodes if a.patient_id == config.patient_id])
    run = _Run(config, rule_set, prepared, now)
    since = _since(measurements, changed, config)
    suspects = _prune_retracted(state, prepared.retracted, now)
    # A new version (amended/corrected) of a reading an open alert rests on: with its new value
    # that evidence has to qualify again, exactly like retracted evidence.
    corrected = frozenset(changed or ()) - prepared.retracted
    suspects.update(_prune_open(state, corrected))
    # A weight that an earlier one of the same local day (arriving late) displaced is no longer
    # that day's weight: alerts of first-of-day rules resting on it must qualify again.
    displaced = frozenset(
        m.observation_id
        for m in prepared.usable
        if m.concept == "weight" and m.observation_id not in run.daily_first_ids
    )
    daily_rules = {r.id for r in run.rules if r.aggregation == "first-of-day"}
    suspects.update(_prune_open(state, displaced, daily_rules))
    for alert in suspects.values():
        since = min(since, alert.period_start - timedelta(days=1))
    requalified: set[str] = set()
    late_params = _rule_params(rule_set, "GEN-LATE", config, now)
    done: set[tuple[str, str, datetime]] = set()
    anchors = sorted(
        (m for m in prepared.usable + prepared.implausible if m.effective >= since),
        key=lambda m: (m.effective, m.observation_id, m.concept),
    )
    for anchor in anchors:
        results: dict[str, RuleResult | None] = {}
        for rule in run.rules:
            # A BP panel is one evaluation point for a rule over sbp and dbp; two Observations
            # taken at the same instant (a BP monitor's pulse and an oximeter's) are two.
            key = (rule.id, anchor.observation_id, anchor.effective)
            if key in done or not run.applies(rule, anchor):
                continue
            done.add(key)
            results[rule.id] = run.run_rule(rule, anchor)
        for rule_id, result in _merge_groups(results, run.rules, set(state.open)).items():
            rule = rule_set.get(rule_id)
            late = False
            if result is not None and state.is_voided(result):
                result = None
            if result is not None:
                requalified.add(rule_id)
                result, late = _late_policy(
                    result, anchor, late_params, rule_id in state.open, config.language
                )
            state.record(
                decide(
                    state.open.get(rule_id),
                    state.closed.get(rule_id),
                    result,
                    rule=rule,
                    rule_set_version=rule_set.version,
                    patient_id=config.patient_id,
                    anchor_id=anchor.observation_id,
                    anchor_time=anchor.effective,
                    now=now,
                    late=late,
                )
            )
    for rule_id, alert in suspects.items():
        if rule_id not in requalified:
            current = state.open.get(rule_id) or state.closed.get(rule_id) or alert
            state.record(retract(current, set(prepared.retracted | corrected | displaced), now))
    # Evidence taken out and put back unchanged (a new version of a reading that qualifies as
    # before) is no change: re-running with the same inputs stays a no-op.
    before = {alert.id: alert for alert in episodes}
    return [
        c
        for c in state.changes.values()
        if not (
            c.action is Action.ATTACH and c.alert is not None and before.get(c.alert.id) == c.alert
        )
    ]


def _since(
    measurements: Sequence[Measurement], changed: Sequence[str] | None, config: PatientConfig
) -> datetime:
    """Start of re-evaluation: the local day before the earliest changed measurement.

    The day before, because answers on the same day (or in the last 24 h) change "Sym" for
    vitals measured earlier, and "yesterday" rules look one calendar day back.
    """
    pool = [m for m in measurements if changed is None or m.observation_id in set(changed)]
    if not pool:
        return datetime.max.replace(tzinfo=config.tz)
    first = min(m.effective for m in pool)
    return day_start(local_day(first, config.tz) - timedelta(days=1), config.tz)


def _prune_retracted(
    state: _Episodes, retracted: frozenset[str], now: datetime
) -> dict[str, Alert]:
    """Remove entered-in-error evidence; return open alerts that must re-qualify or be retracted.

    Closed alerts left without any evidence are retracted at once.
    """
    if not retracted:
        return {}
    suspects = _prune_open(state, retracted)
    for alert in list(state.closed.values()):
        if alert.evidence and set(alert.evidence) <= retracted:
            state.record(retract(alert, set(retracted), now))
    return suspects


def _prune_open(
    state: _Episodes, removed: frozenset[str], rules: set[str] | None = None
) -> dict[str, Alert]:
    """Take ``removed`` observations out of open alerts' evidence; return those alerts.

    They must qualify again in this run (with the remaining or the new values) or be retracted.
    ``rules`` limits this to the open alerts of those rules (None: every rule).
    """
    suspects: dict[str, Alert] = {}
    for rule_id, alert in list(state.open.items()):
        if (rules is None or rule_id in rules) and removed & set(alert.evidence):
            pruned = replace(alert, evidence=tuple(e for e in alert.evidence if e not in removed))
            state.open[rule_id] = pruned
            state.record(EpisodeChange(Action.ATTACH, pruned))
            suspects[rule_id] = pruned
    return suspects


def _rule_params(
    rule_set: RuleSet, rule_id: str, config: PatientConfig, at: datetime
) -> dict[str, float | None]:
    try:
        return effective_params(rule_set.get(rule_id), config, at)
    except KeyError:
        return {}


def _gen_params(rule_set: RuleSet, config: PatientConfig, at: datetime) -> dict[str, float | None]:
    return _rule_params(rule_set, "GEN-IMPLAUSIBLE", config, at)


def _missing_days(last: date | None, today: date, config: PatientConfig) -> int | None:
    """Complete local days without data before today, not counting days before a pause ended."""
    if last is None:
        return None
    for pause in config.pauses:
        if pause.end is not None:
            last = max(last, local_day(pause.end, config.tz) - timedelta(days=1))
    return (today - last).days - 1


def _last_day(
    measurements: Sequence[Measurement], concepts: set[str] | None, config: PatientConfig
) -> date | None:
    days = [
        local_day(m.effective, config.tz)
        for m in measurements
        if concepts is None or m.concept in concepts
    ]
    return max(days, default=None)


def sweep_missing(
    config: PatientConfig,
    measurements: Sequence[Measurement],
    episodes: Sequence[Alert],
    now: datetime,
    *,
    rule_set: RuleSet | None = None,
) -> list[EpisodeChange]:
    """GEN-MISSING for one patient: missing daily weights, overdue questionnaires, silence.

    Run periodically (e.g. hourly).  Only whole local days before today count.  Nothing is raised
    while a clinician pause covers ``now``, and days before a pause ended do not count.  Data
    arriving again resolves the open episode.  Repeated sweeps on one day change nothing.
    """
    rule_set = rule_set or default_rule_set()
    rule = rule_set.get("GEN-MISSING")
    state = _Episodes.of([a for a in episodes if a.patient_id == config.patient_id])
    if not is_enabled(rule, config, now) or is_paused(config, now):
        return []
    params = effective_params(rule, config, now)
    usable = [m for m in measurements if m.evaluable]
    today = local_day(now, config.tz)
    lang = config.language
    found: list[tuple[Severity, str]] = []
    if "HF" in config.programmes:
        gap = _missing_days(_last_day(usable, {"weight"}, config), today, config)
        no_weight = message("alert.no_weight", lang, days=gap)
        if gap is not None and gap >= (params["weight_orange_days"] or 3):
            found.append((Severity.ORANGE, no_weight))
        elif gap is not None and gap >= (params["weight_info_days"] or 2):
            found.append((Severity.INFO, no_weight))
    if "COPD" in config.programmes:
        gap = _missing_days(_last_day(usable, {"cat", "ccq"}, config), today, config)
        interval = params["questionnaire_interval_days"] or 7
        if gap is not None and gap + 1 - interval >= (params["questionnaire_overdue_days"] or 2):
            overdue = gap + 1 - interval
            late = message("alert.questionnaire_overdue", lang, days=f"{overdue:.0f}")
            found.append((Severity.INFO, late))
    silence = _missing_days(_last_day(usable, None, config), today, config)
    if silence is not None and silence >= (params["no_data_days"] or 7):
        found.append((Severity.ORANGE, message("alert.silence", lang, days=silence)))
    open_alert = state.open.get(rule.id)
    if not found:
        if open_alert is None:
            return []
        return [EpisodeChange(Action.RESOLVE, resolve(open_alert, now, by="auto"))]
    severity = max(s for s, _ in found)
    result = RuleResult(
        rule.id,
        severity,
        f"{rule_title(rule.id, lang, rule.title)}: " + "; ".join(text for _, text in found),
        evidence=(),
        # Stable within a local day, so hourly sweeps are idempotent.
        triggered_at=day_start(today, config.tz),
    )
    todays = alert_id(config.patient_id, rule.id, result.triggered_at)
    if any(a.id == todays and a.status is AlertStatus.ENTERED_IN_ERROR for a in episodes):
        return []  # the EHR declared today's alert an error: raising it again would reopen it
    change = decide(
        open_alert,
        state.closed.get(rule.id),
        result,
        rule=rule,
        rule_set_version=rule_set.version,
        patient_id=config.patient_id,
        anchor_id=f"sweep-{today.isoformat()}",
        anchor_time=result.triggered_at,
        now=now,
    )
    return [] if change.action is Action.NOOP else [change]
