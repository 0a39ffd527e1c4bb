"""What every console page shares: the route class (security headers, errors as HTML pages, the
sign-in redirect), the templates, the signed-in viewer and the CSRF check of every form."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import FormData

from app.console.sessions import SessionRecord, SessionStore, SignInThrottle
from app.container import Services
from app.db import DB_ERRORS
from app.errors import AppError, Forbidden
from app.http.deps import ServicesDep
from app.keys import KeyInfo, scope_allows

log = logging.getLogger("stoplist.console")

COOKIE = "stoplist_console"
PRE_COOKIE = "stoplist_console_pre"  # the sign-in form's CSRF token (double submit: no session yet)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}

templates = Environment(
    loader=PackageLoader("app.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _inert(value: object) -> str:
    """Text shown as text: NUL (which no page may carry) becomes U+FFFD; escaping is Jinja's."""
    return "" if value is None else str(value).replace("\x00", "\ufffd")


templates.filters["inert"] = _inert


def static_text(name: str) -> str:
    return files("app.console").joinpath("static", name).read_text(encoding="utf-8")


class SignInRequired(Exception):
    """No live session: the page answers with a redirect to the sign-in form."""


@dataclass(slots=True)
class ConsoleState:
    """What the console keeps per process: the session store and the sign-in throttle."""

    sessions: SessionStore
    throttle: SignInThrottle = field(default_factory=SignInThrottle)
    jobs: dict[str, Any] = field(default_factory=dict)  # running import tasks by job id


def console_state(request: Request, services: Services) -> ConsoleState:
    state: ConsoleState | None = getattr(request.app.state, "console", None)
    if state is None:
        cfg = services.settings
        state = ConsoleState(
            SessionStore(
                services.db,
                idle=timedelta(minutes=cfg.console_idle_minutes),
                absolute=timedelta(hours=cfg.console_max_hours),
            )
        )
        request.app.state.console = state
    return state


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in key of this request and its session."""

    key: KeyInfo
    session: SessionRecord
    token: str

    def can(self, scope: str) -> bool:
        return scope_allows(self.key.scope, scope)

    def require(self, scope: str) -> None:
        if not self.can(scope):
            raise Forbidden(
                f"the key {self.key.name!r} has scope {self.key.scope!r}: this needs {scope!r}"
            )


async def current_viewer(request: Request, services: ServicesDep) -> Viewer:
    token = request.cookies.get(COOKIE, "")
    state = console_state(request, services)
    record = await state.sessions.load(token) if token else None
    key = await services.keys.authenticate_digest(record.key_hash) if record else None
    if record is None or key is None or not scope_allows(key.scope, "read"):
        raise SignInRequired
    return Viewer(key, record, token)


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


def same_origin(request: Request) -> bool:
    """A browser's Origin header, when sent, names this site (a second line behind the token)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


async def checked_form(request: Request, viewer: ViewerDep) -> AsyncIterator[FormData]:
    """The posted form, once its CSRF token matches the session's; 403 otherwise. Its uploaded
    files are closed after the answer."""
    form = await request.form()
    try:
        sent = form.get("csrf")
        if (
            not isinstance(sent, str)
            or not hmac.compare_digest(sent.encode(), viewer.session.csrf.encode())
            or not same_origin(request)
        ):
            raise Forbidden("the form's CSRF token is missing or wrong: reload the page and retry")
        yield form
    finally:
        await form.close()


FormDep = Annotated[FormData, Depends(checked_form)]


def field_text(form: FormData, name: str, *, default: str = "") -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else default


def page(
    request: Request,
    template: str,
    viewer: Viewer | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page of the base layout, with the viewer (for the menu and the forms' CSRF token)."""
    html = templates.get_template(template).render(
        viewer=viewer,
        csrf=viewer.session.csrf if viewer else "",
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def safe_next(value: str | None) -> str:
    """A local path to return to after sign-in (never another site: ``//host`` or ``/\\host``)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    return value


class ConsoleRoute(APIRoute):
    """Every console route: security headers on every answer, a sign-in redirect when there is
    no session, domain errors and an unreachable database as HTML pages with their status."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                nxt = target if request.method == "GET" else "/"
                response = see_other("/signin?next=" + quote(nxt, safe=""))
                response.delete_cookie(COOKIE, path="/")
            except AppError as exc:
                response = _error_page(request, exc.status_code, exc.error, exc.detail)
            except DB_ERRORS as exc:
                log.error(
                    "console: storage failure on %s %s: %s", request.method, request.url.path, exc
                )
                response = _error_page(
                    request, 503, "unavailable", "storage unavailable, retry in a moment"
                )
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return route_handler


def _error_page(request: Request, status: int, error: str, detail: Any) -> HTMLResponse:
    text = (
        detail
        if isinstance(detail, str)
        else ", ".join(f"{k}: {v}" for k, v in dict(detail).items())
        if isinstance(detail, dict)
        else str(detail)
    )
    return page(
        request, "error.html", None, status_code=status, status=status, error=error, detail=text
    )
