"""Export: the active suppressions as CSV, in the columns the importer reads.

Export -> import into an empty database -> export is byte-identical. Cells a spreadsheet would run
as a formula are prefixed with ``'`` (the importer strips it again). PostgreSQL streams the file
with ``COPY``; SQLite reads pages of rows; both from one statement of the format
(``_export_columns``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from app.bulk.csv_io import (
    COLUMNS,
    HASHED_COLUMNS,
    csv_cell,
    format_time,
    header_line,
    neutralise,
)
from app.bulk.store import sqlite_time
from app.db import Database
from app.models import Suppression, utcnow
from app.streams import GLOBAL_SCOPE
from app.suppression import (
    SuppressionFilter,
    SuppressionService,
    scope_for,
)
from app.suppression.merge import active_sql


@dataclass(frozen=True, slots=True)
class ExportFilter(SuppressionFilter):
    """The list's filters, plus addresses as SHA-256 of the normalised address."""

    hashed: bool = False


@dataclass(slots=True)
class ExportStats:
    rows: int = 0
    bytes: int = 0


_PG_TIME = '\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\''


def _pg_neutralise(column: str) -> str:
    return rf"CASE WHEN ({column}) ~ '^''*[-=+@\t\r]' THEN '''' || ({column}) ELSE {column} END"


def _export_columns(hashed: bool) -> list[tuple[str, str, Callable[[Any], str]]]:
    """The export format, stated once: for each column of the header (``csv_io.COLUMNS``, or
    ``HASHED_COLUMNS``), its PostgreSQL expression (``COPY … CSV`` quotes it) and the same cell
    computed from a row read through SQLAlchemy (``csv_cell`` quotes it)."""
    note = _pg_neutralise("detail->>'note'")
    address: tuple[str, Callable[[Any], str]] = (
        (
            "encode(sha256(convert_to(address, 'UTF8')), 'hex')",
            lambda r: hashlib.sha256(r.address.encode()).hexdigest(),
        )
        if hashed
        else (_pg_neutralise("address"), lambda r: neutralise(r.address))
    )
    formats: list[tuple[str, Callable[[Any], str]]] = [
        address,
        ("outcome", lambda r: r.outcome),
        ("reason", lambda r: r.reason),
        (
            f"NULLIF(scope, '{GLOBAL_SCOPE}')",
            lambda r: "" if r.scope == GLOBAL_SCOPE else r.scope,
        ),
        (
            f"to_char(expires_at AT TIME ZONE 'UTC', {_PG_TIME})",
            lambda r: format_time(r.expires_at),
        ),
        (
            f"to_char(first_seen AT TIME ZONE 'UTC', {_PG_TIME})",
            lambda r: format_time(r.first_seen),
        ),
        (
            f"NULLIF({note}, '')",
            lambda r: neutralise(str((r.detail or {}).get("note") or "")),
        ),
    ]
    header = HASHED_COLUMNS if hashed else COLUMNS
    return [(name, sql, cell) for name, (sql, cell) in zip(header, formats, strict=True)]


def _export_where(flt: ExportFilter, pg: bool) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {"now": utcnow()}
    where = [active_sql("", ":now")]
    if flt.outcome:
        where.append("outcome = :outcome")
        params["outcome"] = flt.outcome
    if flt.reason:
        where.append("reason = :reason")
        params["reason"] = flt.reason
    if flt.stream:
        where.append("scope = :scope")
        params["scope"] = scope_for(flt.stream)
    if flt.domain:
        where.append("domain = :domain")
        params["domain"] = flt.domain
    if flt.source:
        where.append("source = :source")
        params["source"] = flt.source
    if flt.since:
        where.append("last_seen >= :since")
        params["since"] = flt.since
    if not pg:
        for name in ("now", "since"):
            if name in params:
                params[name] = sqlite_time(params[name])
    return " AND ".join(where), params


def export_csv(
    service: SuppressionService, flt: ExportFilter, stats: ExportStats | None = None
) -> AsyncIterator[bytes]:
    """The active suppressions as CSV bytes, oldest id first, streamed in ~64 KiB pieces."""
    stats = stats if stats is not None else ExportStats()
    if service.db.dialect == "postgresql":
        return _export_pg(service.db, flt, stats)
    return _export_sqlite(service.db, flt, stats)


async def _export_pg(db: Database, flt: ExportFilter, stats: ExportStats) -> AsyncIterator[bytes]:
    where, params = _export_where(flt, pg=True)
    names = list(params)
    for i, name in enumerate(names, start=1):
        where = where.replace(f":{name}", f"${i}")
    selected = ", ".join(sql for _, sql, _ in _export_columns(flt.hashed))
    # Interpolated: constants and placeholders only; the values travel as parameters.
    query = f"SELECT {selected} FROM suppressions WHERE {where} ORDER BY id"  # noqa: S608
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=16)

    async def sink(data: bytes) -> None:
        await queue.put(data)

    head = header_line(flt.hashed)
    stats.bytes += len(head)
    yield head
    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        pg: Any = raw.driver_connection

        async def run() -> str:
            try:
                status: str = await pg.copy_from_query(
                    query, *[params[n] for n in names], output=sink, format="csv"
                )
                return status
            finally:
                await queue.put(None)

        task = asyncio.create_task(run())
        try:
            pending: list[bytes] = []
            size = 0
            while (data := await queue.get()) is not None:
                pending.append(data)
                size += len(data)
                if size >= 65536:
                    out = b"".join(pending)
                    pending, size = [], 0
                    stats.bytes += len(out)
                    yield out
            status = await task
            if pending:
                out = b"".join(pending)
                stats.bytes += len(out)
                yield out
            stats.rows = int(status.split()[-1]) if status.split()[-1].isdigit() else stats.rows
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


async def _export_sqlite(
    db: Database, flt: ExportFilter, stats: ExportStats
) -> AsyncIterator[bytes]:
    where, params = _export_where(flt, pg=False)
    query = text(
        "SELECT id, address, outcome, reason, scope, expires_at, first_seen, detail"  # noqa: S608
        f" FROM suppressions WHERE {where} AND id > :after ORDER BY id LIMIT :limit"
    ).columns(
        Suppression.id,
        Suppression.address,
        Suppression.outcome,
        Suppression.reason,
        Suppression.scope,
        Suppression.expires_at,
        Suppression.first_seen,
        Suppression.detail,
    )
    cells = [cell for _, _, cell in _export_columns(flt.hashed)]
    head = header_line(flt.hashed)
    stats.bytes += len(head)
    yield head
    after = 0
    while True:
        async with db.read() as s:
            rows = (await s.execute(query, {**params, "after": after, "limit": 5000})).all()
        if not rows:
            return
        lines = [",".join(csv_cell(cell(row)) for cell in cells) for row in rows]
        out = ("\n".join(lines) + "\n").encode()
        stats.rows += len(rows)
        stats.bytes += len(out)
        yield out
        after = rows[-1][0]
