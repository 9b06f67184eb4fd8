"""Fixtures for the authorization tests: an app in oauth mode, registered clients, real keys."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from service.app import create_app
from service.auth import clients
from service.settings import Settings
from service.storage.db import Database
from tests.factories import device, patient, weight

TOKEN_URL = "http://testserver/oauth/token"
FHIR = "http://testserver/fhir"
REDIRECT = "https://pgo.example.org/callback"
BSN_A = "111222333"
BSN_B = "123456782"


@pytest.fixture
def oauth_settings(database_url: str) -> Settings:
    """Settings in oauth mode on the test database."""
    return Settings(
        database_url=database_url,
        auth="oauth",
        base_url=FHIR,
        profiles_dir=Path(__file__).resolve().parents[2] / "fhir_profiles",
        alerts_enabled=False,
    )


@pytest.fixture
def oauth_db(oauth_settings: Settings) -> Iterator[Database]:
    """A database handle for registering clients and checking rows."""
    db = Database(oauth_settings.database_url)
    yield db
    db.dispose()


@pytest.fixture
def oauth_client(oauth_settings: Settings) -> Iterator[TestClient]:
    """An HTTP client for an oauth-mode app through the ASGI stack."""
    with TestClient(create_app(oauth_settings), base_url="http://testserver") as c:
        yield c


@pytest.fixture
def unlimited_client(oauth_settings: Settings) -> Iterator[TestClient]:
    """An oauth-mode app without the token endpoint's rate limits, for tests that send many
    refused requests on purpose (tests/auth/test_rate_limits.py tests the limits)."""
    off = oauth_settings.model_copy(
        update={"token_failures_per_client": 0, "token_failures_per_address": 0}
    )
    with TestClient(create_app(off), base_url="http://testserver") as c:
        yield c


@dataclass
class World:
    """Two patients with data, and the ids of what belongs to each."""

    a: str
    b: str
    obs_a: str
    obs_b: str
    dev_a: str
    dev_b: str


@pytest.fixture
def world(oauth_client: TestClient) -> World:
    """Patients A and B, each with an Observation (two versions) and a Device."""
    fhir = oauth_client.app.state.telemon.fhir  # type: ignore[attr-defined]
    a = fhir.create(patient(BSN_A, family="Aalders")).res_id
    b = fhir.create(patient(BSN_B, family="Bakker")).res_id
    dev_a = fhir.create(device(a)).res_id
    dev_b = fhir.create(device(b)).res_id
    obs = []
    for pid, dev in ((a, dev_a), (b, dev_b)):
        body = weight(pid)
        body["device"] = {"reference": f"Device/{dev}"}
        created = fhir.create(body)
        body["id"] = created.res_id
        body["valueQuantity"]["value"] = 81.0
        fhir.update("Observation", created.res_id, body)
        obs.append(created.res_id)
    return World(a, b, obs[0], obs[1], dev_a, dev_b)


def register(db: Database, client: clients.Client) -> None:
    """Store a client registration."""
    with db.write() as conn:
        clients.save(conn, client)


@pytest.fixture
def pgo(oauth_db: Database) -> tuple[str, str]:
    """A registered PGO: (client_id, secret)."""
    client, secret = clients.new_pgo("pgo.example.org", "Voorbeeld PGO", [REDIRECT])
    register(oauth_db, client)
    return client.client_id, secret


@dataclass
class Backend:
    """A registered backend client and its private key."""

    client_id: str
    key: RSAKey | ECKey
    alg: str

    def assertion(self, **overrides: Any) -> str:
        """A signed client assertion (claims overridable, None drops one)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": TOKEN_URL,
            "exp": now + 240,
            "iat": now,
            "jti": uuid.uuid4().hex,
        }
        header: dict[str, Any] = {"alg": self.alg, "kid": self.key.kid, "typ": "JWT"}
        for k, v in overrides.items():
            if k.startswith("h_"):
                header[k[2:]] = v
            elif v is None:
                claims.pop(k, None)
            else:
                claims[k] = v
        return jwt.encode(header, claims, self.key, algorithms=[self.alg])


def make_backend(
    db: Database, scope: str, *, alg: str = "RS384", client_id: str | None = None
) -> Backend:
    """Generate a key pair and register a backend client with its public JWKS."""
    key: RSAKey | ECKey = (
        RSAKey.generate_key(2048, private=True)
        if alg == "RS384"
        else ECKey.generate_key("P-384", private=True)
    )
    key.ensure_kid()
    public = key.as_dict(private=False)
    client_id = client_id or f"backend-{uuid.uuid4().hex[:8]}"
    register(db, clients.new_backend(client_id, "EHR", scope, jwks={"keys": [public]}))
    return Backend(client_id, key, alg)


ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def backend_token(http: TestClient, backend: Backend, scope: str, **overrides: Any) -> Any:
    """POST a client_credentials request; returns the response."""
    return http.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": backend.assertion(**overrides),
        },
    )


def pkce() -> tuple[str, str]:
    """A (verifier, S256 challenge) pair."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


_INPUT = re.compile(r'name="(tx|csrf_token)" value="([^"]*)"')


def form_fields(html: str) -> dict[str, str]:
    """The hidden fields of a login or consent page."""
    import html as html_mod

    return {k: html_mod.unescape(v) for k, v in _INPUT.findall(html)}


def authorize(
    http: TestClient,
    client_id: str,
    bsn: str,
    *,
    challenge: str,
    decision: str = "allow",
    scope: str = "launch/patient patient/Observation.rs patient/Patient.rs",
    state: str = "st-123",
    term: dict[str, str] | None = None,
) -> Any:
    """Drive authorize → login → consent; returns the consent response (a redirect).

    ``term``: the consent page's duration fields (e.g. ``{"term": "indefinite"}``); none sent
    means the preselected "this once"."""
    page = http.get(
        "/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "scope": scope,
            "state": state,
            "aud": FHIR,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        follow_redirects=False,
    )
    assert page.status_code == 200, page.text
    fields = form_fields(page.text)
    consent = http.post("/oauth/login", data={**fields, "bsn": bsn}, follow_redirects=False)
    assert consent.status_code == 200, consent.text
    fields = form_fields(consent.text)
    return http.post(
        "/oauth/consent",
        data={**fields, **(term or {}), "decision": decision},
        follow_redirects=False,
    )


def code_of(response: Any) -> str:
    """The code in a redirect back to the client."""
    from urllib.parse import parse_qs, urlsplit

    location = response.headers["location"]
    assert location.startswith(REDIRECT)
    return parse_qs(urlsplit(location).query)["code"][0]


def pgo_token(http: TestClient, pgo: tuple[str, str], bsn: str, **kwargs: Any) -> dict[str, Any]:
    """A PGO access-token response for the patient with ``bsn``."""
    verifier, challenge = pkce()
    code = code_of(authorize(http, pgo[0], bsn, challenge=challenge, **kwargs))
    response = http.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
        auth=(pgo[0], pgo[1]),
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def oauth_live_server(oauth_settings: Settings) -> Iterator[str]:
    """A real uvicorn server in oauth mode on loopback; yields its root URL."""
    import socket
    import threading

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = f"http://127.0.0.1:{port}"
    app = create_app(oauth_settings.model_copy(update={"base_url": f"{root}/fhir"}))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.02)
    server_app = app
    yield root
    server.should_exit = True
    thread.join(timeout=10)
    del server_app
