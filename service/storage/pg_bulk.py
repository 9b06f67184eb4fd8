"""PostgreSQL fast path: write resources and all their index rows in one statement.

One data-modifying CTE inserts the resource rows and every search-index row, and checks that
the references exist, so a create (or all the creates of a Bundle) costs one round trip. All
values travel as one JSON document: a single text parameter that PostgreSQL unpacks in C,
where thirty array parameters cost more CPU to adapt in psycopg than the insert itself. It is
parsed once, as ``jsonb``: every ``->`` on a ``json`` value parses its text again, so each
resource's JSON was parsed about ten times (PostgreSQL CPU per create 15 % less, per AuditEvent
38 % less, in-process measurement).
One version (an audited read's AuditEvent, a create by update or conditional create) goes by a
statement with only the parts it needs (:func:`_insert_one`). Many versions at once (an
import's chunk, a bench preload) go by ``COPY`` instead (:func:`copy_resources`): the
statement above costs the server about a third more per row, as it unpacks the JSON document
and joins every index row to its resource.
SQLite uses the portable SQLAlchemy path in :mod:`service.storage.repository`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection

from service.storage.tables import NULL_DATE

if TYPE_CHECKING:
    from service.storage.repository import NewVersion

_INSERT = f"""
WITH doc AS (SELECT %(doc)s::jsonb AS d),
new AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('resources', 'rid')) AS rid, x.ord,
           x.e->>0 AS res_type, x.e->>1 AS res_id, (x.e->>2)::int AS version_id,
           (x.e->>3)::bigint AS last_updated, x.e->>4 AS patient_id,
           (x.e->>5)::bigint AS date_low, (x.e->>6)::bigint AS date_high, x.e->>7 AS content
    FROM doc, jsonb_array_elements(doc.d->'r') WITH ORDINALITY AS x(e, ord)
), ins_resources AS (
    INSERT INTO resources (rid, res_type, res_id, version_id, last_updated, deleted,
                           patient_id, date_low, date_high, content)
    SELECT rid, res_type, res_id, version_id, last_updated, false, patient_id, date_low,
           date_high, content FROM new
), ins_token AS (
    INSERT INTO sp_token (rid, param, system, code, res_type, patient_id, sort_date, date_high)
    SELECT new.rid, y.e->>1, y.e->>2, y.e->>3, new.res_type, new.patient_id,
           coalesce(new.date_low, {NULL_DATE}), new.date_high
    FROM doc, jsonb_array_elements(doc.d->'t') AS y(e) JOIN new ON new.ord = (y.e->>0)::bigint
), ins_reference AS (
    INSERT INTO sp_reference (rid, param, target_type, target_id)
    SELECT new.rid, y.e->>1, y.e->>2, y.e->>3
    FROM doc, jsonb_array_elements(doc.d->'f') AS y(e) JOIN new ON new.ord = (y.e->>0)::bigint
), ins_date AS (
    INSERT INTO sp_date (rid, param, low, high)
    SELECT new.rid, y.e->>1, (y.e->>2)::bigint, (y.e->>3)::bigint
    FROM doc, jsonb_array_elements(doc.d->'d') AS y(e) JOIN new ON new.ord = (y.e->>0)::bigint
), ins_quantity AS (
    INSERT INTO sp_quantity (rid, param, value, system, code)
    SELECT new.rid, y.e->>1, (y.e->>2)::float8, y.e->>3, y.e->>4
    FROM doc, jsonb_array_elements(doc.d->'q') AS y(e) JOIN new ON new.ord = (y.e->>0)::bigint
), ins_string AS (
    INSERT INTO sp_string (rid, param, value)
    SELECT new.rid, y.e->>1, y.e->>2
    FROM doc, jsonb_array_elements(doc.d->'s') AS y(e) JOIN new ON new.ord = (y.e->>0)::bigint
), missing AS (
    SELECT y.e->>0 AS t, y.e->>1 AS i
    FROM doc, jsonb_array_elements(doc.d->'m') AS y(e)
    WHERE NOT EXISTS (SELECT 1 FROM resources x
                      WHERE x.res_type = y.e->>0 AND x.res_id = y.e->>1 AND x.deleted = false)
)
SELECT rid, NULL::text, NULL::text, ord FROM new
UNION ALL
SELECT NULL, t, i, NULL FROM missing
ORDER BY 4 NULLS LAST
"""


def insert_resources(
    conn: Connection,
    items: Sequence[NewVersion],
    required: Mapping[str, Iterable[str]],
) -> tuple[list[int], set[tuple[str, str]]]:
    """Insert new resources with their index rows in one round trip.

    In the same statement, checks that the ``required`` references (type → ids) exist; returns
    the new row ids and the references that do not (the caller then rolls back).
    """
    if len(items) == 1:
        return _insert_one(conn, items[0], required)
    rows: list[list[Any]] = []
    tokens: list[list[Any]] = []
    refs: list[list[Any]] = []
    dates: list[list[Any]] = []
    quantities: list[list[Any]] = []
    strings: list[list[Any]] = []
    for ord_, item in enumerate(items, start=1):
        ix = item.index
        rows.append([item.res_type, item.res_id, item.version_id, item.last_updated,
                     ix.patient_id, ix.date_low, ix.date_high, item.content])
        tokens.extend([ord_, *token] for token in ix.tokens)
        refs.extend([ord_, *ref] for ref in ix.references)
        dates.extend([ord_, *date] for date in ix.dates)
        quantities.extend([ord_, *quantity] for quantity in ix.quantities)
        strings.extend([ord_, param, text[:255]] for param, text in ix.strings)
    doc = {
        "r": rows, "t": tokens, "f": refs, "d": dates, "q": quantities, "s": strings,
        "m": [[res_type, res_id] for res_type, ids in required.items() for res_id in ids],
    }  # fmt: skip
    return _inserted(conn, _INSERT, {"doc": orjson.dumps(doc).decode()})


def _inserted(
    conn: Connection, sql: str, params: Mapping[str, Any]
) -> tuple[list[int], set[tuple[str, str]]]:
    """Run an insert statement whose rows are (row id, NULL, NULL) for each resource written
    and (NULL, type, id) for each required reference that does not resolve."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params, prepare=True)
        rids: list[int] = []
        missing: set[tuple[str, str]] = set()
        for rid, res_type, res_id, *_ in cursor.fetchall():
            if rid is not None:
                rids.append(rid)
            else:
                missing.add((res_type, res_id))
        return rids, missing
    finally:
        cursor.close()


