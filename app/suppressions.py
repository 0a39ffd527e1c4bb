"""The suppression list: suppress, unsuppress, check, look up, list, history.

Semantics (the contract every intake path relies on):

* scope ``global`` blocks every stream; a stream scope (e.g. an unsubscribe from ``marketing``)
  blocks only that stream. A check without a stream sees only global suppressions.
* an entry with ``expires_at`` stops blocking at that instant; nothing has to run for it.
* re-suppressing never weakens an entry: the stronger outcome wins (complaint > hard > manual >
  unsubscribe > soft) and permanence never becomes expiry.
* every change is an event; every manual change is also an audit entry naming the API key.

Cache values are computed from a *committed* snapshot (a fresh read after the commit), so equal
versions always mean equal content; see ``app.cache``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Table, and_, func, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics
from app.addresses import InvalidAddress, domain_of, normalise_address, try_normalise
from app.cache import (
    CacheCold,
    CachedEntry,
    CacheUnavailable,
    Entries,
    SuppressionCache,
)
from app.db import DB_ERRORS, Database
from app.errors import Forbidden, InvalidAddressError, InvalidInput, NotFound, Unavailable
from app.models import AuditEntry, Event, Suppression, utcnow
from app.streams import GLOBAL_SCOPE, STREAM_RE
from dsn.explain import rule_details

log = logging.getLogger(__name__)

# Strength for the no-weakening rule.
STRENGTH: dict[str, int] = {
    "complaint": 50,
    "hard": 40,
    "manual": 35,
    "unsubscribe": 30,
    "soft": 10,
}
SUPPRESSING_OUTCOMES = frozenset(STRENGTH)
SOURCES = frozenset({"bounce", "complaint", "unsubscribe", "api", "cli", "import"})
REASON_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,47}$")
# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled back whole.
_RETRYABLE_STATES = frozenset({"40P01", "40001"})
WRITE_ATTEMPTS = 3
T = TypeVar("T")


def retryable(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_STATES


def scope_for(stream: str | None) -> str:
    """``None``/empty/"global" -> the global scope; otherwise a validated stream name."""
    if stream is None or stream == "" or stream == GLOBAL_SCOPE:
        return GLOBAL_SCOPE
    if not STREAM_RE.match(stream):
        raise InvalidInput(
            f"stream {stream!r}: use 1-64 of a-z 0-9 _ . - starting with a letter or digit"
        )
    return stream


class InvalidDomain(InvalidInput):
    """A domain filter that is not a domain (the OpenAPI document cannot say what is one)."""

    error = "invalid_domain"


class ExpiryInPast(InvalidInput):
    """An ``expires_at`` at or before now: it would suppress nothing."""

    error = "expiry_in_past"


def parse_since(raw: str | None) -> datetime | None:
    """A ``since`` filter: ISO 8601 (naive = UTC); 422 naming the value otherwise.

    Only ISO 8601: pydantic's datetime also read a bare number as epoch seconds, so ``since=30``
    silently meant 1970."""
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidInput(
            f"since {raw!r}: an ISO 8601 date-time, e.g. 2024-05-01T12:00:00Z"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def normalise_or_422(address: str) -> str:
    try:
        return normalise_address(address)
    except InvalidAddress as exc:
        raise InvalidAddressError({"address": exc.address, "why": exc.why}) from None


def _epoch(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def _iso_dt(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _active(row: Suppression, now: datetime) -> bool:
    return row.removed_at is None and (row.expires_at is None or row.expires_at > now)


def decide(entries: Entries | None, scope: str, now: float) -> CachedEntry | None:
    """The entry that blocks ``scope`` now (the strongest), or None."""
    if not entries:
        return None
    best: CachedEntry | None = None
    for e in entries:
        if e.scope != GLOBAL_SCOPE and e.scope != scope:
            continue
        if e.expires is not None and e.expires <= now:
            continue
        if best is None or STRENGTH.get(e.outcome, 0) > STRENGTH.get(best.outcome, 0):
            best = e
    return best


def check_answer(address: str, hit: CachedEntry | None) -> dict[str, Any]:
    if hit is None:
        return {"address": address, "suppressed": False}
    return {
        "address": address,
        "suppressed": True,
        "outcome": hit.outcome,
        "reason": hit.reason,
        "scope": hit.scope,
        "since": hit.since,
        "expires_at": hit.expires_at,
        "verified": hit.verified,
        "source": hit.source,
    }


@dataclass(frozen=True, slots=True)
class SuppressionFilter:
    """Which active suppressions a listing or an export wants; validated on construction."""

    outcome: str | None = None
    reason: str | None = None
    stream: str | None = None
    domain: str | None = None
    since: datetime | None = None  # last seen at or after

    def __post_init__(self) -> None:
        if self.outcome is not None and self.outcome not in SUPPRESSING_OUTCOMES:
            raise InvalidInput(f"outcome {self.outcome!r}: one of {', '.join(STRENGTH)}")
        if self.reason is not None and not REASON_RE.match(self.reason):
            raise InvalidInput(f"reason {self.reason!r}: snake_case, at most 48 characters")
        if self.stream is not None:
            scope_for(self.stream)
        if self.since is not None and self.since.tzinfo is None:
            object.__setattr__(self, "since", self.since.replace(tzinfo=UTC))
        if self.domain is not None:
            # The stored form: lower-case IDNA, as normalise_address writes it.
            try:
                domain = normalise_address("x@" + self.domain.strip()).rpartition("@")[2]
            except InvalidAddress:
                raise InvalidDomain(f"domain {self.domain!r}: not a valid domain") from None
            object.__setattr__(self, "domain", domain)


@dataclass(slots=True)
class SuppressRequest:
    address: str
    outcome: str
    reason: str
    source: str
    stream: str | None = None
    expires_at: datetime | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    verified: bool = False
    actor: str | None = None  # API key name / "cli" for manual actions: writes an audit entry
    note: str | None = None
    event_kind: str | None = None  # defaults to the source
    rule_id: str | None = None
    status: str | None = None
    reply_code: int | None = None
    diagnostic: str | None = None
    message_id: int | None = None


def validate_request(req: SuppressRequest, now: datetime) -> SuppressRequest:
    """``req`` with its address normalised and ``stream`` set to the scope; 422 if invalid."""
    address = normalise_or_422(req.address)
    scope = scope_for(req.stream)
    if req.outcome not in SUPPRESSING_OUTCOMES:
        raise InvalidInput(f"outcome {req.outcome!r}: one of {sorted(SUPPRESSING_OUTCOMES)}")
    if not REASON_RE.match(req.reason):
        raise InvalidInput(f"reason {req.reason!r}: snake_case, at most 48 characters")
    if req.source not in SOURCES:
        raise InvalidInput(f"source {req.source!r}: one of {sorted(SOURCES)}")
    if req.expires_at is not None and req.expires_at <= now:
        raise ExpiryInPast("expires_at is in the past")
    if req.note is not None and "\x00" in req.note:
        # PostgreSQL's text and jsonb cannot hold U+0000: refuse it rather than fail the write.
        raise InvalidInput("note contains a NUL character")
    if address == req.address and scope == req.stream:
        return req
    return dataclasses.replace(req, address=address, stream=scope)


def _new_row(req: SuppressRequest, scope: str, now: datetime) -> dict[str, Any]:
    return {
        "address": req.address,
        "domain": domain_of(req.address),
        "scope": scope,
        "outcome": req.outcome,
        "reason": req.reason,
        "source": req.source,
        "detail": req.detail,
        "verified": req.verified,
        "first_seen": now,
        "last_seen": now,
        "expires_at": req.expires_at,
        "hit_count": 1,
        "revision": 1,
        "updated_at": now,
    }


# Core tables: the write path builds plain INSERTs, without ORM unit-of-work bookkeeping.
SUPPRESSIONS_TABLE: Table = Suppression.__table__  # type: ignore[assignment]

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


def cache_items(
    addresses: Sequence[str], records: Iterable[Sequence[Any]], now: datetime
) -> list[tuple[str, int, list[CachedEntry]]]:
    """The cache value of each address from its rows (``CACHE_COLUMNS`` order, read after the
    commit): the version is the sum of the rows' revisions, the entries are the active rows."""
    versions = dict.fromkeys(addresses, 0)
    entries: dict[str, list[CachedEntry]] = {a: [] for a in addresses}
    for address, scope, outcome, reason, first, expires, verified, source, rev, gone in records:
        versions[address] += rev
        if gone is None and (expires is None or expires > now):
            entries[address].append(
                make_entry(scope, outcome, reason, first, expires, bool(verified), source)
            )
    return [(a, versions[a], entries[a]) for a in addresses]


