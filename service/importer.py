"""Bulk import of FHIR resources from an NDJSON file or a Bundle file (``telemon import``).

Formats
    *NDJSON*: one resource per line (``.ndjson``/``.jsonl``, or any file whose first line is a
    complete JSON value with more lines after it). A malformed line is rejected, not fatal.
    *A JSON document*: a Bundle, or a single resource.

Bundles
    A ``transaction`` Bundle is a request whose author wants all or nothing, so it is executed
    whole with :func:`service.fhir.bundles.process`: the server resolves its ``urn:uuid:``
    references and either every entry is written or none (one rejection for the Bundle).
    ``collection``, ``searchset`` and ``batch`` Bundles are treated as data, like NDJSON: each
    entry's resource is created on its own (a batch entry's ``request`` is not executed).

Idempotency
    A resource with an ``identifier`` (for a Patient preferably its BSN) is created with the
    conditional ``If-None-Exist: identifier=<system>|<value>``, so importing the same file twice
    creates nothing the second time: those resources count as *skipped*. A resource without an
    identifier has nothing to be matched on and is created every time.

References
    The server assigns new ids, so the importer remembers where every resource it created or
    matched went (by its ``Type/id`` in the file and its ``fullUrl``) and rewrites later
    references to it. A resource must therefore come after the resources it references, as in
    bulk-export order (Patient and Device before Observation).

Speed
    JSON parsing and structure validation run outside the database; the writes go
    :data:`CHUNK_SIZE` resources per database transaction. A resource that fails in the database
    phase (profile, unresolvable reference, ambiguous match) is rejected before any of it is
    written, so the rest of its chunk still commits. An unexpected database error rolls the chunk
    back and it is redone one resource per transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from service.fhir import bundles
from service.fhir.outcome import FhirError, Issue
from service.fhir.registry import ResourceType
from service.fhir.service import FhirService
from service.validation import BSN_SYSTEM, parse_json, validate_structure

#: Resources written per database transaction.
CHUNK_SIZE = 200

_NDJSON_SUFFIXES = (".ndjson", ".jsonl")
_DATA_BUNDLES = ("collection", "searchset", "batch")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one resource (or a whole transaction Bundle, or the file) was not imported.

    ``line`` is the 1-based NDJSON line, ``entry`` the 0-based Bundle entry index; both are None
    when the whole file or transaction Bundle was rejected.
    """

    status: int
    issues: tuple[Issue, ...]
    line: int | None = None
    entry: int | None = None

    @property
    def where(self) -> str:
        """Where in the file: ``line 7``, ``entry 3`` or ``file``."""
        if self.line is not None:
            return f"line {self.line}"
        if self.entry is not None:
            return f"entry {self.entry}"
        return "file"

    def describe(self) -> str:
        """One line per issue: ``<diagnostics> (at <expression>)``."""
        parts = []
        for issue in self.issues:
            at = f" (at {', '.join(issue.expression)})" if issue.expression else ""
            parts.append(f"{issue.diagnostics}{at}")
        return "; ".join(parts) or HTTPStatus(self.status).phrase


@dataclass(slots=True)
class ImportSummary:
    """What an import did. ``updated`` only happens for PUT entries of a transaction Bundle."""

    created: int = 0
    skipped: int = 0
    updated: int = 0
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)

    def reject(self, rejection: Rejection, count: int = 1) -> None:
        """Record a rejection covering ``count`` resources."""
        self.rejected += count
        self.rejections.append(rejection)


@dataclass(slots=True)
class _Item:
    """A parsed, structurally valid resource waiting to be written."""

    line: int | None
    entry: int | None
    rtype: ResourceType
    data: dict[str, Any]
    criteria: str | None
    keys: tuple[str, ...]  # how other resources in the file may refer to this one


def identifier_criteria(resource: dict[str, Any]) -> str | None:
    """``identifier=<system>|<value>`` search criteria for a conditional create, or None.

    Takes the first identifier with a system and a value (a Patient's BSN first).
    """
    usable = [
        i
        for i in resource.get("identifier") or ()
        if isinstance(i, dict)
        and isinstance(i.get("system"), str)
        and isinstance(i.get("value"), str)
        and "|" not in i["system"]  # the system|value split cannot be escaped
    ]
    if not usable:
        return None
    if resource.get("resourceType") == "Patient":
        usable.sort(key=lambda i: i["system"] != BSN_SYSTEM)
    # FHIR search escaping: a comma would otherwise separate alternatives.
    system, value = (_escape(usable[0][k]) for k in ("system", "value"))
    return "identifier=" + quote(f"{system}|{value}", safe="")


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,")


