"""Rows of FHIR Subscriptions: their settings and secrets, delivery state and event outbox.

Who writes what (so that none waits on another's row lock for long):

- the FHIR API (a client creating, updating or deleting a Subscription) writes ``subscriptions``
  and creates or removes the other rows;
- an alert's transaction bumps ``subscriptions.event_count`` (UPDATE … RETURNING: the event
  numbers, in commit order, without gaps) and appends ``subscription_events``;
- delivery workers lock one ``subscription_delivery`` row at a time (``FOR UPDATE SKIP LOCKED``
  on PostgreSQL, held while the notification is sent; a lease on SQLite, whose write
  transactions must stay short), and delete the events they delivered.

Locks are always taken in the order delivery row → events, so a delete racing a delivery waits
instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from service.core.criteria import SearchQuery
from service.storage import search_sql
from service.storage.notifications import notify
from service.storage.tables import (
    resource_history,
    resources,
    subscription_delivery,
    subscription_events,
    subscriptions,
)

#: The PostgreSQL NOTIFY channel that wakes delivery workers.
CHANNEL = "telemon_subscriptions"

R = resources.c
S = subscriptions.c
D = subscription_delivery.c
E = subscription_events.c


@dataclass(frozen=True, slots=True)
class SubscriptionRow:
    """A Subscription's delivery settings and secrets."""

    subscription_id: str
    active: bool
    criteria: str
    endpoint: str
    content: str
    headers: list[tuple[str, str]]
    secret: str | None
    heartbeat_seconds: int
    timeout_seconds: float | None
    max_count: int | None
    end_at: int | None
    revision: int = 0
    event_count: int = 0


@dataclass(frozen=True, slots=True)
class Claim:
    """A subscription a worker has claimed: its settings and delivery state."""

    subscription: SubscriptionRow
    delivered_through: int
    status: str
    failures: int
    revision_seen: int


@dataclass(frozen=True, slots=True)
class Event:
    """One queued notification event: a resource version, numbered per subscription."""

    number: int
    res_type: str
    res_id: str
    version_id: int
    created_at: int


def _row(r: Any) -> SubscriptionRow:
    return SubscriptionRow(
        subscription_id=r.subscription_id,
        active=bool(r.active),
        criteria=r.criteria,
        endpoint=r.endpoint,
        content=r.content,
        headers=[(n, v) for n, v in orjson.loads(r.headers)],
        secret=r.secret,
        heartbeat_seconds=r.heartbeat_seconds,
        timeout_seconds=r.timeout_seconds,
        max_count=r.max_count,
        end_at=r.end_at,
        revision=r.revision,
        event_count=r.event_count,
    )


def get(conn: Connection, subscription_id: str) -> SubscriptionRow | None:
    """The settings of one Subscription, or None."""
    row = conn.execute(select(subscriptions).where(S.subscription_id == subscription_id)).first()
    return _row(row) if row else None


def save(conn: Connection, row: SubscriptionRow, *, now: int) -> None:
    """Store a client's new settings (the revision goes up; the event count is kept) and make
    sure the delivery state exists."""
    values = {
        "active": row.active,
        "criteria": row.criteria,
        "endpoint": row.endpoint,
        "content": row.content,
        "headers": orjson.dumps(row.headers).decode(),
        "secret": row.secret,
        "heartbeat_seconds": row.heartbeat_seconds,
        "timeout_seconds": row.timeout_seconds,
        "max_count": row.max_count,
        "end_at": row.end_at,
    }
    changed = conn.execute(
        update(subscriptions)
        .where(S.subscription_id == row.subscription_id)
        .values(revision=S.revision + 1, **values)
    ).rowcount
    if changed:
        return
    conn.execute(
        insert(subscriptions).values(
            subscription_id=row.subscription_id, revision=1, event_count=0, **values
        )
    )
    conn.execute(
        insert(subscription_delivery).values(
            subscription_id=row.subscription_id,
            delivered_through=0,
            status="active",
            failures=0,
            next_attempt_at=0,
            last_sent_at=now,
            revision_seen=0,
        )
    )


def remove(conn: Connection, subscription_id: str) -> None:
    """Forget a deleted Subscription and its undelivered events (delivery row first: see the
    module's lock order)."""
    conn.execute(delete(subscription_delivery).where(D.subscription_id == subscription_id))
    conn.execute(delete(subscription_events).where(E.subscription_id == subscription_id))
    conn.execute(delete(subscriptions).where(S.subscription_id == subscription_id))


def matchable(conn: Connection, now: int) -> list[tuple[str, str]]:
    """``(id, criteria)`` of every Subscription that takes new events now, ordered by id."""
    rows = conn.execute(
        select(S.subscription_id, S.criteria)
        .where(S.active.is_(True), or_(S.end_at.is_(None), S.end_at > now))
        .order_by(S.subscription_id)
    )
    return [(r.subscription_id, r.criteria) for r in rows]


