"""Subscriptions (create, list, change, delete, test ping, replay) and the pull feed. Secrets are
shown once, when created or rotated; afterwards only their sealed form is stored
(``app.webhooks.signing``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database
from app.errors import InvalidInput, NotFound
from app.models import WebhookSubscription, utcnow
from app.settings import Settings
from app.streams import GLOBAL_SCOPE, STREAM_RE
from app.webhooks import repository
from app.webhooks.guard import check_target, parse_networks
from app.webhooks.outbox import EVENT_TYPES, SCHEMA_VERSION
from app.webhooks.sender import Attempt, Sender
from app.webhooks.signing import SecretBox, new_secret

ROTATION_GRACE = timedelta(hours=24)  # the previous secret still signs this long
TEST_EVENT = "webhook.test"


def message_id(outbox_id: int) -> str:
    """The ``webhook-id`` of an event: the same for every attempt, replay and feed read."""
    return f"msg_{outbox_id}"


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def event_body(type_: str, created_at: datetime, data: dict[str, Any]) -> bytes:
    """The Standard Webhooks payload ``{"type", "timestamp", "data"}`` of an outbox row."""
    return orjson.dumps({"type": type_, "timestamp": _iso(created_at), "data": data})


def subscription_to_dict(sub: WebhookSubscription) -> dict[str, Any]:
    return {
        "id": sub.id,
        "url": sub.url,
        "events": sub.events,
        "stream": sub.stream,
        "description": sub.description,
        "enabled": sub.enabled,
        "disabled_reason": sub.disabled_reason,
        "failing_since": sub.failing_since,
        "created_at": sub.created_at,
        "updated_at": sub.updated_at,
    }


def _check_filter(events: list[str] | None, stream: str | None) -> None:
    if events is not None:
        unknown = sorted(set(events) - set(EVENT_TYPES))
        if unknown:
            raise InvalidInput(f"unknown event types {unknown}: one of {list(EVENT_TYPES)}")
    if stream is not None and stream != GLOBAL_SCOPE and not STREAM_RE.match(stream):
        raise InvalidInput(f"stream {stream!r} is not a stream name")


class WebhookService:
    """Subscriptions and the feed, on the service's database."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.allowed = parse_networks(settings.webhook_allowed_networks)
        key = settings.webhook_secret_key
        self.box = SecretBox(key.get_secret_value() if key else None)

    async def create(
        self, url: str, events: list[str] | None, stream: str | None, description: str | None
    ) -> tuple[dict[str, Any], str]:
        """A new subscription and its secret (shown only now); 422 for a refused target."""
        _check_filter(events, stream)
        await check_target(url, self.allowed)
        secret = new_secret()
        now = utcnow()
        async with self.db.write() as s:
            sub = WebhookSubscription(
                url=url,
                events=sorted(set(events)) if events is not None else None,
                stream=stream,
                description=description,
                secret="",
                enabled=True,
                created_at=now,
                updated_at=now,
            )
            s.add(sub)
            await s.flush()
            sub.secret = self.box.seal(secret, sub.id)
        return subscription_to_dict(sub), secret

    async def list_all(self) -> list[dict[str, Any]]:
        async with self.db.read() as s:
            subs = (await s.scalars(_all_subscriptions())).all()
        return [subscription_to_dict(sub) for sub in subs]

    async def get(self, sub_id: int, *, with_deliveries: int = 20) -> dict[str, Any]:
        async with self.db.read() as s:
            sub = await _get(s, sub_id)
            dead = await repository.deliveries_of(s, sub_id, ("dead",), with_deliveries)
        return {**subscription_to_dict(sub), "dead": [_delivery_to_dict(d) for d in dead]}

    async def update(
        self, sub_id: int, changes: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        """Change url, events, stream, description or ``enabled`` (re-enabling clears the
        failure record); ``rotate_secret`` makes a new secret, the old one signing beside it for
        ``ROTATION_GRACE``. The new secret is returned once."""
        if "url" in changes:
            if changes["url"] is None:
                raise InvalidInput("url cannot be null")
            await check_target(changes["url"], self.allowed)
        _check_filter(changes.get("events"), changes.get("stream"))
        now = utcnow()
        secret = None
        async with self.db.write() as s:
            sub = await _get(s, sub_id)
            for field in ("url", "events", "stream", "description"):
                if field in changes:
                    setattr(sub, field, changes[field])
            if changes.get("enabled") is True and not sub.enabled:
                sub.enabled, sub.disabled_reason, sub.failing_since = True, None, None
            elif changes.get("enabled") is False and sub.enabled:
                sub.enabled, sub.disabled_reason = False, "disabled by an admin"
            if changes.get("rotate_secret"):
                secret = new_secret()
                sub.previous_secret = sub.secret
                sub.previous_secret_until = now + ROTATION_GRACE
                sub.secret = self.box.seal(secret, sub.id)
            sub.updated_at = now
        return subscription_to_dict(sub), secret

    async def delete(self, sub_id: int) -> None:
        async with self.db.write() as s:
            sub = await _get(s, sub_id)
            await s.delete(sub)

    def secrets_of(
        self, sealed: str, previous: str | None, until: datetime | None, sub_id: int
    ) -> list[str]:
        """The secrets to sign with now: the current one, and the previous one in its grace."""
        found = [self.box.open(sealed, sub_id)]
        if previous and until is not None and until > utcnow():
            found.append(self.box.open(previous, sub_id))
        return found

    async def test(self, sub_id: int, sender: Sender) -> Attempt:
        """Send a signed ``webhook.test`` ping now (not queued, not retried)."""
        async with self.db.read() as s:
            sub = await _get(s, sub_id)
        now = utcnow()
        data = {"schema_version": SCHEMA_VERSION, "subscription_id": sub.id, "at": _iso(now)}
        body = event_body(TEST_EVENT, now, data)
        msg = f"msg_test_{sub.id}_{int(now.timestamp() * 1000)}"
        signing = self.secrets_of(
            sub.secret, sub.previous_secret, sub.previous_secret_until, sub.id
        )
        return await sender.post(sub.url, msg, body, signing)

    async def replay(self, sub_id: int, since: datetime) -> int:
        """Queue again the events since ``since`` for one subscription (dead ones included)."""
        async with self.db.write() as s:
            sub = await _get(s, sub_id)
            flt = repository.Filter(
                sub.id, frozenset(sub.events) if sub.events is not None else None, sub.stream
            )
            return await repository.replay(s, flt, since, utcnow())

    async def feed(self, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Events after position ``after`` in commit order, and the cursor to ask from next."""
        async with self.db.read() as s:
            rows = await repository.feed(s, after, limit)
        events = [
            {
                "id": message_id(r.id),
                "type": r.type,
                "timestamp": _iso(r.created_at),
                "data": r.data,
                "cursor": r.position,
            }
            for r in rows
        ]
        return events, (rows[-1].position if rows else after)

    async def stats(self) -> dict[str, Any]:
        async with self.db.read() as s:
            return await repository.stats(s)


def _all_subscriptions() -> Select[WebhookSubscription]:
    return select(WebhookSubscription).order_by(WebhookSubscription.id)


async def _get(s: AsyncSession, sub_id: int) -> WebhookSubscription:
    sub = await s.get(WebhookSubscription, sub_id)
    if sub is None:
        raise NotFound(f"no webhook subscription {sub_id}")
    assert isinstance(sub, WebhookSubscription)
    return sub


def _delivery_to_dict(d: Any) -> dict[str, Any]:
    return {
        "id": d.id,
        "event_id": message_id(d.outbox_id),
        "state": d.state,
        "attempts": d.attempts,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": d.created_at,
        "finished_at": d.finished_at,
    }
