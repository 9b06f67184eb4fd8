"""The ``jti`` replay store for client assertions, in the database so it survives restarts.

SMART asymmetric auth: a ``jti`` must not have been "previously encountered for the given iss
within the maximum allowed authentication JWT lifetime". The primary key (issuer, jti) makes the
check-and-remember one atomic insert, also across workers. It runs in the token request's own
write transaction, so the jti and the token it buys commit together.

Other one-time ids share the store, each under its own ``issuer`` namespace: authorization
transactions (one consent decision each) and logged-out dashboard sessions.
"""

from __future__ import annotations

from service.storage import replay_store
from service.storage.db import Connection, fits_key

MAX_JTI_LENGTH = 255


def remember(conn: Connection, issuer: str, jti: str, expires_at: int, now: int) -> bool:
    """Record ``jti`` for ``issuer`` until ``expires_at``; False when it was seen before (or
    cannot be a key)."""
    if not jti or not fits_key(jti, MAX_JTI_LENGTH) or not fits_key(issuer, 255):
        return False
    return replay_store.remember(conn, issuer, jti, expires_at, now)
