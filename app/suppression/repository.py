"""All SQL on the suppression list (``suppressions``, and the ``events`` and ``audit_log`` rows
written with it). Functions take the caller's session: the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, String, Table, any_, bindparam, func, select, tuple_
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AuditEntry, Event, Suppression
from app.set_insert import UnnestInsert, chained
from app.suppression.merge import active_clause, active_sql
from app.suppression.model import SuppressionFilter, scope_for
from app.webhooks import outbox as webhooks_outbox

# Core tables: the write path builds plain INSERTs, without ORM unit-of-work bookkeeping.
SUPPRESSIONS_TABLE: Table = Suppression.__table__  # type: ignore[assignment]
EVENTS_TABLE: Table = Event.__table__  # type: ignore[assignment]
AUDIT_TABLE: Table = AuditEntry.__table__  # type: ignore[assignment]

# What the cache needs of every row of an address (active or not: the version counts them all).
CACHE_COLUMNS = (
    SUPPRESSIONS_TABLE.c.address,
    SUPPRESSIONS_TABLE.c.scope,
    SUPPRESSIONS_TABLE.c.outcome,
    SUPPRESSIONS_TABLE.c.reason,
    SUPPRESSIONS_TABLE.c.first_seen,
    SUPPRESSIONS_TABLE.c.expires_at,
    SUPPRESSIONS_TABLE.c.verified,
    SUPPRESSIONS_TABLE.c.source,
    SUPPRESSIONS_TABLE.c.revision,
    SUPPRESSIONS_TABLE.c.removed_at,
)
CHUNK = 1000  # addresses per IN (...) list

Key = tuple[str, str]  # (address, scope)


def active(now: datetime) -> ColumnElement[bool]:
    return active_clause(Suppression.removed_at, Suppression.expires_at, now)


# What a check answers with of an active row, in ``make_entry``'s order after the address.
ENTRY_COLUMNS = (
    SUPPRESSIONS_TABLE.c.address,
    SUPPRESSIONS_TABLE.c.scope,
    SUPPRESSIONS_TABLE.c.outcome,
    SUPPRESSIONS_TABLE.c.reason,
    SUPPRESSIONS_TABLE.c.first_seen,
    SUPPRESSIONS_TABLE.c.expires_at,
    SUPPRESSIONS_TABLE.c.verified,
    SUPPRESSIONS_TABLE.c.source,
)


# PostgreSQL: the addresses as one array parameter (one query, whatever their number) rather than
# IN lists of CHUNK bound values each: the check's database fallback plans and binds less.
_ADDRESS_IN_ARRAY = SUPPRESSIONS_TABLE.c.address == any_(
    bindparam("addresses", type_=postgresql.ARRAY(String))
)


async def active_entry_rows(
    s: AsyncSession, dialect: str, addresses: Sequence[str], now: datetime
) -> list[Any]:
    """The active rows of ``addresses`` as ``ENTRY_COLUMNS`` tuples: the check's database
    fallback, which needs no ORM objects (loading them cost several times the query)."""
    unique = list(dict.fromkeys(addresses))  # a row is read once, however often it is asked
    if dialect == "postgresql":
        q = select(*ENTRY_COLUMNS).where(_ADDRESS_IN_ARRAY, active(now))
        return list((await s.execute(q, {"addresses": unique})).all())
    rows: list[Any] = []
    for start in range(0, len(unique), CHUNK):
        chunk = unique[start : start + CHUNK]
        q = select(*ENTRY_COLUMNS).where(SUPPRESSIONS_TABLE.c.address.in_(chunk), active(now))
        rows += (await s.execute(q)).all()
    return rows


# The same read as raw SQL for asyncpg (``Database.driver_read``): prepared once per connection
# and run outside a transaction, one round trip a batch (the SQLAlchemy session added a BEGIN, a
# ROLLBACK and the compile/result machinery to every batch). The keys travel as one text, split on
# line breaks by the server: encoding a text[] parameter cost asyncpg about as much as the rest of
# the read, and no list key holds a line break (normalisation refuses them). "Active" is
# ``active_sql``'s.
ACTIVE_ENTRIES_SQL = (
    f"SELECT {', '.join(c.name for c in ENTRY_COLUMNS)} FROM {SUPPRESSIONS_TABLE.name}"  # noqa: S608 - constant SQL, values are parameters
    f" WHERE address = ANY(string_to_array($1, E'\\n')) AND {active_sql('', '$2')}"
)


async def active_entry_records(driver: Any, addresses: Sequence[str], now: datetime) -> list[Any]:
    """``active_entry_rows`` on PostgreSQL through an asyncpg connection: ``ENTRY_COLUMNS``
    records. A key with a line break cannot be on the list and is not sent."""
    unique = dict.fromkeys(addresses)
    keys = "\n".join(unique)
    if keys.count("\n") != len(unique) - 1:
        keys = "\n".join(a for a in unique if "\n" not in a)
    if not keys:
        return []
    rows: list[Any] = await driver.fetch(ACTIVE_ENTRIES_SQL, keys, now)
    return rows


def among(s: AsyncSession, column: Any, values: Sequence[Any]) -> Any:
    """``column IN (values)``; on PostgreSQL as ``column = ANY(<one array parameter>)``: one
    statement text whatever the number of values, so asyncpg prepares it once and PostgreSQL
    plans it once, where IN lists make a statement per length (53 of each in one ingest run).
    Measure before using it on a new query: the generic plan is chosen without the values."""
    if s.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    return column.in_(list(values))


async def cache_records(s: AsyncSession, addresses: Sequence[str]) -> list[Any]:
    """Every row of ``addresses`` (``CACHE_COLUMNS``), active or not.

    IN lists, not ``among``: on a new, never analysed table (a first ingest into a fresh
    database) PostgreSQL's generic plan for ``= ANY($1)`` here was a sequential scan, 33.6 s of
    an ingest run against 1.1 s with IN lists (pg_stat_statements)."""
    records: list[Any] = []
    for start in range(0, len(addresses), CHUNK):
        where = SUPPRESSIONS_TABLE.c.address.in_(addresses[start : start + CHUNK])
        records += (await s.execute(select(*CACHE_COLUMNS).where(where))).all()
    return records


async def rebuild_page(s: AsyncSession, after: str, batch: int) -> list[Any]:
    """The next rows after address ``after`` in (address, scope) order, never splitting an
    address across pages (its cache version is the sum of its rows)."""
    rows = (
        await s.execute(
            select(*CACHE_COLUMNS)
            .where(Suppression.address > after)
            .order_by(Suppression.address, Suppression.scope)
            .limit(batch)
        )
    ).all()
    if len(rows) == batch:
        tail = rows[-1].address
        head = [r for r in rows if r.address != tail]
        if head:
            return head
        return list(
            (await s.execute(select(*CACHE_COLUMNS).where(Suppression.address == tail))).all()
        )
    return list(rows)


async def addresses_changed_since(s: AsyncSession, since: datetime) -> list[str]:
    q = select(Suppression.address).where(Suppression.updated_at >= since).distinct()
    return list((await s.scalars(q)).all())


async def insert_missing(
    s: AsyncSession, dialect: str, rows: list[dict[str, Any]]
) -> dict[Key, Suppression]:
    """Insert the rows whose (address, scope) is new (one multi-row INSERT … ON CONFLICT DO
    NOTHING RETURNING, compiled once); returns those it created."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = (
        insert(SUPPRESSIONS_TABLE)
        .on_conflict_do_nothing(index_elements=["address", "scope"])
        .returning(*SUPPRESSIONS_TABLE.c)
    )
    created: dict[Key, Suppression] = {}
    for rec in (await s.execute(stmt, rows)).mappings():
        created[(rec["address"], rec["scope"])] = Suppression(**rec)
    return created


