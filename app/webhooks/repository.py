"""All SQL on ``outbox``, ``webhook_subscriptions`` and ``webhook_deliveries``. Functions take the
caller's session: the caller owns the transaction."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Integer,
    Table,
    all_,
    any_,
    bindparam,
    delete,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.models import OutboxEvent, WebhookDelivery, WebhookSubscription
from app.set_insert import UnnestInsert

OUTBOX: Table = OutboxEvent.__table__  # type: ignore[assignment]
DELIVERIES: Table = WebhookDelivery.__table__  # type: ignore[assignment]
SUBSCRIPTIONS: Table = WebhookSubscription.__table__  # type: ignore[assignment]

# pg_try_advisory_xact_lock key of the sequencer ("stoplist-webhooks" folded to 63 bits).
SEQUENCER_LOCK = 0x5EC0_0E4B_5701_1157


@dataclass(frozen=True, slots=True)
class Filter:
    """What a subscription wants: event types (None = all) and a stream (None = every one)."""

    id: int
    events: frozenset[str] | None
    stream: str | None

    def wants(self, type_: str, scope: str | None) -> bool:
        if self.events is not None and type_ not in self.events:
            return False
        # A global entry blocks every stream; an import summary is everyone's news.
        return self.stream is None or scope in (None, "global", self.stream)


_FILTERS = select(SUBSCRIPTIONS.c.id, SUBSCRIPTIONS.c.events, SUBSCRIPTIONS.c.stream)


async def filters(s: AsyncSession) -> list[Filter]:
    return [
        Filter(i, frozenset(ev) if ev is not None else None, st)
        for i, ev, st in (await s.execute(_FILTERS)).all()
    ]


def _delivery(sub: int, outbox_id: int, key: str | None, now: datetime) -> dict[str, Any]:
    return {
        "subscription_id": sub,
        "outbox_id": outbox_id,
        "order_key": key or "",
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


_DELIVERIES_SET_INSERT = UnnestInsert(
    DELIVERIES,
    (
        "subscription_id",
        "outbox_id",
        "order_key",
        "state",
        "attempts",
        "next_attempt_at",
        "created_at",
    ),
)

_SEQUENCER_LOCK = select(func.pg_try_advisory_xact_lock(SEQUENCER_LOCK))


def _sequence_statement() -> Any:
    """The numbering ``UPDATE`` of ``sequence`` (built once, at import: a round builds none)."""
    pick, last = OUTBOX.alias("pick"), OUTBOX.alias("last")
    base = select(func.coalesce(func.max(last.c.position), 0)).scalar_subquery()
    numbered = select(pick.c.id, (base + func.row_number().over(order_by=pick.c.id)).label("pos"))
    numbered = numbered.where(pick.c.position.is_(None))
    limit = bindparam("limit", type_=Integer)
    batch = numbered.order_by(pick.c.id).limit(limit).subquery("batch")
    return (
        update(OUTBOX)
        .where(OUTBOX.c.id == batch.c.id)
        .values(position=batch.c.pos)
        .returning(OUTBOX.c.id, OUTBOX.c.type, OUTBOX.c.scope, OUTBOX.c.address)
        .execution_options(synchronize_session=False)
    )


_SEQUENCE = _sequence_statement()


async def sequence(s: AsyncSession, dialect: str, now: datetime, limit: int) -> int:
    """Give the next committed, unsequenced outbox rows (in id order) their feed positions and
    a delivery per interested subscription; the number sequenced. One sequencer at a time: on
    PostgreSQL whoever holds the transaction's advisory lock (the others skip), on SQLite the
    process's write lock.

    Round trips: on PostgreSQL one for the lock; one ``UPDATE … FROM (numbered rows)
    RETURNING`` numbers the rows after the last position and returns them; when it returned
    rows, one read of the subscriptions and one insert of the deliveries (``unnest`` of arrays
    on PostgreSQL). The lock is a statement of its own: taken inside the ``UPDATE`` (as it was),
    it could be granted after the statement's snapshot was taken, when the sequencer that held it
    had just committed, and the rows that one had numbered were numbered again (a second delivery
    of the same events)."""
    if dialect == "postgresql" and not await s.scalar(_SEQUENCER_LOCK):
        return 0
    result = await s.execute(_SEQUENCE, {"limit": limit})
    rows = sorted(result.all(), key=lambda r: int(r.id))
    if not rows:
        return 0
    subs = await filters(s)
    # In outbox id order: the delivery ids keep the commit order of each address.
    deliveries = [
        _delivery(f.id, r.id, r.address, now)
        for r in rows
        for f in subs
        if f.wants(r.type, r.scope)
    ]
    if deliveries and dialect == "postgresql":
        await s.execute(_DELIVERIES_SET_INSERT.statement, _DELIVERIES_SET_INSERT.params(deliveries))
    elif deliveries:
        await s.execute(DELIVERIES.insert(), deliveries)
    return len(rows)


_HAS_SUBSCRIPTIONS = select(exists().where(SUBSCRIPTIONS.c.id.isnot(None)))


async def has_subscriptions(s: AsyncSession) -> bool:
    return bool(await s.scalar(_HAS_SUBSCRIPTIONS))


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery taken for one attempt, with what sending it needs."""

    id: int
    subscription_id: int
    outbox_id: int
    attempts: int  # this attempt included
    url: str
    secret: str
    previous_secret: str | None
    previous_secret_until: datetime | None
    type: str
    created_at: datetime
    data: dict[str, Any]
    failing_since: datetime | None  # the endpoint's failure record when this was claimed