def matching_ids(conn: Connection, query: SearchQuery) -> set[str]:
    """The ids of the current resources that match ``query`` (no paging)."""
    stmt = select(resources.c.res_id).where(search_sql.where_clause(query))
    return {r.res_id for r in conn.execute(stmt)}


def enqueue(
    conn: Connection,
    subscription_id: str,
    versions: Sequence[tuple[str, str, int]],
    now: int,
) -> list[int]:
    """Append events for ``(type, id, version)`` and return their numbers.

    The counter row stays locked until the transaction ends, so numbers follow commit order and
    a rolled-back transaction leaves no gap.
    """
    last = conn.execute(
        update(subscriptions)
        .where(S.subscription_id == subscription_id)
        .values(event_count=S.event_count + len(versions))
        .returning(S.event_count)
    ).scalar_one()
    first = last - len(versions) + 1
    conn.execute(
        insert(subscription_events),
        [
            {
                "subscription_id": subscription_id,
                "event_number": first + i,
                "res_type": t,
                "res_id": r,
                "version_id": v,
                "created_at": now,
            }
            for i, (t, r, v) in enumerate(versions)
        ],
    )
    return list(range(first, last + 1))


def notify_workers(conn: Connection) -> None:
    """PostgreSQL: wake the listening delivery workers when this transaction commits."""
    notify(conn, CHANNEL)


def _due(now: int) -> ColumnElement[bool]:
    """Has events (or a heartbeat) to send, and may try now (or its settings changed)."""
    pending = S.event_count > D.delivered_through
    heartbeat = and_(
        S.heartbeat_seconds > 0, D.last_sent_at + S.heartbeat_seconds * 1_000_000 <= now
    )
    return and_(
        S.active.is_(True),
        or_(pending, heartbeat),
        or_(D.next_attempt_at <= now, S.revision != D.revision_seen),
    )


def _claim_columns() -> list[Any]:
    return [
        *subscriptions.c,
        D.delivered_through,
        D.status,
        D.failures,
        D.revision_seen,
    ]


def _claim(r: Any) -> Claim:
    return Claim(
        subscription=_row(r),
        delivered_through=r.delivered_through,
        status=r.status,
        failures=r.failures,
        revision_seen=r.revision_seen,
    )


_JOIN = subscription_delivery.join(subscriptions, S.subscription_id == D.subscription_id)


def claim_locked(conn: Connection, now: int) -> Claim | None:
    """PostgreSQL: lock the most overdue subscription with work that no other worker holds;
    the lock lasts until the transaction ends (or its connection dies)."""
    stmt = (
        select(*_claim_columns())
        .select_from(_JOIN)
        .where(_due(now))
        .order_by(D.next_attempt_at)
        .limit(1)
        .with_for_update(skip_locked=True, of=subscription_delivery)
    )
    row = conn.execute(stmt).first()
    return _claim(row) if row else None


def _lease_free(now: int) -> ColumnElement[bool]:
    return or_(D.lease_until.is_(None), D.lease_until < now)


def any_leasable(conn: Connection, now: int) -> bool:
    """SQLite: whether :func:`claim_leased` would find work (a read, to spare idle workers a
    write transaction)."""
    stmt = select(D.subscription_id).select_from(_JOIN).where(_due(now), _lease_free(now))
    return conn.execute(stmt.limit(1)).first() is not None


def claim_leased(conn: Connection, now: int, owner: str, until: int) -> Claim | None:
    """SQLite: lease the most overdue subscription with work whose lease is free or expired
    (SQLite serialises write transactions, so the check and the lease are atomic)."""
    row = conn.execute(
        select(*_claim_columns())
        .select_from(_JOIN)
        .where(_due(now), _lease_free(now))
        .order_by(D.next_attempt_at)
        .limit(1)
    ).first()
    if row is None:
        return None
    conn.execute(
        update(subscription_delivery)
        .where(D.subscription_id == row.subscription_id)
        .values(lease_owner=owner, lease_until=until)
    )
    return _claim(row)


def pending_events(conn: Connection, subscription_id: str, after: int, limit: int) -> list[Event]:
    """The next ``limit`` undelivered events after number ``after``, in order."""
    rows = conn.execute(
        select(E.event_number, E.res_type, E.res_id, E.version_id, E.created_at)
        .where(E.subscription_id == subscription_id, E.event_number > after)
        .order_by(E.event_number)
        .limit(limit)
    )
    return [Event(r.event_number, r.res_type, r.res_id, r.version_id, r.created_at) for r in rows]


