"""Support console sessions: a random cookie token (stored hashed) exchanged for an API key.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 02:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('console_sessions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('csrf', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_console_sessions'))
    )
    op.create_index('ix_console_sessions_last_seen_at', 'console_sessions', ['last_seen_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_console_sessions_last_seen_at', table_name='console_sessions')
    op.drop_table('console_sessions')
