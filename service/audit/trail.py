"""Storing AuditEvents: append-only, through the normal resource storage.

AuditEvents are stored resources (so they are searchable, and a patient can find those about
them through the ``patient`` compartment) but the API refuses to create, update or delete them
(the type is read-only in the registry). Only this module writes them.

An access is audited atomically with it (NEN 7513): the events of a write go into the write's
own transaction (:meth:`AuditTrail.write_in`, or :meth:`AuditTrail.versions` stored alongside
a group-committed create), a read's on PostgreSQL (a search, a read by id or version, a
history, ``$everything``) into the read's own transaction (:meth:`AuditTrail.write_in`
again), and those of other reads, a refusal or a failure are committed before the response is
sent, many requests' events in one transaction (:meth:`AuditTrail.store_batch`, driven by the
API's group commit).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import orjson

from service.audit.events import AccessRecord, Actor, build, index_values
from service.core.dates import format_instant
from service.fhir.service import FhirService, now_micros
from service.storage import repository as repo
from service.storage.db import Connection
from service.storage.repository import NewVersion


class AuditTrail:
    """Builds and writes the AuditEvents of accesses."""

    def __init__(self, fhir: FhirService) -> None:
        self.fhir = fhir
        rtype = fhir.registry.get("AuditEvent")
        assert rtype is not None, "AuditEvent must be a registered type"
        self.rtype = rtype

    def versions(self, actor: Actor, record: AccessRecord) -> list[NewVersion]:
        """The events of one access, ready to store (one per patient concerned).

        Stamped as :meth:`FhirService.stamp` would, with the index computed from the event's
        known shape rather than by walking the registry's paths (a test holds them equal).
        """
        now = now_micros()
        millis = now - now % 1000
        recorded = format_instant(millis)  # millisecond precision (BALP)
        out = []
        for event in build(actor, record, recorded):
            res_id = str(uuid.uuid4())
            resource = {
                "resourceType": "AuditEvent",
                "id": res_id,
                "meta": {"versionId": "1", "lastUpdated": recorded},
                **{k: v for k, v in event.items() if k != "resourceType"},
            }
            content = orjson.dumps(resource).decode()
            index = index_values(event, millis)
            out.append(NewVersion("AuditEvent", res_id, 1, now, content, index, resource))
        return out

    def write_in(self, conn: Connection, actor: Actor, record: AccessRecord) -> None:
        """Write the events of one access into ``conn``'s (the access's own) transaction."""
        repo.insert_resources(conn, self.versions(actor, record))

    def store_batch(self, batch: Sequence[Sequence[NewVersion]]) -> list[Exception | None]:
        """Store the events of several accesses in one transaction (group commit).

        Each access's outcome is its own: when the shared transaction fails, each is stored
        alone, so that one bad event cannot leave the others unaudited.
        """
        try:
            with self.fhir.db.write() as conn:
                repo.insert_resources(conn, [v for versions in batch for v in versions])
            return [None] * len(batch)
        except Exception as exc:
            if len(batch) == 1:
                return [exc]
        results: list[Exception | None] = []
        for versions in batch:
            try:
                with self.fhir.db.write() as conn:
                    repo.insert_resources(conn, versions)
                results.append(None)
            except Exception as exc:
                results.append(exc)
        return results
