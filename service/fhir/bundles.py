"""``POST [base]`` with a ``transaction`` or ``batch`` Bundle.

A transaction runs every entry in one database transaction: all succeed or nothing is written,
whatever the entry order. ``urn:uuid:`` references between entries are resolved to the ids the
server assigns (or finds, for conditional creates); one that names no entry is refused (422, see
:mod:`service.fhir.references`). A batch runs each entry on its own.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Any, TypeVar

import orjson

from service.core.dates import format_instant
from service.core.outcome import FhirError, Issue, operation_outcome
from service.fhir.hooks import event_of
from service.fhir.patch import JSON_PATCH, MERGE_PATCH, Patch, patch_of
from service.fhir.reads import VersionResult
from service.fhir.references import rewritten
from service.fhir.service import FhirService
from service.fhir.writes import TransactionHook, check_id, outside_compartment
from service.storage import repository as repo
from service.storage.db import Connection
from service.validation import validate_structure
from service.validation.json_input import parse_patch_json

T = TypeVar("T")
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3}
_INTERACTION = {
    "DELETE": "delete",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "GET": "read",
}


def _permit_all(res_type: str, interaction: str) -> None:
    """The default check: everything is allowed."""


@dataclass(slots=True)
class Access:
    """The caller's limits inside a Bundle, and what its entries touched.

    ``permit(res_type, interaction)`` raises a FhirError (403) for a denied entry;
    ``patient_ids`` confines every entry to those compartments (None: not confined);
    ``in_transaction`` runs inside each write transaction with its results (a transaction's
    every entry; a batch's write entries, each in its own) — the request's audit;
    ``touched`` collects ``(interaction, result)`` of the other entries that succeeded (a
    batch's reads; every entry when there is no ``in_transaction``).
    """

    permit: Callable[[str, str], None] = _permit_all
    patient_ids: tuple[str, ...] | None = None
    in_transaction: TransactionHook | None = None
    touched: list[tuple[str, VersionResult]] = field(default_factory=list)


@dataclass(slots=True)
class Entry:
    """One parsed Bundle entry."""

    index: int
    method: str
    res_type: str
    res_id: str | None
    query: str | None
    full_url: str | None
    resource: dict[str, Any] | None
    if_none_exist: str | None
    if_match: str | None
    patch: Patch | None = None  # a PATCH entry's patch (its Binary or Parameters resource)

    @property
    def conditional(self) -> bool:
        """A PUT, PATCH or DELETE addressed by search criteria (``Type?query``), not by id."""
        return self.method in ("PUT", "PATCH", "DELETE") and self.res_id is None

    @property
    def where(self) -> str:
        """The FHIRPath of this entry, for error expressions."""
        return f"Bundle.entry[{self.index}]"


def _fail(index: int, element: str, message: str) -> FhirError:
    return FhirError.invalid(message, f"Bundle.entry[{index}].{element}")


def _parse_entry(service: FhirService, index: int, raw: Any) -> Entry:
    if not isinstance(raw, dict):
        raise _fail(index, "", "A Bundle entry must be an object")
    request = raw.get("request")
    if not isinstance(request, dict):
        raise _fail(index, "request", "Each entry of a transaction or batch needs a request")
    method = request.get("method")
    url = request.get("url")
    if method not in _ORDER:
        raise _fail(index, "request.method", f"Method '{method}' is not supported here")
    if not isinstance(url, str) or not url:
        raise _fail(index, "request.url", "request.url is required")
    path, _, query = url.partition("?")
    parts = [p for p in path.strip("/").split("/") if p]
    if not parts or len(parts) > 2:
        raise _fail(index, "request.url", f"Cannot process request.url '{url}'")
    res_type = parts[0]
    res_id = parts[1] if len(parts) == 2 else None
    try:
        service.resource_type(res_type, for_write=method != "GET")
        if res_id is not None:
            check_id(res_id)
    except FhirError as exc:
        raise exc.with_issues(
            [i.prefixed(f"Bundle.entry[{index}].request.url") for i in exc.issues]
        ) from exc
    resource = raw.get("resource")
    if method in ("PUT", "PATCH", "DELETE") and res_id is None and not query:
        raise _fail(index, "request.url", f"{method} needs Type/id or Type?criteria in request.url")
    patch = None
    if method == "PATCH":
        patch = _patch_of(service, index, resource)
        resource = None
    elif method in ("POST", "PUT"):
        if resource is None:
            raise _fail(index, "resource", f"A {method} entry needs a resource")
        try:
            validate_structure(resource, res_type)
        except FhirError as exc:
            raise exc.with_issues(
                [i.prefixed(f"Bundle.entry[{index}].resource") for i in exc.issues]
            ) from exc
        if method == "PUT" and res_id is not None and resource.get("id") != res_id:
            raise _fail(index, "resource.id", "A PUT entry's resource id must match its url")
    if method == "POST" and res_id is not None:
        raise _fail(index, "request.url", "POST goes to the type, not to an id")
    for element in ("ifNoneExist", "ifMatch"):
        if element in request and not isinstance(request[element], str):
            raise _fail(index, f"request.{element}", f"request.{element} must be a string")
    full_url = raw.get("fullUrl")
    return Entry(
        index,
        method,
        res_type,
        res_id,
        query or None,
        full_url if isinstance(full_url, str) else None,
        resource,
        request.get("ifNoneExist"),
        request.get("ifMatch"),
        patch,
    )


def _patch_of(service: FhirService, index: int, resource: Any) -> Patch:
    """A PATCH entry's patch: a Binary holding a JSON Patch, or a FHIRPath Patch Parameters."""
    if isinstance(resource, dict) and resource.get("resourceType") == "Parameters":
        return Patch("fhirpath-patch", resource)
    if not isinstance(resource, dict) or resource.get("resourceType") != "Binary":
        raise _fail(index, "resource", "A PATCH entry's resource is a Binary or a Parameters")
    media = resource.get("contentType")
    data = resource.get("data")
    if media not in (JSON_PATCH, MERGE_PATCH) or not isinstance(data, str):
        raise _fail(
            index,
            "resource",
            f"A PATCH entry's Binary has contentType {JSON_PATCH} (or {MERGE_PATCH}) and data",
        )
    try:
        raw = base64.b64decode(data, validate=True)
        return patch_of(media, parse_patch_json(raw, max_depth=service.settings.max_json_depth))
    except binascii.Error as exc:
        raise _fail(index, "resource.data", "Binary.data is not base64") from exc
    except FhirError as exc:
        raise exc.with_issues(
            [i.prefixed(f"Bundle.entry[{index}].resource.data") for i in exc.issues]
        ) from exc


def _permit(access: Access, entry: Entry, *, may_create_needed: bool) -> None:
    """The entry's interaction; a conditional one also searches (and a conditional PUT in a
    transaction may create, which is decided inside it: ``may_create_needed``)."""
    access.permit(entry.res_type, _INTERACTION[entry.method])
    if entry.conditional:
        access.permit(entry.res_type, "search")
        if entry.method == "PUT" and may_create_needed:
            access.permit(entry.res_type, "create")


def _no_match(service: FhirService, entry: Entry) -> VersionResult:
    """The result of a conditional delete that matched nothing (no resource, no version)."""
    issue = Issue("not-found", f"No {entry.res_type} matches '{entry.query}'", (), "information")
    return VersionResult(entry.res_type, "", 0, service.now_micros(), None, [issue])


def _response(result: VersionResult, representation: bool) -> dict[str, Any]:
    status = HTTPStatus.CREATED if result.created else HTTPStatus.OK
    out: dict[str, Any] = {"status": f"{status.value} {status.phrase}"}
    if result.res_id:
        out["etag"] = f'W/"{result.version_id}"'
        out["lastModified"] = format_instant(result.last_updated)
    if result.content is not None:
        out["location"] = f"{result.res_type}/{result.res_id}/_history/{result.version_id}"
    entry: dict[str, Any] = {"response": out}
    if representation and result.content is not None:
        entry["resource"] = orjson.Fragment(result.content)
    if result.issues:
        out["outcome"] = operation_outcome(result.issues)
    return entry


def process(
    service: FhirService,
    bundle: Any,
    *,
    representation: bool = False,
    access: Access | None = None,
) -> dict[str, Any]:
    """Process a transaction or batch Bundle; returns the response Bundle (as JSON data)."""
    access = access or Access()
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError.invalid("POST to the base needs a Bundle", "resourceType")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise FhirError.invalid(
            "Only transaction and batch Bundles can be processed", "Bundle.type"
        )
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise FhirError.structure("Bundle.entry must be an array", "Bundle.entry")
    if len(entries) > service.settings.bundle_max_entries:
        raise FhirError.too_large(
            f"At most {service.settings.bundle_max_entries} entries per Bundle",
            "Bundle.entry",
        )
    if kind == "batch":
        return _batch(service, entries, representation, access)
    parsed = [_parse_entry(service, i, e) for i, e in enumerate(entries)]
    _check_distinct(parsed)
    for entry in parsed:
        _in_entry(entry, partial(_permit, access, entry, may_create_needed=True))
    for entry in parsed:  # before the transaction: a content check may be slow (DNS)
        if entry.resource is not None:
            rtype = service.resource_type(entry.res_type)
            _in_entry(entry, partial(service.check_content, rtype, entry.resource))
    with service.db.write() as conn:
        results = _transaction(service, conn, parsed, access.patient_ids)
        done = [e for e in parsed if results[e.index].res_id]  # not: a delete matching nothing
        if access.in_transaction is not None:
            access.in_transaction(conn, [results[e.index] for e in done])
    if access.in_transaction is None:
        access.touched.extend((_INTERACTION[e.method], results[e.index]) for e in done)
    return _response_bundle(
        "transaction-response", [_response(results[e.index], representation) for e in parsed]
    )


def _response_bundle(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """A transaction- or batch-response Bundle (an empty Bundle has no ``entry``: FHIR allows
    no empty arrays)."""
    bundle: dict[str, Any] = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": kind}
    if entries:
        bundle["entry"] = entries
    return bundle


def _check_distinct(entries: list[Entry]) -> None:
    """A transaction may write each resource once (FHIR: overlapping identities SHALL fail).

    Refused with 400, naming the later entry: two entries with the same ``fullUrl``, two
    writes (PUT, DELETE) of the same ``Type/id``, and two conditional creates with the same
    criteria. Conditional creates that resolve to a resource another entry writes are refused
    as they are resolved (:func:`_transaction`).
    """
    seen: dict[tuple[str, ...], int] = {}

    def once(key: tuple[str, ...], entry: Entry, element: str, what: str) -> None:
        first = seen.setdefault(key, entry.index)
        if first != entry.index:
            raise _fail(
                entry.index,
                element,
                f"{what} as entry {first} already does; a transaction may write each "
                "resource once",
            )

    for entry in entries:
        if entry.full_url:
            once(
                ("fullUrl", entry.full_url),
                entry,
                "fullUrl",
                f"This entry has the fullUrl '{entry.full_url}'",
            )
        if entry.method in ("PUT", "PATCH", "DELETE") and entry.res_id:
            target = f"{entry.res_type}/{entry.res_id}"
            once(("write", target), entry, "request.url", f"This entry writes {target}")
        if entry.conditional:
            target = f"{entry.res_type}?{entry.query}"
            once(("write", target), entry, "request.url", f"This entry writes {target}")
        if entry.method == "POST" and entry.if_none_exist:
            once(
                ("create", entry.res_type, entry.if_none_exist),
                entry,
                "request.ifNoneExist",
                f"This entry conditionally creates {entry.res_type}?{entry.if_none_exist}",
            )


def _transaction(
    service: FhirService,
    conn: Connection,
    entries: list[Entry],
    patient_ids: tuple[str, ...] | None = None,
) -> dict[int, VersionResult]:
    results: dict[int, VersionResult] = {}
    ordered = sorted(entries, key=lambda e: _ORDER[e.method])
    mapping: dict[str, str] = {}
    claimed = {(e.res_type, e.res_id) for e in ordered if e.res_id and e.method != "GET"}
    for entry in ordered:  # deletes first, then resolve the ids of creates
        if entry.method == "DELETE":
            rtype = service.resource_type(entry.res_type)
            if entry.conditional and not _resolve(service, conn, entry, claimed, patient_ids):
                results[entry.index] = _no_match(service, entry)
                continue
            results[entry.index] = _in_entry(
                entry,
                partial(
                    service.delete_in, conn, rtype, entry.res_id or "", patient_ids=patient_ids
                ),
            )
    for entry in ordered:  # conditional updates and patches: the ids they write
        if entry.conditional and entry.method in ("PUT", "PATCH"):
            _resolve(service, conn, entry, claimed, patient_ids)
    new_ids: dict[int, str] = {}
    written = {(e.res_type, e.res_id) for e in ordered if e.method in ("PUT", "PATCH", "DELETE")}
    matched: set[str] = set()
    for entry in ordered:
        if entry.method == "POST":
            rtype = service.resource_type(entry.res_type)
            match = None
            if entry.if_none_exist:
                match = _in_entry(
                    entry,
                    partial(
                        service.conditional_match, conn, rtype, entry.if_none_exist, patient_ids
                    ),
                )
            if match is not None:
                target = f"{match.res_type}/{match.res_id}"
                if (match.res_type, match.res_id) in written or target in matched:
                    raise _fail(
                        entry.index,
                        "request.ifNoneExist",
                        f"The criteria match {target}, which another entry writes; a "
                        "transaction may write each resource once",
                    )
                matched.add(target)
                results[entry.index] = VersionResult.of(match)
            else:
                new_ids[entry.index] = str(uuid.uuid4())
                target = f"{entry.res_type}/{new_ids[entry.index]}"
            if entry.full_url:
                mapping[entry.full_url] = target
        elif entry.method == "PUT" and entry.full_url:
            mapping[entry.full_url] = f"{entry.res_type}/{entry.res_id}"
    pending_keys = {(t.partition("/")[0], t.partition("/")[2]) for t in mapping.values()}
    # Whatever a PUT writes exists once the transaction commits, with or without a fullUrl.
    pending_keys |= {(e.res_type, e.res_id) for e in ordered if e.method == "PUT" and e.res_id}
    creates = []
    for entry in ordered:
        if entry.resource is not None:
            # Whatever is left unresolved is refused when the version is stamped.
            entry.resource = rewritten(entry.resource, mapping)
        if entry.method == "POST" and entry.index in new_ids:
            rtype = service.resource_type(entry.res_type)
            assert entry.resource is not None
            _in_entry(entry, partial(_profile, service, entry))
            content = _in_entry(
                entry,
                partial(service.apply_content, conn, rtype, new_ids[entry.index], entry.resource),
            )
            stamp = partial(
                service.stamp, rtype, content, new_ids[entry.index], 1, service.now_micros()
            )
            item = _in_entry(entry, stamp)
            if patient_ids is not None and item.index.patient_id not in patient_ids:
                raise outside_compartment(rtype.name)
            creates.append((entry, item))
    if creates:
        service.insert_new(
            conn, [(item, f"{e.where}.resource") for e, item in creates], pending_keys
        )
        events = [event_of(item) for _, item in creates]
        service.notify(conn, events)
        for (entry, item), event in zip(creates, events, strict=True):
            results[entry.index] = VersionResult.of(item, warnings=event.warnings, created=True)
    for entry in ordered:
        if entry.method == "PUT":
            rtype = service.resource_type(entry.res_type)
            _in_entry(entry, partial(_profile, service, entry))
            results[entry.index] = _in_entry(
                entry,
                partial(
                    service.update_in,
                    conn,
                    rtype,
                    entry.res_id or "",
                    entry.resource or {},
                    if_match=entry.if_match,
                    pending=pending_keys,
                    prefix=f"{entry.where}.resource",
                    patient_ids=patient_ids,
                ),
            )
        elif entry.method == "PATCH":
            rtype = service.resource_type(entry.res_type)
            assert entry.patch is not None
            results[entry.index] = _in_entry(
                entry,
                partial(
                    service.patch_in,
                    conn,
                    rtype,
                    entry.res_id or "",
                    entry.patch,
                    if_match=entry.if_match,
                    pending=pending_keys,
                    patient_ids=patient_ids,
                ),
            )
        elif entry.method == "GET":
            results[entry.index] = _in_entry(
                entry, partial(_get, service, conn, entry, patient_ids)
            )
    return results


def _resolve(
    service: FhirService,
    conn: Connection,
    entry: Entry,
    claimed: set[tuple[str, str]],
    patient_ids: tuple[str, ...] | None,
) -> bool:
    """Set the id a conditional entry writes (False: a delete that matches nothing).

    A conditional update writes its match or creates; a patch needs its match (404 without);
    a resource another entry writes too is refused, as for explicit ids.
    """
    rtype = service.resource_type(entry.res_type)
    where = f"{entry.where}.request.url"
    criteria = entry.query or ""
    if entry.method == "PUT":
        res_id, _ = _in_entry(
            entry,
            partial(
                service.conditional_target,
                conn,
                rtype,
                criteria,
                entry.resource or {},
                patient_ids=patient_ids,
                element=where,
                prefix=f"{entry.where}.resource",
            ),
        )
        entry.resource = {**(entry.resource or {}), "id": res_id}
    else:
        match = _in_entry(
            entry, partial(service.conditional_match, conn, rtype, criteria, patient_ids, where)
        )
        if match is None:
            if entry.method == "DELETE":
                return False
            raise FhirError.no_match(
                f"No {rtype.name} matches '{criteria}'", f"{entry.where}.request.url"
            )
        res_id = match.res_id
    if (entry.res_type, res_id) in claimed:
        raise _fail(
            entry.index,
            "request.url",
            f"The criteria match {entry.res_type}/{res_id}, which another entry writes; a "
            "transaction may write each resource once",
        )
    claimed.add((entry.res_type, res_id))
    entry.res_id = res_id
    return True


def _profile(service: FhirService, entry: Entry) -> None:
    issues = service.profiles.validate(
        entry.resource or {},
        now=service.clock(),
        clock_skew_seconds=service.settings.clock_skew_seconds,
    )
    if issues:
        raise FhirError.rejected(issues)


def _in_entry(entry: Entry, action: Callable[[], T]) -> T:
    """Run ``action``; re-root any error's expressions under this entry."""
    try:
        return action()
    except FhirError as exc:
        prefix = f"{entry.where}.resource" if entry.resource is not None else entry.where
        issues = [
            i.prefixed(prefix) if not any(e.startswith("Bundle.") for e in i.expression) else i
            for i in exc.issues
        ]
        raise exc.with_issues(issues) from exc


def _get(
    service: FhirService,
    conn: Connection,
    entry: Entry,
    patient_ids: tuple[str, ...] | None = None,
) -> VersionResult:
    if entry.res_id is None:
        raise FhirError.unsupported(
            "Searches inside a transaction are not supported; use a batch",
            f"{entry.where}.request.url",
        )
    stored = repo.fetch_current(conn, entry.res_type, entry.res_id)
    if (
        stored is None
        or stored.deleted
        or not service.visible(patient_ids, stored)
    ):
        raise FhirError.not_found(f"{entry.res_type}/{entry.res_id} is not known")
    return VersionResult.of(stored, service.compartment(stored))


def _batch(
    service: FhirService, entries: list[Any], representation: bool, access: Access
) -> dict[str, Any]:
    out = []
    for index, raw in enumerate(entries):
        try:
            entry = _parse_entry(service, index, raw)
            _in_entry(entry, partial(_permit, access, entry, may_create_needed=False))
            result = _single(service, entry, access)
            if result.res_id and (entry.method == "GET" or access.in_transaction is None):
                access.touched.append((_INTERACTION[entry.method], result))
            out.append(_response(result, representation or entry.method == "GET"))
        except FhirError as exc:
            status = HTTPStatus(exc.status)
            out.append(
                {
                    "response": {
                        "status": f"{status.value} {status.phrase}",
                        "outcome": operation_outcome(exc.issues),
                    }
                }
            )
    return _response_bundle("batch-response", out)


def _single(service: FhirService, entry: Entry, access: Access) -> VersionResult:
    patient_ids, hook = access.patient_ids, access.in_transaction

    def run() -> VersionResult:
        if entry.conditional:
            return _single_conditional(service, entry, access)
        if entry.method == "PATCH":
            assert entry.patch is not None
            return service.patch(
                entry.res_type,
                entry.res_id or "",
                entry.patch,
                if_match=entry.if_match,
                patient_ids=patient_ids,
                in_transaction=hook,
            )
        if entry.method == "POST":
            return service.create(
                entry.resource,
                if_none_exist=entry.if_none_exist,
                patient_ids=patient_ids,
                in_transaction=hook,
            )
        if entry.method == "PUT":
            return service.update(
                entry.res_type,
                entry.res_id or "",
                entry.resource,
                if_match=entry.if_match,
                patient_ids=patient_ids,
                in_transaction=hook,
            )
        if entry.method == "DELETE":
            return service.delete(
                entry.res_type, entry.res_id or "", patient_ids=patient_ids, in_transaction=hook
            )
        if entry.res_id is None:
            raise FhirError.unsupported(
                "Searches inside a batch are not supported",
                f"{entry.where}.request.url",
            )
        return service.read(entry.res_type, entry.res_id, patient_ids=patient_ids)

    return _in_entry(entry, run)


def _single_conditional(service: FhirService, entry: Entry, access: Access) -> VersionResult:
    """A batch's conditional PUT, PATCH or DELETE, in its own transaction."""
    criteria, patient_ids, hook = entry.query or "", access.patient_ids, access.in_transaction
    if entry.method == "PUT":
        try:
            access.permit(entry.res_type, "create")
            may_create = True
        except FhirError:
            may_create = False
        return service.conditional_update(
            entry.res_type,
            criteria,
            entry.resource,
            patient_ids=patient_ids,
            may_create=may_create,
            in_transaction=hook,
        )
    if entry.method == "PATCH":
        assert entry.patch is not None
        return service.conditional_patch(
            entry.res_type, criteria, entry.patch, patient_ids=patient_ids, in_transaction=hook
        )
    deleted = service.conditional_delete(
        entry.res_type, criteria, patient_ids=patient_ids, in_transaction=hook
    )
    return deleted if deleted is not None else _no_match(service, entry)
