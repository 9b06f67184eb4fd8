"""Migrations: empty → head on both backends yields exactly the schema the code declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from service.storage import migrate
from service.storage.db import Database
from service.storage.tables import metadata


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
