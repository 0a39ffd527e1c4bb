"""SQLAlchemy 2 models: the system of record.

Both SQLite (embedded default) and PostgreSQL run the same Alembic migrations. Suppression rows are
never deleted: unsuppressing sets ``removed_at`` and bumps ``revision``, so the history stays and the
sum of an address's revisions is a version that only grows (the cache uses it to refuse stale writes).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import BYTEA, JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY, PostgreSQL wants BIGINT for event logs.
BigID = BigInteger().with_variant(Integer(), "sqlite")
JSONType = JSON().with_variant(JSONB(), "postgresql")
Blob = LargeBinary().with_variant(BYTEA(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way out, whatever the backend keeps (SQLite keeps naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Suppression(Base):
    """One (address, scope) pair; scope is ``global`` or a stream name."""

    __tablename__ = "suppressions"
    __table_args__ = (
        UniqueConstraint("address", "scope"),
        Index("ix_suppressions_domain_id", "domain", "id"),
        Index("ix_suppressions_outcome_id", "outcome", "id"),
        Index("ix_suppressions_scope_id", "scope", "id"),
        Index("ix_suppressions_last_seen", "last_seen"),
        Index("ix_suppressions_updated_at", "updated_at"),
        # The expiry sweep's work list: entries with an expiry that are not removed yet.
        Index(
            "ix_suppressions_expiring",
            "expires_at",
            postgresql_where=text("removed_at IS NULL AND expires_at IS NOT NULL"),
            sqlite_where=text("removed_at IS NULL AND expires_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320))
    domain: Mapped[str] = mapped_column(String(255))
    scope: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(48))
    source: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    hit_count: Mapped[int] = mapped_column(Integer, default=1)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    # Any change; lets an embedded (in-process) cache pick up writes made by other processes.
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Event(Base):
    """Append-only: every bounce, delay, complaint, unsubscribe and manual action on an address."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_address_id", "address", "id"),
        Index("ix_events_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    address: Mapped[str] = mapped_column(String(320))
    scope: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(24))
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(48), nullable=True)
    rule_id: Mapped[str | None] = mapped_column(String(96), nullable=True)
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reply_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    diagnostic: Mapped[str | None] = mapped_column(Text, nullable=True)
    source: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(96), nullable=True)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    message_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class AuditEntry(Base):
    """Who did what, when and why: manual suppressions, unsuppressions, key changes, imports."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_address_id", "address", "id"),
        Index("ix_audit_log_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(96))
    action: Mapped[str] = mapped_column(String(32))
    address: Mapped[str | None] = mapped_column(String(320), nullable=True)
    scope: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class ApiKey(Base):
    """API keys, stored as SHA-256 of the key (keys are 240-bit random, so no slow hash is needed)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class InboundMessage(Base):
    """Raw mail the SMTP sink accepted, committed before the 250 reply, with its processing state."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        UniqueConstraint("digest"),
        Index("ix_inbound_messages_state_id", "state", "id"),
        Index("ix_inbound_messages_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # SHA-256 of envelope + bytes: an MTA redelivering after an ambiguous commit is stored once.
    digest: Mapped[str] = mapped_column(String(64))
    peer: Mapped[str | None] = mapped_column(String(64), nullable=True)
    mail_from: Mapped[str] = mapped_column(String(512))
    rcpt_to: Mapped[list[str]] = mapped_column(JSONType)
    size: Mapped[int] = mapped_column(Integer)
    raw: Mapped[bytes | None] = mapped_column(Blob, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    kind: Mapped[str | None] = mapped_column(String(24), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # A processor owns a message while ``claimed_at`` is fresh; a stale claim is anyone's.
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    stream: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # What the last run made of it (per-recipient outcome, rule, counts): `reprocess` diffs it.
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class DeliveryEvent(Base):
    """What an MTA's log or an ESP's webhook said about one recipient (``events.Event``).

    ``dedupe_id`` is unique: a replayed webhook or a re-read log line is recorded once, and only
    a newly inserted row goes through the policy (``app.events.store``).
    """

    __tablename__ = "delivery_events"
    __table_args__ = (
        UniqueConstraint("dedupe_id"),
        Index("ix_delivery_events_recipient_id", "recipient", "id"),
        Index("ix_delivery_events_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    dedupe_id: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str | None] = mapped_column(String(320), nullable=True)
    sender: Mapped[str | None] = mapped_column(String(320), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(48))
    rule_id: Mapped[str] = mapped_column(String(96))
    vendor_category: Mapped[str | None] = mapped_column(String(96), nullable=True)
    vendor_outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    disagrees: Mapped[bool] = mapped_column(Boolean, default=False)
    feedback_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reply_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    diagnostic: Mapped[str | None] = mapped_column(Text, nullable=True)
    remote_mta: Mapped[str | None] = mapped_column(String(255), nullable=True)
    stream: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pool: Mapped[str | None] = mapped_column(String(64), nullable=True)
    vmta: Mapped[str | None] = mapped_column(String(96), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The vendor's or the message's own id (Message-ID, sg_message_id): not inbound_messages.id.
    message_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    location: Mapped[str] = mapped_column(String(255))


class DeliveryEventError(Base):
    """A record of a log or webhook that could not be read: kept with where and why."""

    __tablename__ = "delivery_event_errors"
    __table_args__ = (
        UniqueConstraint("dedupe_id"),
        Index("ix_delivery_event_errors_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Same location, reason and excerpt: the same bad record sent again is kept once.
    dedupe_id: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))
    location: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)
    excerpt: Mapped[str] = mapped_column(Text, default="")


class SnsSubscription(Base):
    """An SNS (Un)SubscriptionConfirmation whose signature verified: confirmed by an operator
    (``stoplist events confirm-ses``) fetching its SubscribeURL."""

    __tablename__ = "sns_subscriptions"
    __table_args__ = (UniqueConstraint("url_digest"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    topic_arn: Mapped[str] = mapped_column(String(255))
    subscribe_url: Mapped[str] = mapped_column(Text)
    url_digest: Mapped[str] = mapped_column(String(64))
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookToken(Base):
    """A one-time webhook token (Mailgun's ``signature.token``) seen within its replay window."""

    __tablename__ = "webhook_tokens"
    __table_args__ = (Index("ix_webhook_tokens_seen_at", "seen_at"),)

    token: Mapped[str] = mapped_column(String(160), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RateCount(Base):
    """Deliverability counts of one bucket (5 minutes, 1 hour or 1 day) of one key (app.rates).

    Every batch adds to the bucket of each grain at once, so the hourly and daily roll-ups are
    exact even for late events; retention then drops old buckets grain by grain."""

    __tablename__ = "rate_counts"
    __table_args__ = (
        UniqueConstraint("grain", "bucket", "stream", "provider", "source", "ip", "pool", "vmta"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    grain: Mapped[str] = mapped_column(String(2))
    bucket: Mapped[datetime] = mapped_column(UTCDateTime)
    stream: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    ip: Mapped[str] = mapped_column(String(45))
    pool: Mapped[str] = mapped_column(String(64))
    vmta: Mapped[str] = mapped_column(String(64))
    sent: Mapped[int] = mapped_column(BigInteger, default=0)
    delivered: Mapped[int] = mapped_column(BigInteger, default=0)
    bounced: Mapped[int] = mapped_column(BigInteger, default=0)
    hard: Mapped[int] = mapped_column(BigInteger, default=0)
    soft: Mapped[int] = mapped_column(BigInteger, default=0)
    policy: Mapped[int] = mapped_column(BigInteger, default=0)
    expired: Mapped[int] = mapped_column(BigInteger, default=0)
    deferred: Mapped[int] = mapped_column(BigInteger, default=0)
    complaint: Mapped[int] = mapped_column(BigInteger, default=0)
    unsubscribe: Mapped[int] = mapped_column(BigInteger, default=0)
    dropped: Mapped[int] = mapped_column(BigInteger, default=0)


class ConsoleSession(Base):
    """A signed-in support console: the cookie holds a random token, only its SHA-256 is kept.

    The session names the key by its hash, so revoking the key ends every session made with it."""

    __tablename__ = "console_sessions"
    __table_args__ = (Index("ix_console_sessions_last_seen_at", "last_seen_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the cookie token
    key_hash: Mapped[str] = mapped_column(String(64))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OutboxEvent(Base):
    """An outbound event (``app.webhooks``), written in the transaction of the change it describes.

    ``position`` is given after the commit, one row at a time in id order, by the one sequencer
    that holds the lock (``app.webhooks.sequencer``): the pull feed's cursor, in which a row that
    committed late still comes after every row already read."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("position"),
        Index("ix_outbox_created_at", "created_at"),
        Index(
            "ix_outbox_unsequenced",
            "id",
            postgresql_where=text("position IS NULL"),
            sqlite_where=text("position IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    type: Mapped[str] = mapped_column(String(40))
    address: Mapped[str | None] = mapped_column(String(320), nullable=True)
    scope: Mapped[str | None] = mapped_column(String(64), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    position: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class WebhookSubscription(Base):
    """An endpoint that receives outbound events; its signing secret is kept encrypted."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)  # None = all
    stream: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None = every stream
    description: Mapped[str | None] = mapped_column(String(200), nullable=True)
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    previous_secret_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One event to one subscription: ``pending`` (due at ``next_attempt_at``), ``sent`` or
    ``dead``. Per (subscription, ``order_key``) only the oldest pending one is ever in flight."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
        Index(
            "ix_webhook_deliveries_subscription_id_order_key_id",
            "subscription_id",
            "order_key",
            "id",
        ),
        Index("ix_webhook_deliveries_outbox_id", "outbox_id"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    subscription_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    outbox_id: Mapped[int] = mapped_column(BigInteger)
    order_key: Mapped[str] = mapped_column(String(320))
    state: Mapped[str] = mapped_column(String(8), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class IngestOffset(Base):
    """Where ``stoplist ingest`` stopped in a log file: the byte after the last line whose events
    committed, per source and file (``file_key`` = device:inode, ``fingerprint`` = SHA-256 of its
    first ``fingerprint_bytes`` bytes, so a renamed file keeps its place and a reused inode does
    not inherit one)."""

    __tablename__ = "ingest_offsets"
    __table_args__ = (
        UniqueConstraint("source", "file_key"),
        Index("ix_ingest_offsets_source_fingerprint", "source", "fingerprint"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(16))
    file_key: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    fingerprint_bytes: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    offset: Mapped[int] = mapped_column(BigInteger)
    line: Mapped[int] = mapped_column(BigInteger)
    # What the parser needs to resume there (PowerMTA: the header line in effect).
    context: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConsoleImport(Base):
    """An import started from the console: its progress and result, so the page that follows it
    answers from any replica and after a restart. ``runner`` names the process doing it, and
    ``updated_at`` is its heartbeat: a ``running`` job not updated for a while lost its process."""

    __tablename__ = "console_imports"
    __table_args__ = (Index("ix_console_imports_created_at", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random, in the page's URL
    actor: Mapped[str] = mapped_column(String(128))  # the key's name: only it may see the job
    size: Mapped[int] = mapped_column(BigInteger)
    read_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str] = mapped_column(String(16))  # running | done | failed
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    runner: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
