"""What a delivery event means for the suppression list: the feedback planner's policy, reused.

An ``events.Event`` becomes the one-recipient ``MessageAnalysis`` a bounce or feedback-loop
message about the same recipient would have produced, and ``app.feedback.planner.plan_message``
decides, so the soft window, "policy never suppresses", global complaints and per-stream
unsubscribes are stated once, there:

    =====================  ===================================================================
    bounce, expired        a failed recipient: hard suppresses, soft counts towards the window,
                           policy is recorded (expired is never hard: events/classify.py)
    deferred               a delayed recipient: a ``delay`` event, never a bounce
    complaint              a complaint of the event's feedback type (``abuse`` when none)
    unsubscribe            an ``opt-out`` complaint: the event's stream, else the default one
    delivered, dropped     nothing (a drop is the ESP's own list: nothing new about anyone)
    =====================  ===================================================================

A webhook request is authenticated as a whole (a signature or an API key) and a log is read by
the operator, so the planner runs without signed-reference requirements: those protect the SMTP
sink from forged bounce mail, which events are not. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from app.feedback.planner import Envelope, Plan, plan_message
from app.settings import Settings
from dsn.model import MessageAnalysis, RecipientResult
from events import Event, EventKind

__all__ = ["event_settings", "plan_event"]

_NO_POLICY = (EventKind.DELIVERED, EventKind.DROPPED)
_NO_ENVELOPE = Envelope(mail_from="", rcpt_to=[])


def event_settings(settings: Settings) -> Settings:
    """``settings`` as the planner takes them for events (see the module docstring)."""
    if not (settings.require_signed_bounces or settings.require_signed_reports):
        return settings
    return settings.model_copy(
        update={"require_signed_bounces": False, "require_signed_reports": False}
    )


def plan_event(event: Event, settings: Settings) -> Plan | None:
    """The plan for one event (``settings`` from :func:`event_settings`), or None when the event
    says nothing about the recipient's list entry."""
    if event.recipient is None or event.kind in _NO_POLICY:
        return None
    plan = plan_message(_analysis(event), _NO_ENVELOPE, settings, None)
    extra = _detail(event)
    plan.steps = [replace(step, detail={**step.detail, **extra}) for step in plan.steps]
    return plan


def _analysis(event: Event) -> MessageAnalysis:
    assert event.recipient is not None
    if event.kind in (EventKind.COMPLAINT, EventKind.UNSUBSCRIBE):
        feedback_type = (
            "opt-out" if event.kind == EventKind.UNSUBSCRIBE else event.feedback_type or "abuse"
        )
        result = RecipientResult(
            event.recipient,
            action="",
            outcome=event.outcome,
            reason=event.reason,
            rule_id=event.rule_id,
            stream=event.stream,
        )
        return MessageAnalysis(
            kind="complaint",
            results=[result],
            mta=event.source.value,
            feedback_type=feedback_type,
            stream=event.stream,
        )
    result = RecipientResult(
        event.recipient,
        action="delayed" if event.kind == EventKind.DEFERRED else "failed",
        outcome=event.outcome,
        reason=event.reason,
        rule_id=event.rule_id,
        status=event.status,
        reply_code=event.reply_code,
        diagnostic=event.diagnostic,
        remote_mta=event.remote_mta,
        stream=event.stream,
        vendor_category=event.vendor_category,
    )
    return MessageAnalysis(kind="bounce", results=[result], stream=event.stream)


def _detail(event: Event) -> dict[str, Any]:
    """What the history shows beside our rule: where the event came from and the vendor's word."""
    detail: dict[str, Any] = {
        "event_source": event.source.value,
        "event_kind": event.kind.value,
        "event_location": event.location,
        "delivery_event": event.dedupe_id,
    }
    if event.vendor_category is not None:
        detail["vendor_category"] = event.vendor_category
        detail["vendor_outcome"] = event.vendor_outcome
        detail["disagrees"] = event.disagrees
    return detail
