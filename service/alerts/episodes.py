"""Alert episodes per (patient, rule) and their rendering as FHIR R4 Flags.

Semantics: docs/alerts/engine.md#episodes.

The state machine is pure: :func:`decide` takes the open episode (if any), the last closed one
and one evaluation outcome, and returns what changes.  Feeding the same outcome twice is a no-op,
which makes re-evaluation after late or corrected data idempotent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from service.alerts.codes import ALERT_RULES
from service.alerts.results import Baseline, Limit, RuleResult, Severity
from service.alerts.rules import RuleDefinition
from service.core.messages import DEFAULT_LANGUAGE, rule_title

AUTO_CLOSE_READINGS = 2  # [P] condition false on 2 consecutive evaluations
AUTO_CLOSE_AFTER = timedelta(hours=72)  # [P] or false for 72 h

FLAG_DETAIL = "http://hl7.org/fhir/StructureDefinition/flag-detail"
FLAG_PRIORITY = "http://hl7.org/fhir/StructureDefinition/flag-priority"
FLAG_PRIORITY_SYSTEM = "http://hl7.org/fhir/flag-priority-code"
EXT_BASE = "http://telemon.example.org/fhir/StructureDefinition"
EXT_RULE_VERSION = f"{EXT_BASE}/alert-rule-version"
EXT_BASELINE = f"{EXT_BASE}/alert-baseline"
EXT_ACKNOWLEDGED = f"{EXT_BASE}/alert-acknowledged"
EXT_LATE = f"{EXT_BASE}/alert-late"
EXT_PROGRAMME = f"{EXT_BASE}/alert-programme"
EXT_LIMIT = f"{EXT_BASE}/alert-limit"
EXT_ACKNOWLEDGED_BY = f"{EXT_BASE}/alert-acknowledged-by"
EXT_RESOLVED_BY = f"{EXT_BASE}/alert-resolved-by"
EXT_NOTE = f"{EXT_BASE}/alert-note"
_PRIORITY = {
    Severity.INFO: ("PL", "Low priority"),
    Severity.ORANGE: ("PM", "Medium priority"),
    Severity.RED: ("PH", "High priority"),
}


class AlertStatus(StrEnum):
    """Flag.status values used for alerts."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    ENTERED_IN_ERROR = "entered-in-error"


class Action(StrEnum):
    """What one evaluation outcome did to an episode."""

    OPEN = "open"
    ATTACH = "attach"  # new evidence on the open alert, no new notification
    UPGRADE = "upgrade"  # higher severity: same alert, re-notify
    CLEARING = "clearing"  # condition false, not yet long enough to auto-close
    RESOLVE = "resolve"
    SUPPRESSED = "suppressed"  # in cooldown after resolve and not more severe
    RETRACT = "retract"  # its evidence was entered in error and it no longer qualifies
    NOOP = "noop"


@dataclass(frozen=True, slots=True)
class Note:
    """A clinician's note on an alert (an Annotation on the Flag, ``alert-note``)."""

    author: str  # "Practitioner/<id>"
    author_name: str
    time: datetime
    text: str


@dataclass(frozen=True, slots=True)
class Alert:
    """One episode of (patient, rule); renders as a FHIR Flag."""

    id: str
    patient_id: str
    rule_id: str
    rule_title: str
    rule_version: int
    rule_set_version: str
    status: AlertStatus
    severity: Severity  # the maximum seen in the episode
    text: str  # the text of the worst result
    evidence: tuple[str, ...]
    period_start: datetime  # effective time of the triggering measurement
    last_triggered_at: datetime
    baseline: Baseline | None = None
    reasons: tuple[str, ...] = ()
    period_end: datetime | None = None
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None  # processing time of the resolve, for the cooldown
    resolved_by: str | None = None
    # (observation id, effective) of evaluations that no longer qualified since the last trigger
    cleared: tuple[tuple[str, datetime], ...] = ()
    late: bool = False
    detail: str = ""  # how the finding was computed: the Flag text's second line
    limit: Limit | None = None  # the limit that fired, drawn on the chart
    acknowledged_by: str | None = None  # "Practitioner/<id>" when a clinician did it
    acknowledged_by_name: str | None = None
    resolved_by_name: str | None = None
    notes: tuple[Note, ...] = ()

    @property
    def is_open(self) -> bool:
        """Active and not closed."""
        return self.status is AlertStatus.ACTIVE


