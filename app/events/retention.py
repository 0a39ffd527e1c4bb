"""Bounded retention of ``delivery_events`` and ``delivery_event_errors``.

Rows received longer ago than ``STOPLIST_EVENT_RETENTION_DAYS`` (events) and
``STOPLIST_EVENT_ERROR_RETENTION_DAYS`` (unreadable records) are deleted by the service's
housekeeping, a bounded batch per transaction, so no statement holds its row locks for long and
intake goes on meanwhile. On PostgreSQL rows another replica is deleting are skipped (``SKIP
LOCKED``) rather than waited for.

Dedupe holds only within the window: an event whose ``dedupe_id`` was pruned is recorded (and
applied) again if it is replayed, so the window must exceed the longest retry horizon of the
senders (docs/events.md, "Retention").
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from app.container import Services
from app.models import DeliveryEvent, DeliveryEventError, utcnow

__all__ = ["PRUNE_BATCH", "PRUNE_INTERVAL_S", "Pruned", "prune_events"]

log = logging.getLogger("app.events")

PRUNE_BATCH = 5000  # rows per transaction: a short lock, and a short statement
PRUNE_INTERVAL_S = 600.0  # how often housekeeping prunes


@dataclass(frozen=True, slots=True)
class Pruned:
    events: int
    errors: int


async def prune_events(
    services: Services, *, now: datetime | None = None, batch: int = PRUNE_BATCH
) -> Pruned:
    """Delete events and kept errors older than their retention (0 days keeps them)."""
    settings = services.settings
    now = now or utcnow()
    counts = []
    for table, days in (
        (DeliveryEvent.__table__, settings.event_retention_days),
        (DeliveryEventError.__table__, settings.event_error_retention_days),
    ):
        deleted = 0
        if days > 0:
            deleted = await _prune(services, table, now - timedelta(days=days), batch)
        counts.append(deleted)
    pruned = Pruned(events=counts[0], errors=counts[1])
    if pruned.events or pruned.errors:
        log.info(
            "retention: pruned %d delivery events and %d unreadable records",
            pruned.events,
            pruned.errors,
        )
    return pruned


async def _prune(services: Services, table: Any, cutoff: datetime, batch: int) -> int:
    """Delete ``table``'s rows received before ``cutoff``, ``batch`` rows per transaction."""
    total = 0
    while True:
        async with services.db.write() as s:
            oldest = (
                select(table.c.id)
                .where(table.c.received_at < cutoff)
                .order_by(table.c.received_at)  # the received_at index: no sort, no scan
                .limit(batch)
            )
            if s.get_bind().dialect.name == "postgresql":
                oldest = oldest.with_for_update(skip_locked=True)
            result = await s.execute(delete(table).where(table.c.id.in_(oldest.scalar_subquery())))
            deleted = int(getattr(result, "rowcount", 0) or 0)
        total += deleted
        if deleted < batch:
            return total
        await asyncio.sleep(0)  # let intake's transactions in between batches
