"""The PGO flow (MedMij-style authorization code + PKCE S256) and its negative cases
(docs/security.md; ONC (g)(10) invalid-PKCE and invalid-aud cases)."""

from __future__ import annotations

import html
import re
import time
from urllib.parse import parse_qs, urlsplit

import httpx
from authlib.integrations.httpx_client import OAuth2Client
from fastapi.testclient import TestClient
from sqlalchemy import update

from service.auth.tokens import TokenService
from service.bootstrap import build_service
from service.settings import Settings
from service.storage.db import Database
from service.storage.tables import oauth_codes
from tests.auth.conftest import (
    BSN_A,
    BSN_B,
    FHIR,
    REDIRECT,
    World,
    authorize,
    code_of,
    form_fields,
    pgo_token,
    pkce,
)
from tests.factories import patient


def _query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def test_full_flow_with_authlib_client_on_live_server(
    oauth_live_server: str, oauth_settings: Settings, oauth_db: Database, pgo: tuple[str, str]
) -> None:
    root = oauth_live_server
    # the patient exists (created through the service, not the API)
    patient_id = build_service(oauth_settings, oauth_db).create(patient(BSN_A)).res_id
    discovery = httpx.get(f"{root}/fhir/.well-known/smart-configuration").json()
    assert discovery["code_challenge_methods_supported"] == ["S256"]
    with OAuth2Client(
        client_id=pgo[0],
        client_secret=pgo[1],
        redirect_uri=REDIRECT,
        scope="launch/patient patient/Observation.rs patient/Patient.rs",
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    ) as client:
        verifier = pkce()[0]
        url, state = client.create_authorization_url(
            discovery["authorization_endpoint"], code_verifier=verifier, aud=f"{root}/fhir"
        )
        with httpx.Client(follow_redirects=False) as browser:  # the patient's browser
            login = browser.get(url)
            assert login.status_code == 200
            assert "Gesimuleerde DigiD" in login.text and 'name="bsn"' in login.text
            consent = browser.post(
                f"{root}/oauth/login", data={**form_fields(login.text), "bsn": BSN_A}
            )
            assert consent.status_code == 200
            assert "Voorbeeld PGO" in html.unescape(consent.text)
            assert "Toestemming" in consent.text and "Consent" in consent.text
            back = browser.post(
                f"{root}/oauth/consent", data={**form_fields(consent.text), "decision": "allow"}
            )
        assert back.status_code == 302
        location = back.headers["location"]
        assert location.startswith(REDIRECT) and _query(location)["state"] == state
        token = client.fetch_token(
            discovery["token_endpoint"], authorization_response=location, code_verifier=verifier
        )
        assert token["patient"] == patient_id
        assert 0 < token["expires_in"] <= 900
        assert "refresh_token" not in token
        me = client.get(f"{root}/fhir/Patient/{patient_id}")
        assert me.status_code == 200 and me.json()["id"] == patient_id


def test_token_response_headers_and_claims(
    oauth_client: TestClient, world: World, pgo: tuple[str, str]
) -> None:
    verifier, challenge = pkce()
    response = authorize(oauth_client, pgo[0], BSN_A, challenge=challenge)
    assert _query(response.headers["location"])["state"] == "st-123"
    token = oauth_client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code_of(response),
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
        auth=pgo,
    )
    assert token.status_code == 200
    assert token.headers["cache-control"] == "no-store"
    assert token.headers["pragma"] == "no-cache"
    body = token.json()
    assert body["patient"] == world.a and body["expires_in"] <= 900
    assert set(body["scope"].split()) == {
        "launch/patient",
        "patient/Observation.rs",
        "patient/Patient.rs",
    }


def test_medmij_data_service_scope_maps_to_smart_scopes(
    oauth_client: TestClient, world: World, pgo: tuple[str, str]
) -> None:
    body = pgo_token(oauth_client, pgo, BSN_A, scope="telemonitoring")
    assert "patient/Observation.rs" in body["scope"].split()
    assert "patient/AuditEvent.rs" in body["scope"].split()


def _authorize_raw(http: TestClient, **params: str) -> httpx.Response:
    return http.get("/oauth/authorize", params=params, follow_redirects=False)


