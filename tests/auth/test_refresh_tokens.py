"""Long-term consent (MedMij 2.x): refresh tokens only for it, rotated on every use, a reused
one revoking its family (RFC 9700 section 4.14, audited), the scope only narrowing, never past the
consent's end; of two concurrent refreshes with the same token exactly one wins."""

from __future__ import annotations

import threading
import time
from datetime import date, timedelta
from typing import Any

import httpx
import orjson
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.auth import clients, consent_records
from service.auth.consent_records import REFRESH_SECONDS
from service.storage.db import Database
from service.storage.tables import oauth_consents, oauth_refresh_tokens
from tests.auth.conftest import (
    BSN_A,
    REDIRECT,
    World,
    authorize,
    code_of,
    form_fields,
    pgo_token,
    pkce,
    register,
)

INDEFINITE = {"term": "indefinite"}


def _refresh(
    http: TestClient, pgo: tuple[str, str], token: str, scope: str | None = None
) -> Any:
    data = {"grant_type": "refresh_token", "refresh_token": token}
    if scope is not None:
        data["scope"] = scope
    return http.post("/oauth/token", data=data, auth=pgo)


def _read(http: TestClient, token: str, world: World) -> int:
    url = f"/fhir/Observation/{world.obs_a}"
    return http.get(url, headers={"Authorization": f"Bearer {token}"}).status_code


def _refused_soon(http: TestClient, token: str, world: World) -> None:
    """Refused within the revocation set's bound (a second), on this instance."""
    deadline = time.monotonic() + 1.5
    while _read(http, token, world) != 401:
        assert time.monotonic() < deadline, "the token still works"
        time.sleep(0.05)


def test_this_once_gives_no_refresh_token(
    oauth_client: TestClient, pgo: tuple[str, str], world: World
) -> None:
    scope = "launch/patient offline_access patient/Observation.rs"
    body = pgo_token(oauth_client, pgo, BSN_A, scope=scope)
    assert "refresh_token" not in body
    assert body["scope"] == "launch/patient patient/Observation.rs"  # offline access not granted
    assert _read(oauth_client, body["access_token"], world) == 200
    refused = _refresh(oauth_client, pgo, "not-a-refresh-token")
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"


def test_the_consent_page_offers_long_term_without_preselecting_it(
    oauth_client: TestClient, pgo: tuple[str, str], world: World
) -> None:
    page = oauth_client.get(
        "/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": pgo[0],
            "redirect_uri": REDIRECT,
            "scope": "launch/patient patient/Observation.rs",
            "state": "s",
            "code_challenge": pkce()[1],
            "code_challenge_method": "S256",
        },
    )
    consent = oauth_client.post("/oauth/login", data={**form_fields(page.text), "bsn": BSN_A})
    html = consent.text
    assert 'name="term" value="once" checked' in html
    assert 'value="until">' in html and 'value="indefinite">' in html  # not checked
    assert "Langdurig" in html and "Long-term" in html


def test_rotation_reuse_revokes_the_family(
    oauth_client: TestClient, pgo: tuple[str, str], world: World, oauth_db: Database
) -> None:
    scope = "launch/patient offline_access patient/Observation.rs patient/Patient.rs"
    first = pgo_token(oauth_client, pgo, BSN_A, term=INDEFINITE, scope=scope)
    assert "offline_access" in first["scope"].split()
    rt1 = first["refresh_token"]
    second = _refresh(oauth_client, pgo, rt1)
    assert second.status_code == 200, second.text
    assert second.headers["cache-control"] == "no-store"
    body2 = second.json()
    assert body2["patient"] == world.a
    rt2 = body2["refresh_token"]
    assert rt2 != rt1
    assert _read(oauth_client, body2["access_token"], world) == 200
    third = _refresh(oauth_client, pgo, rt2)
    assert third.status_code == 200
    rt3 = third.json()["refresh_token"]
    access3 = third.json()["access_token"]
    # the first refresh token again: refused, and the whole family with it
    reused = _refresh(oauth_client, pgo, rt1)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert "used before" in reused.json()["error_description"]
    assert _refresh(oauth_client, pgo, rt3).json()["error"] == "invalid_grant"
    _refused_soon(oauth_client, access3, world)
    _refused_soon(oauth_client, first["access_token"], world)
    with oauth_db.read() as conn:
        statuses = conn.execute(select(oauth_refresh_tokens.c.status)).scalars().all()
        consent = conn.execute(select(oauth_consents)).one()
    assert sorted(statuses) == ["revoked"] * 3
    assert consent.status == "revoked"
    # hashes only: no refresh token is stored as itself
    with oauth_db.read() as conn:
        hashes = conn.execute(select(oauth_refresh_tokens.c.token_hash)).scalars().all()
    assert rt1 not in hashes and consent_records.hash_token(rt1) in hashes
    # audited, in the patient's trail
    fhir = oauth_client.app.state.telemon.fhir  # type: ignore[attr-defined]
    found = fhir.search("AuditEvent", [("patient", world.a), ("_count", "500")]).matches
    texts = [orjson.loads(m.content).get("outcomeDesc", "") for m in found]
    assert any("used before" in t for t in texts), texts


