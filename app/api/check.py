"""The pre-send check: ``GET /v1/check`` (one address) and ``POST /v1/check`` (a batch).

Both answer from the cache replica; answers are serialised with orjson straight from the service's
dicts (the response models still document them in OpenAPI).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query

from app import metrics
from app.api.deps import CheckKey, ServicesDep
from app.api.responses import JSONBytes
from app.api.schemas import BatchCheckRequest, BatchCheckResponse, CheckResult, ErrorBody
from app.errors import InvalidInput

router = APIRouter(prefix="/v1", tags=["check"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    422: {"model": ErrorBody},
    503: {"model": ErrorBody, "description": "Cache and database both unreachable"},
}


@router.get("/check", response_model=CheckResult, responses=_ERRORS)
async def check_address(
    services: ServicesDep,
    _key: CheckKey,
    address: Annotated[str, Query(max_length=1000, description="The address to check")],
    stream: Annotated[str | None, Query(max_length=64, description="Sending stream")] = None,
) -> JSONBytes:
    """Is this address suppressed for this stream? Never answers "no" because a store failed."""
    started = time.perf_counter()
    answer = await services.suppressions.check_one(address, stream)
    metrics.CHECK_REQUESTS.labels("single").inc()
    metrics.CHECK_LATENCY.labels("single").observe(time.perf_counter() - started)
    return JSONBytes(answer)


@router.post("/check", response_model=BatchCheckResponse, responses=_ERRORS)
async def check_batch(services: ServicesDep, _key: CheckKey, body: BatchCheckRequest) -> JSONBytes:
    """Check many addresses at once; results come back in input order, invalid ones in place."""
    limit = services.settings.max_batch
    if len(body.addresses) > limit:
        raise InvalidInput(f"{len(body.addresses)} addresses: at most {limit} per request")
    started = time.perf_counter()
    results = await services.suppressions.check_many(body.addresses, body.stream)
    metrics.CHECK_REQUESTS.labels("batch").inc()
    metrics.CHECK_LATENCY.labels("batch").observe(time.perf_counter() - started)
    return JSONBytes({"results": results})
