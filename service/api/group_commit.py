"""Group commit for single creates: concurrent POSTs of one process share a transaction.

A create's own work (parsing, validation, stamping) runs in its request; storing it waits for
the batch being stored to finish, and every create that arrived meanwhile is then stored
together in one transaction by :meth:`FhirService.store_new`, which keeps each create's outcome
its own. With one client nothing waits: a lone create is stored at once, alone. Under load a
transaction, its commit, the thread hand-off and the alert evaluation are shared by the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from fastapi.concurrency import run_in_threadpool

from service.fhir.service import VersionResult
from service.storage.repository import NewVersion

Store = Callable[[Sequence[NewVersion]], list[VersionResult | Exception]]


class CreateBatcher:
    """Queues new versions and stores them in batches, one batch at a time."""

    def __init__(self, store: Store, *, max_batch: int = 100) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: list[tuple[NewVersion, asyncio.Future[VersionResult]]] = []
        self._draining = False

    async def create(self, item: NewVersion) -> VersionResult:
        """Store ``item`` (in the next batch) and return its 201 result, or raise its error."""
        future: asyncio.Future[VersionResult] = asyncio.get_running_loop().create_future()
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
                try:
                    results = await run_in_threadpool(self.store, [item for item, _ in batch])
                except Exception as exc:  # the store itself failed: every create fails with it
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