@dataclass(frozen=True, slots=True)
class EpisodeChange:
    """The result of one decision; ``alert`` is the new state to store."""

    action: Action
    alert: Alert | None
    notify: bool = False


def alert_id(patient_id: str, rule_id: str, start: datetime) -> str:
    """A deterministic id, so re-evaluation finds the same alert instead of making a new one.

    Hashed: it is also the Flag's FHIR id, which may be at most 64 characters long.
    """
    key = f"{patient_id}|{rule_id}|{start:%Y%m%dT%H%M%SZ}"
    return f"{rule_id.lower()}-{hashlib.blake2b(key.encode(), digest_size=16).hexdigest()}"


def _merge(first: tuple[str, ...], more: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(first + more))


def decide(
    open_alert: Alert | None,
    last_closed: Alert | None,
    result: RuleResult | None,
    *,
    rule: RuleDefinition,
    rule_set_version: str,
    patient_id: str,
    anchor_id: str,
    anchor_time: datetime,
    now: datetime,
    late: bool = False,
) -> EpisodeChange:
    """Apply one evaluation outcome (a result, or None = no longer qualifies) to an episode."""
    if result is None:
        return _not_qualifying(open_alert, anchor_id, anchor_time)
    if open_alert is None:
        if last_closed is not None:
            if set(result.evidence) <= set(last_closed.evidence):
                return EpisodeChange(Action.NOOP, None)  # already handled in that episode
            cooldown_end = (last_closed.resolved_at or now) + timedelta(hours=rule.cooldown_hours)
            if now < cooldown_end and result.severity <= last_closed.severity:
                return EpisodeChange(Action.SUPPRESSED, last_closed)
        alert = Alert(
            id=alert_id(patient_id, rule.id, result.triggered_at),
            patient_id=patient_id,
            rule_id=rule.id,
            rule_title=rule.title,
            rule_version=rule.version,
            rule_set_version=rule_set_version,
            status=AlertStatus.ACTIVE,
            severity=result.severity,
            text=result.text,
            evidence=result.evidence,
            period_start=result.triggered_at,
            last_triggered_at=result.triggered_at,
            baseline=result.baseline,
            reasons=result.reasons,
            late=late,
            detail=result.detail,
            limit=result.limit,
        )
        return EpisodeChange(Action.OPEN, alert, notify=True)
    return _qualifying(open_alert, result)


def _finding(result: RuleResult) -> dict[str, Any]:
    """What an alert takes over from the result that describes it: texts, baseline, limit."""
    return {
        "text": result.text,
        "baseline": result.baseline,
        "reasons": result.reasons,
        "detail": result.detail,
        "limit": result.limit,
    }


def _qualifying(alert: Alert, result: RuleResult) -> EpisodeChange:
    new_evidence = not set(result.evidence) <= set(alert.evidence)
    newer = result.triggered_at > alert.last_triggered_at
    if result.severity > alert.severity:
        upgraded = replace(
            alert,
            severity=result.severity,
            **_finding(result),
            evidence=_merge(alert.evidence, result.evidence),
            last_triggered_at=max(alert.last_triggered_at, result.triggered_at),
            cleared=tuple(c for c in alert.cleared if c[1] > result.triggered_at),
            acknowledged_at=None,  # the new severity has to be acknowledged again
            acknowledged_by=None,
            acknowledged_by_name=None,
        )
        return EpisodeChange(Action.UPGRADE, upgraded, notify=True)
    if not (new_evidence or newer):
        return EpisodeChange(Action.NOOP, alert)
    last = max(alert.last_triggered_at, result.triggered_at)
    attached = replace(
        alert,
        evidence=_merge(alert.evidence, result.evidence),
        last_triggered_at=last,
        cleared=tuple(c for c in alert.cleared if c[1] > last),
    )
    if newer and result.severity == alert.severity:
        # The latest finding at the episode's worst severity describes it best.
        attached = replace(attached, **_finding(result))
    return EpisodeChange(Action.ATTACH, attached)


