"""The HTTP application: the FastAPI object, its middleware, error rendering and routers (one
module per resource in ``app.http.routes``). The process around it (services, sink, background
jobs) is wired by ``app.main``."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI

from app.console import routes as console
from app.container import Services
from app.http.errors import install_error_handlers
from app.http.middleware import MAX_BODY, BodyLimit
from app.http.routes import (
    bulk,
    check,
    domains,
    events,
    health,
    messages,
    suppressions,
    tokens,
    unsubscribe,
    webhooks,
)
from app.http.routes import stats as stats_routes

VERSION = "0.1.0"


def build_http_app(
    *,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None,
    services: Services | None = None,
) -> FastAPI:
    """The API with every route; ``services`` when they already exist (tests), else the
    ``lifespan`` builds them."""
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
    app.add_middleware(check.CheckFastPath)  # inside the body limit (added after it)
    app.add_middleware(
        BodyLimit,
        max_bytes=MAX_BODY,
        exempt=(bulk.IMPORT_PATH, console.IMPORT_PATH, events.EVENTS_PATH),
    )
    install_error_handlers(app)
    app.include_router(check.router)
    app.include_router(bulk.router)  # before suppressions: /export is not an address
    app.include_router(suppressions.router)
    app.include_router(messages.router)
    app.include_router(health.router)
    app.include_router(unsubscribe.router)
    app.include_router(tokens.router)
    app.include_router(events.router)
    app.include_router(stats_routes.router)
    app.include_router(domains.router)
    app.include_router(console.router)  # the support console at /, not in OpenAPI
    app.include_router(webhooks.router)
    return app
