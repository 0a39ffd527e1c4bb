"""Ingest offsets: where ``stoplist ingest`` stopped in each MTA log file.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 02:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'ingest_offsets',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('file_key', sa.String(length=64), nullable=False),
        sa.Column('fingerprint', sa.String(length=64), nullable=False),
        sa.Column('fingerprint_bytes', sa.Integer(), nullable=False),
        sa.Column('path', sa.Text(), nullable=False),
        sa.Column('offset', sa.BigInteger(), nullable=False),
        sa.Column('line', sa.BigInteger(), nullable=False),
        sa.Column('context', sa.Text(), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ingest_offsets')),
        sa.UniqueConstraint('source', 'file_key', name=op.f('uq_ingest_offsets_source_file_key')),
    )
    op.create_index('ix_ingest_offsets_source_fingerprint', 'ingest_offsets', ['source', 'fingerprint'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_ingest_offsets_source_fingerprint', table_name='ingest_offsets')
    op.drop_table('ingest_offsets')
