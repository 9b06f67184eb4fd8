"""The FHIR resource service: create, read, update, delete, history and search.

Plain operations over typed values; the API layer maps HTTP onto them. :class:`FhirService` is
the facade: reads (:mod:`.reads`), writes (:mod:`.writes`) and the hooks other packages
register (:mod:`.hooks`) live in their own modules. Every write runs in one database
transaction that either commits completely or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from service.core.clock import Clock, system_clock
from service.core.criteria import SearchQuery
from service.core.dates import to_micros
from service.core.outcome import Issue
from service.core.registry import Registry, ResourceType
from service.fhir.hooks import ContentHook, Hooks, WriteEvent, WriteListener
from service.fhir.patch import Patch
from service.fhir.reads import Reads, SearchResult, VersionResult
from service.fhir.writes import TransactionHook, Writes
from service.settings import Settings
from service.storage.db import Connection, Database
from service.storage.repository import NewVersion, StoredVersion
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

    # -- reads and writes ----------------------------------------------------------------------

    def resource_type(self, name: str, *, for_write: bool = False) -> ResourceType:
        """The registered type ``name``; unknown → 404, write to a read-only type → 405."""
        return self.reads.resource_type(name, for_write=for_write)

    def compartment_of(self, res_type: str, content: str | None) -> str | None:
        """The patient compartment of a version's JSON (None: none, or deleted)."""
        return self.reads.compartment_of(res_type, content)

    def compartment(self, stored: StoredVersion) -> str | None:
        """The patient compartment of a stored version."""
        return self.reads.compartment(stored)

    def visible(self, patient_ids: tuple[str, ...] | None, stored: StoredVersion) -> bool:
        """True when a version lies in one of ``patient_ids`` (None: no confinement) and, for
        a :class:`Confinement`, passes its granular-scope filters."""
        return self.reads.visible(patient_ids, stored)

    def prepare(self, data: Any, expected_type: str | None = None) -> ResourceType:
        """Validate ``data`` structurally (400), against the profiles (422) and its type's
        content hook."""
        return self.writes.prepare(data, expected_type)

    def validate(self, data: Any, expected_type: str | None = None) -> ResourceType:
        """Validate ``data`` structurally (400) and against the profiles (422)."""
        return self.writes.validate(data, expected_type)

    def now_micros(self) -> int:
        """The service clock's current time in microseconds since the epoch."""
        return self.writes.now_micros()

    def stamp(
        self, rtype: ResourceType, data: dict[str, Any], res_id: str, version: int, now: int
    ) -> NewVersion:
        """Set id and meta on ``data`` and compute what storage needs for it."""
        return self.writes.stamp(rtype, data, res_id, version, now)

    def check_references(
        self,
        conn: Connection,
        items: Sequence[tuple[NewVersion, str]],
        pending: AbstractSet[tuple[str, str]] = frozenset(),
    ) -> None:
        """Every reference to a stored type must resolve (or be written in the same Bundle)."""
        self.writes.check_references(conn, items, pending)

    def insert_new(
        self,
        conn: Connection,
        items: Sequence[tuple[NewVersion, str]],
        pending: AbstractSet[tuple[str, str]] = frozenset(),
    ) -> None:
        """Insert new versions after checking their references (one round trip on PostgreSQL)."""
        self.writes.insert_new(conn, items, pending)

    def create(
        self,
        data: Any,
        *,
        if_none_exist: str | None = None,
        patient_ids: tuple[str, ...] | None = None,
        expected_type: str | None = None,
        in_transaction: TransactionHook | None = None,
    ) -> VersionResult:
        """Create a resource (server-assigned id); conditional when ``if_none_exist`` is set."""
        return self.writes.create(
            data,
            if_none_exist=if_none_exist,
            patient_ids=patient_ids,
            expected_type=expected_type,
            in_transaction=in_transaction,
        )

    def create_in(
        self,
        conn: Connection,
        rtype: ResourceType,
        data: dict[str, Any],
        *,
        if_none_exist: str | None = None,
        res_id: str | None = None,
        pending: AbstractSet[tuple[str, str]] = frozenset(),
        prefix: str | None = None,
        patient_ids: tuple[str, ...] | None = None,
    ) -> VersionResult:
        """Create inside an open write transaction (used by single creates and Bundles)."""
        return self.writes.create_in(
            conn,
            rtype,
            data,
            if_none_exist=if_none_exist,
            res_id=res_id,
            pending=pending,
            prefix=prefix,
            patient_ids=patient_ids,
        )

    def new_version(
        self,
        rtype: ResourceType,
        data: dict[str, Any],
        patient_ids: tuple[str, ...] | None = None,
        res_id: str | None = None,
    ) -> NewVersion:
        """Stamp validated ``data`` as version 1 of a new resource (403 outside ``patient_ids``)."""
        return self.writes.new_version(rtype, data, patient_ids, res_id)

    def store_new(
        self,
        items: Sequence[NewVersion],
        companions: Sequence[Sequence[NewVersion]] | None = None,
    ) -> list[VersionResult | Exception]:
        """Store independent new versions (from :meth:`new_version`), sharing one transaction."""
        return self.writes.store_new(items, companions)

    def conditional_match(
        self,
        conn: Connection,
        rtype: ResourceType,
        criteria: str,
        patient_ids: tuple[str, ...] | None = None,
        element: str = "If-None-Exist",
    ) -> StoredVersion | None:
        """The single existing match of a conditional write's criteria (0 → None, 2+ → 412)."""
        return self.writes.conditional_match(conn, rtype, criteria, patient_ids, element)

    def read(
        self, res_type: str, res_id: str, *, patient_ids: tuple[str, ...] | None = None
    ) -> VersionResult:
        """The current version; 404 if it never existed, 410 if deleted."""
        return self.reads.read(res_type, res_id, patient_ids=patient_ids)

    def vread(
        self,
        res_type: str,
        res_id: str,
        version: str,
        *,
        patient_ids: tuple[str, ...] | None = None,
    ) -> VersionResult:
        """A specific version; 404 if unknown (or outside ``patient_ids``), 410 if a deletion."""
        return self.reads.vread(res_type, res_id, version, patient_ids=patient_ids)

    def update(
        self,
        res_type: str,
        res_id: str,
        data: Any,
        *,
        if_match: str | None = None,
        patient_ids: tuple[str, ...] | None = None,
        in_transaction: TransactionHook | None = None,
    ) -> VersionResult:
        """Replace the resource (or create it with this id); If-Match guards the version."""
        return self.writes.update(
            res_type,
            res_id,
            data,
            if_match=if_match,
            patient_ids=patient_ids,
            in_transaction=in_transaction,
        )

    def update_in(
        self,
        conn: Connection,
        rtype: ResourceType,
        res_id: str,
        data: dict[str, Any],
        *,
        if_match: str | None = None,
        pending: AbstractSet[tuple[str, str]] = frozenset(),
        prefix: str | None = None,
        patient_ids: tuple[str, ...] | None = None,
    ) -> VersionResult:
        """Update inside an open write transaction (403 outside ``patient_ids``)."""
        return self.writes.update_in(
            conn,
            rtype,
            res_id,
            data,
            if_match=if_match,
            pending=pending,
            prefix=prefix,
            patient_ids=patient_ids,
        )

    def store_many_in(
        self,
        conn: Connection,
        rtype: ResourceType,
        resources: Sequence[tuple[str, dict[str, Any]]],
    ) -> None:
        """Write resources the server itself authored (e.g. alerts' Flags), keyed by id."""
        self.writes.store_many_in(conn, rtype, resources)

    def delete(
        self,
        res_type: str,
        res_id: str,
        *,
        patient_ids: tuple[str, ...] | None = None,
        in_transaction: TransactionHook | None = None,
    ) -> VersionResult:
        """Delete (a new version marking deletion); deleting twice is harmless."""
        return self.writes.delete(
            res_type, res_id, patient_ids=patient_ids, in_transaction=in_transaction
        )

    def delete_in(
        self,
        conn: Connection,
        rtype: ResourceType,
        res_id: str,
        *,
        patient_ids: tuple[str, ...] | None = None,
    ) -> VersionResult:
        """Delete inside an open write transaction (403 outside ``patient_ids``)."""
        return self.writes.delete_in(conn, rtype, res_id, patient_ids=patient_ids)

    def patch(
        self,
        res_type: str,
        res_id: str,
        patch: Patch,
        *,
        if_match: str | None = None,
        patient_ids: tuple[str, ...] | None = None,
        in_transaction: TransactionHook | None = None,
    ) -> VersionResult:
        """Apply ``patch`` to the current version and store the result as an update."""
        return self.writes.patch(
            res_type,
            res_id,
            patch,
            if_match=if_match,
            patient_ids=patient_ids,
            in_transaction=in_transaction,
        )

    def patch_in(
        self,
        conn: Connection,
        rtype: ResourceType,
        res_id: str,
        patch: Patch,
        *,
        if_match: str | None = None,
        pending: AbstractSet[tuple[str, str]] = frozenset(),
        prefix: str | None = None,
        patient_ids: tuple[str, ...] | None = None,
        checked: dict[str, Any] | None = None,
    ) -> VersionResult:
        """Patch inside an open write transaction."""
        return self.writes.patch_in(
            conn,
            rtype,
            res_id,
            patch,
            if_match=if_match,
            pending=pending,
            prefix=prefix,
            patient_ids=patient_ids,
            checked=checked,
        )

    def conditional_update(
        self,
        res_type: str,
        criteria: str,
        data: Any,
        *,
        if_match: str | None = None,
        patient_ids: tuple[str, ...] | None = None,
        may_create: bool = True,
        in_transaction: TransactionHook | None = None,
    ) -> VersionResult:
        """``PUT [type]?criteria``: create (none), update (one) or 412 (several)."""
        return self.writes.conditional_update(
            res_type,
            criteria,
            data,
            if_match=if_match,
            patient_ids=patient_ids,
            may_create=may_create,
            in_transaction=in_transaction,
        )

    def conditional_update_in(
        self,
        conn: Connection,
        rtype: ResourceType,
        criteria: str,
        data: dict[str, Any],
        *,
        if_match: str | None = None,
        pending: AbstractSet[tuple[str, str]] = frozenset(),
        prefix: str | None = None,
        patient_ids: tuple[str, ...] | None = None,
        may_create: bool = True,
        element: str = "url",
    ) -> VersionResult:
        """Conditional update inside an open write transaction (serialised on the criteria)."""
        return self.writes.conditional_update_in(
            conn,
            rtype,
            criteria,
            data,
            if_match=if_match,
            pending=pending,
            prefix=prefix,
            patient_ids=patient_ids,
            may_create=may_create,
            element=element,
        )

    def conditional_target(
        self,
        conn: Connection,
        rtype: ResourceType,
        criteria: str,
        data: dict[str, Any],
        *,
        patient_ids: tuple[str, ...] | None = None,
        element: str = "url",
        prefix: str | None = None,
    ) -> tuple[str, bool]:
        """The id a conditional update writes, and whether that creates a resource."""
        return self.writes.conditional_target(
            conn, rtype, criteria, data, patient_ids=patient_ids, element=element, prefix=prefix
        )

    def conditional_patch(
        self,
        res_type: str,
        criteria: str,
        patch: Patch,
        *,
        if_match: str | None = None,
        patient_ids: tuple[str, ...] | None = None,
        in_transaction: TransactionHook | None = None,
    ) -> VersionResult:
        """``PATCH [type]?criteria``: patch the one match (none → 404, several → 412)."""
        return self.writes.conditional_patch(
            res_type,
            criteria,
            patch,
            if_match=if_match,
            patient_ids=patient_ids,
            in_transaction=in_transaction,
        )

    def conditional_delete(
        self,
        res_type: str,
        criteria: str,
        *,
        patient_ids: tuple[str, ...] | None = None,
        in_transaction: TransactionHook | None = None,
    ) -> VersionResult | None:
        """``DELETE [type]?criteria``: delete the one match (several → 412; none → None)."""
        return self.writes.conditional_delete(
            res_type, criteria, patient_ids=patient_ids, in_transaction=in_transaction
        )

    def history(
        self,
        res_type: str,
        res_id: str | None,
        *,
        since: int | None = None,
        count: int | None = None,
        patient_ids: tuple[str, ...] | None = None,
    ) -> list[StoredVersion]:
        """Versions newest first: of one resource, or of every resource of the type."""
        return self.reads.history(
            res_type, res_id, since=since, count=count, patient_ids=patient_ids
        )

    def parse_query(
        self, rtype: ResourceType, params: Sequence[tuple[str, str]], *, strict: bool
    ) -> tuple[SearchQuery, list[Issue]]:
        """Parse search parameters with this server's limits."""
        return self.reads.parse_query(rtype, params, strict=strict)

    def search(
        self,
        res_type: str,
        params: Sequence[tuple[str, str]],
        *,
        strict: bool = False,
        patient_ids: tuple[str, ...] | None = None,
        permit: Callable[[str], None] = lambda _type: None,
    ) -> SearchResult:
        """Run a type-level search; ``patient_ids`` confines it to those compartments (and a
        :class:`Confinement`'s filters: in the query where it can say them, and on the rows)."""
        return self.reads.search(
            res_type, params, strict=strict, patient_ids=patient_ids, permit=permit
        )

    def lastn(
        self,
        params: Sequence[tuple[str, str]],
        *,
        strict: bool = False,
        patient_ids: tuple[str, ...] | None = None,
        permit: Callable[[str], None] = lambda _type: None,
    ) -> tuple[list[StoredVersion], list[Issue]]:
        """``Observation/$lastn``: the newest ``max`` Observations per patient and code."""
        return self.reads.lastn(params, strict=strict, patient_ids=patient_ids, permit=permit)
