"""The authorization server: Authlib's ``AuthorizationServer`` wired to telemon's storage.

HTTP lives in ``service/api/oauth_routes.py``; this module sees only :class:`FormRequest`, a
framework-free request built from already-read parameters.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from authlib.oauth2.rfc6749 import AuthorizationServer, InvalidRequestError, OAuth2Request

from service.auth import clients
from service.auth.clients import Client
from service.auth.grants import (
    ONCE,
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    ConsentTerm,
    PrivateKeyJwtAuth,
    RefreshTokenGrant,
    S256CodeChallenge,
)
from service.auth.jwks import JwksFetcher
from service.auth.token_endpoints import TokenIntrospection, TokenRevocation
from service.auth.tokens import TokenService
from service.settings import Settings
from service.storage.db import Connection, Database, fits_key

# The syntax of the parameters (RFC 6749 Appendix A; URIs in RFC 3986's characters). Authlib
# quotes some of them (redirect_uri, response_type) in error descriptions, which must not hold
# '"', '\\' or anything outside printable ASCII: it raises ValueError (a 500) instead.
_VSCHAR = re.compile(r"[\x20-\x7e]*")
_NQSCHAR = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
_URI = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_SYNTAX = {
    "client_id": _VSCHAR,
    "client_secret": _VSCHAR,
    "state": _VSCHAR,
    "code": _VSCHAR,
    "code_verifier": _VSCHAR,
    "code_challenge": _VSCHAR,
    "code_challenge_method": _VSCHAR,
    "client_assertion": _VSCHAR,
    "launch": _VSCHAR,
    "response_type": _NQSCHAR,
    "grant_type": _NQSCHAR,
    "scope": _NQSCHAR,
    "redirect_uri": _URI,
    "aud": _URI,
    "client_assertion_type": _URI,
}


def check_syntax(request: FormRequest) -> None:
    """Refuse (``invalid_request``) a parameter outside its RFC 6749 character set."""
    for name, values in request.payload.datalist.items():
        syntax = _SYNTAX.get(name)
        if syntax is not None and not all(syntax.fullmatch(v) for v in values):
            raise InvalidRequestError(f"'{name}' holds characters RFC 6749 does not allow")

#: Grant types whose whole token request is one write transaction (see create_token_response).
_SHARED_TRANSACTION = frozenset({"client_credentials", "refresh_token"})

#: Writes a token request's AuditEvent (status and body of the answer) into a transaction.
TokenAudit = Callable[[Connection, int, Any], None]


class _Payload:
    """Authlib's payload interface over ``(name, value)`` pairs."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.datalist: dict[str, list[str]] = {}
        for name, value in pairs:
            self.datalist.setdefault(name, []).append(value)
        self.data = {k: v[0] for k, v in self.datalist.items()}

    client_id = property(lambda self: self.data.get("client_id"))
    grant_type = property(lambda self: self.data.get("grant_type"))
    redirect_uri = property(lambda self: self.data.get("redirect_uri"))
    scope = property(lambda self: self.data.get("scope"))
    state = property(lambda self: self.data.get("state"))

    @property
    def response_type(self) -> str | None:
        """``response_type`` (several values sorted, as Authlib does)."""
        value = self.data.get("response_type")
        return " ".join(sorted(value.split())) if value and " " in value else value


