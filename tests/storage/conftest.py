"""Fixtures of the storage tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from service.storage.db import Database
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