def _good(client_id: str, challenge: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": "patient/Observation.rs",
        "state": "s1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }


def test_authorize_request_negative_cases(
    oauth_client: TestClient, world: World, pgo: tuple[str, str]
) -> None:
    _, challenge = pkce()
    good = _good(pgo[0], challenge)
    # a bad or unknown redirect URI / client is never redirected to
    for bad in (
        {"redirect_uri": "https://evil.example/cb"},
        {"redirect_uri": REDIRECT + "/"},
        {"redirect_uri": ""},
        {"client_id": "unknown"},
    ):
        response = _authorize_raw(oauth_client, **{**good, **bad})
        assert response.status_code == 400 and "location" not in response.headers, bad
    # everything else goes back to the client with an error and the state
    for bad, error in (
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": ""}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"aud": "https://other.example/fhir"}, "invalid_request"),
        ({"scope": "system/Observation.rs"}, "invalid_scope"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ):
        params = {k: v for k, v in {**good, **bad}.items() if v != ""}
        response = _authorize_raw(oauth_client, **params)
        assert response.status_code == 302, (bad, response.text)
        query = _query(response.headers["location"])
        assert response.headers["location"].startswith(REDIRECT)
        assert query["error"] == error and query["state"] == "s1", bad


def test_login_and_consent_negative_cases(
    oauth_client: TestClient, world: World, pgo: tuple[str, str]
) -> None:
    _, challenge = pkce()
    page = _authorize_raw(oauth_client, **_good(pgo[0], challenge))
    fields = form_fields(page.text)
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    for bsn in ("123456789", "12345678", "", "999999990"):  # 11-check fails / unknown
        response = oauth_client.post("/oauth/login", data={**fields, "bsn": bsn})
        assert response.status_code == 400 and 'name="bsn"' in response.text, bsn
    # CSRF: a wrong token, or no cookie
    bad_csrf = oauth_client.post("/oauth/login", data={**fields, "csrf_token": "x", "bsn": BSN_A})
    assert bad_csrf.status_code == 400
    cookies = dict(oauth_client.cookies)
    oauth_client.cookies.clear()
    no_cookie = oauth_client.post("/oauth/login", data={**fields, "bsn": BSN_A})
    assert no_cookie.status_code == 400
    oauth_client.cookies.update(cookies)
    # a tampered state token
    tampered = {**fields, "tx": fields["tx"][:-4] + "AAAA"}
    assert oauth_client.post("/oauth/login", data={**tampered, "bsn": BSN_A}).status_code == 400
    consent = oauth_client.post("/oauth/login", data={**fields, "bsn": BSN_A})
    consent_fields = form_fields(consent.text)
    # the login-stage state cannot be used to skip the login
    skip = oauth_client.post("/oauth/consent", data={**fields, "decision": "allow"})
    assert skip.status_code == 400
    odd = oauth_client.post("/oauth/consent", data={**consent_fields, "decision": "maybe"})
    assert odd.status_code == 400
    denied = oauth_client.post(
        "/oauth/consent", data={**consent_fields, "decision": "deny"}, follow_redirects=False
    )
    assert denied.status_code == 302
    query = _query(denied.headers["location"])
    assert query == {"error": "access_denied", "state": "s1"} or (
        query["error"] == "access_denied" and query["state"] == "s1"
    )


def _redeem(http: TestClient, pgo: tuple[str, str], code: str, **data: str) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, **data}
    return http.post("/oauth/token", data={k: v for k, v in form.items() if v}, auth=pgo)


def test_token_request_negative_cases(
    oauth_client: TestClient, oauth_db: Database, world: World, pgo: tuple[str, str]
) -> None:
    from service.auth import clients
    from tests.auth.conftest import register

    other, other_secret = clients.new_pgo("other.example.org", "Ander PGO", [REDIRECT])
    register(oauth_db, other)

    def fresh() -> tuple[str, str]:
        verifier, challenge = pkce()
        return verifier, code_of(authorize(oauth_client, pgo[0], BSN_A, challenge=challenge))

    cases = [
        ({"code_verifier": ""}, "invalid_request"),  # verifier missing
        ({"code_verifier": "x" * 43}, "invalid_grant"),  # wrong verifier
        ({"code_verifier": "short"}, "invalid_request"),  # malformed
        ({"redirect_uri": ""}, "invalid_grant"),  # MedMij 205: must be sent
        ({"redirect_uri": "https://pgo.example.org/other"}, "invalid_grant"),
    ]
    for overrides, error in cases:
        verifier, code = fresh()
        response = _redeem(oauth_client, pgo, code, **{"code_verifier": verifier, **overrides})
        assert response.status_code == 400 and response.json()["error"] == error, overrides
        assert response.headers["cache-control"] == "no-store"
    # verifier that equals the challenge (plain-style) fails
    verifier, challenge = pkce()
    code = code_of(authorize(oauth_client, pgo[0], BSN_A, challenge=challenge))
    assert _redeem(oauth_client, pgo, code, code_verifier=challenge).json()["error"] == (
        "invalid_grant"
    )
    # a code issued to one client cannot be redeemed by another
    verifier, code = fresh()
    response = _redeem(oauth_client, (other.client_id, other_secret), code, code_verifier=verifier)
    assert response.json()["error"] == "invalid_grant"
    # wrong secret
    verifier, code = fresh()
    response = _redeem(oauth_client, (pgo[0], "wrong"), code, code_verifier=verifier)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    # an expired code (≤ 60 s) is refused
    verifier, code = fresh()
    with oauth_db.write() as conn:
        conn.execute(update(oauth_codes).values(expires_at=int(time.time()) - 1))
    assert _redeem(oauth_client, pgo, code, code_verifier=verifier).json()["error"] == (
        "invalid_grant"
    )


def test_code_reuse_is_refused_and_revokes_the_token(
    oauth_client: TestClient, world: World, pgo: tuple[str, str]
) -> None:
    verifier, challenge = pkce()
    code = code_of(authorize(oauth_client, pgo[0], BSN_A, challenge=challenge))
    first = _redeem(oauth_client, pgo, code, code_verifier=verifier)
    assert first.status_code == 200
    headers = {"Authorization": f"Bearer {first.json()['access_token']}"}
    assert oauth_client.get(f"/fhir/Patient/{world.a}", headers=headers).status_code == 200
    second = _redeem(oauth_client, pgo, code, code_verifier=verifier)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    revoked = oauth_client.get(f"/fhir/Patient/{world.a}", headers=headers)
    assert revoked.status_code == 401


def test_bearer_token_failures(
    oauth_client: TestClient, oauth_db: Database, world: World, pgo: tuple[str, str]
) -> None:
    url = f"/fhir/Observation/{world.obs_a}"
    missing = oauth_client.get(url)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["resourceType"] == "OperationOutcome"
    for header in ("Basic abc", "Bearer", "Bearer not-a-jwt", "Bearer a.b.c"):
        response = oauth_client.get(url, headers={"Authorization": header})
        assert response.status_code == 401, header
        assert "www-authenticate" in response.headers
    tokens: TokenService = oauth_client.app.state.telemon.auth.tokens  # type: ignore[attr-defined]
    common = {
        "issuer": "http://testserver",
        "client_id": pgo[0],
        "scope": "patient/Observation.rs",
        "subject": f"Patient/{world.a}",
        "patient_id": world.a,
    }
    expired = tokens.issue(audience=FHIR, lifetime=-5, **common)  # type: ignore[arg-type]
    wrong_aud = tokens.issue(audience="https://other.example/fhir", lifetime=60, **common)  # type: ignore[arg-type]
    good = tokens.issue(audience=FHIR, lifetime=60, **common)  # type: ignore[arg-type]
    for issued, status in ((expired, 401), (wrong_aud, 401), (good, 200)):
        response = oauth_client.get(url, headers={"Authorization": f"Bearer {issued.access_token}"})
        assert response.status_code == status
    # a token signed by another key (a different server) is refused
    from joserfc import jwt
    from joserfc.jwk import ECKey

    other_key = ECKey.generate_key("P-256", private=True)
    claims = jwt.decode(good.access_token, tokens.key).claims
    forged = jwt.encode({"alg": "ES256", "typ": "at+jwt"}, claims, other_key)
    assert oauth_client.get(url, headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_patient_b_cannot_log_in_as_a(
    oauth_client: TestClient, world: World, pgo: tuple[str, str]
) -> None:
    body_a = pgo_token(oauth_client, pgo, BSN_A)
    body_b = pgo_token(oauth_client, pgo, BSN_B)
    assert body_a["patient"] == world.a and body_b["patient"] == world.b
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", body_a["access_token"])
