"""The AuditEvents stored but not yet indexed (``audit_index_backlog``, migration 0011)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, select

from service.storage import pg_bulk
from service.storage.tables import audit_index_backlog, resources


@dataclass(frozen=True, slots=True)
class Unindexed:
    """A stored AuditEvent whose index rows are still to be written."""

    rid: int
    res_type: str
    content: str
    recorded: int  # the resource row's date_low: when it was recorded (µs)


_CLAIM = """
WITH claimed AS (
    DELETE FROM audit_index_backlog WHERE rid IN (
        SELECT rid FROM audit_index_backlog ORDER BY rid LIMIT %s FOR UPDATE{}
    ) RETURNING rid
)
SELECT r.rid, r.res_type, r.content, r.date_low
FROM claimed JOIN resources r ON r.rid = claimed.rid ORDER BY r.rid
"""
_CLAIM_SKIP = _CLAIM.format(" SKIP LOCKED")
_CLAIM = _CLAIM.format("")


def claim_index_backlog(
    conn: Connection, limit: int, *, skip_locked: bool = True
) -> list[Unindexed]:
    """Take up to ``limit`` events off the backlog, oldest first, in ``conn``'s transaction.

    The caller writes their index rows in the same transaction: both commit, or the events
    stay on the backlog. On PostgreSQL (one prepared statement), with ``skip_locked``, rows
    another transaction is indexing are skipped, so that every worker can drain the backlog at
    once; without it this waits for that transaction (and then finds those rows gone).
    """
    rows: Sequence[Any]
    if conn.dialect.name == "postgresql":
        rows = pg_bulk.prepared_rows(conn, _CLAIM_SKIP if skip_locked else _CLAIM, (limit,))
    else:  # one writer at a time: nothing to skip
        oldest = select(audit_index_backlog.c.rid).order_by(audit_index_backlog.c.rid)
        rids = conn.execute(
            delete(audit_index_backlog)
            .where(audit_index_backlog.c.rid.in_(oldest.limit(limit).scalar_subquery()))
            .returning(audit_index_backlog.c.rid)
        ).scalars()
        rows = conn.execute(
            select(resources.c.rid, resources.c.res_type, resources.c.content, resources.c.date_low)
            .where(resources.c.rid.in_(list(rids)))
            .order_by(resources.c.rid)
        ).all()
    return [Unindexed(rid, kind, content or "{}", when or 0) for rid, kind, content, when in rows]


def index_backlog_size(conn: Connection) -> int:
    """How many stored AuditEvents wait for their index rows."""
    count: int = conn.execute(select(func.count()).select_from(audit_index_backlog)).scalar_one()
    return count
