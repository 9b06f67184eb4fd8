"""Access tokens are verified without a database read, against a revocation set every worker
keeps current: a revoked token, a disabled client or a withdrawn consent is refused by another
app instance on the same database within a second (service/auth/revocations.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from typer.testing import CliRunner

from service.app import create_app
from service.auth import clients, revocations
from service.auth import tokens as tokens_module
from service.auth.tokens import TokenService
from service.cli import app as cli
from service.settings import Settings, get_settings
from service.storage.db import Database
from tests.auth.conftest import FHIR, World, backend_token, make_backend

SCOPE = "system/Observation.rs"


@pytest.fixture
def other(oauth_settings: Settings) -> Iterator[TestClient]:
    """A second app instance on the same database (another worker, another server)."""
    with TestClient(create_app(oauth_settings), base_url="http://testserver") as c:
        yield c


def _tokens(http: TestClient) -> TokenService:
    tokens: TokenService = http.app.state.telemon.auth.tokens  # type: ignore[attr-defined]
    return tokens


def _issue(http: TestClient, client_id: str, lifetime: int, consent_id: str | None = None) -> str:
    """An access token signed by the server for ``client_id`` (as the token endpoint would)."""
    issued = _tokens(http).issue(
        issuer="http://testserver",
        audience=FHIR,
        client_id=client_id,
        scope=SCOPE,
        lifetime=lifetime,
        subject=client_id,
        consent_id=consent_id,
    )
    return issued.access_token


def _status(http: TestClient, token: str, world: World) -> int:
    url = f"/fhir/Observation/{world.obs_a}"
    return http.get(url, headers={"Authorization": f"Bearer {token}"}).status_code


def _refused_within(
    http: TestClient, token: str, world: World, committed: float, bound: float
) -> float:
    """Poll until ``bound`` seconds after ``committed``; every request started after the bound
    must be refused. Returns when the first refusal came (seconds after the commit)."""
    first = None
    started_after_bound = []
    while True:
        started = time.monotonic()
        status = _status(http, token, world)
        if status == 401 and first is None:
            first = started - committed
        if started - committed > bound:
            started_after_bound.append(status)
            if len(started_after_bound) >= 3:
                break
        else:
            assert status in (200, 401)
    assert started_after_bound == [401] * 3
    assert first is not None
    return first


@pytest.mark.parametrize("kind", ["token", "client", "consent"])
def test_a_revocation_reaches_another_instance_within_a_second(
    oauth_client: TestClient,
    other: TestClient,
    oauth_db: Database,
    world: World,
    kind: str,
) -> None:
    ehr = make_backend(oauth_db, SCOPE)
    issued = backend_token(oauth_client, ehr, SCOPE).json()["access_token"]
    with_consent = _issue(oauth_client, ehr.client_id, 60, consent_id="consent-1")
    token = with_consent if kind == "consent" else issued
    assert _status(other, token, world) == 200  # verified (and remembered) by the other one
    claims = _tokens(other).verify(token, issuer="http://testserver", audience=FHIR)
    with oauth_db.write() as conn:
        if kind == "token":
            revocations.revoke_tokens(conn, {claims["jti"]: claims["exp"]})
        elif kind == "client":
            assert clients.set_active(conn, claims["client_id"], False)
        else:
            revocations.withdraw_consent(conn, "consent-1")
    committed = time.monotonic()
    first = _refused_within(other, token, world, committed, revocations.MAX_STALENESS)
    print(f"{kind} revocation refused by the other instance after {first * 1000:.0f} ms")
    if kind == "consent":  # other tokens of the client are not touched
        assert _status(other, issued, world) == 200


def test_the_request_reads_a_stale_set_itself(
    oauth_client: TestClient, other: TestClient, oauth_db: Database, world: World
) -> None:
    # The keeping-current thread is gone (stopped, stuck): the bound still holds, because a
    # request that finds the set older than the bound reads it before trusting a token.
    ehr = make_backend(oauth_db, SCOPE)
    token = backend_token(oauth_client, ehr, SCOPE).json()["access_token"]
    assert _status(other, token, world) == 200
    _tokens(other).revoked.stop()
    claims = _tokens(other).verify(token, issuer="http://testserver", audience=FHIR)
    with oauth_db.write() as conn:
        revocations.revoke_tokens(conn, {claims["jti"]: claims["exp"]})
    committed = time.monotonic()
    _refused_within(other, token, world, committed, revocations.MAX_STALENESS)


def test_verifying_a_token_reads_nothing_from_the_database(
    oauth_client: TestClient, oauth_db: Database, world: World
) -> None:
    ehr = make_backend(oauth_db, SCOPE)
    token = backend_token(oauth_client, ehr, SCOPE).json()["access_token"]
    tokens = _tokens(oauth_client)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    engine = oauth_client.app.state.telemon.fhir.db.engine  # type: ignore[attr-defined]
    event.listen(engine, "before_cursor_execute", seen)
    try:
        tokens.revoked.stop()  # no background reads; and no staleness on a slow machine:
        tokens.revoked.max_staleness = 600.0  # the bound's own reads are tested above
        tokens.revoked.sync()
        statements.clear()
        for _ in range(50):
            tokens.verify(token, issuer="http://testserver", audience=FHIR)
        assert statements == []
        assert _status(oauth_client, token, world) == 200
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    touched_tables = " ".join(statements)
    assert "oauth_tokens" not in touched_tables and "oauth_revocations" not in touched_tables
    assert "resources" in touched_tables  # the read itself (and its AuditEvent)


def test_an_expired_token_is_refused_although_remembered(
    oauth_client: TestClient, oauth_db: Database, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ehr = make_backend(oauth_db, SCOPE)
    short = _issue(oauth_client, ehr.client_id, 60)
    assert _status(oauth_client, short, world) == 200
    # The token's clock moves past 'exp' (a real 1-second token raced a busy machine).
    issued_at = time.time()
    monkeypatch.setattr(tokens_module, "time", SimpleNamespace(time=lambda: issued_at + 61))
    assert _status(oauth_client, short, world) == 401


def test_cli_disable_revokes_and_enable_restores(
    oauth_client: TestClient,
    oauth_db: Database,
    world: World,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TELEMON_DATABASE_URL", database_url)
    get_settings.cache_clear()
    ehr = make_backend(oauth_db, SCOPE)
    token = backend_token(oauth_client, ehr, SCOPE).json()["access_token"]
    assert _status(oauth_client, token, world) == 200
    run: Callable[..., Any] = CliRunner().invoke
    try:
        disabled = run(cli, ["clients", "disable", "--client-id", ehr.client_id])
        committed = time.monotonic()
        assert disabled.exit_code == 0, disabled.output
        assert "revoked" in disabled.output
        _refused_within(oauth_client, token, world, committed, revocations.MAX_STALENESS)
        refused = backend_token(oauth_client, ehr, SCOPE)
        assert refused.json()["error"] == "invalid_client"
        assert run(cli, ["clients", "enable", "--client-id", ehr.client_id]).exit_code == 0
        time.sleep(1.0)  # a new token's iat must lie after the revocation's second
        again = backend_token(oauth_client, ehr, SCOPE).json()["access_token"]
        assert _status(oauth_client, again, world) == 200
        assert _status(oauth_client, token, world) == 401  # the old one stays revoked
        unknown = run(cli, ["clients", "disable", "--client-id", "nobody"])
        assert unknown.exit_code == 1 and "No client 'nobody'" in unknown.output
    finally:
        get_settings.cache_clear()
