"""Outbound webhooks: the transactional outbox, subscriptions and their deliveries.

``outbox`` rows are written in the transaction of the change they describe; ``position`` is set
after the commit by the sequencer (the feed's cursor), so only unsequenced rows are indexed by id.
Deliveries cascade with their subscription.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 02:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
JSONType = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade() -> None:
    op.create_table(
        'outbox',
        sa.Column('id', BigID, autoincrement=True, nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('type', sa.String(length=40), nullable=False),
        sa.Column('address', sa.String(length=320), nullable=True),
        sa.Column('scope', sa.String(length=64), nullable=True),
        sa.Column('data', JSONType, nullable=False),
        sa.Column('position', sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
        sa.UniqueConstraint('position', name=op.f('uq_outbox_position')),
    )
    op.create_index('ix_outbox_created_at', 'outbox', ['created_at'])
    op.create_index(
        'ix_outbox_unsequenced', 'outbox', ['id'],
        postgresql_where=sa.text('position IS NULL'), sqlite_where=sa.text('position IS NULL'),
    )
    op.create_table(
        'webhook_subscriptions',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('events', JSONType, nullable=True),
        sa.Column('stream', sa.String(length=64), nullable=True),
        sa.Column('description', sa.String(length=200), nullable=True),
        sa.Column('secret', sa.Text(), nullable=False),
        sa.Column('previous_secret', sa.Text(), nullable=True),
        sa.Column('previous_secret_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('disabled_reason', sa.Text(), nullable=True),
        sa.Column('failing_since', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_subscriptions')),
    )
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', BigID, autoincrement=True, nullable=False),
        sa.Column('subscription_id', sa.Integer(), nullable=False),
        sa.Column('outbox_id', sa.BigInteger(), nullable=False),
        sa.Column('order_key', sa.String(length=320), nullable=False),
        sa.Column('state', sa.String(length=8), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_status', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ['subscription_id'], ['webhook_subscriptions.id'],
            name=op.f('fk_webhook_deliveries_subscription_id_webhook_subscriptions'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries')),
    )
    op.create_index(
        'ix_webhook_deliveries_state_next_attempt_at', 'webhook_deliveries',
        ['state', 'next_attempt_at'],
    )
    op.create_index(
        'ix_webhook_deliveries_subscription_id_order_key_id', 'webhook_deliveries',
        ['subscription_id', 'order_key', 'id'],
    )
    op.create_index('ix_webhook_deliveries_outbox_id', 'webhook_deliveries', ['outbox_id'])


def downgrade() -> None:
    op.drop_table('webhook_deliveries')
    op.drop_table('webhook_subscriptions')
    op.drop_index('ix_outbox_unsequenced', table_name='outbox')
    op.drop_index('ix_outbox_created_at', table_name='outbox')
    op.drop_table('outbox')
