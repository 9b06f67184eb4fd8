"""The server's signing key, and issuing and verifying access tokens (JWTs, ES256).

The key is generated at first start and kept in the database (``server_keys``), so every worker
and every restart signs and verifies with the same key; it is never in the repository. Tokens
are also recorded (``oauth_tokens``) so that they can be found and revoked, e.g. when an
authorization code is replayed.

Verifying a token reads nothing from the database: the signature and claims are checked once
per distinct token (then remembered until it expires) and revocations come from the in-memory
:class:`~service.auth.revocations.RevocationSet`, current to within a second.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from service.auth import revocations
from service.auth.revocations import RevocationSet
from service.storage import token_store
from service.storage.db import Connection, Database, DuplicateKey
from service.storage.token_store import TokenRecord

ALGORITHM = "ES256"
#: Verified tokens remembered per worker (a few KiB each); beyond it the memory starts afresh.
VERIFIED_CACHE_SIZE = 4096


class TokenError(Exception):
    """A bearer token that is missing, malformed, expired, revoked or not meant for us."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """An access token and what it was issued for."""

    access_token: str
    jti: str
    expires_in: int
    scope: str
    patient_id: str | None


def load_or_create_key(db: Database) -> ECKey:
    """The server signing key: the stored one, or a new one stored now (first start)."""
    with db.read() as conn:
        stored = token_store.oldest_key(conn)
    if stored is not None:
        return ECKey.import_key(stored)
    key = ECKey.generate_key("P-256", private=True)
    key.ensure_kid()
    try:
        with db.write() as conn:
            token_store.add_key(conn, key.as_dict(private=True), int(time.time()))
    except DuplicateKey:  # pragma: no cover - another worker won the race; use its key
        return load_or_create_key(db)
    return load_or_create_key(db)  # re-read: a concurrent first start may have stored one first


def public_jwks(key: ECKey) -> dict[str, Any]:
    """The public JWKS of the server key."""
    public = key.as_dict(private=False)
    public.update({"use": "sig", "alg": ALGORITHM})
    return {"keys": [public]}


class TokenService:
    """Issues and verifies access tokens with the server key."""

    def __init__(self, db: Database, key: ECKey, revoked: RevocationSet | None = None) -> None:
        self.db = db
        self.key = key
        self.revoked = revoked or RevocationSet(db)
        # (token, issuer, audience) → its verified claims: the signature check is the costly
        # part of verifying, and a client sends the same token for minutes.
        self._verified: dict[tuple[str, str, str], dict[str, Any]] = {}

    def issue(
        self,
        *,
        conn: Connection | None = None,
        issuer: str,
        audience: str,
        client_id: str,
        scope: str,
        lifetime: int,
        subject: str,
        patient_id: str | None = None,
        code_hash: str | None = None,
        consent_id: str | None = None,
    ) -> IssuedToken:
        """Sign a new access token and record it (for revocation and audit).

        ``consent_id`` names the patient's consent the token is issued under (its ``consent``
        claim; withdrawing the consent revokes the token). The record goes into ``conn``'s
        transaction when given, else into one of its own.
        """
        now = int(time.time())
        jti = secrets.token_urlsafe(24)
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": audience,
            "sub": subject,
            "client_id": client_id,
            "scope": scope,
            "iat": now,
            "exp": now + lifetime,
            "jti": jti,
        }
        if patient_id is not None:
            claims["patient"] = patient_id
        if consent_id is not None:
            claims["consent"] = consent_id
        header = {"alg": ALGORITHM, "kid": self.key.kid, "typ": "at+jwt"}
        token = jwt.encode(header, claims, self.key)
        record = TokenRecord(jti, client_id, scope, now + lifetime, patient_id, code_hash)
        if conn is not None:
            token_store.record(conn, record)
        else:
            with self.db.write() as own:
                token_store.record(own, record)
        return IssuedToken(token, jti, lifetime, scope, patient_id)

    def verify(self, token: str, *, issuer: str, audience: str) -> dict[str, Any]:
        """The claims of a valid, unexpired, unrevoked token for ``audience``; else TokenError.

        No database read unless the revocation set is stale (see :meth:`needs_sync`).
        """
        key = (token, issuer, audience)
        claims = self._verified.get(key)
        if claims is None:
            claims = self._check(token, issuer=issuer, audience=audience)
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.clear()
            self._verified[key] = claims
        elif claims["exp"] <= time.time():
            del self._verified[key]
            raise TokenError("the token has expired")
        if not self.revoked.current():
            self.revoked.sync()
        if self.revoked.refuses(claims):
            raise TokenError("the token has been revoked")
        return claims

    def needs_sync(self) -> bool:
        """True when :meth:`verify` would first read the revocation set from the database."""
        return not self.revoked.current()

    def _check(self, token: str, *, issuer: str, audience: str) -> dict[str, Any]:
        try:
            decoded = jwt.decode(token, self.key, algorithms=[ALGORITHM])
            if decoded.header.get("typ") != "at+jwt":
                raise TokenError("not an access token")
            jwt.JWTClaimsRegistry(
                leeway=0,
                iss={"essential": True, "value": issuer},
                aud={"essential": True, "value": audience},
                exp={"essential": True},
                jti={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise TokenError(str(exc) or type(exc).__name__) from exc
        claims: dict[str, Any] = decoded.claims
        if not isinstance(claims["exp"], int):
            raise TokenError("'exp' must be an integer")
        return claims

    def revoke_issued_from(self, code_hash: str) -> int:
        """Revoke every token issued from an authorization code; how many were revoked."""
        now = int(time.time())
        with self.db.write() as conn:
            live = token_store.revoke_issued_from(conn, code_hash, now)
            revocations.revoke_tokens(conn, live)
        self.revoked.sync()  # this worker refuses them at once; the others within a second
        return len(live)
