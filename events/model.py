"""Result types of event parsing: one ``Event`` per recipient per report, or an ``EventError``.

An event is what an MTA's accounting log or an ESP's webhook says happened to one recipient:
delivered, bounced, deferred, expired, complained, unsubscribed, or dropped by the sender's own
suppression list. Beside our classification of the reply (the same rules as a bounce message) it
keeps the vendor's own category, and a flag when the vendor's category implies another outcome.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "DIAGNOSTIC_MAX",
    "Batch",
    "DeliveryKey",
    "Event",
    "EventError",
    "EventKind",
    "Source",
    "dedupe_id",
]

# A reply text is bounded like a DSN's diagnostic (dsn/model.py): one hostile record must not
# cost more than any other.
DIAGNOSTIC_MAX: Final = 1000
# Bound on the excerpt of a bad record kept in an error, for the reader.
EXCERPT_MAX: Final = 200


class Source(StrEnum):
    """Where the event came from (stored with it)."""

    PMTA = "pmta"
    KUMOMTA = "kumomta"
    POSTFIX = "postfix"
    SES = "ses"
    SENDGRID = "sendgrid"
    POSTMARK = "postmark"
    MAILGUN = "mailgun"


class EventKind(StrEnum):
    """What happened to the recipient, as the source reports it (before our classification)."""

    DELIVERED = "delivered"
    BOUNCE = "bounce"  # a final failure
    DEFERRED = "deferred"  # a transient failure; delivery is still being tried
    EXPIRED = "expired"  # the sender gave up after transient failures
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    # Not sent at all: the sender's own suppression list, or an operator's purge. Nothing new is
    # learnt about the recipient, so it never suppresses anyone by itself.
    DROPPED = "dropped"


# Not frozen: a frozen dataclass sets each of its 25 fields through object.__setattr__, 5 us an
# event, a fifth of what a whole accounting line may cost (bench/events_parse.py). Treat as frozen.
@dataclass(slots=True)
class Event:
    """One recipient in one report, classified.

    ``outcome``/``reason``/``rule_id`` are ours (classifiers/ rules, then the disposition limits of
    events/classify.py); ``vendor_category`` is the source's own word and ``vendor_outcome`` what
    that word means to us; ``disagrees`` is set when both are known and differ.
    """

    source: Source
    kind: EventKind
    recipient: str | None  # None only for a queue-level record (PowerMTA ``tq``)
    outcome: str
    reason: str
    rule_id: str
    dedupe_id: str
    location: str  # "file:line" or "request-id#index", for the reader of an error or a history
    sender: str | None = None
    time: datetime | None = None
    queued_at: datetime | None = None
    reply_code: int | None = None
    status: str | None = None
    diagnostic: str = ""
    remote_mta: str | None = None
    vendor_category: str | None = None
    vendor_outcome: str | None = None
    disagrees: bool = False
    feedback_type: str | None = None
    stream: str | None = None
    ip: str | None = None
    pool: str | None = None
    vmta: str | None = None
    job_id: str | None = None
    message_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A flat JSON object (times in ISO 8601), the shape of the golden samples."""
        row: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, StrEnum):
                value = value.value
            row[name] = value
        return row


@dataclass(frozen=True, slots=True)
class EventError:
    """A record that could not be read: where it is and why, so the rest can go on."""

    source: Source
    location: str
    reason: str
    excerpt: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source.value,
            "location": self.location,
            "reason": self.reason,
            "excerpt": self.excerpt[:EXCERPT_MAX],
        }


# A delivery counted without an ``Event`` (the log ingest: nine lines in ten only feed the rates):
# (source, time, recipient domain, replying MX host, stream, ip, pool, vmta), as the ``Event`` of
# the same line would carry them. A plain tuple: built once a line, it must stay cheap.
DeliveryKey = tuple[
    Source, datetime | None, str, str | None, str | None, str | None, str | None, str | None
]


@dataclass(slots=True)
class Batch:
    """What one webhook request held: its events, the records that failed, and SNS control data.

    ``subscribe_url`` is set for an SNS ``SubscriptionConfirmation``: the caller logs it and may
    confirm the subscription by fetching it (no I/O here). ``deliveries``: deliveries counted by
    ``DeliveryKey`` instead of an ``Event`` each (a parser given a ``deliveries`` dict fills it).
    """

    events: list[Event] = field(default_factory=list)
    errors: list[EventError] = field(default_factory=list)
    deliveries: dict[DeliveryKey, int] = field(default_factory=dict)
    subscribe_url: str | None = None
    topic_arn: str | None = None

    def add(self, items: Iterable[Event | EventError]) -> None:
        for item in items:
            if isinstance(item, Event):
                self.events.append(item)
            else:
                self.errors.append(item)

    def to_json(self) -> dict[str, Any]:
        return {
            "events": [e.to_json() for e in self.events],
            "errors": [e.to_json() for e in self.errors],
            "subscribe_url": self.subscribe_url,
            "topic_arn": self.topic_arn,
        }


def dedupe_id(source: Source, *parts: object) -> str:
    """A stable id from the fields that identify one report about one recipient.

    The same record read twice (a replayed webhook, a log re-read after a restart) gets the same
    id; the store records it once.
    """
    text = "\x1f".join([source, *("" if p is None else str(p) for p in parts)])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
