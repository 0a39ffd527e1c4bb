"""Mailgun webhooks: ``{"signature": {...}, "event-data": {...}}``, one event per request.

From Mailgun's docs ("Webhooks", "Events: event types"): ``event-data`` has ``event``, ``id``
(unique: our dedupe key), ``timestamp`` (Unix seconds, fractional), ``recipient``, ``envelope``
(``sender``, ``sending-ip``), ``message.headers`` (``message-id``), ``tags``, ``user-variables``,
and for deliveries and failures ``delivery-status`` (``code``, ``enhanced-code``, ``message``,
``description``, ``mx-host``) plus, for failures, ``severity`` (permanent / temporary) and
``reason`` (``bounce``, ``generic``, ``espblock``, ``old``, ``suppress-bounce``, ...).

Mapping: ``delivered`` -> delivered; ``failed`` temporary -> deferred (Mailgun retries);
``failed`` permanent -> bounce, except reason ``old`` (gave up after retries) -> expired and the
``suppress-*`` reasons (Mailgun did not send: its suppression list) -> dropped; ``complained`` ->
complaint; ``unsubscribed`` -> unsubscribe. ``accepted``, ``rejected`` (our API call refused),
``opened``, ``clicked`` and ``stored`` are skipped. The signature: events/signatures.py.
"""

from __future__ import annotations

import json
from typing import Any, Final

from events.classify import make_event
from events.fields import address, obj, parse_reply, parse_time, status_of, text, to_int
from events.model import Batch, Event, EventError, EventKind, Source, dedupe_id

__all__ = ["parse_mailgun", "parse_mailgun_event"]

_SKIPPED: Final = frozenset(
    {"accepted", "rejected", "opened", "clicked", "stored", "list_member_uploaded"}
)


def parse_mailgun(
    body: bytes | str, request_id: str = "-", *, stream_variable: str = "stream"
) -> Batch:
    """One webhook request (``event-data`` inside), or a bare event object."""
    batch = Batch()
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        batch.errors.append(EventError(Source.MAILGUN, request_id, f"bad JSON: {exc}"))
        return batch
    if not isinstance(data, dict):
        batch.errors.append(EventError(Source.MAILGUN, request_id, "not a JSON object"))
        return batch
    event_data = data.get("event-data", data)
    result = parse_mailgun_event(event_data, request_id, stream_variable=stream_variable)
    if isinstance(result, Event):
        batch.events.append(result)
    elif result is not None:
        batch.errors.append(result)
    return batch


def parse_mailgun_event(
    data: Any, location: str, *, stream_variable: str = "stream"
) -> Event | EventError | None:
    """One ``event-data`` object: its event, an error, or None for an event we skip."""
    if not isinstance(data, dict):
        return EventError(Source.MAILGUN, location, "event-data must be a JSON object")
    name = text(data.get("event"))
    if name is None:
        return EventError(Source.MAILGUN, location, "no event name")
    name = name.lower()
    if name in _SKIPPED:
        return None
    severity = (text(data.get("severity")) or "").lower()
    reason = (text(data.get("reason")) or "").lower()
    category: str | None = None
    if name == "delivered":
        kind = EventKind.DELIVERED
    elif name == "failed":
        category = f"{severity or 'unknown'}/{reason or 'unknown'}"
        if severity == "temporary":
            kind = EventKind.DEFERRED
        elif reason.startswith("suppress-"):
            kind = EventKind.DROPPED
        elif reason == "old":
            kind = EventKind.EXPIRED
        else:
            kind = EventKind.BOUNCE
    elif name == "complained":
        kind = EventKind.COMPLAINT
    elif name == "unsubscribed":
        kind = EventKind.UNSUBSCRIBE
    else:
        return EventError(Source.MAILGUN, location, f"unknown event {name!r}")
    recipient = address(data.get("recipient"))
    if recipient is None:
        return EventError(Source.MAILGUN, location, "no valid recipient")
    status = obj(data.get("delivery-status"))
    diagnostic = text(status.get("message")) or text(status.get("description"))
    code = to_int(status.get("code"))
    reply_code, reply_status = parse_reply(diagnostic)
    envelope = obj(data.get("envelope"))
    headers = obj(obj(data.get("message")).get("headers"))
    variables = obj(data.get("user-variables"))
    return make_event(
        Source.MAILGUN,
        kind,
        recipient=recipient,
        dedupe=dedupe_id(Source.MAILGUN, data.get("id"), recipient)
        if text(data.get("id"))
        else dedupe_id(Source.MAILGUN, name, recipient, data.get("timestamp")),
        location=location,
        sender=address(envelope.get("sender")),
        time=parse_time(data.get("timestamp")),
        # Mailgun puts 0 or 498/605-style codes of its own where no SMTP reply was had.
        reply_code=code if code is not None and 200 <= code <= 599 else reply_code,
        status=status_of(status.get("enhanced-code")) or reply_status,
        diagnostic=diagnostic if kind is not EventKind.DELIVERED else None,
        remote_mta=text(status.get("mx-host")),
        vendor_category=category,
        transient=severity == "temporary",
        stream=text(variables.get(stream_variable)),
        ip=text(envelope.get("sending-ip")),
        message_id=text(headers.get("message-id")),
    )
