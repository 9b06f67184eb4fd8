"""Bulk import of FHIR resources from NDJSON and Bundle files (``telemon import``).

Inputs
    Several files and directories in one run (a directory contributes every ``.ndjson``,
    ``.jsonl`` and ``.json`` file below it). *NDJSON*: one resource per line (``.ndjson``/
    ``.jsonl``, or any file whose first line is a complete JSON value with more lines after it);
    a malformed line is rejected, not fatal. *A JSON document*: a Bundle, or a single resource.

Order
    Files are imported in dependency order whatever order they are given in
    (:data:`DEPENDENCY_ORDER`, by the first resource of an NDJSON file, the types of a Bundle),
    so a FHIR Bulk Data export (``Patient.000.ndjson``, ``Device.000.ndjson``,
    ``Observation.000.ndjson`` …) goes in as one run. A resource whose reference names
    something not imported yet waits until the end of the run and is tried again then (a
    file's resources may refer to later ones).

References
    The server assigns new ids, so one id map for the whole run remembers where every resource
    it created or matched went (by its ``Type/id`` in the file and its ``fullUrl``) and rewrites
    later references to it. After that the write rule of :mod:`service.fhir.references`
    applies, as to every write: a reference to a type telemon stores must resolve, one to a type
    it does not store stays an external reference, an unresolved ``urn:uuid:`` is refused.
    A resource that refers to one that was rejected is rejected too, saying so.

Types telemon does not store
    Without ``skip_unsupported`` such a resource is rejected, and a transaction Bundle holding
    one is refused whole. With it, they are counted per type as skipped and the rest is
    imported. Either way a ``urn:uuid:`` reference to such an entry becomes the external
    reference ``Type/id`` (Synthea's Observations refer to their Encounter so).

Bundles
    A ``transaction`` Bundle is a request whose author wants all or nothing, so it is executed
    with :func:`service.fhir.bundles.process`. One above the server's entry limit
    (``TELEMON_BUNDLE_MAX_ENTRIES``) is imported in parts of at most that size, in dependency
    order, each all-or-nothing; the id map carries references from one part to the next.
    ``collection``, ``searchset`` and ``batch`` Bundles are data, like NDJSON: each entry's
    resource is created on its own (a batch entry's ``request`` is not executed).

Idempotency
    A resource with an ``identifier`` (for a Patient preferably its BSN) is created with the
    conditional ``If-None-Exist: identifier=<system>|<value>``, so importing the same file twice
    creates nothing the second time: those resources count as *skipped*. A resource without an
    identifier has nothing to be matched on and is created every time.

Writing
    JSON parsing and structure validation run outside the database; the writes go
    :data:`CHUNK_SIZE` resources per database transaction (:data:`PG_CHUNK_SIZE` on
    PostgreSQL), each chunk through the one call :func:`store_chunk`. A chunk goes in as one
    batch (:func:`store_batch`): per resource the same checks as one by one, then one
    identifier lookup, one insert of all its new resources with their index rows and one
    alert evaluation per patient, as for a Bundle. A resource rejected there (profile,
    ambiguous match, a reference to a rejected resource) is simply left out of the insert. A
    chunk the batch cannot take (a reference that does not resolve yet, a type with a content
    hook) goes resource by resource, each in a savepoint, so the rest of it still commits. An
    unexpected database error rolls the chunk back and it is redone one resource per
    transaction. On PostgreSQL the insert is ``COPY`` (:mod:`service.storage.pg_bulk`), and
    a second thread writes and commits each chunk while the next one is checked
    (:meth:`_Run.store_overlapped`).

The summary counts created / updated / skipped / rejected per resource type, and every skip and
rejection per reason (:class:`service.bulk.import_summary.ImportSummary`).
"""

from __future__ import annotations

import gc
import heapq
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson

from service.bulk.import_summary import (
    ALREADY_PRESENT,
    CREATED,
    NOT_DATA,
    NOT_STORED,
    SKIPPED,
    UNKNOWN_TYPE,
    UPDATED,
    ImportSummary,
    Rejection,
    location,
)
from service.core.outcome import FhirError, Issue
from service.core.registry import ResourceType
from service.fhir import bundles
from service.fhir.hooks import event_of
from service.fhir.references import (
    BUNDLE_NAMES,
    is_reference_failure,
    reference_paths,
    remapped,
    rewritten,
)
from service.fhir.service import FhirService
from service.storage import repository as repo
from service.storage.db import Connection, StorageError
from service.storage.repository import NewVersion
from service.storage.tables import RESOURCE_TABLES
from service.validation import BSN_SYSTEM, parse_json, validate_structure

#: Resources written per database transaction (SQLite: short, so that API writes, which
#: wait for the one writer, are not held up long).
CHUNK_SIZE = 200

#: Resources written per database transaction on PostgreSQL, where readers and other
#: writers do not wait for it.
PG_CHUNK_SIZE = 2000

