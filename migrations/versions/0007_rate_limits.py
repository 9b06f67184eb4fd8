"""rate limits: failure counters of the login and token endpoints, shared by every worker

Revision ID: 0007_rate_limits
Revises: 0006_bulk_export
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_rate_limits"
down_revision = "0006_bulk_export"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_end", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_rate_limits_window_end", "rate_limits", ["window_end"])


def downgrade() -> None:
    op.drop_index("ix_rate_limits_window_end", "rate_limits")
    op.drop_table("rate_limits")
