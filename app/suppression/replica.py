"""Cache upkeep: the replica of the suppression list that checks read. Write-through after every
commit, a full rebuild when the replica is cold or stale, and (embedded mode) picking up writes
other processes made. Values are computed from a *committed* snapshot (a fresh read after the
commit), so equal versions always mean equal content; see ``app.cache``.

A write-through that fails leaves its addresses to be written again: once Redis answers and the
replica is still ready, those addresses are re-read and put (a repair, within a second); only
when the replica went cold meanwhile, or more than ``REPAIR_LIMIT`` addresses were missed, is it
marked cold and rebuilt from the whole table."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from app import metrics
from app.cache import CachedEntry, CacheUnavailable, SuppressionCache
from app.db import DB_ERRORS, Database
from app.models import utcnow
from app.suppression import repository
from app.suppression.model import cache_items

log = logging.getLogger("app.suppressions")

# How many missed addresses a process remembers to write again. Beyond it, repairing would cost
# about as much as a rebuild, and the memory is better spent elsewhere: the replica is marked cold.
REPAIR_LIMIT = 50_000
REPAIR_SLICE = 1_000  # addresses re-read and put at a time (the loop answers checks in between)


class CacheReplica:
    """Keeps ``cache`` a faithful replica of the suppressions table."""

    def __init__(self, db: Database, cache: SuppressionCache, *, auto_rebuild: bool = True) -> None:
        self.db = db
        self.cache = cache
        self.auto_rebuild = auto_rebuild  # off for one-shot CLI commands
        self.cache_dirty = False  # a write-through failed: the replica may be stale
        self.cache_state = "unknown"  # ok | cold | unavailable | rebuilding
        self._rebuild_task: asyncio.Task[int] | None = None
        self._synced_until: datetime | None = None
        # Addresses whose committed state may be missing from the cache, each with the number of
        # the failure that left it there (a repair forgets only those not missed again since).
        self._unwritten: dict[str, int] = {}
        self._unwritten_overflow = False
        self._failures = 0

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
            self.note_unwritten(addresses, exc)

    def note_unwritten(self, addresses: Sequence[str], exc: BaseException) -> None:
        """Committed changes to ``addresses`` may be missing from the cache (their write-through,
        or the fresh read before it, failed): this process answers from the database and the
        next upkeep writes them again (``rebuild_cache``)."""
        if not self.cache_dirty:  # the change of state is logged once, failures are counted
            log.error(
                "cache write-through failed (%s); checks use the database until repaired", exc
            )
        self.cache_dirty = True
        metrics.CACHE_WRITE_FAILURES.inc()
        if self._unwritten_overflow:
            return
        self._failures += 1
        self._unwritten.update(dict.fromkeys(addresses, self._failures))
        if len(self._unwritten) > REPAIR_LIMIT:
            self._unwritten_overflow = True
            self._unwritten.clear()

    def _forget_unwritten(self) -> None:
        self._unwritten.clear()
        self._unwritten_overflow = False

    async def _repair(self) -> bool:
        """Put the addresses a write-through missed, if the replica is still ready and they are
        few: then it is whole again and nothing needs rebuilding. False when it must be marked
        cold instead. Raises CacheUnavailable while Redis does not answer (nothing changes)."""
        if self._unwritten_overflow or not self._unwritten:
            return False
        if await self.cache.generation() is None:
            # Cold: a rebuild may be under way that read these rows before they were written;
            # marking it cold again (the epoch) keeps it from vouching for them.
            return False
        missed = dict(self._unwritten)
        addresses = sorted(missed)
        for start in range(0, len(addresses), REPAIR_SLICE):
            items = await self.cache_state_for(addresses[start : start + REPAIR_SLICE])
            await self.cache.put_many(items)
            await asyncio.sleep(0)
        for address, failure in missed.items():
            if self._unwritten.get(address) == failure:  # not missed again while we wrote
                del self._unwritten[address]
        if self._unwritten or self._unwritten_overflow:
            return False
        self.cache_dirty = False
        metrics.CACHE_REPAIRS.inc()
        log.info("cache write-through repaired: %d addresses written again", len(missed))
        return True

    async def cache_state_for(
        self, addresses: Sequence[str], *, db: Database | None = None
    ) -> list[tuple[str, int, list[CachedEntry]]]:
        now = utcnow()
        addresses = list(dict.fromkeys(addresses))
        async with (db or self.db).read() as s:
            records = await repository.cache_records(s, addresses)
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
        event loop that answers pre-send checks, which must not wait out 5,000 rows of work.
        When this process missed write-throughs it first repairs them (``_repair``) and returns
        0 if that made the replica whole."""
        if self.cache_dirty and not force and await self._repair():
            return 0
        if self.cache_dirty:
            # Entries written while we could not reach the cache are missing there. Once it is
            # marked cold this process's part is done: a rebuild that began earlier cannot mark
            # it ready (the cold epoch moved), one that begins later reads our writes, and the
            # next check that finds it cold starts one. Marking it cold again on every attempt
            # would fail every other process's rebuild for ever.
            await self.cache.mark_cold()
            self.cache_dirty = False
            self._forget_unwritten()
        got = await self.cache.try_lock_rebuild(ttl_s=600)
        if not got and not force:
            log.info("another replica is rebuilding the cache")
            return 0
        self.cache_state = "rebuilding"
        dirty_before = self.cache_dirty
        self.cache_dirty = False
        self._forget_unwritten()
        count = 0
        try:
            now = utcnow()
            self._synced_until = now
            last = ""
            while True:
                # Key-set pagination on the (address, scope) unique index keeps every query short.
                async with self.db.read() as s:
                    rows = await repository.rebuild_page(s, last, batch)
                if not rows:
                    break
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
            changed = await repository.addresses_changed_since(s, since)
        if changed:
            await self.refresh_cache(list(changed))
        self._synced_until = started
        return len(changed)
