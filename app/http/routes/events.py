"""Delivery-event webhooks: ``POST /v1/events/{source}`` for KumoMTA's log hook and the ESPs.

Each sender authenticates its own way (``app.events.webhooks``) or with an API key of scope
``events``; the answer is 200 only once the request's events are committed (503 when the
database is away, so the sender retries; a replay is recorded once).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from app.events import WebhookIntake, WebhookSource
from app.http.deps import ApiRoute, ServicesDep, authorize
from app.http.responses import JSONBytes
from app.http.schemas import error_responses

router = APIRouter(prefix="/v1/events", tags=["events"], route_class=ApiRoute)


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
        401, 403, 413, 422, 503, e401="The sender's signature or credentials do not verify"
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
    body = await request.body()
    receipt = await webhook_intake(request).receive(
        services, source, body, request.headers, keyed=keyed
    )
    return JSONBytes(receipt.to_json())
