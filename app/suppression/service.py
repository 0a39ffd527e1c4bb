"""Writes and support reads of the suppression list: suppress (one or a batch, inside the caller's
transaction), unsuppress, and the reads a support person makes (one address, its history, a
filtered listing, counts). Checks are answered by ``app.suppression.lookup``."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics
from app.errors import Forbidden, InvalidInput, NotFound
from app.models import AuditEntry, Event, utcnow
from app.streams import GLOBAL_SCOPE
from app.suppression import repository, set_merge
from app.suppression.lookup import SuppressionLookup
from app.suppression.merge import is_active, merge_into
from app.suppression.model import (
    SuppressionFilter,
    SuppressRequest,
    SuppressResult,
    audit_to_dict,
    event_to_dict,
    list_key,
    new_row,
    row_to_dict,
    scope_for,
    validate_request,
    with_domain_keys,
)
from app.webhooks import outbox as webhooks_outbox
from dsn.explain import rule_details

log = logging.getLogger("app.suppressions")

# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled back whole.
_RETRYABLE_STATES = frozenset({"40P01", "40001"})
WRITE_ATTEMPTS = 3
T = TypeVar("T")


def retryable(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_STATES


def _history_row(req: SuppressRequest, scope: str, now: datetime) -> dict[str, Any]:
    """The ``events`` row of one suppress request."""
    return {
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


EXPIRY_BATCH = 1000  # entries per expiry transaction
EXPIRY_INTERVAL_S = 30.0  # how often housekeeping looks for expired entries


def expired_unrecorded(row: Any, now: datetime) -> bool:
    """An entry past its expiry whose end is not recorded yet (``removed_at`` still empty)."""
    return row.removed_at is None and row.expires_at is not None and row.expires_at <= now


def _expiry_row(row: Any, now: datetime) -> dict[str, Any]:
    """The ``events`` row recording that an entry's expiry was reached (the same keys as
    ``_history_row``: one multi-row insert takes both)."""
    return {
        "created_at": now,
        "address": row.address,
        "scope": row.scope,
        "kind": "expiry",
        "outcome": row.outcome,
        "reason": row.reason,
        "rule_id": None,
        "status": None,
        "reply_code": None,
        "diagnostic": None,
        "source": "expiry",
        "actor": None,
        "verified": row.verified,
        "message_id": None,
        "detail": {
            "why": "expired",
            "expired_at": row.expires_at.isoformat().replace("+00:00", "Z"),
        },
    }


def _change(result: SuppressResult | set_merge.Merged, was_active: bool) -> str | None:
    """The ``suppression.*`` event a merge makes: a new or revived entry is ``created``, a
    strengthened or extended one ``updated``; an unchanged one says nothing."""
    if result.created or (result.changed and not was_active):
        return "created"
    return "updated" if result.changed else None


class SuppressionService(SuppressionLookup):
    """All reads and writes of the suppression list; owns the cache's consistency."""

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
        # In (address, scope) order: the order every writer locks rows in.
        rows = [new_row(checked[i], key[1], now) for key, i in sorted(first.items())]
        created = await repository.insert_missing(s, self.db.dialect, rows)
        # Pairs that existed, and pairs named again later in this batch: merged row by row.
        merge_keys = {k for k in first if k not in created}
        merge_keys |= {
            (r.address, r.stream or GLOBAL_SCOPE)
            for i, r in enumerate(checked)
            if first[(r.address, r.stream or GLOBAL_SCOPE)] != i
        }
        existing = await repository.lock_rows(s, merge_keys) if merge_keys else {}
        results: list[SuppressResult] = []
        events: list[dict[str, Any]] = []
        audits: list[dict[str, Any]] = []
        outbox: list[dict[str, Any]] = []
        for i, req in enumerate(checked):
            was_active = False
            scope = req.stream or GLOBAL_SCOPE
            key = (req.address, scope)
            if first[key] == i and key in created:
                result = SuppressResult(req.address, scope, True, True, created[key])
            else:
                row = existing[key]
                was_active = is_active(row.removed_at, row.expires_at, now)
                if expired_unrecorded(row, now):
                    # Revived before the expiry sweep came by: its end is said first, once.
                    ended = _expiry_row(row, now)
                    events.append(ended)
                    outbox += webhooks_outbox.for_history(ended, "removed", row)
                result = SuppressResult(req.address, scope, False, merge_into(row, req, now), row)
            results.append(result)
            event = _history_row(req, scope, now)
            events.append(event)
            outbox += webhooks_outbox.for_history(event, _change(result, was_active), result.row)
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
        await repository.insert_events(s, events, audits, outbox)
        return results

    async def write_suppressions_fast(
        self, s: AsyncSession, requests: Sequence[SuppressRequest], now: datetime
    ) -> list[SuppressResult] | list[set_merge.Merged]:
        """:meth:`write_suppressions`, set-based where it can be: on PostgreSQL, for requests of
        distinct (address, scope) pairs that name no actor (the intake's batches), one statement
        merges them all (``set_merge.merge_many``, the never-weaken rule generated from
        ``app.suppression.merge``), one inserts their events with their outbound events; no ORM
        object is made. Otherwise (and when one of the pairs revives an entry whose expiry is not
        recorded yet, which must say ``suppression.removed`` first) :meth:`write_suppressions`."""
        checked = [validate_request(r, now) for r in requests]
        keys = [(r.address, r.stream or GLOBAL_SCOPE) for r in checked]
        if (
            self.db.dialect != "postgresql"
            or len(set(keys)) < len(keys)
            or any(r.actor is not None for r in checked)
            or await set_merge.any_expired_unrecorded(s, keys, now)
        ):
            return await self.write_suppressions(s, checked, now)
        rows = [new_row(r, scope, now) for r, (_, scope) in zip(checked, keys, strict=True)]
        merged = await set_merge.merge_many(s, rows, now)
        results = [merged[key] for key in keys]
        events = [_history_row(r, m.scope, now) for r, m in zip(checked, results, strict=True)]
        outbox: list[dict[str, Any]] = []
        for event, m in zip(events, results, strict=True):
            outbox += webhooks_outbox.for_history(event, _change(m, m.was_active), m)
        await repository.insert_events(s, events, [], outbox)
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
        whole_domain: bool = False,
    ) -> list[dict[str, Any]]:
        """Remove active suppressions (of the address, or with ``whole_domain`` of its domain's
        own entry); complaints only with admin scope and force (legal risk)."""
        norm = list_key(address, whole_domain=whole_domain)
        if not reason or not reason.strip():
            raise InvalidInput("a reason is required to unsuppress")
        if "\x00" in reason:
            raise InvalidInput("reason contains a NUL character")
        now = utcnow()

        async def remove(s: AsyncSession) -> list[dict[str, Any]]:
            scope = None if all_scopes else scope_for(stream)
            locked = await repository.lock_rows_of(s, norm, scope)
            rows = [r for r in locked if is_active(r.removed_at, r.expires_at, now)]
            if not rows:
                raise NotFound(f"{norm} has no active suppression in that scope")
            complaints = [r for r in rows if r.outcome == "complaint"]
            if complaints and not may_remove_complaints:
                raise Forbidden(
                    "removing a complaint suppression needs the admin scope and force=true"
                )
            removed = []
            outbox: list[dict[str, Any]] = []
            for row in rows:
                row.removed_at = now
                row.revision += 1
                row.updated_at = now
                removed.append({"scope": row.scope, "outcome": row.outcome, "reason": row.reason})
                event: dict[str, Any] = {
                    "created_at": now,
                    "address": norm,
                    "scope": row.scope,
                    "kind": "unsuppress",
                    "outcome": row.outcome,
                    "reason": row.reason,
                    "source": "api",
                    "actor": actor,
                    "detail": {"why": reason},
                }
                s.add(Event(**event))
                outbox += webhooks_outbox.for_history(event, "removed", row)
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
            await webhooks_outbox.write(s, outbox)
            return removed

        removed = await self._write(remove)
        await self.refresh_cache([norm])
        return removed

    async def expire_due(self, *, now: datetime | None = None, batch: int = EXPIRY_BATCH) -> int:
        """Record the end of every entry whose expiry has passed: ``removed_at`` set to the
        expiry, an ``expiry`` history row and a ``suppression.removed`` event, in one
        transaction per ``batch`` entries. Idempotent (an entry is taken only while its end is
        unrecorded) and shared between replicas (``SKIP LOCKED``); the number recorded."""
        total = 0
        while True:
            sweep = functools.partial(self._expire_batch, at=now or utcnow(), batch=batch)
            addresses = await self._write(sweep)
            if addresses:
                await self.refresh_cache(sorted(set(addresses)))
                log.info("expiry: %d suppressions reached their expiry", len(addresses))
            total += len(addresses)
            if len(addresses) < batch:
                return total

    async def _expire_batch(self, s: AsyncSession, *, at: datetime, batch: int) -> list[str]:
        rows = await repository.lock_expired(s, self.db.dialect, at, batch)
        events = [_expiry_row(row, at) for row in rows]
        outbox: list[dict[str, Any]] = []
        for row, event in zip(rows, events, strict=True):
            outbox += webhooks_outbox.for_history(event, "removed", row)
            row.removed_at = row.expires_at
            row.revision += 1
            row.updated_at = at
        if rows:
            await s.flush()
            await repository.insert_events(s, events, [], outbox)
        return [row.address for row in rows]

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

    async def get(
        self, address: str, *, events: int = 20, whole_domain: bool = False
    ) -> dict[str, Any]:
        norm = list_key(address, whole_domain=whole_domain)
        now = utcnow()
        async with self.db.read() as s:
            rows = await repository.rows_of(s, norm)
            evs = await repository.events_of(s, norm, events) if events else []
        if not rows and not evs:
            raise NotFound(f"{norm} has never been suppressed")
        return {
            "address": norm,
            "suppressed_globally": any(
                r.scope == GLOBAL_SCOPE and is_active(r.removed_at, r.expires_at, now) for r in rows
            ),
            "suppressions": [row_to_dict(r, now) for r in rows],
            "events": [event_to_dict(e) for e in evs],
        }

    async def rows_with_domain(self, address: str) -> list[dict[str, Any]]:
        """Every entry (active or not) of ``address`` and of its domain's own entry, in one
        read: what decides a check of it."""
        norm = list_key(address)
        now = utcnow()
        async with self.db.read() as s:
            rows = await repository.rows_of_many(s, with_domain_keys([norm]))
        return [row_to_dict(r, now) for r in rows]

    async def history(
        self,
        address: str,
        *,
        limit: int = 100,
        before: int | None = None,
        whole_domain: bool = False,
    ) -> list[dict[str, Any]]:
        """Events and audit entries for ``address`` (or its domain's own entry), newest first."""
        norm = list_key(address, whole_domain=whole_domain)
        async with self.db.read() as s:
            evs = await repository.events_of(s, norm, limit)
            aud = await repository.audit_entries_of(s, norm, limit)
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
        self,
        flt: SuppressionFilter,
        *,
        cursor: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> tuple[list[dict[str, Any]], int | None]:
        now = utcnow()
        async with self.db.read() as s:
            rows = await repository.list_active(
                s, flt, now, cursor=cursor, limit=limit + 1, newest_first=newest_first
            )
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = rows[-1].id if more and rows else None
        return [row_to_dict(r, now) for r in rows], next_cursor

    async def count_by_outcome(self) -> dict[str, int]:
        now = utcnow()
        async with self.db.read() as s:
            return await repository.count_active_by_outcome(s, now)

    async def overview(self, *, days: int = 30, domains: int = 10) -> dict[str, Any]:
        """Counts by outcome, suppressions added per day by outcome over ``days`` (active ones),
        and the ``domains`` domains with the most active suppressions."""
        now = utcnow()
        async with self.db.read() as s:
            by_outcome = await repository.count_active_by_outcome(s, now)
            per_day = await repository.added_per_day(s, now, now - timedelta(days=days))
            top = await repository.top_domains(s, now, domains)
        return {"by_outcome": by_outcome, "per_day": per_day, "top_domains": top}
