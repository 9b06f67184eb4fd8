"""Rows of the server's signing keys (``server_keys``) and of issued access tokens
(``oauth_tokens``, kept so that they can be found and revoked)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, insert, select, update

from service.storage.tables import oauth_tokens, server_keys

T = oauth_tokens.c


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An issued access token as recorded (``expires_at`` in Unix seconds)."""

    jti: str
    client_id: str
    scope: str
    expires_at: int
    patient_id: str | None = None
    code_hash: str | None = None


def oldest_key(conn: Connection) -> dict[str, Any] | None:
    """The private JWK of the first key stored, or None before the first start."""
    row = conn.execute(select(server_keys).order_by(server_keys.c.created).limit(1)).first()
    return orjson.loads(row.private_jwk) if row is not None else None


def add_key(conn: Connection, private_jwk: dict[str, Any], created: int) -> None:
    """Store a signing key under its ``kid`` (a taken ``kid`` fails the write transaction
    with :class:`~service.storage.db.DuplicateKey`)."""
    conn.execute(
        insert(server_keys).values(
            kid=private_jwk["kid"], private_jwk=orjson.dumps(private_jwk).decode(), created=created
        )
    )


def record(conn: Connection, token: TokenRecord) -> None:
    """Record a token just issued (not revoked)."""
    conn.execute(
        insert(oauth_tokens).values(
            jti=token.jti,
            client_id=token.client_id,
            code_hash=token.code_hash,
            scope=token.scope,
            patient_id=token.patient_id,
            expires_at=token.expires_at,
            revoked=False,
        )
    )


def revoke_issued_from(conn: Connection, code_hash: str, now: int) -> dict[str, int]:
    """Mark every token issued from an authorization code revoked; the ``jti`` → ``exp`` of
    those that were still live (unrevoked and unexpired at ``now``)."""
    rows = conn.execute(
        select(T.jti, T.expires_at).where(
            T.code_hash == code_hash, T.revoked.is_(False), T.expires_at >= now
        )
    )
    live = {row.jti: row.expires_at for row in rows}
    conn.execute(
        update(oauth_tokens)
        .where(T.code_hash == code_hash, T.revoked.is_(False))
        .values(revoked=True)
    )
    return live


def mark_revoked(conn: Connection, jti: str) -> None:
    """Mark one token revoked."""
    conn.execute(update(oauth_tokens).where(T.jti == jti).values(revoked=True))
