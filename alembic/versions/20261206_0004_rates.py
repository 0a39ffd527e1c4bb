"""Deliverability rates: counts per bucket (5 minutes, 1 hour, 1 day) and key (app.rates).

The unique key leads with (grain, bucket): it serves the upsert of every batch, the range reads
of ``/v1/stats`` and the retention deletes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 02:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTERS = (
    'sent', 'delivered', 'bounced', 'hard', 'soft', 'policy', 'expired', 'deferred',
    'complaint', 'unsubscribe', 'dropped',
)


def upgrade() -> None:
    op.create_table(
        'rate_counts',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('grain', sa.String(length=2), nullable=False),
        sa.Column('bucket', sa.DateTime(timezone=True), nullable=False),
        sa.Column('stream', sa.String(length=64), nullable=False),
        sa.Column('provider', sa.String(length=32), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('ip', sa.String(length=45), nullable=False),
        sa.Column('pool', sa.String(length=64), nullable=False),
        sa.Column('vmta', sa.String(length=64), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in COUNTERS),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_rate_counts')),
        sa.UniqueConstraint(
            'grain', 'bucket', 'stream', 'provider', 'source', 'ip', 'pool', 'vmta',
            name=op.f('uq_rate_counts_grain_bucket_stream_provider_source_ip_pool_vmta'),
        ),
    )


def downgrade() -> None:
    op.drop_table('rate_counts')
