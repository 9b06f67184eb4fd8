"""Shared fixtures: a database per backend (SQLite and PostgreSQL), the app, HTTP clients."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from service.app import create_app
from service.settings import Settings
from service.storage import migrate
from service.storage.db import Database
from service.storage.tables import metadata
from tests.clock import NOW, PinnedClock

PG_ADMIN_URL = os.environ.get(
    "TELEMON_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = [b for b in os.environ.get("TELEMON_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to head."""
    name = f"telemon_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    db = Database(url)
    migrate.upgrade(db)
    db.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An SQLite file for this test session, migrated to head."""
    path = tmp_path_factory.mktemp("db") / "telemon.sqlite"
    url = f"sqlite:///{path}"
    db = Database(url)
    migrate.upgrade(db)
    db.dispose()
    return url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty, migrated database; the test runs once per backend."""
    url: str = request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url")
    _truncate(url)
    return url


@pytest.fixture
def pg_database_url(pg_url: str) -> str:
    """The URL of the empty, migrated PostgreSQL database, for what only PostgreSQL does."""
    _truncate(pg_url)
    return pg_url


def _truncate(url: str) -> None:
    db = Database(url)
    with db.write() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    db.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings pointing at the test database (no authorization: tests/auth has its own)."""
    return Settings(
        database_url=database_url,
        auth="open",
        profiles_dir=Path(__file__).resolve().parent.parent / "fhir_profiles",
    )


@pytest.fixture
def clock() -> PinnedClock:
    """The service clock of time-dependent tests: pinned to :data:`tests.clock.NOW`.

    A test module can override it, e.g. with one parametrised over :data:`tests.clock.ANY_HOUR`.
    """
    return PinnedClock(NOW)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    """A database handle for direct checks."""
    database = Database(settings.database_url)
    yield database
    database.dispose()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """An HTTP client talking to the app through the ASGI stack."""
    app = create_app(settings)
    with TestClient(app, base_url="http://testserver") as c:
        c.headers["Content-Type"] = "application/fhir+json"
        yield c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def live_server(settings: Settings) -> Iterator[str]:
    """A real uvicorn server on loopback (for concurrency tests); yields its FHIR base URL."""
    port = _free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/fhir"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def make_patient(client: TestClient) -> Any:
    """Create a Patient through the API; returns its id."""
    from tests.factories import patient

    def _make(**kwargs: Any) -> str:
        response = client.post("/fhir/Patient", json=patient(**kwargs))
        assert response.status_code == 201, response.text
        pid: str = response.json()["id"]
        return pid

    return _make


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain httpx client for live-server tests."""
    with httpx.Client(timeout=30, headers={"Content-Type": "application/fhir+json"}) as c:
        yield c
