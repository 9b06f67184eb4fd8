"""Token revocation (RFC 7009) and introspection (RFC 7662) on Authlib's endpoints.

- ``/oauth/revoke``: a client revokes an access or refresh token it holds (PGO: its secret;
  backend: ``private_key_jwt``). An access token joins the revocation set (refused on every
  worker within a second); a refresh token ends its consent: the whole family and the access
  tokens issued under it (RFC 7009 section 2.1). Unknown, expired or already revoked tokens are
  answered 200 as well; another client's token is refused.
- ``/oauth/introspect``: registered backend clients ask whether a token is active and what it
  grants; anything not active (unknown, expired, revoked, withdrawn) is ``{"active": false}``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError, UnauthorizedClientError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from service.auth import consent_records, revocations
from service.auth.clients import Client
from service.auth.tokens import TokenError
from service.storage import consent_store, token_store
from service.storage.consent_store import ConsentRecord
from service.storage.db import Connection

if TYPE_CHECKING:
    from service.auth.server import AuthServer, FormRequest

#: Client authentication at both endpoints: PGOs with their secret, backends with a JWT.
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]


@dataclass(slots=True)
class FoundToken:
    """A token this server issued, as revocation and introspection see it."""

    kind: Literal["access_token", "refresh_token"]
    client_id: str
    active: bool
    claims: dict[str, Any] = field(default_factory=dict)  # an access token's
    consent: ConsentRecord | None = None  # a refresh token's
    expires_at: int | None = None

    def check_client(self, client: Client) -> bool:
        """Only the client a token was issued to may revoke it."""
        return client.client_id == self.client_id

    def is_expired(self) -> bool:
        """Authlib: expired (or otherwise no longer active)."""
        return not self.active

    def is_revoked(self) -> bool:
        """Authlib: covered by :meth:`is_expired`."""
        return False

    @property
    def patient_id(self) -> str | None:
        """The patient the token concerns, if any."""
        if self.consent is not None:
            return self.consent.patient_id
        patient = self.claims.get("patient")
        return patient if isinstance(patient, str) else None


def check_params(request: Any) -> None:
    """A ``token`` is required; ``token_type_hint`` is only a hint, and an unknown one is
    ignored (RFC 7009 section 2.1, RFC 7662 section 2.1): both kinds are always looked for."""
    if not request.form.get("token"):
        raise InvalidRequestError("Missing 'token'")


def find(server: AuthServer, request: FormRequest) -> FoundToken | None:
    """The request's ``token`` (an access token JWT or an opaque refresh token), or None."""
    token = request.form["token"]
    return _access(server, request, token) or _refresh(server, token)


def _access(server: AuthServer, request: FormRequest, token: str) -> FoundToken | None:
    if token.count(".") != 2:
        return None
    issuer = request.token_url.removesuffix("/oauth/token")
    server.tokens.revoked.sync()  # exact, not just current within a second
    try:
        claims = server.tokens.verify(token, issuer=issuer, audience=request.audience)
    except TokenError:
        return None  # not ours, expired or revoked: nothing left to revoke, not active
    return FoundToken("access_token", str(claims.get("client_id")), True, claims=claims)


def _refresh(server: AuthServer, token: str) -> FoundToken | None:
    now = int(time.time())
    with server.db.read() as conn:
        row = consent_store.refresh_token(conn, consent_records.hash_token(token))
        consent = consent_store.get(conn, row.consent_id) if row is not None else None
    if row is None or consent is None:
        return None
    active = row.status == "active" and row.expires_at > now and consent.live(now)
    return FoundToken(
        "refresh_token", row.client_id, active, consent=consent, expires_at=row.expires_at
    )


def revoke(conn: Connection, found: FoundToken) -> None:
    """Revoke ``found`` in ``conn``'s transaction (see the module text)."""
    if found.kind == "refresh_token":
        assert found.consent is not None
        consent_records.end(conn, found.consent.consent_id, "revoked", int(time.time()))
        return
    jti, exp = str(found.claims["jti"]), int(found.claims["exp"])
    token_store.mark_revoked(conn, jti)
    revocations.revoke_tokens(conn, {jti: exp})


class TokenRevocation(RevocationEndpoint):
    """RFC 7009 for the tokens this server issues."""

    CLIENT_AUTH_METHODS = AUTH_METHODS
    server: AuthServer

    def authenticate_token(self, request: Any, client: Any) -> FoundToken | None:
        """The token, when it is the requesting client's (else ``invalid_grant``)."""
        check_params(request)
        found = find(self.server, request)
        if found is not None:
            request.concerns = found.patient_id
            if not found.check_client(client):
                raise InvalidGrantError("The token was not issued to this client")
        return found

    def revoke_token(self, token: FoundToken, request: Any) -> None:
        """Revoke it; this worker refuses it at once, the others within a second."""
        if token.active:
            with self.server.db.write() as conn:
                revoke(conn, token)
            self.server.tokens.revoked.sync()


class TokenIntrospection(IntrospectionEndpoint):
    """RFC 7662 for registered backend clients."""

    CLIENT_AUTH_METHODS = AUTH_METHODS
    server: AuthServer

    def authenticate_token(self, request: Any, client: Any) -> FoundToken | None:
        """The token, if a backend client asks."""
        check_params(request)
        if not self.check_permission(None, client, request):
            raise UnauthorizedClientError("Introspection is for registered backend services")
        return find(self.server, request)

    def check_permission(self, token: Any, client: Any, request: Any) -> bool:
        """Backend services only."""
        return isinstance(client, Client) and client.kind == "backend"

    def introspect_token(self, token: FoundToken) -> dict[str, Any]:
        """What an active token grants (RFC 7662 section 2.2, plus SMART's ``patient``)."""
        body: dict[str, Any]
        if token.kind == "access_token":
            claims = token.claims
            body = {
                key: claims[key]
                for key in ("scope", "client_id", "sub", "exp", "iat", "iss", "aud", "jti")
                if key in claims
            }
            body["token_type"] = "Bearer"
        else:
            assert token.consent is not None
            body = {
                "scope": token.consent.scope,
                "client_id": token.client_id,
                "sub": token.consent.subject,
                "exp": token.expires_at,
                "token_type": "refresh_token",
            }
        if token.patient_id is not None:
            body["patient"] = token.patient_id
        body["active"] = True
        return body
