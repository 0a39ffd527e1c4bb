"""Request dependencies: the services of the running app and API-key authentication."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app import metrics
from app.auth import KeyInfo, KeyService, scope_allows
from app.cache import SuppressionCache
from app.db import Database
from app.errors import Forbidden, Unauthorized
from app.settings import Settings
from app.signing import Signer
from app.suppressions import SuppressionService


@dataclass(slots=True)
class Services:
    settings: Settings
    db: Database
    cache: SuppressionCache
    suppressions: SuppressionService
    keys: KeyService
    signer: Signer | None = None  # None: no STOPLIST_SIGNING_KEYS


async def get_services(request: Request) -> Services:
    # async on purpose: FastAPI runs plain-def dependencies in a thread pool, per request.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key: `Authorization: Bearer sl_...` (create one with `stoplist keys create`)",
)

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def authorize(services: Services, authorization: str | None, scope: str) -> KeyInfo:
    """The key named by an ``Authorization: Bearer`` header, if it grants ``scope``."""
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        metrics.AUTH_FAILURES.labels("401").inc()
        raise Unauthorized("missing bearer API key", headers=_CHALLENGE)
    key = await services.keys.authenticate(credentials.strip())
    if key is None:
        metrics.AUTH_FAILURES.labels("401").inc()
        raise Unauthorized("invalid or revoked API key", headers=_CHALLENGE)
    if not scope_allows(key.scope, scope):
        metrics.AUTH_FAILURES.labels("403").inc()
        raise Forbidden(f"this key has scope {key.scope!r}; this needs {scope!r}")
    return key


def require(scope: str) -> Callable[..., Awaitable[KeyInfo]]:
    async def dependency(
        request: Request,
        services: ServicesDep,
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> KeyInfo:
        return await authorize(services, request.headers.get("authorization"), scope)

    dependency.__name__ = f"require_{scope}"
    return dependency


CheckKey = Annotated[KeyInfo, Depends(require("check"))]
ReadKey = Annotated[KeyInfo, Depends(require("read"))]
WriteKey = Annotated[KeyInfo, Depends(require("write"))]
AdminKey = Annotated[KeyInfo, Depends(require("admin"))]
