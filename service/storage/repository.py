"""Reads and writes of resource rows, versions and index rows (SQLAlchemy Core)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, delete, func, insert, select, union_all, update

from service.core.indexing import WIDE_KEY, IndexValues, index_key
from service.storage import pg_bulk
from service.storage.tables import (
    INDEX_TABLES,
    NULL_DATE,
    resource_history,
    resources,
    sp_date,
    sp_quantity,
    sp_reference,
    sp_string,
    sp_token,
)


@dataclass(slots=True)
class StoredVersion:
    """One version of a resource as stored; ``content`` is None for a delete marker."""

    rid: int
    res_type: str
    res_id: str
    version_id: int
    last_updated: int
    deleted: bool
    content: str | None
    patient_id: str | None = None


@dataclass(slots=True)
class NewVersion:
    """A version to write: its JSON text and the index values computed from it."""

    res_type: str
    res_id: str
    version_id: int
    last_updated: int
    content: str
    index: IndexValues
    resource: dict[str, Any] = field(default_factory=dict)  # ``content`` as data, for listeners
    #: References that must resolve before it is written: (type, id).
    links: list[tuple[str, str]] = field(default_factory=list)


_CURRENT_COLS = (
    resources.c.rid,
    resources.c.res_type,
    resources.c.res_id,
    resources.c.version_id,
    resources.c.last_updated,
    resources.c.deleted,
    resources.c.content,
    resources.c.patient_id,
)


def _row_values(item: NewVersion) -> dict[str, Any]:
    return {
        "res_type": item.res_type,
        "res_id": item.res_id,
        "version_id": item.version_id,
        "last_updated": item.last_updated,
        "deleted": False,
        "patient_id": item.index.patient_id,
        "date_low": item.index.date_low,
        "date_high": item.index.date_high,
        "content": item.content,
    }


def insert_resources(conn: Connection, items: Sequence[NewVersion]) -> list[int]:
    """Insert brand-new resources (version 1) with their index rows; returns their row ids."""
    return insert_resources_checked(conn, items, {})[0]


def insert_resources_checked(
    conn: Connection, items: Sequence[NewVersion], required: Mapping[str, Iterable[str]]
) -> tuple[list[int], set[tuple[str, str]]]:
    """Insert new resources, checking that the ``required`` references (type → ids) exist.

    Returns the row ids and the missing references; when any are missing the caller must roll
    back. PostgreSQL does both in one statement, or by ``COPY`` for many versions; SQLite
    checks first and then inserts.
    """
    if not items:
        return [], set()
    if conn.dialect.name == "postgresql":
        if len(items) >= pg_bulk.COPY_FROM:
            return pg_bulk.copy_resources(conn, items, required)
        return pg_bulk.insert_resources(conn, items, required)
    missing = {
        (res_type, res_id)
        for res_type, ids in required.items()
        for res_id in set(ids) - existing_ids(conn, res_type, ids)
    }
    if missing:
        return [], missing
    return _insert_portable(conn, items), set()


def _insert_portable(conn: Connection, items: Sequence[NewVersion]) -> list[int]:
    stmt = insert(resources).returning(resources.c.rid, sort_by_parameter_order=True)
    rids = list(conn.execute(stmt, [_row_values(i) for i in items]).scalars())
    _insert_index_rows(
        conn, [(rid, i.res_type, i.index) for rid, i in zip(rids, items, strict=True)]
    )
    return rids


def _insert_index_rows(conn: Connection, items: Iterable[tuple[int, str, IndexValues]]) -> None:
    tokens: list[dict[str, Any]] = []
    refs: list[dict[str, Any]] = []
    dates: list[dict[str, Any]] = []
    quantities: list[dict[str, Any]] = []
    strings: list[dict[str, Any]] = []
    for rid, res_type, ix in items:
        sort_date = NULL_DATE if ix.date_low is None else ix.date_low
        tokens.extend(
            {
                "rid": rid, "param": p, "system": s, "code": c, "res_type": res_type,
                "patient_id": ix.patient_id, "sort_date": sort_date, "date_high": ix.date_high,
            }
            for p, s, c in ix.tokens
        )  # fmt: skip
        refs.extend(
            {"rid": rid, "param": p, "target_type": t, "target_id": i} for p, t, i in ix.references
        )
        dates.extend({"rid": rid, "param": p, "low": lo, "high": hi} for p, lo, hi in ix.dates)
        quantities.extend(
            {"rid": rid, "param": p, "value": v, "system": s, "code": c}
            for p, v, s, c in ix.quantities
        )
        strings.extend({"rid": rid, "param": p, "value": v[:255]} for p, v in ix.strings)
    for table, rows in (
        (sp_token, tokens),
        (sp_reference, refs),
        (sp_date, dates),
        (sp_quantity, quantities),
        (sp_string, strings),
    ):
        if rows:
            conn.execute(insert(table), rows)


def _to_stored(row: Any) -> StoredVersion:
    return StoredVersion(
        rid=row.rid,
        res_type=row.res_type,
        res_id=row.res_id,
        version_id=row.version_id,
        last_updated=row.last_updated,
        deleted=bool(row.deleted),
        content=row.content,
        patient_id=row.patient_id,
    )


def fetch_current(
    conn: Connection, res_type: str, res_id: str, *, for_update: bool = False
) -> StoredVersion | None:
    """The current version (possibly a delete marker), optionally row-locked for an update."""
    stmt = select(*_CURRENT_COLS).where(
        resources.c.res_type == res_type, resources.c.res_id == res_id
    )
    if for_update and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    return _to_stored(row) if row else None


def fetch_version(
    conn: Connection, res_type: str, res_id: str, version_id: int
) -> StoredVersion | None:
    """A specific version, current or superseded."""
    current = fetch_current(conn, res_type, res_id)
    if current is None or version_id > current.version_id or version_id < 1:
        return None
    if version_id == current.version_id:
        return current
    row = conn.execute(
        select(
            resource_history.c.version_id,
            resource_history.c.last_updated,
            resource_history.c.deleted,
            resource_history.c.content,
        ).where(resource_history.c.rid == current.rid, resource_history.c.version_id == version_id)
    ).first()
    if row is None:
        return None
    return StoredVersion(
        current.rid,
        res_type,
        res_id,
        row.version_id,
        row.last_updated,
        bool(row.deleted),
        row.content,
    )


def fetch_many_current(
    conn: Connection, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], StoredVersion]:
    """Current, non-deleted versions for ``(type, id)`` keys; missing keys are absent."""
    by_type: dict[str, set[str]] = {}
    for t, i in keys:
        by_type.setdefault(t, set()).add(i)
    found: dict[tuple[str, str], StoredVersion] = {}
    for res_type, ids in by_type.items():
        rows = conn.execute(
            select(*_CURRENT_COLS).where(
                resources.c.res_type == res_type,
                resources.c.res_id.in_(sorted(ids)),
                resources.c.deleted.is_(False),
            )
        )
        for row in rows:
            found[(res_type, row.res_id)] = _to_stored(row)
    return found


def fetch_current_where(
    conn: Connection, condition: ColumnElement[bool], limit: int
) -> list[StoredVersion]:
    """At most ``limit`` current, non-deleted versions meeting ``condition``, in row order."""
    rows = conn.execute(
        select(*_CURRENT_COLS)
        .where(condition, resources.c.deleted.is_(False))
        .order_by(resources.c.rid)
        .limit(limit)
    )
    return [_to_stored(row) for row in rows]


def fetch_all_versions_current(
    conn: Connection, res_type: str, ids: Sequence[str], *, for_update: bool = False
) -> list[StoredVersion]:
    """Current versions (deleted ones included) of the given ids, optionally row-locked."""
    if not ids:
        return []
    stmt = select(*_CURRENT_COLS).where(
        resources.c.res_type == res_type, resources.c.res_id.in_(sorted(set(ids)))
    )
    if for_update and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return [_to_stored(row) for row in conn.execute(stmt)]


def compartment_contents_of(
    conn: Connection, res_type: str, patient_ids: list[str]
) -> dict[str, list[str]]:
    """:func:`compartment_contents` for several patients in one query (every id is a key)."""
    found: dict[str, list[str]] = {patient_id: [] for patient_id in patient_ids}
    rows: Iterable[Any]
    if conn.dialect.name == "postgresql":
        rows = pg_bulk.compartment_contents_of(conn, res_type, patient_ids)
    else:
        rows = conn.execute(
            select(resources.c.patient_id, resources.c.content).where(
                resources.c.res_type == res_type,
                resources.c.patient_id.in_(patient_ids),
                resources.c.deleted.is_(False),
            )
        )
    for patient_id, content in rows:
        found[patient_id].append(content)
    return found


def compartment_contents(conn: Connection, res_type: str, patient_id: str) -> list[str]:
    """The JSON of every current ``res_type`` in the patient's compartment (one indexed query)."""
    if conn.dialect.name == "postgresql":
        return pg_bulk.compartment_contents(conn, res_type, patient_id)
    rows = conn.execute(
        select(resources.c.content).where(
            resources.c.res_type == res_type,
            resources.c.patient_id == patient_id,
            resources.c.deleted.is_(False),
        )
    )
    return [row.content for row in rows]


