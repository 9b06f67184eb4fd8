"""``service.storage.pg_bulk``: the COPY path writes what the one-statement insert writes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import select

from service.core.indexing import IndexValues
from service.storage import pg_bulk
from service.storage import repository as repo
from service.storage.db import Database
from service.storage.repository import NewVersion
from service.storage.tables import INDEX_TABLES, resources
from tests.conftest import _truncate

#: Text COPY's special characters (tab, newline, carriage return, backslash) and more.
AWKWARD = "tab\there\nnew\rline back\\slash \\N ünïcødé"


def _versions(count: int) -> list[NewVersion]:
    """``count`` versions whose index rows fill every index table, awkward values included."""
    versions = []
    for n in range(count):
        res_id = f"r{n}"
        content = {"resourceType": "Observation", "id": res_id, "note": [{"text": AWKWARD}]}
        index = IndexValues(
            patient_id=None if n % 3 == 0 else f"p{n % 5}",
            date_low=None if n % 4 == 0 else 1_700_000_000_000_000 + n,
            date_high=None if n % 4 == 0 else 1_700_000_000_999_999 + n,
            tokens=[("code", "http://loinc.org", "29463-7"), ("status", None, AWKWARD)],
            references=[("subject", "Patient", f"p{n % 5}")],
            dates=[("issued", -(2**62), 2**62)],
            quantities=[("value-quantity", 80.5 + n / 3, None, "kg")],
            strings=[("name", AWKWARD), ("long", "x" * 300)],
        )
        at = 1_700_000_000_000_000 + n
        versions.append(
            NewVersion("Observation", res_id, 1, at, orjson.dumps(content).decode(), index)
        )
    return versions


def _rows(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every written row, the row id replaced by its resource's id."""
    with db.read() as conn:
        ids = dict(conn.execute(select(resources.c.rid, resources.c.res_id)).all())
        found = {
            "resources": sorted(
                tuple(v for k, v in row._mapping.items() if k != "rid")
                for row in conn.execute(select(resources))
            )
        }
        for table in INDEX_TABLES:
            found[table.name] = sorted(
                tuple(ids[v] if k == "rid" else v for k, v in row._mapping.items())
                for row in conn.execute(select(table))
            )
    return found


@pytest.fixture
def pg_database(pg_database_url: str) -> Any:
    """The test database on PostgreSQL: the COPY path is PostgreSQL's."""
    db = Database(pg_database_url)
    yield db
    db.dispose()


def test_copy_writes_the_rows_the_insert_statement_writes(
    pg_database: Database, pg_database_url: str
) -> None:
    versions = _versions(pg_bulk.COPY_FROM + 7)
    with pg_database.write() as conn:
        rids, missing = pg_bulk.insert_resources(conn, versions, {})
    assert (len(rids), missing) == (len(versions), set())
    inserted = _rows(pg_database)
    _truncate(pg_database_url)

    with pg_database.write() as conn:
        rids, missing = repo.insert_resources_checked(conn, versions, {})
    assert (len(rids), missing) == (len(versions), set())
    assert rids == sorted(rids)  # in the versions' order, as one by one
    copied = _rows(pg_database)

    assert all(copied[name] for name in copied), "every table has rows"
    assert copied == inserted
    assert {orjson.loads(row[-1])["note"][0]["text"] for row in copied["resources"]} == {AWKWARD}


def test_copy_writes_nothing_when_a_reference_is_missing(pg_database: Database) -> None:
    with pg_database.write() as conn:
        pg_bulk.insert_resources(conn, _versions(1), {})
    versions = [
        NewVersion(v.res_type, f"new-{v.res_id}", 1, v.last_updated, v.content, v.index)
        for v in _versions(pg_bulk.COPY_FROM)
    ]
    required = {"Observation": {"r0", "gone"}, "Patient": {"nobody"}}
    with pg_database.write() as conn:
        rids, missing = pg_bulk.copy_resources(conn, versions, required)
    assert (rids, missing) == ([], {("Observation", "gone"), ("Patient", "nobody")})
    assert len(_rows(pg_database)["resources"]) == 1


