"""Webhook intake: authenticate a request the way its sender can, parse it, record its events.

Each sender proves itself its own way (events/signatures.py does the cryptography):

- ``ses``: the SNS signature, and the topic must be one of ``STOPLIST_SES_TOPIC_ARNS`` (anyone can
  make SNS sign messages from a topic of their own); the certificate is fetched only from an SNS
  host, once per URL;
- ``sendgrid``: the signed Event Webhook's ECDSA signature (``STOPLIST_SENDGRID_PUBLIC_KEY``);
- ``mailgun``: the HMAC of timestamp + token (``STOPLIST_MAILGUN_SIGNING_KEY``), a five-minute
  window, and a token seen before is refused (claimed in the transaction that records the events);
- ``postmark``: HTTP Basic credentials in the webhook URL (``STOPLIST_POSTMARK_BASIC_AUTH``);
- ``kumomta``: an API key only.

Any of them may instead send ``Authorization: Bearer <key>`` with the ``events`` scope (checked
by the caller, which passes ``keyed=True``). A request that fails its check records nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

import httpx

from app.container import Services
from app.errors import Unauthorized, Unavailable
from app.events.store import EventStore, RecordResult
from events import WEBHOOK_PARSERS, Batch, EventError
from events.signatures import (
    MAILGUN_MAX_AGE,
    CertificateCache,
    SignatureError,
    check_basic_auth,
    check_sns_subscribe_url,
    load_sendgrid_public_key,
    verify_mailgun,
    verify_sendgrid,
    verify_sns,
)

__all__ = ["Receipt", "WebhookIntake", "WebhookSource"]

log = logging.getLogger("app.events")

SENDGRID_SIGNATURE = "x-twilio-email-event-webhook-signature"
SENDGRID_TIMESTAMP = "x-twilio-email-event-webhook-timestamp"
CERTIFICATE_TIMEOUT_S = 5.0


class WebhookSource(StrEnum):
    """The senders ``POST /v1/events/{source}`` takes."""

    KUMOMTA = "kumomta"
    SES = "ses"
    SENDGRID = "sendgrid"
    POSTMARK = "postmark"
    MAILGUN = "mailgun"


@dataclass(slots=True)
class Receipt:
    """What one request did: its id (stable: the same body gets the same id), the counts, the
    records that could not be read, and an SNS confirmation that arrived."""

    request_id: str
    result: RecordResult
    errors: list[EventError] = field(default_factory=list)
    subscription: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "new": self.result.new,
            "duplicate": self.result.duplicate,
            "suppressed": self.result.suppressed,
            "errors": [
                {"location": e.location, "reason": e.reason, "excerpt": e.to_json()["excerpt"]}
                for e in self.errors
            ],
            "subscription": self.subscription,
        }


def _fetch_certificate(url: str) -> bytes:
    """GET an SNS signing certificate (the URL was checked against the SNS host pattern)."""
    response = httpx.get(url, timeout=CERTIFICATE_TIMEOUT_S, follow_redirects=False)
    response.raise_for_status()
    return response.content


class WebhookIntake:
    """One per process: holds the SNS certificate cache. ``fetch`` (``url -> PEM``) is the
    certificate download; tests give their own."""

    def __init__(self, fetch: Callable[[str], bytes] | None = None) -> None:
        self.certificates = CertificateCache(fetch or _fetch_certificate)

    async def receive(
        self,
        services: Services,
        source: WebhookSource,
        body: bytes,
        headers: Mapping[str, str],
        *,
        keyed: bool,
    ) -> Receipt:
        """Check, parse and record one request; raises ``Unauthorized`` (nothing recorded) when
        the sender's proof fails and the request carried no ``events`` key."""
        request_id = f"{source.value}-{hashlib.sha256(body).hexdigest()[:16]}"
        token = None if keyed else await self._authenticate(services, source, body, headers)
        batch = WEBHOOK_PARSERS[source.value](body, request_id)
        store = EventStore(services)
        subscription = await _subscription(store, batch, body, request_id)
        result = await store.record(batch, token=token)
        log.info(
            "events %s (request %s): %d new, %d duplicate, %d unreadable, %d suppressed",
            source.value,
            request_id,
            result.new,
            result.duplicate,
            result.errors,
            result.suppressed,
        )
        for error in batch.errors:
            log.warning(
                "events %s: unreadable record at %s: %s", source, error.location, error.reason
            )
        return Receipt(request_id, result, list(batch.errors), subscription)

    async def _authenticate(
        self, services: Services, source: WebhookSource, body: bytes, headers: Mapping[str, str]
    ) -> tuple[str, str, timedelta] | None:
        """Check the sender's own proof; the one-time token to claim (Mailgun), if any."""
        settings = services.settings
        try:
            if source == WebhookSource.SES:
                await self._check_sns(body, settings.ses_topic_arns)
            elif source == WebhookSource.SENDGRID:
                if settings.sendgrid_public_key is None:
                    raise SignatureError("STOPLIST_SENDGRID_PUBLIC_KEY is not set")
                verify_sendgrid(
                    load_sendgrid_public_key(settings.sendgrid_public_key),
                    body,
                    headers.get(SENDGRID_SIGNATURE),
                    headers.get(SENDGRID_TIMESTAMP),
                )
            elif source == WebhookSource.MAILGUN:
                return _check_mailgun(body, settings.mailgun_signing_key)
            elif source == WebhookSource.POSTMARK:
                _check_postmark(headers.get("authorization"), settings.postmark_basic_auth)
            else:
                raise SignatureError(f"{source.value} sends an API key (scope events)")
        except SignatureError as exc:
            log.warning("events %s: refused: %s", source.value, exc)
            challenge = 'Basic realm="stoplist"' if source == WebhookSource.POSTMARK else "Bearer"
            raise Unauthorized(
                f"{source.value}: {exc}", headers={"WWW-Authenticate": challenge}
            ) from None
        return None

    async def _check_sns(self, body: bytes, topics: list[str]) -> None:
        message = _json_object(body)
        topic = message.get("TopicArn")
        if not topics:
            raise SignatureError("STOPLIST_SES_TOPIC_ARNS is not set")
        if topic not in topics:
            raise SignatureError(f"topic {str(topic)[:200]!r} is not in STOPLIST_SES_TOPIC_ARNS")
        try:
            # The first message of a certificate fetches it: blocking I/O, off the event loop.
            await asyncio.to_thread(verify_sns, message, self.certificates)
        except httpx.HTTPError as exc:
            raise Unavailable(f"the SNS signing certificate could not be fetched: {exc}") from None