def detect_format(path: Path) -> str:
    """``"ndjson"`` or ``"document"`` (a Bundle or a single resource), see the module docs."""
    if path.suffix.lower() in _NDJSON_SUFFIXES:
        return "ndjson"
    with path.open("rb") as f:
        lines = (raw.strip() for raw in f)
        first = next((raw for raw in lines if raw), b"")
        more = any(lines)
    if not more:
        return "document"
    try:
        orjson.loads(first)
    except orjson.JSONDecodeError:
        return "document"  # a pretty-printed document: its first line is not JSON on its own
    return "ndjson"


def count_items(path: Path) -> int | None:
    """How many resources :func:`import_file` will report progress for (None if unknown)."""
    if detect_format(path) == "ndjson":
        with path.open("rb") as f:
            return sum(1 for raw in f if raw.strip())
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        entries = data.get("entry")
        return len(entries) if isinstance(entries, list) else 0
    return 1


def import_file(
    service: FhirService, path: Path, *, progress: Callable[[int], None] | None = None
) -> ImportSummary:
    """Import the resources in ``path`` (NDJSON or a Bundle/resource JSON file).

    ``progress`` is called with the number of resources just finished (written, matched or
    rejected), chunk by chunk. Never raises for bad content: every problem becomes a
    :class:`Rejection` in the summary.
    """
    summary = ImportSummary()
    report = progress or (lambda _n: None)
    if detect_format(path) == "ndjson":
        with path.open("rb") as f:
            _import_items(service, _ndjson_items(service, f, summary), summary, report)
        return _in_file_order(summary)
    try:
        data = parse_json(path.read_bytes(), max_depth=service.settings.max_json_depth)
    except FhirError as exc:
        summary.reject(Rejection(exc.status, tuple(exc.issues)))
        report(1)
        return summary
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        _import_bundle(service, data, summary, report)
    else:
        _import_items(
            service, _parsed_items(service, [(data, 1, None, None)], summary), summary, report
        )
    return _in_file_order(summary)


def _in_file_order(summary: ImportSummary) -> ImportSummary:
    # Parse-time rejections of a chunk are recorded before its write-time ones.
    summary.rejections.sort(key=lambda r: r.line or r.entry or 0)
    return summary


# -- parsing ---------------------------------------------------------------------------------


def _ndjson_items(
    service: FhirService, lines: Iterable[bytes], summary: ImportSummary
) -> Iterator[_Item | None]:
    """Items from NDJSON lines; None for a line rejected while parsing (it still counts)."""
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            data = parse_json(raw.strip(), max_depth=service.settings.max_json_depth)
        except FhirError as exc:
            summary.reject(Rejection(exc.status, tuple(exc.issues), line=number))
            yield None
            continue
        yield from _parsed_items(service, [(data, number, None, None)], summary)


def _parsed_items(
    service: FhirService,
    resources: Iterable[tuple[Any, int | None, int | None, str | None]],
    summary: ImportSummary,
) -> Iterator[_Item | None]:
    """Structure-check ``(data, line, entry, fullUrl)`` tuples into items (None = rejected)."""
    for data, line, entry, full_url in resources:
        try:
            rtype = service.resource_type(validate_structure(data), for_write=True)
        except FhirError as exc:
            issues = tuple(_in_entry(i, entry) for i in exc.issues)
            summary.reject(Rejection(exc.status, issues, line=line, entry=entry))
            yield None
            continue
        keys = [f"{rtype.name}/{data['id']}"] if isinstance(data.get("id"), str) else []
        if full_url:
            keys.append(full_url)
        yield _Item(line, entry, rtype, data, identifier_criteria(data), tuple(keys))


def _import_bundle(
    service: FhirService,
    bundle: dict[str, Any],
    summary: ImportSummary,
    report: Callable[[int], None],
) -> None:
    kind = bundle.get("type")
    entries = bundle.get("entry") or []
    if kind == "transaction":
        _import_transaction(service, bundle, summary)
        report(len(entries) or 1)
        return
    if kind not in _DATA_BUNDLES or not isinstance(entries, list):
        issue = Issue(
            "not-supported",
            f"Cannot import a '{kind}' Bundle; use a transaction, batch, collection or searchset",
            ("Bundle.type",),
        )
        summary.reject(Rejection(400, (issue,)))
        report(1)
        return
    resources: list[tuple[Any, int | None, int | None, str | None]] = []
    for index, raw in enumerate(entries):
        if not isinstance(raw, dict) or "resource" not in raw:
            issue = Issue("required", "The entry has no resource", (f"Bundle.entry[{index}]",))
            summary.reject(Rejection(400, (issue,), entry=index))
            report(1)
            continue
        if kind == "searchset" and (raw.get("search") or {}).get("mode") == "outcome":
            report(1)  # an OperationOutcome about the search, not data
            continue
        full_url = raw.get("fullUrl")
        resources.append(
            (raw["resource"], None, index, full_url if isinstance(full_url, str) else None)
        )
    _import_items(service, _parsed_items(service, resources, summary), summary, report)


