"""The hot path: is this address suppressed for this stream? Cache first; the database when the
cache is cold, stale or down (bounded in time); 503 when both fail. Single checks arriving together
share one cache round trip, and, with the cache down, one database query."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from app import metrics
from app.addresses import try_normalise_many
from app.cache import CacheCold, CachedEntry, CacheUnavailable, Entries, SuppressionCache
from app.db import DB_ERRORS, Database
from app.errors import Unavailable
from app.models import utcnow
from app.suppression import repository
from app.suppression.model import (
    check_answer,
    decide,
    domain_keys,
    invalid_slot,
    make_entry,
    merge_domain_entries,
    normalise_or_422,
    scope_for,
)
from app.suppression.replica import CacheReplica

log = logging.getLogger("app.suppressions")


class SuppressionLookup(CacheReplica):
    """Answers checks from the replica it keeps, or from the database."""

    def __init__(self, db: Database, cache: SuppressionCache, *, auto_rebuild: bool = True) -> None:
        super().__init__(db, cache, auto_rebuild=auto_rebuild)
        # Single-address checks arriving in the same event-loop turn share one cache round trip.
        self._pending_gets: list[tuple[str, asyncio.Future[Entries | None]]] = []
        self._get_tasks: set[asyncio.Task[None]] = set()
        self._abandoned: set[asyncio.Future[list[Entries | None]]] = set()
        self._db_waiting: list[tuple[str, asyncio.Future[Entries | None]]] = []
        self._db_task: asyncio.Task[None] | None = None

    async def check_many(
        self, addresses: Sequence[str], stream: str | None
    ) -> list[dict[str, Any]]:
        """One answer per input, in order; an invalid address is reported in its slot."""
        scope = scope_for(stream)
        normalised = try_normalise_many(addresses)
        valid = [n for n in normalised if n is not None]
        domains = domain_keys(valid)
        found = await self.lookup_entries([*valid, *domains])
        entries = merge_domain_entries(valid, found, domains)
        now = time.time()
        if len(valid) == len(addresses):  # nearly always: no invalid slot to keep in place
            out = [
                {"address": norm, "suppressed": False}
                if ent is None
                else check_answer(norm, decide(ent, scope, now))
                for norm, ent in zip(valid, entries, strict=True)
            ]
        else:
            out = self._answers_with_invalid(addresses, normalised, entries, scope, now)
        metrics.CHECK_ADDRESSES.inc(len(addresses))
        hits = sum(1 for answer in out if answer["suppressed"])
        if hits:
            metrics.CHECK_HITS.inc(hits)
        return out

    @staticmethod
    def _answers_with_invalid(
        addresses: Sequence[object],
        normalised: Sequence[str | None],
        entries: Sequence[Entries | None],
        scope: str,
        now: float,
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        it = iter(entries)
        for raw, norm in zip(addresses, normalised, strict=True):
            if norm is None:
                out.append(invalid_slot(raw))
                continue
            ent = next(it)
            out.append(check_answer(norm, decide(ent, scope, now) if ent else None))
        return out

    async def check_one(self, address: str, stream: str | None) -> dict[str, Any]:
        scope = scope_for(stream)
        norm = normalise_or_422(address)
        domain = norm[norm.rindex("@") :]
        own, dom = await self.lookup_entries([norm, domain], coalesce=True)
        ent = own if not dom else (tuple(own or ()) + tuple(dom))
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
                if coalesce:
                    result = list(
                        await asyncio.gather(*(self._coalesced_get(a) for a in addresses))
                    )
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
            if coalesce:
                return list(await asyncio.gather(*(self._coalesced_db_get(a) for a in addresses)))
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
        if self.db.dialect == "postgresql":
            async with self.db.driver_read() as driver:
                records = await repository.active_entry_records(driver, addresses, utcnow())
            for address, *columns in records:
                found.setdefault(address, []).append(make_entry(*columns))
            return [tuple(found[a]) if a in found else None for a in addresses]
        async with self.db.read() as s:
            for address, *columns in await repository.active_entry_rows(
                s, self.db.dialect, addresses, utcnow()
            ):
                found.setdefault(address, []).append(make_entry(*columns))
        return [tuple(found[a]) if a in found else None for a in addresses]
