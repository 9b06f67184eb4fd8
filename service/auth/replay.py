"""The ``jti`` replay store for client assertions, in the database so it survives restarts.

SMART asymmetric auth: a ``jti`` must not have been "previously encountered for the given iss
within the maximum allowed authentication JWT lifetime". The primary key (issuer, jti) makes the
check-and-remember one atomic insert, also across workers. It runs in the token request's own
write transaction, so the jti and the token it buys commit together.

Other one-time ids share the store, each under its own ``issuer`` namespace: authorization
transactions (one consent decision each) and logged-out dashboard sessions.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from service.storage.db import fits_key
from service.storage.tables import oauth_jti

MAX_JTI_LENGTH = 255


def remember(conn: Connection, issuer: str, jti: str, expires_at: int, now: int) -> bool:
    """Record ``jti`` for ``issuer`` until ``expires_at``; False when it was seen before."""
    if not jti or not fits_key(jti, MAX_JTI_LENGTH) or not fits_key(issuer, 255):
        return False
    # Expired entries can go: their assertions fail the exp check anyway.
    conn.execute(delete(oauth_jti).where(oauth_jti.c.expires_at < now - 60))
    # ON CONFLICT DO NOTHING rather than catching IntegrityError: on PostgreSQL a failed
    # statement would abort the whole (shared) transaction.
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(oauth_jti)
        .values(issuer=issuer, jti=jti, expires_at=expires_at)
        .on_conflict_do_nothing()
        .returning(oauth_jti.c.jti)  # rowcount is not reliable here with psycopg
    )
    return conn.execute(statement).first() is not None


def is_remembered(conn: Connection, issuer: str, jti: str, now: int) -> bool:
    """Whether ``jti`` was recorded for ``issuer`` and has not expired yet."""
    row = conn.execute(
        select(oauth_jti.c.jti).where(
            oauth_jti.c.issuer == issuer, oauth_jti.c.jti == jti, oauth_jti.c.expires_at >= now
        )
    ).first()
    return row is not None