@functools.cache
def _claim_statements(dialect: str) -> tuple[Any, Any]:
    """The two statements of ``claim`` (built once per dialect: a round builds none): the
    ``SELECT`` of due deliveries (``now``, ``full``: the subscriptions that may take no more,
    ``limit``) and the ``UPDATE`` that takes them (``ids``, ``lease``). On PostgreSQL the lists
    are arrays (``= ANY``, ``<> ALL``), so the statement's text is the same whatever their
    length, and its prepared form is reused."""
    d = aliased(WebhookDelivery)
    e = aliased(WebhookDelivery)
    earlier = exists().where(
        e.subscription_id == d.subscription_id,
        e.order_key == d.order_key,
        e.state == "pending",
        e.id < d.id,
    )
    now = bindparam("now", type_=DELIVERIES.c.next_attempt_at.type)
    lease = bindparam("lease", type_=DELIVERIES.c.next_attempt_at.type)
    if dialect == "postgresql":
        not_full = d.subscription_id != all_(bindparam("full", type_=ARRAY(Integer)))
        chosen = DELIVERIES.c.id == any_(bindparam("ids", type_=ARRAY(BigInteger)))
    else:
        not_full = d.subscription_id.not_in(bindparam("full", expanding=True))
        chosen = DELIVERIES.c.id.in_(bindparam("ids", expanding=True))
    due = (
        select(d.id, d.subscription_id)
        .join(WebhookSubscription, WebhookSubscription.id == d.subscription_id)
        .where(d.state == "pending", d.next_attempt_at <= now, WebhookSubscription.enabled)
        .where(~earlier, not_full)
        .order_by(d.next_attempt_at)
        .limit(bindparam("limit", type_=Integer))
    )
    take = (
        update(DELIVERIES)
        .where(chosen)
        .values(next_attempt_at=lease, attempts=DELIVERIES.c.attempts + 1)
    )
    if dialect == "postgresql":
        due = due.with_for_update(of=d, skip_locked=True)
        # One round trip: PostgreSQL returns the joined subscription and event with the update.
        w, o = SUBSCRIPTIONS, OUTBOX
        take = take.where(
            w.c.id == DELIVERIES.c.subscription_id, o.c.id == DELIVERIES.c.outbox_id
        ).returning(*_claimed_columns())
    return due, take


async def claim(
    s: AsyncSession,
    dialect: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
    *,
    busy: Mapping[int, int] | None = None,
    per_subscription: int | None = None,
) -> list[Claimed]:
    """Take up to ``limit`` due deliveries of enabled subscriptions, each the oldest pending one
    of its (subscription, address): per address, events go out in order, one at a time. With
    ``per_subscription``, no subscription gets more than that in all, counting the ``busy``
    ones it already has in flight. A taken delivery is due again at ``lease_until`` (a worker
    that died mid-request is retried)."""
    due, take = _claim_statements(dialect)
    taken = dict(busy or {})
    cap = per_subscription if per_subscription is not None else limit
    full = sorted(sub for sub, n in taken.items() if n >= cap)
    rows = (await s.execute(due, {"now": now, "full": full, "limit": limit})).all()
    ids = _within_cap(rows, taken, cap)
    if not ids:
        return []
    params = {"ids": ids, "lease": lease_until}
    if dialect != "postgresql":
        # SQLite's RETURNING sees only the updated table: the rest is read after.
        await s.execute(take, params)
        return await _claimed(s, ids)
    claimed = (await s.execute(take, params)).all()
    return sorted((Claimed(*r) for r in claimed), key=lambda c: c.id)


def _claimed_columns() -> tuple[Any, ...]:
    w, o = SUBSCRIPTIONS, OUTBOX
    return (
        DELIVERIES.c.id,
        DELIVERIES.c.subscription_id,
        DELIVERIES.c.outbox_id,
        DELIVERIES.c.attempts,
        w.c.url,
        w.c.secret,
        w.c.previous_secret,
        w.c.previous_secret_until,
        o.c.type,
        o.c.created_at,
        o.c.data,
        w.c.failing_since,
    )


