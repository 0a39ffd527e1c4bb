"""Recording delivery events: one transaction per batch inserts the events, keeps the records
that could not be read, applies the newly inserted events through the feedback policy, and
commits.

``EventStore.record(batch)`` is the one entry point (webhooks and log ingest alike): a ``Batch``
in, counts out, committed on return. An event whose ``dedupe_id`` is already stored (a replayed
webhook, a log line read again after a restart) is a duplicate: not inserted again, not applied
again. Inserts are ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` on PostgreSQL and SQLite, a
statement per table for the whole batch (on PostgreSQL the events travel as one array per column).

Work that must see exactly the newly inserted events, in the same transaction (the rate buckets
of ``app.rates``), belongs in :func:`_after_insert`.

The log ingest counts its deliveries without storing them (``count_deliveries``, see ``record``;
or already counted by key by its parser, ``Batch.deliveries``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Boolean, Integer, delete, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Services
from app.errors import Unauthorized
from app.events.policy import event_settings, plan_event
from app.feedback.applier import WrittenPlans, after_commit, write_plans
from app.feedback.planner import Plan
from app.models import (
    DeliveryEvent,
    DeliveryEventError,
    SnsSubscription,
    UTCDateTime,
    WebhookToken,
    utcnow,
)
from app.rates import merge_deliveries, record_events
from dsn.explain import explain_delivery_event
from events import Batch, DeliveryKey, Event, EventError, EventKind, Source, vendor_meaning

__all__ = ["EventStore", "KeptError", "PendingSubscription", "Prepared", "RecordResult"]

log = logging.getLogger("app.events")

_EVENTS = DeliveryEvent.__table__
_ERRORS = DeliveryEventError.__table__
# Column widths of delivery_events: a vendor's over-long value is cut, not a failed batch.
_WIDTHS: dict[str, int] = {
    c.name: int(getattr(c.type, "length", 0))
    for c in _EVENTS.columns
    if getattr(c.type, "length", None)
}
_TEXT_COLUMNS = [c.name for c in _EVENTS.columns if c.type.python_type is str]
# Events prepared between two returns to the event loop (``EventStore.prepare``).
PREPARE_SLICE: Final = 250
# Run inside a batch's transaction just before its commit (the ingest saves its offset there).
CommitHook = Callable[[AsyncSession], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RecordResult:
    """What one batch did: events newly stored, events already stored (not applied again),
    unreadable records kept, and suppressions written by the new events."""

    new: int
    duplicate: int
    errors: int
    suppressed: int


@dataclass(frozen=True, slots=True)
class Prepared:
    """What :meth:`EventStore.record` works out of a batch before its transaction, without I/O
    (:meth:`EventStore.prepare`): the log ingest prepares the next batch while the one before it
    is committing, so this work overlaps the database's."""

    batch: Batch
    count_deliveries: bool
    # To insert: each dedupe id once, the deliveries counted without a row taken out.
    events: list[Event]
    # Deliveries counted into the rates without a row (``count_deliveries``).
    counted: list[Event]
    # (event, plan) of the events with something to write on the list.
    planned: list[tuple[Event, Plan]]
    # The recipients those plans can write: the transaction's address locks.
    addresses: list[str]
    # The rows of ``events``: column -> one value per event on PostgreSQL (bound as arrays),
    # a dict per event elsewhere.
    rows: dict[str, list[Any]] | list[dict[str, Any]]
    # ``batch.deliveries`` merged per smallest rate bucket (``app.rates.merge_deliveries``).
    deliveries: Mapping[DeliveryKey, int]


@dataclass(frozen=True, slots=True)
class PendingSubscription:
    id: int
    received_at: datetime
    kind: str
    topic_arn: str
    subscribe_url: str
    confirmed_at: datetime | None


@dataclass(frozen=True, slots=True)
class KeptError:
    """A record that could not be read, as kept: where it was and why it was refused."""

    id: int
    received_at: datetime
    source: str
    location: str
    reason: str
    excerpt: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "received_at": self.received_at.isoformat(),
            "source": self.source,
            "location": self.location,
            "reason": self.reason,
            "excerpt": self.excerpt,
        }