def _import_transaction(
    service: FhirService, bundle: dict[str, Any], summary: ImportSummary
) -> None:
    """Run a transaction Bundle whole; conditional POSTs make a re-import match, not duplicate."""
    entries = bundle.get("entry") or []
    methods: list[Any] = []
    for entry in entries if isinstance(entries, list) else ():
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict):
            methods.append(None)
            continue
        methods.append(request.get("method"))
        resource = entry.get("resource")
        if request.get("method") == "POST" and isinstance(resource, dict):
            criteria = identifier_criteria(resource)
            if criteria and "ifNoneExist" not in request:
                request["ifNoneExist"] = criteria
    try:
        bad = next((i for i, m in enumerate(methods) if m not in ("POST", "PUT")), None)
        if bad is not None:
            raise FhirError.single(
                400,
                "not-supported",
                "An import only creates or updates; this entry is a "
                f"{methods[bad] or 'request without a method'}",
                f"Bundle.entry[{bad}].request.method",
            )
        response = bundles.process(service, bundle)
    except FhirError as exc:
        summary.reject(Rejection(exc.status, tuple(exc.issues)), count=len(methods) or 1)
        return
    for method, result in zip(methods, response.get("entry", []), strict=True):
        status = int(result["response"]["status"].split()[0])
        if status == 201:
            summary.created += 1
        elif method == "PUT":
            summary.updated += 1
        else:
            summary.skipped += 1


# -- writing ---------------------------------------------------------------------------------


def _chunks(items: Iterable[_Item | None], size: int) -> Iterator[tuple[list[_Item], int]]:
    """Lists of up to ``size`` items, each with how many inputs (rejected ones too) it covers."""
    chunk: list[_Item] = []
    seen = 0
    for item in items:
        seen += 1
        if item is not None:
            chunk.append(item)
        if len(chunk) >= size:
            yield chunk, seen
            chunk, seen = [], 0
    if seen:
        yield chunk, seen


def _import_items(
    service: FhirService,
    items: Iterable[_Item | None],
    summary: ImportSummary,
    report: Callable[[int], None],
) -> None:
    mapping: dict[str, str] = {}  # reference in the file → Type/id on the server
    for chunk, seen in _chunks(items, CHUNK_SIZE):
        saved = dict(mapping)
        try:
            with service.db.write() as conn:
                outcomes = [_write(service, conn, item, mapping) for item in chunk]
        except SQLAlchemyError:
            # Something the domain checks did not foresee; isolate it one resource at a time.
            mapping.clear()
            mapping.update(saved)
            outcomes = [_write_alone(service, item, mapping) for item in chunk]
        for outcome in outcomes:
            if isinstance(outcome, Rejection):
                summary.reject(outcome)
            elif outcome == 201:
                summary.created += 1
            else:
                summary.skipped += 1
        report(seen)


def _write_alone(service: FhirService, item: _Item, mapping: dict[str, str]) -> int | Rejection:
    try:
        with service.db.write() as conn:
            return _write(service, conn, item, mapping)
    except SQLAlchemyError as exc:
        for key in item.keys:
            mapping.pop(key, None)
        issue = Issue("exception", f"Database error: {type(exc).__name__}")
        return Rejection(500, (issue,), line=item.line, entry=item.entry)


def _write(
    service: FhirService, conn: Connection, item: _Item, mapping: dict[str, str]
) -> int | Rejection:
    """Create (or match) one item in the open transaction; its status, or why not.

    A :class:`FhirError` is raised before anything of the item is written, so the transaction
    stays usable for the rest of the chunk.
    """
    data = _rewritten(item.data, mapping) if mapping else item.data
    try:
        issues = service.profiles.validate(
            data, now=service.clock(), clock_skew_seconds=service.settings.clock_skew_seconds
        )
        if issues:
            raise FhirError(422, issues)
        result = service.create_in(conn, item.rtype, data, if_none_exist=item.criteria)
    except FhirError as exc:
        for key in item.keys:
            mapping.pop(key, None)
        issues = [_in_entry(i, item.entry) for i in exc.issues]
        return Rejection(exc.status, tuple(issues), line=item.line, entry=item.entry)
    for key in item.keys:
        mapping[key] = f"{result.res_type}/{result.res_id}"
    return result.status


def _in_entry(issue: Issue, entry: int | None) -> Issue:
    """Root an issue's expressions in its Bundle entry (NDJSON issues stay as they are)."""
    return issue if entry is None else issue.prefixed(f"Bundle.entry[{entry}].resource")


def _rewritten(node: Any, mapping: dict[str, str]) -> Any:
    """A copy of ``node`` with references to resources imported earlier pointing at them."""
    if isinstance(node, dict):
        out = {k: _rewritten(v, mapping) for k, v in node.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in mapping:
            out["reference"] = mapping[ref]
        return out
    if isinstance(node, list):
        return [_rewritten(v, mapping) for v in node]
    return node
