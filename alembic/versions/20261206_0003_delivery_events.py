"""Delivery events from ESP webhooks and MTA logs, the records that could not be read, SNS
subscription confirmations waiting for an operator, and one-time webhook tokens (replay guard).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 02:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'delivery_events',
        sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('dedupe_id', sa.String(length=64), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('recipient', sa.String(length=320), nullable=True),
        sa.Column('sender', sa.String(length=320), nullable=True),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.String(length=48), nullable=False),
        sa.Column('rule_id', sa.String(length=96), nullable=False),
        sa.Column('vendor_category', sa.String(length=96), nullable=True),
        sa.Column('vendor_outcome', sa.String(length=16), nullable=True),
        sa.Column('disagrees', sa.Boolean(), nullable=False),
        sa.Column('feedback_type', sa.String(length=32), nullable=True),
        sa.Column('reply_code', sa.Integer(), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=True),
        sa.Column('diagnostic', sa.Text(), nullable=True),
        sa.Column('remote_mta', sa.String(length=255), nullable=True),
        sa.Column('stream', sa.String(length=64), nullable=True),
        sa.Column('ip', sa.String(length=64), nullable=True),
        sa.Column('pool', sa.String(length=64), nullable=True),
        sa.Column('vmta', sa.String(length=96), nullable=True),
        sa.Column('job_id', sa.String(length=128), nullable=True),
        sa.Column('message_id', sa.String(length=255), nullable=True),
        sa.Column('time', sa.DateTime(timezone=True), nullable=True),
        sa.Column('location', sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_events')),
        sa.UniqueConstraint('dedupe_id', name=op.f('uq_delivery_events_dedupe_id')),
    )
    op.create_index('ix_delivery_events_recipient_id', 'delivery_events', ['recipient', 'id'])
    op.create_index('ix_delivery_events_received_at', 'delivery_events', ['received_at'])
    op.create_table(
        'delivery_event_errors',
        sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('dedupe_id', sa.String(length=64), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('location', sa.String(length=255), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('excerpt', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_event_errors')),
        sa.UniqueConstraint('dedupe_id', name=op.f('uq_delivery_event_errors_dedupe_id')),
    )
    op.create_index(
        'ix_delivery_event_errors_received_at', 'delivery_event_errors', ['received_at']
    )
    op.create_table(
        'sns_subscriptions',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('topic_arn', sa.String(length=255), nullable=False),
        sa.Column('subscribe_url', sa.Text(), nullable=False),
        sa.Column('url_digest', sa.String(length=64), nullable=False),
        sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_sns_subscriptions')),
        sa.UniqueConstraint('url_digest', name=op.f('uq_sns_subscriptions_url_digest')),
    )
    op.create_table(
        'webhook_tokens',
        sa.Column('token', sa.String(length=160), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('token', name=op.f('pk_webhook_tokens')),
    )
    op.create_index('ix_webhook_tokens_seen_at', 'webhook_tokens', ['seen_at'])


def downgrade() -> None:
    op.drop_index('ix_webhook_tokens_seen_at', table_name='webhook_tokens')
    op.drop_table('webhook_tokens')
    op.drop_table('sns_subscriptions')
    op.drop_index('ix_delivery_event_errors_received_at', table_name='delivery_event_errors')
    op.drop_table('delivery_event_errors')
    op.drop_index('ix_delivery_events_received_at', table_name='delivery_events')
    op.drop_index('ix_delivery_events_recipient_id', table_name='delivery_events')
    op.drop_table('delivery_events')