def version_contents(
    conn: Connection, keys: Iterable[tuple[str, str, int]]
) -> dict[tuple[str, str, int], str]:
    """The JSON of the given resource versions, current or superseded (deleted: absent)."""
    wanted: dict[tuple[str, str], set[int]] = {}
    for t, i, v in keys:
        wanted.setdefault((t, i), set()).add(v)
    out: dict[tuple[str, str, int], str] = {}
    older: dict[tuple[int, int], tuple[str, str, int]] = {}
    for res_type in sorted({t for t, _ in wanted}):
        ids = sorted(i for t, i in wanted if t == res_type)
        rows = conn.execute(
            select(R.rid, R.res_id, R.version_id, R.content).where(
                R.res_type == res_type, R.res_id.in_(ids)
            )
        )
        for r in rows:
            for version in wanted[(res_type, r.res_id)]:
                if version == r.version_id and r.content is not None:
                    out[(res_type, r.res_id, version)] = r.content
                elif version < r.version_id:
                    older[(r.rid, version)] = (res_type, r.res_id, version)
    if older:
        hist = resource_history.c
        rows = conn.execute(
            select(hist.rid, hist.version_id, hist.content).where(
                hist.rid.in_(sorted({rid for rid, _ in older})),
                hist.version_id.in_(sorted({v for _, v in older})),
            )
        )
        for r in rows:
            key = older.get((r.rid, r.version_id))
            if key is not None and r.content is not None:
                out[key] = r.content
    return out


def _lease_guard(owner: str | None) -> list[ColumnElement[bool]]:
    return [D.lease_owner == owner] if owner is not None else []


def record_success(
    conn: Connection,
    claim: Claim,
    delivered_through: int,
    now: int,
    *,
    owner: str | None = None,
) -> bool:
    """Mark events up to ``delivered_through`` delivered (and delete them); False when a
    leased claim was lost to another worker in the meantime."""
    sub_id = claim.subscription.subscription_id
    done = conn.execute(
        update(subscription_delivery)
        .where(D.subscription_id == sub_id, *_lease_guard(owner))
        .values(
            delivered_through=func.greatest(D.delivered_through, delivered_through)
            if conn.dialect.name == "postgresql"
            else func.max(D.delivered_through, delivered_through),
            status="active",
            failures=0,
            next_attempt_at=0,
            last_sent_at=now,
            last_error=None,
            revision_seen=claim.subscription.revision,
            lease_owner=None,
            lease_until=None,
        )
    ).rowcount
    if done:
        conn.execute(
            delete(subscription_events).where(
                E.subscription_id == sub_id, E.event_number <= delivered_through
            )
        )
    return bool(done)


def record_failure(
    conn: Connection,
    claim: Claim,
    *,
    failures: int,
    status: str,
    next_attempt_at: int,
    error: str,
    owner: str | None = None,
) -> bool:
    """Record a failed attempt (nothing is dropped); False when a leased claim was lost."""
    return bool(
        conn.execute(
            update(subscription_delivery)
            .where(D.subscription_id == claim.subscription.subscription_id, *_lease_guard(owner))
            .values(
                failures=failures,
                status=status,
                next_attempt_at=next_attempt_at,
                last_error=error,
                revision_seen=claim.subscription.revision,
                lease_owner=None,
                lease_until=None,
            )
        ).rowcount
    )


def release(conn: Connection, owner: str) -> None:
    """Give up every lease ``owner`` holds (a worker stopping cleanly)."""
    conn.execute(
        update(subscription_delivery)
        .where(D.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
    )


@dataclass(frozen=True, slots=True)
class DeliveryState:
    """What the worker knows about a Subscription's delivery, for its FHIR status."""

    active: bool
    status: str
    last_error: str | None
    current: bool  # the state belongs to the current settings (no client update since)


def delivery_state(conn: Connection, subscription_id: str) -> DeliveryState | None:
    """The delivery state of one Subscription, or None when it is gone."""
    row = conn.execute(
        select(S.active, S.revision, D.status, D.last_error, D.revision_seen)
        .select_from(_JOIN)
        .where(S.subscription_id == subscription_id)
    ).first()
    if row is None:
        return None
    return DeliveryState(
        bool(row.active), row.status, row.last_error, row.revision == row.revision_seen
    )


def backlog(conn: Connection) -> int:
    """How many events wait for delivery, over all Subscriptions."""
    return int(conn.execute(select(func.count()).select_from(subscription_events)).scalar_one())


def next_due(conn: Connection, now: int) -> int | None:
    """When the earliest future piece of work falls due (a retry, a heartbeat or an expired
    lease), in microseconds; None when there is none."""
    pending = S.event_count > D.delivered_through
    times = [
        select(func.min(D.next_attempt_at))
        .select_from(_JOIN)
        .where(S.active.is_(True), pending, D.next_attempt_at > now),
        select(func.min(D.last_sent_at + S.heartbeat_seconds * 1_000_000))
        .select_from(_JOIN)
        .where(S.active.is_(True), S.heartbeat_seconds > 0),
        select(func.min(D.lease_until)).select_from(_JOIN).where(
            S.active.is_(True), D.lease_until.is_not(None)
        ),
    ]
    found = [conn.execute(t).scalar_one_or_none() for t in times]
    return min((f for f in found if f is not None), default=None)
