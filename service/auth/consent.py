"""The state of an authorization in progress (login → consent), signed, and its CSRF binding.

Between the authorization request and the patient's decision nothing is stored server-side: the
validated request parameters (and, after login, the patient) travel in a short-lived JWT signed
with the server key. The forms also carry a CSRF token that must equal the ``telemon_csrf``
cookie and whose hash is inside that JWT, so a decision cannot be posted cross-site or replayed
into another browser. Each authorization transaction allows one decision (:func:`claim`).
With the OIDC identity provider, the login at the DigiD broker is carried
the same way, in the ``telemon_oidc`` cookie (:func:`seal_login`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from typing import Any
from zoneinfo import ZoneInfo

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from service.auth import replay
from service.auth import scopes as sc
from service.auth.compare import secrets_equal
from service.auth.grants import ONCE, ConsentTerm
from service.storage.db import Connection

TX_SECONDS = 600
CSRF_COOKIE = "telemon_csrf"
LOGIN_COOKIE = "telemon_oidc"
_TYP = "telemon-authz+jwt"
_LOGIN_TYP = "telemon-oidc+jwt"
_TX_ISSUER = "telemon:authorization-transaction"  # its own namespace in the jti store


class ConsentError(Exception):
    """A login or consent post that does not belong to a valid authorization in progress."""


@dataclass(frozen=True, slots=True)
class Pending:
    """An authorization in progress."""

    params: list[tuple[str, str]]
    csrf_hash: str
    tx_id: str
    patient_id: str | None = None
    subject: str | None = None


def new_csrf() -> str:
    """A fresh CSRF token (goes into a cookie and into the form)."""
    return secrets.token_urlsafe(24)


def _hash(csrf: str) -> str:
    return hashlib.sha256(csrf.encode()).hexdigest()


def claim(conn: Connection, tx_id: str) -> bool:
    """Use up the authorization transaction ``tx_id``; False when it was used before.

    The signed state alone cannot stop a decision from being posted twice (each post would
    mint a code), so the first decision is remembered in the jti replay store until the
    transaction would have expired anyway.
    """
    now = int(time.time())
    return replay.remember(conn, _TX_ISSUER, tx_id, now + TX_SECONDS, now)


def seal(key: ECKey, pending: Pending) -> str:
    """The signed form of ``pending``."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "params": [list(p) for p in pending.params],
        "csrf": pending.csrf_hash,
        "txn": pending.tx_id,
        "iat": now,
        "exp": now + TX_SECONDS,
    }
    if pending.patient_id is not None:
        claims["patient"] = pending.patient_id
        claims["sub"] = pending.subject
    return jwt.encode({"alg": "ES256", "typ": _TYP}, claims, key)


def new_tx_id() -> str:
    """A fresh authorization-transaction id."""
    return secrets.token_urlsafe(24)


def bind(params: list[tuple[str, str]], csrf: str, tx_id: str | None = None) -> Pending:
    """An authorization in progress bound to the CSRF token ``csrf``.

    ``tx_id`` names the authorization transaction (a new one when None); it stays the same
    from the authorization request to the decision.
    """
    return Pending(params, _hash(csrf), tx_id or new_tx_id())


def unseal(key: ECKey, sealed: str, typ: str) -> dict[str, Any]:
    """The claims of a value this server sealed (ES256) as ``typ``, not yet expired.

    ValueError when the signature, the type or the expiry is wrong. Shared by the
    authorization state, the DigiD login state and the dashboard session.
    """
    try:
        token = jwt.decode(sealed, key, algorithms=["ES256"])
        if token.header.get("typ") != typ:
            raise ValueError(f"not a {typ}")
        jwt.JWTClaimsRegistry(leeway=0, exp={"essential": True}).validate(token.claims)
    except JoseError as exc:
        raise ValueError(str(exc)) from exc
    claims: dict[str, Any] = token.claims
    return claims


def start(key: ECKey, params: list[tuple[str, str]], csrf: str) -> str:
    """The sealed state of a just-validated authorization request."""
    return seal(key, bind(params, csrf))


def open_pending(key: ECKey, sealed: str, form_csrf: str, cookie_csrf: str | None) -> Pending:
    """Verify signature, age and CSRF binding; ConsentError when anything is off."""
    if not secrets_equal(form_csrf, cookie_csrf):
        raise ConsentError("CSRF token mismatch")
    try:
        claims = unseal(key, sealed, _TYP)
    except ValueError as exc:
        raise ConsentError("The authorization has expired or is invalid") from exc
    if not secrets_equal(_hash(form_csrf), str(claims.get("csrf", ""))):
        raise ConsentError("CSRF token mismatch")
    params = [(str(k), str(v)) for k, v in claims.get("params", [])]
    return Pending(
        params, claims["csrf"], str(claims.get("txn", "")), claims.get("patient"), claims.get("sub")
    )