def _check_mailgun(body: bytes, key: Any) -> tuple[str, str, timedelta]:
    if key is None:
        raise SignatureError("STOPLIST_MAILGUN_SIGNING_KEY is not set")
    signature = _json_object(body).get("signature")
    if not isinstance(signature, dict):
        raise SignatureError("no Mailgun signature object")
    timestamp, token, digest = (
        _text(signature.get(k)) for k in ("timestamp", "token", "signature")
    )
    verify_mailgun(key.get_secret_value(), timestamp, token, digest)
    assert token is not None
    return ("mailgun", token, timedelta(seconds=MAILGUN_MAX_AGE))


def _check_postmark(authorization: str | None, credentials: Any) -> None:
    if credentials is None:
        raise SignatureError("STOPLIST_POSTMARK_BASIC_AUTH is not set")
    user, _, password = credentials.get_secret_value().partition(":")
    if not check_basic_auth(authorization, user, password):
        raise SignatureError("wrong or missing basic credentials")


async def _subscription(
    store: EventStore, batch: Batch, body: bytes, request_id: str
) -> str | None:
    """Keep a (signed) SNS (un)subscription confirmation for an operator to confirm."""
    if batch.subscribe_url is None:
        return None
    kind = str(json.loads(body).get("Type", "SubscriptionConfirmation"))
    try:
        check_sns_subscribe_url(batch.subscribe_url)
    except SignatureError as exc:
        raise Unauthorized(str(exc)) from None
    topic = batch.topic_arn or ""
    fresh = await store.record_subscription(kind, topic, batch.subscribe_url)
    log.info(
        "SNS %s for topic %s (request %s%s): confirm with "
        "`stoplist events confirm-ses`; SubscribeURL %s",
        kind,
        topic,
        request_id,
        "" if fresh else ", seen before",
        batch.subscribe_url,
    )
    return topic


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SignatureError("the body is not JSON") from exc
    if not isinstance(value, dict):
        raise SignatureError("the body is not a JSON object")
    return value


def _text(value: object) -> str | None:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    return None
