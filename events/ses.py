"""Amazon SES notifications, as SNS delivers them (or bare, from SQS raw delivery / an event bus).

From the SES Developer Guide ("Contents of notifications", "Event publishing: event data") and the
SNS Developer Guide ("HTTP/S notification JSON format"):

- SNS envelope: ``Type`` is ``Notification`` (``Message`` is a JSON string holding the SES record),
  ``SubscriptionConfirmation`` (``SubscribeURL`` to fetch once) or ``UnsubscribeConfirmation``.
- SES record: ``notificationType`` (feedback notifications) or ``eventType`` (event publishing)
  names ``Bounce``, ``Complaint``, ``Delivery`` (and ``DeliveryDelay`` for event publishing);
  ``mail`` holds ``messageId``, ``source``, ``timestamp``, ``tags`` (``sourceIp`` is the address
  that called the SES API, not a sending IP: not kept).
- ``bounce``: ``bounceType`` Permanent / Transient / Undetermined, ``bounceSubType``,
  ``bouncedRecipients[]{emailAddress, action, status, diagnosticCode}``, ``reportingMTA``,
  ``remoteMtaIp``, ``feedbackId``, ``timestamp`` (``reportingMTA`` is SES's own host, so the
  provider is found from the recipient's domain). Permanent ``Suppressed`` and
  ``OnAccountSuppressionList`` mean SES did not send at all (its suppression list): dropped.
  A Transient bounce is never hard, whatever the diagnostic says.
- ``complaint``: ``complainedRecipients[]{emailAddress}``, ``complaintFeedbackType`` (absent
  when the provider sent none), ``complaintSubType`` (``OnAccountSuppressionList``: not sent).
- ``delivery``: ``recipients[]``, ``smtpResponse``, ``reportingMTA``, ``timestamp``.
- ``deliveryDelay``: ``delayedRecipients[]{emailAddress, status, diagnosticCode}``.

Other event types (Send, Reject, Open, Click, Rendering Failure, Subscription) are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from events.classify import make_event
from events.fields import address, diagnostic, obj, parse_reply, parse_time, status_of, text
from events.model import Batch, Event, EventError, EventKind, Source, dedupe_id

__all__ = ["parse_ses", "parse_ses_message"]

_DROPPED_SUBTYPES: Final = frozenset({"suppressed", "onaccountsuppressionlist"})
_SKIPPED: Final = frozenset(
    {"send", "reject", "open", "click", "rendering failure", "renderingfailure", "subscription"}
)


def parse_ses(body: bytes | str, request_id: str = "-", *, stream_tag: str = "stream") -> Batch:
    """One HTTP request from SNS (or a bare SES record). Signatures: events/signatures.py."""
    batch = Batch()
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        batch.errors.append(EventError(Source.SES, request_id, f"bad JSON: {exc}"))
        return batch
    if not isinstance(data, dict):
        batch.errors.append(EventError(Source.SES, request_id, "not a JSON object"))
        return batch
    envelope_type = data.get("Type")
    if envelope_type in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        batch.subscribe_url = text(data.get("SubscribeURL"))
        batch.topic_arn = text(data.get("TopicArn"))
        return batch
    if envelope_type == "Notification":
        batch.topic_arn = text(data.get("TopicArn"))
        message = data.get("Message")
        try:
            record = json.loads(message) if isinstance(message, str) else None
        except ValueError as exc:
            batch.errors.append(EventError(Source.SES, request_id, f"Message is not JSON: {exc}"))
            return batch
        if not isinstance(record, dict):
            batch.errors.append(EventError(Source.SES, request_id, "Message is not a JSON object"))
            return batch
        data = record
    elif envelope_type is not None:
        batch.errors.append(
            EventError(Source.SES, request_id, f"unknown SNS message type {envelope_type!r}")
        )
        return batch
    batch.add(parse_ses_message(data, request_id, stream_tag=stream_tag))
    return batch


def parse_ses_message(
    record: dict[str, Any], location: str, *, stream_tag: str = "stream"
) -> list[Event | EventError]:
    """The events of one SES notification record (``notificationType`` or ``eventType``)."""
    kind_name = text(record.get("notificationType")) or text(record.get("eventType"))
    if kind_name is None:
        return [EventError(Source.SES, location, "neither notificationType nor eventType")]
    mail = obj(record.get("mail"))
    common: dict[str, Any] = {
        "sender": address(mail.get("source")),
        "message_id": text(mail.get("messageId")),
        "stream": _tag(mail, stream_tag),
    }
    name = kind_name.lower()
    if name == "bounce":
        return _bounce(obj(record.get("bounce")), location, common)
    if name == "complaint":
        return _complaint(obj(record.get("complaint")), location, common)
    if name == "delivery":
        return _delivery(obj(record.get("delivery")), location, common)
    if name == "deliverydelay":
        return _delay(obj(record.get("deliveryDelay")), location, common)
    if name in _SKIPPED:
        return []
    return [EventError(Source.SES, location, f"unknown SES type {kind_name!r}")]


def _tag(mail: dict[str, Any], name: str) -> str | None:
    values = obj(mail.get("tags")).get(name)
    if isinstance(values, list) and values:
        return text(values[0])
    return None


def _recipients(items: Any, location: str, what: str) -> list[tuple[str, dict[str, Any]] | str]:
    """(address, entry) per recipient, or an error reason in its place."""
    if not isinstance(items, list) or not items:
        return [f"no {what}"]
    out: list[tuple[str, dict[str, Any]] | str] = []
    for item in items:
        entry = item if isinstance(item, dict) else {"emailAddress": item}
        recipient = address(entry.get("emailAddress"))
        out.append((recipient, entry) if recipient else f"bad recipient in {what}")
    return out


def _per_recipient(
    record: dict[str, Any],
    key: str,
    location: str,
    build: Callable[[str, dict[str, Any], str], Event],
) -> list[Event | EventError]:
    """``build(recipient, entry, location)`` for each recipient listed under ``key``; an error,
    at the recipient's own location, for a listed entry without a usable address."""
    out: list[Event | EventError] = []
    for index, found in enumerate(_recipients(record.get(key), location, key)):
        where = f"{location}#{index}"
        if isinstance(found, str):
            out.append(EventError(Source.SES, where, found))
            continue
        recipient, entry = found
        out.append(build(recipient, entry, where))
    return out


