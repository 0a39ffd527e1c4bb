"""The SQLite import store: ``executemany`` into a TEMP table of the same shape, then the same
upsert; events in a second statement (see ``app.bulk.store``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.bulk.model import BATCH_ROWS
from app.bulk.rows import RowValues
from app.bulk.store import BatchResult, sqlite_time, upsert_sql
from app.cache import CachedEntry
from app.db import Database
from app.models import Suppression
from app.suppression.model import cache_items
from app.suppression.repository import CACHE_COLUMNS

_SQLITE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS stoplist_import_stage (
    line INTEGER, address TEXT, domain TEXT, scope TEXT, outcome TEXT, reason TEXT, note TEXT,
    first_seen TEXT, expires_at TEXT
)"""


class _Rollback(Exception):
    pass


class SqliteStore:
    """The embedded default: executemany into a TEMP table, the same upsert, events from Python."""

    def __init__(self, db: Database, *, overwrite: bool, actor: str, import_id: str) -> None:
        self.db = db
        self.actor = actor
        self.import_id = import_id
        self.sql = text(upsert_sql("sqlite", overwrite=overwrite))
        self._cm: contextlib.AbstractAsyncContextManager[AsyncSession] | None = None
        self._session: AsyncSession | None = None

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        await self.rollback()

    async def begin(self) -> None:
        self._cm = self.db.write()
        self._session = await self._cm.__aenter__()
        await self._session.execute(text(_SQLITE_STAGE))

    async def allocate_ids(self, count: int) -> None:
        return None  # one writer: INSERT … ORDER BY line numbers them in order

    async def write(
        self, rows: list[RowValues], now: datetime, ids: list[int] | None
    ) -> BatchResult:
        s = self._session
        assert s is not None
        await s.execute(text("DELETE FROM stoplist_import_stage"))
        await s.execute(
            text(
                "INSERT INTO stoplist_import_stage VALUES (:line, :address, :domain, :scope,"
                " :outcome, :reason, :note, :first_seen, :expires_at)"
            ),
            [
                {
                    "line": r[0],
                    "address": r[1],
                    "domain": r[2],
                    "scope": r[3],
                    "outcome": r[4],
                    "reason": r[5],
                    "note": r[6],
                    "first_seen": sqlite_time(r[7]),
                    "expires_at": sqlite_time(r[8]),
                }
                for r in rows
            ],
        )
        stamp = sqlite_time(now)
        result = (await s.execute(self.sql, {"now": stamp})).all()
        if result:
            detail = f'{{"import": "{self.import_id}"}}'
            await s.execute(
                text(
                    "INSERT INTO events (created_at, address, scope, kind, outcome, reason,"
                    " source, actor, verified, detail) VALUES (:now, :address, :scope, 'import',"
                    " :outcome, :reason, 'import', :actor, 0, :detail)"
                ),
                [
                    {
                        "now": stamp,
                        "address": r[0],
                        "scope": r[1],
                        "outcome": r[2],
                        "reason": r[3],
                        "actor": self.actor,
                        "detail": detail,
                    }
                    for r in result
                ],
            )
        inserted = sum(1 for r in result if r[4])
        return BatchResult(inserted, len(result) - inserted, [r[0] for r in result])

    async def touch(self, old: datetime, new: datetime) -> None:
        assert self._session is not None
        await self._session.execute(
            text("UPDATE suppressions SET updated_at = :new WHERE updated_at = :old"),
            {"old": sqlite_time(old), "new": sqlite_time(new)},
        )

    async def commit(self) -> None:
        cm, self._cm, self._session = self._cm, None, None
        if cm is not None:
            await cm.__aexit__(None, None, None)

    async def rollback(self) -> None:
        cm, self._cm, self._session = self._cm, None, None
        if cm is not None:
            await cm.__aexit__(_Rollback, _Rollback(), None)

    async def changed_since(self, stamp: datetime) -> AsyncIterator[list[str]]:
        async with self.db.read() as s:
            found = (
                await s.scalars(
                    select(Suppression.address).where(Suppression.updated_at == stamp).distinct()
                )
            ).all()
        for start in range(0, len(found), BATCH_ROWS):
            yield list(found[start : start + BATCH_ROWS])

    async def cache_items(
        self, addresses: Sequence[str], now: datetime
    ) -> list[tuple[str, int, list[CachedEntry]]]:
        records: list[Any] = []
        async with self.db.read() as s:
            for start in range(0, len(addresses), 1000):
                chunk = addresses[start : start + 1000]
                records += (
                    await s.execute(select(*CACHE_COLUMNS).where(Suppression.address.in_(chunk)))
                ).all()
        return cache_items(addresses, records, now)
