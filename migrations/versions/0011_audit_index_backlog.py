"""audit_index_backlog: AuditEvents whose search-index rows are still to be written

A read's AuditEvent (NEN 7513) is committed before the read's response is sent, but a search's
event names every resource it returned, and writing those index rows in the request made
audited searches half as fast as unaudited ones. The event row is written at once; its rid
goes into this table and its index rows follow in batches (service/audit/trail.py).

Revision ID: 0011_audit_index_backlog
Revises: 0010_search_plans
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_audit_index_backlog"
down_revision = "0010_search_plans"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_index_backlog",
        sa.Column(
            "rid",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("rid"),
    )


def downgrade() -> None:
    op.drop_table("audit_index_backlog")
