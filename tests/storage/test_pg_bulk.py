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
