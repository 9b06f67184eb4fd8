"""Rows of authorization codes (``oauth_codes``): stored as hashes, with everything a code is
bound to, and claimed once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection, insert, select, update

from service.storage.tables import oauth_codes

AC = oauth_codes.c


@dataclass(frozen=True, slots=True)
class CodeRecord:
    """An authorization code as stored (``expires_at`` in Unix seconds; the patient's consent
    choice: ``long_term``, until ``consent_ends_at``, None: indefinitely)."""

    code_hash: str
    client_id: str
    redirect_uri: str
    scope: str
    patient_id: str
    subject: str
    code_challenge: str
    long_term: bool = False
    consent_ends_at: int | None = None
    expires_at: int = 0


R = TypeVar("R", bound=CodeRecord)


def add(conn: Connection, code: CodeRecord) -> None:
    """Store a new (unused) code."""
    conn.execute(
        insert(oauth_codes).values(
            code_hash=code.code_hash,
            client_id=code.client_id,
            redirect_uri=code.redirect_uri,
            scope=code.scope,
            patient_id=code.patient_id,
            subject=code.subject,
            code_challenge=code.code_challenge,
            expires_at=code.expires_at,
            used=False,
            long_term=code.long_term,
            consent_ends_at=code.consent_ends_at,
        )
    )


def claim(conn: Connection, code_hash: str, make: type[R]) -> tuple[R, bool] | None:
    """The code as a ``make`` (:class:`CodeRecord` or a subclass) and whether this call used it
    up (one conditional UPDATE: of two claims at once exactly one wins); None when unknown."""
    row = conn.execute(select(oauth_codes).where(AC.code_hash == code_hash)).first()
    if row is None:
        return None
    claimed = conn.execute(
        update(oauth_codes).where(AC.code_hash == code_hash, AC.used.is_(False)).values(used=True)
    ).rowcount
    code = make(
        code_hash,
        row.client_id,
        row.redirect_uri,
        row.scope,
        row.patient_id,
        row.subject,
        row.code_challenge,
        bool(row.long_term),
        row.consent_ends_at,
        row.expires_at,
    )
    return code, bool(claimed)
