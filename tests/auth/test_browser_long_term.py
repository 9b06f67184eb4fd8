"""Issue 16's acceptance run: a stock client (Authlib's ``OAuth2Client``) against a real server,
the patient in headless Chromium.

1. code + PKCE with long-term consent → refresh → refresh again; the first refresh token is
   then refused and its reuse revokes the family (the current refresh and access tokens too);
2. a second long-term consent: refresh → revoke (RFC 7009) → 401, introspection ``active:
   false``;
3. a third: the patient withdraws it on /oauth/consents (Chromium) → the PGO's next refresh and
   request fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import OAuth2Client

from service.auth import clients
from service.storage.db import Database
from tests.auth.conftest import (
    ASSERTION_TYPE,
    BSN_A,
    World,
    make_backend,
    register,
)
from tests.auth.test_browser_pgo import PgoCallback
from tests.chromium import chromium

SCOPE = "launch/patient offline_access patient/Patient.rs patient/Observation.rs"


@pytest.fixture
def callback() -> Iterator[PgoCallback]:
    """The PGO's callback server."""
    with PgoCallback() as server:
        yield server


@pytest.fixture(autouse=True)
def _loopback_http(monkeypatch: pytest.MonkeyPatch) -> None:
    # Authlib insists on https; the test server is plain http on loopback.
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")


class Pgo:
    """The PGO app: Authlib's stock OAuth2Client with its registration."""

    def __init__(self, root: str, client_id: str, secret: str, redirect: str) -> None:
        self.root = root
        self.client = OAuth2Client(
            client_id,
            secret,
            scope=SCOPE,
            redirect_uri=redirect,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic",
        )
        self.verifier = ""

    def authorization_url(self) -> str:
        self.verifier = generate_token(48)  # Authlib derives the S256 challenge from it
        url, _ = self.client.create_authorization_url(
            f"{self.root}/oauth/authorize", code_verifier=self.verifier, aud=f"{self.root}/fhir"
        )
        return str(url)

    def finish(self, callback_url: str) -> dict[str, Any]:
        token: dict[str, Any] = self.client.fetch_token(
            f"{self.root}/oauth/token",
            authorization_response=callback_url,
            code_verifier=self.verifier,
        )
        return token

    def refresh(self) -> dict[str, Any]:
        token: dict[str, Any] = self.client.refresh_token(f"{self.root}/oauth/token")
        return token

    def read(self, path: str) -> int:
        return int(self.client.get(f"{self.root}/fhir/{path}").status_code)


def _consent(page: Any, pgo: Pgo, callback: PgoCallback) -> dict[str, Any]:
    """The patient consents long-term (indefinitely) in Chromium; the PGO gets its tokens."""
    page.goto(pgo.authorization_url())
    page.fill("#bsn", BSN_A)
    page.click("form[action='/oauth/login'] button[type=submit]")
    page.wait_for_selector("form[action='/oauth/consent']")
    assert not page.is_checked("input[name=term][value=indefinite]")  # never preselected
    assert not page.is_checked("input[name=term][value=until]")
    page.check("input[name=term][value=indefinite]")
    page.click("button[name=decision][value=allow]")
    page.wait_for_url(f"{callback.url}?**", timeout=10_000)
    token = pgo.finish(page.url)
    assert token["refresh_token"] and token["patient"]
    return token


def test_long_term_consent_with_a_stock_client(
    oauth_live_server: str, oauth_db: Database, world: World, callback: PgoCallback
) -> None:
    root = oauth_live_server
    registration, secret = clients.new_pgo("pgo.example.org", "Voorbeeld PGO", [callback.url])
    register(oauth_db, registration)
    ehr = make_backend(oauth_db, "system/Observation.rs")

    def introspect(token: str) -> dict[str, Any]:
        body: dict[str, Any] = httpx.post(
            f"{root}/oauth/introspect",
            data={
                "token": token,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": ehr.assertion(aud=f"{root}/oauth/token"),
            },
        ).json()
        return body

    with chromium() as browser, ExitStack() as pgo_clients:
        context = browser.new_context()
        page = context.new_page()

        # 1. rotation, and reuse revoking the family
        pgo = Pgo(root, registration.client_id, secret, callback.url)
        pgo_clients.enter_context(pgo.client)
        first = _consent(page, pgo, callback)
        assert pgo.read(f"Observation/{world.obs_a}") == 200
        second = pgo.refresh()
        third = pgo.refresh()
        assert len({first["refresh_token"], second["refresh_token"], third["refresh_token"]}) == 3
        assert pgo.read(f"Observation/{world.obs_a}") == 200
        with pytest.raises(OAuthError) as reused:
            pgo.client.refresh_token(
                f"{root}/oauth/token", refresh_token=first["refresh_token"]
            )
        assert reused.value.error == "invalid_grant"
        with pytest.raises(OAuthError):
            pgo.refresh()  # the family is revoked: the current one too
        assert introspect(third["access_token"]) == {"active": False}
        assert pgo.read(f"Observation/{world.obs_a}") == 401

        # 2. refresh → revoke → 401; introspection says inactive
        pgo = Pgo(root, registration.client_id, secret, callback.url)
        pgo_clients.enter_context(pgo.client)
        _consent(page, pgo, callback)
        refreshed = pgo.refresh()
        assert introspect(refreshed["access_token"])["active"] is True
        assert introspect(refreshed["refresh_token"])["active"] is True
        revoked = pgo.client.revoke_token(
            f"{root}/oauth/revoke",
            token=refreshed["access_token"],
            token_type_hint="access_token",
        )
        assert revoked.status_code == 200
        assert pgo.read(f"Observation/{world.obs_a}") == 401
        assert introspect(refreshed["access_token"]) == {"active": False}
        revoked = pgo.client.revoke_token(
            f"{root}/oauth/revoke",
            token=refreshed["refresh_token"],
            token_type_hint="refresh_token",
        )
        assert revoked.status_code == 200
        assert introspect(refreshed["refresh_token"]) == {"active": False}
        with pytest.raises(OAuthError):
            pgo.refresh()

        # 3. withdrawn by the patient on the consent overview
        pgo = Pgo(root, registration.client_id, secret, callback.url)
        pgo_clients.enter_context(pgo.client)
        _consent(page, pgo, callback)
        assert pgo.read(f"Observation/{world.obs_a}") == 200
        page.goto(f"{root}/oauth/consents")
        page.fill("#bsn", BSN_A)
        page.click("form[action='/oauth/consents/login'] button[type=submit]")
        page.wait_for_selector("text=Uw toestemmingen")
        body = page.inner_text("body")
        assert "Voorbeeld PGO" in body and "onbepaalde tijd" in body
        rows = page.locator("form[action='/oauth/consents/withdraw']")
        assert rows.count() == 1  # the ended consents of 1 and 2 are not listed
        rows.locator("button").click()
        page.wait_for_selector("text=ingetrokken")
        assert page.locator("form[action='/oauth/consents/withdraw']").count() == 0
        with pytest.raises(OAuthError) as refused:
            pgo.refresh()
        assert refused.value.error == "invalid_grant"
        assert pgo.read(f"Observation/{world.obs_a}") == 401
        context.close()