_ONE_ROW = """
WITH new AS (
    INSERT INTO resources (res_type, res_id, version_id, last_updated, deleted, patient_id,
                           date_low, date_high, content)
    VALUES (%(t)s, %(i)s, %(v)s::int, %(u)s::bigint, false, %(p)s, %(lo)s::bigint,
            %(hi)s::bigint, %(c)s)
    RETURNING rid
), doc AS (SELECT %(doc)s::jsonb AS d)"""

#: The index rows of :data:`_ONE_ROW`'s resource, by the key of their array in the document.
_ONE_INDEX = {
    "t": f"""INSERT INTO sp_token (rid, param, system, code, res_type, patient_id, sort_date,
                          date_high)
    SELECT new.rid, y.e->>0, y.e->>1, y.e->>2, %(t)s, %(p)s,
           coalesce(%(lo)s::bigint, {NULL_DATE}), %(hi)s::bigint
    FROM new, doc, jsonb_array_elements(doc.d->'t') AS y(e)""",
    "f": """INSERT INTO sp_reference (rid, param, target_type, target_id)
    SELECT new.rid, y.e->>0, y.e->>1, y.e->>2
    FROM new, doc, jsonb_array_elements(doc.d->'f') AS y(e)""",
    "d": """INSERT INTO sp_date (rid, param, low, high)
    SELECT new.rid, y.e->>0, (y.e->>1)::bigint, (y.e->>2)::bigint
    FROM new, doc, jsonb_array_elements(doc.d->'d') AS y(e)""",
    "q": """INSERT INTO sp_quantity (rid, param, value, system, code)
    SELECT new.rid, y.e->>0, (y.e->>1)::float8, y.e->>2, y.e->>3
    FROM new, doc, jsonb_array_elements(doc.d->'q') AS y(e)""",
    "s": """INSERT INTO sp_string (rid, param, value)
    SELECT new.rid, y.e->>0, y.e->>1 FROM new, doc, jsonb_array_elements(doc.d->'s') AS y(e)""",
}

_ONE_MISSING = """
SELECT NULL::bigint, y.e->>0, y.e->>1 FROM doc, jsonb_array_elements(doc.d->'m') AS y(e)
WHERE NOT EXISTS (SELECT 1 FROM resources x
                  WHERE x.res_type = y.e->>0 AND x.res_id = y.e->>1 AND x.deleted = false)"""


