"""SendGrid Event Webhook: a JSON array of events per request.

From Twilio SendGrid's docs ("Event Webhook reference"): every event has ``email``, ``timestamp``
(Unix seconds), ``event``, ``sg_event_id`` (unique per event: our dedupe key) and
``sg_message_id``; delivery events add ``smtp-id``, ``ip``, ``category``, ``asm_group_id``,
``response`` (delivered), ``reason`` and ``status`` (bounce, deferred, dropped; ``status`` may be
missing), ``type`` (bounce: ``bounce`` or ``blocked``) and ``bounce_classification``.

Mapping: ``delivered`` -> delivered, ``bounce`` -> bounce (type kept as the vendor category, or the
newer ``bounce_classification`` where given), ``deferred`` -> deferred, ``dropped`` -> dropped
(SendGrid did not send: its own suppression list or an invalid message), ``spamreport`` ->
complaint, ``unsubscribe`` -> unsubscribe (all mail), ``group_unsubscribe`` -> unsubscribe from the
stream named by ``asm_group_id``. ``processed``, ``open``, ``click`` and ``group_resubscribe``
are skipped.
"""

from __future__ import annotations

import json
from typing import Any, Final

from events.classify import make_event
from events.fields import address, parse_reply, parse_time, status_of, text
from events.model import Batch, Event, EventError, EventKind, Source, dedupe_id

__all__ = ["parse_sendgrid"]

_KINDS: Final[dict[str, EventKind]] = {
    "delivered": EventKind.DELIVERED,
    "bounce": EventKind.BOUNCE,
    "deferred": EventKind.DEFERRED,
    "dropped": EventKind.DROPPED,
    "spamreport": EventKind.COMPLAINT,
    "unsubscribe": EventKind.UNSUBSCRIBE,
    "group_unsubscribe": EventKind.UNSUBSCRIBE,
}
_SKIPPED: Final = frozenset({"processed", "open", "click", "group_resubscribe"})


def parse_sendgrid(body: bytes | str, request_id: str = "-") -> Batch:
    """One webhook request. Duplicate ``sg_event_id``s within it are recorded once."""
    batch = Batch()
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        batch.errors.append(EventError(Source.SENDGRID, request_id, f"bad JSON: {exc}"))
        return batch
    if not isinstance(data, list):
        batch.errors.append(EventError(Source.SENDGRID, request_id, "not a JSON array"))
        return batch
    seen: set[str] = set()
    for index, item in enumerate(data):
        result = _event(item, f"{request_id}#{index}")
        if result is None:
            continue
        if isinstance(result, Event):
            if result.dedupe_id in seen:
                continue
            seen.add(result.dedupe_id)
            batch.events.append(result)
        else:
            batch.errors.append(result)
    return batch


def _event(item: Any, location: str) -> Event | EventError | None:
    if not isinstance(item, dict):
        return EventError(Source.SENDGRID, location, "an event must be a JSON object")
    name = text(item.get("event"))
    if name is None:
        return EventError(Source.SENDGRID, location, "no event name", _excerpt(item))
    if name in _SKIPPED:
        return None
    kind = _KINDS.get(name)
    if kind is None:
        return EventError(Source.SENDGRID, location, f"unknown event {name!r}", _excerpt(item))
    recipient = address(item.get("email"))
    if recipient is None:
        return EventError(Source.SENDGRID, location, "no valid email", _excerpt(item))
    reason = text(item.get("reason")) or text(item.get("response"))
    reply_code, reply_status = parse_reply(reason)
    event_id = text(item.get("sg_event_id"))
    category: str | None = None
    if kind is EventKind.BOUNCE:
        category = text(item.get("bounce_classification")) or text(item.get("type")) or "bounce"
    elif kind is EventKind.DROPPED:
        category = text(item.get("reason"))
    stream = None
    if name == "group_unsubscribe" or item.get("asm_group_id") is not None:
        group = text(item.get("asm_group_id"))
        stream = f"asm-group-{group}" if group else None
    return make_event(
        Source.SENDGRID,
        kind,
        recipient=recipient,
        dedupe=dedupe_id(Source.SENDGRID, event_id)
        if event_id
        else dedupe_id(
            Source.SENDGRID, name, recipient, item.get("sg_message_id"), item.get("timestamp")
        ),
        location=location,
        time=parse_time(item.get("timestamp")),
        reply_code=reply_code,
        status=status_of(item.get("status")) or reply_status,
        diagnostic=reason if kind not in (EventKind.DELIVERED, EventKind.DROPPED) else None,
        vendor_category=category,
        stream=stream,
        ip=text(item.get("ip")),
        message_id=text(item.get("smtp-id")) or text(item.get("sg_message_id")),
    )


def _excerpt(item: Any) -> str:
    return json.dumps(item, sort_keys=True, default=str)[:200]
