"""oauth_consents, oauth_refresh_tokens: long-term consent for PGOs (MedMij 2.x)

A consent is what the patient granted one PGO (this once, or long-term until a date or
indefinitely); long-term consents hold a family of rotating refresh tokens, stored as hashes.
The authorization code carries the patient's choice from the consent page to the token request.

Revision ID: 0009_long_term_consent
Revises: 0008_oauth_revocations
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_long_term_consent"
down_revision = "0008_oauth_revocations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_consents",
        sa.Column("consent_id", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("long_term", sa.Boolean(), nullable=False),
        sa.Column("granted_at", sa.BigInteger(), nullable=False),
        sa.Column("ends_at", sa.BigInteger()),
        sa.Column("last_exchange_at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ended_at", sa.BigInteger()),
        sa.Column("code_hash", sa.String(64)),
    )
    op.create_index("ix_oauth_consents_code", "oauth_consents", ["code_hash"])
    op.create_index("ix_oauth_consents_patient", "oauth_consents", ["patient_id", "status"])
    op.create_index(
        "ix_oauth_consents_lapse", "oauth_consents", ["status", "long_term", "last_exchange_at"]
    )
    op.create_table(
        "oauth_refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("issued_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
    )
    op.create_index(
        "ix_oauth_refresh_tokens_consent", "oauth_refresh_tokens", ["consent_id", "status"]
    )
    with op.batch_alter_table("oauth_codes") as batch:
        batch.add_column(sa.Column("long_term", sa.Boolean()))
        batch.add_column(sa.Column("consent_ends_at", sa.BigInteger()))


def downgrade() -> None:
    with op.batch_alter_table("oauth_codes") as batch:
        batch.drop_column("consent_ends_at")
        batch.drop_column("long_term")
    op.drop_index("ix_oauth_refresh_tokens_consent", "oauth_refresh_tokens")
    op.drop_table("oauth_refresh_tokens")
    op.drop_index("ix_oauth_consents_lapse", "oauth_consents")
    op.drop_index("ix_oauth_consents_patient", "oauth_consents")
    op.drop_index("ix_oauth_consents_code", "oauth_consents")
    op.drop_table("oauth_consents")
