"""Stored consents: what a patient granted a PGO, and the refresh tokens of long-term ones.

MedMij's long-term consent ("langdurige toestemming", Afsprakenstelsel 2.x): the patient grants
a PGO access this once (one access token, no refresh token) or long-term, until a date the
patient picks or indefinitely. A long-term consent holds one family of refresh tokens:

- opaque, stored as SHA-256 hashes, bound to the client and the consent;
- each exchange rotates it: the presented token is used up and a new one issued, valid
  :data:`REFRESH_SECONDS` from this exchange but never past the consent's end;
- a used-up token presented again revokes the whole family and ends the consent (RFC 9700
  section 4.14.2): one of the two holders is not the PGO;
- a long-term consent without an exchange for :data:`REFRESH_SECONDS` lapses (:func:`lapse`).

Ending a consent (withdrawn by the patient, lapsed, revoked) kills its refresh tokens and, through
the revocation set, every access token issued under it, on every worker within a second.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, insert, or_, select, update

from service.auth import revocations
from service.storage.tables import oauth_consents, oauth_refresh_tokens

#: Half a year: a refresh token's life from the exchange that issued it, and how long a
#: long-term consent survives without an exchange (MedMij).
REFRESH_SECONDS = 183 * 24 * 3600

EndStatus = Literal["withdrawn", "lapsed", "revoked"]


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
class Reused:
    """A used-up refresh token was presented: the family is revoked, the consent ended."""

    consent: ConsentRecord


def hash_token(token: str) -> str:
    """Refresh tokens are stored only as hashes (256 random bits: a fast hash suffices)."""
    return hashlib.sha256(token.encode()).hexdigest()


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


def create(
    conn: Connection,
    *,
    client_id: str,
    patient_id: str,
    subject: str,
    scope: str,
    long_term: bool,
    ends_at: int | None,
    now: int,
    code_hash: str | None = None,
) -> ConsentRecord:
    """Store a consent just turned into tokens (the exchange of the code ``code_hash``)."""
    record = ConsentRecord(
        secrets.token_urlsafe(18),
        client_id,
        patient_id,
        subject,
        scope,
        long_term,
        now,
        ends_at,
        now,
        "active",
        code_hash=code_hash,
    )
    values = {
        c.name: getattr(record, c.name) for c in oauth_consents.c if hasattr(record, c.name)
    }
    conn.execute(insert(oauth_consents).values(**values))
    return record


def get(conn: Connection, consent_id: str) -> ConsentRecord | None:
    """A consent by id."""
    row = conn.execute(
        select(oauth_consents).where(oauth_consents.c.consent_id == consent_id)
    ).first()
    return _record(row) if row is not None else None


def issue_refresh_token(conn: Connection, consent: ConsentRecord, now: int) -> str:
    """A new refresh token of a long-term consent, valid half a year, never past its end."""
    token = secrets.token_urlsafe(32)
    expires = now + REFRESH_SECONDS
    if consent.ends_at is not None:
        expires = min(expires, consent.ends_at)
    conn.execute(
        insert(oauth_refresh_tokens).values(
            token_hash=hash_token(token),
            consent_id=consent.consent_id,
            client_id=consent.client_id,
            issued_at=now,
            expires_at=expires,
            status="active",
        )
    )
    return token


def peek(conn: Connection, token: str) -> ConsentRecord | None:
    """The consent of a refresh token, whatever the token's state (None if unknown)."""
    rt = oauth_refresh_tokens.c
    row = conn.execute(select(rt.consent_id).where(rt.token_hash == hash_token(token))).first()
    return get(conn, row.consent_id) if row is not None else None


