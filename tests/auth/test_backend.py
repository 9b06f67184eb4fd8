"""SMART Backend Services: client_credentials with private_key_jwt (RS384/ES384), and its
negative cases (docs/security.md, INFERNO backend tests)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from service.auth import clients
from service.storage.db import Database
from tests.auth.conftest import (
    ASSERTION_TYPE,
    TOKEN_URL,
    World,
    backend_token,
    make_backend,
    register,
)
from tests.factories import weight

SCOPE = "system/Observation.crs system/Patient.rs"


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_backend_token_and_use(
    oauth_client: TestClient, oauth_db: Database, world: World, alg: str
) -> None:
    backend = make_backend(oauth_db, SCOPE, alg=alg)
    response = backend_token(oauth_client, backend, "system/Observation.rs system/Flag.rs")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert 0 < body["expires_in"] <= 300
    assert "refresh_token" not in body
    assert body["scope"] == "system/Observation.rs"  # narrowed to the registration
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    found = oauth_client.get("/fhir/Observation", headers=headers).json()
    assert {e["resource"]["id"] for e in found["entry"]} == {world.obs_a, world.obs_b}
    # .rs does not allow create; Patient is not in the token at all
    assert (
        oauth_client.post("/fhir/Observation", json=weight(world.a), headers=headers).status_code
        == 403
    )
    assert oauth_client.get(f"/fhir/Patient/{world.a}", headers=headers).status_code == 403


def test_backend_can_write_with_create_scope(
    oauth_client: TestClient, oauth_db: Database, world: World
) -> None:
    backend = make_backend(oauth_db, SCOPE)
    token = backend_token(oauth_client, backend, "system/Observation.crs").json()["access_token"]
    response = oauth_client.post(
        "/fhir/Observation",
        json=weight(world.b),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 201, response.text


def _error(response: object) -> str:
    assert response.status_code in (400, 401), response.text  # type: ignore[attr-defined]
    err: str = response.json()["error"]  # type: ignore[attr-defined]
    return err


def test_backend_negative_cases(unlimited_client: TestClient, oauth_db: Database) -> None:
    oauth_client = unlimited_client  # 15 refused requests from one client and address
    backend = make_backend(oauth_db, SCOPE)
    other = make_backend(oauth_db, SCOPE, alg="ES384")
    ok_scope = "system/Observation.rs"
    cases = {
        "exp too far": {"exp": int(time.time()) + 600},
        "expired": {"exp": int(time.time()) - 120},
        "no exp": {"exp": None},
        "no jti": {"jti": None},
        "wrong aud": {"aud": "https://elsewhere.example/token"},
        "iss != sub": {"iss": other.client_id},
        "unknown client": {"iss": "nobody", "sub": "nobody"},
        "unregistered jku": {"h_jku": "https://evil.example/jwks.json"},
        "wrong kid": {"h_kid": "not-a-kid"},
    }
    for name, overrides in cases.items():
        assert _error(backend_token(oauth_client, backend, ok_scope, **overrides)) == (
            "invalid_client"
        ), name
    # signed by another client's key but claiming to be this client
    forged = other.assertion(iss=backend.client_id, sub=backend.client_id, h_kid=backend.key.kid)
    response = oauth_client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "scope": ok_scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": forged,
        },
    )
    assert _error(response) == "invalid_client"
    # replayed jti
    assertion = backend.assertion()
    form = {
        "grant_type": "client_credentials",
        "scope": ok_scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    assert oauth_client.post("/oauth/token", data=form).status_code == 200
    assert _error(oauth_client.post("/oauth/token", data=form)) == "invalid_client"
    # invalid assertion type, invalid grant type, garbage JWT, not a form, no scope
    fresh = {**form, "client_assertion": backend.assertion()}
    bad_type = {**fresh, "client_assertion_type": "urn:example:other"}
    assert _error(oauth_client.post("/oauth/token", data=bad_type)) == "invalid_client"
    bad_grant = {**form, "grant_type": "password", "client_assertion": backend.assertion()}
    assert _error(oauth_client.post("/oauth/token", data=bad_grant)) == "unsupported_grant_type"
    garbage = {**form, "client_assertion": "not.a.jwt"}
    assert _error(oauth_client.post("/oauth/token", data=garbage)) == "invalid_client"
    as_json = oauth_client.post("/oauth/token", json=form)
    assert _error(as_json) == "invalid_request"
    no_scope = {**form, "scope": "", "client_assertion": backend.assertion()}
    assert _error(oauth_client.post("/oauth/token", data=no_scope)) == "invalid_scope"
    unknown_scope = {**form, "scope": "system/Goal.rs", "client_assertion": backend.assertion()}
    assert _error(oauth_client.post("/oauth/token", data=unknown_scope)) == "invalid_scope"


def test_hs256_and_none_algorithms_refused(oauth_client: TestClient, oauth_db: Database) -> None:
    import base64
    import json

    backend = make_backend(oauth_db, SCOPE)
    claims = {
        "iss": backend.client_id,
        "sub": backend.client_id,
        "aud": TOKEN_URL,
        "exp": int(time.time()) + 60,
        "jti": "x1",
    }

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    unsigned = f"{part({'alg': 'none'})}.{part(claims)}."
    response = oauth_client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "scope": "system/Observation.rs",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": unsigned,
        },
    )
    assert _error(response) == "invalid_client"


def test_jti_replay_survives_restart(oauth_settings: object, oauth_db: Database) -> None:
    from service.app import create_app

    backend = make_backend(oauth_db, SCOPE)
    assertion = backend.assertion()
    form = {
        "grant_type": "client_credentials",
        "scope": "system/Observation.rs",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    with TestClient(create_app(oauth_settings), base_url="http://testserver") as first:  # type: ignore[arg-type]
        assert first.post("/oauth/token", data=form).status_code == 200
    with TestClient(create_app(oauth_settings), base_url="http://testserver") as second:  # type: ignore[arg-type]
        assert _error(second.post("/oauth/token", data=form)) == "invalid_client"


def test_registration_rules() -> None:
    with pytest.raises(clients.ClientError):
        clients.new_pgo("p", "P", ["http://pgo.example.org/cb"])  # http, not loopback
    with pytest.raises(clients.ClientError):
        clients.new_pgo("p", "P", ["https://pgo.example.org/cb#frag"])
    with pytest.raises(clients.ClientError):
        clients.new_backend("b", "B", "system/Observation.rs")  # neither jwks nor url
    with pytest.raises(clients.ClientError):
        clients.new_backend("b", "B", "patient/Observation.rs", jwks_url="https://x.example/j")
    private = {"keys": [{"kty": "EC", "d": "secret", "crv": "P-384", "x": "a", "y": "b"}]}
    with pytest.raises(clients.ClientError):
        clients.new_backend("b", "B", "system/Observation.rs", jwks=private)
    assert clients.new_pgo("p", "P", ["http://127.0.0.1:8765/cb"])[0].redirect_uris


def test_unregistered_db_client_is_unknown(oauth_client: TestClient, oauth_db: Database) -> None:
    backend = make_backend(oauth_db, SCOPE)
    with oauth_db.write() as conn:
        clients.remove(conn, backend.client_id)
    assert _error(backend_token(oauth_client, backend, "system/Observation.rs")) == "invalid_client"
    register  # noqa: B018 - imported for other tests


def test_refused_request_still_spends_its_jti(oauth_client: TestClient, oauth_db: Database) -> None:
    # The scope is not inside the assertion: a replay must not get a second try with another.
    backend = make_backend(oauth_db, SCOPE)
    form = {
        "grant_type": "client_credentials",
        "scope": "system/Goal.rs",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": backend.assertion(),
    }
    assert _error(oauth_client.post("/oauth/token", data=form)) == "invalid_scope"
    retry = {**form, "scope": "system/Observation.rs"}
    assert _error(oauth_client.post("/oauth/token", data=retry)) == "invalid_client"