@dataclass(frozen=True, slots=True)
class PendingLogin:
    """What the callback needs: the authorization request and the login's secrets."""

    params: list[tuple[str, str]]
    state: str
    nonce: str
    code_verifier: str
    tx_id: str


def seal_login(key: ECKey, login: PendingLogin) -> str:
    """The signed cookie value that carries ``login`` from the redirect to the callback."""
    now = int(time.time())
    claims = {
        "params": [list(p) for p in login.params],
        "state": login.state,
        "nonce": login.nonce,
        "verifier": login.code_verifier,
        "txn": login.tx_id,
        "iat": now,
        "exp": now + TX_SECONDS,
    }
    return jwt.encode({"alg": "ES256", "typ": _LOGIN_TYP}, claims, key)


def open_login(key: ECKey, sealed: str | None, state: str) -> PendingLogin:
    """Verify the cookie (signature, age) and that ``state`` is the one sent to the broker."""
    if not sealed:
        raise ConsentError("No DigiD login in progress (cookie missing)")
    try:
        claims = unseal(key, sealed, _LOGIN_TYP)
    except ValueError as exc:
        raise ConsentError("The DigiD login has expired or is invalid") from exc
    if not secrets_equal(state, str(claims.get("state", ""))):
        raise ConsentError("The DigiD login does not match this browser (state mismatch)")
    return PendingLogin(
        [(str(k), str(v)) for k, v in claims.get("params", [])],
        claims["state"],
        claims["nonce"],
        claims["verifier"],
        claims["txn"],
    )


#: Readable names of resource types on the consent page (Dutch, English).
_TYPE_NAMES = {
    "Observation": ("uw metingen (zoals gewicht, bloeddruk, zuurstof)", "your measurements"),
    "Patient": ("uw persoonsgegevens (naam, geboortedatum)", "your personal details"),
    "Flag": ("signaleringen van uw zorgverlener", "alerts from your care team"),
    "AuditEvent": ("wie uw gegevens heeft ingezien", "who accessed your data"),
    "Device": ("uw meetapparaten", "your measuring devices"),
}
_PERMS = {
    "r": ("inzien", "view"),
    "s": ("zoeken", "search"),
    "c": ("toevoegen", "add"),
    "u": ("wijzigen", "change"),
    "d": ("verwijderen", "delete"),
}


def describe(scope: str) -> list[tuple[str, str]]:
    """One (Dutch, English) line per resource scope of ``scope``, for the consent page."""
    lines = []
    for token in sc.split(scope):
        parsed = sc.parse_scope(token)
        if parsed is None:
            continue
        nl, en = _TYPE_NAMES.get(parsed.res_type, (parsed.res_type, parsed.res_type))
        perms_nl = ", ".join(_PERMS[p][0] for p in "cruds" if p in parsed.permissions)
        perms_en = ", ".join(_PERMS[p][1] for p in "cruds" if p in parsed.permissions)
        only = " ".join(f"{k}={v}" for k, v in parsed.filters)
        if only:  # a granular scope
            perms_nl, perms_en = f"{perms_nl} (alleen {only})", f"{perms_en} (only {only})"
        lines.append((f"{nl}: {perms_nl}", f"{en}: {perms_en}"))
    return lines


def today(timezone: str) -> date:
    """Today's date where the patient lives (the earliest end date a consent can have)."""
    return datetime.now(ZoneInfo(timezone)).date()


def parse_term(term: str, until: str, timezone: str) -> ConsentTerm:
    """The consent page's duration: ``once``, ``indefinite`` or ``until`` a date (ending at
    the end of that day, local time); ConsentError for anything else or a date in the past."""
    if term == "once":
        return ONCE
    if term == "indefinite":
        return ConsentTerm(long_term=True)
    if term != "until":
        raise ConsentError("Kies hoe lang de toestemming geldt / Choose how long consent lasts")
    try:
        last = date.fromisoformat(until)
    except ValueError:
        raise ConsentError("Kies een einddatum / Pick an end date") from None
    if last < today(timezone):
        raise ConsentError("De einddatum ligt in het verleden / The end date has passed")
    end = datetime.combine(last + timedelta(days=1), day_time(), ZoneInfo(timezone))
    return ConsentTerm(long_term=True, ends_at=int(end.timestamp()))


def describe_term(term: ConsentTerm) -> str:
    """How long a consent lasts, for the audit trail."""
    if not term.long_term:
        return "this once"
    if term.ends_at is None:
        return "long-term, indefinitely"
    return f"long-term, until {datetime.fromtimestamp(term.ends_at, UTC).isoformat()}"
