"""Counting into the rate buckets, inside the caller's transaction (it never commits).

A batch is summed in memory per (grain, bucket, key) first, then written with one upsert
(``INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n``). On PostgreSQL it is one set-based
statement over ``unnest`` of one array per column: its shape does not depend on the batch, so it
is prepared once (a multi-row ``VALUES`` cost more to compile and bind than the events' own insert,
bench/rates_record.py). On SQLite it is one compiled statement run for each row in-process. The
rows are sorted, so two transactions adding to the same buckets lock them in the same order and
cannot deadlock each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import Table, TextClause, text
from sqlalchemy.dialects.sqlite import Insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.models import RateCount, utcnow
from app.rates.model import (
    COUNTERS,
    GRAINS,
    KEY_COLUMNS,
    MAX_AHEAD,
    Occurrence,
    delivery_occurrence,
    event_occurrence,
)
from events.model import DeliveryKey, Event

__all__ = ["merge_deliveries", "record_events", "record_occurrences"]

RATES_TABLE: Final[Table] = RateCount.__table__  # type: ignore[assignment]
_KEY: Final = ("grain", "bucket", *KEY_COLUMNS)

_Bucket = tuple[str, datetime, str, str, str, str, str, str]
_GRAIN_SECONDS: Final = tuple((g, int(d.total_seconds())) for g, d in GRAINS.items())


async def record_events(
    conn: AsyncConnection,
    events: Sequence[Event],
    deliveries: Mapping[DeliveryKey, int] | None = None,
) -> None:
    """Add ``events`` and the ``deliveries`` counted by key (just recorded by the caller, in its
    open transaction) to the rates."""
    now = utcnow()
    weighted: list[tuple[Occurrence | None, int]] = [(event_occurrence(e, now), 1) for e in events]
    if deliveries:
        merged = merge_deliveries(deliveries, now)
        weighted += [(delivery_occurrence(k, now), n) for k, n in merged.items()]
    await _record(conn, weighted)


_FIRST_GRAIN: Final = min(seconds for _, seconds in _GRAIN_SECONDS)


def merge_deliveries(
    deliveries: Mapping[DeliveryKey, int], now: datetime
) -> dict[DeliveryKey, int]:
    """``deliveries`` (the parser keys them by the second) merged per smallest bucket: the time
    of each key moved to the start of its 5-minute bucket, which every coarser bucket contains
    (all align on the epoch), so the buckets counted are the same, for a few hundred keys a batch
    instead of a few thousand. A time the counting would replace by ``now`` (none, or too far
    ahead: ``model._when``) is kept as it is. Merging merged keys again changes nothing, so a
    caller may merge ahead of ``record_events`` (the ingest does, while the batch before commits)."""
    latest = now + MAX_AHEAD
    merged: dict[DeliveryKey, int] = {}
    starts: dict[datetime, datetime] = {}  # a batch's keys share a few hundred seconds
    for key, n in deliveries.items():
        time = key[1]
        if time is not None and time <= latest:
            start = starts.get(time)
            if start is None:
                epoch = int(time.timestamp())
                start = starts[time] = datetime.fromtimestamp(epoch - epoch % _FIRST_GRAIN, UTC)
            key = (key[0], start, *key[2:])
        merged[key] = merged.get(key, 0) + n
    return merged


async def record_occurrences(
    conn: AsyncConnection, occurrences: Iterable[Occurrence | None]
) -> None:
    """Add ``occurrences`` to the buckets of every grain; ``None`` items count nothing."""
    await _record(conn, ((o, 1) for o in occurrences))


async def _record(conn: AsyncConnection, weighted: Iterable[tuple[Occurrence | None, int]]) -> None:
    sums = _sum(weighted)
    if not sums:
        return
    ordered = sorted(sums.items())
    if conn.dialect.name == "postgresql":
        # One statement of fixed shape whatever the batch: prepared once, no per-row binds.
        columns = list(zip(*(key for key, _ in ordered), strict=True))
        params = {name: list(values) for name, values in zip(_KEY, columns, strict=True)}
        for c in COUNTERS:
            params[c] = [counts.get(c, 0) for _, counts in ordered]
        await conn.execute(_PG_UPSERT, params)
        return
    rows = [
        {**dict(zip(_KEY, key, strict=True)), **{c: counts.get(c, 0) for c in COUNTERS}}
        for key, counts in ordered
    ]
    await conn.execute(_SQLITE_UPSERT, rows)


def _sum(weighted: Iterable[tuple[Occurrence | None, int]]) -> dict[_Bucket, dict[str, int]]:
    """Counts per (grain, bucket start, key) of (occurrence, how many times); the arithmetic on
    epoch seconds (a bucket is aligned on the epoch), datetimes made once per bucket at the end."""
    sums: dict[tuple[str, int, str, str, str, str, str, str], dict[str, int]] = {}
    for occ, n in weighted:
        if occ is None:
            continue
        key = occ.key()
        epoch = int(occ.time.timestamp())
        for grain, seconds in _GRAIN_SECONDS:
            bucket = (grain, epoch - epoch % seconds, *key)
            counts = sums.get(bucket)
            if counts is None:
                counts = sums[bucket] = {}
            for counter in occ.counters:
                counts[counter] = counts.get(counter, 0) + n
    return {(k[0], datetime.fromtimestamp(k[1], UTC), *k[2:]): counts for k, counts in sums.items()}


def _pg_upsert() -> TextClause:
    """``INSERT ... SELECT FROM unnest(<one array per column>) ON CONFLICT DO UPDATE``."""
    types = {"grain": "varchar", "bucket": "timestamptz"} | dict.fromkeys(KEY_COLUMNS, "varchar")
    types |= dict.fromkeys(COUNTERS, "bigint")
    names = ", ".join(types)
    arrays = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in types.items())
    updates = ", ".join(f"{c} = {_TABLE}.{c} + excluded.{c}" for c in COUNTERS)
    return text(
        # Every name comes from the constants above; the values are bound.
        f"INSERT INTO {_TABLE} ({names}) SELECT * FROM unnest({arrays}) "  # noqa: S608
        f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET {updates}"
    )


def _sqlite_upsert() -> Insert:
    stmt = sqlite_insert(RATES_TABLE)
    table = RATES_TABLE.c
    return stmt.on_conflict_do_update(
        index_elements=list(_KEY),
        set_={c: table[c] + stmt.excluded[c] for c in COUNTERS},
    )


_TABLE: Final = RATES_TABLE.name
_PG_UPSERT: Final = _pg_upsert()
# executemany of one compiled statement (SQLite runs it in-process, row by row, in one transaction)
_SQLITE_UPSERT: Final = _sqlite_upsert()
