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
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from authlib.oauth2.rfc6749 import ClientMixin
from sqlalchemy import Connection, delete, insert, select

from service.auth import scopes as sc
from service.storage.tables import oauth_clients

ClientKind = Literal["pgo", "backend"]
#: Default scopes a PGO may ask for (its patient's data, and who looked at it).
PGO_SCOPES = (
    "launch/patient patient/Patient.rs patient/Observation.rs patient/Flag.rs patient/AuditEvent.rs"
)


class ClientError(ValueError):
    """A registration that cannot be accepted."""


@dataclass(slots=True)
class Client(ClientMixin):
    """A registered client, as Authlib's ``ClientMixin`` wants it."""

    client_id: str
    kind: ClientKind
    name: str
    scope: str
    redirect_uris: list[str] = field(default_factory=list)
    secret_hash: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    active: bool = True

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
        """Exact string match against the registered URIs (RFC 9700 §2.1)."""
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
        """PGO: authorization_code; backend: client_credentials."""
        if self.kind == "pgo":
            return grant_type == "authorization_code"
        return grant_type == "client_credentials"


def hash_secret(secret: str) -> str:
    """The stored form of a client secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_redirect_uri(uri: str) -> None:
    """https only, except http on loopback for native apps (RFC 9700 §2.6)."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.fragment or not parts.hostname:
        raise ClientError(f"Redirect URI '{uri}' must be absolute and without a fragment")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1", "localhost"):
        return
    raise ClientError(f"Redirect URI '{uri}' must use https (http only on loopback)")


def _row(client: Client) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "kind": client.kind,
        "name": client.name,
        "secret_hash": client.secret_hash,
        "redirect_uris": orjson.dumps(client.redirect_uris).decode(),
        "scope": client.scope,
        "jwks": orjson.dumps(client.jwks).decode() if client.jwks is not None else None,
        "jwks_url": client.jwks_url,
        "active": client.active,
        "created": int(time.time()),
    }


def _from_row(row: Any) -> Client:
    return Client(
        client_id=row.client_id,
        kind=row.kind,
        name=row.name,
        scope=row.scope,
        redirect_uris=orjson.loads(row.redirect_uris),
        secret_hash=row.secret_hash,
        jwks=orjson.loads(row.jwks) if row.jwks else None,
        jwks_url=row.jwks_url,
        active=bool(row.active),
    )


def save(conn: Connection, client: Client) -> None:
    """Insert or replace a client registration."""
    conn.execute(delete(oauth_clients).where(oauth_clients.c.client_id == client.client_id))
    conn.execute(insert(oauth_clients).values(**_row(client)))


def get(conn: Connection, client_id: str) -> Client | None:
    """An active client by id, or None."""
    row = conn.execute(
        select(oauth_clients).where(
            oauth_clients.c.client_id == client_id, oauth_clients.c.active.is_(True)
        )
    ).first()
    return _from_row(row) if row else None


def all_clients(conn: Connection) -> list[Client]:
    """Every registered client, by id."""
    rows = conn.execute(select(oauth_clients).order_by(oauth_clients.c.client_id))
    return [_from_row(r) for r in rows]


def remove(conn: Connection, client_id: str) -> bool:
    """Delete a registration; True when it existed."""
    result = conn.execute(delete(oauth_clients).where(oauth_clients.c.client_id == client_id))
    return bool(result.rowcount)


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
    if jwks is not None and not (isinstance(jwks.get("keys"), list) and jwks["keys"]):
        raise ClientError("The JWKS has no keys")
    if jwks is not None and any("d" in k for k in jwks["keys"] if isinstance(k, dict)):
        raise ClientError("The JWKS contains a private key; register the public keys only")
    _check_scopes(scope, "system")
    return Client(client_id, "backend", name or client_id, scope, jwks=jwks, jwks_url=jwks_url)


def _check_scopes(scope: str, context: str) -> None:
    tokens = sc.split(scope)
    if not tokens:
        raise ClientError("At least one scope is needed")
    for token in tokens:
        parsed = sc.parse_scope(token)
        if token in sc.CONTEXT_SCOPES and context == "patient":
            continue
        if parsed is None or parsed.context != context:
            raise ClientError(f"Scope '{token}' is not a {context}/ SMART v2 scope")