async def lock_rows(s: AsyncSession, keys: set[Key]) -> dict[Key, Suppression]:
    """``SELECT … FOR UPDATE`` in (address, scope) order: every writer locks in that order, so two
    writers of overlapping rows queue instead of deadlocking (the bulk import included)."""
    q = (
        select(Suppression)
        .where(tuple_(Suppression.address, Suppression.scope).in_(sorted(keys)))
        .order_by(Suppression.address, Suppression.scope)
        .with_for_update()
    )
    return {(row.address, row.scope): row for row in (await s.scalars(q)).all()}


async def lock_rows_of(s: AsyncSession, address: str, scope: str | None) -> list[Suppression]:
    """The rows of ``address`` (in ``scope`` only, unless None), locked for update."""
    q = (
        select(Suppression)
        .where(Suppression.address == address)
        .order_by(Suppression.scope)
        .with_for_update()
    )
    if scope is not None:
        q = q.where(Suppression.scope == scope)
    return list((await s.scalars(q)).all())


async def lock_expired(
    s: AsyncSession, dialect: str, now: datetime, limit: int
) -> list[Suppression]:
    """Up to ``limit`` entries whose expiry has passed and that are not removed yet, oldest
    expiry first, locked; on PostgreSQL rows another transaction holds are skipped (a writer
    reviving one, or another replica's sweep), not waited for."""
    q = (
        select(Suppression)
        .where(
            Suppression.removed_at.is_(None),
            Suppression.expires_at.isnot(None),
            Suppression.expires_at <= now,
        )
        .order_by(Suppression.expires_at)
        .limit(limit)
    )
    if dialect == "postgresql":
        q = q.with_for_update(skip_locked=True)
    return list((await s.scalars(q)).all())


