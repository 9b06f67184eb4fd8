"""Dashboard sessions: a signed cookie, its CSRF token, renewal and logout.

Nothing about a session is stored server-side while it lives: the clinician, the session id,
the CSRF token and the expiry travel in a JWT signed with the server key (ES256), in an
HttpOnly, SameSite=Strict cookie on ``/dashboard``. A session lasts
``TELEMON_DASHBOARD_SESSION_MINUTES`` after the last page view (it is renewed while in use) and
never longer than :data:`MAX_SESSION_SECONDS` after the login. Logging out remembers the session
id in the replay store until the session would have expired, so a copied cookie stops working
too.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

from service.auth import replay
from service.auth.compare import secrets_equal
from service.auth.consent import unseal
from service.auth.identity import ClinicianUser
from service.storage import replay_store
from service.storage.db import Connection

COOKIE = "telemon_dashboard"
LOGIN_COOKIE = "telemon_dashboard_login"  # the login form's CSRF token, before a session exists
OIDC_COOKIE = "telemon_dashboard_oidc"  # a login in progress at the identity broker
PATH = "/dashboard"
MAX_SESSION_SECONDS = 12 * 3600
LOGIN_FORM_SECONDS = 600
_TYP = "telemon-dashboard+jwt"
_LOGGED_OUT = "telemon:dashboard-logout"  # the replay store's namespace for ended sessions


class SessionError(Exception):
    """No valid session: missing, tampered with, expired or logged out."""


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in clinician's dashboard session."""

    practitioner_id: str
    subject: str  # "Practitioner/<id>"
    name: str
    sid: str
    csrf: str
    logged_in_at: int
    expires_at: int

    @property
    def user(self) -> ClinicianUser:
        """The clinician this session belongs to."""
        return ClinicianUser(self.practitioner_id, self.subject, self.name)


def new_token() -> str:
    """A fresh random token (session id, CSRF token)."""
    return secrets.token_urlsafe(24)


def start(user: ClinicianUser, now: int, lifetime: int) -> Session:
    """A new session for ``user`` (new id and CSRF token: no session fixation)."""
    return Session(
        user.practitioner_id,
        user.subject,
        user.name,
        new_token(),
        new_token(),
        now,
        now + lifetime,
    )


def seal(key: ECKey, session: Session) -> str:
    """The cookie value: the session as a signed JWT."""
    claims: dict[str, Any] = {
        "sub": session.subject,
        "pid": session.practitioner_id,
        "name": session.name,
        "sid": session.sid,
        "csrf": session.csrf,
        "auth_time": session.logged_in_at,
        "exp": session.expires_at,
    }
    return jwt.encode({"alg": "ES256", "typ": _TYP}, claims, key)


def open_session(key: ECKey, sealed: str | None, now: int) -> Session:
    """Verify signature, type and expiry of a session cookie (not yet: logged out)."""
    if not sealed:
        raise SessionError("not logged in")
    try:
        claims = unseal(key, sealed, _TYP)
    except ValueError as exc:
        raise SessionError("invalid or expired session") from exc
    try:
        session = Session(
            str(claims["pid"]),
            str(claims["sub"]),
            str(claims["name"]),
            str(claims["sid"]),
            str(claims["csrf"]),
            int(claims["auth_time"]),
            int(claims["exp"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SessionError("invalid session") from exc
    if session.expires_at <= now or session.logged_in_at + MAX_SESSION_SECONDS <= now:
        raise SessionError("session expired")
    return session


def renewed(session: Session, now: int, lifetime: int) -> Session | None:
    """The session with a later expiry once half its lifetime has passed (else None)."""
    if session.expires_at - now > lifetime // 2:
        return None
    expires = min(now + lifetime, session.logged_in_at + MAX_SESSION_SECONDS)
    return replace(session, expires_at=expires) if expires > session.expires_at else None


def csrf_ok(expected: str | None, given: str | None) -> bool:
    """Whether a form's CSRF token equals the expected one (constant time)."""
    return secrets_equal(given, expected)


def end(conn: Connection, session: Session, now: int) -> None:
    """Log the session out: its id is refused until it would have expired anyway."""
    replay.remember(conn, _LOGGED_OUT, session.sid, session.logged_in_at + MAX_SESSION_SECONDS, now)


def is_ended(conn: Connection, session: Session, now: int) -> bool:
    """Whether the session was logged out."""
    return replay_store.is_remembered(conn, _LOGGED_OUT, session.sid, now)