@lru_cache(maxsize=64)
def _one_statement(kinds: tuple[str, ...], check: bool) -> str:
    """The statement that inserts one resource with index rows of ``kinds`` (keys of
    :data:`_ONE_INDEX`), checking the required references when ``check``."""
    ctes = "".join(f", ins_{kind} AS (\n    {_ONE_INDEX[kind]}\n)" for kind in kinds)
    result = "\nSELECT rid, NULL::text, NULL::text FROM new"
    if check:
        result += "\nUNION ALL" + _ONE_MISSING
    return _ONE_ROW + ctes + result


def _insert_one(
    conn: Connection, item: NewVersion, required: Mapping[str, Iterable[str]]
) -> tuple[list[int], set[tuple[str, str]]]:
    """:func:`insert_resources` of one version, by a statement with only the parts it needs.

    Many writes are one version (every audited read's AuditEvent), and the
    general statement unpacks rows from the document and joins every index row back to its
    row by ordinal: for an AuditEvent that cost PostgreSQL about a quarter more (in-process,
    1,000 events naming 12 resources each).
    """
    ix = item.index
    doc: dict[str, list[Any]] = {
        "t": ix.tokens, "f": ix.references, "d": ix.dates, "q": ix.quantities,
        "s": [[param, text[:255]] for param, text in ix.strings],
        "m": [[res_type, res_id] for res_type, ids in required.items() for res_id in ids],
    }  # fmt: skip
    kinds = tuple(kind for kind in _ONE_INDEX if doc[kind])
    params = {
        "t": item.res_type, "i": item.res_id, "v": item.version_id, "u": item.last_updated,
        "p": ix.patient_id, "lo": ix.date_low, "hi": ix.date_high, "c": item.content,
        "doc": orjson.dumps(doc).decode(),
    }  # fmt: skip
    return _inserted(conn, _one_statement(kinds, bool(doc["m"])), params)


#: From this many versions on, :func:`copy_resources` writes them (fewer: one statement is
#: one round trip where COPY costs several).
COPY_FROM = 200

#: ``OFFSET 0`` keeps the subquery a probe of the unique index per reference: made a join, its
#: plan follows the statistics, and an import grows the table faster than they are renewed
#: (planned as if it were empty, it scans the table whole).
_MISSING = """
SELECT m.t, m.i FROM unnest(%s::text[], %s::text[]) AS m(t, i)
WHERE NOT EXISTS (SELECT 1 FROM resources x
                  WHERE x.res_type = m.t AND x.res_id = m.i AND x.deleted = false OFFSET 0)
"""

_NEW_RIDS = """
SELECT nextval(pg_get_serial_sequence('resources', 'rid')) AS rid
FROM generate_series(1, %s) ORDER BY rid
"""

_COPY_RESOURCES = (
    "COPY resources (rid, res_type, res_id, version_id, last_updated, deleted, patient_id, "
    "date_low, date_high, content) FROM STDIN"
)
_COPY_INDEX = {
    "t": "COPY sp_token (rid, param, system, code, res_type, patient_id, sort_date, date_high) "
    "FROM STDIN",
    "f": "COPY sp_reference (rid, param, target_type, target_id) FROM STDIN",
    "d": "COPY sp_date (rid, param, low, high) FROM STDIN",
    "q": "COPY sp_quantity (rid, param, value, system, code) FROM STDIN",
    "s": "COPY sp_string (rid, param, value) FROM STDIN",
}


