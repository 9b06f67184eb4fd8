"""``POST [base]`` with a ``transaction`` or ``batch`` Bundle.

A transaction runs every entry in one database transaction: all succeed or nothing is written,
whatever the entry order. ``urn:uuid:`` references between entries are resolved to the ids the
server assigns (or finds, for conditional creates); one that names no entry is refused (422, see
:mod:`service.fhir.references`). A batch runs each entry on its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Any, TypeVar

import orjson
from sqlalchemy import Connection

from service.fhir.dates import format_instant
from service.fhir.outcome import FhirError, operation_outcome
from service.fhir.references import rewritten
from service.fhir.service import (
    FhirService,
    TransactionHook,
    VersionResult,
    check_id,
    event_of,
    outside_compartment,
)
from service.storage import repository as repo
from service.validation import validate_structure

T = TypeVar("T")
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3}
_INTERACTION = {"DELETE": "delete", "POST": "create", "PUT": "update", "GET": "read"}


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

    @property
    def where(self) -> str:
        """The FHIRPath of this entry, for error expressions."""
        return f"Bundle.entry[{self.index}]"


def _fail(index: int, element: str, message: str, status: int = 400) -> FhirError:
    return FhirError.single(status, "invalid", message, f"Bundle.entry[{index}].{element}")


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
        raise FhirError(
            exc.status, [i.prefixed(f"Bundle.entry[{index}].request.url") for i in exc.issues]
        ) from exc
    resource = raw.get("resource")
    if method in ("POST", "PUT"):
        if resource is None:
            raise _fail(index, "resource", f"A {method} entry needs a resource")
        try:
            validate_structure(resource, res_type)
        except FhirError as exc:
            raise FhirError(
                exc.status, [i.prefixed(f"Bundle.entry[{index}].resource") for i in exc.issues]
            ) from exc
        if method == "PUT" and (res_id is None or resource.get("id") != res_id):
            raise _fail(index, "resource.id", "A PUT entry's resource id must match its url")
    elif res_id is None and method == "DELETE":
        raise _fail(index, "request.url", "DELETE needs Type/id in request.url")
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
    )


def _response(result: VersionResult, representation: bool) -> dict[str, Any]:
    status = HTTPStatus(result.status)
    out: dict[str, Any] = {
        "status": f"{status.value} {status.phrase}",
        "etag": f'W/"{result.version_id}"',
        "lastModified": format_instant(result.last_updated),
    }
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
        raise FhirError.single(400, "invalid", "POST to the base needs a Bundle", "resourceType")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise FhirError.single(
            400, "invalid", "Only transaction and batch Bundles can be processed", "Bundle.type"
        )
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise FhirError.single(400, "structure", "Bundle.entry must be an array", "Bundle.entry")
    if len(entries) > service.settings.bundle_max_entries:
        raise FhirError.single(
            413,
            "too-costly",
            f"At most {service.settings.bundle_max_entries} entries per Bundle",
            "Bundle.entry",
        )
    if kind == "batch":
        return _batch(service, entries, representation, access)
    parsed = [_parse_entry(service, i, e) for i, e in enumerate(entries)]
    _check_distinct(parsed)
    for entry in parsed:
        _in_entry(entry, partial(access.permit, entry.res_type, _INTERACTION[entry.method]))
    for entry in parsed:  # before the transaction: a content check may be slow (DNS)
        if entry.resource is not None:
            rtype = service.resource_type(entry.res_type)
            _in_entry(entry, partial(service.check_content, rtype, entry.resource))
    with service.db.write() as conn:
        results = _transaction(service, conn, parsed, access.patient_ids)
        if access.in_transaction is not None:
            access.in_transaction(conn, [results[e.index] for e in parsed])
    if access.in_transaction is None:
        access.touched.extend((_INTERACTION[e.method], results[e.index]) for e in parsed)
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
        if entry.method in ("PUT", "DELETE") and entry.res_id:
            target = f"{entry.res_type}/{entry.res_id}"
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
    for entry in ordered:  # deletes first, then resolve the ids of creates
        if entry.method == "DELETE":
            rtype = service.resource_type(entry.res_type)
            results[entry.index] = _in_entry(
                entry,
                partial(
                    service.delete_in, conn, rtype, entry.res_id or "", patient_ids=patient_ids
                ),
            )
    new_ids: dict[int, str] = {}
    written = {(e.res_type, e.res_id) for e in ordered if e.method in ("PUT", "DELETE")}
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
                results[entry.index] = VersionResult.of(200, match)
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
            results[entry.index] = VersionResult.of(201, item, warnings=event.warnings)
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
        elif entry.method == "GET":
            results[entry.index] = _in_entry(
                entry, partial(_get, service, conn, entry, patient_ids)
            )
    return results


def _profile(service: FhirService, entry: Entry) -> None:
    issues = service.profiles.validate(
        entry.resource or {},
        now=service.clock(),
        clock_skew_seconds=service.settings.clock_skew_seconds,
    )
    if issues:
        raise FhirError(422, issues)


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
        raise FhirError(exc.status, issues, exc.headers) from exc


def _get(
    service: FhirService,
    conn: Connection,
    entry: Entry,
    patient_ids: tuple[str, ...] | None = None,
) -> VersionResult:
    if entry.res_id is None:
        raise FhirError.single(
            400,
            "not-supported",
            "Searches inside a transaction are not supported; use a batch",
            f"{entry.where}.request.url",
        )
    stored = repo.fetch_current(conn, entry.res_type, entry.res_id)
    if (
        stored is None
        or stored.deleted
        or not service.visible(patient_ids, stored)
    ):
        raise FhirError.single(404, "not-found", f"{entry.res_type}/{entry.res_id} is not known")
    return VersionResult.of(200, stored, service.compartment(stored))


def _batch(
    service: FhirService, entries: list[Any], representation: bool, access: Access
) -> dict[str, Any]:
    out = []
    for index, raw in enumerate(entries):
        try:
            entry = _parse_entry(service, index, raw)
            _in_entry(entry, partial(access.permit, entry.res_type, _INTERACTION[entry.method]))
            result = _single(service, entry, access)
            if entry.method == "GET" or access.in_transaction is None:
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
            raise FhirError.single(
                400,
                "not-supported",
                "Searches inside a batch are not supported",
                f"{entry.where}.request.url",
            )
        return service.read(entry.res_type, entry.res_id, patient_ids=patient_ids)

    return _in_entry(entry, run)