def existing_ids(conn: Connection, res_type: str, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` exist (not deleted) as ``res_type``."""
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    if conn.dialect.name == "postgresql":
        return pg_bulk.existing_ids(conn, res_type, wanted)
    rows = conn.execute(
        select(resources.c.res_id).where(
            resources.c.res_type == res_type,
            resources.c.res_id.in_(wanted),
            resources.c.deleted.is_(False),
        )
    )
    return set(rows.scalars())


def replace_current(
    conn: Connection, current: StoredVersion, new: NewVersion | None, *, now: int
) -> None:
    """Supersede ``current`` by ``new`` (an update) or by a delete marker at ``now``.

    The old version moves to the history table; index rows are rebuilt (removed on delete).
    """
    conn.execute(
        insert(resource_history).values(
            rid=current.rid,
            version_id=current.version_id,
            res_type=current.res_type,
            last_updated=current.last_updated,
            deleted=current.deleted,
            content=current.content,
        )
    )
    for table in INDEX_TABLES:
        conn.execute(delete(table).where(table.c.rid == current.rid))
    if new is None:
        values: dict[str, Any] = {
            "version_id": current.version_id + 1,
            "last_updated": now,
            "deleted": True,
            "content": None,
            "patient_id": None,
            "date_low": None,
            "date_high": None,
        }
    else:
        values = _row_values(new)
    conn.execute(update(resources).where(resources.c.rid == current.rid).values(**values))
    if new is not None:
        _insert_index_rows(conn, [(current.rid, new.res_type, new.index)])


def instance_history(
    conn: Connection, res_type: str, res_id: str, *, since: int | None, count: int
) -> list[StoredVersion]:
    """All versions of one resource, newest first."""
    current = fetch_current(conn, res_type, res_id)
    if current is None:
        return []
    versions = [current]
    stmt = (
        select(
            resource_history.c.version_id,
            resource_history.c.last_updated,
            resource_history.c.deleted,
            resource_history.c.content,
        )
        .where(resource_history.c.rid == current.rid)
        .order_by(resource_history.c.version_id.desc())
        .limit(count)
    )
    for row in conn.execute(stmt):
        versions.append(
            StoredVersion(
                current.rid,
                res_type,
                res_id,
                row.version_id,
                row.last_updated,
                bool(row.deleted),
                row.content,
            )
        )
    if since is not None:
        versions = [v for v in versions if v.last_updated >= since]
    return versions[:count]


def type_history(
    conn: Connection, res_type: str, *, since: int | None, count: int
) -> list[StoredVersion]:
    """The newest ``count`` versions across all resources of a type, newest first."""
    cur = select(
        resources.c.rid,
        resources.c.res_id,
        resources.c.version_id,
        resources.c.last_updated,
        resources.c.deleted,
        resources.c.content,
    ).where(resources.c.res_type == res_type)
    old = (
        select(
            resource_history.c.rid,
            resources.c.res_id,
            resource_history.c.version_id,
            resource_history.c.last_updated,
            resource_history.c.deleted,
            resource_history.c.content,
        )
        .join(resources, resources.c.rid == resource_history.c.rid)
        .where(resource_history.c.res_type == res_type)
    )
    if since is not None:
        cur = cur.where(resources.c.last_updated >= since)
        old = old.where(resource_history.c.last_updated >= since)
    # Each side is limited first (wrapped, as SQLite forbids LIMIT inside a bare UNION arm).
    newest_cur = cur.order_by(resources.c.last_updated.desc()).limit(count).subquery()
    newest_old = old.order_by(resource_history.c.last_updated.desc()).limit(count).subquery()
    both = union_all(select(newest_cur), select(newest_old)).subquery()
    rows = conn.execute(
        select(both).order_by(both.c.last_updated.desc(), both.c.version_id.desc()).limit(count)
    )
    return [
        StoredVersion(
            r.rid, res_type, r.res_id, r.version_id, r.last_updated, bool(r.deleted), r.content
        )
        for r in rows
    ]


def lock_key(conn: Connection, key: str) -> None:
    """Serialise writers on ``key`` until the transaction ends.

    PostgreSQL: a transaction-scoped advisory lock. SQLite needs nothing: its write transactions
    (``BEGIN IMMEDIATE``) are already serialised.
    """
    lock_keys(conn, [key])


def lock_keys(conn: Connection, keys: Iterable[str]) -> None:
    """:func:`lock_key` for many keys in one statement (in a fixed order, so two writers
    locking overlapping sets cannot deadlock)."""
    if conn.dialect.name != "postgresql":
        return
    numbers = sorted(
        {
            int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "big", signed=True)
            for k in keys
        }
    )
    if len(numbers) == 1:
        conn.execute(select(func.pg_advisory_xact_lock(numbers[0])))
    elif numbers:
        locks = select(func.unnest(numbers).column_valued("k")).subquery()
        conn.execute(select(func.count(func.pg_advisory_xact_lock(locks.c.k))))


def identifier_matches(
    conn: Connection, res_type: str, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], set[str]]:
    """The ids of the current ``res_type`` resources with each identifier (system, value).

    What the conditional create ``identifier=<system>|<value>`` matches, for many identifiers
    in one query (an import's chunk); identifiers that match nothing are absent.
    """
    # Keyed as the index keys them (long values shortened and hashed), as a search does.
    keyed: dict[tuple[str | None, str], tuple[str, str]] = {
        (index_key(s, WIDE_KEY), index_key(v, WIDE_KEY)): (s, v) for s, v in pairs
    }
    if not keyed:
        return {}
    codes = sorted({code for _, code in keyed})
    rows: Iterable[Any]
    if conn.dialect.name == "postgresql":
        rows = pg_bulk.identifier_rows(conn, res_type, codes)
    else:
        rows = conn.execute(
            select(sp_token.c.system, sp_token.c.code, resources.c.res_id)
            .join(resources, resources.c.rid == sp_token.c.rid)
            .where(
                sp_token.c.param == "identifier",
                sp_token.c.code.in_(codes),
                sp_token.c.res_type == res_type,
                resources.c.res_type == res_type,
                resources.c.deleted.is_(False),
            )
        )
    found: dict[tuple[str, str], set[str]] = {}
    for system, code, res_id in rows:
        pair = keyed.get((system, code))
        if pair is not None:
            found.setdefault(pair, set()).add(res_id)
    return found
