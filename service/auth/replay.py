"""The ``jti`` replay store for client assertions, in the database so it survives restarts.

SMART asymmetric auth: a ``jti`` must not have been "previously encountered for the given iss
within the maximum allowed authentication JWT lifetime". The primary key (issuer, jti) makes the
check-and-remember one atomic insert, also across workers.
"""

from __future__ import annotations

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError

from service.storage.db import Database
from service.storage.tables import oauth_jti

MAX_JTI_LENGTH = 255


def remember(db: Database, issuer: str, jti: str, expires_at: int, now: int) -> bool:
    """Record ``jti`` for ``issuer`` until ``expires_at``; False when it was seen before."""
    if not jti or len(jti) > MAX_JTI_LENGTH or len(issuer) > 255:
        return False
    try:
        with db.write() as conn:
            # Expired entries can go: their assertions fail the exp check anyway.
            conn.execute(delete(oauth_jti).where(oauth_jti.c.expires_at < now - 60))
            conn.execute(insert(oauth_jti).values(issuer=issuer, jti=jti, expires_at=expires_at))
    except IntegrityError:
        return False
    return True
