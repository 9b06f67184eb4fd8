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
from typing import Literal

from service.auth import revocations
from service.storage import consent_store
from service.storage.consent_store import ConsentRecord
from service.storage.db import Connection

#: Half a year: a refresh token's life from the exchange that issued it, and how long a
#: long-term consent survives without an exchange (MedMij).
REFRESH_SECONDS = 183 * 24 * 3600

EndStatus = Literal["withdrawn", "lapsed", "revoked"]


@dataclass(frozen=True, slots=True)
class Reused:
    """A used-up refresh token was presented: the family is revoked, the consent ended."""

    consent: ConsentRecord


def hash_token(token: str) -> str:
    """Refresh tokens are stored only as hashes (256 random bits: a fast hash suffices)."""
    return hashlib.sha256(token.encode()).hexdigest()


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
    consent_store.add(conn, record)
    return record


def issue_refresh_token(conn: Connection, consent: ConsentRecord, now: int) -> str:
    """A new refresh token of a long-term consent, valid half a year, never past its end."""
    token = secrets.token_urlsafe(32)
    expires = now + REFRESH_SECONDS
    if consent.ends_at is not None:
        expires = min(expires, consent.ends_at)
    consent_store.add_refresh_token(conn, hash_token(token), consent, now, expires)
    return token


def peek(conn: Connection, token: str) -> ConsentRecord | None:
    """The consent of a refresh token, whatever the token's state (None if unknown)."""
    row = consent_store.refresh_token(conn, hash_token(token))
    return consent_store.get(conn, row.consent_id) if row is not None else None


def rotate(
    conn: Connection, token: str, client_id: str, now: int
) -> ConsentRecord | Reused | None:
    """Use up ``token`` for ``client_id``: its live consent, :class:`Reused`, or None.

    The claim is one conditional UPDATE, so of two exchanges of the same token at once exactly
    one wins (PostgreSQL re-checks the condition after the winner commits; SQLite writes one at
    a time); the loser finds it used up, which is a reuse. A token of another client is
    refused without touching it (whoever holds it cannot burn the PGO's family).
    """
    digest = hash_token(token)
    row = consent_store.refresh_token(conn, digest)
    if row is None or row.client_id != client_id:
        return None
    claimed = consent_store.claim_refresh_token(conn, digest, now)
    consent = consent_store.get(conn, row.consent_id)
    if consent is None:
        return None
    if not claimed:
        now_row = consent_store.refresh_token(conn, digest)
        if now_row is not None and now_row.status == "rotated":
            end(conn, consent.consent_id, "revoked", now)
            return Reused(consent)
        return None  # expired, or revoked with its consent
    if not consent.live(now):
        return None
    consent_store.record_exchange(conn, consent.consent_id, now)
    return consent


def end(conn: Connection, consent_id: str, status: EndStatus, now: int) -> bool:
    """End an active consent: its refresh tokens die, and (through the revocation set) every
    access token issued under it. False when it had already ended."""
    ended = consent_store.end(conn, consent_id, status, now)
    if ended:  # (another worker's sweep may have ended it a moment ago)
        revocations.withdraw_consent(conn, consent_id)
    return ended


def end_granted_with(conn: Connection, code_hash: str, now: int) -> int:
    """End the consents granted with an authorization code (it was replayed); how many."""
    ids = consent_store.active_granted_with(conn, code_hash)
    return sum(end(conn, consent_id, "revoked", now) for consent_id in ids)


def lapse(conn: Connection, now: int) -> list[ConsentRecord]:
    """End every long-term consent without an exchange for half a year; the ones ended."""
    stale = consent_store.long_term_unexchanged(conn, now - REFRESH_SECONDS)
    return [r for r in stale if end(conn, r.consent_id, "lapsed", now)]


def withdraw(conn: Connection, patient_id: str, consent_id: str, now: int) -> ConsentRecord | None:
    """The patient withdraws one of their own live consents; the consent, or None when it is
    not theirs or no longer live."""
    record = consent_store.get(conn, consent_id)
    if record is None or record.patient_id != patient_id or not record.live(now):
        return None
    return record if end(conn, consent_id, "withdrawn", now) else None


def change_end(
    conn: Connection, patient_id: str, consent_id: str, ends_at: int | None, now: int
) -> ConsentRecord | None:
    """The patient moves the end of one of their live long-term consents (None: indefinitely);
    refresh tokens are cut back to a sooner end. The consent as it was, or None when it is not
    theirs, not live or not long-term."""
    record = consent_store.get(conn, consent_id)
    if record is None or record.patient_id != patient_id or not record.live(now):
        return None
    if not record.long_term:
        return None
    consent_store.move_end(conn, consent_id, ends_at)
    return record
