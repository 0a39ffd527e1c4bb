"""Import orchestration: parsing, the writers (two on PostgreSQL) and the cache write-through run
concurrently; nothing holds more than a few batches in memory. Ends with one audit entry."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime

from asyncpg.exceptions import DeadlockDetectedError as DeadlockError  # type: ignore[import-untyped]

from app.bulk.csv_io import CsvRecords
from app.bulk.model import ImportSummary
from app.bulk.presets import ImportOptions
from app.bulk.rows import RowParser, RowValues
from app.bulk.store import BatchResult, ImportStore
from app.bulk.store_pg import PgStore
from app.bulk.store_sqlite import SqliteStore
from app.cache import CacheUnavailable
from app.db import DB_ERRORS, Database
from app.models import AuditEntry, utcnow
from app.suppression import SuppressionService
from app.webhooks import outbox as webhooks_outbox

log = logging.getLogger(__name__)


REFRESH_SLICE = 1_000  # addresses per cache write-through step (see _refresh)
PARSE_SLICE = 16 * 1024  # bytes of CSV parsed between two yields to the event loop


WRITERS = 2  # PostgreSQL connections writing batches at once (non-atomic imports)


ProgressFn = Callable[[ImportSummary], None]


async def import_csv(
    service: SuppressionService,
    chunks: AsyncIterator[bytes],
    options: ImportOptions,
    *,
    actor: str,
    progress: ProgressFn | None = None,
) -> ImportSummary:
    """Import a CSV stream (already unwrapped: see :func:`request_body`)."""
    with _few_collections():
        return await _import(service, chunks, options, actor=actor, progress=progress)


_gc_holders = 0


_gc_holders_saved: list[int] = []


@contextlib.contextmanager
def _few_collections() -> Iterator[None]:
    """A large import allocates millions of short-lived lists and tuples that die young anyway;
    young-generation collections over them cost about a third of the CPU, so run fewer."""
    global _gc_holders
    if _gc_holders == 0:
        _gc_holders_saved[:] = gc.get_threshold()
        gc.set_threshold(max(100_000, _gc_holders_saved[0]), *_gc_holders_saved[1:])
    _gc_holders += 1
    try:
        yield
    finally:
        _gc_holders -= 1
        if _gc_holders == 0:
            gc.set_threshold(*_gc_holders_saved)


async def _import(
    service: SuppressionService,
    chunks: AsyncIterator[bytes],
    options: ImportOptions,
    *,
    actor: str,
    progress: ProgressFn | None,
) -> ImportSummary:
    """One import run: a producer (parsing), the writers and the cache refreshers as tasks over
    shared queues. Kept as one function (about 90 lines) on purpose: the writers' closures share
    the run's queues and the turn that hands out ids in batch order."""
    started = time.perf_counter()
    summary = ImportSummary(dry_run=options.dry_run, atomic=options.atomic)
    db = service.db
    import_id = uuid.uuid4().hex[:16]
    one_transaction = options.atomic or options.dry_run
    stores = _stores(db, options, actor=actor, import_id=import_id)
    queue: asyncio.Queue[list[RowValues] | None] = asyncio.Queue(maxsize=len(stores) + 1)
    parser = RowParser(options, summary)

    # Cache write-through runs beside the writers, on its own connection, a batch behind.
    refreshes: asyncio.Queue[list[str] | None] = asyncio.Queue(maxsize=len(stores) + 1)

    async def refresh(store: ImportStore) -> None:
        while (addresses := await refreshes.get()) is not None:
            await _refresh(service, store, addresses)
        await refreshes.put(None)  # for the other refreshers

    stamp = utcnow()
    taken = 0  # batches handed to writers
    numbered = 0  # batches that have their ids
    turn = asyncio.Condition()

    async def write(store: ImportStore) -> None:
        nonlocal taken, numbered
        while True:
            batch = await queue.get()
            if batch is None:
                await queue.put(None)  # for the other writers
                return
            if options.atomic and summary.invalid:
                continue  # nothing will be written: only keep validating
            mine, taken = taken, taken + 1
            async with turn:
                await turn.wait_for(lambda: numbered == mine)  # noqa: B023 - read at once
                ids = await store.allocate_ids(len(batch))
                numbered += 1
                turn.notify_all()
            now = stamp if one_transaction else utcnow()
            result = await _write_batch(store, batch, now, ids, one_transaction=one_transaction)
            if not one_transaction:
                summary.committed = True
            summary.inserted += result.inserted
            summary.updated += result.updated
            summary.unchanged += len(batch) - result.inserted - result.updated
            if not one_transaction:
                await refreshes.put(result.changed)
            if progress is not None:
                progress(summary)

    producer = asyncio.create_task(_produce(chunks, parser, queue, summary, progress))
    # Each store's read connection serves one refresher: a database read for one batch can
    # overlap the Redis write of another.
    refreshers = [asyncio.create_task(refresh(each)) for each in stores]
    tasks: list[asyncio.Task[None]] = []
    error: str | None = None
    store = stores[0]
    try:
        for each in stores:
            await each.open()
        if one_transaction:
            await store.begin()
        tasks = [asyncio.create_task(write(each)) for each in stores]
        await asyncio.gather(*tasks)
        await producer
        if one_transaction:
            await _finish_one_transaction(store, options, summary, stamp, refreshes)
        await refreshes.put(None)
        await asyncio.gather(*refreshers)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        for task in (producer, *refreshers, *tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        raise
    finally:
        for each in stores:
            with contextlib.suppress(Exception):
                await each.close()
        summary.duration_s = time.perf_counter() - started
        if not options.dry_run:
            await _audit(db, actor, options, summary, import_id, error)
    return summary


def _stores(
    db: Database, options: ImportOptions, *, actor: str, import_id: str
) -> list[ImportStore]:
    if db.dialect != "postgresql":
        return [SqliteStore(db, overwrite=options.overwrite, actor=actor, import_id=import_id)]
    # Two writers keep a second PostgreSQL backend busy while the first commits or waits; ids
    # are taken from the sequence in batch order, so rows keep the file's order.
    writers = 1 if options.atomic or options.dry_run else WRITERS
    return [
        PgStore(db, overwrite=options.overwrite, actor=actor, import_id=import_id)
        for _ in range(writers)
    ]


async def _produce(
    chunks: AsyncIterator[bytes],
    parser: RowParser,
    queue: asyncio.Queue[list[RowValues] | None],
    summary: ImportSummary,
    progress: ProgressFn | None,
) -> None:
    """Parse the stream into batches on ``queue``, then None. Parsing runs here while the
    writers wait on the database: the two overlap."""
    records = CsvRecords()
    try:
        async for data in chunks:
            # A slice at a time, yielding between: parsing a 64 KB chunk in one go holds the
            # event loop (and every pre-send check on it) for tens of milliseconds.
            for start in range(0, len(data), PARSE_SLICE):
                for batch in parser.add(records.push(data[start : start + PARSE_SLICE])):
                    await queue.put(batch)
                await asyncio.sleep(0)
            if progress is not None:
                progress(summary)
        for batch in parser.add(records.push(b"", final=True)):
            await queue.put(batch)
        last = parser.finish()
        if last:
            await queue.put(last)
    finally:
        await queue.put(None)


async def _write_batch(
    store: ImportStore,
    batch: list[RowValues],
    now: datetime,
    ids: list[int] | None,
    *,
    one_transaction: bool,
) -> BatchResult:
    """One batch, in a transaction of its own unless the import is one transaction."""
    for attempt in range(3):
        if not one_transaction:
            await store.begin()
        try:
            result = await store.write(batch, now, ids)
        except DeadlockError:
            # Two batches in flight locked the same rows in opposite orders.
            if one_transaction or attempt == 2:
                raise
            await store.rollback()
            continue
        if not one_transaction:
            await store.commit()
        return result
    raise AssertionError("unreachable: the last attempt returns or raises")


async def _finish_one_transaction(
    store: ImportStore,
    options: ImportOptions,
    summary: ImportSummary,
    stamp: datetime,
    refreshes: asyncio.Queue[list[str] | None],
) -> None:
    """Roll back a dry run (or an atomic import with invalid rows), or commit and queue the
    cache write-through of everything the import changed."""
    if options.dry_run or (options.atomic and summary.invalid):
        await store.rollback()
        if not options.dry_run:
            summary.inserted = summary.updated = summary.unchanged = 0
        return
    # Stamp the rows with the commit time: an embedded replica polling updated_at
    # (``sync_from_database``) must not miss rows written early in a long import.
    committed_at = utcnow()
    if summary.inserted or summary.updated:
        await store.touch(stamp, committed_at)
    await store.commit()
    summary.committed = True
    async for addresses in store.changed_since(committed_at):
        await refreshes.put(addresses)


async def _refresh(service: SuppressionService, store: ImportStore, addresses: list[str]) -> None:
    """Write the committed state of a batch through to the cache in one round of puts."""
    if not addresses:
        return
    start = 0
    try:
        # A slice at a time: building and sending a whole batch's entries is ~100 ms of CPU in
        # one go, a stall every pre-send check on this event loop would wait out.
        for start in range(0, len(addresses), REFRESH_SLICE):
            items = await store.cache_items(addresses[start : start + REFRESH_SLICE], utcnow())
            await service.cache.put_many(items)
    except (CacheUnavailable, *DB_ERRORS) as exc:
        # The rows are committed; the replica lacks them (from this slice on) until repaired.
        service.note_unwritten(addresses[start:], exc)


async def _audit(
    db: Database,
    actor: str,
    options: ImportOptions,
    summary: ImportSummary,
    import_id: str,
    error: str | None,
) -> None:
    detail = summary.as_dict()
    del detail["errors"]
    detail.update(
        import_id=import_id,
        overwrite=options.overwrite,
        stream=options.scope,
        first_errors=summary.errors[:5],
        error=error,
    )
    now = utcnow()
    try:
        async with db.write() as s:
            if summary.committed:
                # One summary event per import (not one per row), with its audit entry.
                finished = {k: v for k, v in detail.items() if k != "first_errors"}
                await webhooks_outbox.write(
                    s, [webhooks_outbox.import_finished(now, {**finished, "actor": actor})]
                )
            s.add(
                AuditEntry(
                    created_at=now,
                    actor=actor,
                    action="import",
                    address=None,
                    scope=options.scope,
                    reason=options.reason,
                    detail=detail,
                )
            )
    except Exception as exc:  # the import itself is done; say so rather than fail it
        log.error("could not write the audit entry of import %s: %s", import_id, exc)