def copy_resources(
    conn: Connection,
    items: Sequence[NewVersion],
    required: Mapping[str, Iterable[str]],
) -> tuple[list[int], set[tuple[str, str]]]:
    """:func:`insert_resources` by ``COPY`` into the resource and index tables.

    First checks that the ``required`` references exist (when any are missing nothing is
    written and they are returned), then takes the row ids from the sequence in one statement
    and copies the rows with them, table by table. What it writes is what
    :func:`insert_resources` writes, row for row.
    """
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        pairs = [(res_type, res_id) for res_type, ids in required.items() for res_id in ids]
        if pairs:
            types, ids = (list(column) for column in zip(*pairs, strict=True))
            cursor.execute(_MISSING, (types, ids), prepare=True)
            missing = {(res_type, res_id) for res_type, res_id in cursor.fetchall()}
            if missing:
                return [], missing
        cursor.execute(_NEW_RIDS, (len(items),), prepare=True)
        rids = [row[0] for row in cursor.fetchall()]
        rows: dict[str, list[tuple[Any, ...]]] = {key: [] for key in _COPY_INDEX}
        with cursor.copy(_COPY_RESOURCES) as copy:
            for rid, item in zip(rids, items, strict=True):
                ix = item.index
                copy.write_row(
                    (rid, item.res_type, item.res_id, item.version_id, item.last_updated, False,
                     ix.patient_id, ix.date_low, ix.date_high, item.content)
                )  # fmt: skip
                sort_date = NULL_DATE if ix.date_low is None else ix.date_low
                rows["t"].extend(
                    (rid, param, system, code, item.res_type, ix.patient_id, sort_date,
                     ix.date_high)
                    for param, system, code in ix.tokens
                )  # fmt: skip
                rows["f"].extend((rid, *ref) for ref in ix.references)
                rows["d"].extend((rid, *date) for date in ix.dates)
                rows["q"].extend((rid, *quantity) for quantity in ix.quantities)
                rows["s"].extend((rid, param, text[:255]) for param, text in ix.strings)
        for key, table_rows in rows.items():
            if table_rows:
                with cursor.copy(_COPY_INDEX[key]) as copy:
                    for row in table_rows:
                        copy.write_row(row)
        return rids, set()
    finally:
        cursor.close()


def _prepared_rows(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """All rows of a read that runs often: a server-side prepared statement (psycopg never
    prepares by itself here, so that searches stay planned with their values)."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params, prepare=True)
        rows: list[Any] = cursor.fetchall()
        return rows
    finally:
        cursor.close()


def existing_ids(conn: Connection, res_type: str, ids: list[str]) -> set[str]:
    """Which of ``ids`` exist (not deleted) as ``res_type`` — one prepared statement."""
    rows = _prepared_rows(
        conn,
        "SELECT res_id FROM resources WHERE res_type = %s AND res_id = ANY(%s) "
        "AND deleted = false",
        (res_type, ids),
    )
    return {row[0] for row in rows}


#: One index probe per value (``OFFSET 0`` keeps the lateral subquery from being made a join
#: the statistics would plan): without fresh statistics, as during an import, ``code =
#: ANY(…)`` with thousands of values was planned as a filter over every identifier row.
_IDENTIFIER_ROWS = """
SELECT t.system, t.code, r.res_id
FROM unnest(%s::text[]) AS c(code)
CROSS JOIN LATERAL (SELECT t.system, t.code, t.rid FROM sp_token t
                    WHERE t.param = 'identifier' AND t.code = c.code AND t.res_type = %s
                    OFFSET 0) AS t
JOIN resources r ON r.rid = t.rid
WHERE r.res_type = %s AND r.deleted = false
"""


def identifier_rows(
    conn: Connection, res_type: str, codes: list[str]
) -> list[tuple[str | None, str, str]]:
    """(system, code, resource id) of the current ``res_type`` resources with an identifier
    whose value is one of ``codes`` (as indexed), for an import's chunk of thousands: one
    index probe per value, whatever the statistics say. Planned each time (with the tables'
    current sizes): a plan kept from when they were empty would join the resource rows by
    scanning them all."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(_IDENTIFIER_ROWS, (codes, res_type, res_type))
        rows: list[tuple[str | None, str, str]] = cursor.fetchall()
        return rows
    finally:
        cursor.close()


def compartment_contents(conn: Connection, res_type: str, patient_id: str) -> list[str]:
    """The JSON of every current ``res_type`` in a patient's compartment (prepared query)."""
    rows = _prepared_rows(
        conn,
        "SELECT content FROM resources WHERE res_type = %s AND patient_id = %s "
        "AND deleted = false",
        (res_type, patient_id),
    )
    return [row[0] for row in rows]


def compartment_contents_of(
    conn: Connection, res_type: str, patient_ids: list[str]
) -> list[tuple[str, str]]:
    """(patient id, JSON) of every current ``res_type`` in several compartments (prepared).

    One statement text whatever the number of patients (an array parameter, not an ``IN``
    list), so PostgreSQL plans it once per connection and SQLAlchemy compiles nothing.
    """
    return _prepared_rows(
        conn,
        "SELECT patient_id, content FROM resources WHERE res_type = %s "
        "AND patient_id = ANY(%s) AND deleted = false",
        (res_type, patient_ids),
    )
