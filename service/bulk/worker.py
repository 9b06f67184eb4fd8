"""The export worker: claims queued export jobs and writes their NDJSON files.

Runs in ``telemon worker`` (any number, beside ``serve``), or inside ``serve`` on SQLite
(``TELEMON_EXPORT_WORKER``). A worker takes a job with a time-limited lease (compare-and-set, so
of several workers one wins), renews it while writing, and gives up when the job is cancelled. A
worker that dies leaves a lease that runs out; the next worker starts the job again from scratch.

Writing streams: one read transaction (a consistent snapshot: REPEATABLE READ on PostgreSQL) per
job, rows fetched :data:`~service.storage.bulk_store.STREAM_BATCH` at a time over a server-side
cursor, their stored JSON written as it is (never parsed again) to files of at most
:data:`FILE_MAX_RESOURCES` lines. Memory stays flat whatever the export's size.

The same loop sweeps: expired exports (``TELEMON_EXPORT_RETENTION_HOURS`` after they finished)
and cancelled ones lose their files and job rows.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Literal

import orjson

from service.bulk.groups import PROGRAMMES, members_query
from service.bulk.jobs import BulkExports, FileItem, Manifest
from service.bulk.request import ExportParams
from service.core.criteria import SearchQuery
from service.core.dates import format_instant
from service.core.outcome import Issue, operation_outcome
from service.fhir.service import now_micros
from service.runtime.background import stop_threads
from service.settings import Settings
from service.storage import bulk_store
from service.storage.bulk_store import Selection
from service.storage.db import Connection

log = logging.getLogger(__name__)

#: Most resources in one NDJSON file; a type with more is split over several files.
FILE_MAX_RESOURCES = 250_000
#: Batches fetched but not yet written, at most (each up to STREAM_BATCH resources).
QUEUED_BATCHES = 4
#: Lease length; renewed at least every :data:`RENEW_SECONDS` while a job is written.
LEASE_SECONDS = 120
RENEW_SECONDS = 5.0
#: How often an idle worker looks for work it was not woken for, and sweeps.
POLL_SECONDS = 2.0
SWEEP_SECONDS = 60.0


def runs_in_serve(settings: Settings, *, embedded: bool) -> bool:
    """Whether ``telemon serve`` writes exports itself: ``TELEMON_EXPORT_WORKER`` on, or auto
    on an embedded database (SQLite; on PostgreSQL ``telemon worker`` processes write them)."""
    return settings.export_worker == "on" or (settings.export_worker == "auto" and embedded)


class Cancelled(Exception):
    """The job was cancelled (or taken over) while being written."""


class _Files:
    """The NDJSON files of one type (or of deleted entries / errors), rotated by size."""

    def __init__(self, folder: Path, prefix: str, res_type: str) -> None:
        self.folder = folder
        self.prefix = prefix
        self.res_type = res_type
        self.items: list[FileItem] = []
        self._out: IO[bytes] | None = None
        self._count = 0

    def write(self, lines: list[bytes]) -> None:
        """Append JSON texts (UTF-8), one per line."""
        while lines:
            if self._out is None or self._count >= FILE_MAX_RESOURCES:
                self._rotate()
            assert self._out is not None
            room = FILE_MAX_RESOURCES - self._count
            chunk, lines = lines[:room], lines[room:]
            self._out.write(b"\n".join(chunk))
            self._out.write(b"\n")
            self._count += len(chunk)

    def _rotate(self) -> None:
        self._close_current()
        name = f"{self.prefix}-{len(self.items) + 1}.ndjson"
        # Mode 0600: the files hold patient data.
        fd = os.open(self.folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._out = os.fdopen(fd, "wb", buffering=1 << 20)
        self._count = 0
        self.items.append(FileItem(self.res_type, name, 0))

    def _close_current(self) -> None:
        if self._out is not None:
            self._out.close()
            self.items[-1] = FileItem(self.res_type, self.items[-1].name, self._count)
            self._out = None

    def close(self) -> list[FileItem]:
        """Close the open file; every file written."""
        self._close_current()
        return self.items


class _WriteBehind:
    """Writes batches to :class:`_Files` in a thread of its own, so that the database fetching
    the next batch and the disk taking the last one work at the same time (both release the
    GIL). At most :data:`QUEUED_BATCHES` batches wait: memory stays bounded."""

    def __init__(self, files: _Files) -> None:
        self.files = files
        self._queue: queue.Queue[list[bytes] | None] = queue.Queue(QUEUED_BATCHES)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="telemon-export-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.files.write(batch)
                except BaseException as exc:  # handed to the producer, raised there
                    self._error = exc

    def put(self, batch: list[bytes]) -> None:
        """Queue a batch (waits while the queue is full); raises the writer's error, if any."""
        if self._error is not None:
            raise self._error
        self._queue.put(batch)

    def close(self) -> list[FileItem]:
        """Wait for the queued batches, close the files; every file written."""
        self._queue.put(None)
        self._thread.join()
        items = self.files.close()
        if self._error is not None:
            raise self._error
        return items


