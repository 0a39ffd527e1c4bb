"""Bulk import and export of the suppression list as CSV (see ``docs/bulk.md``).

Import is streamed end to end: bytes (gzip by header or magic, a multipart upload unwrapped on the
fly, ``csv_io``) -> validated rows, folded per (address, scope), in batches (``rows``; a
provider's export is read through its ``presets`` entry) -> one set-based upsert per batch
(``store``: the contract, ``store_pg``/``store_sqlite``: the two databases). ``importer`` runs
parsing, the writers and the cache write-through concurrently; ``exporter`` writes the columns
the importer reads, so export -> import into an empty database -> export is byte-identical.

May import: ``app.suppression``, ``app.cache``, ``app.db``, ``app.models``, ``app.addresses``,
``app.streams``, ``app.errors``, ``app.metrics``. Never the HTTP layer, the CLI or the container.
"""

from app.bulk.csv_io import (
    CsvRecords,
    InvalidFile,
    file_chunks,
    format_time,
    gunzip_if_needed,
    neutralise,
    non_empty,
    parse_time,
    request_body,
    unneutralise,
)
from app.bulk.exporter import ExportFilter, ExportStats, export_csv
from app.bulk.importer import import_csv
from app.bulk.model import ImportSummary
from app.bulk.presets import PRESETS, ImportOptions
from app.bulk.rows import Row, RowParser

__all__ = [
    "PRESETS",
    "CsvRecords",
    "ExportFilter",
    "ExportStats",
    "ImportOptions",
    "ImportSummary",
    "InvalidFile",
    "Row",
    "RowParser",
    "export_csv",
    "file_chunks",
    "format_time",
    "gunzip_if_needed",
    "import_csv",
    "neutralise",
    "non_empty",
    "parse_time",
    "request_body",
    "unneutralise",
]
