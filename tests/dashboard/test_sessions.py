"""Dashboard sessions: signed, typed, expiring, renewed while in use, ended by logout."""

from __future__ import annotations

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from service.auth import consent
from service.auth.identity import ClinicianUser
from service.dashboard import sessions
from service.dashboard.sessions import MAX_SESSION_SECONDS, SessionError
from service.storage.db import Database

KEY = ECKey.generate_key("P-256", private=True)
USER = ClinicianUser("prac-1", "Practitioner/prac-1", "dr. Eva Visser")
NOW = 1_800_000_000
LIFETIME = 1800


def test_a_session_round_trips_through_its_signed_cookie() -> None:
    session = sessions.start(USER, NOW, LIFETIME)
    assert session.expires_at == NOW + LIFETIME and session.user == USER
    opened = sessions.open_session(KEY, sessions.seal(KEY, session), NOW + 10)
    assert opened == session
    other = sessions.start(USER, NOW, LIFETIME)
    assert (other.sid, other.csrf) != (session.sid, session.csrf)  # fresh per login


@pytest.mark.parametrize(
    "sealed",
    [
        None,
        "",
        "garbage",
        # signed by another key
        sessions.seal(ECKey.generate_key("P-256", private=True), sessions.start(USER, NOW, 60)),
        # the server's key, but another kind of token (a consent transaction)
        consent.start(KEY, [("client_id", "x")], "csrf"),
        # the right type but a claim missing
        jwt.encode({"alg": "ES256", "typ": "telemon-dashboard+jwt"}, {"exp": NOW + 60}, KEY),
    ],
)
def test_anything_else_is_no_session(sealed: str | None) -> None:
    with pytest.raises(SessionError):
        sessions.open_session(KEY, sealed, NOW)


def test_expiry_and_the_absolute_limit() -> None:
    session = sessions.start(USER, NOW, LIFETIME)
    sealed = sessions.seal(KEY, session)
    with pytest.raises(SessionError):
        sessions.open_session(KEY, sealed, NOW + LIFETIME)
    forever = sessions.Session(
        *(USER.practitioner_id, USER.subject, USER.name), "s", "c", NOW, NOW + 10**9
    )
    with pytest.raises(SessionError):
        sessions.open_session(KEY, sessions.seal(KEY, forever), NOW + MAX_SESSION_SECONDS)


def test_renewal_after_half_the_lifetime_up_to_the_absolute_limit() -> None:
    session = sessions.start(USER, NOW, LIFETIME)
    assert sessions.renewed(session, NOW + LIFETIME // 2 - 1, LIFETIME) is None
    later = NOW + LIFETIME // 2 + 1
    renewed = sessions.renewed(session, later, LIFETIME)
    assert renewed is not None and renewed.expires_at == later + LIFETIME
    assert (renewed.sid, renewed.csrf) == (session.sid, session.csrf)
    near_end = NOW + MAX_SESSION_SECONDS - 100
    old = sessions.Session(
        *(USER.practitioner_id, USER.subject, USER.name), "s", "c", NOW, near_end
    )
    last = sessions.renewed(old, near_end - 10, LIFETIME)
    assert last is not None and last.expires_at == NOW + MAX_SESSION_SECONDS  # capped
    assert sessions.renewed(last, near_end, LIFETIME) is None  # at the limit: no further


def test_csrf_comparison() -> None:
    assert sessions.csrf_ok("abc", "abc")
    assert not sessions.csrf_ok("abc", "abd")
    assert not sessions.csrf_ok("abc", None) and not sessions.csrf_ok(None, None)
    assert not sessions.csrf_ok("", "")


def test_logout_is_remembered_until_the_session_could_have_expired(database_url: str) -> None:
    db = Database(database_url)
    try:
        session = sessions.start(USER, NOW, LIFETIME)
        with db.write() as conn:
            assert not sessions.is_ended(conn, session, NOW)
            sessions.end(conn, session, NOW)
        with db.read() as conn:
            assert sessions.is_ended(conn, session, NOW + 60)
            assert not sessions.is_ended(conn, sessions.start(USER, NOW, LIFETIME), NOW + 60)
            assert not sessions.is_ended(conn, session, NOW + MAX_SESSION_SECONDS + 1)
    finally:
        db.dispose()
