"""A real event sink for the ingest tests: events into a SQLite table keyed by dedupe id, every
attempt logged in a second table (so a test can see what was read twice), errors in a third."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from app.db import Database
from app.ingest.sink import CommitHook
from events import Batch

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS t_events (dedupe_id TEXT PRIMARY KEY, location TEXT NOT NULL,"
    " recipient TEXT, kind TEXT NOT NULL, outcome TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS t_attempts (dedupe_id TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS t_errors (location TEXT NOT NULL, reason TEXT NOT NULL)",
)


@dataclass(frozen=True)
class Counts:
    new: int
    duplicate: int


class NothingAhead:
    """The ``EventSink`` methods of a sink with nothing to prepare ahead of a batch and nothing
    left running after its commit (the tests' sinks; those wrapping another sink subclass it)."""

    async def prepare(self, batch: Batch, *, count_deliveries: bool = False) -> None:
        return None

    async def settle(self) -> None:
        return None


class TableSink(NothingAhead):
    """Records a batch in one transaction; ``delay_s`` slows each batch (to kill a run mid-file)."""

    def __init__(self, db: Database, *, delay_s: float = 0.0) -> None:
        self.db = db
        self.delay_s = delay_s
        self.unsettled = False  # a batch recorded since the last ``settle``

    async def create(self) -> None:
        async with self.db.write() as s:
            for statement in SCHEMA:
                await s.execute(text(statement))

    async def settle(self) -> None:
        self.unsettled = False

    async def record(
        self,
        batch: Batch,
        *,
        count_deliveries: bool = False,
        before_commit: CommitHook | None = None,
        prepared: Any = None,
    ) -> Counts:
        new = 0
        async with self.db.write() as s:
            for e in batch.events:
                await s.execute(text("INSERT INTO t_attempts VALUES (:d)"), {"d": e.dedupe_id})
                done = await s.execute(
                    text(
                        "INSERT INTO t_events VALUES (:d, :l, :r, :k, :o)"
                        " ON CONFLICT (dedupe_id) DO NOTHING"
                    ),
                    {
                        "d": e.dedupe_id,
                        "l": e.location,
                        "r": e.recipient,
                        "k": e.kind,
                        "o": e.outcome,
                    },
                )
                new += done.rowcount  # type: ignore[attr-defined]
            for err in batch.errors:
                await s.execute(
                    text("INSERT INTO t_errors VALUES (:l, :r)"),
                    {"l": err.location, "r": err.reason},
                )
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if before_commit is not None:
                await before_commit(s)
        self.unsettled = True
        return Counts(new, len(batch.events) - new)

    async def rows(self, table: str, columns: str = "*") -> list[tuple[object, ...]]:
        async with self.db.read() as s:
            result = await s.execute(text(f"SELECT {columns} FROM {table} ORDER BY 1"))
            return [tuple(r) for r in result.all()]
