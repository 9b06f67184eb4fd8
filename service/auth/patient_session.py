"""The patient's session on their consent overview (``/oauth/consents``), after DigiD login.

Nothing is stored server-side: the logged-in patient travels in a short-lived JWT signed with
the server key, in an HttpOnly, SameSite=Strict cookie scoped to ``/oauth/consents``. The forms
also carry a CSRF token whose hash is inside that JWT (and, before login, equals a cookie).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from joserfc import jwt
from joserfc.jwk import ECKey

from service.auth.compare import secrets_equal
from service.auth.consent import ConsentError, unseal

COOKIE = "telemon_consents"
CSRF_COOKIE = "telemon_consents_csrf"
LOGIN_COOKIE = "telemon_consents_oidc"  # the DigiD broker login in progress
PATH = "/oauth/consents"
SESSION_SECONDS = 900
_TYP = "telemon-consents+jwt"


@dataclass(frozen=True, slots=True)
class PatientSession:
    """A logged-in patient on the consent overview."""

    patient_id: str
    subject: str
    csrf_hash: str


def _hash(csrf: str) -> str:
    return hashlib.sha256(csrf.encode()).hexdigest()


def seal(key: ECKey, patient_id: str, subject: str, csrf: str) -> str:
    """The signed cookie value of a new session bound to the CSRF token ``csrf``."""
    now = int(time.time())
    claims = {
        "patient": patient_id,
        "sub": subject,
        "csrf": _hash(csrf),
        "iat": now,
        "exp": now + SESSION_SECONDS,
    }
    return jwt.encode({"alg": "ES256", "typ": _TYP}, claims, key)


def open_session(key: ECKey, sealed: str | None) -> PatientSession | None:
    """The session in the cookie, or None when there is none (or it expired, or is forged)."""
    if not sealed:
        return None
    try:
        claims = unseal(key, sealed, _TYP)
    except ValueError:
        return None
    return PatientSession(str(claims["patient"]), str(claims["sub"]), str(claims["csrf"]))


def check_csrf(session: PatientSession, form_csrf: str) -> None:
    """ConsentError unless the form's CSRF token is the session's."""
    if not form_csrf or not secrets_equal(_hash(form_csrf), session.csrf_hash):
        raise ConsentError("CSRF token mismatch")
