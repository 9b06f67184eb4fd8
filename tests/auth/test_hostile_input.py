"""Regression cases for OAuth requests that once answered 500 (issue 12, findings 3 and 4):
non-ASCII CSRF tokens, characters Authlib forbids in error descriptions, NUL characters in the
token request; on both backends."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from service.storage.db import Database
from tests.auth.conftest import (
    REDIRECT,
    backend_token,
    form_fields,
    make_backend,
    pkce,
)
from tests.auth.test_pgo_flow import _authorize_raw, _good


def _authorize(http: TestClient, client_id: str, **overrides: str) -> object:
    _, challenge = pkce()
    return _authorize_raw(http, **{**_good(client_id, challenge), **overrides})


@pytest.mark.parametrize(
    "overrides",
    [
        {"redirect_uri": REDIRECT + '"'},
        {"redirect_uri": REDIRECT + "/é"},
        {"redirect_uri": REDIRECT + "\\x"},
        {"response_type": 'co"de'},
        {"response_type": "cöde"},
        {"state": "é"},
        {"scope": 'patient/Observation.rs "x"'},
    ],
)
def test_authorize_with_characters_rfc_6749_forbids_is_a_400(
    oauth_client: TestClient, pgo: tuple[str, str], overrides: dict[str, str]
) -> None:
    response = _authorize(oauth_client, pgo[0], **overrides)
    assert response.status_code == 400, response.text  # type: ignore[attr-defined]
    assert "location" not in response.headers  # type: ignore[attr-defined]
    assert "invalid_request" in response.text  # type: ignore[attr-defined]


def test_a_state_with_quotes_still_comes_back(
    oauth_client: TestClient, pgo: tuple[str, str]
) -> None:
    """Quotes are VSCHARs: allowed in a state, and returned as sent with an error."""
    response = _authorize(oauth_client, pgo[0], state='s"1', aud="https://other.example/fhir")
    assert response.status_code == 302  # type: ignore[attr-defined]
    location = response.headers["location"]  # type: ignore[attr-defined]
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query["error"] == "invalid_request" and query["state"] == 's"1'


@pytest.mark.parametrize("csrf", ["é", "\u2603" * 40, "x"])
def test_login_and_consent_with_a_non_ascii_csrf_token_are_a_400(
    oauth_client: TestClient, pgo: tuple[str, str], csrf: str
) -> None:
    page = _authorize(oauth_client, pgo[0])
    fields = form_fields(page.text)  # type: ignore[attr-defined]
    for path in ("/oauth/login", "/oauth/consent"):
        response = oauth_client.post(
            path, data={**fields, "csrf_token": csrf, "bsn": "111222333", "decision": "allow"}
        )
        assert response.status_code == 400, (path, response.text)
        assert "CSRF" in response.text


def test_token_request_with_nul_in_a_form_field_is_a_400(oauth_client: TestClient) -> None:
    response = oauth_client.post(
        "/oauth/token", data={"grant_type": "client_credentials", "client_id": "a\x00b"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert "client_id" in response.json()["error_description"]


def test_token_request_with_nul_in_basic_credentials_is_a_401(oauth_client: TestClient) -> None:
    basic = base64.b64encode(b"pgo\x00.example.org:secret").decode()
    response = oauth_client.post(
        "/oauth/token",
        data={"grant_type": "authorization_code", "code": "x", "redirect_uri": REDIRECT},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize("claim", ["sub", "jti"])
def test_client_assertion_with_nul_in_a_claim_is_a_400(
    oauth_client: TestClient, oauth_db: Database, claim: str
) -> None:
    scope = "system/Observation.rs"
    backend = make_backend(oauth_db, scope)
    overrides = (
        {"sub": backend.client_id + "\x00", "iss": backend.client_id + "\x00"}
        if claim == "sub"
        else {"jti": "a\x00b"}
    )
    response = backend_token(oauth_client, backend, scope, **overrides)
    # invalid_client is a 400 without an Authorization header (RFC 6749 section 5.2)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_client"
