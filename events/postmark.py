"""Postmark webhooks: one JSON object per request, told apart by ``RecordType``.

From Postmark's developer docs ("Webhooks": Bounce, Spam Complaint, Subscription Change, Delivery;
"Bounce API": bounce types):

- ``Bounce``: ``ID``, ``Type`` (HardBounce, SoftBounce, Transient, DnsError, BadEmailAddress,
  Blocked, DMARCPolicy, AutoResponder, ManuallyDeactivated, Unsubscribe, SpamComplaint, ...),
  ``TypeCode``, ``Email``, ``From``, ``BouncedAt``, ``Details`` (the remote reply when there is one),
  ``Description`` (Postmark's prose for the type: not evidence), ``MessageID``, ``MessageStream``.
  ``ManuallyDeactivated`` means Postmark did not send (dropped); Unsubscribe and SpamComplaint
  typed bounces become unsubscribe and complaint events.
- ``SpamComplaint``: the same fields, Type ``SpamComplaint``.
- ``SubscriptionChange``: ``Recipient``, ``ChangedAt``, ``SuppressSending``,
  ``SuppressionReason`` (ManualSuppression, HardBounce, SpamComplaint), ``MessageStream``. A manual
  suppression is an unsubscribe from that stream; a suppression for a hard bounce or a complaint
  repeats what the Bounce/SpamComplaint webhook already said (dropped, for the record);
  ``SuppressSending: false`` (reactivation) is skipped.
- ``Delivery``: ``Recipient``, ``DeliveredAt``, ``Details``, ``MessageID``, ``MessageStream``.

Authentication is HTTP Basic credentials in the webhook URL: events/signatures.py.
"""

from __future__ import annotations

import json
from typing import Any, Final

from events.classify import make_event
from events.fields import address, diagnostic, parse_reply, parse_time, text
from events.model import Batch, Event, EventError, EventKind, Source, dedupe_id

__all__ = ["parse_postmark"]

_BOUNCE_KINDS: Final[dict[str, EventKind]] = {
    "manuallydeactivated": EventKind.DROPPED,
    "unsubscribe": EventKind.UNSUBSCRIBE,
    "spamcomplaint": EventKind.COMPLAINT,
}
_SKIPPED_BOUNCES: Final = frozenset({"subscribe"})


def parse_postmark(body: bytes | str, request_id: str = "-") -> Batch:
    """One webhook request."""
    batch = Batch()
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        batch.errors.append(EventError(Source.POSTMARK, request_id, f"bad JSON: {exc}"))
        return batch
    if not isinstance(data, dict):
        batch.errors.append(EventError(Source.POSTMARK, request_id, "not a JSON object"))
        return batch
    result = _record(data, request_id)
    if isinstance(result, Event):
        batch.events.append(result)
    elif result is not None:
        batch.errors.append(result)
    return batch


def _record(data: dict[str, Any], location: str) -> Event | EventError | None:
    record_type = text(data.get("RecordType"))
    if record_type in ("Bounce", "SpamComplaint"):
        return _bounce(data, location)
    if record_type == "SubscriptionChange":
        return _subscription(data, location)
    if record_type == "Delivery":
        recipient = address(data.get("Recipient"))
        if recipient is None:
            return EventError(Source.POSTMARK, location, "no valid Recipient")
        details = text(data.get("Details"))
        reply_code, reply_status = parse_reply(details)
        return make_event(
            Source.POSTMARK,
            EventKind.DELIVERED,
            recipient=recipient,
            dedupe=dedupe_id(Source.POSTMARK, "delivery", data.get("MessageID"), recipient),
            location=location,
            time=parse_time(data.get("DeliveredAt")),
            reply_code=reply_code,
            status=reply_status,
            stream=text(data.get("MessageStream")),
            message_id=text(data.get("MessageID")),
        )
    if record_type in ("Open", "Click"):
        return None
    return EventError(Source.POSTMARK, location, f"unknown RecordType {record_type!r}")


def _bounce(data: dict[str, Any], location: str) -> Event | EventError | None:
    recipient = address(data.get("Email"))
    if recipient is None:
        return EventError(Source.POSTMARK, location, "no valid Email")
    bounce_type = text(data.get("Type")) or text(data.get("RecordType")) or "Unknown"
    key = bounce_type.lower()
    if key in _SKIPPED_BOUNCES:
        return None
    kind = _BOUNCE_KINDS.get(key, EventKind.BOUNCE)
    details = diagnostic(data.get("Details"))
    reply_code, reply_status = parse_reply(details)
    return make_event(
        Source.POSTMARK,
        kind,
        recipient=recipient,
        dedupe=dedupe_id(
            Source.POSTMARK, "bounce", data.get("ID"), data.get("MessageID"), recipient
        ),
        location=location,
        sender=address(data.get("From")),
        time=parse_time(data.get("BouncedAt")),
        reply_code=reply_code,
        status=reply_status,
        diagnostic=details if kind is EventKind.BOUNCE else None,
        vendor_category=bounce_type,
        feedback_type="abuse" if kind is EventKind.COMPLAINT else None,
        transient=key in ("transient", "softbounce", "dnserror"),
        stream=text(data.get("MessageStream")),
        message_id=text(data.get("MessageID")),
    )


def _subscription(data: dict[str, Any], location: str) -> Event | EventError | None:
    recipient = address(data.get("Recipient"))
    if recipient is None:
        return EventError(Source.POSTMARK, location, "no valid Recipient")
    if data.get("SuppressSending") is not True:
        return None
    reason = text(data.get("SuppressionReason")) or "ManualSuppression"
    kind = EventKind.UNSUBSCRIBE if reason == "ManualSuppression" else EventKind.DROPPED
    return make_event(
        Source.POSTMARK,
        kind,
        recipient=recipient,
        dedupe=dedupe_id(
            Source.POSTMARK,
            "subscription",
            recipient,
            data.get("MessageStream"),
            data.get("ChangedAt"),
        ),
        location=location,
        time=parse_time(data.get("ChangedAt")),
        vendor_category=reason,
        stream=text(data.get("MessageStream")),
        message_id=text(data.get("MessageID")),
    )
