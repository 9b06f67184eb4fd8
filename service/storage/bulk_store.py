"""Reads for ``$everything`` and Bulk Data export, and the rows of export jobs.

Export reads stream: :func:`stream_contents` runs one query per resource type over a
server-side cursor (PostgreSQL) or SQLite's incremental cursor, ``yield_per`` rows at a time, and
hands back the stored JSON text untouched, so memory stays flat whatever the table's size.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Connection,
    LargeBinary,
    Select,
    and_,
    cast,
    delete,
    false,
    func,
    or_,
    select,
    update,
)

from service.core.criteria import SearchQuery
from service.storage import search_sql
from service.storage.repository import StoredVersion
from service.storage.tables import export_jobs, resources

R = resources.c
#: Rows fetched from the database per round trip while streaming an export.
STREAM_BATCH = 5_000


@dataclass(frozen=True, slots=True)
class Selection:
    """Which current resources of one type an export or ``$everything`` reads.

    ``filters`` are searches of ``res_type`` (one per ``_typeFilter`` query), OR-ed;
    ``patients`` confines to patient compartments: a list of patient ids, the patients of the
    resources a search finds (e.g. a cohort's CarePlans), or ``"any"`` for every resource that
    lies in some patient's compartment.
    """

    res_type: str
    since: int | None = None
    filters: tuple[SearchQuery, ...] = ()
    patients: Literal["any"] | Sequence[str] | SearchQuery | None = None


def _patients_of(query: SearchQuery) -> Select[Any]:
    """The ids of the patients of the resources ``query`` finds (a subquery)."""
    where = search_sql.where_clause(query)
    return select(R.patient_id).where(where, R.patient_id.is_not(None))


def patients_of(conn: Connection, query: SearchQuery) -> list[str]:
    """The ids of the patients of the resources ``query`` finds, sorted."""
    return sorted(conn.execute(_patients_of(query).distinct()).scalars())


def _where(sel: Selection) -> ColumnElement[bool]:
    conds: list[ColumnElement[bool]] = [R.res_type == sel.res_type, R.deleted.is_(False)]
    if sel.since is not None:
        conds.append(R.last_updated > sel.since)
    if sel.filters:
        conds.append(or_(*(search_sql.where_clause(f) for f in sel.filters)))
    if isinstance(sel.patients, str) and sel.patients == "any":
        conds.append(R.patient_id.is_not(None))
    elif isinstance(sel.patients, SearchQuery):
        conds.append(R.patient_id.in_(_patients_of(sel.patients).correlate(None)))
    elif sel.patients is not None:
        conds.append(R.patient_id.in_(sel.patients) if sel.patients else false())
    return and_(*conds)


def stream_contents(conn: Connection, sel: Selection) -> Iterator[list[bytes]]:
    """The stored JSON of every matching resource, as UTF-8 bytes, in lists of up to
    :data:`STREAM_BATCH` over a server-side cursor (the rows are never all in memory). In no
    particular order: sorting a million rows would cost the database more than writing them.

    On PostgreSQL the rows come through psycopg's own named cursor in binary form, inside the
    caller's transaction: per row, SQLAlchemy's result processing and a decode into ``str``
    and back cost more than the rest of an export together.
    """
    where = _where(sel)
    if conn.dialect.name != "postgresql":
        stmt = select(cast(R.content, LargeBinary)).where(where)
        result = conn.execution_options(stream_results=True, yield_per=STREAM_BATCH).execute(stmt)
        for part in result.scalars().partitions():
            yield list(part)
        return
    compiled = (
        select(func.convert_to(R.content, "UTF8"))
        .where(where)
        .compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    )
    raw: Any = conn.connection.dbapi_connection
    with raw.cursor(name=f"export_{uuid.uuid4().hex}", binary=True) as cursor:
        cursor.itersize = STREAM_BATCH
        cursor.execute(str(compiled), compiled.params)
        while rows := cursor.fetchmany(STREAM_BATCH):
            yield [row[0] for row in rows]


def stream_deleted(conn: Connection, res_type: str, since: int) -> Iterator[tuple[str, int]]:
    """``(id, when)`` of the resources of ``res_type`` deleted after ``since``."""
    stmt = (
        select(R.res_id, R.last_updated)
        .where(R.res_type == res_type, R.deleted.is_(True), R.last_updated > since)
        .order_by(R.rid)
    )
    result = conn.execution_options(stream_results=True, yield_per=STREAM_BATCH).execute(stmt)
    for row in result:
        yield row.res_id, row.last_updated


def compartment_page(
    conn: Connection,
    patient_id: str,
    types: Sequence[str],
    *,
    since: int | None,
    start: int | None,
    end: int | None,
    dated: Sequence[str],
    after_rid: int | None,
    count: int,
) -> tuple[list[StoredVersion], int | None]:
    """One page of a patient's compartment (``$everything``) in row order, and the row id to
    continue after (None: the last page).

    ``start``/``end`` keep resources of the ``dated`` types whose primary date overlaps them
    (resources without one stay); ``since`` keeps those changed after it.
    """
    conds: list[ColumnElement[bool]] = [
        R.res_type.in_(types),
        R.patient_id == patient_id,
        R.deleted.is_(False),
    ]
    if since is not None:
        conds.append(R.last_updated > since)
    if start is not None:
        conds.append(or_(R.res_type.not_in(dated), R.date_high.is_(None), R.date_high >= start))
    if end is not None:
        conds.append(or_(R.res_type.not_in(dated), R.date_low.is_(None), R.date_low <= end))
    if after_rid is not None:
        conds.append(R.rid > after_rid)
    rows = conn.execute(
        select(R.rid, R.res_type, R.res_id, R.version_id, R.last_updated, R.content, R.patient_id)
        .where(and_(*conds))
        .order_by(R.rid)
        .limit(count + 1)
    ).all()
    page = [
        StoredVersion(
            r.rid,
            r.res_type,
            r.res_id,
            r.version_id,
            r.last_updated,
            False,
            r.content,
            r.patient_id,
        )
        for r in rows[:count]
    ]
    more = len(rows) > count
    return page, page[-1].rid if more and page else None


def last_change(conn: Connection, res_type: str) -> int | None:
    """When any resource of ``res_type`` last changed (deletions included)."""
    return conn.execute(
        select(func.max(R.last_updated)).where(R.res_type == res_type)
    ).scalar_one_or_none()


# -- export jobs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobRow:
    """One export job as stored."""

    job_id: str
    client_id: str | None
    request_url: str
    params: str
    status: str
    progress: str | None
    manifest: str | None
    error: str | None
    created_at: int
    transaction_time: int | None
    finished_at: int | None
    expires_at: int | None


_JOB_COLS = (
    export_jobs.c.job_id,
    export_jobs.c.client_id,
    export_jobs.c.request_url,
    export_jobs.c.params,
    export_jobs.c.status,
    export_jobs.c.progress,
    export_jobs.c.manifest,
    export_jobs.c.error,
    export_jobs.c.created_at,
    export_jobs.c.transaction_time,
    export_jobs.c.finished_at,
    export_jobs.c.expires_at,
)
J = export_jobs.c
ACTIVE = ("queued", "running")


def insert_job(
    conn: Connection, job_id: str, client_id: str | None, request_url: str, params: str, now: int
) -> None:
    """Queue a new job."""
    conn.execute(
        export_jobs.insert().values(
            job_id=job_id,
            client_id=client_id,
            request_url=request_url,
            params=params,
            status="queued",
            created_at=now,
        )
    )


def get_job(conn: Connection, job_id: str) -> JobRow | None:
    """A job by id."""
    row = conn.execute(select(*_JOB_COLS).where(J.job_id == job_id)).first()
    return JobRow(**row._asdict()) if row else None


def active_jobs_of(conn: Connection, client_id: str | None) -> int:
    """How many queued or running jobs the client has."""
    owner = J.client_id.is_(None) if client_id is None else J.client_id == client_id
    return int(
        conn.execute(
            select(func.count()).select_from(export_jobs).where(owner, J.status.in_(ACTIVE))
        ).scalar_one()
    )


def claimable(conn: Connection, now: int) -> list[str]:
    """Ids of jobs waiting for a worker: queued, or running under a lease that ran out."""
    rows = conn.execute(
        select(J.job_id)
        .where(or_(J.status == "queued", and_(J.status == "running", J.lease_until < now)))
        .order_by(J.created_at)
        .limit(10)
    )
    return list(rows.scalars())


def claim(conn: Connection, job_id: str, owner: str, now: int, until: int) -> bool:
    """Take the job (compare-and-set, so of two workers exactly one wins)."""
    result = conn.execute(
        update(export_jobs)
        .where(
            J.job_id == job_id,
            or_(J.status == "queued", and_(J.status == "running", J.lease_until < now)),
        )
        .values(status="running", lease_owner=owner, lease_until=until, progress="started")
    )
    return result.rowcount == 1


def renew(conn: Connection, job_id: str, owner: str, until: int, progress: str) -> bool:
    """Extend the lease and record progress; False when the job is no longer ours (cancelled,
    deleted, or taken over after the lease ran out)."""
    result = conn.execute(
        update(export_jobs)
        .where(J.job_id == job_id, J.lease_owner == owner, J.status == "running")
        .values(lease_until=until, progress=progress[:100])
    )
    return result.rowcount == 1


def finish(
    conn: Connection,
    job_id: str,
    owner: str,
    *,
    status: str,
    now: int,
    expires_at: int,
    transaction_time: int | None = None,
    manifest: str | None = None,
    error: str | None = None,
) -> bool:
    """Record the end of a job we hold; False when it was cancelled meanwhile."""
    result = conn.execute(
        update(export_jobs)
        .where(J.job_id == job_id, J.lease_owner == owner, J.status == "running")
        .values(
            status=status,
            finished_at=now,
            expires_at=expires_at,
            transaction_time=transaction_time,
            manifest=manifest,
            error=error,
            progress=None,
            lease_owner=None,
            lease_until=None,
        )
    )
    return result.rowcount == 1


def cancel(conn: Connection, job_id: str, now: int) -> None:
    """Mark a job cancelled (its worker stops; the sweep removes it and its files)."""
    conn.execute(
        update(export_jobs)
        .where(J.job_id == job_id)
        .values(status="cancelled", expires_at=now, lease_until=None)
    )


def delete_job(conn: Connection, job_id: str) -> None:
    """Remove a job row."""
    conn.execute(delete(export_jobs).where(J.job_id == job_id))


def expired(conn: Connection, now: int) -> list[str]:
    """Jobs to sweep: finished ones past their expiry, and cancelled ones."""
    rows = conn.execute(
        select(J.job_id).where(
            or_(
                and_(J.status.in_(("completed", "failed")), J.expires_at < now),
                J.status == "cancelled",
            )
        )
    )
    return list(rows.scalars())