class EventStore:
    """Delivery events of one service (its database, cache and settings).

    ``defer_refresh`` (the log ingest): ``record`` returns once the batch is committed and leaves
    the cache's refresh of the addresses it suppressed running, so it overlaps the next batch's
    transaction; the next ``record`` waits for it before starting its own (the refreshes stay
    in commit order), and ``settle`` waits for the last one. The webhooks answer only after the
    refresh (a check right after the 2xx sees the suppression), so they do not defer."""

    def __init__(self, services: Services, *, defer_refresh: bool = False) -> None:
        self.services = services
        self._settings = event_settings(services.settings)
        self._defer_refresh = defer_refresh
        self._refreshing: asyncio.Task[None] | None = None

    async def prepare(self, batch: Batch, *, count_deliveries: bool = False) -> Prepared:
        """The part of :meth:`record` that needs no database (see ``Prepared``), giving the event
        loop back every ``PREPARE_SLICE`` events (a commit in flight reads its answers then)."""
        for done in self._preparing(batch, count_deliveries):
            if done is not None:
                return done
            await asyncio.sleep(0)
        raise AssertionError("_preparing ends with its Prepared")

    def _prepared(self, batch: Batch, count_deliveries: bool) -> Prepared:
        return next(done for done in self._preparing(batch, count_deliveries) if done is not None)

    def _preparing(self, batch: Batch, count_deliveries: bool) -> Iterator[Prepared | None]:
        """None between slices of the work, then the ``Prepared``."""
        counted: list[Event] = []
        events = batch.events
        if count_deliveries:
            counted = [e for e in events if e.kind is _DELIVERED]
            events = [e for e in events if e.kind is not _DELIVERED] if counted else events
        events = _unique(events)
        # Only the recipients the policy can act on are locked (a delivery, a drop, a kind the
        # planner leaves alone writes nothing on the list): planned before the insert, kept for
        # the events the insert finds new.
        now = utcnow()
        planned: list[tuple[Event, Plan]] = []
        rows: list[dict[str, Any]] = []
        for start in range(0, len(events), PREPARE_SLICE):
            part = events[start : start + PREPARE_SLICE]
            planned += self._plans(part)
            rows += [_event_row(e, now) for e in part]
            yield None
        addresses = sorted({step.address for _, plan in planned for step in plan.steps})
        bound: dict[str, list[Any]] | list[dict[str, Any]] = rows
        if self.services.db.dialect == "postgresql":
            # One statement of column arrays: far cheaper than a 1,000-row VALUES list.
            bound = {name: [row[name] for row in rows] for name in _PG_COLUMNS}
        deliveries = merge_deliveries(batch.deliveries, now) if batch.deliveries else {}
        yield Prepared(
            batch, count_deliveries, events, counted, planned, addresses, bound, deliveries
        )

    async def record(
        self,
        batch: Batch,
        *,
        token: tuple[str, str, timedelta] | None = None,
        count_deliveries: bool = False,
        before_commit: CommitHook | None = None,
        prepared: Prepared | None = None,
    ) -> RecordResult:
        """Store and apply ``batch`` in one transaction; committed when this returns.

        ``token`` is (source, one-time token, replay window): a token already seen within the
        window refuses the whole batch (``Unauthorized``, nothing written). It is claimed in the
        same transaction, so a batch that fails to commit can be sent again with it.
        ``count_deliveries`` (the log ingest): a delivery changes nothing on the list and only
        feeds the rates, so it is counted into them without a ``delivery_events`` row, hence
        without dedupe; the caller makes the batch count once by saving its read offset through
        ``before_commit``, in this transaction. Counted deliveries are reported as new; so are
        ``batch.deliveries`` (counted by the parser), which are always counted this way.
        ``prepared``: ``prepare(batch)`` done ahead (made again if it was of another batch).
        """
        if (
            prepared is None
            or prepared.batch is not batch
            or prepared.count_deliveries != count_deliveries
        ):
            prepared = self._prepared(batch, count_deliveries)
        events, counted, planned = prepared.events, prepared.counted, prepared.planned
        db = self.services.db
        now = utcnow()
        written: WrittenPlans | None = None
        async with db.write(prepared.addresses) as s:
            if token is not None:
                await _claim_token(s, *token, now)
            new = await _insert_events(s, events, prepared.rows) if events else []
            await _insert_errors(s, batch.errors, now)
            if planned:
                inserted = {e.dedupe_id for e in new}
                plans = [(None, p) for e, p in planned if e.dedupe_id in inserted]
                if plans:
                    written = await write_plans(s, self.services, plans)
            await _after_insert(s, [*new, *counted] if counted else new, prepared.deliveries)
            if before_commit is not None:
                await before_commit(s)
        if written is not None:
            await self.settle()
            if self._defer_refresh:
                self._refreshing = asyncio.create_task(after_commit(self.services, written, db))
            else:
                await after_commit(self.services, written, db)
        delivered = sum(batch.deliveries.values())
        return RecordResult(
            new=len(new) + len(counted) + delivered,
            duplicate=len(batch.events) - len(new) - len(counted),
            errors=len(batch.errors),
            suppressed=len(written.written) if written is not None else 0,
        )

    async def settle(self) -> None:
        """Wait for the cache refresh a deferred ``record`` left running, if any."""
        task, self._refreshing = self._refreshing, None
        if task is not None:
            await task

    def _plans(self, events: Sequence[Event]) -> list[tuple[Event, Plan]]:
        """(event, plan) of the events with something to write on the list."""
        settings = self._settings
        return [(e, p) for e in events if (p := plan_event(e, settings)) is not None and p.steps]

    async def record_subscription(self, kind: str, topic_arn: str, subscribe_url: str) -> bool:
        """Keep an SNS confirmation for ``stoplist events confirm-ses``; False when known."""
        digest = hashlib.sha256(subscribe_url.encode()).hexdigest()
        row = {
            "received_at": utcnow(),
            "kind": kind[:32],
            "topic_arn": topic_arn[:255],
            "subscribe_url": subscribe_url,
            "url_digest": digest,
        }
        async with self.services.db.write() as s:
            stmt = _insert_ignore(s, SnsSubscription.__table__, "url_digest")
            result = await s.execute(stmt.returning(SnsSubscription.id), [row])
            return result.first() is not None

    async def subscriptions(self, *, pending_only: bool = True) -> list[PendingSubscription]:
        q = select(SnsSubscription).order_by(SnsSubscription.id)
        if pending_only:
            q = q.where(SnsSubscription.confirmed_at.is_(None))
        async with self.services.db.read() as s:
            rows = (await s.execute(q)).scalars().all()
        return [
            PendingSubscription(
                r.id, r.received_at, r.kind, r.topic_arn, r.subscribe_url, r.confirmed_at
            )
            for r in rows
        ]

    async def kept_errors(
        self, *, source: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[KeptError]:
        """Unreadable records kept, newest first (``source`` and ``since`` narrow them)."""
        q = select(DeliveryEventError).order_by(DeliveryEventError.id.desc()).limit(limit)
        if source is not None:
            q = q.where(DeliveryEventError.source == source)
        if since is not None:
            q = q.where(DeliveryEventError.received_at >= since)
        async with self.services.db.read() as s:
            rows = (await s.execute(q)).scalars().all()
        return [
            KeptError(r.id, r.received_at, r.source, r.location, r.reason, r.excerpt) for r in rows
        ]

    async def stored_event(self, ref: str) -> dict[str, Any] | None:
        """The stored delivery event ``ref`` names (its row id, or its ``dedupe_id`` as a history
        event's ``delivery_event`` shows it), as column -> value; None when there is none."""
        where = _EVENTS.c.dedupe_id == ref
        if ref.isascii() and ref.isdigit() and int(ref) < 2**63:
            where = where | (_EVENTS.c.id == int(ref))
        async with self.services.db.read() as s:
            row = (await s.execute(select(_EVENTS).where(where).limit(1))).mappings().first()
        return dict(row) if row is not None else None

    async def explanation(self, ref: str) -> dict[str, Any] | None:
        """``dsn.explain.explain_delivery_event`` for the stored event ``ref`` names (None: no
        such event), with what its vendor category means to us read from today's table."""
        row = await self.stored_event(ref)
        if row is None:
            return None
        meaning = None
        with contextlib.suppress(ValueError):
            found = vendor_meaning(Source(row["source"]), row["vendor_category"])
            meaning = (found[0].value, found[1].value) if found else None
        return explain_delivery_event(row, meaning)

    async def mark_confirmed(self, subscription_id: int) -> None:
        async with self.services.db.write() as s:
            await s.execute(
                update(SnsSubscription)
                .where(SnsSubscription.id == subscription_id)
                .values(confirmed_at=utcnow())
            )


async def _after_insert(
    s: AsyncSession, new_events: Sequence[Event], deliveries: Mapping[DeliveryKey, int]
) -> None:
    """Hook: runs inside the batch's transaction with exactly the newly inserted events
    (duplicates excluded) and the deliveries counted by key, after the policy was applied and
    before the commit. The deliverability rate buckets are counted here."""
    if new_events or deliveries:
        await record_events(await s.connection(), new_events, deliveries)


_DELIVERED = EventKind.DELIVERED


def _unique(events: Sequence[Event]) -> list[Event]:
    """The batch's events, each ``dedupe_id`` once (first wins)."""
    seen: set[str] = set()
    out: list[Event] = []
    for e in events:
        if e.dedupe_id not in seen:
            seen.add(e.dedupe_id)
            out.append(e)
    return out


def _insert_ignore(s: AsyncSession, table: Any, key: str) -> Any:
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    return insert(table).on_conflict_do_nothing(index_elements=[key])


async def _insert_events(
    s: AsyncSession, events: Sequence[Event], rows: dict[str, list[Any]] | list[dict[str, Any]]
) -> list[Event]:
    """Insert ``events`` (their ``rows``, see ``Prepared``); the ones that were not stored
    before, in batch order."""
    if isinstance(rows, dict):
        result = await s.execute(_PG_INSERT, rows)
    else:
        stmt = _insert_ignore(s, _EVENTS, "dedupe_id").returning(_EVENTS.c.dedupe_id)
        result = await s.execute(stmt, rows)
    inserted = set(result.scalars().all())
    return [e for e in events if e.dedupe_id in inserted]


def _pg_array_type(column: Any) -> str:
    if isinstance(column.type, Boolean):
        return "boolean[]"
    if isinstance(column.type, Integer):
        return "integer[]"
    if isinstance(column.type, UTCDateTime):
        return "timestamptz[]"
    return "text[]"


# Every column but the id, each bound as one array (the statement is generated from the table).
_PG_COLUMNS = [c.name for c in _EVENTS.columns if c.name != "id"]
_PG_INSERT = text(
    f"INSERT INTO delivery_events ({', '.join(_PG_COLUMNS)}) "  # noqa: S608 - names from the table
    "SELECT * FROM unnest("
    + ", ".join(f"CAST(:{n} AS {_pg_array_type(_EVENTS.c[n])})" for n in _PG_COLUMNS)
    + ") ON CONFLICT (dedupe_id) DO NOTHING RETURNING dedupe_id"
)


async def _insert_errors(s: AsyncSession, errors: Sequence[EventError], now: datetime) -> None:
    if not errors:
        return
    rows = {}
    for e in errors:
        digest = _digest(e.source.value, e.location, e.reason, e.excerpt)
        rows[digest] = {
            "received_at": now,
            "dedupe_id": digest,
            "source": e.source.value,
            "location": _clean(e.location)[:255],
            "reason": _clean(e.reason),
            "excerpt": _clean(e.to_json()["excerpt"]),
        }
    await s.execute(_insert_ignore(s, _ERRORS, "dedupe_id"), list(rows.values()))


async def _claim_token(
    s: AsyncSession, source: str, token: str, window: timedelta, now: datetime
) -> None:
    """Refuse a one-time token seen within ``window`` (and forget older ones)."""
    await s.execute(delete(WebhookToken).where(WebhookToken.seen_at < now - 2 * window))
    stmt = _insert_ignore(s, WebhookToken.__table__, "token").returning(WebhookToken.token)
    row = {"token": token[:160], "source": source, "seen_at": now}
    if (await s.execute(stmt, [row])).first() is None:
        raise Unauthorized(f"{source} token seen before (replay)")


def _event_row(e: Event, now: datetime) -> dict[str, Any]:
    row: dict[str, Any] = {
        "received_at": now,
        "dedupe_id": e.dedupe_id,
        "source": e.source.value,
        "kind": e.kind.value,
        "recipient": e.recipient,
        "sender": e.sender,
        "outcome": e.outcome,
        "reason": e.reason,
        "rule_id": e.rule_id,
        "vendor_category": e.vendor_category,
        "vendor_outcome": e.vendor_outcome,
        "disagrees": e.disagrees,
        "feedback_type": e.feedback_type,
        "reply_code": e.reply_code,
        "status": e.status,
        "diagnostic": e.diagnostic or None,
        "remote_mta": e.remote_mta,
        "stream": e.stream,
        "ip": e.ip,
        "pool": e.pool,
        "vmta": e.vmta,
        "job_id": e.job_id,
        "message_id": e.message_id,
        "time": e.time,
        "location": e.location,
    }
    joined = "".join([row[name] for name in _TEXT_COLUMNS if row[name] is not None])
    if joined.isascii() and "\x00" not in joined:
        for name, width in _WIDTHS.items():  # the common case: only the widths to check
            value = row[name]
            if value is not None and len(value) > width:
                row[name] = value[:width]
        return row
    for name in _TEXT_COLUMNS:
        value = row[name]
        if value is not None:
            value = _clean(value)
            limit = _WIDTHS.get(name)
            row[name] = value[:limit] if limit else value
    return row


def _clean(text: str) -> str:
    """Text as every store takes it: PostgreSQL refuses NUL, encoders unpaired surrogates."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _digest(*parts: str) -> str:
    data = "\x1f".join(parts).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:32]
