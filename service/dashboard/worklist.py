"""The alerts worklist: open alert Flags, and acknowledging or resolving one.

Alerts are read as the Flags telemon raised (the same resources an EHR pulls), and a clinician's
acknowledge or resolve is an update of that Flag through :meth:`FhirService.update` — the very
path of an EHR's ``PUT /fhir/Flag/{id}``: the alert listener applies it to the episode
(:mod:`service.alerts.ingest`), so the Flag, the episode state and the audit trail agree.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from service.alerts.codes import ALERT_RULES
from service.alerts.episodes import (
    EXT_ACKNOWLEDGED,
    EXT_ACKNOWLEDGED_BY,
    EXT_LIMIT,
    EXT_NOTE,
    EXT_RESOLVED_BY,
    FLAG_DETAIL,
    FLAG_PRIORITY,
)
from service.audit.events import Touched
from service.core.messages import message
from service.core.outcome import FhirError
from service.fhir.reads import VersionResult
from service.fhir.service import FhirService
from service.fhir.writes import TransactionHook
from service.storage.repository import StoredVersion

#: Flag priority code → (severity level, rank for sorting: most urgent first).
PRIORITIES = {"PH": ("red", 0), "PM": ("orange", 1), "PL": ("info", 2)}
#: Most rows one dashboard list reads (more are reported, not silently dropped).
MAX_ROWS = 2000


class AlertActionError(Exception):
    """An acknowledge or resolve that cannot be done: ``key`` names the catalogue's text
    (``str()`` is the English one, for logs and the audit trail)."""

    def __init__(self, key: str) -> None:
        super().__init__(message(key, "en"))
        self.key = key


@dataclass(frozen=True, slots=True)
class PatientName:
    """A patient as listed: id, display name, birth date and BSN (when known)."""

    patient_id: str
    name: str
    birth_date: str | None = None
    gender: str | None = None
    bsn: str | None = None

    @property
    def bsn_last4(self) -> str | None:
        """The BSN's last four digits, for the two-identifier check from a list."""
        return self.bsn[-4:] if self.bsn and len(self.bsn) >= 4 else None

    def age(self, today: date) -> int | None:
        """Age in whole years on ``today`` (None without a full birth date)."""
        try:
            born = date.fromisoformat(self.birth_date or "")
        except ValueError:
            return None
        return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


@dataclass(frozen=True, slots=True)
class NoteItem:
    """A clinician's note on an alert."""

    author: str
    time: datetime
    text: str


@dataclass(frozen=True, slots=True)
class FiredLimit:
    """The limit an alert fired on (the Flag's ``alert-limit``), as the chart draws it."""

    concept: str
    op: str
    value: float
    unit: str
    personal: bool
    since: datetime | None


@dataclass(frozen=True, slots=True)
class AlertItem:
    """One alert, as read from its Flag."""

    flag_id: str
    version: int
    patient_id: str
    rule_id: str
    rule_title: str
    text: str
    priority: str  # PH, PM or PL
    status: str  # active, inactive, entered-in-error
    start: datetime
    end: datetime | None
    acknowledged_at: datetime | None
    evidence: tuple[str, ...]
    acknowledged_by: str | None = None  # the clinician's name (or reference)
    resolved_by: str | None = None
    notes: tuple[NoteItem, ...] = ()
    limit: FiredLimit | None = None

    @property
    def headline(self) -> str:
        """The text's first line: finding, value, limit, when."""
        return self.text.split("\n", 1)[0]

    @property
    def finding(self) -> str:
        """The headline without the rule's title it leads with (shown right above it)."""
        return self.headline.removeprefix(f"{self.rule_title}: ")

    @property
    def details(self) -> list[str]:
        """The text's further lines: how it was computed, merged findings."""
        return self.text.split("\n")[1:]

    @property
    def level(self) -> str:
        """The severity level: red, orange or info."""
        return PRIORITIES.get(self.priority, ("info", 2))[0]

    @property
    def is_open(self) -> bool:
        """Active (not resolved or retracted)."""
        return self.status == "active"

    def age(self, now: datetime, language: str = "en") -> str:
        """How long ago the alert started, e.g. ``2 d 5 h`` or ``40 min``."""
        return duration(now - self.start, language)


