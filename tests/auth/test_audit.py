"""NEN 7513 audit trail: AuditEvents for reads, searches (one per patient), writes, failures and
access to the log itself; append-only; a patient sees only the events about them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import sqlalchemy
from fastapi.testclient import TestClient

from tests.auth.conftest import BSN_A, World, backend_token, make_backend, pgo_token
from tests.factories import weight


def _events(http: TestClient, h: dict[str, str], query: str = "") -> list[dict[str, Any]]:
    bundle = http.get(f"/fhir/AuditEvent?_count=500{query}", headers=h).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def test_audit_trail(oauth_client: TestClient, oauth_db: Any, world: World) -> None:
    admin = make_backend(
        oauth_db, "system/AuditEvent.rs system/Observation.cruds system/Patient.rs"
    )
    admin_token = backend_token(
        oauth_client, admin, "system/AuditEvent.rs system/Observation.cruds"
    ).json()["access_token"]
    ha = {"Authorization": f"Bearer {admin_token}", "X-Request-Id": "req-42"}
    http = oauth_client
    assert http.get(f"/fhir/Observation/{world.obs_a}", headers=ha).status_code == 200
    assert http.get("/fhir/Observation", headers=ha).status_code == 200  # spans A and B
    assert http.post("/fhir/Observation", json=weight(world.b), headers=ha).status_code == 201
    assert http.get("/fhir/Observation/nope", headers=ha).status_code == 404
    assert http.get("/fhir/Observation").status_code == 401
    events = _events(http, ha)
    reads = [e for e in events if e["subtype"][0]["code"] == "read" and e["outcome"] == "0"]
    assert reads and reads[0]["action"] == "R"
    assert any(ent["what"].get("reference") == f"Patient/{world.a}" for ent in reads[0]["entity"])
    assert reads[0]["agent"][1]["altId"] == admin.client_id
    assert any(
        ent.get("what", {}).get("identifier", {}).get("value") == "req-42"
        for ent in reads[0]["entity"]
    )
    searches = [e for e in events if e["subtype"][0]["code"] == "search-type"]
    patients = {
        ent["what"]["reference"]
        for e in searches
        for ent in e["entity"]
        if ent.get("role", {}).get("code") == "1"
    }
    assert {f"Patient/{world.a}", f"Patient/{world.b}"} <= patients  # one event per patient
    assert all(any("query" in ent for ent in e["entity"]) for e in searches)
    assert any(e["action"] == "C" for e in events)
    assert any(e["outcome"] == "4" and e["subtype"][0]["code"] == "read" for e in events)
    assert any(e["outcome"] == "4" and "401" in e.get("outcomeDesc", "") for e in events)
    # reading the log is itself logged
    again = _events(http, ha)
    assert any(e["subtype"][0]["code"] == "search-type" and "AuditEvent" in str(e) for e in again)
    # append-only: no create, update or delete of AuditEvents (405)
    one = events[0]
    assert http.put(f"/fhir/AuditEvent/{one['id']}", json=one, headers=ha).status_code == 405
    assert http.delete(f"/fhir/AuditEvent/{one['id']}", headers=ha).status_code == 405
    assert http.post("/fhir/AuditEvent", json=one, headers=ha).status_code == 405


def test_patient_sees_who_looked_at_their_data(
    oauth_client: TestClient, oauth_db: Any, world: World, pgo: tuple[str, str]
) -> None:
    ehr = make_backend(oauth_db, "system/Observation.rs")
    ehr_token = backend_token(oauth_client, ehr, "system/Observation.rs").json()["access_token"]
    oauth_client.get(
        f"/fhir/Observation/{world.obs_a}", headers={"Authorization": f"Bearer {ehr_token}"}
    )
    oauth_client.get(
        f"/fhir/Observation/{world.obs_b}", headers={"Authorization": f"Bearer {ehr_token}"}
    )
    token = pgo_token(
        oauth_client, pgo, BSN_A, scope="patient/AuditEvent.rs patient/Observation.rs"
    )
    h = {"Authorization": f"Bearer {token['access_token']}"}
    mine = _events(oauth_client, h)
    assert mine, "the patient sees events about them"
    for event in mine:
        assert f"Patient/{world.a}" in str(event) and f"Patient/{world.b}" not in str(event)
    assert any(ehr.client_id in str(e) for e in mine)  # the EHR's read is visible


@dataclass
class Observed:
    """A request by a backend service, and the transactions it committed that read or wrote
    resources (not, say, a background sweep's): whether each was a write, and its SQL."""

    client_id: str
    answer: Any
    transactions: list[tuple[bool, list[str]]]
    on_postgresql: bool


def _observed_get(
    oauth_client: TestClient, oauth_db: Any, path: str, scope: str = "system/Observation.rs"
) -> Observed:
    """GET ``/fhir/{path}`` as a backend service granted ``scope``."""
    client = make_backend(oauth_db, scope)
    token = backend_token(oauth_client, client, scope).json()["access_token"]
    engine = oauth_client.app.state.telemon.fhir.db.engine  # type: ignore[attr-defined]
    open_transactions: dict[int, list[str]] = {}
    finished: list[tuple[bool, list[str]]] = []

    def statement(conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        open_transactions.setdefault(id(conn.connection.dbapi_connection), []).append(sql)

    def ended(conn: Any) -> None:
        done = open_transactions.pop(id(conn.connection.dbapi_connection), [])
        if any("resources" in sql for sql in done):
            finished.append((bool(conn.info.get("telemon_write")), done))

    sqlalchemy.event.listen(engine, "before_cursor_execute", statement)
    sqlalchemy.event.listen(engine, "commit", ended)
    try:
        answer = oauth_client.get("/fhir/" + path, headers={"Authorization": f"Bearer {token}"})
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", statement)
        sqlalchemy.event.remove(engine, "commit", ended)
    return Observed(client.client_id, answer, finished, engine.dialect.name == "postgresql")


def _stored_events(oauth_db: Any) -> list[str]:
    """The JSON of every stored AuditEvent."""
    with oauth_db.read() as conn:
        rows = conn.exec_driver_sql(
            "SELECT content FROM resources WHERE res_type = 'AuditEvent'"
        ).all()
    return [row[0] for row in rows]


@pytest.mark.parametrize(
    "search", ["Observation?patient={}&code=29463-7", "Observation/$lastn?patient={}"]
)
def test_a_search_and_its_audit_event_share_one_transaction_on_postgresql(
    oauth_client: TestClient, oauth_db: Any, world: World, search: str
) -> None:
    """PostgreSQL: the AuditEvent of a search (and of ``$lastn``) is written in the search's
    own transaction (one transaction, one commit). SQLite, whose write transactions exclude
    each other: the search reads in a transaction of its own and its event is group-committed
    after it."""
    seen = _observed_get(oauth_client, oauth_db, search.format(world.a))
    found = seen.answer
    assert found.status_code == 200 and found.json()["entry"]
    searched = [w for w, sql in seen.transactions if any("FROM sp_token" in s for s in sql)]
    writes = [sql for w, sql in seen.transactions if w]
    assert len(searched) == 1 and len(writes) == 1  # the search; one write transaction
    # PostgreSQL: the search's transaction is the write; SQLite: a write of its own after it
    assert searched == [seen.on_postgresql]
    query = '"description":"Observation"'  # the event's query entity
    named = [e for e in _stored_events(oauth_db) if seen.client_id in e and query in e]
    assert len(named) == 1
    assert all(f"Observation/{e['resource']['id']}" in named[0] for e in found.json()["entry"])


@pytest.mark.parametrize(
    ("path", "interaction", "versions"),
    [
        ("Observation/{}", "read", [2]),
        ("Observation/{}/_history/1", "vread", [1]),
        ("Observation/{}/_history", "history-instance", [2, 1]),
        ("Observation/_history", "history-type", [2, 1]),
    ],
)
def test_a_read_and_its_audit_event_share_one_transaction_on_postgresql(
    oauth_client: TestClient,
    oauth_db: Any,
    world: World,
    path: str,
    interaction: str,
    versions: list[int],
) -> None:
    """PostgreSQL: a read by id, by version and a history write their AuditEvent in the
    read's own transaction, as a search does; SQLite: a read transaction, then the event's
    group-committed write."""
    seen = _observed_get(oauth_client, oauth_db, path.format(world.obs_a))
    assert seen.answer.status_code == 200
    read = [w for w, sql in seen.transactions if any(s.lstrip().startswith("SELECT") for s in sql)]
    writes = [sql for w, sql in seen.transactions if w]
    assert len(read) == 1 and len(writes) == 1  # the read; one write transaction
    assert read == [seen.on_postgresql]
    events = [orjson.loads(e) for e in _stored_events(oauth_db) if seen.client_id in e]
    events = [e for e in events if e["subtype"][0]["code"] == interaction]
    # one event per patient concerned: patient A's (the type's history also has B's)
    events = [e for e in events if f'"Patient/{world.a}"' in orjson.dumps(e).decode()]
    assert len(events) == 1
    named = {e["what"]["reference"] for e in events[0]["entity"] if "what" in e}
    assert {f"Observation/{world.obs_a}/_history/{v}" for v in versions} <= named


def test_everything_writes_its_audit_event_in_the_transaction_that_reads_the_page(
    oauth_client: TestClient, oauth_db: Any, world: World
) -> None:
    """``$everything``: on PostgreSQL the page is read in the one write transaction, which holds
    the event naming what the page returned; on SQLite the event is written after it."""
    seen = _observed_get(
        oauth_client,
        oauth_db,
        f"Patient/{world.a}/$everything",
        scope="system/Patient.rs system/Observation.rs system/Device.rs",
    )
    assert seen.answer.status_code == 200
    returned = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in seen.answer.json()["entry"]
    }
    assert f"Observation/{world.obs_a}" in returned
    writes = [sql for w, sql in seen.transactions if w]
    assert len(writes) == 1
    reads_in_write = any(s.lstrip().startswith("SELECT") for s in writes[0])
    assert reads_in_write == seen.on_postgresql
    events = [orjson.loads(e) for e in _stored_events(oauth_db) if seen.client_id in e]
    events = [e for e in events if e["subtype"][0]["code"] == "operation"]
    assert len(events) == 1
    named = {
        e["what"]["reference"].split("/_history/")[0]
        for e in events[0]["entity"]
        if "reference" in e.get("what", {})
    }
    assert returned <= named


def test_a_read_outside_the_patient_is_audited_as_a_failure_naming_nothing_it_hid(
    oauth_client: TestClient, oauth_db: Any, world: World, pgo: tuple[str, str]
) -> None:
    """A read of a resource outside the token's patient answers the never-existed 404 and is
    audited as a failure; the hidden resource is not named (nor audited as read)."""
    token = pgo_token(oauth_client, pgo, BSN_A, scope="patient/Observation.rs")
    answer = oauth_client.get(
        f"/fhir/Observation/{world.obs_b}",
        headers={"Authorization": f"Bearer {token['access_token']}"},
    )
    assert answer.status_code == 404
    failures = [orjson.loads(e) for e in _stored_events(oauth_db) if '"outcome":"4"' in e]
    reads = [e for e in failures if e["subtype"][0]["code"] == "read"]
    assert len(reads) == 1
    named = [e["what"] for e in reads[0].get("entity", []) if "what" in e]
    assert all(world.obs_b not in orjson.dumps(what).decode() for what in named)
    assert f"Observation/{world.obs_b}" in reads[0]["outcomeDesc"]  # what was asked for
