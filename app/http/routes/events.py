"""Delivery events: ``POST /v1/events/{source}`` for KumoMTA's log hook and the ESPs, the
unreadable records kept (``GET /v1/events/errors``) and why a stored event decided what it did
(``GET /v1/events/delivery/{ref}/explanation``).

Each sender authenticates its own way (``app.events.webhooks``) or with an API key of scope
``events``; the answer is 200 only once the request's events are committed (503 when the
database is away, so the sender retries; a replay is recorded once). Bodies have a limit of their
own, ``STOPLIST_EVENTS_MAX_BODY_BYTES`` (a SendGrid batch may be several MiB), so this prefix is
exempt from the API's general one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from app.errors import AppError, NotFound
from app.events import EventStore, WebhookIntake, WebhookSource
from app.http.deps import ApiRoute, ReadKey, ServicesDep, authorize
from app.http.responses import JSONBytes
from app.http.schemas import SinceQuery, error_responses
from app.suppression import parse_since
from events import Source

EVENTS_PATH = "/v1/events/"
router = APIRouter(prefix="/v1/events", tags=["events"], route_class=ApiRoute)


class BodyTooLarge(AppError):
    status_code = 413
    error = "too_large"


class EventErrorOut(BaseModel):
    location: str = Field(description="request-id#index of the record")
    reason: str
    excerpt: str


class EventsReceipt(BaseModel):
    request_id: str = Field(description="Stable per body: a replayed request has the same id")
    new: int = Field(description="Events recorded and applied now")
    duplicate: int = Field(description="Events recorded before (not applied again)")
    suppressed: int = Field(description="Suppressions the new events wrote")
    errors: list[EventErrorOut] = Field(description="Records that could not be read (kept)")
    subscription: str | None = Field(
        description="Topic of an SNS subscription confirmation kept for `stoplist events "
        "confirm-ses`"
    )


def webhook_intake(request: Request) -> WebhookIntake:
    """The app's intake (one SNS certificate cache per process), made on first use."""
    intake: WebhookIntake | None = getattr(request.app.state, "event_intake", None)
    if intake is None:
        intake = request.app.state.event_intake = WebhookIntake()
    return intake


@router.post(
    "/{source}",
    response_model=EventsReceipt,
    responses=error_responses(
        401,
        403,
        413,
        422,
        503,
        e401="The sender's signature or credentials do not verify",
        e413="Body over STOPLIST_EVENTS_MAX_BODY_BYTES (default 10 MiB): nothing recorded",
    ),
    openapi_extra={
        "security": [{"HTTPBearer": []}, {}],
        "requestBody": {
            "required": True,
            "description": "The sender's own webhook body (JSON), unchanged",
            "content": {"application/json": {"schema": {}}},
        },
    },
)
async def receive_events(
    request: Request,
    services: ServicesDep,
    source: Annotated[WebhookSource, Path(description="Who sends the events")],
) -> JSONBytes:
    """Record the events of one webhook request (SES via SNS, SendGrid, Postmark, Mailgun) or
    KumoMTA log hook batch, and apply them like bounces and complaints. Authenticated by the
    sender's signature (SES, SendGrid, Mailgun), HTTP Basic credentials (Postmark), or
    `Authorization: Bearer <key>` with scope `events` (any sender; KumoMTA always)."""
    authorization = request.headers.get("authorization") or ""
    keyed = authorization[:7].lower() == "bearer "
    if keyed:
        await authorize(services, authorization, "events")
    body = await _read_body(request, services.settings.events_max_body_bytes)
    receipt = await webhook_intake(request).receive(
        services, source, body, request.headers, keyed=keyed
    )
    return JSONBytes(receipt.to_json())


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused (413, nothing recorded) past ``limit`` bytes, declared or not."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body over {limit} bytes")
    chunks: list[bytes] = []
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge(f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class KeptErrorOut(BaseModel):
    id: int
    received_at: datetime
    source: str
    location: str = Field(description="file:line of a log, or request-id#index of a webhook")
    reason: str = Field(description="Why the record could not be read")
    excerpt: str = Field(description="The start of the record as it arrived")


class KeptErrors(BaseModel):
    items: list[KeptErrorOut]


@router.get("/errors", response_model=KeptErrors, responses=error_responses(401, 403, 422, 503))
async def kept_errors(
    services: ServicesDep,
    _key: ReadKey,
    source: Annotated[Source | None, Query(description="Only this source's records")] = None,
    since: SinceQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONBytes:
    """Records of logs and webhooks that could not be read, newest first: where each was (file
    and line, or request id and index) and why it was refused. They were kept while the rest of
    their file or request was recorded (``stoplist events errors``)."""
    found = await EventStore(services).kept_errors(
        source=source.value if source else None, since=parse_since(since), limit=limit
    )
    return JSONBytes({"items": [e.to_json() for e in found]})


class DeliveryEventExplanation(BaseModel):
    """``stoplist events explain`` (see dsn/explain.py, ``explain_delivery_event``)."""

    event: dict[str, Any] = Field(description="The stored event: source, kind, where, when")
    why: str = Field(description="What the event's kind lets it decide")
    vendor: dict[str, Any] = Field(description="The sender's own category and its meaning to us")
    decision: dict[str, Any] = Field(description="Our outcome, reason and rule id")
    disagreement: str | None = Field(description="Where the vendor and our rule differ")
    signals: dict[str, Any] = Field(description="The reply, status, diagnostic and remote MTA")
    rule: dict[str, Any] | None = Field(description="The deciding rule: file, source, examples")


@router.get(
    "/delivery/{ref}/explanation",
    response_model=DeliveryEventExplanation,
    responses=error_responses(401, 403, 404, 422, 503),
)
async def delivery_event_explanation(
    services: ServicesDep,
    _key: ReadKey,
    ref: Annotated[
        str,
        Path(
            pattern=r"^[0-9a-f]{1,64}$",
            description="The event's id, or its dedupe id (a history event's `delivery_event`)",
        ),
    ],
) -> JSONBytes:
    """Why a stored delivery event decided what it did: the vendor's category and what it means
    to us, our rule with its source and examples, where the two disagree, the reply, and where
    the event was read (file:line or request#index)."""
    explanation = await EventStore(services).explanation(ref)
    if explanation is None:
        raise NotFound(f"no stored delivery event {ref}")
    return JSONBytes(explanation)
