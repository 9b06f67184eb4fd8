"""Rows of patients' consents (``oauth_consents``) and of the refresh tokens of long-term ones
(``oauth_refresh_tokens``, by the hash of the token); service/auth/consent_records.py holds
the rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, or_, select, update

from service.storage.tables import oauth_consents, oauth_refresh_tokens

C = oauth_consents.c
RT = oauth_refresh_tokens.c


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """One consent as stored (times in Unix seconds; ``ends_at`` None: indefinitely)."""

    consent_id: str
    client_id: str
    patient_id: str
    subject: str
    scope: str
    long_term: bool
    granted_at: int
    ends_at: int | None
    last_exchange_at: int
    status: str
    ended_at: int | None = None
    code_hash: str | None = None

    def check_client(self, client: Any) -> bool:
        """Authlib: the refresh token is bound to the client it was issued to."""
        return bool(client.get_client_id() == self.client_id)

    def get_scope(self) -> str:
        """Authlib: the scope the patient granted (a refresh never widens it)."""
        return self.scope

    def live(self, now: int) -> bool:
        """Active and not past its end."""
        return self.status == "active" and (self.ends_at is None or self.ends_at > now)


@dataclass(frozen=True, slots=True)
class RefreshTokenRow:
    """A refresh token as stored (``status``: active, rotated or revoked)."""

    consent_id: str
    client_id: str
    status: str
    expires_at: int


def _record(row: Any) -> ConsentRecord:
    return ConsentRecord(
        row.consent_id,
        row.client_id,
        row.patient_id,
        row.subject,
        row.scope,
        bool(row.long_term),
        row.granted_at,
        row.ends_at,
        row.last_exchange_at,
        row.status,
        row.ended_at,
        row.code_hash,
    )


def add(conn: Connection, record: ConsentRecord) -> None:
    """Store a new consent."""
    values = {c.name: getattr(record, c.name) for c in C if hasattr(record, c.name)}
    conn.execute(insert(oauth_consents).values(**values))


def get(conn: Connection, consent_id: str) -> ConsentRecord | None:
    """A consent by id."""
    row = conn.execute(select(oauth_consents).where(C.consent_id == consent_id)).first()
    return _record(row) if row is not None else None


def live_for_patient(conn: Connection, patient_id: str, now: int) -> list[ConsentRecord]:
    """The patient's active consents not past their end, newest first."""
    rows = conn.execute(
        select(oauth_consents)
        .where(
            C.patient_id == patient_id,
            C.status == "active",
            or_(C.ends_at.is_(None), C.ends_at > now),
        )
        .order_by(C.granted_at.desc(), C.consent_id)
    )
    return [_record(r) for r in rows]


def active_granted_with(conn: Connection, code_hash: str) -> list[str]:
    """The ids of the active consents granted with the authorization code ``code_hash``."""
    return list(
        conn.execute(
            select(C.consent_id).where(C.code_hash == code_hash, C.status == "active")
        ).scalars()
    )


def long_term_unexchanged(conn: Connection, since: int) -> list[ConsentRecord]:
    """The active long-term consents whose last exchange was at or before ``since``."""
    rows = conn.execute(
        select(oauth_consents).where(
            C.status == "active", C.long_term.is_(True), C.last_exchange_at <= since
        )
    )
    return [_record(r) for r in rows]


def record_exchange(conn: Connection, consent_id: str, now: int) -> None:
    """Note a refresh-token exchange of the consent at ``now``."""
    conn.execute(
        update(oauth_consents).where(C.consent_id == consent_id).values(last_exchange_at=now)
    )


def end(conn: Connection, consent_id: str, status: str, now: int) -> bool:
    """Give an active consent the end ``status`` and revoke its refresh tokens; False when it
    had already ended (its refresh tokens are revoked all the same)."""
    ended = conn.execute(
        update(oauth_consents)
        .where(C.consent_id == consent_id, C.status == "active")
        .values(status=status, ended_at=now)
    ).rowcount
    conn.execute(
        update(oauth_refresh_tokens)
        .where(RT.consent_id == consent_id, RT.status != "revoked")
        .values(status="revoked")
    )
    return bool(ended)


def move_end(conn: Connection, consent_id: str, ends_at: int | None) -> None:
    """Set the consent's end; live refresh tokens that outlast a new end are cut back to it."""
    conn.execute(update(oauth_consents).where(C.consent_id == consent_id).values(ends_at=ends_at))
    if ends_at is not None:
        conn.execute(
            update(oauth_refresh_tokens)
            .where(RT.consent_id == consent_id, RT.status == "active", RT.expires_at > ends_at)
            .values(expires_at=ends_at)
        )


def add_refresh_token(
    conn: Connection, token_hash: str, consent: ConsentRecord, issued_at: int, expires_at: int
) -> None:
    """Store a new (active) refresh token of ``consent``."""
    conn.execute(
        insert(oauth_refresh_tokens).values(
            token_hash=token_hash,
            consent_id=consent.consent_id,
            client_id=consent.client_id,
            issued_at=issued_at,
            expires_at=expires_at,
            status="active",
        )
    )


def refresh_token(conn: Connection, token_hash: str) -> RefreshTokenRow | None:
    """A refresh token by its hash, whatever its state."""
    row = conn.execute(
        select(RT.consent_id, RT.client_id, RT.status, RT.expires_at).where(
            RT.token_hash == token_hash
        )
    ).first()
    return RefreshTokenRow(*row) if row is not None else None


def claim_refresh_token(conn: Connection, token_hash: str, now: int) -> bool:
    """Use up an active, unexpired refresh token (one conditional UPDATE: of two claims at once
    exactly one wins); False when it was not active or has expired."""
    return bool(
        conn.execute(
            update(oauth_refresh_tokens)
            .where(RT.token_hash == token_hash, RT.status == "active", RT.expires_at > now)
            .values(status="rotated")
        ).rowcount
    )
