"""What the ingest hands its events to: anything that records a ``Batch`` in one transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from events import Batch

# Runs inside the batch's transaction just before its commit (the ingest saves its offset there).
CommitHook = Callable[[AsyncSession], Awaitable[None]]


class RecordCounts(Protocol):
    """How many of a batch's events were new and how many had been recorded before."""

    @property
    def new(self) -> int: ...

    @property
    def duplicate(self) -> int: ...


class EventSink(Protocol):
    """Records a batch's events (deduped by ``Event.dedupe_id``) and errors, applies the new ones,
    runs ``before_commit`` in the same transaction and commits, all before returning; raises one
    of ``app.db.DB_ERRORS`` when storage is down.

    ``count_deliveries``: deliveries may be counted into the rates without being stored, hence
    without dedupe; the caller passes a ``before_commit`` that makes the batch's commit happen
    once (the saved read offset).

    ``record`` may leave work derived from the committed batch running when it returns (the
    cache's refresh); ``settle`` waits for it (the ingest calls it before it ends).

    ``prepare`` does the part of ``record`` that needs no database, ahead: the ingest calls it for
    the next batch while the one before commits, and passes what it returned to ``record`` as
    ``prepared`` (a sink with nothing to do ahead returns None)."""

    async def prepare(self, batch: Batch, *, count_deliveries: bool = False) -> Any: ...

    async def record(
        self,
        batch: Batch,
        *,
        count_deliveries: bool = False,
        before_commit: CommitHook | None = None,
        prepared: Any = None,
    ) -> RecordCounts: ...

    async def settle(self) -> None: ...