#: The order types are written in: each refers only to types before it (a Device to its
#: Patient, an Observation to its Patient, Device and performer, a Flag to its Observations).
DEPENDENCY_ORDER = (
    "Practitioner",
    "Patient",
    "Device",
    "Goal",
    "CarePlan",
    "Observation",
    "Flag",
    "Subscription",
)

_NDJSON_SUFFIXES = (".ndjson", ".jsonl")
_SUFFIXES = (*_NDJSON_SUFFIXES, ".json")
_DATA_BUNDLES = ("collection", "searchset", "batch")


@dataclass(slots=True)
class Item:
    """A parsed, structurally valid resource waiting to be written."""

    file: Path
    line: int | None
    entry: int | None
    rtype: ResourceType
    data: dict[str, Any]
    criteria: str | None
    keys: tuple[str, ...]  # how other resources in the run may refer to this one
    identifier: tuple[str, str] | None = None  # (system, value) the criteria match on

    def rejection(self, status: int, issues: Iterable[Issue], *, waits: bool = False) -> Rejection:
        """A rejection of this item, its issues rooted in its Bundle entry."""
        rooted = tuple(_in_entry(i, self.entry) for i in issues)
        return Rejection(
            status, rooted, self.line, self.entry, self.file, self.rtype.name, waits=waits
        )

    @property
    def where(self) -> str:
        """Where the item is, for messages."""
        return location(self.file, self.line, self.entry)


@dataclass(slots=True)
class IdMap:
    """Where the resources of the run went: the reference in a file → ``Type/id`` on the server.

    ``failed`` holds the references of resources that were rejected, with where they were.
    """

    targets: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def resolve(self, item: Item) -> dict[str, Any] | Rejection:
        """The item's resource with its references rewritten; a rejection when one of them
        names a resource of the run that was rejected."""
        issues = [
            Issue(
                "not-found",
                f"{ref} was not imported (rejected at {self.failed[ref]})",
                (f"{item.rtype.name}.{path}",),
            )
            for path, ref in (reference_paths(item.data) if self.failed else ())
            if ref in self.failed and ref not in self.targets
        ]
        if issues:
            self.fail(item.keys, item.where)
            return item.rejection(422, issues)
        return remapped(item.data, self.targets) if self.targets else item.data

    def record(self, keys: Iterable[str], target: str) -> None:
        """Remember that ``keys`` now refer to ``target`` (``Type/id``)."""
        for key in keys:
            self.targets[key] = target
            self.failed.pop(key, None)

    def fail(self, keys: Iterable[str], where: str) -> None:
        """Remember that the resource known as ``keys`` was rejected (at ``where``), so that
        what refers to it is rejected too."""
        for key in keys:
            self.targets.pop(key, None)
            self.failed[key] = where

    def copy(self) -> IdMap:
        """A copy to restore after a rolled-back chunk."""
        return IdMap(dict(self.targets), dict(self.failed))


def identifier_criteria(resource: dict[str, Any]) -> str | None:
    """``identifier=<system>|<value>`` search criteria for a conditional create, or None.

    Takes the first identifier with a system and a value (a Patient's BSN first).
    """
    found = match_identifier(resource)
    if found is None:
        return None
    # FHIR search escaping: a comma would otherwise separate alternatives.
    system, value = (_escape(part) for part in found)
    return "identifier=" + quote(f"{system}|{value}", safe="")


def match_identifier(resource: dict[str, Any]) -> tuple[str, str] | None:
    """The (system, value) of the identifier a conditional create matches on, or None."""
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
    return usable[0]["system"], usable[0]["value"]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,")


