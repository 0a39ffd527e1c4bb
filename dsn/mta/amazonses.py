"""Amazon SES notifications delivered by e-mail (an SNS envelope whose ``Message`` is the
SES event as JSON): ``Bounce`` events list ``bouncedRecipients`` with action, status and
diagnosticCode; ``Delivery`` events are delivery reports.  Complaint events are left to
the feedback-report path (they carry no ARF part), so they are not claimed here."""

from __future__ import annotations

import json
from typing import Any

from dsn.address import normalise_address
from dsn.mail import Mail
from dsn.mta.base import Found, find_reply_code, find_status
from dsn.mta.rfc3464 import normalise_action, strip_type

__all__ = ["parse"]


def _event(text: str) -> dict[str, Any] | None:
    start = text.find("{")
    end = text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        data = json.loads(text[start : end + 1], strict=False)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("Message"), str):
        try:
            data = json.loads(data["Message"], strict=False)
        except ValueError:
            return None
    return data if isinstance(data, dict) else None


def parse(mail: Mail) -> list[Found] | None:
    if '"notificationType"' not in mail.text and '\\"notificationType\\"' not in mail.text:
        return None
    event = _event(mail.text)
    if event is None:
        return None
    kind = str(event.get("notificationType") or event.get("eventType") or "")
    found: list[Found] = []
    if kind == "Bounce":
        bounce = event.get("bounce") or {}
        for item in bounce.get("bouncedRecipients") or []:
            addr = normalise_address(str(item.get("emailAddress", "")))
            if addr is None:
                continue
            diagnostic = strip_type(str(item.get("diagnosticCode") or ""))
            if not diagnostic:
                diagnostic = f"{bounce.get('bounceType', '')} {bounce.get('bounceSubType', '')}"
            status = find_status(str(item.get("status") or "")) or find_status(diagnostic)
            found.append(
                Found(
                    recipient=addr,
                    diagnostic=diagnostic,
                    status=status,
                    reply_code=find_reply_code(diagnostic),
                    action=normalise_action(str(item.get("action") or "")) or "failed",
                    remote_mta=str(bounce.get("reportingMTA") or "").removeprefix("dsn; ") or None,
                )
            )
    elif kind == "Delivery":
        delivery = event.get("delivery") or {}
        for raw in delivery.get("recipients") or []:
            addr = normalise_address(str(raw))
            if addr is None:
                continue
            response = str(delivery.get("smtpResponse") or "")
            found.append(
                Found(
                    recipient=addr,
                    diagnostic=response,
                    status=find_status(response) or "2.0.0",
                    reply_code=find_reply_code(response),
                    action="delivered",
                    remote_mta=str(delivery.get("reportingMTA") or "") or None,
                )
            )
    return found or None


def complaint(mail: Mail) -> tuple[str, list[str]] | None:
    """``(feedback type, recipients)`` of an SES ``Complaint`` event, else None."""
    if '"notificationType"' not in mail.text and '\\"notificationType\\"' not in mail.text:
        return None
    event = _event(mail.text)
    if event is None or event.get("notificationType") != "Complaint":
        return None
    body = event.get("complaint") or {}
    recipients = [
        addr
        for addr in (
            normalise_address(str(item.get("emailAddress", "")))
            for item in body.get("complainedRecipients") or []
        )
        if addr
    ]
    return str(body.get("complaintFeedbackType") or "abuse"), recipients