class ExportWorker:
    """Export loops (``threads`` of them) for one process."""

    def __init__(self, exports: BulkExports, *, threads: int = 1) -> None:
        self.exports = exports
        self.fhir = exports.fhir
        self.db = exports.db
        self.settings = exports.settings
        self.wakeup = exports.wakeup
        self.threads = threads
        self.stopping = threading.Event()
        self._running: list[threading.Thread] = []
        self._owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._last_sweep = 0.0

    # -- running -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the export threads."""
        self.stopping.clear()
        for index in range(self.threads):
            thread = threading.Thread(
                target=self._loop,
                name=f"telemon-export-{index}",
                args=(f"{self._owner}:{index}",),
                daemon=True,
            )
            thread.start()
            self._running.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop (a job being written is abandoned; its lease runs out and another worker
        starts it again)."""
        stop_threads(self._running, self.stopping, self.wakeup, timeout)

    def _loop(self, owner: str) -> None:
        while not self.stopping.is_set():
            self.wakeup.clear()  # before looking, so a wake-up during the look is not lost
            try:
                worked = self.run_once(owner)
            except Exception:  # the database went away, a bug: log, pause, go on
                log.exception("export worker failed")
                self.stopping.wait(1.0)
                continue
            if not worked:
                self.wakeup.wait(POLL_SECONDS)

    def run_once(self, owner: str) -> bool:
        """Sweep when due, then write one claimable job; False when there was none."""
        if time.monotonic() - self._last_sweep >= SWEEP_SECONDS:
            self._last_sweep = time.monotonic()
            swept = self.exports.sweep()
            if swept:
                log.info("export sweep: removed %s expired or cancelled exports", swept)
        now = now_micros()
        with self.db.read() as conn:
            candidates = bulk_store.claimable(conn, now)
        for job_id in candidates:
            with self.db.write() as conn:
                won = bulk_store.claim(conn, job_id, owner, now, now + LEASE_SECONDS * 1_000_000)
            if won:
                self.run_job(job_id, owner)
                return True
        return False

    # -- one job -------------------------------------------------------------------------------

    def run_job(self, job_id: str, owner: str) -> None:
        """Write a claimed job's files and record the outcome."""
        with self.db.read() as conn:
            row = bulk_store.get_job(conn, job_id)
        if row is None:
            return
        params = ExportParams.from_json(row.params)
        retention = int(self.settings.export_retention_hours * 3600 * 1_000_000)
        started = time.monotonic()
        try:
            transaction_time, manifest, total = self._write(job_id, owner, params)
        except Cancelled:
            log.info("export %s cancelled", job_id)
            self.exports.remove_files(job_id)
            return
        except Exception as exc:
            log.exception("export %s failed", job_id)
            self.exports.remove_files(job_id)
            now = now_micros()
            with self.db.write() as conn:
                bulk_store.finish(
                    conn,
                    job_id,
                    owner,
                    status="failed",
                    now=now,
                    expires_at=now + retention,
                    error=f"The export failed: {type(exc).__name__}",
                )
            return
        now = now_micros()
        with self.db.write() as conn:
            kept = bulk_store.finish(
                conn,
                job_id,
                owner,
                status="completed",
                now=now,
                expires_at=now + retention,
                transaction_time=transaction_time,
                manifest=manifest.to_json(),
            )
        if not kept:
            self.exports.remove_files(job_id)
            return
        seconds = time.monotonic() - started
        log.info(
            "export %s completed: %s resources in %.1f s (%.0f/s)",
            job_id,
            total,
            seconds,
            total / seconds if seconds else 0,
        )

    def _write(self, job_id: str, owner: str, params: ExportParams) -> tuple[int, Manifest, int]:
        folder = self.exports.job_dir(job_id)
        self.exports.remove_files(job_id)  # a restarted job begins again
        folder.mkdir(mode=0o700, parents=True)
        patients: Literal["any"] | SearchQuery | None = None
        if params.level == "patient":
            patients = "any"
        elif params.level == "group":
            patients = members_query(self.fhir, PROGRAMMES[str(params.group)])
        renew = _Renewal(self, job_id, owner)
        output: list[FileItem] = []
        deleted: list[FileItem] = []
        total = 0
        with self.db.snapshot() as conn:
            transaction_time = now_micros()
            for res_type in params.types:
                filters, _ = self.exports.filters(params, res_type, strict=False)
                selection = Selection(res_type, params.since, filters, patients)
                files = _WriteBehind(_Files(folder, res_type, res_type))
                try:
                    for batch in bulk_store.stream_contents(conn, selection):
                        files.put(batch)
                        total += len(batch)
                        renew.maybe(f"{total} resources written; now {res_type}")
                finally:
                    output += files.close()
                if params.since is not None and params.level == "system":
                    deleted += self._deleted(conn, folder, res_type, params.since, renew)
        errors = self._errors(folder, params)
        return transaction_time, Manifest(tuple(output), tuple(deleted), tuple(errors)), total

    def _deleted(
        self, conn: Connection, folder: Path, res_type: str, since: int, renew: _Renewal
    ) -> list[FileItem]:
        """Transaction Bundles with a DELETE entry per resource deleted after ``since``."""
        files = _Files(folder, f"{res_type}-deleted", "Bundle")
        batch: list[bytes] = []
        try:
            for res_id, when in bulk_store.stream_deleted(conn, res_type, since):
                bundle = {
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "meta": {"lastUpdated": format_instant(when)},
                    "entry": [{"request": {"method": "DELETE", "url": f"{res_type}/{res_id}"}}],
                }
                batch.append(orjson.dumps(bundle))
                if len(batch) >= bulk_store.STREAM_BATCH:
                    files.write(batch)
                    batch = []
                    renew.maybe(f"listing deleted {res_type}")
            files.write(batch)
        finally:
            items = files.close()
        return items

    def _errors(self, folder: Path, params: ExportParams) -> list[FileItem]:
        """The error file: an OperationOutcome per parameter ignored under lenient handling."""
        if not params.warnings:
            return []
        files = _Files(folder, "OperationOutcome", "OperationOutcome")
        files.write(
            [
                orjson.dumps(operation_outcome([Issue("not-supported", w, (), "warning")]))
                for w in params.warnings
            ]
        )
        return files.close()


class _Renewal:
    """Renews a job's lease (and records progress) every few seconds; raises
    :class:`Cancelled` when the job is no longer the worker's."""

    def __init__(self, worker: ExportWorker, job_id: str, owner: str) -> None:
        self.worker = worker
        self.job_id = job_id
        self.owner = owner
        self.last = time.monotonic()

    def maybe(self, progress: str) -> None:
        """Renew when due."""
        if time.monotonic() - self.last < RENEW_SECONDS and not self.worker.stopping.is_set():
            return
        self.last = time.monotonic()
        if self.worker.stopping.is_set():
            raise Cancelled
        until = now_micros() + LEASE_SECONDS * 1_000_000
        with self.worker.db.write() as conn:
            if not bulk_store.renew(conn, self.job_id, self.owner, until, progress):
                raise Cancelled
