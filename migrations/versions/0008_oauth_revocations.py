"""oauth_revocations: the revocation set every worker keeps in memory

Access tokens are verified without a database read per request; revoked tokens, clients and
consents are appended here and every worker reads the new rows (LISTEN/NOTIFY on PostgreSQL,
a poll on both backends).

Revision ID: 0008_oauth_revocations
Revises: 0007_rate_limits
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_oauth_revocations"
down_revision = "0007_rate_limits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_revocations",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("oauth_revocations")
