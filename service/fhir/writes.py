"""The FHIR service's writes: create, update, patch, delete and their conditional forms.

Every write validates first (400/422, before any transaction), then runs in one database
transaction that either commits completely or not at all; the registered listeners hear of it
inside that transaction (:mod:`service.fhir.hooks`). The ``*_in`` forms run inside a transaction
the caller opened (a Bundle's entries).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from service.core.clock import Clock
from service.core.dates import format_instant, to_micros
from service.core.indexing import extract
from service.core.outcome import FhirError, Issue
from service.core.registry import ResourceType
from service.fhir.hooks import Hooks, WriteEvent, event_of
from service.fhir.patch import Patch
from service.fhir.patch import apply as apply_patch
from service.fhir.reads import MAX_VERSION, Reads, VersionResult
from service.fhir.references import local_references, missing_issues
from service.fhir.search import parse_search
from service.storage import repository as repo
from service.storage import search_sql
from service.storage.db import Connection
from service.storage.repository import NewVersion, StoredVersion
from service.validation import ProfileValidator, dumps_resource, validate_structure
from service.validation.integers import parse_unsigned
from service.validation.json_input import check_resource_json, parse_stored

if TYPE_CHECKING:
    from service.fhir.service import FhirService

_ETAG = re.compile(r'^(?:W/)?"([^"]*)"$')
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

#: The caller's part of one write transaction: called inside it, after its writes, with the
#: results (written, or matched by a conditional create), e.g. to write the request's AuditEvent
#: so that it commits with the data or not at all. It may raise to abort the transaction.
TransactionHook = Callable[[Connection, Sequence[VersionResult]], None]


class _MissingReferences(Exception):
    """Some versions of a shared transaction reference what does not exist."""

    def __init__(self, missing: set[tuple[str, str]]) -> None:
        super().__init__(f"{len(missing)} missing references")
        self.missing = missing


def parse_etag(value: str) -> int:
    """The version number in an ``If-Match`` ETag such as ``W/"3"``; malformed → 400."""
    match = _ETAG.match(value.strip())
    # A version beyond any stored one is well-formed; it just never matches (412).
    version = parse_unsigned(match.group(1), maximum=MAX_VERSION, clamp=True) if match else None
    if version is None:
        raise FhirError.invalid(f"Malformed If-Match ETag '{value}'", "If-Match")
    return version


def outside_compartment(res_type: str) -> FhirError:
    """The 403 for a write outside the caller's patient compartment."""
    return FhirError.forbidden(f"This {res_type} is outside the patient compartment of the token")


def check_id(res_id: str) -> None:
    """Reject ids that are not FHIR ids (``[A-Za-z0-9-.]{1,64}``)."""
    if not _ID.match(res_id):
        raise FhirError.invalid(f"'{res_id}' is not a valid FHIR id", "id")


def _required_references(
    items: Sequence[tuple[NewVersion, str]], pending: AbstractSet[tuple[str, str]]
) -> dict[str, set[str]]:
    """Type → ids that the versions' local references need (see :mod:`.references`)."""
    wanted: dict[str, set[str]] = {}
    for item, _ in items:
        for t, i in item.links:
            if (t, i) not in pending:
                wanted.setdefault(t, set()).add(i)
    return wanted


def _reference_error(
    items: Sequence[tuple[NewVersion, str]], missing: AbstractSet[tuple[str, str]]
) -> FhirError:
    """The 422 naming, per version (at its prefix), the ``missing`` references it holds."""
    issues: list[Issue] = []
    for item, prefix in items:
        if missing.isdisjoint(item.links):
            continue
        for issue in missing_issues(item.resource, missing):
            if issue.prefixed(prefix) not in issues:
                issues.append(issue.prefixed(prefix))
    return FhirError.rejected(issues)


