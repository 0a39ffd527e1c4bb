"""The import's database contract: :class:`ImportStore` (met by ``store_pg.PgStore`` and
``store_sqlite.SqliteStore``) and the one upsert both run, generated from
``app.suppression.merge`` so the never-weaken rule is stated once.

The upsert states :func:`app.suppression.merge.merge_into` in SQL: the stronger outcome wins,
permanence beats expiry, a removed or expired entry is replaced by a fresh one, and the ``WHERE``
of ``ON CONFLICT DO UPDATE`` leaves rows that would not change untouched, so importing a file
twice changes nothing the second time. Rows arrive in a TEMP staging table (``COPY`` on
PostgreSQL, ``executemany`` on SQLite) of the same shape as :class:`~app.bulk.rows.Row`.

Per-address advisory locks (``Database.write``) are not taken: a batch would need thousands, more
than the shared lock table holds. The row locks of ``ON CONFLICT`` serialise revisions per row, and
the cache is refreshed from a read after commit, so the cache's version rule still holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from app.bulk.rows import Row, RowValues
from app.cache import CachedEntry
from app.suppression.merge import merge_set_sql


def upsert_sql(dialect: str, *, overwrite: bool) -> str:
    """``INSERT … SELECT … ON CONFLICT DO UPDATE … WHERE changed``: ``merge_into`` as one statement
    (its ``SET`` and ``WHERE`` generated from the same table, ``app.suppression.merge``).

    ``:now`` is the batch's timestamp. Rows that would not change are not touched (no revision,
    hit or timestamp bump), which is what makes a re-import a no-op."""
    pg = dialect == "postgresql"
    now = "$1" if pg else ":now"
    merged, changed = merge_set_sql(dialect, now=now, overwrite=overwrite)
    empty = "'{}'::jsonb" if pg else "'{}'"
    detail = f"(CASE WHEN note IS NULL THEN {empty} ELSE " + (
        "jsonb_build_object('note', note) END)" if pg else "json_object('note', note) END)"
    )
    returning = "address, scope, outcome, reason, " + (
        "(xmax = 0) AS inserted" if pg else "(revision = 1) AS inserted"
    )
    id_column = "id, " if pg else ""
    # PostgreSQL: rows are locked in the order they are inserted; (address, scope) is the order
    # every other writer locks in, so an import and a single write queue instead of deadlocking
    # (tests/app/test_concurrency.py). Ids were taken in file order beforehand. SQLite (one
    # writer) numbers rows as inserted: file order.
    order = "address, scope" if pg else "line"
    assignments = ",\n    ".join(merged)
    # Every interpolated piece is a constant of this module; the values travel as parameters.
    return f"""
INSERT INTO suppressions AS s
    ({id_column}address, domain, scope, outcome, reason, source, detail, verified, first_seen,
     last_seen, expires_at, hit_count, removed_at, revision, updated_at)
SELECT {id_column}address, domain, scope, outcome, reason, 'import', {detail}, FALSE,
       COALESCE(first_seen, {now}), {now}, expires_at, 1, NULL, 1, {now}
FROM stoplist_import_stage WHERE TRUE ORDER BY {order}
ON CONFLICT (address, scope) DO UPDATE SET
    {assignments},
    removed_at = NULL,
    revision = s.revision + 1,
    last_seen = excluded.last_seen,
    updated_at = excluded.updated_at
WHERE {changed}
RETURNING {returning}"""  # noqa: S608


# The staging table holds one Row per line, in the order of its fields.
STAGE_COLUMNS = list(Row._fields)


def sqlite_time(value: datetime | None) -> str | None:
    # The text form SQLAlchemy's SQLite DATETIME stores (see app.models.UTCDateTime).
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass(slots=True)
class BatchResult:
    inserted: int
    updated: int
    changed: list[str]  # addresses whose cache entry must be refreshed


class ImportStore(Protocol):
    """One writer of an import: a connection, its transaction, and the reads the import needs."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def begin(self) -> None: ...

    async def allocate_ids(self, count: int) -> list[int] | None:
        """Ids for ``count`` rows, taken in file order (None where the database numbers them)."""
        ...

    async def write(
        self, rows: list[RowValues], now: datetime, ids: list[int] | None
    ) -> BatchResult:
        """Upsert one batch (and its events) in the open transaction."""
        ...

    async def touch(self, old: datetime, new: datetime) -> None:
        """Move the rows stamped ``old`` (this import's batches) to ``new``."""
        ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    def changed_since(self, stamp: datetime) -> AsyncIterator[list[str]]:
        """Batches of the addresses whose rows carry ``stamp``."""
        ...

    async def cache_items(
        self, addresses: Sequence[str], now: datetime
    ) -> list[tuple[str, int, list[CachedEntry]]]:
        """What the cache should hold for ``addresses`` after the import."""
        ...
