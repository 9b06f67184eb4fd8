"""Authlib grant classes, closing the gaps Authlib leaves open (docs/security.md).

- PKCE: only ``S256``, and mandatory (Authlib accepts ``plain`` and defaults to it).
- Authorization codes: single use, ≤ 60 s, bound to client, redirect_uri and challenge; a second
  redemption revokes every token issued from the code (OAuth 2.1 "Reuse of Authorization Codes").
- Client assertions (``private_key_jwt``): RS384/ES384 only, ``exp`` at most 5 minutes ahead,
  ``jti`` remembered in the database, ``jku`` only if it is the registered JWKS URL, exactly one
  matching key.
- Refresh tokens only for a patient's long-term consent, rotated on every use; a reused one
  revokes its family (service/auth/consent_records.py, RFC 9700 section 4.14).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    grants,
)
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from service.auth import consent_records, replay
from service.auth import scopes as sc
from service.auth.clients import Client
from service.auth.jwks import JwksError
from service.storage import code_store
from service.storage.code_store import CodeRecord
from service.storage.consent_store import ConsentRecord

if TYPE_CHECKING:
    from service.auth.server import AuthServer, FormRequest

ASSERTION_ALGORITHMS = {"RS384": "RSA", "ES384": "EC"}


def hash_code(code: str) -> str:
    """Codes are stored only as hashes."""
    return hashlib.sha256(code.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PatientUser:
    """The logged-in patient on whose behalf a PGO acts."""

    patient_id: str
    subject: str  # e.g. "Patient/<id>"


@dataclass(frozen=True, slots=True)
class StoredCode(CodeRecord):
    """An authorization code as stored (Authlib's AuthorizationCodeMixin surface)."""

    def get_redirect_uri(self) -> str:
        """The redirect URI the code was issued for."""
        return self.redirect_uri

    def get_scope(self) -> str:
        """The granted scope."""
        return self.scope


@dataclass(frozen=True, slots=True)
class ConsentTerm:
    """The patient's choice on the consent page: this once, or long-term until ``ends_at``
    (Unix seconds; None: indefinitely)."""

    long_term: bool = False
    ends_at: int | None = None


ONCE = ConsentTerm()


class S256CodeChallenge(CodeChallenge):
    """PKCE with S256 only, required on every authorization request."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 - Authlib's class attribute
    CODE_CHALLENGE_METHODS = {"S256": CodeChallenge.CODE_CHALLENGE_METHODS["S256"]}  # noqa: RUF012

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        """Reject a missing challenge, a missing method and every method but S256."""
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: missing 'code_challenge'")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge_method(self, authorization_code: Any) -> str:
        """Always S256 (the only method accepted at the authorization endpoint)."""
        return "S256"


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    """The PGO flow: confidential client, PKCE S256, patient in context."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]  # noqa: RUF012
    server: AuthServer
    request: FormRequest

    def validate_authorization_request(self) -> str:
        """Authlib's checks plus ``aud`` (SMART) and a patient-level scope."""
        redirect_uri: str = super().validate_authorization_request()
        state = self.request.payload.state
        aud = self.request.payload.data.get("aud")
        if aud is not None and aud != self.request.audience:
            raise InvalidRequestError(
                "'aud' is not this FHIR server", redirect_uri=redirect_uri, state=state
            )
        if not sc.Grants.parse(self.request.scope).has_context("patient"):
            raise InvalidScopeError(
                "No patient-level scope requested", redirect_uri=redirect_uri, state=state
            )
        return redirect_uri

    def save_authorization_code(self, code: str, request: Any) -> None:
        """Store the code's hash with everything it is bound to."""
        user: PatientUser = request.user
        term: ConsentTerm = request.consent_term
        stored = CodeRecord(
            code_hash=hash_code(code),
            client_id=request.client.client_id,
            redirect_uri=request.payload.redirect_uri,
            scope=request.scope,
            patient_id=user.patient_id,
            subject=user.subject,
            code_challenge=request.payload.data["code_challenge"],
            long_term=term.long_term,
            consent_ends_at=term.ends_at,
            expires_at=int(time.time()) + self.server.settings.auth_code_seconds,
        )
        with self.server.db.write() as conn:
            code_store.add(conn, stored)

    def query_authorization_code(self, code: str, client: Client) -> StoredCode | None:
        """Claim the code atomically; a replayed code revokes what it issued."""
        code_hash = hash_code(code)
        now = int(time.time())
        with self.server.db.write() as conn:
            found = code_store.claim(conn, code_hash, StoredCode)
        if found is None:
            return None
        stored, claimed = found
        if not claimed:
            with self.server.db.write() as conn:  # its consent's refresh tokens too
                consent_records.end_granted_with(conn, code_hash, now)
            self.server.tokens.revoke_issued_from(code_hash)
            return None
        if stored.client_id != client.client_id or stored.expires_at < now:
            return None
        return stored

    def delete_authorization_code(self, authorization_code: StoredCode) -> None:
        """Nothing to do: the code was marked used when it was claimed."""

    def authenticate_user(self, authorization_code: StoredCode) -> PatientUser:
        """The patient the code was issued for."""
        return PatientUser(authorization_code.patient_id, authorization_code.subject)

    def get_authorization_code_challenge(self, authorization_code: StoredCode) -> str:
        """The stored PKCE challenge (used by :class:`S256CodeChallenge`)."""
        return authorization_code.code_challenge

    def generate_token(
        self,
        user: PatientUser | None = None,
        scope: str | None = None,
        grant_type: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        """A PGO access token (≤ 15 min) with the patient in context, under a new stored
        consent; with a refresh token when the patient chose long-term consent."""
        assert user is not None
        code: StoredCode = self.request.authorization_code
        now = int(time.time())
        if not code.long_term:  # the patient said this once: no offline access granted
            scope = " ".join(t for t in sc.split(scope) if t != "offline_access")
        with self.request.write() as conn:
            consent = consent_records.create(
                conn,
                client_id=self.request.client.client_id,
                patient_id=user.patient_id,
                subject=user.subject,
                scope=scope or "",
                long_term=code.long_term,
                code_hash=code.code_hash,
                ends_at=(
                    code.consent_ends_at
                    if code.long_term
                    else now + self.server.settings.pgo_token_seconds
                ),
                now=now,
            )
            body = self.server.issue(
                self.request,
                conn=conn,
                client_id=self.request.client.client_id,
                scope=scope or "",
                lifetime=self.server.settings.pgo_token_seconds,
                subject=user.subject,
                patient_id=user.patient_id,
                code_hash=code.code_hash,
                consent_id=consent.consent_id,
            )
            if code.long_term:
                body["refresh_token"] = consent_records.issue_refresh_token(conn, consent, now)
        return body


class RefreshTokenGrant(grants.RefreshTokenGrant):
    """``grant_type=refresh_token`` for long-term consents: rotation, reuse detection, the
    scope only narrowing, never past the consent (service/auth/consent_records.py).

    Runs in the token request's one write transaction (:meth:`AuthServer.create_token_response`):
    the old token's claim, the new tokens and the AuditEvent commit together, and a refused
    reuse still commits the family's revocation.
    """

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]  # noqa: RUF012
    INCLUDE_NEW_REFRESH_TOKEN = True
    server: AuthServer
    request: FormRequest

    def authenticate_refresh_token(self, refresh_token: str) -> Any:
        """Check the requested scope, then use the token up (see consent_records.rotate)."""
        client: Client = self.request.client
        now = int(time.time())
        with self.request.write() as conn:
            known = consent_records.peek(conn, refresh_token)
            if known is not None and known.client_id == client.client_id:
                self.request.concerns = known.patient_id
                self._check_narrowing(known.scope)
            outcome = consent_records.rotate(conn, refresh_token, client.client_id, now)
        if isinstance(outcome, consent_records.Reused):
            self.request.revoked = True
            raise InvalidGrantError(
                "The refresh token was used before: every token of this consent is revoked "
                "(RFC 9700 4.14); ask the patient again"
            )
        return outcome

    def _check_narrowing(self, granted: str) -> None:
        requested = sc.split(self.request.payload.scope)
        if requested and sc.narrow(requested, sc.split(granted)) != requested:
            raise InvalidScopeError("A refresh can only narrow the granted scope")

    def _validate_token_scope(self, token: Any) -> None:
        """Checked before the token is used up (:meth:`authenticate_refresh_token`)."""

    def authenticate_user(self, refresh_token: ConsentRecord) -> PatientUser:
        """The patient of the consent."""
        return PatientUser(refresh_token.patient_id, refresh_token.subject)

    def revoke_old_credential(self, refresh_token: Any) -> None:
        """Nothing: the old token was used up when it was claimed."""

    def generate_token(
        self,
        user: PatientUser | None = None,
        scope: str | None = None,
        grant_type: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        """A new access token (the scope as asked, within the consent's) and refresh token."""
        assert user is not None
        consent: ConsentRecord = self.request.refresh_token
        client: Client = self.request.client
        now = int(time.time())
        with self.request.write() as conn:
            body = self.server.issue(
                self.request,
                conn=conn,
                client_id=client.client_id,
                scope=client.get_allowed_scope(scope or consent.scope),
                lifetime=self.server.settings.pgo_token_seconds,
                subject=user.subject,
                patient_id=user.patient_id,
                consent_id=consent.consent_id,
            )
            body["refresh_token"] = consent_records.issue_refresh_token(conn, consent, now)
        return body


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    """SMART Backend Services: ``client_credentials`` with ``private_key_jwt``."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["private_key_jwt"]  # noqa: RUF012
    server: AuthServer
    request: FormRequest

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        """Issue a token (≤ 5 min) for the requested scopes narrowed to the registered ones."""
        client: Client = self.request.client
        requested = sc.split(self.request.payload.scope)
        if not requested:
            raise InvalidScopeError("'scope' is required")
        scope = client.get_allowed_scope(self.request.payload.scope)
        if not scope:
            raise InvalidScopeError("None of the requested scopes is allowed for this client")
        token = self.server.issue(
            self.request,
            client_id=client.client_id,
            scope=scope,
            lifetime=self.server.settings.backend_token_seconds,
            subject=client.client_id,
        )
        return 200, token, self.TOKEN_RESPONSE_HEADER


class PrivateKeyJwtAuth(JWTBearerClientAssertion):
    """``private_key_jwt`` client authentication per SMART's asymmetric profile."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, server: AuthServer) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self.server = server

    def __call__(self, query_client: Any, request: FormRequest) -> Client | None:
        """Authenticate the client of a token request by its signed assertion."""
        data = request.form
        if data.get("client_assertion_type") != self.CLIENT_ASSERTION_TYPE:
            return None  # not this method; Authlib answers invalid_client
        assertion = data.get("client_assertion")
        if not assertion:
            raise InvalidClientError(description="Missing 'client_assertion'")
        headers, claims = self.extract_assertion(assertion)
        client_id = claims.get("sub")
        if not isinstance(client_id, str) or claims.get("iss") != client_id:
            raise InvalidClientError(description="'iss' and 'sub' must both be the client_id")
        client: Client | None = query_client(client_id)
        if client is None or client.kind != "backend":
            raise InvalidClientError(description="Unknown client")
        alg = headers.get("alg")
        if alg not in ASSERTION_ALGORITHMS:
            raise InvalidClientError(description="The assertion must be signed with RS384 or ES384")
        jku = headers.get("jku")
        if jku is not None and jku != client.jwks_url:
            raise InvalidClientError(description="'jku' is not the client's registered JWKS URL")
        key = self._key(client, headers, ASSERTION_ALGORITHMS[alg])
        try:
            token = jwt.decode(assertion, key, algorithms=[alg])
        except (JoseError, ValueError) as exc:
            raise InvalidClientError(description="Invalid assertion signature") from exc
        self._check_claims(token.claims, request)
        request.client = client
        authenticated: Client = self.authenticate_client(client)
        return authenticated

    def _key(self, client: Client, headers: dict[str, Any], kty: str) -> Any:
        """Exactly one registered key must match the header's ``kid`` and the ``alg``'s type."""
        for refresh in (False, True):
            try:
                jwks = client.jwks or self.server.jwks_fetcher.get(
                    client.jwks_url or "", refresh=refresh
                )
            except JwksError as exc:
                raise InvalidClientError(description=f"Client keys unavailable: {exc}") from exc
            kid = headers.get("kid")
            matches = [
                k
                for k in jwks.get("keys", [])
                if isinstance(k, dict)
                and k.get("kty") == kty
                and (kid is None or k.get("kid") == kid)
            ]
            if len(matches) == 1:
                try:
                    return KeySet.import_key_set({"keys": matches}).keys[0]
                except (JoseError, ValueError, TypeError) as exc:
                    raise InvalidClientError(description="The client's key is invalid") from exc
            if len(matches) > 1 or client.jwks is not None:
                break  # ambiguous, or an inline JWKS that refetching cannot change
        raise InvalidClientError(description="No single client key matches the assertion")

    def _check_claims(self, claims: dict[str, Any], request: FormRequest) -> None:
        try:
            jwt.JWTClaimsRegistry(
                leeway=self.leeway,
                iss={"essential": True},
                sub={"essential": True},
                aud={"essential": True, "value": request.token_url},
                exp={"essential": True},
                jti={"essential": True},
            ).validate(claims)
        except (JoseError, ValueError) as exc:
            raise InvalidClientError(description=f"Invalid assertion: {exc}") from exc
        now = int(time.time())
        exp = claims["exp"]
        if not isinstance(exp, int) or exp - now > self.server.settings.assertion_max_seconds:
            raise InvalidClientError(description="'exp' must be at most 5 minutes in the future")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > replay.MAX_JTI_LENGTH or "\x00" in jti:
            raise InvalidClientError(
                description=f"The assertion's 'jti' must be 1 to {replay.MAX_JTI_LENGTH} "
                "characters without NUL"
            )
        with request.write() as conn:
            fresh = isinstance(jti, str) and replay.remember(conn, claims["iss"], jti, exp, now)
        if not fresh:
            raise InvalidClientError(description="The assertion's 'jti' has been used before")
