"""Search-index rows without a foreign key to their resource row

Index rows are derived data: the storage layer writes them in the same statement (or COPY
batch) as their resource row and never deletes a resource row. The foreign key only made
PostgreSQL look the resource row up again for every index row written: about a quarter of the
database's work for an audited search, whose AuditEvent has an index row per resource the
search returned (in-process, 1,000 such events with 33 resources each: 1.52 → 1.15 ms of
PostgreSQL CPU per event).

Revision ID: 0011_index_rows_without_fks
Revises: 0010_search_plans
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_index_rows_without_fks"
down_revision = "0010_search_plans"
branch_labels = None
depends_on = None

_TABLES = ("sp_token", "sp_reference", "sp_date", "sp_quantity", "sp_string")

#: SQLite's foreign keys have no names; batch mode names them with this convention to drop them.
_NAMING = {"fk": "%(table_name)s_%(column_0_name)s_fkey"}


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in _TABLES:
        if sqlite:
            with op.batch_alter_table(table, naming_convention=_NAMING) as batch_op:
                batch_op.drop_constraint(f"{table}_rid_fkey", type_="foreignkey")
        else:
            op.drop_constraint(f"{table}_rid_fkey", table, type_="foreignkey")


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.create_foreign_key(f"{table}_rid_fkey", "resources", ["rid"], ["rid"])
