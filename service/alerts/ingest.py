"""Alert evaluation over stored data: at ingest (inside the write's transaction) and the sweep.

This is the one module of :mod:`service.alerts` that touches storage: it loads a patient's
enrolment (CarePlans, Goals), measurement window and open episodes, runs the pure engine, and
writes the resulting episode state and Flags in the same transaction as the triggering write —
so an alert is visible to the very next read, and a rolled-back write leaves no alert.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from service.alerts.codes import ALERT_RULES
from service.alerts.coverage import not_evaluated
from service.alerts.engine import evaluate, sweep_missing, window_start
from service.alerts.episodes import (
    EXT_ACKNOWLEDGED,
    EXT_ACKNOWLEDGED_BY,
    EXT_NOTE,
    EXT_RESOLVED_BY,
    Alert,
    AlertStatus,
    EpisodeChange,
    Note,
    acknowledge,
    resolve,
    to_flag,
)
from service.alerts.measurements import Measurement, ObservationError, from_observation
from service.alerts.personalisation import (
    Override,
    PatientConfig,
    Pause,
    RuleToggle,
    overrides_from_goal,
)
from service.alerts.rules import default_rule_set
from service.alerts.state import dump_alert, load_alert
from service.core.dates import DateFormatError, from_micros, parse_range, to_micros
from service.core.indexing import split_reference
from service.fhir.hooks import WriteEvent
from service.fhir.service import FhirService
from service.storage import alert_store, search_sql
from service.storage import repository as repo
from service.storage.db import Connection
from service.storage.repository import StoredVersion

log = logging.getLogger(__name__)

PLAN_BASE = "http://telemon.example.org/fhir/PlanDefinition"
PROGRAMMES = {f"{PLAN_BASE}/heart-failure": "HF", f"{PLAN_BASE}/copd": "COPD"}
PAUSE_EXTENSION = "http://telemon.example.org/fhir/StructureDefinition/monitoring-pause"
#: Closed episodes younger than this still matter (cooldown, evidence already handled).
EPISODE_MEMORY = timedelta(days=30)
#: How far back the sweep looks for the last measurement of each kind.
SWEEP_LOOKBACK = timedelta(days=21)
#: Rows per page when loading CarePlans and measurement windows (all pages are read).
PAGE_SIZE = 1000

#: Told about every alert change that needs a notification (subscriptions plug in here).
AlertListener = Callable[[Connection, Alert], None]


@dataclass(slots=True)
class SweepSummary:
    """What one run of the missing-data sweep did."""

    patients: int
    changes: int


def _parse_time(text: str | None, zone: ZoneInfo, *, end: bool = False) -> datetime | None:
    """A FHIR date/dateTime/instant as an aware UTC datetime; None when absent or unreadable.

    A date without a time (``"2026-11-01"``, also ``"2026-11"``, ``"2026"``) is a local period
    in ``zone``: its first moment, or with ``end`` the moment just after it, so that an end date
    includes its whole day.  (``datetime.fromisoformat`` would return a naive datetime here,
    which cannot be compared with the aware effective times of measurements.)
    """
    if not text:
        return None
    try:
        low, high = parse_range(text, zone)
        return from_micros(high + 1 if end else low)
    except (DateFormatError, OverflowError):
        return None


class AlertService:
    """Runs the alert engine whenever Observations (or alert Flags) are written."""

    def __init__(self, fhir: FhirService) -> None:
        self.fhir = fhir
        self.listeners: list[AlertListener] = []

    def attach(self) -> AlertService:
        """Evaluate alerts on every write of the FHIR service from now on."""
        self.fhir.listeners.append(self.on_write)
        return self

    # -- the write hook ------------------------------------------------------------------------

    def on_write(self, fhir: FhirService, conn: Connection, events: list[WriteEvent]) -> None:
        """Re-evaluate the patients whose Observations changed; apply EHR changes to Flags."""
        changed: dict[str, list[WriteEvent]] = {}
        for event in events:
            if event.res_type == "Observation" and event.patient_id:
                changed.setdefault(event.patient_id, []).append(event)
            elif event.res_type == "Flag" and event.resource is not None:
                self._flag_written(conn, event.resource)
        # Several patients (a batch of creates, a Bundle): their enrolments in one query.
        plans = (
            repo.compartment_contents_of(conn, "CarePlan", list(changed))
            if len(changed) > 1
            else None
        )
        for patient_id, patient_events in changed.items():
            self.evaluate_patient(
                conn, patient_id, patient_events, None if plans is None else plans[patient_id]
            )

    def evaluate_patient(
        self,
        conn: Connection,
        patient_id: str,
        events: list[WriteEvent],
        plans: list[str] | None = None,
    ) -> list[EpisodeChange]:
        """Evaluate one patient after the given Observation writes.

        ``plans``: the JSON of the patient's CarePlans, when the caller has read them already.
        """
        config = self.load_config(conn, patient_id, plans)
        if config is None:
            return []  # not enrolled in a programme: nothing to evaluate
        now = self.fhir.clock()
        for event in events:
            self._warn_if_not_evaluated(event, config, now)
        repo.lock_key(conn, f"alerts:{patient_id}")  # one evaluation per patient at a time
        # Parsed once: the window query skips what was just written instead of re-reading it.
        received = to_micros(now)
        changed = [m for e in events for m in _measurements(_as_written(e), received)]
        if not changed:
            return []
        written = {e.res_id for e in events}
        measurements = self._window(conn, patient_id, window_start(changed), skip=written)
        measurements += changed
        episodes = self._episodes(conn, patient_id, now)
        changes = evaluate(
            config, measurements, episodes, now, changed=sorted({e.res_id for e in events})
        )
        self._apply(conn, changes, now, episodes, config.programmes)
        return changes

    def _warn_if_not_evaluated(
        self, event: WriteEvent, config: PatientConfig, now: datetime
    ) -> None:
        """A vital sign no rule of the patient's programmes reads: warn (event, log)."""
        if event.resource is None:
            return
        warning = not_evaluated(event.resource, config, default_rule_set(), now)
        if warning is not None:
            event.warnings.append(warning)
            log.warning(
                "Observation/%s of Patient/%s is not evaluated by any alert rule (%s): %s",
                event.res_id,
                event.patient_id,
                warning.reason,
                warning.diagnostics,
            )

    def _flag_written(self, conn: Connection, flag: dict[str, Any]) -> None:
        """An EHR updated an alert's Flag: acknowledge or resolve the episode behind it."""
        state = alert_store.get(conn, str(flag.get("id")))
        if state is None:
            return  # a Flag telemon did not raise
        alert = load_alert(state)
        now = self.fhir.clock()
        status = flag.get("status")
        extensions = flag.get("extension", [])
        # A clinician named on the Flag (the dashboard names its user); an EHR otherwise.
        resolver = _reference(extensions, EXT_RESOLVED_BY)
        by, by_name = resolver if resolver is not None else ("ehr", None)
        if status == AlertStatus.INACTIVE and alert.status == AlertStatus.ACTIVE:
            alert = replace(resolve(alert, now, by=by), resolved_by_name=by_name)
        elif status == AlertStatus.ENTERED_IN_ERROR:
            alert = resolve(alert, now, by=by)
            alert = Alert(**{**_fields(alert), "status": AlertStatus.ENTERED_IN_ERROR})
        marks = [e for e in extensions if e.get("url") == EXT_ACKNOWLEDGED]
        if marks and alert.acknowledged_at is None:
            # The EHR's own acknowledgement time (never in the future), else when we saw it.
            stated = _parse_time(marks[0].get("valueDateTime"), self.fhir.zone)
            alert = acknowledge(alert, min(stated, now) if stated is not None else now)
            acknowledger = _reference(extensions, EXT_ACKNOWLEDGED_BY)
            if acknowledger is not None:
                alert = replace(
                    alert, acknowledged_by=acknowledger[0], acknowledged_by_name=acknowledger[1]
                )
        notes = _notes(extensions, self.fhir.zone)
        if notes:
            alert = replace(alert, notes=tuple(dict.fromkeys((*alert.notes, *notes))))
        alert_store.save(conn, [dump_alert(alert)], now=to_micros(now))

    # -- loading -----------------------------------------------------------------------------

    def _rows(
        self, conn: Connection, res_type: str, params: list[tuple[str, str]]
    ) -> Iterator[StoredVersion]:
        """Every current match of a search, page by page (not just the first page)."""
        rtype = self.fhir.resource_type(res_type)
        query, _ = self.fhir.parse_query(rtype, params, strict=True)
        query.count = PAGE_SIZE
        while True:
            page = search_sql.search(conn, query)
            yield from page.rows
            if page.next_cursor is None:
                return
            query.cursor = page.next_cursor

    def load_config(
        self, conn: Connection, patient_id: str, plans: list[str] | None = None
    ) -> PatientConfig | None:
        """The patient's programmes, personal thresholds, rule toggles and pauses.

        Enrolment is an active CarePlan instantiating a programme's PlanDefinition; its Goals
        carry personal thresholds; ``activity.detail`` with an alert-rule code and
        ``doNotPerform`` toggles a rule; the ``monitoring-pause`` extension pauses monitoring.
        ``plans`` are the patient's CarePlans as JSON, when already read.
        """
        # One indexed query; an unenrolled patient (the common case) costs nothing more.
        if plans is None:
            plans = repo.compartment_contents(conn, "CarePlan", patient_id)
        active = [plan for plan in map(orjson.loads, plans) if plan.get("status") == "active"]
        programmes: set[str] = set()
        overrides: list[Override] = []
        toggles: list[RuleToggle] = []
        pauses: list[Pause] = []
        goal_ids: set[str] = set()
        for plan in active:
            programmes.update(
                PROGRAMMES[c] for c in plan.get("instantiatesCanonical", []) if c in PROGRAMMES
            )
            start = _plan_start(plan, self.fhir.zone)
            for goal in plan.get("goal", []):
                target = split_reference(goal.get("reference", ""))
                if target and target[0] == "Goal":
                    goal_ids.add(target[1])
            toggles.extend(_toggles(plan, start))
            pauses.extend(_pauses(plan, self.fhir.zone))
        if not programmes:
            return None
        goals = repo.fetch_many_current(conn, (("Goal", g) for g in goal_ids))
        for stored in goals.values():
            goal = orjson.loads(stored.content or "{}")
            if goal.get("lifecycleStatus") in ("active", "accepted", None):
                try:
                    overrides.extend(overrides_from_goal(goal, from_micros(stored.last_updated)))
                except ValueError as exc:  # a Goal the engine cannot read is skipped, not fatal
                    log.warning("Goal/%s not used for thresholds: %s", stored.res_id, exc)
        return PatientConfig(
            patient_id=patient_id,
            programmes=frozenset(programmes),
            overrides=tuple(overrides),
            toggles=tuple(toggles),
            pauses=tuple(pauses),
            tz=self.fhir.zone,
            language=self.fhir.language,
        )

    def _window(
        self,
        conn: Connection,
        patient_id: str,
        start: datetime,
        skip: AbstractSet[str] = frozenset(),
    ) -> list[Measurement]:
        """The patient's measurements from ``start`` on, except the Observations in ``skip``."""
        since = start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
        out: list[Measurement] = []
        for row in self._rows(
            conn, "Observation", [("patient", patient_id), ("date", f"ge{since}")]
        ):
            if row.res_id not in skip:
                out.extend(_measurements(orjson.loads(row.content or "{}"), row.last_updated))
        return out

    def _episodes(self, conn: Connection, patient_id: str, now: datetime) -> list[Alert]:
        since = to_micros(now - EPISODE_MEMORY)
        return [load_alert(s) for s in alert_store.load(conn, patient_id, since=since)]

    # -- writing -----------------------------------------------------------------------------

    def _apply(
        self,
        conn: Connection,
        changes: Iterable[EpisodeChange],
        now: datetime,
        before: Iterable[Alert] = (),
        enrolled: AbstractSet[str] = frozenset(),
    ) -> int:
        """Store the alerts that changed (episode state and Flag), notify; return how many.

        ``before`` are the episodes as loaded for this evaluation; ``enrolled`` the patient's
        programmes (HF, COPD), which general rules' Flags carry.  An outcome that leaves an
        episode exactly as stored writes nothing: a reading suppressed in a cooldown comes back
        as the unchanged closed alert, and rewriting it would add a Flag version on every
        re-evaluation and overwrite the EHR's own update of that Flag (idempotent re-evaluation,
        docs/alerts/engine.md#episodes).
        """
        stored = {alert.id: alert for alert in before}
        latest: dict[str, Alert] = {}
        for change in changes:
            if change.alert is None:
                continue
            latest[change.alert.id] = change.alert  # an alert may change twice in one run
            if change.notify:
                for listener in self.listeners:
                    listener(conn, change.alert)
        changed = [alert for alert in latest.values() if stored.get(alert.id) != alert]
        if not changed:
            return 0
        alert_store.save(conn, [dump_alert(a) for a in changed], now=to_micros(now))
        language = self.fhir.language
        flags = [
            (a.id, to_flag(a, _programme_urls(a.rule_id, enrolled), language)) for a in changed
        ]
        self.fhir.store_many_in(conn, self.fhir.resource_type("Flag"), flags)
        return len(changed)

    # -- the sweep -----------------------------------------------------------------------------

    def sweep(self, now: datetime | None = None) -> SweepSummary:
        """Evaluate the missing-data rules for every enrolled patient (idempotent)."""
        now = now or self.fhir.clock()
        with self.fhir.db.read() as conn:
            # The compartment is on each row: no CarePlan JSON needs parsing here.
            rows = self._rows(conn, "CarePlan", [("status", "active")])
            patients = sorted({row.patient_id for row in rows if row.patient_id})
        changes = 0
        for patient_id in patients:
            with self.fhir.db.write() as conn:
                config = self.load_config(conn, patient_id)
                if config is None:
                    continue
                repo.lock_key(conn, f"alerts:{patient_id}")
                measurements = self._window(conn, patient_id, now - SWEEP_LOOKBACK)
                episodes = self._episodes(conn, patient_id, now)
                found = sweep_missing(config, measurements, episodes, now)
                changes += self._apply(conn, found, now, episodes, config.programmes)
        return SweepSummary(len(patients), changes)


