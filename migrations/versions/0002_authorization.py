"""authorization server: clients, codes, tokens, jti replay store, server keys

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'oauth_clients',
        sa.Column('client_id', sa.String(255), primary_key=True),
        sa.Column('kind', sa.String(16), nullable=False),
        sa.Column('name', sa.String(255), nullable=False),
        sa.Column('secret_hash', sa.String(128)),
        sa.Column('redirect_uris', sa.Text(), nullable=False),
        sa.Column('scope', sa.Text(), nullable=False),
        sa.Column('jwks', sa.Text()),
        sa.Column('jwks_url', sa.String(2048)),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('created', sa.BigInteger(), nullable=False),
    )
    op.create_table(
        'oauth_codes',
        sa.Column('code_hash', sa.String(64), primary_key=True),
        sa.Column('client_id', sa.String(255), nullable=False),
        sa.Column('redirect_uri', sa.Text(), nullable=False),
        sa.Column('scope', sa.Text(), nullable=False),
        sa.Column('patient_id', sa.String(64), nullable=False),
        sa.Column('subject', sa.String(255), nullable=False),
        sa.Column('code_challenge', sa.String(128), nullable=False),
        sa.Column('expires_at', sa.BigInteger(), nullable=False),
        sa.Column('used', sa.Boolean(), nullable=False),
    )
    op.create_table(
        'oauth_tokens',
        sa.Column('jti', sa.String(64), primary_key=True),
        sa.Column('client_id', sa.String(255), nullable=False),
        sa.Column('code_hash', sa.String(64)),
        sa.Column('scope', sa.Text(), nullable=False),
        sa.Column('patient_id', sa.String(64)),
        sa.Column('expires_at', sa.BigInteger(), nullable=False),
        sa.Column('revoked', sa.Boolean(), nullable=False),
    )
    op.create_index('ix_oauth_tokens_code', 'oauth_tokens', ['code_hash'])
    op.create_table(
        'oauth_jti',
        sa.Column('issuer', sa.String(255), primary_key=True),
        sa.Column('jti', sa.String(255), primary_key=True),
        sa.Column('expires_at', sa.BigInteger(), nullable=False),
    )
    op.create_index('ix_oauth_jti_expires', 'oauth_jti', ['expires_at'])
    op.create_table(
        'server_keys',
        sa.Column('kid', sa.String(64), primary_key=True),
        sa.Column('private_jwk', sa.Text(), nullable=False),
        sa.Column('created', sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('server_keys')
    op.drop_index('ix_oauth_jti_expires', 'oauth_jti')
    op.drop_table('oauth_jti')
    op.drop_index('ix_oauth_tokens_code', 'oauth_tokens')
    op.drop_table('oauth_tokens')
    op.drop_table('oauth_codes')
    op.drop_table('oauth_clients')
