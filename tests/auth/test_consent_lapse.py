"""Lapse: a long-term consent without a token exchange for six months ends by itself (the
sweep, at a pinned clock), with an AuditEvent in the patient's trail; an exchange restarts the
six months; a consent for this once or already ended is left alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from service.auth import lapse
from service.auth.consent_records import REFRESH_SECONDS
from service.storage.db import Database
from service.storage.tables import oauth_consents
from tests.auth.conftest import BSN_A, World, pgo_token
from tests.clock import PinnedClock

INDEFINITE = {"term": "indefinite"}


def _sweep(http: TestClient, db: Database, at: datetime) -> list[str]:
    trail = http.app.state.telemon.auth.audit.trail  # type: ignore[attr-defined]
    return [r.consent_id for r in lapse.sweep(db, trail, PinnedClock(at))]


def _statuses(db: Database) -> dict[str, str]:
    with db.read() as conn:
        rows = conn.execute(select(oauth_consents.c.consent_id, oauth_consents.c.status))
        return {r.consent_id: r.status for r in rows}


def _refresh(http: TestClient, pgo: tuple[str, str], token: str) -> int:
    data = {"grant_type": "refresh_token", "refresh_token": token}
    return http.post("/oauth/token", data=data, auth=pgo).status_code


def test_six_months_without_an_exchange(
    oauth_client: TestClient, oauth_db: Database, pgo: tuple[str, str], world: World
) -> None:
    granted = datetime.now(UTC)
    long_term = pgo_token(oauth_client, pgo, BSN_A, term=INDEFINITE)
    pgo_token(oauth_client, pgo, BSN_A)  # this once: never lapses, it just ends
    half_year = timedelta(seconds=REFRESH_SECONDS)
    assert _sweep(oauth_client, oauth_db, granted + half_year - timedelta(minutes=5)) == []
    assert set(_statuses(oauth_db).values()) == {"active"}
    ended = _sweep(oauth_client, oauth_db, granted + half_year + timedelta(minutes=5))
    assert len(ended) == 1
    assert _statuses(oauth_db)[ended[0]] == "lapsed"
    assert sorted(_statuses(oauth_db).values()) == ["active", "lapsed"]
    assert _sweep(oauth_client, oauth_db, granted + 2 * half_year) == []  # once is enough
    # its tokens are refused
    assert _refresh(oauth_client, pgo, long_term["refresh_token"]) == 400
    # audited in the patient's trail
    fhir = oauth_client.app.state.telemon.fhir  # type: ignore[attr-defined]
    events = fhir.search("AuditEvent", [("patient", world.a), ("_count", "500")]).matches
    texts = [orjson.loads(m.content).get("outcomeDesc", "") for m in events]
    assert sum("consent lapsed" in t and ended[0] in t for t in texts) == 1


def test_an_exchange_restarts_the_six_months(
    oauth_client: TestClient, oauth_db: Database, pgo: tuple[str, str], world: World
) -> None:
    used = pgo_token(oauth_client, pgo, BSN_A, term=INDEFINITE)
    unused = pgo_token(oauth_client, pgo, BSN_A, term=INDEFINITE)
    # both granted seven months ago (as stored); then the PGO exchanges one of them now
    long_ago = int((datetime.now(UTC) - timedelta(days=213)).timestamp())
    with oauth_db.write() as conn:
        conn.execute(update(oauth_consents).values(granted_at=long_ago, last_exchange_at=long_ago))
    assert _refresh(oauth_client, pgo, used["refresh_token"]) == 200
    ended = _sweep(oauth_client, oauth_db, datetime.now(UTC))
    assert len(ended) == 1
    assert _refresh(oauth_client, pgo, unused["refresh_token"]) == 400
    statuses = _statuses(oauth_db)
    assert sorted(statuses.values()) == ["active", "lapsed"]
