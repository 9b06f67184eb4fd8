"""PostgreSQL fast path: write resources and all their index rows in one statement.

One data-modifying CTE takes every value as a typed array (``unnest``), so the statement text
never changes (psycopg prepares it once) and a create costs one round trip instead of one per
table. SQLite uses the portable SQLAlchemy path in :mod:`service.storage.repository`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import Connection

if TYPE_CHECKING:
    from service.storage.repository import NewVersion

_INSERT = """
WITH new AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('resources', 'rid')) AS rid, x.*
    FROM unnest(%(res_type)s::text[], %(res_id)s::text[], %(version_id)s::int[],
                %(last_updated)s::bigint[], %(patient_id)s::text[], %(date_low)s::bigint[],
                %(date_high)s::bigint[], %(content)s::text[])
         WITH ORDINALITY AS x(res_type, res_id, version_id, last_updated, patient_id,
                              date_low, date_high, content, ord)
), ins_resources AS (
    INSERT INTO resources (rid, res_type, res_id, version_id, last_updated, deleted,
                           patient_id, date_low, date_high, content)
    SELECT rid, res_type, res_id, version_id, last_updated, false, patient_id, date_low,
           date_high, content FROM new
), ins_token AS (
    INSERT INTO sp_token (rid, param, system, code)
    SELECT new.rid, y.param, y.system, y.code
    FROM unnest(%(t_ord)s::bigint[], %(t_param)s::text[], %(t_system)s::text[],
                %(t_code)s::text[]) AS y(ord, param, system, code)
    JOIN new ON new.ord = y.ord
), ins_reference AS (
    INSERT INTO sp_reference (rid, param, target_type, target_id)
    SELECT new.rid, y.param, y.target_type, y.target_id
    FROM unnest(%(r_ord)s::bigint[], %(r_param)s::text[], %(r_type)s::text[],
                %(r_id)s::text[]) AS y(ord, param, target_type, target_id)
    JOIN new ON new.ord = y.ord
), ins_date AS (
    INSERT INTO sp_date (rid, param, low, high)
    SELECT new.rid, y.param, y.low, y.high
    FROM unnest(%(d_ord)s::bigint[], %(d_param)s::text[], %(d_low)s::bigint[],
                %(d_high)s::bigint[]) AS y(ord, param, low, high)
    JOIN new ON new.ord = y.ord
), ins_quantity AS (
    INSERT INTO sp_quantity (rid, param, value, system, code)
    SELECT new.rid, y.param, y.value, y.system, y.code
    FROM unnest(%(q_ord)s::bigint[], %(q_param)s::text[], %(q_value)s::float8[],
                %(q_system)s::text[], %(q_code)s::text[]) AS y(ord, param, value, system, code)
    JOIN new ON new.ord = y.ord
), ins_string AS (
    INSERT INTO sp_string (rid, param, value)
    SELECT new.rid, y.param, y.value
    FROM unnest(%(s_ord)s::bigint[], %(s_param)s::text[], %(s_value)s::text[])
         AS y(ord, param, value)
    JOIN new ON new.ord = y.ord
), missing AS (
    SELECT r.t, r.i
    FROM unnest(%(m_type)s::text[], %(m_id)s::text[]) AS r(t, i)
    WHERE NOT EXISTS (SELECT 1 FROM resources x
                      WHERE x.res_type = r.t AND x.res_id = r.i AND x.deleted = false)
)
SELECT rid, NULL::text, NULL::text, ord FROM new
UNION ALL
SELECT NULL, t, i, NULL FROM missing
ORDER BY 4 NULLS LAST
"""


#: Every array parameter of :data:`_INSERT` (all must be passed, empty or not).
_PARAMETERS = (
    "res_type", "res_id", "version_id", "last_updated", "patient_id", "date_low", "date_high",
    "content", "t_ord", "t_param", "t_system", "t_code", "r_ord", "r_param", "r_type", "r_id",
    "d_ord", "d_param", "d_low", "d_high", "q_ord", "q_param", "q_value", "q_system", "q_code",
    "s_ord", "s_param", "s_value", "m_type", "m_id",
)  # fmt: skip


def insert_resources(
    conn: Connection,
    items: Sequence[NewVersion],
    required: Mapping[str, Iterable[str]],
) -> tuple[list[int], set[tuple[str, str]]]:
    """Insert new resources with their index rows in one round trip.

    In the same statement, checks that the ``required`` references (type → ids) exist; returns
    the new row ids and the references that do not (the caller then rolls back).
    """
    p: dict[str, list[object]] = {key: [] for key in _PARAMETERS}
    for res_type, ids in required.items():
        for res_id in ids:
            p["m_type"].append(res_type)
            p["m_id"].append(res_id)
    for ord_, item in enumerate(items, start=1):
        ix = item.index
        p["res_type"].append(item.res_type)
        p["res_id"].append(item.res_id)
        p["version_id"].append(item.version_id)
        p["last_updated"].append(item.last_updated)
        p["patient_id"].append(ix.patient_id)
        p["date_low"].append(ix.date_low)
        p["date_high"].append(ix.date_high)
        p["content"].append(item.content)
        for param, system, code in ix.tokens:
            p["t_ord"].append(ord_)
            p["t_param"].append(param)
            p["t_system"].append(system)
            p["t_code"].append(code)
        for param, target_type, target_id in ix.references:
            p["r_ord"].append(ord_)
            p["r_param"].append(param)
            p["r_type"].append(target_type)
            p["r_id"].append(target_id)
        for param, low, high in ix.dates:
            p["d_ord"].append(ord_)
            p["d_param"].append(param)
            p["d_low"].append(low)
            p["d_high"].append(high)
        for param, number, unit_system, unit in ix.quantities:
            p["q_ord"].append(ord_)
            p["q_param"].append(param)
            p["q_value"].append(number)
            p["q_system"].append(unit_system)
            p["q_code"].append(unit)
        for param, text in ix.strings:
            p["s_ord"].append(ord_)
            p["s_param"].append(param)
            p["s_value"].append(text[:255])
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(_INSERT, p, prepare=True)
        rids: list[int] = []
        missing: set[tuple[str, str]] = set()
        for rid, res_type, res_id, _ in cursor.fetchall():
            if rid is not None:
                rids.append(rid)
            else:
                missing.add((res_type, res_id))
        return rids, missing
    finally:
        cursor.close()


def existing_ids(conn: Connection, res_type: str, ids: list[str]) -> set[str]:
    """Which of ``ids`` exist (not deleted) as ``res_type`` — one prepared statement."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(
            "SELECT res_id FROM resources WHERE res_type = %s AND res_id = ANY(%s) "
            "AND deleted = false",
            (res_type, ids),
            prepare=True,
        )
        return {row[0] for row in cursor.fetchall()}
    finally:
        cursor.close()


def compartment_contents(conn: Connection, res_type: str, patient_id: str) -> list[str]:
    """The JSON of every current ``res_type`` in a patient's compartment (prepared query)."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(
            "SELECT content FROM resources WHERE res_type = %s AND patient_id = %s "
            "AND deleted = false",
            (res_type, patient_id),
            prepare=True,
        )
        return [row[0] for row in cursor.fetchall()]
    finally:
        cursor.close()
