"""The state of an authorization in progress (login → consent), signed, and its CSRF binding.

Between the authorization request and the patient's decision nothing is stored server-side: the
validated request parameters (and, after login, the patient) travel in a short-lived JWT signed
with the server key. The forms also carry a CSRF token that must equal the ``telemon_csrf``
cookie and whose hash is inside that JWT, so a decision cannot be posted cross-site or replayed
into another browser.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from service.auth import scopes as sc

TX_SECONDS = 600
CSRF_COOKIE = "telemon_csrf"
_TYP = "telemon-authz+jwt"


class ConsentError(Exception):
    """A login or consent post that does not belong to a valid authorization in progress."""


@dataclass(frozen=True, slots=True)
class Pending:
    """An authorization in progress."""

    params: list[tuple[str, str]]
    csrf_hash: str
    patient_id: str | None = None
    subject: str | None = None


def new_csrf() -> str:
    """A fresh CSRF token (goes into a cookie and into the form)."""
    return secrets.token_urlsafe(24)


def _hash(csrf: str) -> str:
    return hashlib.sha256(csrf.encode()).hexdigest()


def seal(key: ECKey, pending: Pending) -> str:
    """The signed form of ``pending``."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "params": [list(p) for p in pending.params],
        "csrf": pending.csrf_hash,
        "iat": now,
        "exp": now + TX_SECONDS,
    }
    if pending.patient_id is not None:
        claims["patient"] = pending.patient_id
        claims["sub"] = pending.subject
    return jwt.encode({"alg": "ES256", "typ": _TYP}, claims, key)


def start(key: ECKey, params: list[tuple[str, str]], csrf: str) -> str:
    """The sealed state of a just-validated authorization request."""
    return seal(key, Pending(params, _hash(csrf)))


def open_pending(key: ECKey, sealed: str, form_csrf: str, cookie_csrf: str | None) -> Pending:
    """Verify signature, age and CSRF binding; ConsentError when anything is off."""
    if not cookie_csrf or not hmac.compare_digest(form_csrf, cookie_csrf):
        raise ConsentError("CSRF token mismatch")
    try:
        token = jwt.decode(sealed, key, algorithms=["ES256"])
        if token.header.get("typ") != _TYP:
            raise ConsentError("not an authorization state")
        jwt.JWTClaimsRegistry(leeway=0, exp={"essential": True}).validate(token.claims)
    except (JoseError, ValueError) as exc:
        raise ConsentError("The authorization has expired or is invalid") from exc
    claims = token.claims
    if not hmac.compare_digest(claims.get("csrf", ""), _hash(form_csrf)):
        raise ConsentError("CSRF token mismatch")
    params = [(str(k), str(v)) for k, v in claims.get("params", [])]
    return Pending(params, claims["csrf"], claims.get("patient"), claims.get("sub"))


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
        lines.append((f"{nl}: {perms_nl}", f"{en}: {perms_en}"))
    return lines
