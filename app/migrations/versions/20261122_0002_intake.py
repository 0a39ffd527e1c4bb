"""Intake pipeline: processing claims, verification, stream and result summary on inbound messages.

A claim (``claimed_at`` + ``claimed_by``) lets several replicas share the pending rows; one older
than the claim timeout is taken over. ``verified`` needs a server default so existing rows get one.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('verified', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('stream', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('summary', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.drop_column('summary')
        batch_op.drop_column('stream')
        batch_op.drop_column('verified')
        batch_op.drop_column('claimed_by')
        batch_op.drop_column('claimed_at')
