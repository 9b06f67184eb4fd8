"""Storing AuditEvents: append-only, through the normal resource storage.

AuditEvents are stored resources (so they are searchable, and a patient can find those about
them through the ``patient`` compartment) but the API refuses to create, update or delete them
(the type is read-only in the registry). Only this module writes them.
"""

from __future__ import annotations

import uuid
from typing import Any

from service.audit.events import AccessRecord, Actor, build
from service.fhir.dates import format_instant
from service.fhir.service import FhirService, now_micros
from service.storage import repository as repo


class AuditTrail:
    """Writes the AuditEvents of accesses."""

    def __init__(self, fhir: FhirService) -> None:
        self.fhir = fhir
        rtype = fhir.registry.get("AuditEvent")
        assert rtype is not None, "AuditEvent must be a registered type"
        self.rtype = rtype

    def record(self, actor: Actor, record: AccessRecord) -> list[dict[str, Any]]:
        """Write the events of one access (in one transaction); returns them."""
        now = now_micros()
        recorded = format_instant(now - now % 1000)  # millisecond precision (BALP)
        events = build(actor, record, recorded)
        items = [self.fhir.stamp(self.rtype, event, str(uuid.uuid4()), 1, now) for event in events]
        with self.fhir.db.write() as conn:
            repo.insert_resources(conn, items)
        return events
