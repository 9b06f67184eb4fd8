"""Rows of revocations (``oauth_revocations``): appended under a lock held until commit, so
their sequence numbers commit in order and a reader needs only the rows after the last it saw
(service/auth/revocations.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select

from service.storage import repository as repo
from service.storage.notifications import notify
from service.storage.tables import oauth_revocations

#: The notification channel of committed revocations.
CHANNEL = "telemon_revocations"

V = oauth_revocations.c


@dataclass(frozen=True, slots=True)
class Revocation:
    """One revoked token, client or consent (``kind``), from ``revoked_at`` (Unix seconds) on,
    kept until ``expires_at``."""

    kind: str
    value: str
    revoked_at: int
    expires_at: int


def append(conn: Connection, rows: Sequence[Revocation]) -> None:
    """Append revocations in ``conn``'s transaction (forgetting the expired ones); listeners
    are notified when it commits."""
    if not rows:
        return
    # Held until commit: sequence numbers then commit in their order, so readers that have
    # seen number n have seen every number below it.
    repo.lock_key(conn, CHANNEL)
    now = int(time.time())
    conn.execute(delete(oauth_revocations).where(V.expires_at < now - 60))
    conn.execute(
        insert(oauth_revocations),
        [
            {
                "kind": r.kind,
                "value": r.value[:255],
                "revoked_at": r.revoked_at,
                "expires_at": r.expires_at,
            }
            for r in rows
        ],
    )
    notify(conn, CHANNEL)


def after(conn: Connection, seq: int) -> list[tuple[int, Revocation]]:
    """The revocations numbered after ``seq`` with their numbers, in order."""
    rows = conn.execute(
        select(V.seq, V.kind, V.value, V.revoked_at, V.expires_at)
        .where(V.seq > seq)
        .order_by(V.seq)
    )
    return [(r.seq, Revocation(r.kind, r.value, r.revoked_at, r.expires_at)) for r in rows]
