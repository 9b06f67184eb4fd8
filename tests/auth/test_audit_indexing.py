"""Each worker writes the index rows of the AuditEvents it stored without them (PostgreSQL),
in the background, within a second or so, without anyone searching the audit trail."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from service.storage.tables import audit_index_backlog, resources, sp_reference
from tests.auth.conftest import World, backend_token, make_backend


def _indexed_searches(db: Any, obs_id: str) -> int:
    """Indexed AuditEvents naming ``obs_id`` as an entity."""
    with db.read() as conn:
        return len(
            conn.execute(
                select(sp_reference.c.rid)
                .join(resources, resources.c.rid == sp_reference.c.rid)
                .where(
                    resources.c.res_type == "AuditEvent",
                    sp_reference.c.param == "entity",
                    sp_reference.c.target_id == obs_id,
                )
            ).all()
        )


def test_audit_events_are_indexed_in_the_background(
    oauth_client: TestClient, oauth_db: Any, world: World
) -> None:
    client = make_backend(oauth_db, "system/Observation.rs")
    token = backend_token(oauth_client, client, "system/Observation.rs").json()["access_token"]
    before = _indexed_searches(oauth_db, world.obs_a)
    found = oauth_client.get(
        f"/fhir/Observation?patient={world.a}", headers={"Authorization": f"Bearer {token}"}
    )
    assert found.status_code == 200
    assert world.obs_a in found.text
    deadline = time.monotonic() + 5
    while _indexed_searches(oauth_db, world.obs_a) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _indexed_searches(oauth_db, world.obs_a) == before + 1
    with oauth_db.read() as conn:
        assert conn.execute(select(audit_index_backlog.c.rid)).all() == []
