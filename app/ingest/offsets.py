"""Durable read offsets of log files (table ``ingest_offsets``): all SQL of the ingest lives here.

An offset is saved in the transaction of the batch it ends (``save_in``; ``save`` alone when the
batch held nothing), so a restart resumes exactly there: nothing is skipped and nothing is
recorded twice, deliveries included (they are counted into the rates, not stored and deduped). A file is looked up by device:inode first
(its first bytes must still match: an inode is reused once its file is deleted), then by the
fingerprint of its first ``FINGERPRINT_BYTES`` bytes (a file copied or moved to another device).
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database
from app.ingest.source import FINGERPRINT_BYTES, FileIdentity, OpenedFile, Position
from app.models import IngestOffset, utcnow


class OffsetStore:
    """Load and save where each (source, file) was read to."""

    def __init__(self, db: Database, source: str) -> None:
        self.db = db
        self.source = source

    async def resume(self, identity: FileIdentity, size: int) -> Position:
        """Where to start reading this file: its saved position, or its start."""
        async with self.db.read() as s:
            row = await s.scalar(
                select(IngestOffset).where(
                    IngestOffset.source == self.source, IngestOffset.file_key == identity.file_key
                )
            )
            if row is None or not _matches(row, identity):
                row = None
                if len(identity.head) == FINGERPRINT_BYTES:
                    candidates = await s.scalars(
                        select(IngestOffset)
                        .where(
                            IngestOffset.source == self.source,
                            IngestOffset.fingerprint == identity.fingerprint,
                            IngestOffset.fingerprint_bytes == FINGERPRINT_BYTES,
                        )
                        .order_by(IngestOffset.updated_at.desc())
                        .limit(1)
                    )
                    row = candidates.first()
        if row is None or row.offset > size:
            return Position()
        return Position(row.offset, row.line, row.context)

    async def save(self, file: OpenedFile, position: Position) -> None:
        """Record ``position`` as read and committed (one autocommitted upsert)."""
        stmt = self._upsert(file, position)
        if stmt is None:
            return
        async with self.db.autocommit() as conn:
            await conn.execute(stmt)

    async def save_in(self, s: AsyncSession, file: OpenedFile, position: Position) -> None:
        """Record ``position`` inside ``s``'s transaction: it commits with the batch it ends."""
        stmt = self._upsert(file, position)
        if stmt is not None:
            await s.execute(stmt)

    def _upsert(self, file: OpenedFile, position: Position) -> Any:
        identity = file.identity
        if identity is None:
            return None
        values = {
            "source": self.source,
            "file_key": identity.file_key,
            "fingerprint": identity.fingerprint,
            "fingerprint_bytes": len(identity.head),
            "path": file.path,
            "offset": position.offset,
            "line": position.line,
            "context": position.context,
            "updated_at": utcnow(),
        }
        insert = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
        stmt = insert(IngestOffset).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["source", "file_key"],
            set_={k: stmt.excluded[k] for k in values if k not in ("source", "file_key")},
        )
        return stmt


def _matches(row: IngestOffset, identity: FileIdentity) -> bool:
    """Whether the file starts with the bytes the row was saved with."""
    n = row.fingerprint_bytes
    if len(identity.head) < n:
        return False
    return hashlib.sha256(identity.head[:n]).hexdigest() == row.fingerprint
