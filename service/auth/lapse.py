"""Lapse: a long-term consent without a token exchange for half a year ends by itself (MedMij).

A sweep (every ``consent_sweep_interval_seconds`` in each server process; ending a consent
twice is harmless) ends such consents and writes one AuditEvent per consent in the same
transaction, in the patient's audit trail. Refresh tokens could not outlive the half year
anyway (each is valid half a year from its exchange); the sweep makes the end visible and
audited, and refuses the access tokens still live.
"""

from __future__ import annotations

from service.audit.events import AccessRecord, Actor
from service.audit.trail import AuditTrail
from service.auth import consent_records
from service.core.clock import Clock
from service.storage.consent_store import ConsentRecord
from service.storage.db import Database


def sweep(db: Database, trail: AuditTrail, clock: Clock) -> list[ConsentRecord]:
    """End the consents that lapsed by ``clock()``'s now, audited; the ones ended."""
    now = int(clock().timestamp())
    with db.write() as conn:
        ended = consent_records.lapse(conn, now)
        for record in ended:
            actor = Actor(client_id=record.client_id, user=None, token_id=None, address=None)
            what = (
                f"consent lapsed: no token exchange for six months ({record.client_id}, "
                f"{record.consent_id})"
            )
            trail.write_in(
                conn,
                actor,
                AccessRecord("consent", description=what, patient_ids=[record.patient_id]),
            )
    return ended
