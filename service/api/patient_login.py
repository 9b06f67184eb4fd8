"""What the patient's login pages share, for an app's authorization (``/oauth/*``) and for the
consent overview (``/oauth/consents``): the authorization server's state, the login and consent
audit, and the size limit of their forms."""

from __future__ import annotations

from fastapi import Request

from service.api.deps import AuthState, get_state
from service.audit.events import AccessRecord, Actor
from service.auth.grants import PatientUser
from service.core.outcome import FhirError

MAX_FORM_BYTES = 64 * 1024


def auth_state(request: Request) -> AuthState:
    """The authorization server's state (404 in TELEMON_AUTH=open)."""
    auth = get_state(request).auth
    if auth is None:  # TELEMON_AUTH=open has no authorization server
        raise FhirError.not_found("Authorization is off (TELEMON_AUTH=open)")
    return auth


async def audit_login(
    auth: AuthState,
    request: Request,
    client_id: str | None,
    what: str,
    user: PatientUser | None,
    outcome: str = "0",
    interaction: str = "login",
) -> None:
    """A login or (``interaction="consent"``) consent AuditEvent, committed before the answer."""
    actor = Actor(
        client_id=client_id,
        user=user.subject if user else None,
        token_id=None,
        address=request.client.host if request.client else None,
    )
    record = AccessRecord(
        interaction,
        outcome=outcome,
        description=what,
        patient_ids=[user.patient_id] if user else [],
    )
    await auth.audit.write(actor, record)
