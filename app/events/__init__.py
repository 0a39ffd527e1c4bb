"""Delivery events in the service: storing what MTA logs and ESP webhooks report (``store``),
what each event means for the suppression list (``policy``: the feedback planner's rules, reused)
and webhook intake (``webhooks``: each sender's authentication, then one committed batch).

May import: ``app.feedback``, ``app.container``, ``app.db``, ``app.models``, ``app.settings``,
``app.errors`` and the layers below, and the pure ``events`` package. Never the HTTP layer or
the CLI.
"""

from app.events.policy import event_settings, plan_event
from app.events.store import EventStore, PendingSubscription, RecordResult
from app.events.webhooks import Receipt, WebhookIntake, WebhookSource

__all__ = [
    "EventStore",
    "PendingSubscription",
    "Receipt",
    "RecordResult",
    "WebhookIntake",
    "WebhookSource",
    "event_settings",
    "plan_event",
]
