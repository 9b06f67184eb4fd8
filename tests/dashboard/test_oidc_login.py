"""A clinician's dashboard login through the identity broker (TELEMON_IDENTITY_PROVIDER=oidc),
end to end against the fake broker on loopback: PKCE, state and nonce at the broker, the
id_token verified, its UZI claim mapped to the stored Practitioner."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.app import create_app
from service.dashboard import sessions
from service.demo.data import CLINICIAN_UZI
from service.settings import Settings
from tests.auth.oidc_broker import CLIENT_ID, CLIENT_SECRET, FakeBroker, run_broker
from tests.dashboard.conftest import PROFILES, add_clinician, fhir_of, form_post


@pytest.fixture
def broker() -> Iterator[FakeBroker]:
    """The fake identity broker on loopback."""
    yield from run_broker()


@pytest.fixture(params=["oauth", "open"])
def oidc_dash(
    request: pytest.FixtureRequest, database_url: str, broker: FakeBroker
) -> Iterator[TestClient]:
    """An app whose clinicians log in through the fake broker (in both modes)."""
    settings = Settings(
        database_url=database_url,
        auth=request.param,
        base_url="http://testserver/fhir" if request.param == "oauth" else None,
        profiles_dir=PROFILES,
        alerts_enabled=False,
        identity_provider="oidc",
        oidc_issuer=broker.issuer,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=SecretStr(CLIENT_SECRET),
    )
    with TestClient(create_app(settings), base_url="http://testserver") as c:
        add_clinician(c)
        yield c


def _through_the_broker(client: TestClient) -> httpx.Response:
    """The login button → the broker (in the clinician's browser) → telemon's callback."""
    start = client.get(
        "/dashboard/login/oidc", params={"next": "/dashboard/patients"}, follow_redirects=False
    )
    assert start.status_code == 302, start.text
    cookie = start.headers["set-cookie"]
    assert (
        cookie.startswith(sessions.OIDC_COOKIE)
        and "SameSite=lax" in cookie
        and "HttpOnly" in cookie
    )
    at_broker = httpx.get(start.headers["location"], follow_redirects=False)
    assert at_broker.status_code == 302, at_broker.text
    back = urlsplit(at_broker.headers["location"])
    assert back.path == "/dashboard/oidc/callback"
    return client.get(f"{back.path}?{back.query}", follow_redirects=False)


def test_a_clinician_logs_in_through_the_broker(oidc_dash: TestClient, broker: FakeBroker) -> None:
    page = oidc_dash.get("/dashboard/login")
    assert 'href="/dashboard/login/oidc?next=/dashboard"' in page.text
    assert 'name="uzi"' not in page.text  # no simulated form
    broker.tamper = {"uzi": CLINICIAN_UZI}
    done = _through_the_broker(oidc_dash)
    assert done.status_code == 200, done.text
    assert 'http-equiv="refresh" content="0;url=/dashboard/patients"' in done.text
    sent = broker.authorize_requests[-1]
    assert sent["code_challenge_method"] == "S256" and sent["nonce"] and sent["state"]
    assert sent["redirect_uri"] == "http://testserver/dashboard/oidc/callback"
    assert sessions.COOKIE in oidc_dash.cookies
    assert "dr. Eva Visser" in oidc_dash.get("/dashboard/patients").text
    # the simulated form post does not exist in this mode
    assert form_post(oidc_dash, "/dashboard/login", uzi=CLINICIAN_UZI).status_code == 404


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ({}, "The broker returned no UZI number"),  # a patient's id_token: a BSN, no UZI
        ({"uzi": "900099999"}, "Unknown UZI number"),
        ({"uzi": CLINICIAN_UZI, "aud": "someone-else"}, "Login failed"),
    ],
)
def test_the_broker_login_is_refused_without_a_known_clinician(
    oidc_dash: TestClient, broker: FakeBroker, tamper: dict[str, str], message: str
) -> None:
    broker.bsn = "999990019"
    broker.tamper = tamper
    refused = _through_the_broker(oidc_dash)
    assert refused.status_code == 400 and message in refused.text
    assert sessions.COOKIE not in oidc_dash.cookies


def test_a_callback_without_the_login_cookie_or_with_another_state_is_refused(
    oidc_dash: TestClient, broker: FakeBroker
) -> None:
    broker.tamper = {"uzi": CLINICIAN_UZI}
    start = oidc_dash.get("/dashboard/login/oidc", follow_redirects=False)
    at_broker = httpx.get(start.headers["location"], follow_redirects=False)
    query = parse_qs(urlsplit(at_broker.headers["location"]).query)
    wrong_state = oidc_dash.get(
        "/dashboard/oidc/callback", params={"code": query["code"][0], "state": "other"}
    )
    assert wrong_state.status_code == 400 and "state mismatch" in wrong_state.text
    oidc_dash.cookies.clear()
    no_cookie = oidc_dash.get(
        "/dashboard/oidc/callback", params={"code": query["code"][0], "state": query["state"][0]}
    )
    assert no_cookie.status_code == 400
    assert sessions.COOKIE not in oidc_dash.cookies
    assert fhir_of(oidc_dash).search("Practitioner", []).matches  # the clinician exists


def test_login_failure_pages_are_dutch_by_default(oidc_dash: TestClient) -> None:
    """The login and broker failure pages come from the catalogue, in TELEMON_LANGUAGE (nl)."""
    refused = oidc_dash.get("/dashboard/oidc/callback", params={"error": "access_denied"})
    assert refused.status_code == 400
    assert "Inloggen mislukt" in refused.text and "Login failed" not in refused.text
    assert '<html lang="nl"' in refused.text
    simulated = form_post(oidc_dash, "/dashboard/login", uzi=CLINICIAN_UZI)
    assert simulated.status_code == 404
    assert "Log in via de identiteitsbroker." in simulated.text
    missing = oidc_dash.get("/dashboard/static/nothing.css")
    assert missing.status_code == 404 and "Dit bestand bestaat niet." in missing.text
