"""``stoplist ingest``: MTA logs (PowerMTA accounting CSV, Postfix mail log, KumoMTA JSON log)
read from a file, a followed file or a pipe, into an event sink, with durable read offsets.

Owns the reader (``source``), the per-source decoders that keep state across batches
(``decoders``), the offsets table's SQL (``offsets``), the loop (``runner``) and its progress line.
May import ``app.db``, ``app.models`` and the pure ``events`` package; the sink it records into
(``EventSink``) is handed in by the caller, so this package does not reach the services.
"""

from app.ingest.decoders import SOURCES, make_decoder
from app.ingest.offsets import OffsetStore
from app.ingest.progress import Progress, Totals
from app.ingest.runner import Ingestor
from app.ingest.service import ingest_log
from app.ingest.sink import EventSink, RecordCounts
from app.ingest.source import DEFAULT_BATCH_LINES, FileReader, PipeReader

__all__ = [
    "DEFAULT_BATCH_LINES",
    "SOURCES",
    "EventSink",
    "FileReader",
    "Ingestor",
    "OffsetStore",
    "PipeReader",
    "Progress",
    "RecordCounts",
    "Totals",
    "ingest_log",
    "make_decoder",
]
