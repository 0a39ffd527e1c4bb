"""The FastAPI application: a typed lifespan builds the engine, cache and services and disposes of
them; one handler renders every domain error as ``{"error", "detail"}``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import bulk, check, health, messages, suppressions, tokens, unsubscribe
from app.api.responses import JSONBytes
from app.container import Services, build_services, housekeeping, start_services
from app.db import DB_ERRORS
from app.errors import AppError
from app.settings import Settings, get_settings
from app.smtp import start_sink

log = logging.getLogger("stoplist")

VERSION = "0.1.0"
MAX_BODY = 4 * 1024 * 1024  # 10,000 addresses fit comfortably


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = services or build_services(settings)
        app.state.services = svc
        owned = services is None
        await start_services(svc)
        # Start-up objects live for the whole process: keep them out of the cyclic GC's scans
        # so its pauses do not land on the pre-send check's tail latency.
        gc.freeze()
        keeper = asyncio.create_task(housekeeping(svc))
        sink = None
        if svc.settings.sink_enabled:
            sink = await start_sink(svc)
        try:
            yield
        finally:
            if sink is not None:
                await sink.close()
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await svc.suppressions.wait_rebuild()
            await svc.keys.close()
            if owned:
                await svc.cache.close()
                await svc.db.dispose()

    app = FastAPI(
        title="Stoplist",
        version=VERSION,
        summary="Bounce, feedback-loop and suppression service",
        description=(
            "Pre-send suppression check and support API. Every route but `/healthz` and "
            "`/readyz` needs `Authorization: Bearer <API key>` with the right scope "
            "(check < read < write < admin)."
        ),
        lifespan=lifespan,
    )
    if services is not None:
        app.state.services = services
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY, exempt=(bulk.IMPORT_PATH,))
    _install_error_handlers(app)
    app.include_router(check.router)
    app.include_router(bulk.router)  # before suppressions: /export is not an address
    app.include_router(suppressions.router)
    app.include_router(messages.router)
    app.include_router(health.router)
    app.include_router(unsubscribe.router)
    app.include_router(tokens.router)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    async def app_error(_: Request, exc: Exception) -> JSONBytes:
        assert isinstance(exc, AppError)
        return JSONBytes(
            {"error": exc.error, "detail": exc.detail},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def validation_error(_: Request, exc: Exception) -> JSONBytes:
        assert isinstance(exc, RequestValidationError)
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        return JSONBytes({"error": "validation_error", "detail": detail}, status_code=422)

    async def storage_error(request: Request, exc: Exception) -> JSONBytes:
        log.error("storage failure on %s %s: %s", request.method, request.url.path, exc)
        return JSONBytes(
            {"error": "unavailable", "detail": "storage unavailable, retry later"},
            status_code=503,
        )

    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    for exc_type in DB_ERRORS:
        app.add_exception_handler(exc_type, storage_error)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, counting streamed bodies too."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _too_large(send, self.max_bytes)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await _too_large(send, self.max_bytes)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Callable[[Message], Awaitable[None]], limit: int) -> None:
    body: Any = JSONBytes({"error": "too_large", "detail": f"body over {limit} bytes"}).body
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
