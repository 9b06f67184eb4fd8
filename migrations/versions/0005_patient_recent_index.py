"""resources: index a patient's resources by the end of their date range

"One patient's measurements since <date>" (the dashboard's and an EHR's commonest question, and
the alert engine's measurement window at every ingest) filters on ``date_high >= since``. With
only (type, patient, date_low) that read every row of the patient's whole history; this index
reads the matching rows only.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.create_index(
            "ix_resources_patient_recent", ["res_type", "patient_id", "date_high"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.drop_index("ix_resources_patient_recent")
