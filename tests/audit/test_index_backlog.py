"""On PostgreSQL an AuditEvent's row commits with the access and its search-index rows follow
(audit_index_backlog): written later, they are the rows indexing at once writes; a search of
AuditEvents never misses an event; two workers never index one event twice. The embedded
database indexes at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.audit.events import AccessRecord, Actor, Touched, index_values
from service.audit.trail import AuditTrail
from service.bootstrap import build_service
from service.core.indexing import IndexValues
from service.settings import Settings
from service.storage import audit_store, pg_bulk
from service.storage.db import Database
from service.storage.repository import NewVersion
from service.storage.tables import (
    INDEX_TABLES,
    audit_index_backlog,
    resources,
    sp_reference,
    sp_token,
)

BACKEND = Actor("ehr-1", None, "jti-2", "127.0.0.1", (("x-request-id", "req-1"),))


def _search(n: int = 25) -> AccessRecord:
    """A search that returned ``n`` of patient p1's Observations."""
    return AccessRecord(
        "search-type",
        "Observation",
        "patient=p1&code=http://loinc.org|29463-7",
        touched=[Touched("Observation", f"o{i}", 1, "p1") for i in range(n)],
    )


def _trail(url: str) -> AuditTrail:
    settings = Settings(
        database_url=url, profiles_dir=Path(__file__).resolve().parents[2] / "fhir_profiles"
    )
    return AuditTrail(build_service(settings, Database(url)))


@pytest.fixture
def trail(settings: Settings) -> Iterator[AuditTrail]:
    """The audit trail on each backend."""
    made = _trail(settings.database_url)
    yield made
    made.fhir.db.dispose()


@pytest.fixture
def pg_trail(pg_database_url: str) -> Iterator[AuditTrail]:
    """The audit trail on PostgreSQL, where indexing is deferred."""
    made = _trail(pg_database_url)
    yield made
    made.fhir.db.dispose()


def _full_index(version: NewVersion) -> IndexValues:
    """The index values of ``version``, whether it carries them or is indexed later."""
    return index_values(version.resource, version.index.date_low or 0)


def _expected(version: NewVersion) -> dict[str, set[tuple[object, ...]]]:
    """The index rows (without the row id) indexing ``version`` at once writes."""
    ix = _full_index(version)
    return {
        "sp_token": {
            (p, s, c, "AuditEvent", ix.patient_id, ix.date_low, ix.date_high)
            for p, s, c in ix.tokens
        },
        "sp_reference": set(ix.references),
        "sp_date": set(ix.dates),
        "sp_quantity": set(ix.quantities),
        "sp_string": set(ix.strings),
    }


def _index_rows(db: Database, rid: int) -> dict[str, set[tuple[object, ...]]]:
    with db.read() as conn:
        return {
            table.name: {
                tuple(v for k, v in row._mapping.items() if k != "rid")
                for row in conn.execute(select(table).where(table.c.rid == rid))
            }
            for table in INDEX_TABLES
        }


def _backlog(db: Database) -> list[int]:
    with db.read() as conn:
        return list(conn.execute(select(audit_index_backlog.c.rid)).scalars())


def _store(trail: AuditTrail, record: AccessRecord) -> list[tuple[int, NewVersion]]:
    """Store ``record``'s events as a request's group commit does: (row id, version)."""
    versions = trail.versions(BACKEND, record)
    assert trail.store_batch([versions]) == [None]
    with trail.fhir.db.read() as conn:
        return [
            (
                conn.execute(
                    select(resources.c.rid).where(
                        resources.c.res_type == "AuditEvent", resources.c.res_id == v.res_id
                    )
                ).scalar_one(),
                v,
            )
            for v in versions
        ]


def test_index_rows_written_later_are_those_written_at_once(trail: AuditTrail) -> None:
    db = trail.fhir.db
    [(rid, version)] = _store(trail, _search())
    assert trail.defer_index is not db.is_sqlite
    assert trail.fhir.read("AuditEvent", version.res_id).res_id == version.res_id  # readable now
    if trail.defer_index:
        assert _backlog(db) == [rid]
        with db.read() as conn:
            assert audit_store.index_backlog_size(conn) == 1
        assert not any(_index_rows(db, rid).values())
        assert trail.index_backlog() == 1
    assert _backlog(db) == []
    with db.read() as conn:
        assert audit_store.index_backlog_size(conn) == 0
    rows = _index_rows(db, rid)
    assert rows == _expected(version)
    assert ("entity", "Observation", "o24") in rows["sp_reference"]
    assert trail.index_backlog() == 0


def test_a_search_of_audit_events_finds_every_stored_event(trail: AuditTrail) -> None:
    [(_, first)] = _store(trail, _search())
    [(_, second)] = _store(trail, _search(3))
    found = trail.fhir.search("AuditEvent", [("entity", "Observation/o2")]).matches
    assert {m.res_id for m in found} == {first.res_id, second.res_id}
    only_first = trail.fhir.search("AuditEvent", [("entity", "Observation/o20")]).matches
    assert [m.res_id for m in only_first] == [first.res_id]
    assert _backlog(trail.fhir.db) == []


def test_two_workers_never_index_one_event_twice(pg_trail: AuditTrail) -> None:
    stored = [_store(pg_trail, _search(5))[0] for _ in range(3)]
    other = Database(pg_trail.fhir.db.url)
    try:
        with pg_trail.fhir.db.write() as first:
            mine = audit_store.claim_index_backlog(first, 2)
            with other.write() as second:  # another worker, while the first is indexing
                theirs = audit_store.claim_index_backlog(second, 10)
        assert [e.rid for e in mine] == [rid for rid, _ in stored[:2]]
        assert [e.rid for e in theirs] == [stored[2][0]]
    finally:
        other.dispose()


def test_rounds_of_two_workers_index_each_event_once(pg_trail: AuditTrail) -> None:
    stored = [_store(pg_trail, _search(5))[0] for _ in range(6)]
    other = _trail(pg_trail.fhir.db.url)
    try:
        assert pg_trail.index_backlog(limit=4) + other.index_backlog(limit=4) == 6
        pg_trail.index_all()
    finally:
        other.fhir.db.dispose()
    with pg_trail.fhir.db.read() as conn:
        for rid, version in stored:
            count = conn.execute(
                select(func.count()).select_from(sp_reference).where(sp_reference.c.rid == rid)
            ).scalar_one()
            assert count == len(_full_index(version).references)
            tokens = conn.execute(
                select(func.count()).select_from(sp_token).where(sp_token.c.rid == rid)
            ).scalar_one()
            assert tokens == len(_full_index(version).tokens)


def test_a_large_batch_by_copy_defers_as_the_statement_does(pg_trail: AuditTrail) -> None:
    """A group commit of many accesses (COPY from pg_bulk.COPY_FROM versions on) stores the
    events and puts them on the backlog, with no index rows yet."""
    batch = [pg_trail.versions(BACKEND, _search(2)) for _ in range(pg_bulk.COPY_FROM + 1)]
    assert pg_trail.store_batch(batch) == [None] * len(batch)
    db = pg_trail.fhir.db
    backlog = _backlog(db)
    assert len(backlog) == pg_bulk.COPY_FROM + 1
    assert not any(_index_rows(db, backlog[0]).values())
    pg_trail.index_all()
    assert _backlog(db) == []
    with db.read() as conn:
        version = batch[-1][0]
        rid = conn.execute(
            select(resources.c.rid).where(resources.c.res_id == version.res_id)
        ).scalar_one()
    assert _index_rows(db, rid) == _expected(version)
