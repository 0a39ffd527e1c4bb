"""Webhook wake-ups (NOTIFY stoplist_outbox) and the index of the suppression expiry sweep.

PostgreSQL: a statement-level trigger on ``outbox`` inserts, and a row-level one on subscription
inserts and on changes of ``enabled``, ``events`` or ``stream`` (a worker's own health updates
must not wake every worker), notify ``stoplist_outbox``; PostgreSQL sends a transaction's
notifications at commit, once per channel and payload. SQLite has no triggers here (its worker
polls). Both: a partial index of the entries with an expiry not yet recorded as reached, and
the expiries already past are recorded as reached (``removed_at`` = the expiry) without events:
the expiry sweep must not send a flood of stale ``suppression.removed`` events at the upgrade.

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-06 05:40:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EXPIRING = sa.text('removed_at IS NULL AND expires_at IS NOT NULL')


def upgrade() -> None:
    op.create_index(
        'ix_suppressions_expiring', 'suppressions', ['expires_at'], unique=False,
        postgresql_where=_EXPIRING, sqlite_where=_EXPIRING,
    )
    dialect = op.get_bind().dialect.name
    now = datetime.now(UTC)
    entries = sa.table(
        'suppressions',
        sa.column('removed_at', sa.DateTime(timezone=True)),
        sa.column('expires_at', sa.DateTime(timezone=True)),
    )
    op.execute(
        entries.update()
        .where(entries.c.removed_at.is_(None), entries.c.expires_at.isnot(None))
        .where(entries.c.expires_at <= (now if dialect == 'postgresql' else now.replace(tzinfo=None)))
        .values(removed_at=entries.c.expires_at)
    )
    if dialect != 'postgresql':
        return
    op.execute(
        "CREATE FUNCTION stoplist_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN PERFORM pg_notify('stoplist_outbox', ''); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
        "FOR EACH STATEMENT EXECUTE FUNCTION stoplist_outbox_notify()"
    )
    op.execute(
        "CREATE TRIGGER webhook_subscriptions_notify "
        "AFTER INSERT OR UPDATE OF enabled, events, stream ON webhook_subscriptions "
        "FOR EACH ROW EXECUTE FUNCTION stoplist_outbox_notify()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER webhook_subscriptions_notify ON webhook_subscriptions")
        op.execute("DROP TRIGGER outbox_notify ON outbox")
        op.execute("DROP FUNCTION stoplist_outbox_notify()")
    op.drop_index('ix_suppressions_expiring', table_name='suppressions')
