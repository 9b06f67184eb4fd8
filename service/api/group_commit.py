"""Group commit: concurrent requests of one process share a transaction.

Two users: single creates, and the AuditEvents of reads and failures. A request's own work
(parsing, validation, stamping) runs in the request; storing waits for the batch being stored
to finish, and every item that arrived meanwhile is then stored together in one transaction,
each keeping its own outcome. With one client nothing waits: a lone item is stored at once,
alone. Under load a transaction, its commit (the fsync) and the thread hand-off are shared by
the batch.

A create carries its AuditEvents with it (:class:`Create`), so that they commit in the create's
own transaction; the AuditEvents of reads are committed before the response is sent
(:class:`AuditLog`), without a commit of their own per request.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from fastapi.concurrency import run_in_threadpool

from service.audit.events import AccessRecord, Actor, Touched
from service.audit.trail import AuditTrail
from service.fhir.reads import VersionResult
from service.fhir.service import FhirService
from service.fhir.writes import TransactionHook
from service.storage.db import Connection
from service.storage.repository import NewVersion

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Queues items and stores them in batches, one batch at a time.

    ``store`` stores a batch in one transaction and returns each item's result (or its
    exception) in the same position.
    """

    def __init__(
        self, store: Callable[[Sequence[T]], Sequence[R | Exception]], *, max_batch: int = 100
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._draining = False

    async def submit(self, item: T) -> R:
        """Store ``item`` (in the next batch) and return its result, or raise its error."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                results: Sequence[R | Exception]
                try:
                    results = await run_in_threadpool(self.store, [item for item, _ in batch])
                except Exception as exc:  # the store itself failed: every item fails with it
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.cancelled():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._draining = False


@dataclass(frozen=True, slots=True)
class Create:
    """A new version to store, and the versions that must commit with it (its AuditEvents)."""

    item: NewVersion
    companions: Sequence[NewVersion] = ()


def create_batcher(fhir: FhirService) -> GroupCommit[Create, VersionResult]:
    """Group commit of single creates (:meth:`FhirService.store_new`)."""

    def store(batch: Sequence[Create]) -> list[VersionResult | Exception]:
        return fhir.store_new([c.item for c in batch], [c.companions for c in batch])

    return GroupCommit(store)


class AuditLog:
    """The audit trail of a running application: in a write's transaction, or group-committed.

    :meth:`write` returns once the events are durably committed (a read's response must not be
    sent before); :meth:`in_transaction` gives a hook that writes them into a write
    transaction, so that they commit with the data or not at all.
    """

    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail
        self._commits: GroupCommit[Sequence[NewVersion], None] = GroupCommit(trail.store_batch)

    async def write(self, actor: Actor, record: AccessRecord) -> None:
        """Write the events of one access, committed (with others') before this returns."""
        await self._commits.submit(self.trail.versions(actor, record))

    def in_transaction(self, actor: Actor, record: AccessRecord) -> TransactionHook:
        """A hook that writes ``record``, with the versions the transaction wrote or read added
        to what it touched, into each write transaction it is called in."""

        def write(conn: Connection, results: Sequence[VersionResult]) -> None:
            done = [*record.touched, *(touched(r) for r in results)]
            self.trail.write_in(conn, actor, dataclasses.replace(record, touched=done))

        return write


def touched(result: VersionResult) -> Touched:
    """The audit trail's view of a version read or written."""
    return Touched(result.res_type, result.res_id, result.version_id, result.patient_id)

