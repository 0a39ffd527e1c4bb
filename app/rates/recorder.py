"""Counting into the rate buckets, inside the caller's transaction (it never commits).

A batch is summed in memory per (grain, bucket, key) first, then written with one set-based upsert
(``INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n``, PostgreSQL and SQLite alike). The
rows are sorted, so two transactions adding to the same buckets lock them in the same order and
cannot deadlock each other. A batch with more distinct buckets than one statement may bind
(``_ROWS_PER_STATEMENT``) is written in several statements, still in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.models import RateCount, utcnow
from app.rates.model import (
    COUNTERS,
    GRAINS,
    KEY_COLUMNS,
    Occurrence,
    bucket_start,
    event_occurrence,
)
from events.model import Event

__all__ = ["record_events", "record_occurrences"]

RATES_TABLE: Final[Table] = RateCount.__table__  # type: ignore[assignment]
_KEY: Final = ("grain", "bucket", *KEY_COLUMNS)
# 8 key + 11 counter columns: 1,000 rows bind 19,000 parameters, under the 32,766 of SQLite and
# the 32,767 of PostgreSQL's protocol.
_ROWS_PER_STATEMENT: Final = 1000

_Bucket = tuple[str, datetime, str, str, str, str, str, str]


async def record_events(conn: AsyncConnection, events: Sequence[Event]) -> None:
    """Add ``events`` (just recorded by the caller, in its open transaction) to the rates."""
    now = utcnow()
    await record_occurrences(conn, (event_occurrence(e, now) for e in events))


async def record_occurrences(
    conn: AsyncConnection, occurrences: Iterable[Occurrence | None]
) -> None:
    """Add ``occurrences`` to the buckets of every grain; ``None`` items count nothing."""
    sums = _sum(occurrences)
    if not sums:
        return
    rows = [
        {**dict(zip(_KEY, key, strict=True)), **{c: counts.get(c, 0) for c in COUNTERS}}
        for key, counts in sorted(sums.items())
    ]
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        await conn.execute(_upsert(conn.dialect.name, rows[start : start + _ROWS_PER_STATEMENT]))


def _sum(occurrences: Iterable[Occurrence | None]) -> dict[_Bucket, dict[str, int]]:
    sums: dict[_Bucket, dict[str, int]] = {}
    starts: dict[tuple[datetime, str], datetime] = {}
    for occ in occurrences:
        if occ is None:
            continue
        key = occ.key()
        for grain in GRAINS:
            start = starts.get((occ.time, grain))
            if start is None:
                start = starts[(occ.time, grain)] = bucket_start(occ.time, grain)
            counts = sums.setdefault((grain, start, *key), {})
            for counter in occ.counters:
                counts[counter] = counts.get(counter, 0) + 1
    return sums


def _upsert(dialect: str, rows: list[dict[str, Any]]) -> Any:
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(RATES_TABLE).values(rows)
    table = RATES_TABLE.c
    return stmt.on_conflict_do_update(
        index_elements=list(_KEY),
        set_={c: table[c] + stmt.excluded[c] for c in COUNTERS},
    )
