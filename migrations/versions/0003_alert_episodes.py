"""alert episodes: the state of each (patient, rule) episode behind an alert's Flag

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_episodes",
        sa.Column("alert_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("alert_id"),
    )
    with op.batch_alter_table("alert_episodes", schema=None) as batch_op:
        batch_op.create_index("ix_alert_episodes_patient", ["patient_id", "updated"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("alert_episodes", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_episodes_patient")
    op.drop_table("alert_episodes")
