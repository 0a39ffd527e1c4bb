"""The service process: ``create_app`` returns the HTTP API whose typed lifespan builds the services
(``app.container``), starts the SMTP sink and housekeeping (those its role runs, ``app.topology``),
and disposes of them all."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.container import PeriodicJob, Services, build_services, housekeeping, start_services
from app.events.retention import PRUNE_INTERVAL_S as EVENT_PRUNE_INTERVAL_S
from app.events.retention import prune_events
from app.http.app import build_http_app
from app.intake.smtp import start_sink
from app.rates.jobs import retention_job
from app.settings import Settings, get_settings
from app.suppression.service import EXPIRY_INTERVAL_S
from app.topology import Role
from app.webhooks.service import WebhookService
from app.webhooks.worker import DeliveryWorker

log = logging.getLogger("stoplist")


async def expire_entries(services: Services) -> None:
    """Housekeeping: record the entries whose expiry was reached (``suppression.removed``)."""
    await services.suppressions.expire_due()


def create_app(
    settings: Settings | None = None, *, services: Services | None = None, role: Role = Role.ALL
) -> FastAPI:
    """The HTTP API with what ``role`` runs beside it (``app.topology``): ``api`` keeps only the
    cache upkeep on this loop; ``worker`` adds webhook delivery and the retention jobs; ``all``
    adds the SMTP sink too."""
    settings = settings or get_settings()
    jobs: list[PeriodicJob] = (
        [(EVENT_PRUNE_INTERVAL_S, prune_events), (EXPIRY_INTERVAL_S, expire_entries)]
        if role.runs_background_jobs
        else []
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = services or build_services(settings)
        app.state.services = svc
        owned = services is None
        await start_services(svc)
        # Start-up objects live for the whole process: keep them out of the cyclic GC's scans
        # so its pauses do not land on the pre-send check's tail latency.
        gc.freeze()
        keeper = asyncio.create_task(housekeeping(svc, jobs=jobs))
        rates_keeper = None
        if role.runs_background_jobs:
            rates_keeper = asyncio.create_task(retention_job(svc.db, svc.settings))
        sink = None
        if role.runs_sink and svc.settings.sink_enabled:
            sink = await start_sink(svc)
        deliverer = None
        if role.runs_background_jobs and svc.settings.webhook_enabled:
            deliverer = DeliveryWorker(svc.db, WebhookService(svc.db, svc.settings))
            deliverer.start()
        try:
            yield
        finally:
            if deliverer is not None:
                await deliverer.stop()
            if sink is not None:
                await sink.close()
            for task in (keeper, rates_keeper):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await svc.suppressions.wait_rebuild()
            await svc.keys.close()
            if owned:
                await svc.cache.close()
                await svc.db.dispose()

    return build_http_app(lifespan=lifespan, services=services)
