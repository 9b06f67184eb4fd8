"""Token revocation (RFC 7009) and introspection (RFC 7662): a client revokes its own access or
refresh tokens (another client's are refused), revoked tokens are refused at once and
introspect as inactive; introspection is for backend services only; both are advertised."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.auth import clients
from service.storage.db import Database
from tests.auth.conftest import (
    ASSERTION_TYPE,
    BSN_A,
    REDIRECT,
    Backend,
    World,
    backend_token,
    make_backend,
    pgo_token,
    register,
)

INDEFINITE = {"term": "indefinite"}


@pytest.fixture
def ehr(oauth_db: Database) -> Backend:
    """A backend service that may introspect."""
    return make_backend(oauth_db, "system/Observation.rs")


def _introspect(http: TestClient, ehr: Backend, token: str) -> dict[str, Any]:
    response = http.post(
        "/oauth/introspect",
        data={
            "token": token,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": ehr.assertion(),
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


def _read(http: TestClient, token: str, world: World) -> int:
    url = f"/fhir/Observation/{world.obs_a}"
    return http.get(url, headers={"Authorization": f"Bearer {token}"}).status_code


def test_revoking_an_access_token(
    oauth_client: TestClient, pgo: tuple[str, str], world: World, ehr: Backend
) -> None:
    body = pgo_token(oauth_client, pgo, BSN_A)
    token = body["access_token"]
    active = _introspect(oauth_client, ehr, token)
    assert active["active"] is True
    assert active["patient"] == world.a and active["client_id"] == pgo[0]
    assert "patient/Observation.rs" in active["scope"].split()
    revoked = oauth_client.post(
        "/oauth/revoke", data={"token": token, "token_type_hint": "access_token"}, auth=pgo
    )
    assert revoked.status_code == 200, revoked.text
    assert _read(oauth_client, token, world) == 401  # this worker: at once
    assert _introspect(oauth_client, ehr, token) == {"active": False}
    again = oauth_client.post("/oauth/revoke", data={"token": token}, auth=pgo)
    assert again.status_code == 200  # RFC 7009: an invalid token is no error


def test_revoking_a_refresh_token_ends_the_consent(
    oauth_client: TestClient, pgo: tuple[str, str], world: World, ehr: Backend
) -> None:
    body = pgo_token(oauth_client, pgo, BSN_A, term=INDEFINITE)
    rt, access = body["refresh_token"], body["access_token"]
    info = _introspect(oauth_client, ehr, rt)
    assert info["active"] is True and info["token_type"] == "refresh_token"
    assert info["patient"] == world.a
    revoked = oauth_client.post(
        "/oauth/revoke", data={"token": rt, "token_type_hint": "refresh_token"}, auth=pgo
    )
    assert revoked.status_code == 200
    refresh = oauth_client.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": rt}, auth=pgo
    )
    assert refresh.json()["error"] == "invalid_grant"
    assert _read(oauth_client, access, world) == 401  # issued under the same consent
    assert _introspect(oauth_client, ehr, rt) == {"active": False}
    assert _introspect(oauth_client, ehr, access) == {"active": False}


def test_only_the_holder_may_revoke(
    oauth_client: TestClient, pgo: tuple[str, str], world: World, oauth_db: Database
) -> None:
    other, secret = clients.new_pgo("other.example.org", "Andere PGO", [REDIRECT])
    register(oauth_db, other)
    token = pgo_token(oauth_client, pgo, BSN_A)["access_token"]
    refused = oauth_client.post(
        "/oauth/revoke", data={"token": token}, auth=(other.client_id, secret)
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    assert _read(oauth_client, token, world) == 200
    unauthenticated = oauth_client.post("/oauth/revoke", data={"token": token})
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"] == "invalid_client"
    wrong_secret = oauth_client.post("/oauth/revoke", data={"token": token}, auth=(pgo[0], "x"))
    assert wrong_secret.json()["error"] == "invalid_client"
    assert _read(oauth_client, token, world) == 200


def test_a_backend_revokes_its_own_token(
    oauth_client: TestClient, world: World, ehr: Backend
) -> None:
    token = backend_token(oauth_client, ehr, "system/Observation.rs").json()["access_token"]
    assert _read(oauth_client, token, world) == 200
    revoked = oauth_client.post(
        "/oauth/revoke",
        data={
            "token": token,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": ehr.assertion(),
        },
    )
    assert revoked.status_code == 200, revoked.text
    assert _read(oauth_client, token, world) == 401


def test_introspection_is_for_backend_services(
    oauth_client: TestClient, pgo: tuple[str, str], world: World, ehr: Backend
) -> None:
    token = pgo_token(oauth_client, pgo, BSN_A)["access_token"]
    as_pgo = oauth_client.post("/oauth/introspect", data={"token": token}, auth=pgo)
    assert as_pgo.status_code == 400
    assert as_pgo.json()["error"] == "unauthorized_client"
    anonymous = oauth_client.post("/oauth/introspect", data={"token": token})
    assert anonymous.status_code == 401
    assert _introspect(oauth_client, ehr, "garbage") == {"active": False}
    assert _introspect(oauth_client, ehr, "a.b.c") == {"active": False}


def test_advertised_in_discovery_and_capability_statement(
    oauth_client: TestClient,
) -> None:
    smart = oauth_client.get("/fhir/.well-known/smart-configuration").json()
    assert smart["revocation_endpoint"] == "http://testserver/oauth/revoke"
    assert smart["introspection_endpoint"] == "http://testserver/oauth/introspect"
    assert smart["management_endpoint"] == "http://testserver/oauth/consents"
    assert "refresh_token" in smart["grant_types_supported"]
    assert "permission-offline" in smart["capabilities"]
    assert "offline_access" in smart["scopes_supported"]
    meta = oauth_client.get("/fhir/metadata").json()
    uris = {
        e["url"]: e["valueUri"]
        for ext in meta["rest"][0]["security"]["extension"]
        for e in ext.get("extension", [])
    }
    assert uris["revoke"] == smart["revocation_endpoint"]
    assert uris["introspect"] == smart["introspection_endpoint"]
    assert uris["manage"] == smart["management_endpoint"]


@pytest.mark.parametrize("path", ["/oauth/revoke", "/oauth/introspect"])
def test_bad_requests_get_rfc_errors_never_500(
    oauth_client: TestClient, pgo: tuple[str, str], path: str
) -> None:
    as_json = oauth_client.post(path, json={"token": "x"}, auth=pgo)
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    nul = oauth_client.post(
        path,
        content=b"token=a%00b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=pgo,
    )
    assert nul.status_code == 400 and nul.json()["error"] == "invalid_request"
    missing = oauth_client.post(path, data={"token_type_hint": "access_token"}, auth=pgo)
    assert missing.status_code in (400, 401)  # no token (or, introspecting, not a backend)
    assert "error" in missing.json()
    # an unknown hint is only ignored (RFC 7009 section 2.1): revoking an unknown token is no error
    hint = oauth_client.post(path, data={"token": "x", "token_type_hint": "id_token"}, auth=pgo)
    assert hint.status_code == (200 if path == "/oauth/revoke" else 400), hint.text
