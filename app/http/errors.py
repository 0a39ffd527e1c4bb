"""One rendering of every error the API answers: ``{"error", "detail"}`` with the error's status.

Domain errors (``app.errors.AppError``) carry their status; request validation is 422; a database
that is away is 503."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from app.db import DB_ERRORS
from app.errors import AppError
from app.http.responses import JSONBytes

log = logging.getLogger("stoplist")


def install_error_handlers(app: FastAPI) -> None:
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


def handler_for(app: Any, exc: Exception) -> Callable[[Request, Exception], Awaitable[Any]] | None:
    """The exception handler ``app`` registered for ``exc``'s class or its nearest base (the
    lookup Starlette's exception middleware makes), for code that answers outside the router. A
    handler of ``Exception`` itself is not returned: Starlette gives that one to its server-error
    middleware, which the exception then reaches as it would from the router."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:
            break
        if cls in handlers:
            handler: Callable[[Request, Exception], Awaitable[Any]] = handlers[cls]
            return handler
    return None
