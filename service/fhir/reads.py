"""The FHIR service's reads: read, vread, history, search and ``$lastn``, and who may see what.

A version is visible to a caller confined to patient compartments when it lies in one of them
(and passes a :class:`Confinement`'s granular-scope filters); writes check the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo

import orjson

from service.core.criteria import SearchQuery
from service.core.indexing import extract
from service.core.outcome import FhirError, Issue
from service.core.registry import Registry, ResourceType
from service.fhir.confinement import Confinement
from service.fhir.including import included_resources
from service.fhir.search import encode_cursor, linked_types, parse_search
from service.fhir.subsetting import subset
from service.settings import Settings
from service.storage import repository as repo
from service.storage import search_sql
from service.storage.db import Connection, Database
from service.storage.repository import NewVersion, StoredVersion
from service.validation.integers import MAX_INT, parse_unsigned

#: Version ids are stored as INTEGER: a larger one names no version.
MAX_VERSION = MAX_INT


@dataclass(slots=True)
class VersionResult:
    """The outcome of a write or read: which version, and its JSON (None when deleted).

    ``created``: the write made the resource (new, or a deleted one written again); False for
    reads, updates, deletes and conditional creates that matched an existing resource.
    """

    res_type: str
    res_id: str
    version_id: int
    last_updated: int
    content: str | None
    issues: list[Issue] = field(default_factory=list)
    patient_id: str | None = None  # the patient compartment (authorization, audit)
    created: bool = False

    @classmethod
    def of(
        cls,
        stored: StoredVersion | NewVersion,
        patient_id: str | None = None,
        warnings: Sequence[Issue] = (),
        *,
        created: bool = False,
    ) -> VersionResult:
        """A result for a stored or just-written version (with the write's warnings)."""
        if isinstance(stored, NewVersion):
            patient_id = stored.index.patient_id
        return cls(
            stored.res_type,
            stored.res_id,
            stored.version_id,
            stored.last_updated,
            stored.content,
            list(warnings),
            patient_id=patient_id,
            created=created,
        )


@dataclass(slots=True)
class SearchResult:
    """A page of matches, the included resources, and what is needed to build the Bundle."""

    query: SearchQuery
    matches: list[StoredVersion]
    included: list[StoredVersion]
    next_cursor: str | None
    total: int | None
    warnings: list[Issue]


def _permits(permit: Callable[[str], None], res_type: str) -> bool:
    try:
        permit(res_type)
    except FhirError:
        return False
    return True


#: The caller's part of a read that writes as it reads: called inside the read's transaction
#: with the versions it returns, e.g. to write the AuditEvents of the read, so that the read
#: and its audit commit together, in one transaction and one commit.
ReadHook = Callable[[Connection, Sequence[StoredVersion]], None]


class Reads:
    """Reads over the configured database, and the type and compartment checks writes share."""

    def __init__(
        self, db: Database, registry: Registry, settings: Settings, zone: ZoneInfo
    ) -> None:
        self.db = db
        self.registry = registry
        self.settings = settings
        self.zone = zone

    def resource_type(self, name: str, *, for_write: bool = False) -> ResourceType:
        """The registered type ``name``; unknown → 404, write to a read-only type → 405."""
        rtype = self.registry.get(name)
        if rtype is None:
            raise FhirError.unknown_type(f"Resource type '{name}' is not supported", "resourceType")
        if for_write and rtype.read_only:
            raise FhirError.method_not_allowed(f"{name} is read-only on this server")
        return rtype

    def compartment_of(self, res_type: str, content: str | None) -> str | None:
        """The patient compartment of a version's JSON (None: none, or deleted)."""
        rtype = self.registry.get(res_type)
        if content is None or rtype is None or rtype.compartment is None:
            return None
        return extract(orjson.loads(content), rtype, self.zone).patient_id

    def compartment(self, stored: StoredVersion) -> str | None:
        """The patient compartment of a stored version.

        Current versions carry it from their row; only superseded versions (history), which do
        not, are read from their JSON.
        """
        if stored.patient_id is not None or stored.content is None:
            return stored.patient_id
        return self.compartment_of(stored.res_type, stored.content)

    def visible(self, patient_ids: tuple[str, ...] | None, stored: StoredVersion) -> bool:
        """True when a version lies in one of ``patient_ids`` (None: no confinement) and, for
        a :class:`Confinement`, passes its granular-scope filters."""
        if patient_ids is None:
            return True
        if self.compartment(stored) not in patient_ids:
            return False
        if not isinstance(patient_ids, Confinement) or not patient_ids.filtered(stored.res_type):
            return True
        rtype = self.registry.get(stored.res_type)
        if rtype is None or stored.content is None:
            return False
        tokens = extract(orjson.loads(stored.content), rtype, self.zone).tokens
        return patient_ids.admits(stored.res_type, tokens)

    def _narrowed(
        self, res_type: str, params: Sequence[tuple[str, str]], patient_ids: tuple[str, ...] | None
    ) -> list[tuple[str, str]]:
        """``params`` plus a Confinement's filters for ``res_type`` where a search can say them."""
        if isinstance(patient_ids, Confinement):
            return [*params, *patient_ids.search_params(res_type)]
        return list(params)

    def read(
        self,
        res_type: str,
        res_id: str,
        *,
        patient_ids: tuple[str, ...] | None = None,
        within: ReadHook | None = None,
    ) -> VersionResult:
        """The current version; 404 if it never existed, 410 if deleted.

        Outside ``patient_ids`` (also when deleted) the answer is the never-existed 404.
        ``within`` is called with the version found, in the read's transaction (as for
        :meth:`search`), when the read succeeds.
        """
        self.resource_type(res_type)
        with self.transaction(within) as conn:
            current = repo.fetch_current(conn, res_type, res_id)
            shown = self._shown(conn, within, current, patient_ids)
        if current is None or not shown:
            raise FhirError.not_found(f"{res_type}/{res_id} is not known")
        if current.deleted:
            raise FhirError.gone(
                f"{res_type}/{res_id} has been deleted", etag=f'W/"{current.version_id}"'
            )
        return VersionResult.of(current, self.compartment(current))

    def vread(
        self,
        res_type: str,
        res_id: str,
        version: str,
        *,
        patient_ids: tuple[str, ...] | None = None,
        within: ReadHook | None = None,
    ) -> VersionResult:
        """A specific version; 404 if unknown (or outside ``patient_ids``), 410 if a deletion
        (``within`` as for :meth:`read`)."""
        self.resource_type(res_type)
        number = parse_unsigned(version, maximum=MAX_VERSION)
        if number is None:
            raise FhirError.not_found(f"Version '{version}' is not known")
        with self.transaction(within) as conn:
            stored = repo.fetch_version(conn, res_type, res_id, number)
            shown = self._shown(conn, within, stored, patient_ids)
        if stored is None or not shown:
            raise FhirError.not_found(f"{res_type}/{res_id}/_history/{version} is not known")
        if stored.deleted:
            raise FhirError.gone(f"Version {version} is a deletion")
        return VersionResult.of(stored, self.compartment(stored))

    def history(
        self,
        res_type: str,
        res_id: str | None,
        *,
        since: int | None = None,
        count: int | None = None,
        patient_ids: tuple[str, ...] | None = None,
        within: ReadHook | None = None,
    ) -> list[StoredVersion]:
        """Versions newest first: of one resource, or of every resource of the type.

        With ``patient_ids`` only versions inside those compartments are returned (no delete
        markers); an instance with none of them answers the never-existed 404. ``within`` is
        called with the versions returned, in the read's transaction, unless that is the 404.
        """
        self.resource_type(res_type)
        limit = min(count or self.settings.default_page_size, self.settings.max_page_size)
        with self.transaction(within) as conn:
            if res_id is None:
                versions = repo.type_history(conn, res_type, since=since, count=limit)
            else:
                versions = repo.instance_history(conn, res_type, res_id, since=since, count=limit)
            if patient_ids is not None:
                versions = [v for v in versions if self.visible(patient_ids, v)]
            if within is not None and (versions or res_id is None):
                within(conn, versions)
        if res_id is None:
            return versions
        if not versions:
            raise FhirError.not_found(f"{res_type}/{res_id} is not known")
        return versions

    def parse_query(
        self, rtype: ResourceType, params: Sequence[tuple[str, str]], *, strict: bool
    ) -> tuple[SearchQuery, list[Issue]]:
        """Parse search parameters with this server's limits."""
        return parse_search(
            rtype,
            params,
            registry=self.registry,
            zone=self.zone,
            default_count=self.settings.default_page_size,
            max_count=self.settings.max_page_size,
            strict=strict,
        )

    def _shown(
        self,
        conn: Connection,
        within: ReadHook | None,
        stored: StoredVersion | None,
        patient_ids: tuple[str, ...] | None,
    ) -> bool:
        """True when ``stored`` exists and lies inside ``patient_ids``; then, unless it is a
        deletion (the read answers 410), ``within`` is called with it."""
        if stored is None or not self.visible(patient_ids, stored):
            return False
        if within is not None and not stored.deleted:
            within(conn, [stored])
        return True

    def transaction(self, within: ReadHook | None) -> AbstractContextManager[Connection]:
        """A read transaction, or a write one when ``within`` writes as the read reads (for
        every read that takes a :data:`ReadHook`, here or elsewhere)."""
        return self.db.read() if within is None else self.db.write()

    def search(
        self,
        res_type: str,
        params: Sequence[tuple[str, str]],
        *,
        strict: bool = False,
        patient_ids: tuple[str, ...] | None = None,
        permit: Callable[[str], None] = lambda _type: None,
        within: ReadHook | None = None,
    ) -> SearchResult:
        """Run a type-level search; ``patient_ids`` confines it to those compartments (and a
        :class:`Confinement`'s filters: in the query where it can say them, and on the rows).

        ``permit`` (the caller's scopes) is asked about every other type the search reads:
        chain targets, ``_has`` sources, ``_include`` and ``_revinclude`` types; it raises to
        refuse. Included resources of a type it refuses are left out. ``within`` is called
        with the matches and included resources in the search's transaction, which is then a
        write transaction.
        """
        rtype = self.resource_type(res_type)
        query, warnings = self.parse_query(
            rtype, self._narrowed(res_type, params, patient_ids), strict=strict
        )
        query.patient_ids = patient_ids
        for linked in sorted(linked_types(query, self.registry)):
            permit(linked)
        with self.transaction(within) as conn:
            page = search_sql.search(conn, search_sql.resolve_links(conn, query))
            if isinstance(patient_ids, Confinement) and patient_ids.filtered(res_type):
                page.rows = [r for r in page.rows if self.visible(patient_ids, r)]
            included = included_resources(
                conn,
                query,
                page.rows,
                # an _include must not reach outside the compartment or the scopes
                admit=lambda row: self.visible(patient_ids, row)
                and _permits(permit, row.res_type),
                budget=self.settings.max_revinclude,
                warnings=warnings,
            )
            if within is not None:
                within(conn, page.rows + included)
        matches = page.rows
        if query.elements is not None or query.summary is not None:
            matches = [
                replace(m, content=subset(m.content or "{}", m.res_type, query.elements,
                                          query.summary))
                for m in matches
            ]
        cursor = encode_cursor(page.next_cursor) if page.next_cursor else None
        return SearchResult(query, matches, included, cursor, page.total, warnings)

    def lastn(
        self,
        params: Sequence[tuple[str, str]],
        *,
        strict: bool = False,
        patient_ids: tuple[str, ...] | None = None,
        permit: Callable[[str], None] = lambda _type: None,
        within: ReadHook | None = None,
    ) -> tuple[list[StoredVersion], list[Issue]]:
        """``Observation/$lastn``: the newest ``max`` Observations per patient and code
        (``within`` as for :meth:`search`)."""
        rtype = self.resource_type("Observation")
        max_n = 1
        rest = []
        for name, value in params:
            if name == "max":
                wanted = parse_unsigned(value, maximum=self.settings.max_page_size, clamp=True)
                if not wanted:
                    raise FhirError.invalid("max must be a positive integer", "max")
                max_n = wanted
            else:
                rest.append((name, value))
        query, warnings = self.parse_query(
            rtype, self._narrowed("Observation", rest, patient_ids), strict=strict
        )
        query.patient_ids = patient_ids
        for linked in sorted(linked_types(query, self.registry)):
            permit(linked)
        with self.transaction(within) as conn:
            rows = search_sql.lastn(conn, search_sql.resolve_links(conn, query), max_n)
            rows = [r for r in rows if self.visible(patient_ids, r)]
            if within is not None:
                within(conn, rows)
        return rows, warnings