def _programme_urls(rule_id: str, enrolled: AbstractSet[str]) -> list[str]:
    """The PlanDefinition URLs of an alert's programmes: its rule's programme, or for a general
    rule (GEN) every programme the patient is enrolled in."""
    try:
        programme = default_rule_set().get(rule_id).programme
    except KeyError:  # a rule no longer in the rule set: no programme to name
        return []
    wanted = set(enrolled) if programme == "GEN" else {programme}
    return sorted(url for url, name in PROGRAMMES.items() if name in wanted)


def _as_written(event: WriteEvent) -> dict[str, Any]:
    """The Observation as written; a deletion counts as entered-in-error of the old version."""
    if event.resource is not None:
        return event.resource
    old = orjson.loads(event.previous or "{}")
    return {**old, "status": "entered-in-error"}


def _measurements(resource: dict[str, Any], received: int | None) -> list[Measurement]:
    try:
        return from_observation(resource, from_micros(received) if received else None)
    except ObservationError as exc:  # not a measurement the rules know: stored, not evaluated
        log.debug("Observation/%s not evaluated: %s", resource.get("id"), exc)
        return []


def _plan_start(plan: dict[str, Any], zone: ZoneInfo) -> datetime:
    """When the CarePlan's rule toggles start: ``period.start``, else its ``lastUpdated``."""
    start = _parse_time(plan.get("period", {}).get("start"), zone)
    if start is None:
        start = _parse_time(plan.get("meta", {}).get("lastUpdated"), zone)
    return start or datetime(2000, 1, 1, tzinfo=UTC)


