"""Patient login with DigiD through a TVS/OIDC broker (TELEMON_IDENTITY_PROVIDER=oidc), end to
end against a fake broker on loopback: authorization code + PKCE S256 + nonce at the broker,
id_token verified with its JWKS, BSN claim mapped to the Patient, then consent and a PGO token."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.app import create_app
from service.auth import consent_records
from service.settings import Settings
from service.storage import consent_store
from tests.auth.conftest import BSN_A, FHIR, REDIRECT, World, code_of, form_fields, pkce
from tests.auth.oidc_broker import CLIENT_ID, CLIENT_SECRET, FakeBroker, forged_key, run_broker

UNKNOWN_BSN = "999999990"  # passes the 11-check, but no Patient has it


@pytest.fixture
def broker() -> Iterator[FakeBroker]:
    """The fake DigiD broker on loopback."""
    yield from run_broker()


@pytest.fixture
def oidc_client(database_url: str, broker: FakeBroker) -> Iterator[TestClient]:
    """An oauth-mode app whose patients log in through the fake broker."""
    settings = Settings(
        database_url=database_url,
        auth="oauth",
        base_url=FHIR,
        profiles_dir=Path(__file__).resolve().parents[2] / "fhir_profiles",
        alerts_enabled=False,
        identity_provider="oidc",
        oidc_issuer=broker.issuer,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=SecretStr(CLIENT_SECRET),
    )
    with TestClient(create_app(settings), base_url="http://testserver") as c:
        yield c


@pytest.fixture
def oauth_client(oidc_client: TestClient) -> TestClient:
    """The app the shared fixtures (``world``, ``pgo``) populate."""
    return oidc_client


def _login(http: TestClient, client_id: str, challenge: str) -> httpx.Response:
    """authorize → the broker (in the patient's browser) → telemon's callback."""
    start = http.get(
        "/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "scope": "launch/patient patient/Patient.rs patient/Observation.rs",
            "state": "pgo-state",
            "aud": FHIR,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        follow_redirects=False,
    )
    assert start.status_code == 302, start.text
    at_broker = httpx.get(start.headers["location"], follow_redirects=False)
    assert at_broker.status_code == 302, at_broker.text
    back = urlsplit(at_broker.headers["location"])
    assert back.path == "/oauth/oidc/callback"
    return http.get(f"{back.path}?{back.query}", follow_redirects=False)


def _query(response: httpx.Response) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}


def test_digid_login_through_the_broker_gives_a_pgo_token(
    oidc_client: TestClient, broker: FakeBroker, world: World, pgo: tuple[str, str]
) -> None:
    broker.bsn = BSN_A
    verifier, challenge = pkce()
    consent = _login(oidc_client, pgo[0], challenge)
    assert consent.status_code == 200, consent.text
    assert "Toestemming" in consent.text and "Voorbeeld PGO" in consent.text
    sent = broker.authorize_requests[-1]
    assert sent["code_challenge_method"] == "S256" and sent["nonce"] and sent["state"]
    assert sent["redirect_uri"] == "http://testserver/oauth/oidc/callback"
    assert broker.token_requests == 1  # the code was redeemed with the PKCE verifier
    back = oidc_client.post(
        "/oauth/consent",
        data={**form_fields(consent.text), "decision": "allow"},
        follow_redirects=False,
    )
    assert back.status_code == 302 and _query(back)["state"] == "pgo-state"
    token = oidc_client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code_of(back),
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
        auth=pgo,
    )
    assert token.status_code == 200, token.text
    body = token.json()
    assert body["patient"] == world.a
    me = oidc_client.get(
        f"/fhir/Patient/{world.a}", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status_code == 200
    # the simulated DigiD form is not available in this mode
    assert oidc_client.post("/oauth/login", data={"bsn": BSN_A}).status_code == 404


def _login_failures(http: TestClient) -> list[str]:
    """The outcome descriptions of the failed-login AuditEvents."""
    fhir = http.app.state.telemon.fhir  # type: ignore[attr-defined]
    events = [orjson.loads(m.content) for m in fhir.search("AuditEvent", []).matches]
    return [
        e["outcomeDesc"]
        for e in events
        if e["outcome"] == "4" and e.get("outcomeDesc", "").startswith("login failed")
    ]


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ({"nonce": "not-the-nonce"}, "'nonce'"),
        ({"iss": "https://evil.example"}, "'iss'"),
        ({"aud": "someone-else"}, "'aud'"),
        ({"exp": 1}, "expired"),
        ("signature", "bad_signature"),
    ],
    ids=["nonce", "issuer", "audience", "expired", "signature"],
)
def test_a_bad_id_token_is_refused(
    oidc_client: TestClient,
    broker: FakeBroker,
    world: World,
    pgo: tuple[str, str],
    tamper: dict[str, Any] | str,
    reason: str,
) -> None:
    broker.bsn = BSN_A
    if tamper == "signature":
        broker.signing_key = forged_key()
    else:
        assert isinstance(tamper, dict)
        broker.tamper = tamper
    response = _login(oidc_client, pgo[0], pkce()[1])
    assert response.status_code == 400
    assert "location" not in response.headers and "Toestemming" not in response.text
    [failure] = _login_failures(oidc_client)  # audited, with the reason
    assert reason in failure


@pytest.mark.parametrize("bsn", [UNKNOWN_BSN, "123456789", None])
def test_unknown_or_invalid_bsn_is_refused(
    oidc_client: TestClient,
    broker: FakeBroker,
    world: World,
    pgo: tuple[str, str],
    bsn: str | None,
) -> None:
    broker.bsn = bsn
    response = _login(oidc_client, pgo[0], pkce()[1])
    assert response.status_code == 400
    assert "location" not in response.headers and "Toestemming" not in response.text
    [failure] = _login_failures(oidc_client)
    assert "BSN" in failure


def test_broker_error_is_access_denied_for_the_client(
    oidc_client: TestClient, broker: FakeBroker, world: World, pgo: tuple[str, str]
) -> None:
    broker.error = "login_required"
    response = _login(oidc_client, pgo[0], pkce()[1])
    assert response.status_code == 302
    assert response.headers["location"].startswith(REDIRECT)
    assert _query(response) == {"error": "access_denied", "state": "pgo-state"} or (
        _query(response)["error"] == "access_denied"
        and _query(response)["state"] == "pgo-state"
        and "code" not in _query(response)
    )


def test_callback_without_the_login_cookie_or_with_another_state_is_refused(
    oidc_client: TestClient, broker: FakeBroker, world: World, pgo: tuple[str, str]
) -> None:
    broker.bsn = BSN_A
    start = oidc_client.get(
        "/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": pgo[0],
            "redirect_uri": REDIRECT,
            "scope": "patient/Observation.rs",
            "state": "s",
            "code_challenge": pkce()[1],
            "code_challenge_method": "S256",
        },
        follow_redirects=False,
    )
    back = urlsplit(httpx.get(start.headers["location"]).headers["location"])
    code = parse_qs(back.query)["code"][0]
    wrong_state = oidc_client.get(f"/oauth/oidc/callback?code={code}&state=other")
    assert wrong_state.status_code == 400
    oidc_client.cookies.clear()
    no_cookie = oidc_client.get(f"{back.path}?{back.query}")
    assert no_cookie.status_code == 400
    assert broker.token_requests == 0  # nothing was redeemed at the broker


def test_oidc_settings_are_required() -> None:
    from service.auth.oidc import OidcDigiD

    with pytest.raises(ValueError, match="TELEMON_OIDC_ISSUER"):
        OidcDigiD(Settings(identity_provider="oidc"), None)  # type: ignore[arg-type]
    insecure = Settings(
        identity_provider="oidc",
        oidc_issuer="http://broker.example.org",
        oidc_client_id="x",
        oidc_client_secret=SecretStr("y"),
    )
    with pytest.raises(ValueError, match="https"):
        OidcDigiD(insecure, None)  # type: ignore[arg-type]


def test_the_consent_overview_logs_in_through_the_broker(
    oidc_client: TestClient, broker: FakeBroker, world: World, pgo: tuple[str, str], oauth_db: Any
) -> None:
    with oauth_db.write() as conn:
        granted = consent_records.create(
            conn,
            client_id=pgo[0],
            patient_id=world.a,
            subject=f"Patient/{world.a}",
            scope="patient/Observation.rs",
            long_term=True,
            ends_at=None,
            now=int(time.time()),
        )
    broker.bsn = BSN_A
    start = oidc_client.get("/oauth/consents", follow_redirects=False)
    assert start.status_code == 302
    at_broker = httpx.get(start.headers["location"], follow_redirects=False)
    back = urlsplit(at_broker.headers["location"])
    assert back.path == "/oauth/consents/callback"
    assert broker.authorize_requests[-1]["redirect_uri"].endswith("/oauth/consents/callback")
    overview = oidc_client.get(f"{back.path}?{back.query}", follow_redirects=False)
    assert overview.status_code == 200, overview.text
    assert "Voorbeeld PGO" in overview.text and granted.consent_id in overview.text
    csrf = re.search(r'name="csrf_token" value="([^"]*)"', overview.text)
    assert csrf is not None
    withdrawn = oidc_client.post(
        "/oauth/consents/withdraw",
        data={"csrf_token": csrf[1], "consent_id": granted.consent_id},
    )
    assert withdrawn.status_code == 200 and "ingetrokken" in withdrawn.text
    with oauth_db.read() as conn:
        record = consent_store.get(conn, granted.consent_id)
    assert record is not None and record.status == "withdrawn"
    # a replayed callback (its login cookie is gone) is refused
    again = oidc_client.get(f"{back.path}?{back.query}", follow_redirects=False)
    assert again.status_code == 400
