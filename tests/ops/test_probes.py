"""/health and /ready: liveness and readiness probes."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.app import create_app
from service.settings import Settings
from service.storage.db import Database
from service.storage.tables import resources
from tests.conftest import _free_port

PROFILES = Path(__file__).resolve().parents[2] / "fhir_profiles"


def test_health_answers_ok(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["cache-control"] == "no-store"


def test_ready_on_a_migrated_database(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "migrations": "ok"}}


def test_ready_is_503_when_the_schema_is_behind(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/empty.sqlite", auth="open", profiles_dir=PROFILES
    )
    with TestClient(create_app(settings)) as c:
        response = c.get("/ready")
        assert c.get("/health").status_code == 200  # alive all the same
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert "(empty)" in body["checks"]["migrations"]
    assert "telemon db upgrade" in body["checks"]["migrations"]


def test_ready_is_503_when_the_database_is_unreachable() -> None:
    url = f"postgresql://telemon:secret@127.0.0.1:{_free_port()}/telemon"  # nobody listens
    settings = Settings(database_url=url, auth="open", profiles_dir=PROFILES)
    with TestClient(create_app(settings)) as c:
        response = c.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("unreachable (")
    assert "secret" not in response.text and "127.0.0.1" not in response.text


def test_probes_need_no_token_and_are_not_audited(database_url: str) -> None:
    settings = Settings(
        database_url=database_url,
        auth="oauth",
        base_url="http://testserver/fhir",
        profiles_dir=PROFILES,
        alerts_enabled=False,
    )
    db = Database(database_url)

    def audit_events() -> int:
        with db.read() as conn:
            query = select(func.count()).where(resources.c.res_type == "AuditEvent")
            return int(conn.execute(query).scalar_one())

    try:
        with TestClient(create_app(settings)) as c:
            assert c.get("/fhir/Patient").status_code == 401  # the FHIR API does need one
            before = audit_events()  # (that refusal is audited)
            for path in ("/health", "/ready", "/health", "/ready"):
                assert c.get(path).status_code == 200, path
            assert audit_events() == before
    finally:
        db.dispose()
