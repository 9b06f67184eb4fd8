"""Registered OAuth clients: PGO apps (authorization code) and backend services (JWT keys).

Clients are registered by the CLI (``telemon clients …``). A PGO client is confidential: it gets
a secret, shown once and stored as a SHA-256 hash (the secret is 256 random bits, so a fast hash
is enough). A backend client authenticates with ``private_key_jwt`` against a JWKS (inline, or
fetched from a registered URL).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749 import ClientMixin
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from service.auth import revocations
from service.auth import scopes as sc
from service.storage import client_store
from service.storage.client_store import ClientRecord
from service.storage.db import Connection

#: Default scopes a PGO may ask for (its patient's data, and who looked at it).
PGO_SCOPES = (
    "launch/patient offline_access patient/Patient.rs patient/Observation.rs patient/Flag.rs "
    "patient/AuditEvent.rs"
)


class ClientError(ValueError):
    """A registration that cannot be accepted."""


@dataclass(slots=True)
class Client(ClientRecord, ClientMixin):
    """A registered client, as Authlib's ``ClientMixin`` wants it."""

    def get_client_id(self) -> str:
        """The client id."""
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        """None: a PGO must always send its redirect_uri (MedMij core.tknint.205)."""
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        """The requested scopes narrowed to the registered ones (all registered when omitted)."""
        if not scope:
            return self.scope
        return " ".join(sc.narrow(sc.split(scope), sc.split(self.scope)))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Exact string match against the registered URIs (RFC 9700 section 2.1)."""
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        """Constant-time comparison of the secret's hash."""
        if self.secret_hash is None:
            return False
        return hmac.compare_digest(hash_secret(client_secret), self.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        """PGOs use their secret; backends only ``private_key_jwt``."""
        if self.kind == "pgo":
            return method in ("client_secret_basic", "client_secret_post")
        return method == "private_key_jwt"

    def check_response_type(self, response_type: str) -> bool:
        """Only PGOs use the authorization endpoint, with ``code``."""
        return self.kind == "pgo" and response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        """PGO: authorization_code and refresh_token; backend: client_credentials."""
        if self.kind == "pgo":
            return grant_type in ("authorization_code", "refresh_token")
        return grant_type == "client_credentials"


def hash_secret(secret: str) -> str:
    """The stored form of a client secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_redirect_uri(uri: str) -> None:
    """https only, except http on loopback for native apps (RFC 9700 section 2.6)."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.fragment or not parts.hostname:
        raise ClientError(f"Redirect URI '{uri}' must be absolute and without a fragment")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1", "localhost"):
        return
    raise ClientError(f"Redirect URI '{uri}' must use https (http only on loopback)")


def save(conn: Connection, client: Client) -> None:
    """Insert or replace a client registration."""
    client_store.save(conn, client)


def get(conn: Connection, client_id: str, *, include_inactive: bool = False) -> Client | None:
    """A client by id (only an active one unless ``include_inactive``), or None."""
    return client_store.get(conn, client_id, Client, include_inactive=include_inactive)


def all_clients(conn: Connection) -> list[Client]:
    """Every registered client, by id."""
    return client_store.all_clients(conn, Client)


def remove(conn: Connection, client_id: str) -> bool:
    """Delete a registration and revoke its tokens; True when it existed."""
    if not client_store.remove(conn, client_id):
        return False
    revocations.revoke_client(conn, client_id)
    return True


def set_active(conn: Connection, client_id: str, active: bool) -> bool:
    """Enable or disable a client; True when it is registered.

    A disabled client gets no tokens, and the tokens it holds stop working on every worker
    within a second of the commit (the revocation set).
    """
    if not client_store.set_active(conn, client_id, active):
        return False
    if not active:
        revocations.revoke_client(conn, client_id)
    return True


def new_pgo(
    client_id: str, name: str, redirect_uris: Iterable[str], scope: str = PGO_SCOPES
) -> tuple[Client, str]:
    """A PGO registration and its (new) secret."""
    uris = list(dict.fromkeys(redirect_uris))
    if not client_id or not name or not uris:
        raise ClientError("A PGO needs a client id, a name and at least one redirect URI")
    for uri in uris:
        _check_redirect_uri(uri)
    _check_scopes(scope, "patient")
    secret = secrets.token_urlsafe(32)
    return Client(client_id, "pgo", name, scope, uris, hash_secret(secret)), secret


def new_backend(
    client_id: str,
    name: str,
    scope: str,
    *,
    jwks: dict[str, Any] | None = None,
    jwks_url: str | None = None,
) -> Client:
    """A backend-service registration with a JWKS or a JWKS URL (exactly one)."""
    if (jwks is None) == (jwks_url is None):
        raise ClientError("Give exactly one of a JWKS file or a JWKS URL")
    if jwks is not None:
        check_public_jwks(jwks)
    _check_scopes(scope, "system")
    return Client(client_id, "backend", name or client_id, scope, jwks=jwks, jwks_url=jwks_url)


def _check_scopes(scope: str, context: str) -> None:
    tokens = sc.split(scope)
    if not tokens:
        raise ClientError("At least one scope is needed")
    for token in tokens:
        if token in sc.CONTEXT_SCOPES and context == "patient":
            continue
        # Registrations are v2 only: a v1 '.read' would be accepted at the token endpoint,
        # but the registered form is what operators review, so it must be unambiguous.
        parsed = sc.parse_scope(token) if sc.is_v2_scope(token) else None
        if parsed is None or parsed.context != context:
            raise ClientError(
                f"Scope '{token}' is not a {context}/ SMART v2 scope "
                f"(e.g. '{context}/Observation.rs': a resource type or *, then an in-order "
                "subset of cruds)"
            )


#: JWK members that only a private (or symmetric) key has.
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
#: Key type → the one assertion algorithm it may serve and what else it needs (SMART asym).
_KEY_RULES = {"RSA": "RS384", "EC": "ES384"}
MIN_RSA_BITS = 2048


def check_public_jwks(jwks: Any) -> None:
    """Accept only a JWKS of public RS384 (RSA ≥ 2048 bits) or ES384 (EC P-384) signing keys.

    Every key must be usable for client assertions and carry a unique ``kid`` (SMART asymmetric
    client authentication selects the key by ``kid``); one unusable key rejects the whole set,
    so that what is registered is exactly what can sign.
    """
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ClientError("The JWKS has no keys (expected {\"keys\": [...]})")
    kids: set[str] = set()
    for index, key in enumerate(jwks["keys"]):
        if not isinstance(key, dict):
            raise ClientError(f"JWKS key {index} is not a JSON object")
        label = f"JWKS key {index} (kid '{key.get('kid')}')"
        if any(member in key for member in _PRIVATE_MEMBERS):
            raise ClientError(
                f"{label} contains private or symmetric key material; register public keys only"
            )
        kty = key.get("kty")
        if kty not in _KEY_RULES:
            raise ClientError(
                f"{label} has kty '{kty}': only RSA (RS384) and EC P-384 (ES384) keys are accepted"
            )
        alg = key.get("alg", _KEY_RULES[kty])
        if alg != _KEY_RULES[kty]:
            raise ClientError(f"{label} has alg '{alg}': an {kty} key must be {_KEY_RULES[kty]}")
        if kty == "EC" and key.get("crv") != "P-384":
            raise ClientError(f"{label} has crv '{key.get('crv')}': ES384 needs P-384")
        if key.get("use", "sig") != "sig":
            raise ClientError(f"{label} has use '{key.get('use')}': it must be a signing key")
        kid = key.get("kid")
        if not isinstance(kid, str) or not kid or kid in kids:
            raise ClientError(f"{label} needs a 'kid' that is unique within the JWKS")
        kids.add(kid)
        try:
            imported = KeySet.import_key_set({"keys": [key]}).keys[0]
        except (JoseError, ValueError, TypeError) as exc:
            raise ClientError(f"{label} is not a valid {kty} public key") from exc
        raw = imported.raw_value
        if isinstance(raw, RSAPublicKey) and raw.key_size < MIN_RSA_BITS:
            raise ClientError(f"{label} is an RSA key under {MIN_RSA_BITS} bits")
