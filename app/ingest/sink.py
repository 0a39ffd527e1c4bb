"""What the ingest hands its events to: anything that records a ``Batch`` in one transaction."""

from __future__ import annotations

from typing import Protocol

from events import Batch


class RecordCounts(Protocol):
    """How many of a batch's events were new and how many had been recorded before."""

    @property
    def new(self) -> int: ...

    @property
    def duplicate(self) -> int: ...


class EventSink(Protocol):
    """Records a batch's events (deduped by ``Event.dedupe_id``) and errors, applies the new ones,
    and commits, all before returning; raises one of ``app.db.DB_ERRORS`` when storage is down."""

    async def record(self, batch: Batch) -> RecordCounts: ...