def _bounce(
    bounce: dict[str, Any], location: str, common: dict[str, Any]
) -> list[Event | EventError]:
    bounce_type = text(bounce.get("bounceType")) or "Undetermined"
    subtype = text(bounce.get("bounceSubType")) or ""
    category = f"{bounce_type}/{subtype}" if subtype else bounce_type
    kind = EventKind.DROPPED if subtype.lower() in _DROPPED_SUBTYPES else EventKind.BOUNCE
    time = parse_time(bounce.get("timestamp"))

    def build(recipient: str, entry: dict[str, Any], where: str) -> Event:
        reply = diagnostic(entry.get("diagnosticCode"))
        reply_code, reply_status = parse_reply(reply)
        return make_event(
            Source.SES,
            kind,
            recipient=recipient,
            dedupe=dedupe_id(Source.SES, "bounce", bounce.get("feedbackId"), recipient),
            location=where,
            time=time,
            reply_code=reply_code,
            status=status_of(entry.get("status")) or reply_status,
            diagnostic=reply,
            vendor_category=category,
            transient=bounce_type.lower() != "permanent",
            **common,
        )

    return _per_recipient(bounce, "bouncedRecipients", location, build)


def _complaint(
    complaint: dict[str, Any], location: str, common: dict[str, Any]
) -> list[Event | EventError]:
    feedback = text(complaint.get("complaintFeedbackType"))
    subtype = text(complaint.get("complaintSubType"))
    kind = EventKind.DROPPED if subtype == "OnAccountSuppressionList" else EventKind.COMPLAINT
    time = parse_time(complaint.get("timestamp"))

    def build(recipient: str, _entry: dict[str, Any], where: str) -> Event:
        return make_event(
            Source.SES,
            kind,
            recipient=recipient,
            dedupe=dedupe_id(Source.SES, "complaint", complaint.get("feedbackId"), recipient),
            location=where,
            time=time,
            vendor_category=subtype or feedback,
            feedback_type=feedback,
            **common,
        )

    return _per_recipient(complaint, "complainedRecipients", location, build)


def _delivery(
    delivery: dict[str, Any], location: str, common: dict[str, Any]
) -> list[Event | EventError]:
    time = parse_time(delivery.get("timestamp"))
    response = text(delivery.get("smtpResponse"))
    reply_code, reply_status = parse_reply(response)

    def build(recipient: str, _entry: dict[str, Any], where: str) -> Event:
        return make_event(
            Source.SES,
            EventKind.DELIVERED,
            recipient=recipient,
            dedupe=dedupe_id(
                Source.SES,
                "delivery",
                common["message_id"],
                recipient,
                delivery.get("timestamp"),
            ),
            location=where,
            time=time,
            reply_code=reply_code,
            status=reply_status,
            diagnostic=response,
            **common,
        )

    return _per_recipient(delivery, "recipients", location, build)


def _delay(
    delay: dict[str, Any], location: str, common: dict[str, Any]
) -> list[Event | EventError]:
    time = parse_time(delay.get("timestamp"))

    def build(recipient: str, entry: dict[str, Any], where: str) -> Event:
        reply = diagnostic(entry.get("diagnosticCode"))
        reply_code, reply_status = parse_reply(reply)
        return make_event(
            Source.SES,
            EventKind.DEFERRED,
            recipient=recipient,
            dedupe=dedupe_id(
                Source.SES, "delay", common["message_id"], recipient, delay.get("timestamp")
            ),
            location=where,
            time=time,
            reply_code=reply_code,
            status=status_of(entry.get("status")) or reply_status,
            diagnostic=reply,
            vendor_category=text(delay.get("delayType")),
            **common,
        )

    return _per_recipient(delay, "delayedRecipients", location, build)