def _not_qualifying(alert: Alert | None, anchor_id: str, anchor_time: datetime) -> EpisodeChange:
    # Only evaluations after the last trigger count, each measurement only once, and readings
    # taken at the same instant (a pulse and an SpO2 of one device) as one evaluation.
    if (
        alert is None
        or anchor_time <= alert.last_triggered_at
        or any(c[0] == anchor_id or c[1] == anchor_time for c in alert.cleared)
    ):
        return EpisodeChange(Action.NOOP, alert)
    cleared = (*alert.cleared, (anchor_id, anchor_time))
    if (
        len(cleared) >= AUTO_CLOSE_READINGS
        or anchor_time - alert.last_triggered_at >= AUTO_CLOSE_AFTER
    ):
        closed = replace(
            alert,
            status=AlertStatus.INACTIVE,
            cleared=cleared,
            period_end=anchor_time,
            resolved_at=anchor_time,
            resolved_by="auto",
        )
        return EpisodeChange(Action.RESOLVE, closed)
    return EpisodeChange(Action.CLEARING, replace(alert, cleared=cleared))


def retract(alert: Alert, removed: set[str], now: datetime) -> EpisodeChange:
    """Retract an alert whose evidence was entered in error and that no longer qualifies."""
    gone = replace(
        alert,
        status=AlertStatus.ENTERED_IN_ERROR,
        evidence=tuple(e for e in alert.evidence if e not in removed),
        period_end=now,
        resolved_at=now,
        resolved_by="retracted",
    )
    return EpisodeChange(Action.RETRACT, gone, notify=alert.is_open)


def acknowledge(alert: Alert, at: datetime) -> Alert:
    """Acknowledge: stops re-notification, keeps the episode open (acknowledge ≠ resolve)."""
    return replace(alert, acknowledged_at=at)


def resolve(alert: Alert, at: datetime, by: str = "clinician") -> Alert:
    """Close the episode; the rule's cooldown starts at ``at``."""
    return replace(
        alert, status=AlertStatus.INACTIVE, period_end=at, resolved_at=at, resolved_by=by
    )


