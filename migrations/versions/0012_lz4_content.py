"""Resource JSON compressed with LZ4 (PostgreSQL)

PostgreSQL compresses a value of more than ~2 kB before storing it, with pglz unless told
otherwise. An AuditEvent of a search names every resource the search returned (~6 kB), and
every audited search writes one: pglz was about a fifth of PostgreSQL's work to store it, LZ4
a fraction of that, and LZ4 also decompresses several times faster when such a resource is
read. Only values written from now on are compressed with LZ4; PostgreSQL reads either.

A no-op on SQLite, and on a PostgreSQL server built without LZ4 (or older than 14).

Revision ID: 0012_lz4_content
Revises: 0011_index_rows_without_fks
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_lz4_content"
down_revision = "0011_index_rows_without_fks"
branch_labels = None
depends_on = None

_COLUMNS = (("resources", "content"), ("resource_history", "content"))

_HAS_LZ4 = """
SELECT EXISTS (SELECT 1 FROM pg_settings
               WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals))
"""


def _set_compression(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not bind.execute(sa.text(_HAS_LZ4)).scalar():
        return
    for table, column in _COLUMNS:
        op.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" SET COMPRESSION {method}')


def upgrade() -> None:
    _set_compression("lz4")


def downgrade() -> None:
    _set_compression("pglz")
