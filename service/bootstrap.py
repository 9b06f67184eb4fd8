"""Building the FHIR service from settings; shared by the web app and the CLI. Also how the web
app counts the service's writes and alerts in its Prometheus metrics."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from service.alerts.coverage import NotEvaluated
from service.alerts.episodes import Alert
from service.alerts.ingest import AlertListener, AlertService
from service.core.clock import Clock, system_clock
from service.core.registry import default_registry
from service.fhir.hooks import WriteEvent
from service.fhir.service import FhirService
from service.runtime import metrics
from service.settings import Settings
from service.storage.db import Connection, Database, on_commit
from service.subscriptions import Subscriptions
from service.validation import ProfileValidator


def open_database(settings: Settings, *, pool_size: int | None = None) -> Database:
    """A database handle for ``settings`` (``pool_size`` overrides the configured pool)."""
    return Database(
        settings.database_url,
        sqlite_synchronous=settings.sqlite_synchronous,
        pool_size=settings.db_pool_size if pool_size is None else pool_size,
    )


def build_service(
    settings: Settings,
    db: Database | None = None,
    *,
    alert_listeners: Iterable[AlertListener] = (),
    delivery_wakeup: threading.Event | None = None,
    clock: Clock = system_clock,
) -> FhirService:
    """The FHIR service over ``db`` (opened from ``settings`` when not given); its alert
    evaluation tells ``alert_listeners`` about every alert change that notifies.

    Subscriptions are always attached, so every Flag write queues its notifications whichever
    command writes it; ``delivery_wakeup`` is set when a transaction has queued some (for a
    delivery worker in this process). ``clock`` is where the service's "now" comes from (the
    real time; tests pin it).
    """
    profiles = ProfileValidator.load(settings.profiles_dir)
    fhir = FhirService(
        db or open_database(settings), default_registry(), profiles, settings, clock
    )
    Subscriptions(fhir, delivery_wakeup).attach()
    if settings.alerts_enabled:
        AlertService(fhir).attach().listeners.extend(alert_listeners)
    return fhir


def interaction_of(event: WriteEvent) -> str:
    """``create``, ``update`` or ``delete``: what the write did (re-creating a deleted one
    is a create)."""
    if event.resource is None:
        return "delete"
    return "create" if event.previous is None else "update"


def count_writes(_fhir: FhirService, conn: Connection, events: list[WriteEvent]) -> None:
    """FhirService write listener: count the events, and the vital signs no alert rule
    evaluates (the alert evaluation, an earlier listener, marked them), once their transaction
    commits."""
    for e in events:
        on_commit(conn, metrics.RESOURCES_WRITTEN.labels(e.res_type, interaction_of(e)).inc)
    for e in events:
        for w in e.warnings:
            if isinstance(w, NotEvaluated):
                on_commit(conn, metrics.NOT_EVALUATED.labels(w.reason).inc)


def count_alert(conn: Connection, alert: Alert) -> None:
    """AlertService listener: count a notifying alert change once its transaction commits."""
    labels = (alert.rule_id, alert.severity.label, alert.status.value)
    on_commit(conn, metrics.ALERT_NOTIFICATIONS.labels(*labels).inc)


def instrument(fhir: FhirService) -> None:
    """Count ``fhir``'s writes; only committed transactions count (a failed transaction
    Bundle or an aborted alert evaluation adds nothing)."""
    if count_writes not in fhir.listeners:
        fhir.listeners.append(count_writes)
