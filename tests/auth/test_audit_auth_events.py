"""NEN 7513 / BALP: the token endpoint (issued tokens and refused requests such as a bad
assertion or a replayed jti), patient logins and consent decisions each write an AuditEvent;
backend tokens' events name the client as the acting agent; no secret is ever logged."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from fastapi.testclient import TestClient

from service.audit.events import BALP_AUTHZ, DCM, IHE_EVENT, JTI_PREFIX
from tests.auth.conftest import (
    BSN_A,
    REDIRECT,
    World,
    authorize,
    backend_token,
    code_of,
    make_backend,
    pkce,
)


def _events(http: TestClient) -> list[dict[str, Any]]:
    fhir = http.app.state.telemon.fhir  # type: ignore[attr-defined]
    matches = fhir.search("AuditEvent", [("_count", "500")]).matches
    return [orjson.loads(m.content) for m in matches]


def _of(events: list[dict[str, Any]], system: str, code: str) -> list[dict[str, Any]]:
    """The events with this subtype."""
    return [
        e for e in events if (e["subtype"][0]["system"], e["subtype"][0]["code"]) == (system, code)
    ]


def _agent_ids(event: dict[str, Any]) -> set[str]:
    return {
        a["who"].get("identifier", {}).get("value") or a["who"].get("reference", "")
        for a in event["agent"]
    }


def test_backend_token_requests_are_audited(
    oauth_client: TestClient, oauth_db: Any, world: World
) -> None:
    ehr = make_backend(oauth_db, "system/Observation.rs")
    ok = backend_token(oauth_client, ehr, "system/Observation.rs")
    assert ok.status_code == 200
    bad_aud = backend_token(oauth_client, ehr, "system/Observation.rs", aud="https://x/token")
    assert bad_aud.json()["error"] == "invalid_client"
    jti = uuid.uuid4().hex
    assert backend_token(oauth_client, ehr, "system/Observation.rs", jti=jti).status_code == 200
    replayed = backend_token(oauth_client, ehr, "system/Observation.rs", jti=jti)
    assert replayed.json()["error"] == "invalid_client"
    token = ok.json()["access_token"]
    read = oauth_client.get(
        f"/fhir/Observation/{world.obs_a}", headers={"Authorization": f"Bearer {token}"}
    )
    assert read.status_code == 200

    events = _events(oauth_client)
    tokens = _of(events, IHE_EVENT, "ITI-71")
    assert len(tokens) == 4
    assert all(e["type"]["code"] == "110114" and e["type"]["system"] == DCM for e in tokens)
    assert all(ehr.client_id in _agent_ids(e) for e in tokens)  # the client is the agent
    issued = [e for e in tokens if e["outcome"] == "0"]
    refused = [e for e in tokens if e["outcome"] == "4"]
    assert len(issued) == 2 and len(refused) == 2
    for event in issued:
        jtis = [
            ent["what"]["identifier"]["value"]
            for ent in event["entity"]
            if ent.get("role", {}).get("code") == "13"
        ]
        assert len(jtis) == 1 and jtis[0].startswith(JTI_PREFIX)
    descriptions = " ".join(e["outcomeDesc"] for e in refused)
    assert "invalid_client" in descriptions and "used before" in descriptions
    # the FHIR read with the backend token names the client as the requesting agent
    [read_event] = [e for e in events if e["subtype"][0]["code"] == "read" and e["outcome"] == "0"]
    requestor = [a for a in read_event["agent"] if a["requestor"]]
    assert requestor[0]["who"]["identifier"]["value"] == ehr.client_id
    # no assertion, secret or token is ever logged
    dump = orjson.dumps(events).decode()
    assert "client_assertion=" not in dump and token not in dump and "eyJ" not in dump


def test_patient_login_consent_and_code_exchange_are_audited(
    oauth_client: TestClient, world: World, pgo: tuple[str, str]
) -> None:
    verifier, challenge = pkce()
    allowed = authorize(oauth_client, pgo[0], BSN_A, challenge=challenge)
    denied = authorize(oauth_client, pgo[0], BSN_A, challenge=pkce()[1], decision="deny")
    assert "access_denied" in denied.headers["location"]
    token = oauth_client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code_of(allowed),
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
        auth=pgo,
    )
    assert token.status_code == 200
    wrong_secret = oauth_client.post(
        "/oauth/token",
        data={"grant_type": "authorization_code", "code": "x", "redirect_uri": REDIRECT},
        auth=(pgo[0], "wrong"),
    )
    assert wrong_secret.status_code == 401

    events = _events(oauth_client)
    patient = f"Patient/{world.a}"
    logins = _of(events, DCM, "110122")
    assert len(logins) == 2 and all(e["outcome"] == "0" for e in logins)
    assert all(patient in _agent_ids(e) and pgo[0] in _agent_ids(e) for e in logins)
    consents = _of(events, BALP_AUTHZ, "AuthZ-Consent")
    assert sorted(e["outcome"] for e in consents) == ["0", "4"]  # allow, deny
    assert all(e["type"]["code"] == "110113" for e in consents)
    assert all(
        any(ent["what"].get("reference") == patient for ent in e["entity"]) for e in consents
    )
    tokens = _of(events, IHE_EVENT, "ITI-71")
    [issued] = [e for e in tokens if e["outcome"] == "0"]
    assert patient in _agent_ids(issued) and pgo[0] in _agent_ids(issued)
    assert any(ent["what"].get("reference") == patient for ent in issued["entity"])
    [refused] = [e for e in tokens if e["outcome"] == "4"]
    assert "invalid_client" in refused["outcomeDesc"] and pgo[0] in _agent_ids(refused)
    dump = orjson.dumps(events).decode()
    assert verifier not in dump and pgo[1] not in dump and code_of(allowed) not in dump
