"""``python -m tests.app.ingest_child DB_URL SOURCE PATH``: one ingest run into the test sink,
slowed per batch, for the kill -9 test (a process the test can kill mid-file)."""

from __future__ import annotations

import asyncio
import sys

from app.db import Database
from app.ingest import Progress, ingest_log
from app.settings import Settings
from tests.app.ingest_support import TableSink


async def main(url: str, source: str, path: str) -> None:
    db = Database(Settings(database_url=url))
    sink = TableSink(db, delay_s=0.02)
    await sink.create()
    try:
        await ingest_log(
            source, path, db=db, sink=sink, batch_lines=50, progress=Progress(quiet=True)
        )
    finally:
        await db.dispose()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
