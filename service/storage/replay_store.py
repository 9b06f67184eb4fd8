"""Rows of the one-time id store (``oauth_jti``): an id per namespace (``issuer``) until it
expires; the primary key (issuer, jti) makes remembering one atomic insert across workers."""

from __future__ import annotations

from sqlalchemy import Connection, delete, select

from service.storage.db import dialect_insert
from service.storage.tables import oauth_jti

J = oauth_jti.c


def remember(conn: Connection, issuer: str, jti: str, expires_at: int, now: int) -> bool:
    """Record ``jti`` for ``issuer`` until ``expires_at``; False when it was there already.

    Forgets the expired ids first (their assertions fail the exp check anyway).
    """
    conn.execute(delete(oauth_jti).where(J.expires_at < now - 60))
    # ON CONFLICT DO NOTHING rather than catching the duplicate key: on PostgreSQL a failed
    # statement would abort the whole (shared) transaction.
    statement = (
        dialect_insert(conn, oauth_jti)
        .values(issuer=issuer, jti=jti, expires_at=expires_at)
        .on_conflict_do_nothing()
        .returning(J.jti)  # rowcount is not reliable here with psycopg
    )
    return conn.execute(statement).first() is not None


def is_remembered(conn: Connection, issuer: str, jti: str, now: int) -> bool:
    """Whether ``jti`` was recorded for ``issuer`` and has not expired yet."""
    row = conn.execute(
        select(J.jti).where(J.issuer == issuer, J.jti == jti, J.expires_at >= now)
    ).first()
    return row is not None