def test_the_identifier_lookup_probes_the_index_per_value(pg_database: Database) -> None:
    versions = _versions(3000)
    for n, version in enumerate(versions):
        version.index.tokens.append(("identifier", "urn:test:id", f"id{n}"))
    with pg_database.write() as conn:
        pg_bulk.copy_resources(conn, versions, {})
    codes = [f"id{n}" for n in range(0, 6000, 3)]  # 2,000 values, 1,000 of them present

    with pg_database.read() as conn:
        plan = "\n".join(
            row[0]
            for row in conn.exec_driver_sql(
                "EXPLAIN " + pg_bulk._IDENTIFIER_ROWS, (codes, "Observation", "Observation")
            )
        )
        found = repo.identifier_matches(
            conn, "Observation", {("urn:test:id", "id0"), ("urn:test:id", "id3001")}
        )

    # Whatever the statistics say, never a filter over all identifier rows.
    assert "code = c.code" in plan and "ANY" not in plan, plan
    assert found == {("urn:test:id", "id0"): {"r0"}}


def _bare(res_id: str, **index: Any) -> NewVersion:
    """A version with only the index values given (the one-version statement leaves out the
    parts a version has no rows for)."""
    content = orjson.dumps({"resourceType": "Basic", "id": res_id}).decode()
    return NewVersion("Basic", res_id, 1, 1_700_000_000_000_000, content, IndexValues(**index))


def test_one_version_at_a_time_writes_the_rows_of_the_general_statement(
    pg_database: Database, pg_database_url: str
) -> None:
    versions = [
        *_versions(8),
        _bare("nothing-indexed"),
        _bare("tokens-only", tokens=[("code", None, "x")]),
        _bare("references-only", patient_id="p1", references=[("subject", "Patient", "p1")]),
    ]
    with pg_database.write() as conn:
        rids, missing = pg_bulk.insert_resources(conn, versions, {})
    assert (len(rids), missing) == (len(versions), set())
    together = _rows(pg_database)
    _truncate(pg_database_url)

    one_by_one = []
    with pg_database.write() as conn:
        for version in versions:
            rids, missing = pg_bulk.insert_resources(conn, [version], {})
            assert (len(rids), missing) == (1, set())
            one_by_one += rids
    assert one_by_one == sorted(one_by_one)
    alone = _rows(pg_database)

    assert all(alone[name] for name in alone), "every table has rows"
    assert alone == together


def test_one_version_reports_the_references_that_do_not_resolve(pg_database: Database) -> None:
    with pg_database.write() as conn:
        pg_bulk.insert_resources(conn, _versions(1), {})
    required = {"Observation": {"r0", "gone"}, "Patient": {"nobody"}}
    with pg_database.write() as conn:
        rids, missing = pg_bulk.insert_resources(conn, [_bare("b1")], required)
        assert missing == {("Observation", "gone"), ("Patient", "nobody")}
        rids, missing = pg_bulk.insert_resources(conn, [_bare("b2")], {"Observation": {"r0"}})
        assert (len(rids), missing) == (1, set())


def test_large_resources_are_compressed_with_lz4(pg_database: Database) -> None:
    big = _bare("big")
    content = {"resourceType": "Basic", "id": "big", "text": {"div": "<div>" + "ab" * 4000}}
    big.content = orjson.dumps(content).decode()
    with pg_database.write() as conn:
        pg_bulk.insert_resources(conn, [big], {})
        lz4_built = conn.exec_driver_sql(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        ).scalar()
        method = conn.exec_driver_sql(
            "SELECT pg_column_compression(content) FROM resources WHERE res_id = 'big'"
        ).scalar()
    assert method == ("lz4" if lz4_built else "pglz")