def test_a_refresh_token_is_bound_to_its_client(
    oauth_client: TestClient, pgo: tuple[str, str], world: World, oauth_db: Database
) -> None:
    other, secret = clients.new_pgo("other.example.org", "Andere PGO", [REDIRECT])
    register(oauth_db, other)
    rt = pgo_token(oauth_client, pgo, BSN_A, term=INDEFINITE)["refresh_token"]
    stolen = _refresh(oauth_client, (other.client_id, secret), rt)
    assert stolen.json()["error"] == "invalid_grant"
    assert _refresh(oauth_client, pgo, rt).status_code == 200  # not burnt by the thief


def test_the_scope_only_narrows(
    oauth_client: TestClient, pgo: tuple[str, str], world: World
) -> None:
    rt = pgo_token(oauth_client, pgo, BSN_A, term=INDEFINITE)["refresh_token"]
    wider = _refresh(oauth_client, pgo, rt, scope="patient/Observation.rs patient/Flag.rs")
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"
    narrow = _refresh(oauth_client, pgo, rt, scope="patient/Observation.rs")  # still valid
    assert narrow.status_code == 200, narrow.text
    body = narrow.json()
    assert body["scope"] == "patient/Observation.rs"
    patient_read = oauth_client.get(
        f"/fhir/Patient/{world.a}", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert patient_read.status_code == 403
    # the new refresh token keeps the granted scope (RFC 6749 section 6)
    again = _refresh(oauth_client, pgo, body["refresh_token"])
    assert set(again.json()["scope"].split()) >= {"patient/Patient.rs", "patient/Observation.rs"}


def test_never_past_the_end_the_patient_picked(
    oauth_client: TestClient, pgo: tuple[str, str], world: World, oauth_db: Database
) -> None:
    last_day = date.today() + timedelta(days=30)
    term = {"term": "until", "until": last_day.isoformat()}
    first = pgo_token(oauth_client, pgo, BSN_A, term=term)
    with oauth_db.read() as conn:
        consent = conn.execute(select(oauth_consents)).one()
        expiry = conn.execute(select(oauth_refresh_tokens.c.expires_at)).scalar_one()
    assert consent.long_term and consent.ends_at is not None
    assert expiry == consent.ends_at  # not six months
    assert 29 * 86400 < consent.ends_at - time.time() < 32 * 86400
    indefinite = pgo_token(oauth_client, pgo, BSN_A, term=INDEFINITE)
    with oauth_db.read() as conn:
        rows = conn.execute(select(oauth_refresh_tokens.c.expires_at)).scalars().all()
    assert abs(max(rows) - (time.time() + REFRESH_SECONDS)) < 60
    assert first["refresh_token"] != indefinite["refresh_token"]


def test_an_end_date_in_the_past_is_refused(
    oauth_client: TestClient, pgo: tuple[str, str], world: World
) -> None:
    two_days_ago = (date.today() - timedelta(days=2)).isoformat()
    response = authorize(
        oauth_client,
        pgo[0],
        BSN_A,
        challenge=pkce()[1],
        term={"term": "until", "until": two_days_ago},
    )
    assert response.status_code == 400
    assert "verleden" in response.text and "passed" in response.text
    missing = authorize(
        oauth_client, pgo[0], BSN_A, challenge=pkce()[1], term={"term": "until"}
    )
    assert missing.status_code == 400


def test_two_concurrent_refreshes_exactly_one_wins(
    oauth_live_server: str, oauth_client: TestClient, pgo: tuple[str, str], world: World
) -> None:
    rt = pgo_token(oauth_client, pgo, BSN_A, term=INDEFINITE)["refresh_token"]
    barrier = threading.Barrier(2)
    results: list[httpx.Response] = []

    def refresh() -> None:
        with httpx.Client(base_url=oauth_live_server, timeout=30) as http:
            barrier.wait()
            data = {"grant_type": "refresh_token", "refresh_token": rt}
            results.append(http.post("/oauth/token", data=data, auth=pgo))

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 400], [r.text for r in results]
    loser = next(r for r in results if r.status_code == 400)
    assert loser.json()["error"] == "invalid_grant"
    # the loser presented a used-up token: the family is revoked (RFC 9700 section 4.14.2)
    winner = next(r for r in results if r.status_code == 200).json()
    assert _refresh(oauth_client, pgo, winner["refresh_token"]).status_code == 400


def test_a_replayed_code_revokes_its_refresh_token(
    oauth_client: TestClient, pgo: tuple[str, str], world: World
) -> None:
    verifier, challenge = pkce()
    redirect = authorize(oauth_client, pgo[0], BSN_A, challenge=challenge, term=INDEFINITE)
    code = code_of(redirect)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    first = oauth_client.post("/oauth/token", data=data, auth=pgo)
    assert first.status_code == 200
    replayed = oauth_client.post("/oauth/token", data=data, auth=pgo)
    assert replayed.json()["error"] == "invalid_grant"
    assert _refresh(oauth_client, pgo, first.json()["refresh_token"]).status_code == 400
    assert _read(oauth_client, first.json()["access_token"], world) == 401
