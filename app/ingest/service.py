"""One ingest run assembled: reader, decoder, offsets and progress for a path or a pipe."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from typing import BinaryIO

from app.db import Database
from app.ingest.decoders import make_decoder
from app.ingest.offsets import OffsetStore
from app.ingest.pipeline import DecoderProcess
from app.ingest.progress import Progress, Totals
from app.ingest.runner import Ingestor, Reader
from app.ingest.sink import EventSink
from app.ingest.source import DEFAULT_BATCH_LINES, FileReader, PipeReader


async def ingest_log(
    source: str,
    path: str,
    *,
    db: Database,
    sink: EventSink,
    follow: bool = False,
    batch_lines: int = DEFAULT_BATCH_LINES,
    flush_s: float = 0.2,
    year: int | None = None,
    progress: Progress | None = None,
    stdin: BinaryIO | None = None,
    count_deliveries: bool = False,
    parse_process: bool = False,
) -> Totals:
    """Reads ``path`` (``-``: standard input, no offsets) of log ``source`` into ``sink``.

    A file resumes at its saved offset; with ``follow`` it is read on as it grows and across
    rotation until the task is cancelled. ``count_deliveries``: PowerMTA deliveries are counted by
    key (``Batch.deliveries``), without an ``Event`` each; the sink must count them.
    ``parse_process``: the lines are parsed in a second process (``app.ingest.pipeline``).
    """
    progress = progress if progress is not None else Progress()
    offsets: OffsetStore | None = None
    reader: Reader
    if path == "-":
        origin = "stdin"
        stream = stdin if stdin is not None else sys.stdin.buffer
        reader = PipeReader(stream, name=origin, batch_lines=batch_lines, flush_s=flush_s)
    else:
        origin = os.path.basename(path)
        offsets = OffsetStore(db, source)
        reader = FileReader(
            path, offsets.resume, follow=follow, batch_lines=batch_lines, poll_s=flush_s
        )
        if year is None and source == "postfix" and not follow:
            year = _year_of(path)
    decoder = make_decoder(source, origin, year=year, count_deliveries=count_deliveries)
    process: DecoderProcess | None = None
    if parse_process:
        process = DecoderProcess(source, origin, year=year, count_deliveries=count_deliveries)
    ingestor = Ingestor(decoder, sink, offsets, progress, process=process)
    try:
        return await ingestor.run(reader)
    finally:
        progress.finish(ingestor.totals)
        if process is not None:
            process.close()


def _year_of(path: str) -> int:
    """Classic syslog stamps have no year: a finished log's is its last change's."""
    return datetime.fromtimestamp(os.stat(path).st_mtime, UTC).year
