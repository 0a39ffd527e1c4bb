"""Request dependencies: the services of the running app (built by ``app.container``) and API-key authentication; the route
class every router uses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from app import metrics
from app.container import Services
from app.errors import Forbidden, InvalidInput, Unauthorized
from app.http.responses import JSONBytes
from app.keys import KeyInfo, scope_allows


async def get_services(request: Request) -> Services:
    # async on purpose: FastAPI runs plain-def dependencies in a thread pool, per request.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")


class ApiRoute(APIRoute):
    """Every route of the API, answering two framework errors the way the OpenAPI document says
    (both found by schemathesis):

    * a body FastAPI cannot decode (not UTF-8, not JSON) is invalid input like any other,
      ``422 {"error", "detail"}``, not FastAPI's bare ``400 {"detail"}``;
    * a method the path does not support is ``405`` with an ``Allow`` header naming every method
      of the path (RFC 9110 §15.5.6), not only those of the first route that matched it (``GET
      /v1/check`` answered ``Allow: GET`` although ``POST`` is there too).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                if exc.status_code != 400:
                    raise
                raise InvalidInput(f"the body could not be read: {exc.detail}") from None

        return route_handler

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().handle(scope, receive, send)
        except HTTPException as exc:
            if exc.status_code != 405:
                raise
            allowed = _allowed_methods(scope)
            await JSONBytes(
                {
                    "error": "method_not_allowed",
                    "detail": f"{scope['method']} is not allowed here: {', '.join(allowed)}",
                },
                status_code=405,
                headers={"Allow": ", ".join(allowed)},
            )(scope, receive, send)


def _allowed_methods(scope: Scope) -> list[str]:
    """The methods some route of the app serves for this path (a fresh scope per probe: route
    matching keeps state in the scope)."""
    router = scope["router"]
    allowed = []
    for method in _METHODS:
        probe: Scope = {
            "type": "http",
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "method": method,
        }
        if any(route.matches(probe)[0] == Match.FULL for route in router.routes):
            allowed.append(method)
    return allowed


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
