"""The PostgreSQL import store: ``COPY`` into a TEMP table, then one upsert whose CTE also writes
the per-row events (see ``app.bulk.store``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.bulk.model import BATCH_ROWS
from app.bulk.rows import RowValues
from app.bulk.store import STAGE_COLUMNS, BatchResult, upsert_sql
from app.cache import CachedEntry
from app.db import Database
from app.suppression.model import cache_items

_PG_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS stoplist_import_stage (
    id bigint, line bigint, address text, domain text, scope text, outcome text, reason text, note text,
    first_seen timestamptz, expires_at timestamptz
) ON COMMIT DELETE ROWS"""


class PgStore:
    """COPY into a TEMP table, then one upsert whose CTE also writes the per-row events."""

    def __init__(self, db: Database, *, overwrite: bool, actor: str, import_id: str) -> None:
        self.db = db
        self.actor = actor
        self.import_id = import_id
        self.event_detail = f'{{"import": "{import_id}"}}'  # import_id is hex: no escaping
        self.sql = (
            "WITH up AS ("  # noqa: S608 - constant SQL, values are parameters
            + upsert_sql("postgresql", overwrite=overwrite)
            + "\n), ev AS (\n"
            "INSERT INTO events (created_at, address, scope, kind, outcome, reason, source, actor,"
            " verified, detail)\n"
            "SELECT $1, address, scope, 'import', outcome, reason, 'import', $2, FALSE,"
            " $3::jsonb FROM up\n)\n"
            "SELECT address, inserted FROM up"
        )
        self._conn: AsyncConnection | None = None
        self._pg: Any = None
        self._read_conn: AsyncConnection | None = None  # cache refreshes, beside the writer
        self._read_pg: Any = None
        self._sequence = ""
        self._tx: Any = None
        self._dirty_stage = False

    async def open(self) -> None:
        self._conn = await self.db.engine.connect()
        self._pg = (await self._conn.get_raw_connection()).driver_connection
        self._sequence = await self._pg.fetchval(
            "SELECT pg_get_serial_sequence('suppressions', 'id')"
        )
        self._read_conn = await self.db.engine.connect()
        self._read_pg = (await self._read_conn.get_raw_connection()).driver_connection

    async def close(self) -> None:
        if self._tx is not None:
            with contextlib.suppress(Exception):
                await self._tx.rollback()
            self._tx = None
        for conn in (self._conn, self._read_conn):
            if conn is not None:
                await conn.close()
        self._conn = self._read_conn = None

    async def begin(self) -> None:
        self._tx = self._pg.transaction()
        await self._tx.start()
        await self._pg.execute(_PG_STAGE)
        self._dirty_stage = False

    async def allocate_ids(self, count: int) -> list[int]:
        ids: list[int] = await self._pg.fetchval(
            "SELECT array_agg(v ORDER BY v) FROM"
            " (SELECT nextval($1::regclass) AS v FROM generate_series(1, $2)) AS n",
            self._sequence,
            count,
        )
        return ids

    async def write(
        self, rows: list[RowValues], now: datetime, ids: list[int] | None
    ) -> BatchResult:
        pg = self._pg
        if self._dirty_stage:
            await pg.execute("TRUNCATE stoplist_import_stage")
        assert ids is not None
        await pg.copy_records_to_table(
            "stoplist_import_stage",
            records=[(i, *r) for i, r in zip(ids, rows, strict=True)],
            columns=["id", *STAGE_COLUMNS],
        )
        self._dirty_stage = True
        result = await pg.fetch(self.sql, now, self.actor, self.event_detail)
        inserted = sum(1 for r in result if r[1])
        return BatchResult(inserted, len(result) - inserted, [r[0] for r in result])

    async def touch(self, old: datetime, new: datetime) -> None:
        await self._pg.execute(
            "UPDATE suppressions SET updated_at = $2 WHERE updated_at = $1", old, new
        )

    async def commit(self) -> None:
        tx, self._tx = self._tx, None
        await tx.commit()

    async def rollback(self) -> None:
        tx, self._tx = self._tx, None
        if tx is not None:
            await tx.rollback()

    async def changed_since(self, stamp: datetime) -> AsyncIterator[list[str]]:
        async with self._pg.transaction():
            cursor = self._pg.cursor(
                "SELECT DISTINCT address FROM suppressions WHERE updated_at = $1", stamp
            )
            batch: list[str] = []
            async for record in cursor:
                batch.append(record[0])
                if len(batch) >= BATCH_ROWS:
                    yield batch
                    batch = []
            if batch:
                yield batch

    async def cache_items(
        self, addresses: Sequence[str], now: datetime
    ) -> list[tuple[str, int, list[CachedEntry]]]:
        records = await self._read_pg.fetch(
            "SELECT address, scope, outcome, reason, first_seen, expires_at, verified, source,"
            " revision, removed_at FROM suppressions WHERE address = ANY($1::text[])",
            list(addresses),
        )
        return cache_items(addresses, records, now)