def rotate(
    conn: Connection, token: str, client_id: str, now: int
) -> ConsentRecord | Reused | None:
    """Use up ``token`` for ``client_id``: its live consent, :class:`Reused`, or None.

    The claim is one conditional UPDATE, so of two exchanges of the same token at once exactly
    one wins (PostgreSQL re-checks the condition after the winner commits; SQLite writes one at
    a time); the loser finds it used up, which is a reuse. A token of another client is
    refused without touching it (whoever holds it cannot burn the PGO's family).
    """
    rt = oauth_refresh_tokens.c
    digest = hash_token(token)
    row = conn.execute(
        select(rt.consent_id, rt.client_id).where(rt.token_hash == digest)
    ).first()
    if row is None or row.client_id != client_id:
        return None
    claimed = conn.execute(
        update(oauth_refresh_tokens)
        .where(rt.token_hash == digest, rt.status == "active", rt.expires_at > now)
        .values(status="rotated")
    ).rowcount
    consent = get(conn, row.consent_id)
    if consent is None:
        return None
    if not claimed:
        status = conn.execute(select(rt.status).where(rt.token_hash == digest)).scalar_one()
        if status == "rotated":
            end(conn, consent.consent_id, "revoked", now)
            return Reused(consent)
        return None  # expired, or revoked with its consent
    if not consent.live(now):
        return None
    conn.execute(
        update(oauth_consents)
        .where(oauth_consents.c.consent_id == consent.consent_id)
        .values(last_exchange_at=now)
    )
    return consent


def end(conn: Connection, consent_id: str, status: EndStatus, now: int) -> bool:
    """End an active consent: its refresh tokens die, and (through the revocation set) every
    access token issued under it. False when it had already ended."""
    c = oauth_consents.c
    ended = conn.execute(
        update(oauth_consents)
        .where(c.consent_id == consent_id, c.status == "active")
        .values(status=status, ended_at=now)
    ).rowcount
    rt = oauth_refresh_tokens.c
    conn.execute(
        update(oauth_refresh_tokens)
        .where(rt.consent_id == consent_id, rt.status != "revoked")
        .values(status="revoked")
    )
    if ended:  # (another worker's sweep may have ended it a moment ago)
        revocations.withdraw_consent(conn, consent_id)
    return bool(ended)


def end_granted_with(conn: Connection, code_hash: str, now: int) -> int:
    """End the consents granted with an authorization code (it was replayed); how many."""
    c = oauth_consents.c
    ids = conn.execute(
        select(c.consent_id).where(c.code_hash == code_hash, c.status == "active")
    ).scalars().all()
    return sum(end(conn, consent_id, "revoked", now) for consent_id in ids)


def for_patient(conn: Connection, patient_id: str, now: int) -> list[ConsentRecord]:
    """The patient's consents that still grant access, newest first."""
    c = oauth_consents.c
    rows = conn.execute(
        select(oauth_consents)
        .where(
            c.patient_id == patient_id,
            c.status == "active",
            or_(c.ends_at.is_(None), c.ends_at > now),
        )
        .order_by(c.granted_at.desc(), c.consent_id)
    )
    return [_record(r) for r in rows]


def lapse(conn: Connection, now: int) -> list[ConsentRecord]:
    """End every long-term consent without an exchange for half a year; the ones ended."""
    c = oauth_consents.c
    rows = conn.execute(
        select(oauth_consents).where(
            c.status == "active",
            c.long_term.is_(True),
            c.last_exchange_at <= now - REFRESH_SECONDS,
        )
    ).all()
    return [
        _record(r) for r in rows if end(conn, r.consent_id, "lapsed", now)
    ]


def withdraw(conn: Connection, patient_id: str, consent_id: str, now: int) -> ConsentRecord | None:
    """The patient withdraws one of their own live consents; the consent, or None when it is
    not theirs or no longer live."""
    record = get(conn, consent_id)
    if record is None or record.patient_id != patient_id or not record.live(now):
        return None
    return record if end(conn, consent_id, "withdrawn", now) else None


def change_end(
    conn: Connection, patient_id: str, consent_id: str, ends_at: int | None, now: int
) -> ConsentRecord | None:
    """The patient moves the end of one of their live long-term consents (None: indefinitely);
    refresh tokens are cut back to a sooner end. The consent as it was, or None when it is not
    theirs, not live or not long-term."""
    record = get(conn, consent_id)
    if record is None or record.patient_id != patient_id or not record.live(now):
        return None
    if not record.long_term:
        return None
    conn.execute(
        update(oauth_consents)
        .where(oauth_consents.c.consent_id == consent_id)
        .values(ends_at=ends_at)
    )
    if ends_at is not None:
        rt = oauth_refresh_tokens.c
        conn.execute(
            update(oauth_refresh_tokens)
            .where(rt.consent_id == consent_id, rt.status == "active", rt.expires_at > ends_at)
            .values(expires_at=ends_at)
        )
    return record
