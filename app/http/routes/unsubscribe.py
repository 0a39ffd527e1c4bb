"""One-click unsubscribe (RFC 8058) and its confirmation page. No API key: the signed token is the
authority (``docs/signed-return-paths.md``).

* ``POST /v1/unsubscribe/{token}`` unsubscribes. Mailbox providers POST
  ``List-Unsubscribe=One-Click`` (RFC 8058 §3) and get JSON; a browser submitting the
  confirmation form (``Accept: text/html``) gets a page.
* ``GET /v1/unsubscribe/{token}`` only shows a page with a button that POSTs: mail scanners and
  link previewers fetch every URL in a message, so a GET must never unsubscribe (RFC 8058 §1).

A token that does not verify changes nothing: 400 malformed, 404 unknown/forged, 410 expired.
"""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path
from pydantic import BaseModel, Field
from starlette.responses import HTMLResponse

from app.errors import AppError
from app.feedback import preview_unsubscribe_token, unsubscribe_with_token
from app.http.deps import ApiRoute, ServicesDep
from app.http.responses import JSONBytes
from app.http.schemas import ErrorBody, error_responses

router = APIRouter(prefix="/v1/unsubscribe", tags=["unsubscribe"], route_class=ApiRoute)


class UnsubscribeResponse(BaseModel):
    unsubscribed: bool
    address: str
    scope: str = Field(description="The stream unsubscribed from, or global")
    already: bool = Field(description="It was already in place: nothing was written")


TokenPath = Annotated[
    str,
    Path(
        max_length=700,
        description="The token of the List-Unsubscribe URL",
        # What the signer can ever have minted (app.signing); anything else is 400.
        json_schema_extra={"pattern": "^[A-Za-z0-9_-]{16,700}$"},
    ),
]
_HTML = {"text/html": {"schema": {"type": "string"}}}
_TOKEN_ERRORS = {
    400: "Not a token (a link cut short or mangled)",
    404: "Unknown, altered or forged token; or unsubscribe links are not enabled",
    410: "Expired token",
}
# The page answers token errors as pages; the one-click POST in JSON, or as a page to a browser
# (Accept: text/html). A path over 700 characters is 422 JSON either way.
_PAGE_ERRORS: dict[int | str, dict[str, Any]] = {
    **{code: {"description": text, "content": _HTML} for code, text in _TOKEN_ERRORS.items()},
    422: {
        "description": "Token longer than 700 characters",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    },
}
_POST_ERRORS: dict[int | str, dict[str, Any]] = {
    **{
        code: {"model": ErrorBody, "description": text, "content": _HTML}
        for code, text in _TOKEN_ERRORS.items()
    },
    **error_responses(422, 503, e422="Token longer than 700 characters"),
}
# Pages that must not be cached, indexed or leak the token in a Referer.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


@router.get("/{token}", response_class=HTMLResponse, responses=_PAGE_ERRORS)
async def unsubscribe_page(services: ServicesDep, token: TokenPath) -> HTMLResponse:
    """A confirmation page whose button POSTs to this URL. Changes nothing by itself."""
    try:
        ref = await preview_unsubscribe_token(services, token)
    except AppError as exc:
        return _error_page(exc)
    what = f"<b>{html.escape(_mask(ref.recipient))}</b>"
    stream = ref.stream or services.settings.unsubscribe_default_stream
    scope = "all mail" if stream == "global" else f"{html.escape(stream)} mail"
    body = (
        f"<p>Stop sending {scope} to {what}?</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return _page("Unsubscribe", body, 200)


@router.post(
    "/{token}",
    response_model=UnsubscribeResponse,
    responses={200: {"content": _HTML}, **_POST_ERRORS},
)
async def unsubscribe(
    services: ServicesDep,
    token: TokenPath,
    accept: Annotated[str | None, Header()] = None,
) -> Any:
    """Unsubscribe the token's recipient from the token's stream. Idempotent."""
    wants_html = "text/html" in (accept or "")
    try:
        result = await unsubscribe_with_token(services, token, via="one_click")
    except AppError as exc:
        if wants_html:
            return _error_page(exc)
        raise
    if wants_html:
        scope = "all mail" if result.scope == "global" else f"{html.escape(result.scope)} mail"
        return _page(
            "Unsubscribed",
            f"<p>Done: no more {scope} to <b>{html.escape(_mask(result.address))}</b>.</p>",
            200,
        )
    return JSONBytes(
        {
            "unsubscribed": True,
            "address": result.address,
            "scope": result.scope,
            "already": result.already,
        }
    )


def _mask(address: str) -> str:
    # The page is reachable by anyone holding the link (a forwarded mail): do not spell it out.
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}"


def _error_page(exc: AppError) -> HTMLResponse:
    detail = exc.detail.get("message") if isinstance(exc.detail, dict) else str(exc.detail)
    return _page("Unsubscribe", f"<p>{html.escape(str(detail))}</p>", exc.status_code)


def _page(title: str, body: str, status: int) -> HTMLResponse:
    doc = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:32em;margin:4em auto;padding:0 1em}"
        "button{font-size:1.1em;padding:.5em 1.5em}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(doc, status_code=status, headers=_PAGE_HEADERS)