def duration(span: timedelta, language: str = "en") -> str:
    """A time span as clinicians read it: ``2 d 5 h``, ``3 h 10 min`` or ``40 min``
    (``u`` for hours in Dutch)."""
    seconds = max(0, int(span.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    h = "h" if language == "en" else "u"
    if days:
        return f"{days} d {hours} {h}"
    if hours:
        return f"{hours} {h} {rest // 60} min"
    return f"{rest // 60} min" if rest >= 60 else "< 1 min"


def _instant(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def is_alert_flag(flag: dict[str, Any]) -> bool:
    """Whether a Flag is one of telemon's alerts (its code is an alert rule)."""
    return any(c.get("system") == ALERT_RULES for c in flag.get("code", {}).get("coding", []))


def alert_item(stored: StoredVersion) -> AlertItem | None:
    """The alert behind a stored Flag; None for a Flag that is not one of telemon's alerts."""
    flag = orjson.loads(stored.content or "{}")
    start = _instant(flag.get("period", {}).get("start"))
    if not is_alert_flag(flag) or start is None:
        return None
    coding = next(c for c in flag["code"]["coding"] if c.get("system") == ALERT_RULES)
    extensions = flag.get("extension", [])
    priority = "PL"
    acknowledged = None
    evidence = []
    actors: dict[str, str] = {}
    notes: list[NoteItem] = []
    limit = None
    for ext in extensions:
        url = ext.get("url")
        if url == FLAG_PRIORITY:
            codings = ext.get("valueCodeableConcept", {}).get("coding", [])
            priority = next((c["code"] for c in codings if c.get("code") in PRIORITIES), "PL")
        elif url == EXT_ACKNOWLEDGED:
            acknowledged = _instant(ext.get("valueDateTime"))
        elif url == FLAG_DETAIL:
            reference = ext.get("valueReference", {}).get("reference", "")
            if reference.startswith("Observation/"):
                evidence.append(reference.removeprefix("Observation/"))
        elif url in (EXT_ACKNOWLEDGED_BY, EXT_RESOLVED_BY):
            who = ext.get("valueReference", {})
            actors[url] = str(who.get("display") or who.get("reference") or "")
        elif url == EXT_NOTE:
            note = _note(ext.get("valueAnnotation", {}))
            if note is not None:
                notes.append(note)
        elif url == EXT_LIMIT:
            limit = _limit(ext)
    subject = flag.get("subject", {}).get("reference", "")
    return AlertItem(
        flag_id=stored.res_id,
        version=stored.version_id,
        patient_id=subject.removeprefix("Patient/"),
        rule_id=str(coding.get("code", "")),
        rule_title=str(coding.get("display") or coding.get("code", "")),
        text=str(flag.get("code", {}).get("text", "")),
        priority=priority,
        status=str(flag.get("status", "")),
        start=start,
        end=_instant(flag.get("period", {}).get("end")),
        acknowledged_at=acknowledged,
        evidence=tuple(evidence),
        acknowledged_by=actors.get(EXT_ACKNOWLEDGED_BY),
        resolved_by=actors.get(EXT_RESOLVED_BY),
        notes=tuple(notes),
        limit=limit,
    )


def _note(annotation: dict[str, Any]) -> NoteItem | None:
    when = _instant(annotation.get("time"))
    author = annotation.get("authorReference", {})
    if when is None or not annotation.get("text"):
        return None
    name = author.get("display") or author.get("reference") or ""
    return NoteItem(str(name), when, str(annotation["text"]))


def _limit(ext: dict[str, Any]) -> FiredLimit | None:
    parts = {p.get("url"): p for p in ext.get("extension", [])}
    quantity = parts.get("value", {}).get("valueQuantity", {})
    concept = parts.get("concept", {}).get("valueCode")
    value = quantity.get("value")
    if not concept or not isinstance(value, int | float):
        return None
    return FiredLimit(
        str(concept),
        str(quantity.get("comparator", "")),
        float(value),
        str(quantity.get("unit", "")),
        bool(parts.get("personal", {}).get("valueBoolean")),
        _instant(parts.get("since", {}).get("valueDateTime")),
    )


def patient_name(stored: StoredVersion) -> PatientName:
    """A stored Patient as listed (official name first)."""
    patient = orjson.loads(stored.content or "{}")
    names = patient.get("name") or [{}]
    name = next((n for n in names if n.get("use") == "official"), names[0])
    text = name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip()
    bsn = next(
        (
            i.get("value")
            for i in patient.get("identifier", [])
            if i.get("system", "").endswith("/bsn")
        ),
        None,
    )
    return PatientName(
        stored.res_id,
        text or f"Patient/{stored.res_id}",
        patient.get("birthDate"),
        patient.get("gender"),
        bsn,
    )


def search_all(
    fhir: FhirService, res_type: str, params: Sequence[tuple[str, str]], limit: int = MAX_ROWS
) -> tuple[list[StoredVersion], list[StoredVersion], bool]:
    """Every match of a search (page by page, at most ``limit``), its includes, and whether
    more matches were left unread."""
    matches: list[StoredVersion] = []
    included: list[StoredVersion] = []
    page_params = [*params, ("_count", "500")]
    while True:
        result = fhir.search(res_type, page_params, strict=True)
        matches.extend(result.matches)
        included.extend(result.included)
        if result.next_cursor is None:
            return matches, included, False
        if len(matches) >= limit:
            return matches[:limit], included, True
        page_params = [*params, ("_count", "500"), ("_cursor", result.next_cursor)]


def touched(rows: Sequence[StoredVersion], fhir: FhirService) -> Iterator[Touched]:
    """The audit trail's record of stored versions shown to the clinician."""
    for row in rows:
        yield Touched(row.res_type, row.res_id, row.version_id, fhir.compartment(row))


@dataclass(frozen=True, slots=True)
class AlertGroup:
    """A patient's concurrent open alerts: the most urgent one, the others inside its row."""

    main: AlertItem
    others: tuple[AlertItem, ...] = ()

    @property
    def items(self) -> tuple[AlertItem, ...]:
        """Every alert of the group, most urgent first."""
        return (self.main, *self.others)

    @property
    def patient_id(self) -> str:
        """The patient the group belongs to."""
        return self.main.patient_id


def group_by_patient(items: Sequence[AlertItem]) -> list[AlertGroup]:
    """One group per patient, in the order of each patient's most urgent alert (``items`` are
    sorted by :func:`sort_key`): one decompensation is one row, not three."""
    groups: dict[str, list[AlertItem]] = {}
    for item in items:
        groups.setdefault(item.patient_id, []).append(item)
    return [AlertGroup(found[0], tuple(found[1:])) for found in groups.values()]


@dataclass(slots=True)
class Worklist:
    """The open alerts: to acknowledge, and acknowledged but still open."""

    new: list[AlertItem]
    acknowledged: list[AlertItem]
    patients: dict[str, PatientName]
    truncated: bool
    touched: list[Touched]
    #: Per patient shown: when the last measurement of each kind arrived (chart key → time).
    last_seen: dict[str, dict[str, datetime]] = field(default_factory=dict)

    @property
    def new_groups(self) -> list[AlertGroup]:
        """The alerts to handle, one row per patient."""
        return group_by_patient(self.new)

    @property
    def acknowledged_groups(self) -> list[AlertGroup]:
        """The acknowledged open alerts, one row per patient."""
        return group_by_patient(self.acknowledged)


def sort_key(item: AlertItem) -> tuple[int, datetime]:
    """Most urgent priority first; within a priority the longest-waiting first."""
    return PRIORITIES.get(item.priority, ("info", 2))[1], item.start


def load_worklist(fhir: FhirService) -> Worklist:
    """Every open alert Flag with its patient, sorted by priority and then age."""
    flags, included, truncated = search_all(
        fhir, "Flag", [("status", "active"), ("_include", "Flag:patient")]
    )
    items = sorted((i for i in map(alert_item, flags) if i is not None), key=sort_key)
    patients = {p.res_id: patient_name(p) for p in included if p.res_type == "Patient"}
    shown = {i.flag_id for i in items}
    return Worklist(
        new=[i for i in items if i.acknowledged_at is None],
        acknowledged=[i for i in items if i.acknowledged_at is not None],
        patients=patients,
        truncated=truncated,
        touched=list(touched([f for f in flags if f.res_id in shown] + included, fhir)),
    )


def _instant_text(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _open_flag(fhir: FhirService, flag_id: str, version: int) -> dict[str, Any]:
    """The current Flag of an open alert at ``version``; AlertActionError otherwise."""
    try:
        current = fhir.read("Flag", flag_id)
    except FhirError as exc:
        raise AlertActionError("ui.error.gone") from exc
    flag: dict[str, Any] = orjson.loads(current.content or "{}")
    if not is_alert_flag(flag):
        raise AlertActionError("ui.error.not_alert")
    if current.version_id != version:
        raise AlertActionError("ui.error.changed")
    if flag.get("status") != "active":
        raise AlertActionError("ui.error.closed")
    return copy.deepcopy(flag)


def _update(
    fhir: FhirService,
    flag: dict[str, Any],
    version: int,
    in_transaction: TransactionHook | None,
) -> VersionResult:
    try:
        return fhir.update(
            "Flag", flag["id"], flag, if_match=f'W/"{version}"', in_transaction=in_transaction
        )
    except FhirError as exc:
        if exc.status == 412:
            raise AlertActionError("ui.error.changed") from exc
        raise


@dataclass(frozen=True, slots=True)
class Clinician:
    """Who acts from the dashboard: ``Practitioner/<id>`` and the name shown."""

    reference: str
    name: str

    def as_reference(self) -> dict[str, str]:
        """A FHIR Reference to the clinician, with the name as display."""
        return {"reference": self.reference, "display": self.name}


def _sign(
    flag: dict[str, Any], url: str, by: Clinician | None, note: str, at: datetime
) -> None:
    """Name the clinician on the Flag (``url``) and add the note as an Annotation."""
    extensions = flag.setdefault("extension", [])
    if by is not None:
        extensions.append({"url": url, "valueReference": by.as_reference()})
    if note and by is not None:
        annotation = {"authorReference": by.as_reference(), "time": _instant_text(at), "text": note}
        extensions.append({"url": EXT_NOTE, "valueAnnotation": annotation})


def acknowledge(
    fhir: FhirService,
    flag_id: str,
    version: int,
    at: datetime,
    in_transaction: TransactionHook | None = None,
    by: Clinician | None = None,
    note: str = "",
) -> VersionResult:
    """Acknowledge an open alert (seen, being handled): the Flag gets the acknowledged mark.

    ``version`` is the Flag version the clinician saw: a Flag changed since (an upgrade to a
    higher severity, an EHR's update) is not acknowledged blindly. ``in_transaction`` runs in
    the update's transaction (the clinician's AuditEvent).
    """
    flag = _open_flag(fhir, flag_id, version)
    extensions = flag.setdefault("extension", [])
    if any(e.get("url") == EXT_ACKNOWLEDGED for e in extensions):
        raise AlertActionError("ui.error.acknowledged")
    extensions.append({"url": EXT_ACKNOWLEDGED, "valueDateTime": _instant_text(at)})
    _sign(flag, EXT_ACKNOWLEDGED_BY, by, note, at)
    return _update(fhir, flag, version, in_transaction)


def resolve(
    fhir: FhirService,
    flag_id: str,
    version: int,
    at: datetime,
    in_transaction: TransactionHook | None = None,
    by: Clinician | None = None,
    note: str = "",
) -> VersionResult:
    """Resolve an open alert: the Flag becomes inactive and the episode ends at ``at``
    (``in_transaction``: see :func:`acknowledge`; ``by``: the clinician, named on the Flag)."""
    flag = _open_flag(fhir, flag_id, version)
    flag["status"] = "inactive"
    flag.setdefault("period", {})["end"] = _instant_text(at)
    _sign(flag, EXT_RESOLVED_BY, by, note, at)
    return _update(fhir, flag, version, in_transaction)
