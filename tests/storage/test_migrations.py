"""Migrations: empty → head on both backends yields exactly the schema the code declares."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from service.storage import migrate
from service.storage.db import Database
from service.storage.tables import metadata
from tests.conftest import BACKENDS, PG_ADMIN_URL


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[Database]:
    """A brand-new, empty database (no tables at all)."""
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path}/empty.sqlite")
        yield db
        db.dispose()
        return
    name = f"telemon_mig_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db = Database(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    yield db
    db.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_upgrade_from_empty_matches_models(empty_database: Database) -> None:
    assert migrate.current_revision(empty_database) is None
    assert not migrate.is_current(empty_database)

    migrate.upgrade(empty_database)

    assert migrate.is_current(empty_database)
    assert migrate.current_revision(empty_database) == migrate.head_revision(empty_database)
    with empty_database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        tables = set(inspect(conn).get_table_names())
    assert diff == [], f"migrations and models disagree: {diff}"
    assert {"resources", "resource_history", "sp_token", "sp_reference"} <= tables


def test_upgrade_is_idempotent(empty_database: Database) -> None:
    migrate.upgrade(empty_database)
    head = migrate.current_revision(empty_database)
    migrate.upgrade(empty_database)
    assert migrate.current_revision(empty_database) == head