async def insert_events(
    s: AsyncSession,
    events: list[dict[str, Any]],
    audits: list[dict[str, Any]],
    outbox: Sequence[dict[str, Any]] = (),
) -> None:
    """History rows, audit entries and the outbound events they make, in the caller's
    transaction; on PostgreSQL in one statement (one round trip: the outbox costs a change no
    round trip of its own)."""
    if s.get_bind().dialect.name == "postgresql" and events:
        params = _EVENTS_SET_INSERT.params(events)
        if audits:
            params |= _AUDIT_SET_INSERT.params(audits)
        if outbox:
            params |= webhooks_outbox.SET_INSERT.params(outbox)
        await s.execute(_CHAINED[bool(audits), bool(outbox)], params)
        if outbox:
            webhooks_outbox.wrote(s)
        return
    if events:
        await s.execute(EVENTS_TABLE.insert(), events)
    if audits:
        await s.execute(AUDIT_TABLE.insert(), audits)
    await webhooks_outbox.write(s, outbox)


_EVENTS_SET_INSERT = UnnestInsert(EVENTS_TABLE, [c.name for c in EVENTS_TABLE.c if c.name != "id"])
_AUDIT_SET_INSERT = UnnestInsert(
    AUDIT_TABLE, [c.name for c in AUDIT_TABLE.c if c.name != "id"], prefix="audit_"
)
# ``insert_events`` on PostgreSQL, by (audit entries?, outbound events?).
_CHAINED = {
    (False, False): _EVENTS_SET_INSERT.statement,
    (True, True): chained(_EVENTS_SET_INSERT, _AUDIT_SET_INSERT, webhooks_outbox.SET_INSERT),
    (True, False): chained(_EVENTS_SET_INSERT, _AUDIT_SET_INSERT),
    (False, True): chained(_EVENTS_SET_INSERT, webhooks_outbox.SET_INSERT),
}


async def rows_of(s: AsyncSession, address: str) -> list[Suppression]:
    q = select(Suppression).where(Suppression.address == address).order_by(Suppression.scope)
    return list((await s.scalars(q)).all())


async def rows_of_many(s: AsyncSession, keys: Sequence[str]) -> list[Suppression]:
    """Every row (active or not) of several list keys, by key then scope."""
    q = (
        select(Suppression)
        .where(Suppression.address.in_(list(keys)))
        .order_by(Suppression.address, Suppression.scope)
    )
    return list((await s.scalars(q)).all())


async def events_of(s: AsyncSession, address: str, limit: int) -> list[Event]:
    q = select(Event).where(Event.address == address).order_by(Event.id.desc()).limit(limit)
    return list((await s.scalars(q)).all())


async def audit_entries_of(s: AsyncSession, address: str, limit: int) -> list[AuditEntry]:
    q = (
        select(AuditEntry)
        .where(AuditEntry.address == address)
        .order_by(AuditEntry.id.desc())
        .limit(limit)
    )
    return list((await s.scalars(q)).all())


async def list_active(
    s: AsyncSession,
    flt: SuppressionFilter,
    now: datetime,
    *,
    cursor: int | None,
    limit: int,
    newest_first: bool = False,
) -> list[Suppression]:
    """Active rows matching ``flt``, by id after ``cursor`` (before it, newest first): at most
    ``limit``."""
    q = select(Suppression).where(active(now))
    if flt.source:
        q = q.where(Suppression.source == flt.source)
    if flt.outcome:
        q = q.where(Suppression.outcome == flt.outcome)
    if flt.reason:
        q = q.where(Suppression.reason == flt.reason)
    if flt.stream:
        q = q.where(Suppression.scope == scope_for(flt.stream))
    if flt.domain:
        q = q.where(Suppression.domain == flt.domain)
    if flt.since:
        q = q.where(Suppression.last_seen >= flt.since)
    if newest_first:
        if cursor:
            q = q.where(Suppression.id < cursor)
        return list((await s.scalars(q.order_by(Suppression.id.desc()).limit(limit))).all())
    if cursor:
        q = q.where(Suppression.id > cursor)
    return list((await s.scalars(q.order_by(Suppression.id).limit(limit))).all())


async def count_active_by_outcome(s: AsyncSession, now: datetime) -> dict[str, int]:
    q = select(Suppression.outcome, func.count()).where(active(now)).group_by(Suppression.outcome)
    return {str(o): int(n) for o, n in (await s.execute(q)).all()}


async def added_per_day(
    s: AsyncSession, now: datetime, since: datetime
) -> list[tuple[str, str, int]]:
    """(day as YYYY-MM-DD, outcome, count) of the suppressions first seen since ``since`` and
    active now."""
    day = func.substr(func.cast(Suppression.first_seen, String), 1, 10)
    q = (
        select(day, Suppression.outcome, func.count())
        .where(active(now), Suppression.first_seen >= since)
        .group_by(day, Suppression.outcome)
    )
    return [(str(d), str(o), int(n)) for d, o, n in (await s.execute(q)).all()]


async def top_domains(s: AsyncSession, now: datetime, limit: int) -> list[tuple[str, int]]:
    q = (
        select(Suppression.domain, func.count())
        .where(active(now))
        .group_by(Suppression.domain)
        .order_by(func.count().desc(), Suppression.domain)
        .limit(limit)
    )
    return [(str(d), int(n)) for d, n in (await s.execute(q)).all()]
