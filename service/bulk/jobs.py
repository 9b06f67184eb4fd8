"""Bulk Data export jobs: queue one, report its status, cancel it, find its files.

A kick-off only checks and queues (a row in ``export_jobs``); a worker (:mod:`.worker`) writes
the files. Status, cancel and downloads answer only the client that kicked the job off (any
other: the not-found 404, as for an unknown job).
"""

from __future__ import annotations

import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson

from service.bulk.groups import PROGRAMMES
from service.bulk.request import ExportParams
from service.core.criteria import SearchQuery
from service.core.outcome import FhirError
from service.fhir.service import FhirService, now_micros
from service.storage import bulk_store
from service.storage.bulk_store import JobRow

#: Queued or running exports one client may have at once (more: 429, per the IG's advice).
MAX_ACTIVE_PER_CLIENT = 3
#: Seconds a client is told to wait between status polls.
RETRY_AFTER_SECONDS = 2


def not_found(job_id: str) -> FhirError:
    """The 404 for an unknown, cancelled or another client's job."""
    return FhirError.not_found(f"Export job '{job_id}' is not known")


@dataclass(frozen=True, slots=True)
class FileItem:
    """One file of a finished export, as listed in the manifest."""

    res_type: str
    name: str
    count: int

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {"type": self.res_type, "file": self.name, "count": self.count}


@dataclass(frozen=True, slots=True)
class Manifest:
    """The files of a finished export, by kind."""

    output: tuple[FileItem, ...]
    deleted: tuple[FileItem, ...] = ()
    error: tuple[FileItem, ...] = ()

    def to_json(self) -> str:
        """The stored form."""
        return orjson.dumps(
            {
                kind: [f.to_json() for f in getattr(self, kind)]
                for kind in ("output", "deleted", "error")
            }
        ).decode()

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Read the stored form."""
        data = orjson.loads(text)
        return cls(
            *(
                tuple(FileItem(f["type"], f["file"], f["count"]) for f in data[kind])
                for kind in ("output", "deleted", "error")
            )
        )

    def find(self, name: str) -> FileItem | None:
        """The file called ``name``."""
        return next((f for f in (*self.output, *self.deleted, *self.error) if f.name == name), None)


class BulkExports:
    """Export jobs over one FHIR service; ``wakeup`` tells this process's worker of new work."""

    def __init__(self, fhir: FhirService, wakeup: threading.Event | None = None) -> None:
        self.fhir = fhir
        self.db = fhir.db
        self.settings = fhir.settings
        self.wakeup = wakeup if wakeup is not None else threading.Event()

    @property
    def root(self) -> Path:
        """The directory holding one folder per job."""
        return self.settings.export_dir

    def job_dir(self, job_id: str) -> Path:
        """Where a job's files are written."""
        return self.root / job_id

    def filters(
        self, params: ExportParams, res_type: str, *, strict: bool
    ) -> tuple[tuple[SearchQuery, ...], list[str]]:
        """The ``_typeFilter`` searches of ``res_type`` and the warnings of a lenient parse."""
        rtype = self.fhir.resource_type(res_type)
        conditions: list[SearchQuery] = []
        warnings: list[str] = []
        for filter_type, query in params.type_filters:
            if filter_type != res_type:
                continue
            parsed, issues = self.fhir.parse_query(
                rtype, parse_qsl(query, keep_blank_values=True), strict=strict
            )
            warnings.extend(f"_typeFilter {res_type}?{query}: {i.diagnostics}" for i in issues)
            conditions.append(parsed)
        return tuple(conditions), warnings

    def kickoff(
        self, params: ExportParams, *, client_id: str | None, request_url: str, lenient: bool
    ) -> str:
        """Check and queue an export; its job id. 404 unknown Group, 429 too many running."""
        if params.level == "group" and params.group not in PROGRAMMES:
            raise FhirError.not_found(f"Group/{params.group} is not known")
        warnings = list(params.warnings)
        for res_type in params.types:
            warnings += self.filters(params, res_type, strict=not lenient)[1]
        params = ExportParams(
            params.level,
            params.group,
            params.types,
            params.since,
            params.type_filters,
            tuple(warnings),
        )
        job_id = uuid.uuid4().hex
        with self.db.write() as conn:
            if bulk_store.active_jobs_of(conn, client_id) >= MAX_ACTIVE_PER_CLIENT:
                raise FhirError.rate_limited(
                    f"At most {MAX_ACTIVE_PER_CLIENT} exports may run at once; wait "
                    "for one to finish or cancel one",
                    retry_after=RETRY_AFTER_SECONDS * 5,
                )
            bulk_store.insert_job(
                conn, job_id, client_id, request_url, params.to_json(), now_micros()
            )
        self.wakeup.set()
        return job_id

    def job(self, job_id: str, client_id: str | None) -> JobRow:
        """The client's job (404 otherwise)."""
        with self.db.read() as conn:
            row = bulk_store.get_job(conn, job_id)
        if row is None or row.client_id != client_id or row.status == "cancelled":
            raise not_found(job_id)
        if row.expires_at is not None and row.expires_at < now_micros():
            raise FhirError.not_found(f"Export job '{job_id}' has expired")
        return row

    def cancel(self, job_id: str, client_id: str | None) -> None:
        """Cancel a job, or (finished) delete its files now; later requests answer 404."""
        self.job(job_id, client_id)
        with self.db.write() as conn:
            bulk_store.cancel(conn, job_id, now_micros())
        self.remove_files(job_id)
        self.wakeup.set()

    def remove_files(self, job_id: str) -> None:
        """Delete a job's folder (if any)."""
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def file(self, job_id: str, client_id: str | None, name: str) -> tuple[Path, FileItem]:
        """A finished job's file (404 when the job or file is unknown)."""
        row = self.job(job_id, client_id)
        item = Manifest.from_json(row.manifest).find(name) if row.manifest else None
        path = self.job_dir(job_id) / name
        if row.status != "completed" or item is None or not path.is_file():
            raise FhirError.not_found(f"Export file '{name}' is not known")
        return path, item

    def sweep(self) -> int:
        """Delete expired and cancelled jobs with their files; how many."""
        with self.db.read() as conn:
            stale = bulk_store.expired(conn, now_micros())
        for job_id in stale:
            self.remove_files(job_id)
            with self.db.write() as conn:
                bulk_store.delete_job(conn, job_id)
        return len(stale)