def expand(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """The files to import from ``paths`` (directories searched below), and the files a
    directory held that are not FHIR JSON or NDJSON (hidden ones are passed over silently)."""
    files: list[Path] = []
    ignored: list[Path] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        for found in sorted(p for p in path.rglob("*") if p.is_file()):
            if any(part.startswith(".") for part in found.relative_to(path).parts):
                continue
            (files if found.suffix.lower() in _SUFFIXES else ignored).append(found)
    return files, ignored


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
    """How many resources the import of ``path`` reports progress for (None if unknown)."""
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


def rank(path: Path) -> int:
    """Where ``path`` goes in the dependency order: the rank of its earliest type."""
    try:
        if detect_format(path) == "ndjson":
            with path.open("rb") as f:
                first = next((raw for raw in f if raw.strip()), b"{}")
            types = [_type_of(orjson.loads(first))]
        else:
            data = orjson.loads(path.read_bytes())
            entries = data.get("entry") if _type_of(data) == "Bundle" else None
            if isinstance(entries, list):
                types = [_type_of(e.get("resource")) for e in entries if isinstance(e, dict)]
            else:
                types = [_type_of(data)]
    except (OSError, orjson.JSONDecodeError, AttributeError):
        types = []
    return min((_type_rank(t) for t in types), default=len(DEPENDENCY_ORDER))


def _type_of(data: Any) -> str | None:
    kind = data.get("resourceType") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else None


def _type_rank(res_type: str | None) -> int:
    if res_type in DEPENDENCY_ORDER:
        return DEPENDENCY_ORDER.index(res_type)
    return len(DEPENDENCY_ORDER)


def import_paths(
    service: FhirService,
    paths: Sequence[Path],
    *,
    skip_unsupported: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Import the files and directories in ``paths`` in one run (see the module docs).

    ``progress`` is called with the number of resources just finished (written, matched,
    skipped or rejected), chunk by chunk. Never raises for bad content: every problem becomes
    a :class:`Rejection` in the summary.
    """
    files, ignored = expand(paths)
    run = _Run(service, skip_unsupported, progress or (lambda _n: None))
    run.summary.ignored = ignored
    with _few_collections():
        for path in sorted(files, key=rank):  # stable: files of one rank keep the given order
            run.summary.files.append(path)
            run.import_file(path)
        run.finish()
    if any(c[CREATED] or c[UPDATED] for c in run.summary.counts.values()):
        # Searches need no statistics, but the planner's other choices do; this server runs
        # without autovacuum (and it would wake up late after a bulk load).
        service.db.analyze([table.name for table in RESOURCE_TABLES])
    return run.finished()


def import_lines(service: FhirService, name: Path, lines: Iterable[bytes]) -> ImportSummary:
    """Import NDJSON ``lines`` that are not in a file (``name`` stands for them in the
    summary) in one run, as :func:`import_paths` imports a file, except that it leaves the
    ``ANALYZE`` to the caller (a bench loading in parts, or measuring stale statistics)."""
    run = _Run(service, False, lambda _n: None)
    run.summary.files.append(name)
    with _few_collections():
        run.store(run.ndjson_items(name, lines))
        run.finish()
    return run.finished()


#: Allocations between two collections of the youngest generation during an import (Python's
#: default is 700).
_GC_YOUNG = 50_000


@contextmanager
def _few_collections() -> Iterator[None]:
    """Let the cyclic garbage collector run seldom, and not over what existed before.

    An import allocates millions of short-lived dicts and lists (freed by reference counting,
    not by the collector), and at Python's thresholds each chunk set off a full collection
    that walked every object of the process (the models, the registry): 17 % of an import's
    time. Frozen, those are left out of collections; they are unfrozen afterwards.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


class _Run:
    """The state of one import run: the id map, the summary, the resources left to retry."""

    def __init__(
        self, service: FhirService, skip_unsupported: bool, report: Callable[[int], None]
    ) -> None:
        self.service = service
        self.skip_unsupported = skip_unsupported
        self.report = report
        self.summary = ImportSummary()
        self.ids = IdMap()
        #: Items whose references did not resolve yet, with their last rejection.
        self.waiting: list[tuple[Item, Rejection]] = []

    # -- reading ---------------------------------------------------------------------------

    def import_file(self, path: Path) -> None:
        """Import one NDJSON or JSON file."""
        if detect_format(path) == "ndjson":
            with path.open("rb") as f:
                self.store(self.ndjson_items(path, f))
            return
        try:
            data = parse_json(path.read_bytes(), max_depth=self.service.settings.max_json_depth)
        except FhirError as exc:
            self.summary.reject(Rejection(exc.status, tuple(exc.issues), file=path))
            self.report(1)
            return
        if _type_of(data) == "Bundle":
            self.import_bundle(path, data)
        else:
            self.store([self.item(path, data, line=1)])

    def ndjson_items(self, path: Path, lines: Iterable[bytes]) -> Iterator[Item | None]:
        """Items from NDJSON lines; None for a line that was settled while reading."""
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                data = parse_json(raw.strip(), max_depth=self.service.settings.max_json_depth)
            except FhirError as exc:
                self.summary.reject(
                    Rejection(exc.status, tuple(exc.issues), line=number, file=path)
                )
                yield None
                continue
            yield self.item(path, data, line=number)

    def item(
        self,
        path: Path,
        data: Any,
        *,
        line: int | None = None,
        entry: int | None = None,
        full_url: str | None = None,
    ) -> Item | None:
        """The item for one resource; None when it was settled here (unsupported, invalid)."""
        res_type = _type_of(data)
        if res_type is not None and not self.importable(res_type):
            self.unsupported(res_type, data, full_url, path, line=line, entry=entry)
            return None
        res_id = data.get("id") if isinstance(data, dict) else None
        keys = [f"{res_type}/{res_id}"] if isinstance(res_id, str) else []
        if full_url:
            keys.append(full_url)
        try:
            rtype = self.service.resource_type(validate_structure(data), for_write=True)
        except FhirError as exc:
            issues = tuple(_in_entry(i, entry) for i in exc.issues)
            self.summary.reject(Rejection(exc.status, issues, line, entry, path, res_type))
            self.ids.fail(keys, location(path, line, entry))
            return None
        return Item(
            path,
            line,
            entry,
            rtype,
            data,
            identifier_criteria(data),
            tuple(keys),
            match_identifier(data),
        )

    def importable(self, res_type: str) -> bool:
        """True for the types an import can write (stored by telemon, not read-only)."""
        rtype = self.service.registry.get(res_type)
        return rtype is not None and not rtype.read_only

    def unsupported(
        self,
        res_type: str,
        data: dict[str, Any],
        full_url: str | None,
        path: Path,
        *,
        line: int | None = None,
        entry: int | None = None,
    ) -> None:
        """Skip or reject a resource of a type telemon does not store; keep references to it."""
        self.keep_external(res_type, data, full_url)
        if self.skip_unsupported:
            where = location(path, line, entry)
            self.summary.add(res_type, SKIPPED, NOT_STORED, where=where)
            return
        issue = _in_entry(_not_stored(res_type), entry)
        self.summary.reject(Rejection(400, (issue,), line, entry, path, res_type))

    def keep_external(self, res_type: str, data: Any, full_url: str | None) -> None:
        """Make ``urn:uuid:`` references to a resource telemon does not store external ones."""
        if full_url and full_url.startswith(BUNDLE_NAMES):
            res_id = data.get("id") if isinstance(data, dict) else None
            self.ids.targets[full_url] = f"{res_type}/{res_id or full_url.rsplit(':', 1)[1]}"

    # -- Bundles -----------------------------------------------------------------------------

    def import_bundle(self, path: Path, bundle: dict[str, Any]) -> None:
        """Import a Bundle file: a transaction as such, the others entry by entry."""
        kind = bundle.get("type")
        entries = bundle.get("entry") or []
        if kind == "transaction" and isinstance(entries, list):
            self.import_transaction(path, entries)
            return
        if kind not in _DATA_BUNDLES or not isinstance(entries, list):
            issue = Issue(
                "not-supported",
                f"Cannot import a '{kind}' Bundle; use a transaction, batch, collection or "
                "searchset",
                ("Bundle.type",),
            )
            self.summary.reject(Rejection(400, (issue,), file=path, res_type="Bundle"))
            self.report(1)
            return
        items: list[Item | None] = []
        for index, raw in enumerate(entries):
            if not isinstance(raw, dict) or "resource" not in raw:
                issue = Issue("required", "The entry has no resource", (f"Bundle.entry[{index}]",))
                self.summary.reject(Rejection(400, (issue,), entry=index, file=path))
                items.append(None)
                continue
            resource = raw["resource"]
            if kind == "searchset" and (raw.get("search") or {}).get("mode") == "outcome":
                where = location(path, None, index)
                self.summary.add(_type_of(resource) or UNKNOWN_TYPE, SKIPPED, NOT_DATA, where=where)
                items.append(None)
                continue
            full_url = raw.get("fullUrl")
            url = full_url if isinstance(full_url, str) else None
            items.append(self.item(path, resource, entry=index, full_url=url))
        self.store(items)

    def import_transaction(self, path: Path, entries: list[Any]) -> None:
        """Run a transaction Bundle, in parts when it is larger than the entry limit."""
        kept: list[tuple[int, dict[str, Any]]] = []
        refused: dict[str, list[int]] = {}  # type telemon does not store → its entries
        for index, entry in enumerate(entries):
            res_type = _entry_type(entry)
            if res_type is not None and not self.importable(res_type):
                resource = entry.get("resource") if isinstance(entry, dict) else None
                full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
                url = full_url if isinstance(full_url, str) else None
                if self.skip_unsupported:
                    self.unsupported(res_type, resource or {}, url, path, entry=index)
                    continue
                self.keep_external(res_type, resource, url)
                refused.setdefault(res_type, []).append(index)
            kept.append((index, entry))
        issue = _refusal(kept, refused)
        if issue is not None:
            types = Counter(_entry_type(e) or UNKNOWN_TYPE for _, e in kept)
            self.summary.reject(Rejection(400, (issue,), file=path, res_type="Bundle"), types)
            self.report(len(entries))
            return
        self.report(len(entries) - len(kept))
        limit = self.service.settings.bundle_max_entries
        ordered = [kept[i] for i in _dependency_order([e for _, e in kept])]
        parts = [ordered[i : i + limit] for i in range(0, len(ordered), limit)] or [[]]
        if len(parts) > 1:
            self.summary.notes.append(
                f"{path.name}: a transaction Bundle of {len(kept)} entries, above the limit of "
                f"{limit} (TELEMON_BUNDLE_MAX_ENTRIES), imported in {len(parts)} parts, "
                "each all-or-nothing"
            )
        for number, part in enumerate(parts, start=1):
            self.run_part(path, part, number if len(parts) > 1 else None)
            self.report(len(part))

    def run_part(
        self, path: Path, part: list[tuple[int, dict[str, Any]]], number: int | None
    ) -> None:
        """Run one transaction (or part of one) whole; record where its entries went."""
        own = {e.get("fullUrl") for _, e in part if isinstance(e, dict)}
        outside = {k: v for k, v in self.ids.targets.items() if k not in own}
        entries = []
        for _, raw in part:  # POST or PUT entries (see _refusal)
            entry = rewritten(raw, outside)
            resource = entry.get("resource")
            if entry["request"]["method"] == "POST" and isinstance(resource, dict):
                criteria = identifier_criteria(resource)
                if criteria and "ifNoneExist" not in entry["request"]:
                    entry["request"]["ifNoneExist"] = criteria
            entries.append(entry)
        types = Counter(_entry_type(e) or UNKNOWN_TYPE for _, e in part)
        try:
            response = bundles.process(
                self.service, {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            )
        except FhirError as exc:
            # The part's own entry numbers → the file's.
            issues = tuple(_renumber(i, [index for index, _ in part]) for i in exc.issues)
            self.summary.reject(
                Rejection(exc.status, issues, file=path, res_type="Bundle", part=number), types
            )
            for index, raw in part:
                self.ids.fail(_entry_keys(raw), location(path, None, index))
            return
        for (_, raw), result in zip(part, response.get("entry", []), strict=True):
            status = int(result["response"]["status"].split()[0])
            res_type = _entry_type(raw) or UNKNOWN_TYPE
            if status == 201:
                self.summary.add(res_type, CREATED)
            elif raw["request"]["method"] == "PUT":
                self.summary.add(res_type, UPDATED)
            else:
                self.summary.add(res_type, SKIPPED, ALREADY_PRESENT)
            target = result["response"]["location"].split("/_history", 1)[0]
            self.ids.record(_entry_keys(raw), target)

    # -- writing -----------------------------------------------------------------------------

    def store(self, items: Iterable[Item | None]) -> int:
        """Write items chunk by chunk; how many were created or matched.

        A None counts for progress only (settled while reading). An item whose references do
        not resolve yet waits for :meth:`finish`.
        """
        if self.service.db.serializes_writes:
            return sum(self.store_one(chunk, seen) for chunk, seen in _chunks(items, CHUNK_SIZE))
        return self.store_overlapped(_chunks(items, PG_CHUNK_SIZE))

    def store_one(self, chunk: list[Item], seen: int) -> int:
        """Write one chunk in its own transaction (when that fails unexpectedly, one
        transaction per resource); how many were created or matched."""
        saved = self.ids.copy()
        try:
            with self.service.db.write() as conn:
                outcomes = store_chunk(self.service, conn, chunk, self.ids)
        except StorageError:
            # Something the domain checks did not foresee; isolate it one resource at a time.
            self.ids = saved
            outcomes = [self.store_alone(item) for item in chunk]
        return self.settle(chunk, seen, outcomes)

    def store_overlapped(self, chunks: Iterable[tuple[list[Item], int]]) -> int:
        """:meth:`store` where writers do not wait for each other (PostgreSQL): while a
        second thread writes and commits one chunk's batch (the database's work, most of
        the time), this one checks and stamps the next in a transaction of its own.

        The next chunk's identifier locks make it wait for the one being written wherever
        both hold the same identifier, so its lookup sees what that one created; its
        references are checked once that one has committed. A chunk whose write fails is
        done again as :meth:`store_one` does, after the next one's transaction is rolled
        back; the next one then goes the same way.
        """
        stored = 0
        writing: tuple[_Prepared, Future[None]] | None = None
        with ThreadPoolExecutor(1, thread_name_prefix="telemon-import") as writer:
            for chunk, seen in chunks:
                prepared = self.prepare(chunk, seen)
                if writing is not None:
                    try:
                        done, written = self.written(*writing, prepared)
                    except BaseException:  # not the database's: leave nothing open
                        if prepared is not None:
                            prepared.abandon()
                        raise
                    stored += done
                    writing = None
                    if not written:
                        prepared = None  # rolled back: it goes one by one too
                if prepared is None:
                    stored += self.store_one(chunk, seen)
                else:
                    writing = (prepared, writer.submit(prepared.write, self.service))
            if writing is not None:
                stored += self.written(*writing, None)[0]
        return stored

    def prepare(self, chunk: list[Item], seen: int) -> _Prepared | None:
        """The chunk's batch checked and stamped (:func:`prepare_batch`) in a new write
        transaction left open for :meth:`_Prepared.write`; None when it goes one by one or
        the database failed (then nothing is open and the id map is as it was)."""
        saved = self.ids.copy()
        transaction = ExitStack()
        batch = None
        try:
            conn = transaction.enter_context(self.service.db.write())
            try:
                batch = prepare_batch(self.service, conn, chunk, self.ids)
            except BaseException:
                with transaction:  # rolls back; the database's errors leave as StorageError
                    raise
        except StorageError:
            pass
        if batch is None:
            transaction.close()
            self.ids = saved
            return None
        return _Prepared(chunk, seen, saved, batch, conn, transaction)

    def written(
        self, prepared: _Prepared, write: Future[None], successor: _Prepared | None
    ) -> tuple[int, bool]:
        """Wait for a chunk's write and settle it. When it failed, roll ``successor`` (checked
        meanwhile with the id map as the failed chunk left it) back and do the chunk again
        as :meth:`store_one` does. How many were created or matched, and whether the write
        went through."""
        try:
            write.result()
        except (StorageError, _OneByOne):
            if successor is not None:
                successor.abandon()
            self.ids = prepared.saved
            return self.store_one(prepared.chunk, prepared.seen), False
        return self.settle(prepared.chunk, prepared.seen, prepared.batch.outcomes), True

    def settle(self, chunk: list[Item], seen: int, outcomes: Sequence[bool | Rejection]) -> int:
        """Count a written chunk's outcomes in the summary (and report its progress); items
        whose references did not resolve yet wait. How many were created or matched."""
        stored = 0
        finished = seen
        for item, outcome in zip(chunk, outcomes, strict=True):
            if isinstance(outcome, Rejection):
                if outcome.waits:
                    self.waiting.append((item, outcome))
                    finished -= 1
                    continue
                self.ids.fail(item.keys, item.where)
                self.summary.reject(outcome)
            else:
                stored += 1
                if outcome:  # created, not matched
                    self.summary.add(item.rtype.name, CREATED)
                else:
                    self.summary.add(item.rtype.name, SKIPPED, ALREADY_PRESENT, where=item.where)
        if finished:
            self.report(finished)
        return stored

    def store_alone(self, item: Item) -> bool | Rejection:
        """Store one item in its own transaction (after a chunk failed unexpectedly)."""
        try:
            with self.service.db.write() as conn:
                [outcome] = store_chunk(self.service, conn, [item], self.ids)
                return outcome
        except StorageError as exc:
            self.ids.fail(item.keys, item.where)
            issue = Issue("exception", f"Database error: {exc.kind}")
            return item.rejection(500, (issue,))

    def finished(self) -> ImportSummary:
        """The summary, its rejections in the order of the input."""
        order = {path: index for index, path in enumerate(self.summary.files)}
        self.summary.rejections.sort(
            key=lambda r: (
                order.get(r.file, -1) if r.file else -1,
                r.line or r.entry or r.part or 0,
            )
        )
        return self.summary

    def finish(self) -> None:
        """Retry the items that waited for references, until no more of them go in."""
        while self.waiting:
            waiting = [item for item, _ in self.waiting]
            self.waiting = []
            if self.store(waiting) == 0:
                break
        for item, rejection in self.waiting:
            self.ids.fail(item.keys, item.where)
            self.summary.reject(rejection)
        if self.waiting:
            self.report(len(self.waiting))
        self.waiting = []


def store_chunk(
    service: FhirService, conn: Connection, chunk: Sequence[Item], ids: IdMap
) -> list[bool | Rejection]:
    """Store one chunk of items in the open write transaction ``conn``; per item its outcome.

    The one call every write of an import goes through (a faster path for a backend belongs
    beneath it). Items come in dependency order and may refer to earlier items of the same
    chunk: each item's references are rewritten through ``ids`` before it is checked against
    the profiles and created (or matched by its identifier criteria), and where it went is
    recorded in ``ids`` at once. The outcome is True (created), False (matched) or the
    :class:`Rejection`; a rejected item leaves nothing behind, so the rest of the chunk still
    commits.
    A database error propagates: the caller rolls the chunk back (it leaves
    :meth:`Database.write <service.storage.db.Database.write>` as a :class:`StorageError`).

    The chunk goes in as one batch (:func:`store_batch`) when it can, else resource by
    resource, each in its savepoint.
    """
    saved = ids.copy()
    outcomes = store_batch(service, conn, chunk, ids)
    if outcomes is not None:
        return outcomes
    ids.targets, ids.failed = saved.targets, saved.failed
    return store_each(service, conn, chunk, ids)


def store_batch(
    service: FhirService, conn: Connection, chunk: Sequence[Item], ids: IdMap
) -> list[bool | Rejection] | None:
    """Store a chunk as one batch: the outcomes of :func:`store_each`, or None (nothing
    written, ``ids`` to be restored by the caller) when the chunk needs the one-by-one path.

    The same checks in the same order per resource (references through the id map,
    profiles, the identifier match) but one identifier lookup for the chunk, one insert
    statement for all its new resources and their index rows, and one alert evaluation
    per patient for all of them — what a Bundle or the API's group commit does. A resource
    matched by an earlier one of the chunk (the same identifier) is skipped as already
    present, as it would be one by one. The one-by-one path takes a chunk holding a type
    with a content hook (Subscription), an identifier without a system or value (or of a
    type without the ``identifier`` search), or a reference that does not resolve (which
    may wait for the end of the run).
    """
    try:
        with conn.begin_nested():  # left by the exception when the chunk goes one by one
            batch = prepare_batch(service, conn, chunk, ids)
            if batch is None:
                return None
            write_batch(service, conn, batch)
    except _OneByOne:
        return None
    return batch.outcomes


@dataclass(slots=True)
class Batch:
    """A chunk checked and stamped, not written yet: per item its outcome, and the new
    versions to insert."""

    outcomes: list[bool | Rejection]
    new: list[NewVersion]


def prepare_batch(
    service: FhirService, conn: Connection, chunk: Sequence[Item], ids: IdMap
) -> Batch | None:
    """The checks of :func:`store_batch` in ``conn``'s write transaction, nothing written:
    the chunk's identifier locks and lookup, then per item its references through ``ids``,
    profiles and match, and its stamp. None (``ids`` to be restored by the caller) when the
    chunk needs the one-by-one path."""
    if any(
        item.rtype.name in service.content_hooks
        or (
            item.criteria is not None
            and (
                item.identifier is None
                or "" in item.identifier
                or "identifier" not in item.rtype.params
            )
        )
        for item in chunk
    ):
        return None
    by_type: dict[str, set[tuple[str, str]]] = {}
    for item in chunk:
        if item.identifier is not None:
            by_type.setdefault(item.rtype.name, set()).add(item.identifier)
    try:
        return _batch(service, conn, chunk, ids, by_type)
    except _OneByOne:
        return None


def write_batch(service: FhirService, conn: Connection, batch: Batch) -> None:
    """Insert a prepared batch's new versions with their index rows and tell the listeners
    (the alert rules: once per patient). Raises :class:`_OneByOne` when a reference does not
    resolve (it may wait for the end of the run); the caller rolls back."""
    pending = {(version.res_type, version.res_id) for version in batch.new}
    try:
        service.insert_new(conn, [(version, version.res_type) for version in batch.new], pending)
    except FhirError as exc:
        raise _OneByOne from exc
    service.notify(conn, [event_of(version) for version in batch.new])


class _OneByOne(Exception):
    """A chunk needs the one-by-one path after all (rolls its batch back)."""


@dataclass(slots=True)
class _Prepared:
    """A chunk's batch, checked and stamped in its write transaction, which is still open."""

    chunk: list[Item]
    seen: int
    saved: IdMap  # the id map before the chunk was checked
    batch: Batch
    conn: Connection
    transaction: ExitStack

    def write(self, service: FhirService) -> None:
        """Write the batch and commit (on another thread than the one that checked it);
        on an error the transaction rolls back and the error propagates."""
        with self.transaction:
            write_batch(service, self.conn, self.batch)

    def abandon(self) -> None:
        """Roll the transaction back (it wrote nothing)."""
        with suppress(_Abandoned), self.transaction:
            raise _Abandoned


class _Abandoned(Exception):
    """Rolls a prepared chunk's transaction back."""


def _batch(
    service: FhirService,
    conn: Connection,
    chunk: Sequence[Item],
    ids: IdMap,
    by_type: dict[str, set[tuple[str, str]]],
) -> Batch:
    """The work of :func:`prepare_batch`."""
    now = service.clock()
    skew = service.settings.clock_skew_seconds
    repo.lock_keys(conn, _lock_names(chunk))
    existing = {
        (res_type, *pair): found
        for res_type, pairs in by_type.items()
        for pair, found in repo.identifier_matches(conn, res_type, pairs).items()
    }
    outcomes: list[bool | Rejection] = []
    new: list[NewVersion] = []
    for item in chunk:
        data = ids.resolve(item)
        if isinstance(data, Rejection):
            outcomes.append(data)
            continue
        issues = service.profiles.validate(data, now=now, clock_skew_seconds=skew)
        if issues:
            ids.fail(item.keys, item.where)
            outcomes.append(item.rejection(422, issues))
            continue
        key = None if item.identifier is None else (item.rtype.name, *item.identifier)
        found = existing.get(key, set()) if key else set()
        if len(found) > 1:
            ids.fail(item.keys, item.where)
            issue = Issue(
                "duplicate",
                f"If-None-Exist criteria '{item.criteria}' match more than one {item.rtype.name}",
                ("If-None-Exist",),
            )
            outcomes.append(item.rejection(412, (issue,)))
            continue
        if found:
            ids.record(item.keys, f"{item.rtype.name}/{next(iter(found))}")
            outcomes.append(False)
            continue
        try:
            version = service.new_version(item.rtype, data)
        except FhirError as exc:  # e.g. an unresolved urn:uuid: reference
            raise _OneByOne from exc
        if key:
            existing[key] = {version.res_id}
        ids.record(item.keys, f"{version.res_type}/{version.res_id}")
        new.append(version)
        outcomes.append(True)
    return Batch(outcomes, new)


def _lock_names(chunk: Sequence[Item]) -> list[str]:
    """The keys :meth:`FhirService.conditional_match` serialises the chunk's creates on."""
    names = []
    for item in chunk:
        if item.criteria is not None:
            params = sorted(parse_qsl(item.criteria, keep_blank_values=False))
            names.append(f"{item.rtype.name}?{params}")
    return names


def store_each(
    service: FhirService, conn: Connection, chunk: Sequence[Item], ids: IdMap
) -> list[bool | Rejection]:
    """Store a chunk resource by resource, each in its savepoint (see :func:`store_chunk`)."""
    now = service.clock()
    outcomes: list[bool | Rejection] = []
    for item in chunk:
        data = ids.resolve(item)
        if isinstance(data, Rejection):
            outcomes.append(data)
            continue
        try:
            issues = service.profiles.validate(
                data, now=now, clock_skew_seconds=service.settings.clock_skew_seconds
            )
            if issues:
                raise FhirError.rejected(issues)
            # A create that fails leaves nothing behind in the chunk's transaction (PostgreSQL
            # inserts and checks the references in one statement).
            with conn.begin_nested():
                result = service.create_in(conn, item.rtype, data, if_none_exist=item.criteria)
        except FhirError as exc:
            waits = is_reference_failure(exc)
            if not waits:
                ids.fail(item.keys, item.where)
            outcomes.append(item.rejection(exc.status, exc.issues, waits=waits))
            continue
        ids.record(item.keys, f"{result.res_type}/{result.res_id}")
        outcomes.append(result.created)
    return outcomes


def _chunks(items: Iterable[Item | None], size: int) -> Iterator[tuple[list[Item], int]]:
    """Lists of up to ``size`` items, each with how many inputs (settled ones too) it covers."""
    chunk: list[Item] = []
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


def _in_entry(issue: Issue, entry: int | None) -> Issue:
    """Root an issue's expressions in its Bundle entry (NDJSON issues stay as they are)."""
    return issue if entry is None else issue.prefixed(f"Bundle.entry[{entry}].resource")


_ENTRY_INDEX = re.compile(r"^Bundle\.entry\[(\d+)\]")


def _renumber(issue: Issue, indexes: Sequence[int]) -> Issue:
    """An issue about entry ``k`` of a part, about that entry's index in the file instead."""

    def number(expression: str) -> str:
        return _ENTRY_INDEX.sub(lambda m: f"Bundle.entry[{indexes[int(m.group(1))]}]", expression)

    return Issue(
        issue.code, issue.diagnostics, tuple(map(number, issue.expression)), issue.severity
    )


def _refusal(kept: Sequence[tuple[int, Any]], refused: dict[str, list[int]]) -> Issue | None:
    """Why a transaction Bundle cannot be imported at all: it holds entries of types telemon
    does not import (``refused``: type → entry indexes), or an entry that is not a POST or PUT
    (an import only creates or updates); None when it can."""
    if refused:
        listed = ", ".join(f"{len(found)} {t}" for t, found in sorted(refused.items()))
        return Issue(
            "not-supported",
            f"The transaction holds resources telemon does not import ({listed}); import "
            "with --skip-unsupported to import the others and count these as skipped",
            tuple(f"Bundle.entry[{i[0]}].resource.resourceType" for i in refused.values()),
        )
    for index, entry in kept:
        request = entry.get("request") if isinstance(entry, dict) else None
        method = request.get("method") if isinstance(request, dict) else None
        if method not in ("POST", "PUT"):
            return Issue(
                "not-supported",
                "An import only creates or updates; this entry is a "
                f"{method or 'request without a method'}",
                (f"Bundle.entry[{index}].request.method",),
            )
    return None


def _not_stored(res_type: str) -> Issue:
    return Issue(
        "not-supported",
        f"telemon does not import {res_type} resources (it does not store them, or writes "
        "them only itself); import with --skip-unsupported to import the others and count "
        "these as skipped",
        (f"{res_type}.resourceType",),
    )


def _entry_type(entry: Any) -> str | None:
    """The resource type of a transaction entry: its resource's, else its request URL's."""
    if not isinstance(entry, dict):
        return None
    found = _type_of(entry.get("resource"))
    request = entry.get("request")
    url = request.get("url") if isinstance(request, dict) else None
    if found is None and isinstance(url, str):
        found = url.partition("?")[0].strip("/").split("/")[0] or None
    return found


def _entry_keys(entry: Any) -> list[str]:
    """How other resources may refer to a Bundle entry's resource: its fullUrl, its Type/id."""
    if not isinstance(entry, dict):
        return []
    keys = [entry["fullUrl"]] if isinstance(entry.get("fullUrl"), str) else []
    resource = entry.get("resource")
    if isinstance(resource, dict) and isinstance(resource.get("id"), str):
        keys.append(f"{_type_of(resource)}/{resource['id']}")
    return keys


def _dependency_order(entries: Sequence[Any]) -> list[int]:
    """Entry indexes, each entry after the entries it refers to (by ``fullUrl`` or
    ``Type/id``), otherwise in Bundle order; entries in a reference cycle keep their order."""
    owner: dict[str, int] = {}
    for index, entry in enumerate(entries):
        for key in _entry_keys(entry):
            owner.setdefault(key, index)
    waits_for: list[set[int]] = []
    needed_by: dict[int, list[int]] = {}
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        before = {owner[ref] for _, ref in reference_paths(resource) if ref in owner} - {index}
        waits_for.append(before)
        for other in before:
            needed_by.setdefault(other, []).append(index)
    ready = [index for index, before in enumerate(waits_for) if not before]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for later in needed_by.get(index, ()):
            waits_for[later].discard(index)
            if not waits_for[later]:
                heapq.heappush(ready, later)
    placed = set(order)
    return order + [index for index in range(len(entries)) if index not in placed]
