"""NEN 7513: an access and its AuditEvent are one. A write's AuditEvent commits in the write's
own transaction (both or neither), a read's before the response is sent; a server killed with
SIGKILL mid-write leaves no committed Bundle without its AuditEvent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from bench.audit_kill import run_trial
from service.app import create_app
from service.settings import Settings
from service.storage.db import Database
from service.storage.tables import oauth_tokens
from tests.auth.conftest import World, backend_token, make_backend
from tests.factories import weight

SCOPE = "system/Observation.cruds system/Patient.rs"


@contextmanager
def audit_store_broken(db: Database) -> Iterator[None]:
    """A trigger makes every AuditEvent insert fail, as a full disk or a bug would."""
    with db.write() as conn:
        if db.is_sqlite:
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON resources "
                "WHEN NEW.res_type = 'AuditEvent' BEGIN SELECT RAISE(ABORT, 'no audit'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'no audit'; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON resources FOR EACH ROW "
                "WHEN (NEW.res_type = 'AuditEvent') EXECUTE FUNCTION refuse_audit()"
            )
    try:
        yield
    finally:
        with db.write() as conn:
            if db.is_sqlite:
                conn.exec_driver_sql("DROP TRIGGER refuse_audit")
            else:
                conn.exec_driver_sql("DROP TRIGGER refuse_audit ON resources")
                conn.exec_driver_sql("DROP FUNCTION refuse_audit()")


@pytest.fixture
def unchecked(oauth_settings: Settings) -> Iterator[TestClient]:
    """The oauth app, answering unexpected errors with 500 instead of raising them here."""
    app = create_app(oauth_settings)
    with TestClient(app, base_url="http://testserver", raise_server_exceptions=False) as c:
        yield c


def _weights(http: TestClient, headers: dict[str, str], patient_id: str) -> list[dict[str, Any]]:
    fhir = http.app.state.telemon.fhir  # type: ignore[attr-defined]
    found = fhir.search("Observation", [("patient", patient_id), ("_count", "500")]).matches
    return [orjson.loads(m.content) for m in found]


def test_no_write_commits_without_its_audit_event(
    unchecked: TestClient, oauth_db: Database, world: World
) -> None:
    ehr = make_backend(oauth_db, SCOPE)
    token = backend_token(unchecked, ehr, SCOPE).json()["access_token"]
    h = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    before = _weights(unchecked, h, world.a)
    current = next(o for o in before if o["id"] == world.obs_a)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "POST", "url": "Observation"}, "resource": weight(world.a, 70)}
        ],
    }
    changed = {**current, "valueQuantity": {**current["valueQuantity"], "value": 99.5}}
    conditional = {**h, "If-None-Exist": "identifier=urn:test|atomic-1"}
    tagged = {**weight(world.a, 71), "identifier": [{"system": "urn:test", "value": "atomic-1"}]}
    with audit_store_broken(oauth_db):
        create = unchecked.post("/fhir/Observation", json=weight(world.a, 72), headers=h)
        transaction = unchecked.post("/fhir", json=bundle, headers=h)
        conditional_create = unchecked.post("/fhir/Observation", json=tagged, headers=conditional)
        update = unchecked.put(f"/fhir/Observation/{world.obs_a}", json=changed, headers=h)
        deleted = unchecked.delete(f"/fhir/Observation/{world.obs_a}", headers=h)
        read = unchecked.get(f"/fhir/Observation/{world.obs_a}", headers=h)
    for response in (create, transaction, conditional_create, update, deleted, read):
        assert response.status_code == 500, response.text
    assert world.obs_a not in read.text  # nothing was disclosed unaudited
    assert _weights(unchecked, h, world.a) == before  # nothing was written unaudited
    # with the audit store back, the same write commits with its AuditEvent
    again = unchecked.post("/fhir/Observation", json=weight(world.a, 72), headers=h)
    assert again.status_code == 201
    fhir = unchecked.app.state.telemon.fhir  # type: ignore[attr-defined]
    events = fhir.search("AuditEvent", [("patient", world.a), ("_count", "500")]).matches
    written = f'"Observation/{again.json()["id"]}/_history/1"'
    assert sum(written in e.content for e in events) == 1


def test_a_token_and_its_audit_event_commit_together(
    unchecked: TestClient, oauth_db: Database, world: World
) -> None:
    ehr = make_backend(oauth_db, SCOPE)
    with audit_store_broken(oauth_db):
        refused = backend_token(unchecked, ehr, SCOPE)
    assert refused.status_code == 500
    issued = backend_token(unchecked, ehr, SCOPE)
    assert issued.status_code == 200
    db = unchecked.app.state.telemon.fhir.db  # type: ignore[attr-defined]
    with db.read() as conn:
        recorded = conn.execute(select(func.count()).select_from(oauth_tokens)).scalar_one()
    assert recorded == 1  # the token of the failed request was never committed


@pytest.mark.slow
def test_kill_9_leaves_no_bundle_without_its_audit_event(database_url: str) -> None:
    result = run_trial(database_url, rounds=2, workers=1, connections=3, entries=5)
    print(result.summary())
    assert result.committed, "no Bundle was committed: the trial measured nothing"
    assert result.unaudited == set()
    assert result.partial == set() and result.lost == set()


def _token_events(http: TestClient) -> list[dict[str, Any]]:
    fhir = http.app.state.telemon.fhir  # type: ignore[attr-defined]
    found = fhir.search("AuditEvent", [("subtype", "ITI-71"), ("_count", "500")]).matches
    return [orjson.loads(m.content) for m in found]


def test_every_token_request_is_audited(unchecked: TestClient, oauth_db: Database) -> None:
    # NUL bytes in client_id or jti once failed on PostgreSQL before the audit was written.
    ehr = make_backend(oauth_db, SCOPE)
    form = {
        "grant_type": "client_credentials",
        "scope": SCOPE,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }
    answers = [
        unchecked.post("/oauth/token", content=b"not a form"),
        unchecked.post("/oauth/token", data={**form, "client_id": "ehr\x00x"}),
        unchecked.post(
            "/oauth/token", data={**form, "client_assertion": ehr.assertion(jti="a\x00b")}
        ),
        unchecked.post(
            "/oauth/token",
            data={**form, "client_assertion": ehr.assertion(sub="e\x00", iss="e\x00")},
        ),
        unchecked.post(
            "/oauth/token",
            data={"grant_type": "authorization_code", "code": "c\x00", "client_id": "p\x00"},
        ),
    ]
    refused = [r for r in answers if r.status_code != 200]
    assert len(refused) == len(answers), [r.status_code for r in answers]
    events = _token_events(unchecked)
    assert len(events) == len(answers)
    assert sum(e["outcome"] in ("4", "8") for e in events) == len(refused)
    recorded = [orjson.dumps(e).decode() for e in events]
    assert any('"altId":"e\\\\0"' in text for text in recorded)  # the NUL, made storable
    assert any("'jti' must be" in text for text in recorded)  # not "used before": it never was
