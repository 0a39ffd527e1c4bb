"""The pre-send check: ``GET /v1/check`` (one address) and ``POST /v1/check`` (a batch).

This is the hot path campaign tools call before every injection, so these two routes take the
bare ``Request`` and do their own parameter parsing and authorisation: FastAPI's dependency and
body-model machinery costs more per request than the lookup itself (measured in
``bench/check_api.py``). Their parameters, body and security are still documented in OpenAPI
through ``openapi_extra``, and the answers are the service's dicts serialised by orjson.

``CheckFastPath`` goes one step further: it hands ``GET`` and ``POST /v1/check`` to these same two
functions straight from the middleware stack, before FastAPI's router walks every route of the app
and wraps the call in its exception and dependency machinery (a third of a single check's CPU,
measured with py-spy under wrk; see docs/benchmarks.md). Errors are rendered by the exception
handlers the app registered, so the answers are the same either way.
"""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app import metrics
from app.container import Services
from app.errors import InvalidInput
from app.http.deps import ApiRoute, authorize
from app.http.errors import handler_for
from app.http.responses import JSONBytes
from app.http.schemas import (
    STREAM_PATTERN,
    BatchCheckRequest,
    BatchCheckResponse,
    CheckResult,
    error_responses,
)

router = APIRouter(prefix="/v1", tags=["check"], route_class=ApiRoute)

_ERRORS = error_responses(401, 403, 422, 503, e503="Cache and database both unreachable")
_SECURITY: list[dict[str, list[str]]] = [{"HTTPBearer": []}]
_STREAM_PARAM = {
    "name": "stream",
    "in": "query",
    "required": False,
    "description": "Sending stream; omit to see global suppressions only",
    "schema": {"type": "string", "pattern": STREAM_PATTERN},
}


@router.get(
    "/check",
    response_model=CheckResult,
    responses=_ERRORS,
    openapi_extra={
        "security": _SECURITY,
        "parameters": [
            {
                "name": "address",
                "in": "query",
                "required": True,
                "description": "The address to check",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1000,
                    "examples": ["jane@example.com", "Jane Doe <Jane.Doe@Bücher.example>"],
                },
            },
            _STREAM_PARAM,
        ],
    },
)
async def check_address(request: Request) -> JSONBytes:
    """Is this address suppressed for this stream? Never answers "no" because a store failed."""
    started = time.perf_counter()
    services: Services = request.app.state.services
    await authorize(services, request.headers.get("authorization"), "check")
    query = request.query_params
    address = query.get("address")
    if not address:
        raise InvalidInput("the address query parameter is required")
    if len(address) > 1000:
        raise InvalidInput("address longer than 1000 characters")
    answer = await services.suppressions.check_one(address, query.get("stream"))
    metrics.CHECK_REQUESTS.labels("single").inc()
    metrics.CHECK_LATENCY.labels("single").observe(time.perf_counter() - started)
    return JSONBytes(answer)


@router.post(
    "/check",
    response_model=BatchCheckResponse,
    responses=_ERRORS | error_responses(413),
    openapi_extra={
        "security": _SECURITY,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": BatchCheckRequest.model_json_schema()}},
        },
    },
)
async def check_batch(request: Request) -> JSONBytes:
    """Check many addresses at once; results come back in input order, invalid ones in place."""
    started = time.perf_counter()
    services: Services = request.app.state.services
    await authorize(services, request.headers.get("authorization"), "check")
    addresses, stream = _parse_batch(await request.body(), services.settings.max_batch)
    results = await services.suppressions.check_many(addresses, stream)
    metrics.CHECK_REQUESTS.labels("batch").inc()
    metrics.CHECK_LATENCY.labels("batch").observe(time.perf_counter() - started)
    return JSONBytes({"results": results})


def _parse_batch(body: bytes, limit: int) -> tuple[list[str], str | None]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput('body must be an object: {"addresses": [...], "stream": ...}')
    unknown = set(data) - {"addresses", "stream"}
    if unknown:
        raise InvalidInput(f"unknown fields: {sorted(unknown)}")
    addresses = data.get("addresses")
    if not isinstance(addresses, list):
        raise InvalidInput("addresses must be a list of strings")
    if len(addresses) > limit:
        raise InvalidInput(f"{len(addresses)} addresses: at most {limit} per request")
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, str):
        raise InvalidInput("stream must be a string")
    return addresses, stream


_FAST = {"GET": check_address, "POST": check_batch}


class CheckFastPath:
    """ASGI middleware: ``GET`` and ``POST /v1/check`` answered by the route functions above
    without going through the router. Anything else, these paths with another method included
    (405 with ``Allow``), goes on to the app unchanged; so does a path under a ``root_path``,
    which ASGI servers put in front of it. Where OpenTelemetry is configured, FastAPI's span of
    these requests has no ``http.route`` (the router sets it; the span is still made)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/check":
            await self.app(scope, receive, send)
            return
        endpoint = _FAST.get(scope["method"])
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = handler_for(request.app, exc)
            if handler is None:
                raise  # as the router would: ServerErrorMiddleware answers 500
            response = await handler(request, exc)
        await response(scope, receive, send)
