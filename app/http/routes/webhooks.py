"""Outbound webhooks: subscriptions (admin scope), test ping, replay, and the pull feed (read
scope). Delivery itself runs in the worker (``app.webhooks.worker``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from app.http.deps import AdminKey, ApiRoute, ReadKey, ServicesDep
from app.http.responses import JSONBytes
from app.http.schemas import SINCE_FILTER, STREAM_PATTERN, error_responses
from app.suppression import parse_since
from app.webhooks.outbox import EVENT_TYPES
from app.webhooks.sender import Sender
from app.webhooks.service import WebhookService

router = APIRouter(tags=["webhooks"], route_class=ApiRoute)

_ERRORS = error_responses(401, 403, 404, 422, 503)

URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#@]+(?:[/?#]\S*)?$"
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
SubscriptionId = Annotated[int, Path(ge=1, le=2**31 - 1)]


async def get_webhooks(request: Request, services: ServicesDep) -> WebhookService:
    """One :class:`WebhookService` per app, made on first use from the app's services."""
    found = getattr(request.app.state, "webhooks", None)
    if found is None:
        found = WebhookService(services.db, services.settings)
        request.app.state.webhooks = found
    assert isinstance(found, WebhookService)
    return found


WebhooksDep = Annotated[WebhookService, Depends(get_webhooks)]


class SubscriptionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        max_length=2000,
        pattern=URL_PATTERN,
        description="https:// (http only for allowed networks)",
    )
    events: list[EventType] | None = Field(default=None, description="Omit for every event type")
    stream: str | None = Field(
        default=None,
        pattern=STREAM_PATTERN,
        description="Only events of this stream (and global ones); omit for every stream",
    )
    description: str | None = Field(default=None, max_length=200)


class SubscriptionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Annotated[str, Field(max_length=2000, pattern=URL_PATTERN)] | SkipJsonSchema[None] = None
    events: list[EventType] | None = None
    stream: str | None = Field(default=None, pattern=STREAM_PATTERN)
    description: str | None = Field(default=None, max_length=200)
    enabled: (
        Annotated[bool, Field(description="true re-enables a disabled endpoint")]
        | (SkipJsonSchema[None])
    ) = None
    rotate_secret: bool = Field(
        default=False, description="New secret (shown once); the old one signs beside it for 24 h"
    )


class SubscriptionOut(BaseModel):
    id: int
    url: str
    events: list[str] | None
    stream: str | None
    description: str | None
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime
    secret: str | None = Field(default=None, description="whsec_…: shown only when made")


class SubscriptionList(BaseModel):
    webhooks: list[SubscriptionOut]


class DeadDelivery(BaseModel):
    id: int
    event_id: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


class SubscriptionDetail(SubscriptionOut):
    dead: list[DeadDelivery]


class TestResult(BaseModel):
    ok: bool
    status: int | None
    error: str | None


class ReplayResult(BaseModel):
    queued: int


class FeedEvent(BaseModel):
    id: str = Field(description="The webhook-id the same event is pushed with")
    type: str
    timestamp: datetime
    data: dict[str, Any]
    cursor: int


class FeedPage(BaseModel):
    events: list[FeedEvent]
    next_cursor: int = Field(description="Pass as ?after= to read on")


@router.post("/v1/webhooks", status_code=201, response_model=SubscriptionOut, responses=_ERRORS)
async def create_webhook(
    webhooks: WebhooksDep, _key: AdminKey, body: SubscriptionBody
) -> JSONBytes:
    """Subscribe an endpoint; the answer holds its signing secret, shown only now."""
    sub, secret = await webhooks.create(body.url, body.events, body.stream, body.description)
    return JSONBytes({**sub, "secret": secret}, status_code=201)


@router.get("/v1/webhooks", response_model=SubscriptionList, responses=_ERRORS)
async def list_webhooks(webhooks: WebhooksDep, _key: AdminKey) -> JSONBytes:
    """Every subscription (secrets are never shown again)."""
    return JSONBytes({"webhooks": await webhooks.list_all()})


@router.get("/v1/webhooks/{sub_id}", response_model=SubscriptionDetail, responses=_ERRORS)
async def get_webhook(webhooks: WebhooksDep, _key: AdminKey, sub_id: SubscriptionId) -> JSONBytes:
    """One subscription and its latest dead-lettered deliveries."""
    return JSONBytes(await webhooks.get(sub_id))


@router.patch("/v1/webhooks/{sub_id}", response_model=SubscriptionOut, responses=_ERRORS)
async def patch_webhook(
    webhooks: WebhooksDep, _key: AdminKey, sub_id: SubscriptionId, body: SubscriptionPatch
) -> JSONBytes:
    """Change a subscription, re-enable it, or rotate its secret."""
    changes = body.model_dump(exclude_unset=True)
    sub, secret = await webhooks.update(sub_id, changes)
    return JSONBytes({**sub, "secret": secret})


@router.delete("/v1/webhooks/{sub_id}", status_code=204, responses=_ERRORS)
async def delete_webhook(webhooks: WebhooksDep, _key: AdminKey, sub_id: SubscriptionId) -> Response:
    """Delete a subscription and every delivery queued for it."""
    await webhooks.delete(sub_id)
    return Response(status_code=204)


@router.post("/v1/webhooks/{sub_id}/test", response_model=TestResult, responses=_ERRORS)
async def test_webhook(webhooks: WebhooksDep, _key: AdminKey, sub_id: SubscriptionId) -> JSONBytes:
    """Send a signed ``webhook.test`` event now and say what the endpoint answered."""
    sender = Sender(timeout_s=webhooks.settings.webhook_timeout_s, allowed=webhooks.allowed)
    try:
        attempt = await webhooks.test(sub_id, sender)
    finally:
        await sender.close()
    return JSONBytes({"ok": attempt.ok, "status": attempt.status, "error": attempt.error})


@router.post("/v1/webhooks/{sub_id}/replay", response_model=ReplayResult, responses=_ERRORS)
async def replay_webhook(
    webhooks: WebhooksDep,
    _key: AdminKey,
    sub_id: SubscriptionId,
    since: Annotated[str, Query(max_length=40, description="ISO 8601 time or date"), SINCE_FILTER],
) -> JSONBytes:
    """Queue again every event since ``since`` for this subscription (dead-lettered ones
    included; same ``webhook-id``s, so receivers drop what they already have)."""
    parsed = parse_since(since)
    assert parsed is not None
    return JSONBytes({"queued": await webhooks.replay(sub_id, parsed)})


@router.get("/v1/feed", response_model=FeedPage, responses=_ERRORS)
async def read_feed(
    webhooks: WebhooksDep,
    _key: ReadKey,
    after: Annotated[int, Query(ge=0, le=2**62, description="next_cursor of the last page")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONBytes:
    """The outbound events in commit order, for consumers that cannot receive webhooks."""
    events, cursor = await webhooks.feed(after, limit)
    return JSONBytes({"events": events, "next_cursor": cursor})
