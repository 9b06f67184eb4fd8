"""Alert episodes as plain JSON data, so that storage can keep them between evaluations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.alerts.episodes import Alert, AlertStatus, Note
from service.alerts.results import Baseline, Limit, Severity


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def dump_alert(alert: Alert) -> dict[str, Any]:
    """The episode as JSON-ready data (inverse of :func:`load_alert`)."""
    baseline = alert.baseline
    return {
        "id": alert.id,
        "patient_id": alert.patient_id,
        "rule_id": alert.rule_id,
        "rule_title": alert.rule_title,
        "rule_version": alert.rule_version,
        "rule_set_version": alert.rule_set_version,
        "status": alert.status.value,
        "severity": alert.severity.label,
        "text": alert.text,
        "evidence": list(alert.evidence),
        "period_start": _time(alert.period_start),
        "last_triggered_at": _time(alert.last_triggered_at),
        "baseline": None
        if baseline is None
        else {
            "value": baseline.value,
            "unit": baseline.unit,
            "method": baseline.method,
            "n": baseline.n,
        },
        "reasons": list(alert.reasons),
        "period_end": _time(alert.period_end),
        "acknowledged_at": _time(alert.acknowledged_at),
        "resolved_at": _time(alert.resolved_at),
        "resolved_by": alert.resolved_by,
        "cleared": [[obs, _time(at)] for obs, at in alert.cleared],
        "late": alert.late,
        "detail": alert.detail,
        "acknowledged_by": alert.acknowledged_by,
        "acknowledged_by_name": alert.acknowledged_by_name,
        "resolved_by_name": alert.resolved_by_name,
        "notes": [[n.author, n.author_name, _time(n.time), n.text] for n in alert.notes],
        "limit": None if alert.limit is None else _dump_limit(alert.limit),
    }


def _dump_limit(limit: Limit) -> dict[str, Any]:
    return {
        "concept": limit.concept,
        "op": limit.op,
        "value": limit.value,
        "unit": limit.unit,
        "personal": limit.personal,
        "since": _time(limit.since),
    }


def _load_limit(data: dict[str, Any] | None) -> Limit | None:
    if data is None:
        return None
    return Limit(
        data["concept"],
        data["op"],
        data["value"],
        data["unit"],
        data["personal"],
        _parse(data["since"]),
    )


def load_alert(data: dict[str, Any]) -> Alert:
    """The episode stored by :func:`dump_alert`."""
    baseline = data.get("baseline")
    start = _parse(data["period_start"])
    triggered = _parse(data["last_triggered_at"])
    assert start is not None and triggered is not None
    return Alert(
        id=data["id"],
        patient_id=data["patient_id"],
        rule_id=data["rule_id"],
        rule_title=data["rule_title"],
        rule_version=data["rule_version"],
        rule_set_version=data["rule_set_version"],
        status=AlertStatus(data["status"]),
        severity=Severity.parse(data["severity"]),
        text=data["text"],
        evidence=tuple(data["evidence"]),
        period_start=start,
        last_triggered_at=triggered,
        baseline=None if baseline is None else Baseline(**baseline),
        reasons=tuple(data["reasons"]),
        period_end=_parse(data["period_end"]),
        acknowledged_at=_parse(data["acknowledged_at"]),
        resolved_at=_parse(data["resolved_at"]),
        resolved_by=data["resolved_by"],
        cleared=tuple(
            (obs, at) for obs, at in ((o, _parse(t)) for o, t in data["cleared"]) if at is not None
        ),
        late=data["late"],
        # Episodes stored before texts had a detail line and a limit have neither.
        detail=data.get("detail", ""),
        acknowledged_by=data.get("acknowledged_by"),
        acknowledged_by_name=data.get("acknowledged_by_name"),
        resolved_by_name=data.get("resolved_by_name"),
        notes=tuple(
            Note(author, name, when, text)
            for author, name, at, text in data.get("notes", [])
            if (when := _parse(at)) is not None
        ),
        limit=_load_limit(data.get("limit")),
    )