class Writes:
    """Validation, stamping and the write operations over the reads' database."""

    def __init__(
        self,
        reads: Reads,
        hooks: Hooks,
        profiles: ProfileValidator,
        clock: Clock,
        fhir: FhirService,
    ) -> None:
        self.reads = reads
        self.hooks = hooks
        self.profiles = profiles
        self.clock = clock
        #: The service the listeners receive (they may write more through it).
        self.fhir = fhir

    def prepare(self, data: Any, expected_type: str | None = None) -> ResourceType:
        """Validate ``data`` structurally (400), against the profiles (422) and its type's
        content hook."""
        rtype = self.validate(data, expected_type)
        self.hooks.check_content(rtype.name, data)
        return rtype

    def validate(self, data: Any, expected_type: str | None = None) -> ResourceType:
        """Validate ``data`` structurally (400) and against the profiles (422)."""
        type_name = validate_structure(data, expected_type)
        rtype = self.reads.resource_type(type_name, for_write=True)
        issues = self.profiles.validate(
            data, now=self.clock(), clock_skew_seconds=self.reads.settings.clock_skew_seconds
        )
        if issues:
            raise FhirError.rejected(issues)
        return rtype

    def now_micros(self) -> int:
        """The service clock's current time in microseconds since the epoch."""
        return to_micros(self.clock())

    def stamp(
        self, rtype: ResourceType, data: dict[str, Any], res_id: str, version: int, now: int
    ) -> NewVersion:
        """Set id and meta on ``data`` and compute what storage needs for it."""
        meta = dict(data.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = format_instant(now)
        body = {k: v for k, v in data.items() if k not in ("resourceType", "id", "meta")}
        resource = {"resourceType": rtype.name, "id": res_id, "meta": meta, **body}
        content, exact_decimals = dumps_resource(resource)
        links = local_references(resource, content, self.reads.registry)
        if exact_decimals:  # the digits live on in the JSON; the rest of the code sees floats
            resource = orjson.loads(content)
        return NewVersion(
            rtype.name,
            res_id,
            version,
            now,
            content.decode(),
            extract(resource, rtype, self.reads.zone),
            resource,
            links,
        )

    def check_references(
        self,
        conn: Connection,
        items: Sequence[tuple[NewVersion, str]],
        pending: AbstractSet[tuple[str, str]] = frozenset(),
    ) -> None:
        """Every reference to a stored type must resolve (or be written in the same Bundle).

        ``items`` pairs each version with the expression prefix for its errors.
        """
        wanted = _required_references(items, pending)
        missing = {
            (t, i) for t, ids in wanted.items() for i in ids - repo.existing_ids(conn, t, ids)
        }
        if missing:
            raise _reference_error(items, missing)

    def insert_new(
        self,
        conn: Connection,
        items: Sequence[tuple[NewVersion, str]],
        pending: AbstractSet[tuple[str, str]] = frozenset(),
    ) -> None:
        """Insert new versions after checking their references (one round trip on PostgreSQL).

        A missing reference raises the 422; the caller's transaction then rolls back.
        """
        wanted = _required_references(items, pending)
        _, missing = repo.insert_resources_checked(conn, [item for item, _ in items], wanted)
        if missing:
            raise _reference_error(items, missing)

    # -- create ----------------------------------------------------------------------------

    def create(
        self,
        data: Any,
        *,
        if_none_exist: str | None = None,
        patient_ids: tuple[str, ...] | None = None,
        expected_type: str | None = None,
        in_transaction: TransactionHook | None = None,
    ) -> VersionResult:
        """Create a resource (server-assigned id); conditional when ``if_none_exist`` is set.

        ``patient_ids`` confines the write to those compartments (403 outside them);
        ``expected_type`` is the type the URL names (400 when the resource is another);
        ``in_transaction`` runs in the write transaction with the result.
        """
        rtype = self.prepare(data, expected_type)
        with self.reads.db.write() as conn:
            result = self.create_in(
                conn, rtype, data, if_none_exist=if_none_exist, patient_ids=patient_ids
            )
            if in_transaction is not None:
                in_transaction(conn, [result])
            return result

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
        if if_none_exist is not None:
            match = self.conditional_match(conn, rtype, if_none_exist, patient_ids)
            if match is not None:
                return VersionResult.of(match, self.reads.compartment(match))
        res_id = res_id or str(uuid.uuid4())
        data = self.hooks.apply_content(conn, rtype.name, res_id, data)
        item = self.new_version(rtype, data, patient_ids, res_id)
        self.insert_new(conn, [(item, prefix or rtype.name)], pending)
        event = event_of(item)
        self.hooks.notify(self.fhir, conn, [event])
        return VersionResult.of(item, warnings=event.warnings, created=True)

    def new_version(
        self,
        rtype: ResourceType,
        data: dict[str, Any],
        patient_ids: tuple[str, ...] | None = None,
        res_id: str | None = None,
    ) -> NewVersion:
        """Stamp validated ``data`` as version 1 of a new resource (403 outside ``patient_ids``)."""
        item = self.stamp(rtype, data, res_id or str(uuid.uuid4()), 1, self.now_micros())
        if patient_ids is not None and item.index.patient_id not in patient_ids:
            raise outside_compartment(rtype.name)
        return item

    def store_new(
        self,
        items: Sequence[NewVersion],
        companions: Sequence[Sequence[NewVersion]] | None = None,
    ) -> list[VersionResult | Exception]:
        """Store independent new versions (from :meth:`new_version`), sharing one transaction.

        Group commit for concurrent single creates: one transaction, one insert statement and
        one alert evaluation for all of them. Each still succeeds or fails on its own, as if
        stored alone: versions whose references are missing get their 422 and the rest are
        stored without them; any other failure stores every version in its own transaction.
        The result for each version is in the same position: a 201 or the exception.

        ``companions[i]`` are versions stored with ``items[i]``, in its transaction, and only
        if it is stored (its AuditEvents); they are not checked and no listener hears of them.
        """
        extra = companions or [()] * len(items)
        failed: dict[int, Exception] = {}
        warnings: dict[int, list[Issue]] = {}
        todo = list(range(len(items)))
        while todo:
            try:
                events = self._store_together(
                    [items[i] for i in todo], [v for i in todo for v in extra[i]]
                )
                warnings = {i: event.warnings for i, event in zip(todo, events, strict=True)}
                break
            except _MissingReferences as exc:
                for i in todo:
                    gone = exc.missing.intersection(items[i].links)
                    if gone:
                        failed[i] = _reference_error([(items[i], items[i].res_type)], gone)
                # Every missing reference is some version's: each round drops at least one.
                todo = [i for i in todo if i not in failed]
            except Exception as exc:
                if len(todo) == 1:
                    failed[todo[0]] = exc
                    break
                for i in todo:  # isolate the failure: each on its own
                    (result,) = self.store_new([items[i]], [extra[i]])
                    if isinstance(result, Exception):
                        failed[i] = result
                    else:
                        warnings[i] = result.issues
                break
        return [
            failed[i]
            if i in failed
            else VersionResult.of(item, warnings=warnings.get(i, ()), created=True)
            for i, item in enumerate(items)
        ]

    def _store_together(
        self, items: Sequence[NewVersion], companions: Sequence[NewVersion]
    ) -> list[WriteEvent]:
        wanted = _required_references([(item, item.res_type) for item in items], frozenset())
        with self.reads.db.write() as conn:
            _, missing = repo.insert_resources_checked(conn, [*items, *companions], wanted)
            if missing:
                raise _MissingReferences(missing)  # rolls the transaction back
            events = [event_of(item) for item in items]
            self.hooks.notify(self.fhir, conn, events)
        return events

    def conditional_match(
        self,
        conn: Connection,
        rtype: ResourceType,
        criteria: str,
        patient_ids: tuple[str, ...] | None = None,
        element: str = "If-None-Exist",
    ) -> StoredVersion | None:
        """The single existing match of a conditional write's criteria (0 → None, 2+ → 412).

        Writers with the same criteria are serialised (conditional creates, updates, patches
        and deletes alike), so parallel identical conditional creates or updates leave exactly
        one resource. ``element`` names where the criteria came from, for errors.
        """
        params = [
            (k, v)
            for k, v in parse_qsl(criteria.lstrip("?"), keep_blank_values=False)
            if k != "_format"
        ]
        if not params:
            raise FhirError.invalid(f"{element} needs search criteria", element)
        query, _ = parse_search(
            rtype,
            params,
            registry=self.reads.registry,
            zone=self.reads.zone,
            default_count=2,
            max_count=2,
            strict=True,
        )
        query.count = 2
        query.patient_ids = patient_ids
        repo.lock_key(conn, f"{rtype.name}?{sorted(params)}")
        page = search_sql.search(conn, query)
        if len(page.rows) > 1:
            raise FhirError.ambiguous_match(
                f"{element} criteria '{criteria}' match more than one {rtype.name}",
                element,
            )
        return page.rows[0] if page.rows else None

    # -- update and delete -------------------------------------------------------------------

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
        """Replace the resource (or create it with this id); If-Match guards the version.

        ``in_transaction`` runs in the write transaction with the result.
        """
        check_id(res_id)
        rtype = self.prepare(data, res_type)
        if data.get("id") != res_id:
            raise FhirError.invalid(
                f"The resource id ('{data.get('id')}') must equal the id in the URL ('{res_id}')",
                f"{res_type}.id",
            )
        with self.reads.db.write() as conn:
            result = self.update_in(
                conn, rtype, res_id, data, if_match=if_match, patient_ids=patient_ids
            )
            if in_transaction is not None:
                in_transaction(conn, [result])
            return result

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
        expected = parse_etag(if_match) if if_match is not None else None
        current = repo.fetch_current(conn, rtype.name, res_id, for_update=True)
        if (
            patient_ids is not None
            and current is not None
            and not current.deleted
            and not self.reads.visible(patient_ids, current)
        ):
            raise outside_compartment(rtype.name)
        if expected is not None and (current is None or current.version_id != expected):
            have = f"version {current.version_id}" if current else "no version"
            raise FhirError.precondition_failed(
                f"If-Match expects version {expected} of {rtype.name}/{res_id}; it has {have}",
                "If-Match",
            )
        now = self.now_micros()
        if current is not None:
            now = max(now, current.last_updated + 1)
        version = current.version_id + 1 if current else 1
        data = self.hooks.apply_content(conn, rtype.name, res_id, data, current)
        item = self.stamp(rtype, data, res_id, version, now)
        if patient_ids is not None and item.index.patient_id not in patient_ids:
            raise outside_compartment(rtype.name)
        self.check_references(conn, [(item, prefix or rtype.name)], pending)
        if current is None:
            repo.insert_resources(conn, [item])
        else:
            repo.replace_current(conn, current, item, now=now)
        event = event_of(item, current)
        self.hooks.notify(self.fhir, conn, [event])
        created = current is None or current.deleted
        return VersionResult.of(item, warnings=event.warnings, created=created)

    def store_many_in(
        self,
        conn: Connection,
        rtype: ResourceType,
        resources: Sequence[tuple[str, dict[str, Any]]],
    ) -> None:
        """Write resources the server itself authored (e.g. alerts' Flags), keyed by id.

        No profile or reference checks, no content hooks and none of :attr:`Hooks.listeners`: the
        content comes from telemon's own code, and the caller is often the listener reacting to
        a write. :attr:`Hooks.authored_listeners` are told. New ones are inserted in one statement.
        """
        current = {
            v.res_id: v
            for v in repo.fetch_all_versions_current(
                conn, rtype.name, [i for i, _ in resources], for_update=True
            )
        }
        now = self.now_micros()
        fresh = []
        events = []
        for res_id, data in resources:
            old = current.get(res_id)
            if old is None:
                item = self.stamp(rtype, data, res_id, 1, now)
                fresh.append(item)
            else:
                at = max(now, old.last_updated + 1)
                item = self.stamp(rtype, data, res_id, old.version_id + 1, at)
                repo.replace_current(conn, old, item, now=at)
            events.append(event_of(item, old))
        repo.insert_resources(conn, fresh)
        self.hooks.notify(self.fhir, conn, events, authored=True)

    def delete(
        self,
        res_type: str,
        res_id: str,
        *,
        patient_ids: tuple[str, ...] | None = None,
        in_transaction: TransactionHook | None = None,
    ) -> VersionResult:
        """Delete (a new version marking deletion); deleting twice is harmless.

        ``in_transaction`` runs in the write transaction with the result.
        """
        rtype = self.reads.resource_type(res_type, for_write=True)
        with self.reads.db.write() as conn:
            result = self.delete_in(conn, rtype, res_id, patient_ids=patient_ids)
            if in_transaction is not None:
                in_transaction(conn, [result])
            return result

    def delete_in(
        self,
        conn: Connection,
        rtype: ResourceType,
        res_id: str,
        *,
        patient_ids: tuple[str, ...] | None = None,
    ) -> VersionResult:
        """Delete inside an open write transaction (403 outside ``patient_ids``)."""
        current = repo.fetch_current(conn, rtype.name, res_id, for_update=True)
        if current is None:
            raise FhirError.not_found(f"{rtype.name}/{res_id} is not known")
        if not self.reads.visible(patient_ids, current):
            raise outside_compartment(rtype.name)
        if current.deleted:
            return VersionResult(
                rtype.name,
                res_id,
                current.version_id,
                current.last_updated,
                None,
                [Issue("deleted", f"{rtype.name}/{res_id} was already deleted", (), "information")],
            )
        now = max(self.now_micros(), current.last_updated + 1)
        repo.replace_current(conn, current, None, now=now)
        self.hooks.notify(
            self.fhir,
            conn,
            [
                WriteEvent(
                    rtype.name,
                    res_id,
                    current.version_id + 1,
                    None,
                    current.patient_id,
                    current.content,
                )
            ],
        )
        return VersionResult(
            rtype.name,
            res_id,
            current.version_id + 1,
            now,
            None,
            [Issue("informational", f"Deleted {rtype.name}/{res_id}", (), "information")],
            patient_id=self.reads.compartment(current),
        )

    # -- patch and conditional writes ------------------------------------------------------------

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
        check_id(res_id)
        rtype = self.reads.resource_type(res_type, for_write=True)
        checked = self._checked_patch(rtype, res_id, patch)
        with self.reads.db.write() as conn:
            result = self.patch_in(
                conn,
                rtype,
                res_id,
                patch,
                if_match=if_match,
                patient_ids=patient_ids,
                checked=checked,
            )
            if in_transaction is not None:
                in_transaction(conn, [result])
            return result

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
        """Patch inside an open write transaction.

        The patched resource is validated like an update (400/422, nothing stored) and stored
        through :meth:`update_in`, so listeners (an EHR acknowledging an alert's Flag) see it
        as any update. Outside ``patient_ids`` the resource is the never-existed 404.
        ``checked``: a result whose content hook check passed already (:meth:`_checked_patch`).
        """
        expected = parse_etag(if_match) if if_match is not None else None
        current = repo.fetch_current(conn, rtype.name, res_id, for_update=True)
        if current is None or not self.reads.visible(patient_ids, current):
            raise FhirError.not_found(f"{rtype.name}/{res_id} is not known")
        if current.deleted or current.content is None:
            raise FhirError.gone(f"{rtype.name}/{res_id} has been deleted")
        if expected is not None and current.version_id != expected:
            raise FhirError.precondition_failed(
                f"If-Match expects version {expected} of {rtype.name}/{res_id}; "
                f"it has version {current.version_id}",
                "If-Match",
            )
        data = apply_patch(patch, parse_stored(current.content))
        check_resource_json(data, max_depth=self.reads.settings.max_json_depth)
        if data.get("resourceType") != rtype.name or data.get("id") != res_id:
            raise FhirError.invalid(
                f"A patch may not change the resource's type or id ({rtype.name}/{res_id})",
                f"{rtype.name}.id",
            )
        if checked is not None and data == checked:
            self.validate(data, rtype.name)
        else:
            self.prepare(data, rtype.name)
        return self.update_in(
            conn, rtype, res_id, data, pending=pending, prefix=prefix, patient_ids=patient_ids
        )

    def _checked_patch(
        self, rtype: ResourceType, res_id: str, patch: Patch
    ) -> dict[str, Any] | None:
        """For a type with a content hook (a slow DNS check): the patched resource, checked
        before the write transaction opens, so that the check holds no lock.

        None when there is nothing to check or it fails: the transaction then decides (and
        reports) everything itself, the compartment first.
        """
        if rtype.name not in self.hooks.content_hooks:
            return None
        with self.reads.db.read() as conn:
            current = repo.fetch_current(conn, rtype.name, res_id)
        if current is None or current.content is None:
            return None
        try:
            data = apply_patch(patch, parse_stored(current.content))
            self.prepare(data, rtype.name)
        except FhirError:
            return None
        return data

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
        rtype = self.prepare(data, res_type)
        with self.reads.db.write() as conn:
            result = self.conditional_update_in(
                conn,
                rtype,
                criteria,
                data,
                if_match=if_match,
                patient_ids=patient_ids,
                may_create=may_create,
            )
            if in_transaction is not None:
                in_transaction(conn, [result])
            return result

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
        """Conditional update inside an open write transaction (serialised on the criteria).

        ``may_create`` False refuses (403) the create a caller lacks the scope for.
        """
        res_id, creates = self.conditional_target(
            conn, rtype, criteria, data, patient_ids=patient_ids, element=element, prefix=prefix
        )
        if creates and not may_create:
            raise FhirError.forbidden(f"Nothing matches, and the token may not create {rtype.name}")
        return self.update_in(
            conn, rtype, res_id, {**data, "id": res_id}, if_match=if_match, pending=pending,
            prefix=prefix, patient_ids=patient_ids,
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
        """The id a conditional update writes, and whether that creates a resource.

        One match: its id (a body id must be the same, 400 otherwise). No match: the body's id,
        if it has one and no other resource holds it (409), else a new one.
        """
        match = self.conditional_match(conn, rtype, criteria, patient_ids, element)
        given = data.get("id")
        where = prefix or rtype.name
        if match is not None:
            if given is not None and given != match.res_id:
                raise FhirError.invalid(
                    f"The resource id ('{given}') is not the id of the match ('{match.res_id}')",
                    f"{where}.id",
                )
            return match.res_id, False
        if given is None:
            return str(uuid.uuid4()), True
        check_id(str(given))
        holder = repo.fetch_current(conn, rtype.name, str(given), for_update=True)
        if holder is not None and not holder.deleted:
            raise FhirError.conflict(f"{rtype.name}/{given} exists but does not match the criteria",
                f"{where}.id",
            )
        return str(given), True

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
        rtype = self.reads.resource_type(res_type, for_write=True)
        with self.reads.db.write() as conn:
            match = self.conditional_match(conn, rtype, criteria, patient_ids, "url")
            if match is None:
                raise FhirError.not_found(f"No {rtype.name} matches '{criteria}'", "url")
            result = self.patch_in(
                conn, rtype, match.res_id, patch, if_match=if_match, patient_ids=patient_ids
            )
            if in_transaction is not None:
                in_transaction(conn, [result])
            return result

    def conditional_delete(
        self,
        res_type: str,
        criteria: str,
        *,
        patient_ids: tuple[str, ...] | None = None,
        in_transaction: TransactionHook | None = None,
    ) -> VersionResult | None:
        """``DELETE [type]?criteria``: delete the one match (several → 412; none → None)."""
        rtype = self.reads.resource_type(res_type, for_write=True)
        with self.reads.db.write() as conn:
            match = self.conditional_match(conn, rtype, criteria, patient_ids, "url")
            if match is None:
                return None
            result = self.delete_in(conn, rtype, match.res_id, patient_ids=patient_ids)
            if in_transaction is not None:
                in_transaction(conn, [result])
            return result
