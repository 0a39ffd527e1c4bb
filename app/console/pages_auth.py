"""Sign in (an API key exchanged for a server-side session), sign out, and the stylesheet."""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from app import metrics
from app.console.web import (
    COOKIE,
    PRE_COOKIE,
    ConsoleRoute,
    FormDep,
    ViewerDep,
    console_state,
    field_text,
    page,
    safe_next,
    see_other,
    static_text,
)
from app.http.deps import ServicesDep
from app.keys import hash_key, scope_allows

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

_CSS = static_text("console.css")


@router.get("/assets/console.css")
async def stylesheet() -> Response:
    return Response(_CSS, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _signin_form(
    request: Request, *, error: str | None = None, status: int = 200, nxt: str = "/"
) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = page(
        request, "signin.html", None, status_code=status, error=error, pre=token, next=nxt
    )
    response.set_cookie(
        PRE_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/signin",
        max_age=3600,
    )
    return response


@router.get("/signin")
async def signin_form(request: Request, next: str | None = None) -> HTMLResponse:
    return _signin_form(request, nxt=safe_next(next))


@router.post("/signin")
async def signin(request: Request, services: ServicesDep) -> Response:
    """Exchange a key (read scope or more) for a session; failures from one client slow down."""
    async with request.form() as form:
        nxt = safe_next(field_text(form, "next"))
        sent, presented = field_text(form, "csrf"), field_text(form, "key")
    pre = request.cookies.get(PRE_COOKIE, "")
    if not pre or not hmac.compare_digest(pre.encode(), sent.encode()):
        return _signin_form(request, error="The form expired: sign in again.", status=403, nxt=nxt)
    state = console_state(request, services)
    client = _client(request)
    wait = state.throttle.wait_s(client)
    if wait > 0:
        response = _signin_form(
            request,
            error=f"Too many failed sign-ins: wait {wait:.0f} s and try again.",
            status=429,
            nxt=nxt,
        )
        response.headers["Retry-After"] = str(max(1, round(wait)))
        return response
    key = await services.keys.authenticate(presented)
    if key is None or not scope_allows(key.scope, "read"):
        state.throttle.failed(client)
        metrics.AUTH_FAILURES.labels("401").inc()
        why = "This key cannot open the console (it needs the read scope or more)."
        if key is None:
            why = "Unknown or revoked key."
        return _signin_form(request, error=why, status=401, nxt=nxt)
    state.throttle.succeeded(client)
    token, _ = await state.sessions.create(hash_key(presented))
    signed_in = see_other(nxt)
    signed_in.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
        max_age=int(services.settings.console_max_hours * 3600),
    )
    signed_in.delete_cookie(PRE_COOKIE, path="/signin")
    return signed_in


@router.post("/signout")
async def signout(
    request: Request, services: ServicesDep, viewer: ViewerDep, _form: FormDep
) -> Response:
    await console_state(request, services).sessions.end(viewer.token)
    response = see_other("/signin")
    response.delete_cookie(COOKIE, path="/")
    return response
