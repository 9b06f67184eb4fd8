"""Building the FHIR service from settings; shared by the web app and the CLI."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from service.alerts.ingest import AlertListener, AlertService
from service.core.clock import Clock, system_clock
from service.core.registry import default_registry
from service.fhir.service import FhirService
from service.settings import Settings
from service.storage.db import Database
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
