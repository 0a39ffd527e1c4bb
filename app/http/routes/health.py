"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import metrics
from app.cache import CacheUnavailable
from app.db import DB_ERRORS
from app.http.deps import ApiRoute, CheckKey, ServicesDep
from app.http.responses import JSONBytes
from app.http.schemas import Health, Readiness, error_responses
from app.intake import IntakeStore
from app.rates import refresh_gauges

router = APIRouter(tags=["health"], route_class=ApiRoute)

_gauge_refreshed = 0.0


@router.get("/healthz", response_model=Health)
async def healthz() -> JSONBytes:
    """The process is alive (no dependencies checked, no key needed)."""
    return JSONBytes({"status": "ok"})


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(services: ServicesDep) -> JSONBytes:
    """Can this replica answer checks? ``degraded``: yes, from the database only (or from the cache
    only); ``unavailable`` (503): no. No key needed."""
    db_state = "ok"
    try:
        await services.db.ping()
    except DB_ERRORS as exc:
        db_state = f"error: {type(exc).__name__}"
    cache_state = "ok"
    try:
        await services.cache.ping()
        generation = await services.cache.generation()
        if generation is None:
            cache_state = "cold"
        elif services.suppressions.cache_dirty:
            cache_state = "stale"
    except CacheUnavailable as exc:
        cache_state = f"unavailable: {exc}"[:120]
    if db_state == "ok" and cache_state == "ok":
        status, code = "ok", 200
    elif db_state == "ok" or cache_state == "ok":
        status, code = "degraded", 200
    else:
        status, code = "unavailable", 503
    return JSONBytes(
        {
            "status": status,
            "database": db_state,
            "cache": cache_state,
            "cache_kind": services.cache.kind,
        },
        status_code=code,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        **error_responses(401, 403, 503),
    },
)
async def prometheus_metrics(services: ServicesDep, _key: CheckKey) -> Response:
    """Prometheus exposition (needs a key of scope check or above)."""
    global _gauge_refreshed
    if time.monotonic() - _gauge_refreshed > 15:
        _gauge_refreshed = time.monotonic()
        try:
            for outcome, n in (await services.suppressions.count_by_outcome()).items():
                metrics.SUPPRESSIONS_ACTIVE.labels(outcome).set(n)
            pending, failed, oldest_s = await IntakeStore(services.db).backlog()
            metrics.INTAKE_MESSAGES.labels("pending").set(pending)
            metrics.INTAKE_MESSAGES.labels("failed").set(failed)
            metrics.INTAKE_OLDEST_PENDING.set(oldest_s)
            await refresh_gauges(services.db)
        except DB_ERRORS:
            pass
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
