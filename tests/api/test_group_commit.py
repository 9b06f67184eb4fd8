"""Group commit: concurrent single creates share a transaction, each with its own outcome."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.api.group_commit import Create, GroupCommit, create_batcher
from service.bootstrap import build_service
from service.core.outcome import FhirError
from service.fhir.hooks import WriteEvent
from service.fhir.reads import VersionResult
from service.fhir.service import FhirService
from service.settings import Settings
from service.storage.db import Database
from service.storage.repository import NewVersion
from tests.factories import expressions, heart_rate, patient, weight


@pytest.fixture
def fhir(settings: Settings, db: Database) -> FhirService:
    """The FHIR service on the test database, as the app builds it (alerts attached)."""
    return build_service(settings, db)


def _new(fhir: FhirService, resource: dict[str, Any]) -> NewVersion:
    rtype = fhir.prepare(resource, resource["resourceType"])
    return fhir.new_version(rtype, resource)


def _count(fhir: FhirService, res_type: str, **params: str) -> int:
    return len(fhir.search(res_type, list(params.items())).matches)


def test_store_new_stores_all_in_one_transaction(fhir: FhirService) -> None:
    pid = _new(fhir, patient())
    assert isinstance(fhir.store_new([pid])[0], VersionResult)
    transactions: list[int] = []
    fhir.listeners.append(lambda _f, _c, events: transactions.append(len(events)))
    items = [_new(fhir, heart_rate(pid.res_id, 60 + i)) for i in range(5)]
    results = fhir.store_new(items)
    assert [r.created for r in results if isinstance(r, VersionResult)] == [True] * 5
    assert [r.res_id for r in results if isinstance(r, VersionResult)] == [i.res_id for i in items]
    assert transactions == [5]  # one transaction told about all five
    assert _count(fhir, "Observation", patient=pid.res_id) == 5


def test_missing_reference_fails_only_its_own_create(fhir: FhirService) -> None:
    pid = _new(fhir, patient())
    fhir.store_new([pid])
    good = [_new(fhir, weight(pid.res_id, 80 + i)) for i in range(3)]
    orphan = _new(fhir, weight("no-such-patient", 81))
    results = fhir.store_new([good[0], orphan, good[1], good[2]])
    error = results[1]
    assert isinstance(error, FhirError) and error.status == 422
    assert "Observation.subject" in error.issues[0].expression[0]
    assert [r.created for r in results if isinstance(r, VersionResult)] == [True] * 3
    assert _count(fhir, "Observation", patient=pid.res_id) == 3
    assert _count(fhir, "Observation", _id=orphan.res_id) == 0


def test_any_other_failure_is_isolated_to_its_create(fhir: FhirService) -> None:
    pid = _new(fhir, patient())
    fhir.store_new([pid])
    items = [_new(fhir, heart_rate(pid.res_id, bpm)) for bpm in (61, 62, 63)]
    poisoned = items[1].res_id

    def refuse(_f: FhirService, _c: Any, events: list[WriteEvent]) -> None:
        if any(e.res_id == poisoned for e in events):
            raise RuntimeError("listener refuses this write")

    fhir.listeners.append(refuse)
    results = fhir.store_new(items)
    assert isinstance(results[1], RuntimeError)
    assert [isinstance(r, VersionResult) for r in results] == [True, False, True]
    stored = {m.res_id for m in fhir.search("Observation", [("patient", pid.res_id)]).matches}
    assert stored == {items[0].res_id, items[2].res_id}


def test_companions_commit_with_their_create_or_not_at_all(fhir: FhirService) -> None:
    # A create's companions (its AuditEvents) share its fate in every failure mode.
    pid = _new(fhir, patient())
    fhir.store_new([pid])
    ok = _new(fhir, heart_rate(pid.res_id, 61))
    orphan = _new(fhir, weight("no-such-patient", 81))
    poisoned = _new(fhir, heart_rate(pid.res_id, 62))
    companions = [[_new(fhir, patient())] for _ in range(3)]

    def refuse(_f: FhirService, _c: Any, events: list[WriteEvent]) -> None:
        if any(e.res_id == poisoned.res_id for e in events):
            raise RuntimeError("listener refuses this write")

    fhir.listeners.append(refuse)
    results = fhir.store_new([ok, orphan, poisoned], companions)
    assert isinstance(results[0], VersionResult)
    assert isinstance(results[1], FhirError) and isinstance(results[2], RuntimeError)
    stored = [_count(fhir, "Patient", _id=c[0].res_id) for c in companions]
    assert stored == [1, 0, 0]


def test_batcher_coalesces_creates_that_arrive_while_a_batch_is_stored(
    fhir: FhirService,
) -> None:
    pid = _new(fhir, patient())
    fhir.store_new([pid])
    first_started, release = threading.Event(), threading.Event()
    sizes: list[int] = []

    def store(items: Sequence[NewVersion]) -> list[VersionResult | Exception]:
        sizes.append(len(items))
        if len(sizes) == 1:
            first_started.set()
            release.wait(10)
        return fhir.store_new(items)

    batcher = GroupCommit(store)

    async def scenario() -> list[VersionResult]:
        first = asyncio.ensure_future(batcher.submit(_new(fhir, heart_rate(pid.res_id, 70))))
        while not first_started.is_set():
            await asyncio.sleep(0.001)
        rest = [
            asyncio.ensure_future(batcher.submit(_new(fhir, heart_rate(pid.res_id, 71 + i))))
            for i in range(6)
        ]
        await asyncio.sleep(0.01)
        release.set()
        return await asyncio.gather(first, *rest)

    results = asyncio.run(scenario())
    assert sizes == [1, 6]
    assert len({r.res_id for r in results}) == 7
    assert _count(fhir, "Observation", patient=pid.res_id) == 7


def test_batcher_raises_each_creates_own_error(fhir: FhirService) -> None:
    batcher = create_batcher(fhir)
    pid = _new(fhir, patient())

    async def scenario() -> list[VersionResult | BaseException]:
        return await asyncio.gather(
            batcher.submit(Create(pid)),
            batcher.submit(Create(_new(fhir, weight("nobody", 80)))),
            return_exceptions=True,
        )

    ok, error = asyncio.run(scenario())
    assert isinstance(ok, VersionResult) and ok.created
    assert isinstance(error, FhirError) and error.status == 422


@pytest.mark.slow
def test_concurrent_http_creates_each_get_their_own_answer(
    live_server: str, client: TestClient
) -> None:
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    bodies = [weight(pid, 70 + i % 20) for i in range(40)]
    bodies[7] = weight("missing", 80)
    bodies[23] = {**weight(pid, 80), "status": "bogus"}

    async def send() -> list[httpx.Response]:
        headers = {"Content-Type": "application/fhir+json"}
        async with httpx.AsyncClient(base_url=live_server, headers=headers) as http:
            return await asyncio.gather(*(http.post("/Observation", json=b) for b in bodies))

    responses = asyncio.run(send())
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 38
    assert statuses[7] == 422 and "Observation.subject" in expressions(responses[7].json())[0]
    assert statuses[23] == 400
    ids = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(ids) == 38
    found = client.get("/fhir/Observation", params={"patient": pid, "_count": 100}).json()
    assert {e["resource"]["id"] for e in found["entry"]} == ids
