"""A small, honest stand-in for a DigiD TVS/OIDC broker (the outside world), run on loopback.

It serves a discovery document, a JWKS, an authorization endpoint that logs the user in at once
and redirects back with a code (or with an error), and a token endpoint that checks the client
secret, the redirect URI and the PKCE S256 verifier before it issues an RS256 id_token. Tests can
tamper with the next id_token (claims or signing key) to check that telemon refuses it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

CLIENT_ID = "telemon-test"
CLIENT_SECRET = "broker-secret-for-tests"


@dataclass
class FakeBroker:
    """The broker's state; tests set ``bsn``, ``error``, ``tamper`` and ``signing_key``."""

    issuer: str = ""
    key: RSAKey = field(default_factory=lambda: _rsa("broker-key"))
    bsn: str | None = None
    error: str | None = None  # the authorization endpoint answers with this error
    tamper: dict[str, Any] = field(default_factory=dict)  # overrides for the next id_token
    signing_key: RSAKey | None = None  # sign with another key (a forged id_token)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: int = 0
    _codes: dict[str, dict[str, str]] = field(default_factory=dict)

    def app(self) -> Starlette:
        """The broker's HTTP endpoints."""
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/authorize", self._authorize),
                Route("/token", self._token, methods=["POST"]),
            ]
        )

    async def _discovery(self, _: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            }
        )

    async def _jwks(self, _: Request) -> Response:
        public = self.key.as_dict(private=False)
        return JSONResponse({"keys": [{**public, "use": "sig", "alg": "RS256"}]})

    async def _authorize(self, request: Request) -> Response:
        q = dict(request.query_params)
        self.authorize_requests.append(q)
        if (
            q.get("client_id") != CLIENT_ID
            or q.get("response_type") != "code"
            or "openid" not in q.get("scope", "").split()
            or q.get("code_challenge_method") != "S256"
            or not q.get("code_challenge")
            or not q.get("nonce")
        ):
            return Response("bad authorization request", status_code=400)
        if self.error:
            query = {"error": self.error, "state": q.get("state", "")}
        else:
            code = secrets.token_urlsafe(16)
            self._codes[code] = q
            query = {"code": code, "state": q.get("state", "")}
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode(query)}", status_code=302)

    async def _token(self, request: Request) -> Response:
        self.token_requests += 1
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        form = dict(parse_qsl((await request.body()).decode()))
        issued = self._codes.pop(str(form.get("code")), None)  # single use
        verifier = str(form.get("code_verifier", ""))
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .decode()
            .rstrip("=")
        )
        if (
            issued is None
            or form.get("grant_type") != "authorization_code"
            or form.get("redirect_uri") != issued["redirect_uri"]
            or challenge != issued["code_challenge"]
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "pseudonym-" + secrets.token_hex(4),
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": issued["nonce"],
            "bsn": self.bsn,
        }
        claims.update(self.tamper)
        key = self.signing_key or self.key
        id_token = jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, key)
        body = {
            "access_token": secrets.token_urlsafe(16),
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token,
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})


def _rsa(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, private=True, parameters={"kid": kid})


def forged_key() -> RSAKey:
    """Another RSA key with the broker key's kid (a forged signature)."""
    return _rsa("broker-key")


def run_broker() -> Iterator[FakeBroker]:
    """Serve a FakeBroker on a free loopback port for the duration of the generator."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    broker = FakeBroker(issuer=f"http://127.0.0.1:{port}")
    server = uvicorn.Server(
        uvicorn.Config(
            broker.app(), host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "fake broker did not start"
        time.sleep(0.02)
    yield broker
    server.should_exit = True
    thread.join(timeout=10)
