"""The periodic job of ``stoplist serve``: delete rate buckets past their retention.

The hourly and daily roll-ups need no job (every batch adds to all three grains); what ages out
is dropped here, at most every ``STOPLIST_RATES_PRUNE_INTERVAL_S``. Several replicas may run it at
once: the deletes are idempotent.
"""

from __future__ import annotations

import asyncio
import logging

from app.db import DB_ERRORS, Database
from app.rates.repository import prune
from app.settings import Settings

__all__ = ["retention_job"]

log = logging.getLogger("app.rates")


async def retention_job(db: Database, settings: Settings) -> None:
    """Run :func:`prune` now and then every interval, until cancelled."""
    while True:
        try:
            deleted = await prune(db, settings)
            if any(deleted.values()):
                log.info("rates: deleted buckets past retention: %s", deleted)
        except DB_ERRORS as exc:
            log.warning("rates retention: database unreachable: %s", exc)
        except Exception:
            log.exception("rates retention failed")
        await asyncio.sleep(settings.rates_prune_interval_s)
