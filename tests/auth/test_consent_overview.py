"""The patient's consent overview (/oauth/consents): after DigiD login every app with access,
since and until when, last exchange; withdrawing one stops its tokens (refresh and access) at
once here and within a second elsewhere, is audited and shows in the patient's audit trail;
one patient cannot withdraw another's consent."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import date, timedelta

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.app import create_app
from service.settings import Settings
from service.storage import consent_store
from service.storage.db import Database
from service.storage.tables import oauth_refresh_tokens
from tests.auth.conftest import BSN_A, BSN_B, World, pgo_token

_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')
_CONSENT = re.compile(r'name="consent_id" value="([^"]*)"')


@pytest.fixture
def other(oauth_settings: Settings) -> Iterator[TestClient]:
    """Another app instance on the same database (another worker)."""
    with TestClient(create_app(oauth_settings), base_url="http://testserver") as c:
        yield c


def _log_in(http: TestClient, bsn: str) -> str:
    """Log in to the overview; returns its HTML."""
    page = http.get("/oauth/consents")
    assert page.status_code == 200
    assert 'action="/oauth/consents/login"' in page.text
    csrf = _CSRF.search(page.text)
    assert csrf is not None
    overview = http.post("/oauth/consents/login", data={"csrf_token": csrf[1], "bsn": bsn})
    assert overview.status_code == 200, overview.text
    assert "Uw toestemmingen" in overview.text
    return overview.text


def _read(http: TestClient, token: str, world: World) -> int:
    url = f"/fhir/Observation/{world.obs_a}"
    return http.get(url, headers={"Authorization": f"Bearer {token}"}).status_code


def test_withdrawing_a_consent(
    oauth_client: TestClient, other: TestClient, pgo: tuple[str, str], world: World
) -> None:
    long_term = pgo_token(oauth_client, pgo, BSN_A, term={"term": "indefinite"})
    scope = "launch/patient patient/Observation.rs patient/AuditEvent.rs"
    once = pgo_token(oauth_client, pgo, BSN_A, scope=scope)
    assert _read(other, long_term["access_token"], world) == 200  # known to the other worker
    browser = TestClient(oauth_client.app, base_url="http://testserver")
    html = _log_in(browser, BSN_A)
    assert html.count("Voorbeeld PGO") == 2  # both consents, each with its own line
    assert "onbepaalde tijd" in html and "indefinitely" in html and "this once" in html
    assert len(set(_CONSENT.findall(html))) == 2
    [row] = [r for r in html.split("<tr>") if "indefinitely" in r]
    [long_term_id] = set(_CONSENT.findall(row))
    csrf = _CSRF.search(html)
    assert csrf is not None
    withdrawn = browser.post(
        "/oauth/consents/withdraw", data={"csrf_token": csrf[1], "consent_id": long_term_id}
    )
    committed = time.monotonic()
    assert withdrawn.status_code == 200 and "ingetrokken" in withdrawn.text
    assert len(set(_CONSENT.findall(withdrawn.text))) == 1
    assert _read(oauth_client, long_term["access_token"], world) == 401  # this worker: at once
    while _read(other, long_term["access_token"], world) != 401:
        assert time.monotonic() - committed < 1.0, "still accepted by the other worker"
        time.sleep(0.02)
    assert _read(oauth_client, once["access_token"], world) == 200  # the other consent
    refresh = oauth_client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": long_term["refresh_token"]},
        auth=pgo,
    )
    assert refresh.json()["error"] == "invalid_grant"
    # audited, in the patient's own trail (what the PGO can read for the patient)
    trail = oauth_client.get(
        "/fhir/AuditEvent",
        params={"patient": world.a, "_count": "200"},
        headers={"Authorization": f"Bearer {once['access_token']}"},
    )
    assert trail.status_code == 200, trail.text
    descriptions = [e["resource"].get("outcomeDesc", "") for e in trail.json()["entry"]]
    assert any("consent withdrawn by the patient" in d for d in descriptions), descriptions


def test_no_session_no_overview_and_no_withdrawal(
    oauth_client: TestClient, pgo: tuple[str, str], world: World
) -> None:
    pgo_token(oauth_client, pgo, BSN_A, term={"term": "indefinite"})
    fhir = oauth_client.app.state.telemon.fhir  # type: ignore[attr-defined]
    a_browser = TestClient(oauth_client.app, base_url="http://testserver")
    ids = _CONSENT.findall(_log_in(a_browser, BSN_A))
    # patient B logged in: A's consent is not theirs
    b_browser = TestClient(oauth_client.app, base_url="http://testserver")
    html_b = _log_in(b_browser, BSN_B)
    assert _CONSENT.findall(html_b) == []
    csrf_b = _CSRF.search(html_b)
    assert csrf_b is not None
    refused = b_browser.post(
        "/oauth/consents/withdraw", data={"csrf_token": csrf_b[1], "consent_id": ids[0]}
    )
    assert refused.status_code == 404
    # no session: the login page, nothing withdrawn
    anonymous = TestClient(oauth_client.app, base_url="http://testserver")
    blind = anonymous.post("/oauth/consents/withdraw", data={"consent_id": ids[0]})
    assert 'action="/oauth/consents/login"' in blind.text
    # a session but the wrong CSRF token
    forged = a_browser.post(
        "/oauth/consents/withdraw", data={"csrf_token": "nope", "consent_id": ids[0]}
    )
    assert forged.status_code == 400
    out = b_browser.post("/oauth/consents/logout", data={"csrf_token": csrf_b[1]})
    assert 'action="/oauth/consents/login"' in out.text  # logged out: the login again
    assert _CONSENT.findall(a_browser.get("/oauth/consents").text) == ids
    events = fhir.search("AuditEvent", [("_count", "500")]).matches
    texts = [orjson.loads(m.content).get("outcomeDesc", "") for m in events]
    assert not any("withdrawn" in t for t in texts)
    wrong_bsn = anonymous.get("/oauth/consents")
    csrf = _CSRF.search(wrong_bsn.text)
    assert csrf is not None
    failed = anonymous.post(
        "/oauth/consents/login", data={"csrf_token": csrf[1], "bsn": "123456789"}
    )
    assert failed.status_code == 400


def test_changing_a_long_term_consent(
    oauth_client: TestClient, pgo: tuple[str, str], world: World, oauth_db: Database
) -> None:
    long_term = pgo_token(oauth_client, pgo, BSN_A, term={"term": "indefinite"})
    browser = TestClient(oauth_client.app, base_url="http://testserver")
    html = _log_in(browser, BSN_A)
    assert 'action="/oauth/consents/change"' in html
    assert 'value="indefinite">' in html  # not preselected
    [consent_id] = _CONSENT.findall(html.split('action="/oauth/consents/change"')[1])
    csrf = _CSRF.search(html)
    assert csrf is not None
    last_day = date.today() + timedelta(days=10)
    changed = browser.post(
        "/oauth/consents/change",
        data={
            "csrf_token": csrf[1],
            "consent_id": consent_id,
            "term": "until",
            "until": last_day.isoformat(),
        },
    )
    assert changed.status_code == 200 and "gewijzigd" in changed.text
    assert f"t/m {last_day.isoformat()}" in changed.text
    with oauth_db.read() as conn:
        record = consent_store.get(conn, consent_id)
        expiry = conn.execute(select(oauth_refresh_tokens.c.expires_at)).scalar_one()
    assert record is not None and record.ends_at is not None
    assert expiry == record.ends_at  # the refresh token no longer outlives the consent
    refreshed = oauth_client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": long_term["refresh_token"]},
        auth=pgo,
    )
    assert refreshed.status_code == 200  # still valid until then
    # a date in the past or "this once" is refused
    csrf = _CSRF.search(changed.text)
    assert csrf is not None
    for bad in ({"term": "until", "until": "2020-01-01"}, {"term": "once"}, {}):
        refused = browser.post(
            "/oauth/consents/change",
            data={"csrf_token": csrf[1], "consent_id": consent_id, **bad},
        )
        assert refused.status_code == 400
    fhir = oauth_client.app.state.telemon.fhir  # type: ignore[attr-defined]
    events = fhir.search("AuditEvent", [("patient", world.a), ("_count", "500")]).matches
    texts = [orjson.loads(m.content).get("outcomeDesc", "") for m in events]
    assert sum("consent changed by the patient" in t for t in texts) == 1


def test_the_broker_callbacks_say_in_dutch_and_english_that_no_broker_is_set(
    oauth_client: TestClient,
) -> None:
    """With the simulated DigiD there is no broker to come back from (Dutch first, as every
    page of the patient's flow)."""
    for path in ("/oauth/consents/callback", "/oauth/oidc/callback"):
        page = oauth_client.get(path, params={"code": "c", "state": "s"})
        assert page.status_code == 404
        assert "Geen DigiD-broker ingesteld / No DigiD broker is configured" in page.text
