"""sp_token: token rows carry their resource's type, patient and dates

"One patient's weights of the last 30 days, newest first" joined the resource row (patient,
date) to the token rows (code). Without statistics (autovacuum off, a fresh load) PostgreSQL
estimated one token row for the code and scanned every row of that code once per patient row
(0.6–6 s). With type, patient and dates on the token row, the search is one range of
(patient_id, res_type, param, code, system, sort_date, rid), newest first, whatever the
statistics say; (param, code, system) becomes (param, code, patient_id, res_type, system,
sort_date, rid), so that the other index a planner may pick serves it the same way.

Existing rows are filled from their resource row.

Revision ID: 0010_search_plans
Revises: 0009_long_term_consent
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_search_plans"
down_revision = "0009_long_term_consent"
branch_labels = None
depends_on = None

#: service.storage.tables.NULL_DATE, as it was when this migration was written.
_NULL_DATE = -(2**62)


def upgrade() -> None:
    op.add_column("sp_token", sa.Column("res_type", sa.String(length=64), nullable=True))
    op.add_column("sp_token", sa.Column("patient_id", sa.String(length=64), nullable=True))
    op.add_column("sp_token", sa.Column("sort_date", sa.BigInteger(), nullable=True))
    op.add_column("sp_token", sa.Column("date_high", sa.BigInteger(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE sp_token SET res_type = r.res_type, patient_id = r.patient_id, "
            f"sort_date = coalesce(r.date_low, {_NULL_DATE}), date_high = r.date_high "
            "FROM resources r WHERE r.rid = sp_token.rid"
        )
    else:
        op.execute(
            "UPDATE sp_token SET (res_type, patient_id, sort_date, date_high) = "
            f"(SELECT r.res_type, r.patient_id, coalesce(r.date_low, {_NULL_DATE}), r.date_high "
            "FROM resources r WHERE r.rid = sp_token.rid)"
        )
    with op.batch_alter_table("sp_token", schema=None) as batch_op:
        batch_op.drop_index("ix_sp_token_param_code_system")
        batch_op.alter_column("res_type", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("sort_date", existing_type=sa.BigInteger(), nullable=False)
        batch_op.create_index(
            "ix_sp_token_patient_id_res_type_param_code_system_sort_date_rid",
            ["patient_id", "res_type", "param", "code", "system", "sort_date", "rid"],
            unique=False,
        )
        batch_op.create_index(
            "ix_sp_token_param_code_patient_id_res_type_system_sort_date_rid",
            ["param", "code", "patient_id", "res_type", "system", "sort_date", "rid"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("sp_token", schema=None) as batch_op:
        batch_op.drop_index("ix_sp_token_param_code_patient_id_res_type_system_sort_date_rid")
        batch_op.drop_index("ix_sp_token_patient_id_res_type_param_code_system_sort_date_rid")
        batch_op.create_index(
            "ix_sp_token_param_code_system", ["param", "code", "system"], unique=False
        )
        for column in ("date_high", "sort_date", "patient_id", "res_type"):
            batch_op.drop_column(column)