def _instant(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _quantity(value: float, unit: str, comparator: str | None = None) -> dict[str, Any]:
    quantity: dict[str, Any] = {"value": round(value, 2)}
    if comparator:
        quantity["comparator"] = comparator
    if unit:  # scores have none; FHIR allows no empty strings
        quantity["unit"] = unit
    return quantity


def limit_extension(limit: Limit) -> dict[str, Any]:
    """The ``alert-limit`` extension: which measurement, the comparator and the limit."""
    parts: list[dict[str, Any]] = [
        {"url": "concept", "valueCode": limit.concept},
        {"url": "value", "valueQuantity": _quantity(limit.value, limit.unit, limit.op)},
        {"url": "personal", "valueBoolean": limit.personal},
    ]
    if limit.since is not None:
        parts.append({"url": "since", "valueDateTime": _instant(limit.since)})
    return {"url": EXT_LIMIT, "extension": parts}


def _who(reference: str, name: str | None) -> dict[str, Any]:
    who = {"reference": reference}
    return {**who, "display": name} if name else who


def note_extension(note: Note) -> dict[str, Any]:
    """A note as the ``alert-note`` extension (an Annotation: author, time, text)."""
    return {
        "url": EXT_NOTE,
        "valueAnnotation": {
            "authorReference": _who(note.author, note.author_name),
            "time": _instant(note.time),
            "text": note.text,
        },
    }


def _actor_extensions(alert: Alert) -> list[dict[str, Any]]:
    """Who acknowledged and who resolved (a clinician), and the notes."""
    found = []
    if alert.acknowledged_at is not None and alert.acknowledged_by:
        who = _who(alert.acknowledged_by, alert.acknowledged_by_name)
        found.append({"url": EXT_ACKNOWLEDGED_BY, "valueReference": who})
    if alert.resolved_by and "/" in alert.resolved_by:  # a clinician, not "auto" or "ehr"
        who = _who(alert.resolved_by, alert.resolved_by_name)
        found.append({"url": EXT_RESOLVED_BY, "valueReference": who})
    found.extend(note_extension(n) for n in alert.notes)
    return found


def flag_text(alert: Alert) -> str:
    """The Flag's ``code.text``: the headline, then the detail and merged findings, a line each."""
    return "\n".join(line for line in (alert.text, alert.detail, *alert.reasons) if line)


def to_flag(
    alert: Alert, programmes: Iterable[str] = (), language: str = DEFAULT_LANGUAGE
) -> dict[str, Any]:
    """Render an alert as a FHIR R4 Flag (flag-detail per evidence, flag-priority PL/PM/PH).

    ``programmes`` are the canonical URLs of the programmes (PlanDefinitions) the alert belongs
    to, one ``alert-programme`` extension each (searchable as ``Flag?programme=``). The code's
    display is the rule's title in ``language``; ``code.text`` leads with that same title.
    """
    code, display = _PRIORITY[alert.severity]
    extensions: list[dict[str, Any]] = [
        {"url": FLAG_DETAIL, "valueReference": {"reference": f"Observation/{e}"}}
        for e in alert.evidence
    ]
    extensions.extend({"url": EXT_PROGRAMME, "valueCanonical": p} for p in programmes)
    extensions.append(
        {
            "url": FLAG_PRIORITY,
            "valueCodeableConcept": {
                "coding": [{"system": FLAG_PRIORITY_SYSTEM, "code": code, "display": display}],
                "text": alert.severity.label,
            },
        }
    )
    extensions.append(
        {
            "url": EXT_RULE_VERSION,
            "valueString": f"{alert.rule_id}|{alert.rule_version}|{alert.rule_set_version}",
        }
    )
    if alert.baseline is not None:
        extensions.append(
            {
                "url": EXT_BASELINE,
                "extension": [
                    {
                        "url": "value",
                        "valueQuantity": _quantity(alert.baseline.value, alert.baseline.unit),
                    },
                    {"url": "method", "valueString": alert.baseline.method},
                ],
            }
        )
    if alert.acknowledged_at is not None:
        extensions.append(
            {"url": EXT_ACKNOWLEDGED, "valueDateTime": _instant(alert.acknowledged_at)}
        )
    extensions.extend(_actor_extensions(alert))
    if alert.limit is not None:
        extensions.append(limit_extension(alert.limit))
    if alert.late:
        extensions.append({"url": EXT_LATE, "valueBoolean": True})
    text = flag_text(alert)
    title = rule_title(alert.rule_id, language, alert.rule_title)
    period: dict[str, str] = {"start": _instant(alert.period_start)}
    if alert.period_end is not None:
        period["end"] = _instant(alert.period_end)
    return {
        "resourceType": "Flag",
        "id": alert.id,
        "extension": extensions,
        "status": alert.status.value,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/flag-category",
                        "code": "clinical",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": ALERT_RULES, "code": alert.rule_id, "display": title}],
            "text": text,
        },
        "subject": {"reference": f"Patient/{alert.patient_id}"},
        "period": period,
    }