async def _claimed(s: AsyncSession, ids: list[int]) -> list[Claimed]:
    """What sending the deliveries ``ids`` needs, in id order."""
    w, o = SUBSCRIPTIONS, OUTBOX
    rows = await s.execute(
        select(*_claimed_columns())
        .join(w, w.c.id == DELIVERIES.c.subscription_id)
        .join(o, o.c.id == DELIVERIES.c.outbox_id)
        .where(DELIVERIES.c.id.in_(ids))
        .order_by(DELIVERIES.c.id)
    )
    return [Claimed(*r) for r in rows.all()]


async def release(s: AsyncSession, ids: Sequence[int], now: datetime) -> None:
    """Give back claimed deliveries that were never sent (due now, the attempt not counted)."""
    if ids:
        await s.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id.in_(sorted(ids)), DELIVERIES.c.state == "pending")
            .values(next_attempt_at=now, attempts=DELIVERIES.c.attempts - 1)
        )


def _within_cap(rows: Sequence[Any], taken: dict[int, int], cap: int) -> list[int]:
    """The ids of ``rows`` (id, subscription) that keep each subscription within ``cap``.
    Rows left out stay as they are (their lock ends with the transaction); their subscription
    is full now, so the next claim skips it and the others get the room."""
    ids = []
    for did, sub in rows:
        if taken.get(sub, 0) < cap:
            taken[sub] = taken.get(sub, 0) + 1
            ids.append(did)
    return ids


async def feed(s: AsyncSession, after: int, limit: int) -> list[Any]:
    q = (
        select(OUTBOX.c.id, OUTBOX.c.type, OUTBOX.c.created_at, OUTBOX.c.data, OUTBOX.c.position)
        .where(OUTBOX.c.position > after)
        .order_by(OUTBOX.c.position)
        .limit(limit)
    )
    return list((await s.execute(q)).all())


async def replay(
    s: AsyncSession, sub: Filter, since: datetime, now: datetime, *, batch: int = 5000
) -> int:
    """Queue again every sequenced event since ``since`` the subscription wants, except those
    still pending for it (the receiver de-duplicates by ``webhook-id``); how many."""
    pending = exists().where(
        DELIVERIES.c.outbox_id == OUTBOX.c.id,
        DELIVERIES.c.subscription_id == sub.id,
        DELIVERIES.c.state == "pending",
    )
    after, queued = 0, 0
    while True:
        q = (
            select(OUTBOX.c.id, OUTBOX.c.type, OUTBOX.c.scope, OUTBOX.c.address)
            .where(OUTBOX.c.created_at >= since, OUTBOX.c.position.isnot(None))
            .where(OUTBOX.c.id > after, ~pending)
            .order_by(OUTBOX.c.id)
            .limit(batch)
        )
        rows = (await s.execute(q)).all()
        if not rows:
            return queued
        after = rows[-1].id
        wanted = [
            _delivery(sub.id, r.id, r.address, now) for r in rows if sub.wants(r.type, r.scope)
        ]
        if wanted:
            await s.execute(DELIVERIES.insert(), wanted)
        queued += len(wanted)


async def stats(s: AsyncSession) -> dict[str, Any]:
    """Pending and dead deliveries, and when the oldest pending one was queued."""
    q = select(DELIVERIES.c.state, func.count(), func.min(DELIVERIES.c.created_at)).where(
        DELIVERIES.c.state.in_(("pending", "dead"))
    )
    counts: dict[str, Any] = {"pending": 0, "dead": 0, "oldest_pending": None}
    for state, n, oldest in (await s.execute(q.group_by(DELIVERIES.c.state))).all():
        counts[state] = int(n)
        if state == "pending":
            counts["oldest_pending"] = oldest
    unsequenced = await s.scalar(select(func.count()).where(OUTBOX.c.position.is_(None)))
    counts["unsequenced"] = int(unsequenced or 0)
    return counts


async def deliveries_of(
    s: AsyncSession, sub_id: int, states: Iterable[str], limit: int
) -> list[WebhookDelivery]:
    q = (
        select(WebhookDelivery)
        .where(WebhookDelivery.subscription_id == sub_id, WebhookDelivery.state.in_(list(states)))
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    )
    return list((await s.scalars(q)).all())


async def purge(s: AsyncSession, before: datetime) -> int:
    """Drop sent deliveries finished before ``before`` and sequenced events created before it
    that no pending or dead delivery still needs."""
    await s.execute(
        delete(DELIVERIES).where(DELIVERIES.c.state == "sent", DELIVERIES.c.finished_at < before)
    )
    needed = exists().where(DELIVERIES.c.outbox_id == OUTBOX.c.id)
    # The last position stays: the next one is counted from it (feed cursors never go back).
    last = select(func.max(OUTBOX.c.position)).scalar_subquery()
    result = await s.execute(
        delete(OUTBOX).where(OUTBOX.c.created_at < before, OUTBOX.c.position < last, ~needed)
    )
    return int(getattr(result, "rowcount", 0) or 0)