def _toggles(plan: dict[str, Any], start: datetime) -> Iterable[RuleToggle]:
    for activity in plan.get("activity", []):
        detail = activity.get("detail", {})
        for coding in detail.get("code", {}).get("coding", []):
            if coding.get("system") == ALERT_RULES and "code" in coding:
                yield RuleToggle(
                    coding["code"], not detail.get("doNotPerform", False), valid_from=start
                )


def _pauses(plan: dict[str, Any], zone: ZoneInfo) -> Iterable[Pause]:
    """The CarePlan's monitoring pauses (an end date includes that whole local day)."""
    for ext in plan.get("extension", []):
        if ext.get("url") == PAUSE_EXTENSION and "valuePeriod" in ext:
            period = ext["valuePeriod"]
            start = _parse_time(period.get("start"), zone)
            if start is not None:
                end = _parse_time(period.get("end"), zone, end=True)
                yield Pause(start, end, ext.get("id", ""))


def _reference(extensions: list[dict[str, Any]], url: str) -> tuple[str, str | None] | None:
    """(reference, display) of the first ``url`` extension naming a Practitioner."""
    for ext in extensions:
        who = ext.get("valueReference") if ext.get("url") == url else None
        if isinstance(who, dict) and str(who.get("reference", "")).startswith("Practitioner/"):
            return str(who["reference"]), who.get("display")
    return None


def _notes(extensions: list[dict[str, Any]], zone: ZoneInfo) -> list[Note]:
    """The ``alert-note`` Annotations on a Flag (those with a text and a time)."""
    found = []
    for ext in extensions:
        note = ext.get("valueAnnotation") if ext.get("url") == EXT_NOTE else None
        if not isinstance(note, dict) or not note.get("text"):
            continue
        when = _parse_time(note.get("time"), zone)
        author = note.get("authorReference") or {}
        if when is not None and isinstance(author, dict):
            name = author.get("display") or ""
            found.append(Note(str(author.get("reference", "")), name, when, str(note["text"])))
    return found


def _fields(alert: Alert) -> dict[str, Any]:
    return {name: getattr(alert, name) for name in Alert.__dataclass_fields__}