class FormRequest(OAuth2Request):
    """An OAuth request whose parameters (query or form) were read by the HTTP layer.

    ``audience`` is this server's FHIR base URL and ``token_url`` its token endpoint; both
    depend on how the server is reached, so the HTTP layer supplies them.
    """

    def __init__(
        self,
        method: str,
        params: list[tuple[str, str]],
        headers: Mapping[str, str],
        *,
        audience: str,
        token_url: str,
    ) -> None:
        # TLS ends in front of telemon (docs/security.md); Authlib's own https check would
        # refuse the internal hop, so it is given the public token URL's scheme instead.
        super().__init__(method, "https://telemon.invalid/oauth", headers=headers)
        self.payload = _Payload(params)
        self.audience = audience
        self.token_url = token_url
        self.db: Database | None = None
        self.conn: Connection | None = None
        self.issued_jti: str | None = None  # the token issued to this request, if any
        self.concerns: str | None = None  # the patient a refresh request concerns (audit)
        self.revoked = False  # the request revoked tokens (a reused refresh token's family)
        self.consent_term: ConsentTerm = ONCE  # the patient's choice (consent decision)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """The request's shared write transaction (see :meth:`AuthServer.create_token_response`),
        or a transaction of its own when there is none."""
        if self.conn is not None:
            yield self.conn
            return
        assert self.db is not None, "FormRequest.write() outside the authorization server"
        with self.db.write() as conn:
            yield conn

    @property
    def form(self) -> dict[str, str]:
        """Form parameters (first value of each)."""
        data: dict[str, str] = self.payload.data
        return data

    @property
    def args(self) -> dict[str, str]:
        """Query parameters (first value of each)."""
        return self.form


class AuthServer(AuthorizationServer):
    """telemon's authorization server."""

    def __init__(self, db: Database, settings: Settings, tokens: TokenService) -> None:
        super().__init__(scopes_supported=None)
        self.db = db
        self.settings = settings
        self.tokens = tokens
        self.jwks_fetcher = JwksFetcher(
            allow_private=settings.jwks_allow_private, timeout=settings.jwks_timeout_seconds
        )
        # SQLite: token requests queue on this lock rather than in SQLite's busy handler, whose
        # sleeps (up to 100 ms each) made the slowest 1 % of concurrent token requests wait.
        self._write_turn: AbstractContextManager[Any] = (
            threading.Lock() if db.serializes_writes else nullcontext()
        )
        self.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True)])
        self.register_grant(ClientCredentialsGrant)
        self.register_grant(RefreshTokenGrant)
        self.register_client_auth_method("private_key_jwt", PrivateKeyJwtAuth(self))
        self.register_endpoint(TokenRevocation)
        self.register_endpoint(TokenIntrospection)

    def token_endpoint_response(self, name: str, request: FormRequest) -> Any:
        """Revocation (``"revocation"``) or introspection (``"introspection"``): status, body
        and headers (see service/auth/token_endpoints.py)."""
        try:
            check_syntax(request)
        except InvalidRequestError as error:
            return self.handle_error_response(request, error)
        request.db = self.db
        return self.create_endpoint_response(name, request)

    def query_client(self, client_id: str) -> Client | None:
        """An active registered client."""
        if not isinstance(client_id, str) or not fits_key(client_id, 255):
            return None
        with self.db.read() as conn:
            return clients.get(conn, client_id)

    def create_token_response(
        self, request: Any = None, *, audit: TokenAudit | None = None
    ) -> Any:
        """Authlib's token endpoint, ``audit`` called with the outcome inside a transaction.

        A client_credentials or refresh_token request runs in one write transaction: the
        assertion's ``jti`` (or the refresh token used up), the tokens it buys and the
        request's AuditEvent commit together — one commit (one fsync
        on SQLite) per token, the hot spot of the token endpoint. Authlib turns errors into
        responses, so a refused request still commits the ``jti`` it spent, and its audit. The
        authorization-code grant keeps its own transactions (it claims the code first) and its
        audit gets one of its own. An exception (nothing committed) is the caller's to audit.
        """
        assert isinstance(request, FormRequest)
        try:
            check_syntax(request)
        except InvalidRequestError as error:
            return self.handle_error_response(request, error)
        request.db = self.db
        if request.payload.grant_type not in _SHARED_TRANSACTION:
            status, body, headers = super().create_token_response(request)
            if audit is not None:
                with self._write_turn, self.db.write() as conn:
                    audit(conn, status, body)
            return status, body, headers
        with self._write_turn, self.db.write() as conn:
            request.conn = conn
            try:
                status, body, headers = super().create_token_response(request)
                if audit is not None:
                    audit(conn, status, body)
            finally:
                request.conn = None
        if request.revoked:  # committed: this worker refuses them at once, the others soon
            self.tokens.revoked.sync()
        return status, body, headers

    def get_consent_grant(self, request: Any = None, end_user: Any = None) -> Any:
        """Authlib's validation of an authorization request, after :func:`check_syntax`."""
        assert isinstance(request, FormRequest)
        check_syntax(request)
        return super().get_consent_grant(request, end_user)

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        """Nothing: :meth:`issue` records each token as it signs it."""

    def create_oauth2_request(self, request: Any) -> FormRequest:
        """Requests arrive already adapted by the HTTP layer."""
        assert isinstance(request, FormRequest)
        return request

    def handle_response(
        self, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        """Return the parts; the HTTP layer builds the response."""
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No signal system."""

    def issue(
        self,
        request: FormRequest,
        *,
        conn: Connection | None = None,
        client_id: str,
        scope: str,
        lifetime: int,
        subject: str,
        patient_id: str | None = None,
        code_hash: str | None = None,
        consent_id: str | None = None,
    ) -> dict[str, Any]:
        """An access token response body (RFC 6749 section 5.1, plus SMART's ``patient``); recorded
        in ``conn``'s transaction (else the request's)."""
        issued = self.tokens.issue(
            conn=conn or request.conn,
            issuer=issuer_of(request.token_url),
            audience=request.audience,
            client_id=client_id,
            scope=scope,
            lifetime=lifetime,
            subject=subject,
            patient_id=patient_id,
            code_hash=code_hash,
            consent_id=consent_id,
        )
        request.issued_jti = issued.jti
        body: dict[str, Any] = {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "scope": issued.scope,
        }
        if patient_id is not None:
            body["patient"] = patient_id
        return body


def issuer_of(token_url: str) -> str:
    """The issuer (``iss``) for tokens from ``token_url``: the server root."""
    return token_url.removesuffix("/oauth/token")
