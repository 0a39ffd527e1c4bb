"""Find an address: the one-line verdict, its history newest first, the stored raw message and
what ``stoplist explain`` says about it; unsuppress and suppress by hand (audited with the key's
name). Every answer comes from ``SuppressionService`` and ``IntakeStore``, as the API's."""

from __future__ import annotations

import asyncio
import email
import email.policy
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import HTMLResponse

from app.addresses import domain_of
from app.console.web import ConsoleRoute, FormDep, ViewerDep, field_text, page, see_other
from app.errors import Gone, InvalidInput, NotFound
from app.http.deps import ServicesDep
from app.intake import IntakeStore
from app.models import utcnow
from app.suppression import SuppressRequest
from app.suppression.model import list_key
from dsn.explain import explain_message

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

MessageId = Annotated[int, Path(ge=1, le=2**63 - 1)]
RAW_SHOWN = 256 * 1024  # characters of a raw message shown (the rest is cut, and says so)


@router.get("/find")
async def find(
    request: Request, services: ServicesDep, viewer: ViewerDep, q: str = "", done: str = ""
) -> HTMLResponse:
    """The verdict and history of one address, normalised like ``/v1/check`` (with what its
    domain's own entry adds), or of a whole domain (``@example.com`` or ``example.com``)."""
    context: dict[str, Any] = {"q": q, "address": None, "rows": [], "history": [], "error": None}
    text = q.strip()
    if text:
        whole_domain = text.startswith("@") or "@" not in text
        try:
            key = list_key(text, whole_domain=whole_domain)
        except InvalidInput as exc:
            detail = exc.detail
            why = detail.get("why") if isinstance(detail, dict) else str(detail)
            context["error"] = f"Not an address or a domain: {why}"
            return page(request, "find.html", viewer, status_code=422, done="", **context)
        if whole_domain:
            rows = await _rows(services, key)
        else:
            rows = await services.suppressions.rows_with_domain(key)
        context.update(
            address=key,
            whole_domain=whole_domain,
            domain=domain_of(key),
            rows=rows,
            active=[r for r in rows if r["active"]],
            history=await services.suppressions.history(key, limit=200, whole_domain=whole_domain),
        )
    return page(request, "find.html", viewer, done=done, **context)


async def _rows(services: ServicesDep, key: str) -> list[dict[str, Any]]:
    """The entries of a whole domain's own key."""
    try:
        detail = await services.suppressions.get(key, events=0, whole_domain=True)
    except NotFound:
        return []
    rows: list[dict[str, Any]] = detail["suppressions"]
    return rows


def _back(address: str, done: str) -> str:
    return "/find?" + urlencode({"q": address, "done": done})


@router.post("/unsuppress")
async def unsuppress(services: ServicesDep, viewer: ViewerDep, form: FormDep) -> Response:
    """Remove the active suppressions of one scope, or all; complaints need admin + force."""
    viewer.require("write")
    address = field_text(form, "address")
    scope = field_text(form, "scope")
    whole_domain = address.startswith("@")
    await services.suppressions.unsuppress(
        address,
        stream=None if scope in ("", "*") else scope,
        all_scopes=scope in ("", "*"),
        reason=field_text(form, "reason"),
        actor=viewer.key.name,
        may_remove_complaints=form.get("force") == "yes" and viewer.can("admin"),
        whole_domain=whole_domain,
    )
    return see_other(_back(list_key(address, whole_domain=whole_domain), "unsuppressed"))


@router.post("/suppress")
async def suppress(services: ServicesDep, viewer: ViewerDep, form: FormDep) -> Response:
    """Suppress one address, or its whole domain, by hand: globally or for one stream,
    optionally for some days."""
    viewer.require("write")
    days = field_text(form, "days")
    if days and not (days.isascii() and days.isdigit() and 0 < int(days) <= 3650):
        raise InvalidInput(f"days {days!r}: a whole number from 1 to 3650, or empty for ever")
    address, whole_domain = field_text(form, "address"), form.get("target") == "domain"
    if whole_domain and not address.startswith("@"):
        address = domain_of(list_key(address))  # the domain of the address shown
    result = await services.suppressions.suppress(
        SuppressRequest(
            address=address,
            outcome="manual",
            reason=field_text(form, "reason") or "manual",
            source="api",
            stream=field_text(form, "stream") or None,
            expires_at=utcnow() + timedelta(days=int(days)) if days else None,
            actor=viewer.key.name,
            note=field_text(form, "note") or None,
            event_kind="manual_suppress",
            detail={"via": "console"},
            whole_domain=whole_domain,
        )
    )
    return see_other(_back(result.address, "suppressed" if result.changed else "unchanged"))


async def _stored(services: ServicesDep, message_id: int) -> bytes:
    exists, raw = await IntakeStore(services.db).raw(message_id)
    if not exists:
        raise NotFound(f"no stored message {message_id}")
    if raw is None:
        raise Gone(f"message {message_id}: its raw bytes were purged (retention)")
    return raw


def _split_message(raw: bytes) -> tuple[str, str]:
    """The header block and the first text part, as text (never interpreted as HTML)."""
    text = raw.decode("utf-8", errors="replace")
    head, _, _ = text.replace("\r\n", "\n").partition("\n\n")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    body = ""
    try:
        part = msg.get_body(preferencelist=("plain",))
        if part is not None:
            body = str(part.get_content())
    except Exception:  # a malformed part: fall back to the bytes after the header block
        body = text.partition("\n\n")[2]
    return head, body


@router.get("/messages/{message_id}")
async def raw_message(
    request: Request, services: ServicesDep, viewer: ViewerDep, message_id: MessageId
) -> HTMLResponse:
    """Headers and text part of a stored message, and the whole of it, rendered as text."""
    raw = await _stored(services, message_id)
    head, body = await asyncio.to_thread(_split_message, raw)
    whole = raw.decode("utf-8", errors="replace")
    return page(
        request,
        "message.html",
        viewer,
        message_id=message_id,
        head=head[:RAW_SHOWN],
        body=body[:RAW_SHOWN],
        whole=whole[:RAW_SHOWN],
        cut=len(whole) > RAW_SHOWN,
        size=len(raw),
    )


@router.get("/messages/{message_id}/explain")
async def explain(
    request: Request, services: ServicesDep, viewer: ViewerDep, message_id: MessageId
) -> HTMLResponse:
    """What ``stoplist explain`` prints about the stored message, re-read with today's rules."""
    raw = await _stored(services, message_id)
    explanation = await asyncio.to_thread(explain_message, raw)
    return page(request, "explain.html", viewer, message_id=message_id, text=explanation.to_text())
