"""The FHIR resource service: create, read, update, delete, history and search.

Plain operations over typed values; the API layer maps HTTP onto them. :class:`FhirService` is
the facade: reads (:mod:`.reads`), writes (:mod:`.writes`) and the hooks other packages
register (:mod:`.hooks`) live in their own modules. Every write runs in one database
transaction that either commits completely or not at all.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from service.core.clock import Clock, system_clock
from service.core.dates import to_micros
from service.core.registry import Registry, ResourceType
from service.fhir.hooks import ContentHook, Hooks, WriteEvent, WriteListener
from service.fhir.reads import Reads
from service.fhir.writes import Writes
from service.settings import Settings
from service.storage.db import Connection, Database
from service.storage.repository import StoredVersion
from service.validation import ProfileValidator


def now_micros() -> int:
    """The current time in microseconds since the epoch."""
    return to_micros(datetime.now(UTC))


class FhirService:
    """CRUD, history and search over the configured database."""

    def __init__(
        self,
        db: Database,
        registry: Registry,
        profiles: ProfileValidator,
        settings: Settings,
        clock: Clock = system_clock,
    ) -> None:
        self.db = db
        #: Where "now" comes from: effective times in the future, lastUpdated, alert windows.
        self.clock = clock
        self.registry = registry
        self.profiles = profiles
        self.settings = settings
        self.zone = ZoneInfo(settings.timezone)
        self.language = settings.language
        self.hooks = Hooks()
        self.reads = Reads(db, registry, settings, self.zone)
        self.writes = Writes(self.reads, self.hooks, profiles, clock, self)
        # The facade's operations are the modules' own methods (one signature, one docstring,
        # where the work is): reads, then writes.
        self.resource_type = self.reads.resource_type
        self.compartment_of = self.reads.compartment_of
        self.compartment = self.reads.compartment
        self.visible = self.reads.visible
        self.transaction = self.reads.transaction
        self.read = self.reads.read
        self.vread = self.reads.vread
        self.history = self.reads.history
        self.parse_query = self.reads.parse_query
        self.search = self.reads.search
        self.lastn = self.reads.lastn
        self.prepare = self.writes.prepare
        self.validate = self.writes.validate
        self.now_micros = self.writes.now_micros
        self.stamp = self.writes.stamp
        self.check_references = self.writes.check_references
        self.insert_new = self.writes.insert_new
        self.create = self.writes.create
        self.create_in = self.writes.create_in
        self.new_version = self.writes.new_version
        self.store_new = self.writes.store_new
        self.conditional_match = self.writes.conditional_match
        self.update = self.writes.update
        self.update_in = self.writes.update_in
        self.store_many_in = self.writes.store_many_in
        self.delete = self.writes.delete
        self.delete_in = self.writes.delete_in
        self.patch = self.writes.patch
        self.patch_in = self.writes.patch_in
        self.conditional_update = self.writes.conditional_update
        self.conditional_update_in = self.writes.conditional_update_in
        self.conditional_target = self.writes.conditional_target
        self.conditional_patch = self.writes.conditional_patch
        self.conditional_delete = self.writes.conditional_delete

    # -- the registered hooks ----------------------------------------------------------------

    @property
    def listeners(self) -> list[WriteListener]:
        """Told, inside the write transaction, about every version clients write."""
        return self.hooks.listeners

    @property
    def authored_listeners(self) -> list[WriteListener]:
        """Told about the versions the server writes itself (:meth:`store_many_in`: alerts'
        Flags, Subscription status changes), which :attr:`listeners` never see."""
        return self.hooks.authored_listeners

    @property
    def content_hooks(self) -> dict[str, ContentHook]:
        """Type name → its handling of client-supplied content."""
        return self.hooks.content_hooks

    def notify(self, conn: Connection, events: list[WriteEvent]) -> None:
        """Tell every listener what was just written (inside the same transaction)."""
        self.hooks.notify(self, conn, events)

    def check_content(self, rtype: ResourceType, data: dict[str, Any]) -> None:
        """The type's content hook check (before the write transaction), if it has one."""
        self.hooks.check_content(rtype.name, data)

    def apply_content(
        self,
        conn: Connection,
        rtype: ResourceType,
        res_id: str,
        data: dict[str, Any],
        current: StoredVersion | None = None,
    ) -> dict[str, Any]:
        """The content to store after the type's content hook (inside the transaction)."""
        return self.hooks.apply_content(conn, rtype.name, res_id, data, current)