EVENTS_TABLE: Table = Event.__table__  # type: ignore[assignment]
_AUDIT: Table = AuditEntry.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class SuppressResult:
    address: str
    scope: str
    created: bool
    changed: bool  # outcome, reason, expiry or scope activity changed (not just a hit)
    row: Suppression


def make_entry(
    scope: str,
    outcome: str,
    reason: str,
    first_seen: datetime,
    expires_at: datetime | None,
    verified: bool,
    source: str,
) -> CachedEntry:
    return CachedEntry(
        scope=scope,
        outcome=outcome,
        reason=reason,
        since=_iso_dt(first_seen),
        expires=_epoch(expires_at),
        expires_at=_iso_dt(expires_at) if expires_at is not None else None,
        verified=verified,
        source=source,
    )


def row_to_entry(row: Suppression) -> CachedEntry:
    return make_entry(
        row.scope,
        row.outcome,
        row.reason,
        row.first_seen,
        row.expires_at,
        row.verified,
        row.source,
    )


def row_to_dict(row: Suppression, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    return {
        "address": row.address,
        "domain": row.domain,
        "scope": row.scope,
        "outcome": row.outcome,
        "reason": row.reason,
        "source": row.source,
        "verified": row.verified,
        "first_seen": row.first_seen,
        "last_seen": row.last_seen,
        "expires_at": row.expires_at,
        "hit_count": row.hit_count,
        "removed_at": row.removed_at,
        "active": _active(row, now),
        "detail": row.detail or {},
    }


class SuppressionService:
    """All reads and writes of the suppression list; owns the cache's consistency."""

    def __init__(self, db: Database, cache: SuppressionCache, *, auto_rebuild: bool = True) -> None:
        self.db = db
        self.cache = cache
        self.auto_rebuild = auto_rebuild  # off for one-shot CLI commands
        self.cache_dirty = False  # a write-through failed: the replica may be stale
        self.cache_state = "unknown"  # ok | cold | unavailable | rebuilding
        self._rebuild_task: asyncio.Task[int] | None = None
        self._synced_until: datetime | None = None
        # Single-address checks arriving in the same event-loop turn share one cache round trip.
        self._pending_gets: list[tuple[str, asyncio.Future[Entries | None]]] = []
        self._get_tasks: set[asyncio.Task[None]] = set()
        self._abandoned: set[asyncio.Future[list[Entries | None]]] = set()
        self._db_waiting: list[tuple[str, asyncio.Future[Entries | None]]] = []
        self._db_task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- check (hot path)

    async def check_many(
        self, addresses: Sequence[str], stream: str | None
    ) -> list[dict[str, Any]]:
        """One answer per input, in order; an invalid address is reported in its slot."""
        scope = scope_for(stream)
        normalised = [try_normalise(a) if isinstance(a, str) else None for a in addresses]
        valid = [n for n in normalised if n is not None]
        entries = await self.lookup_entries(valid)
        now = time.time()
        out: list[dict[str, Any]] = []
        it = iter(entries)
        hits = 0
        for raw, norm in zip(addresses, normalised, strict=True):
            if norm is None:
                out.append(_invalid_slot(raw))
                continue
            ent = next(it)
            hit = decide(ent, scope, now) if ent else None
            if hit is None:
                out.append({"address": norm, "suppressed": False})
            else:
                hits += 1
                out.append(check_answer(norm, hit))
        metrics.CHECK_ADDRESSES.inc(len(addresses))
        if hits:
            metrics.CHECK_HITS.inc(hits)
        return out

    async def check_one(self, address: str, stream: str | None) -> dict[str, Any]:
        scope = scope_for(stream)
        norm = normalise_or_422(address)
        (ent,) = await self.lookup_entries([norm], coalesce=True)
        hit = decide(ent, scope, time.time())
        metrics.CHECK_ADDRESSES.inc()
        if hit is not None:
            metrics.CHECK_HITS.inc()
        return check_answer(norm, hit)

    async def lookup_entries(
        self, addresses: Sequence[str], *, coalesce: bool = False
    ) -> list[Entries | None]:
        """Cache first; the database when the cache is cold, stale or down; 503 when both fail."""
        if not self.cache_dirty:
            try:
                if coalesce and len(addresses) == 1:
                    result = [await self._coalesced_get(addresses[0])]
                else:
                    result = await self.cache.get_many(addresses)
                self.cache_state = "ok"
                return result
            except CacheCold:
                metrics.CACHE_FALLBACKS.labels("cold").inc()
                self.cache_state = "cold"
                self.schedule_rebuild()
            except CacheUnavailable as exc:
                metrics.CACHE_FALLBACKS.labels("unavailable").inc()
                if self.cache_state != "unavailable":
                    log.warning("cache unavailable, answering from the database: %s", exc)
                self.cache_state = "unavailable"
        else:
            metrics.CACHE_FALLBACKS.labels("stale").inc()
            self.schedule_rebuild()
        try:
            if coalesce and len(addresses) == 1:
                return [await self._coalesced_db_get(addresses[0])]
            return await self._entries_from_db_bounded(addresses)
        except DB_ERRORS as exc:
            metrics.CHECK_UNAVAILABLE.inc()
            log.error("check failed: cache %s and database unreachable: %s", self.cache_state, exc)
            raise Unavailable("suppression list unavailable (cache and database)") from None

    async def _entries_from_db_bounded(self, addresses: Sequence[str]) -> list[Entries | None]:
        """The database fallback within STOPLIST_DATABASE_TIMEOUT_S: a hung database (with the
        cache unusable) is a 503 the caller can act on, not a pre-send check that waits for the
        driver's 30 s command timeout. The abandoned read is cancelled but not awaited: cleaning
        up its connection can itself hang until the driver gives up."""
        task = asyncio.ensure_future(self.entries_from_db(addresses))
        done, _ = await asyncio.wait({task}, timeout=self.db.settings.database_timeout_s)
        if not done:
            task.cancel()
            self._abandoned.add(task)
            task.add_done_callback(self._forget_abandoned)
            raise TimeoutError("database read timed out")
        return task.result()

    def _coalesced_db_get(self, address: str) -> asyncio.Future[Entries | None]:
        """Single checks answered from the database share queries: while one query is in flight
        the next addresses wait and then go together (as the sink's group commit does), so a
        burst of checks with the cache down costs a few queries, not one connection each."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Entries | None] = loop.create_future()
        self._db_waiting.append((address, future))
        if self._db_task is None or self._db_task.done():
            self._db_task = loop.create_task(self._run_db_gets())
        return future

    async def _run_db_gets(self) -> None:
        while self._db_waiting:
            batch, self._db_waiting = self._db_waiting, []
            try:
                results = await self._entries_from_db_bounded([a for a, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch + self._db_waiting:
                    future.cancel()
                self._db_waiting = []
                raise
            except Exception as exc:  # each waiter handles it (503 for a database error)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    def _forget_abandoned(self, task: asyncio.Future[list[Entries | None]]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("an abandoned database read ended with %r", task.exception())

    def _coalesced_get(self, address: str) -> asyncio.Future[Entries | None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Entries | None] = loop.create_future()
        self._pending_gets.append((address, future))
        if len(self._pending_gets) == 1:
            loop.call_soon(self._flush_gets)
        return future

    def _flush_gets(self) -> None:
        batch, self._pending_gets = self._pending_gets, []
        task = asyncio.get_running_loop().create_task(self._run_gets(batch))
        self._get_tasks.add(task)
        task.add_done_callback(self._get_tasks.discard)

    async def _run_gets(self, batch: list[tuple[str, asyncio.Future[Entries | None]]]) -> None:
        try:
            results = await self.cache.get_many([address for address, _ in batch])
        except Exception as exc:  # each waiter handles it (falls back to the database)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def entries_from_db(self, addresses: Sequence[str]) -> list[Entries | None]:
        found: dict[str, list[CachedEntry]] = {}
        now = utcnow()
        async with self.db.read() as s:
            for start in range(0, len(addresses), 1000):
                chunk = list(set(addresses[start : start + 1000]))
                rows = await s.scalars(
                    select(Suppression).where(
                        Suppression.address.in_(chunk),
                        Suppression.removed_at.is_(None),
                        or_(Suppression.expires_at.is_(None), Suppression.expires_at > now),
                    )
                )
                for row in rows:
                    found.setdefault(row.address, []).append(row_to_entry(row))
        return [tuple(found[a]) if a in found else None for a in addresses]

    # ---------------------------------------------------------------- writes

    async def suppress(self, req: SuppressRequest) -> SuppressResult:
        now = utcnow()
        checked = validate_request(req, now)  # before any connection is taken

        async def write(s: AsyncSession) -> SuppressResult:
            [result] = await self.write_suppressions(s, [checked], now)
            return result

        result = await self._write(write)
        await self.refresh_cache([result.address])
        metrics.SUPPRESSIONS_WRITTEN.labels(req.outcome, req.source).inc()
        return result

    async def write_suppressions(
        self, s: AsyncSession, requests: Sequence[SuppressRequest], now: datetime
    ) -> list[SuppressResult]:
        """Write ``requests`` (in order) with their events and audit entries inside the caller's
        transaction; the caller commits, then refreshes the cache from a read after the commit.

        Round trips, however many requests: one multi-row ``INSERT … ON CONFLICT DO NOTHING
        RETURNING`` for the (address, scope) pairs that are new; one ``SELECT … FOR UPDATE`` of the
        pairs that already existed (or that a request earlier in this batch created), merged in
        Python by :func:`merge_into` (the no-weakening rule lives in one place) and flushed; one
        multi-row event insert; one audit insert when a request names an actor.
        """
        checked = [validate_request(r, now) for r in requests]
        first: dict[tuple[str, str], int] = {}
        for i, r in enumerate(checked):
            first.setdefault((r.address, r.stream or GLOBAL_SCOPE), i)
        insert = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
        # Every writer locks rows in (address, scope) order, so two writers of overlapping rows
        # queue instead of deadlocking (the bulk import included).
        rows = [_new_row(checked[i], key[1], now) for key, i in sorted(first.items())]
        # executemany: one multi-row INSERT on the wire, compiled once (cached).
        stmt = (
            insert(SUPPRESSIONS_TABLE)
            .on_conflict_do_nothing(index_elements=["address", "scope"])
            .returning(*SUPPRESSIONS_TABLE.c)
        )
        created: dict[tuple[str, str], Suppression] = {}
        for rec in (await s.execute(stmt, rows)).mappings():
            created[(rec["address"], rec["scope"])] = Suppression(**rec)
        # Pairs that existed, and pairs named again later in this batch: merged row by row.
        merge_keys = {k for k in first if k not in created}
        merge_keys |= {
            (r.address, r.stream or GLOBAL_SCOPE)
            for i, r in enumerate(checked)
            if first[(r.address, r.stream or GLOBAL_SCOPE)] != i
        }
        existing: dict[tuple[str, str], Suppression] = {}
        if merge_keys:
            q = (
                select(Suppression)
                .where(tuple_(Suppression.address, Suppression.scope).in_(sorted(merge_keys)))
                .order_by(Suppression.address, Suppression.scope)
                .with_for_update()
            )
            existing = {(row.address, row.scope): row for row in (await s.scalars(q)).all()}
        results: list[SuppressResult] = []
        events: list[dict[str, Any]] = []
        audits: list[dict[str, Any]] = []
        for i, req in enumerate(checked):
            scope = req.stream or GLOBAL_SCOPE
            key = (req.address, scope)
            if first[key] == i and key in created:
                result = SuppressResult(req.address, scope, True, True, created[key])
            else:
                row = existing[key]
                result = SuppressResult(req.address, scope, False, merge_into(row, req, now), row)
            results.append(result)
            events.append(
                {
                    "created_at": now,
                    "address": req.address,
                    "scope": scope,
                    "kind": req.event_kind or req.source,
                    "outcome": req.outcome,
                    "reason": req.reason,
                    "rule_id": req.rule_id,
                    "status": req.status,
                    "reply_code": req.reply_code,
                    "diagnostic": req.diagnostic,
                    "source": req.source,
                    "actor": req.actor,
                    "verified": req.verified,
                    "message_id": req.message_id,
                    "detail": {"note": req.note, **req.detail} if req.note else dict(req.detail),
                }
            )
            if req.actor is not None:
                audits.append(
                    {
                        "created_at": now,
                        "actor": req.actor,
                        "action": "suppress",
                        "address": req.address,
                        "scope": scope,
                        "reason": req.note or req.reason,
                        "detail": {
                            "outcome": req.outcome,
                            "reason": req.reason,
                            "expires_at": req.expires_at.isoformat() if req.expires_at else None,
                            "created": result.created,
                            "changed": result.changed,
                        },
                    }
                )
        if existing:
            await s.flush()
        await s.execute(EVENTS_TABLE.insert(), events)
        if audits:
            await s.execute(_AUDIT.insert(), audits)
        return results

    async def unsuppress(
        self,
        address: str,
        *,
        stream: str | None,
        all_scopes: bool,
        reason: str,
        actor: str,
        may_remove_complaints: bool,
    ) -> list[dict[str, Any]]:
        """Remove active suppressions; complaints only with admin scope and force (legal risk)."""
        norm = normalise_or_422(address)
        if not reason or not reason.strip():
            raise InvalidInput("a reason is required to unsuppress")
        if "\x00" in reason:
            raise InvalidInput("reason contains a NUL character")
        now = utcnow()

        async def remove(s: AsyncSession) -> list[dict[str, Any]]:
            q = (
                select(Suppression)
                .where(Suppression.address == norm)
                .order_by(Suppression.scope)
                .with_for_update()
            )
            if not all_scopes:
                q = q.where(Suppression.scope == scope_for(stream))
            rows = [r for r in (await s.scalars(q)).all() if _active(r, now)]
            if not rows:
                raise NotFound(f"{norm} has no active suppression in that scope")
            complaints = [r for r in rows if r.outcome == "complaint"]
            if complaints and not may_remove_complaints:
                raise Forbidden(
                    "removing a complaint suppression needs the admin scope and force=true"
                )
            removed = []
            for row in rows:
                row.removed_at = now
                row.revision += 1
                row.updated_at = now
                removed.append({"scope": row.scope, "outcome": row.outcome, "reason": row.reason})
                s.add(
                    Event(
                        created_at=now,
                        address=norm,
                        scope=row.scope,
                        kind="unsuppress",
                        outcome=row.outcome,
                        reason=row.reason,
                        source="api",
                        actor=actor,
                        detail={"why": reason},
                    )
                )
                s.add(
                    AuditEntry(
                        created_at=now,
                        actor=actor,
                        action="unsuppress",
                        address=norm,
                        scope=row.scope,
                        reason=reason,
                        detail={"outcome": row.outcome, "reason": row.reason},
                    )
                )
            return removed

        removed = await self._write(remove)
        await self.refresh_cache([norm])
        return removed

    async def _write(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """``work`` in a write transaction; run again when PostgreSQL rolled it back to break a
        deadlock or a serialization failure (the whole transaction is undone, so it is safe).

        Found by ``tests/app/test_concurrency.py``: with a bulk import holding many row locks, a
        single write could be chosen as the deadlock victim and answer 503."""
        attempt = 1
        while True:
            try:
                async with self.db.write() as s:
                    return await work(s)
            except DBAPIError as exc:
                if attempt >= WRITE_ATTEMPTS or not retryable(exc):
                    raise
                log.warning("write rolled back by the database, retrying: %s", exc.orig)
            await asyncio.sleep(0.01 * attempt)
            attempt += 1

    # ---------------------------------------------------------------- cache upkeep

    async def refresh_cache(self, addresses: Sequence[str], *, db: Database | None = None) -> None:
        """Write the committed state of ``addresses`` through to the cache.

        Call it after the commit: the state is a fresh read (``db``: another engine on the same
        database, such as the intake's), so equal versions always mean equal content."""
        if not addresses:
            return
        try:
            items = await self.cache_state_for(addresses, db=db)
            await self.cache.put_many(items)
        except CacheUnavailable as exc:
            # The replica now lacks a committed change: stop trusting it until rebuilt.
            log.error("cache write-through failed (%s); checks use the database until rebuilt", exc)
            self.cache_dirty = True
            metrics.CACHE_WRITE_FAILURES.inc()

    async def cache_state_for(
        self, addresses: Sequence[str], *, db: Database | None = None
    ) -> list[tuple[str, int, list[CachedEntry]]]:
        now = utcnow()
        addresses = list(dict.fromkeys(addresses))
        records: list[Any] = []
        async with (db or self.db).read() as s:
            for start in range(0, len(addresses), 1000):
                chunk = addresses[start : start + 1000]
                where = SUPPRESSIONS_TABLE.c.address.in_(chunk)
                records += (await s.execute(select(*CACHE_COLUMNS).where(where))).all()
        return cache_items(addresses, records, now)

    def schedule_rebuild(self) -> None:
        if not self.auto_rebuild:
            return
        if self._rebuild_task is None or self._rebuild_task.done():
            self._rebuild_task = asyncio.get_running_loop().create_task(self._rebuild_quietly())

    async def wait_rebuild(self) -> None:
        if self._rebuild_task is not None:
            await asyncio.gather(self._rebuild_task, return_exceptions=True)

    async def _rebuild_quietly(self) -> int:
        try:
            return await self.rebuild_cache()
        except (CacheUnavailable, *DB_ERRORS) as exc:
            log.warning("cache rebuild failed, will retry on next miss: %s", exc)
            return -1
        except Exception:
            log.exception("cache rebuild crashed")
            return -1

    async def rebuild_cache(self, *, batch: int = 1000, force: bool = False) -> int:
        """Load every suppression into the cache, then set the ready marker. Returns entries.

        Pages are small (``batch`` rows) and the loop yields between them: a rebuild runs on the
        event loop that answers pre-send checks, which must not wait out 5,000 rows of work."""
        if self.cache_dirty:
            # Entries written while we could not reach the cache are missing there. Once it is
            # marked cold this process's part is done: a rebuild that began earlier cannot mark
            # it ready (the cold epoch moved), one that begins later reads our writes, and the
            # next check that finds it cold starts one. Marking it cold again on every attempt
            # would fail every other process's rebuild for ever.
            await self.cache.mark_cold()
            self.cache_dirty = False
        got = await self.cache.try_lock_rebuild(ttl_s=600)
        if not got and not force:
            log.info("another replica is rebuilding the cache")
            return 0
        self.cache_state = "rebuilding"
        dirty_before = self.cache_dirty
        self.cache_dirty = False
        count = 0
        try:
            now = utcnow()
            self._synced_until = now
            last = ""
            cols = CACHE_COLUMNS
            while True:
                # Key-set pagination on the (address, scope) unique index keeps every query short.
                async with self.db.read() as s:
                    rows = (
                        await s.execute(
                            select(*cols)
                            .where(Suppression.address > last)
                            .order_by(Suppression.address, Suppression.scope)
                            .limit(batch)
                        )
                    ).all()
                    if not rows:
                        break
                    if len(rows) == batch:
                        # Never split an address across pages: its version is the sum of its rows.
                        tail = rows[-1].address
                        head = [r for r in rows if r.address != tail]
                        if head:
                            rows = head
                        else:
                            rows = (
                                await s.execute(select(*cols).where(Suppression.address == tail))
                            ).all()
                pending = cache_items(list(dict.fromkeys(r.address for r in rows)), rows, now)
                await self.cache.put_many(pending)
                count += sum(len(e) for _, _, e in pending)
                last = rows[-1].address
                await asyncio.sleep(0)
            if self.cache_dirty:  # a write-through here failed while we rebuilt: not complete
                raise CacheUnavailable("a write-through failed during the rebuild")
            await self.cache.mark_ready(uuid.uuid4().hex)
            self.cache_state = "ok"
            metrics.CACHE_REBUILDS.inc()
            log.info("cache rebuilt: %d active suppressions", count)
            return count
        except BaseException:
            self.cache_dirty = dirty_before or self.cache_dirty
            raise
        finally:
            try:
                await self.cache.unlock_rebuild()
            except Exception as exc:  # the lock expires by itself
                log.debug("could not release rebuild lock: %s", exc)

    async def sync_from_database(self, overlap_s: float = 10.0) -> int:
        """Pick up writes other processes made (embedded mode: the CLI, an import).

        Rows changed since the last sync (with an overlap for transactions that committed late)
        are re-read and put with their versions, so re-reading one twice is harmless.
        """
        if self._synced_until is None:
            return 0
        started = utcnow()
        since = self._synced_until - timedelta(seconds=overlap_s)
        async with self.db.read() as s:
            changed = (
                await s.scalars(
                    select(Suppression.address).where(Suppression.updated_at >= since).distinct()
                )
            ).all()
        if changed:
            await self.refresh_cache(list(changed))
        self._synced_until = started
        return len(changed)

    # ---------------------------------------------------------------- support reads

    async def get(self, address: str, *, events: int = 20) -> dict[str, Any]:
        norm = normalise_or_422(address)
        now = utcnow()
        async with self.db.read() as s:
            rows = (
                await s.scalars(
                    select(Suppression)
                    .where(Suppression.address == norm)
                    .order_by(Suppression.scope)
                )
            ).all()
            evs = (
                await s.scalars(
                    select(Event)
                    .where(Event.address == norm)
                    .order_by(Event.id.desc())
                    .limit(events)
                )
            ).all()
        if not rows and not evs:
            raise NotFound(f"{norm} has never been suppressed")
        return {
            "address": norm,
            "suppressed_globally": any(r.scope == GLOBAL_SCOPE and _active(r, now) for r in rows),
            "suppressions": [row_to_dict(r, now) for r in rows],
            "events": [event_to_dict(e) for e in evs],
        }

    async def history(
        self, address: str, *, limit: int = 100, before: int | None = None
    ) -> list[dict[str, Any]]:
        """Events and audit entries for ``address``, newest first."""
        norm = normalise_or_422(address)
        async with self.db.read() as s:
            eq = select(Event).where(Event.address == norm)
            aq = select(AuditEntry).where(AuditEntry.address == norm)
            evs = (await s.scalars(eq.order_by(Event.id.desc()).limit(limit))).all()
            aud = (await s.scalars(aq.order_by(AuditEntry.id.desc()).limit(limit))).all()
        items = [
            {
                "type": "event",
                **event_to_dict(e),
                "explanation": rule_details(e.rule_id, e.diagnostic),
            }
            for e in evs
        ]
        items += [{"type": "audit", **audit_to_dict(a)} for a in aud]
        items.sort(key=lambda i: (i["created_at"], i["type"] == "audit"), reverse=True)
        return items[:limit]

    async def list(
        self, flt: SuppressionFilter, *, cursor: int | None = None, limit: int = 100
    ) -> tuple[list[dict[str, Any]], int | None]:
        now = utcnow()
        q = select(Suppression).where(
            Suppression.removed_at.is_(None),
            or_(Suppression.expires_at.is_(None), Suppression.expires_at > now),
        )
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
        if cursor:
            q = q.where(Suppression.id > cursor)
        q = q.order_by(Suppression.id).limit(limit + 1)
        async with self.db.read() as s:
            rows = (await s.scalars(q)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = rows[-1].id if more and rows else None
        return [row_to_dict(r, now) for r in rows], next_cursor

    async def count_by_outcome(self) -> dict[str, int]:
        now = utcnow()
        async with self.db.read() as s:
            res = await s.execute(
                select(Suppression.outcome, func.count())
                .where(
                    and_(
                        Suppression.removed_at.is_(None),
                        or_(Suppression.expires_at.is_(None), Suppression.expires_at > now),
                    )
                )
                .group_by(Suppression.outcome)
            )
            return {str(o): int(n) for o, n in res.all()}


def merge_into(row: Suppression, req: SuppressRequest, now: datetime) -> bool:
    """Apply ``req`` to an existing row without weakening it. Returns whether it changed."""
    row.last_seen = now
    row.updated_at = now
    row.hit_count += 1
    row.revision += 1
    if not _active(row, now):
        # Removed or expired: a fresh suppression.
        row.outcome, row.reason, row.source = req.outcome, req.reason, req.source
        row.detail, row.verified = req.detail, req.verified
        row.first_seen, row.expires_at, row.removed_at = now, req.expires_at, None
        row.hit_count = 1
        return True
    before = (row.outcome, row.reason, row.expires_at, row.verified)
    if STRENGTH[req.outcome] >= STRENGTH.get(row.outcome, 0):
        row.outcome, row.reason, row.source = req.outcome, req.reason, req.source
        row.detail = req.detail or row.detail
        row.verified = req.verified or (row.verified and before[0] == req.outcome)
    if row.expires_at is None or req.expires_at is None:
        row.expires_at = None
    else:
        row.expires_at = max(row.expires_at, req.expires_at)
    return before != (row.outcome, row.reason, row.expires_at, row.verified)


def event_to_dict(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "created_at": e.created_at,
        "kind": e.kind,
        "scope": e.scope,
        "outcome": e.outcome,
        "reason": e.reason,
        "rule_id": e.rule_id,
        "status": e.status,
        "reply_code": e.reply_code,
        "diagnostic": e.diagnostic,
        "source": e.source,
        "actor": e.actor,
        "verified": e.verified,
        "message_id": e.message_id,
        "detail": e.detail or {},
    }


def audit_to_dict(a: AuditEntry) -> dict[str, Any]:
    return {
        "id": a.id,
        "created_at": a.created_at,
        "actor": a.actor,
        "action": a.action,
        "scope": a.scope,
        "reason": a.reason,
        "detail": a.detail or {},
    }


def _invalid_slot(raw: object) -> dict[str, Any]:
    text = raw if isinstance(raw, str) else repr(raw)
    why = "not a string"
    if isinstance(raw, str):
        try:
            normalise_address(raw)
            why = "invalid"
        except InvalidAddress as exc:
            why = exc.why
    return {"address": text, "suppressed": None, "error": why}
