"""One authorization transaction, one decision: a consent form posted twice (or a login form
reused to reach a second consent page) does not mint a second code."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.storage.db import Database
from service.storage.tables import oauth_codes
from tests.auth.conftest import BSN_A, FHIR, REDIRECT, World, code_of, form_fields, pkce


def _codes(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(oauth_codes)).scalar_one())


def test_consent_form_posted_twice_mints_one_code(
    oauth_client: TestClient, oauth_db: Database, world: World, pgo: tuple[str, str]
) -> None:
    page = oauth_client.get(
        "/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": pgo[0],
            "redirect_uri": REDIRECT,
            "scope": "patient/Observation.rs",
            "state": "s1",
            "aud": FHIR,
            "code_challenge": pkce()[1],
            "code_challenge_method": "S256",
        },
    )
    login_fields = form_fields(page.text)
    consent = oauth_client.post("/oauth/login", data={**login_fields, "bsn": BSN_A})
    fields = {**form_fields(consent.text), "decision": "allow"}
    first = oauth_client.post("/oauth/consent", data=fields, follow_redirects=False)
    assert first.status_code == 302 and code_of(first)
    # the cookie is gone after the decision; a replay that brings it back still fails
    oauth_client.cookies.set("telemon_csrf", login_fields["csrf_token"], path="/oauth")
    again = oauth_client.post("/oauth/consent", data=fields, follow_redirects=False)
    assert again.status_code == 400 and "location" not in again.headers
    denied = oauth_client.post(
        "/oauth/consent", data={**fields, "decision": "deny"}, follow_redirects=False
    )
    assert denied.status_code == 400 and "location" not in denied.headers
    # logging in again with the same login form leads to a consent page that cannot be used
    relogin = oauth_client.post("/oauth/login", data={**login_fields, "bsn": BSN_A})
    assert relogin.status_code == 200
    third = oauth_client.post(
        "/oauth/consent",
        data={**form_fields(relogin.text), "decision": "allow"},
        follow_redirects=False,
    )
    assert third.status_code == 400 and "location" not in third.headers
    assert _codes(oauth_db) == 1
