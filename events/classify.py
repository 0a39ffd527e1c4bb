"""Our classification of an event, and the disposition limits a source's own word puts on it.

Every event that carries a reply (code, enhanced status or text) is classified by the same rules as
a bounce message (classifiers/). The event's kind then limits the outcome, because classification is
not disposition:

- a deferral (Postfix ``deferred``, PowerMTA ``t``/``tq``, KumoMTA ``TransientFailure``, SendGrid
  ``deferred``, Mailgun ``temporary``) and an expiry are never hard: the sender will retry, or gave
  up after transient failures, and neither proves the address is gone;
- a bounce the vendor calls transient (SES ``Transient``) is never hard either;
- delivered, complaint, unsubscribe and dropped events take their outcome from the kind alone.

The vendor's own category (PowerMTA ``bounceCat``, KumoMTA ``bounce_classification``, SES
``bounceType/bounceSubType``, ...) is kept beside ours, with what it means to us and a flag when it
disagrees. It decides only when there is no reply at all to classify (an ESP that sends no
diagnostic): then it is the only evidence, and the rule id names it (``vendor-<source>-<category>``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

from classifiers import HARD_REASONS, Classification, Outcome, Reason, classify
from dsn.address import domain_of
from events.model import DIAGNOSTIC_MAX, Event, EventKind, Source

__all__ = ["DELIVERED", "VENDOR_CATEGORIES", "make_event", "vendor_meaning"]

_WS = re.compile(r"\s+")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")

_FIXED: Final[dict[EventKind, Classification]] = {
    EventKind.DELIVERED: Classification(Outcome.NONE, Reason.DELIVERED, "event-delivered"),
    EventKind.COMPLAINT: Classification(Outcome.COMPLAINT, Reason.COMPLAINT, "event-complaint"),
    EventKind.UNSUBSCRIBE: Classification(
        Outcome.UNSUBSCRIBE, Reason.UNSUBSCRIBE, "event-unsubscribe"
    ),
    EventKind.DROPPED: Classification(Outcome.NONE, Reason.SUPPRESSED, "event-dropped"),
}
_DELIVERED_KIND: Final = EventKind.DELIVERED
DELIVERED: Final = _FIXED[EventKind.DELIVERED]
_NOT_SPAM: Final = Classification(Outcome.NONE, Reason.NOT_SPAM, "event-not-spam")
_EXPIRED: Final = Classification(Outcome.SOFT, Reason.EXPIRED, "event-expired")
_UNCLASSIFIED: Final = Classification(Outcome.SOFT, Reason.UNCLASSIFIED, "unclassified")

_H, _S, _P, _N = Outcome.HARD, Outcome.SOFT, Outcome.POLICY, Outcome.NONE

# (source, normalised category) -> what the vendor's word means to us. Normalised: lower case,
# punctuation removed ("bad-mailbox" and "BadMailbox" are one key). A category not listed (or one
# that says nothing, such as PowerMTA "other" or KumoMTA "Uncategorized") has no meaning.
_MTA_CATEGORIES: Final[dict[str, tuple[Outcome, Reason]]] = {
    # PowerMTA bounce categories (User's Guide, "Bounce categories"); KumoMTA's classifier uses
    # the same set in CamelCase (docs: "bounce_classification"), plus a few of its own.
    "badmailbox": (_H, Reason.USER_UNKNOWN),
    "invalidrecipient": (_H, Reason.USER_UNKNOWN),
    "baddomain": (_H, Reason.DOMAIN_UNKNOWN),
    "inactivemailbox": (_H, Reason.MAILBOX_DISABLED),
    "invalidsender": (_P, Reason.SENDER_REJECTED),
    "quotaissues": (_S, Reason.MAILBOX_FULL),
    "spamrelated": (_P, Reason.SPAM_CONTENT),
    "spamblock": (_P, Reason.BLOCKED),
    "spamcontent": (_P, Reason.SPAM_CONTENT),
    "policyrelated": (_P, Reason.POLICY_REJECTED),
    "virusrelated": (_P, Reason.VIRUS_DETECTED),
    "contentrelated": (_P, Reason.CONTENT_REJECTED),
    "relayingissues": (_P, Reason.RELAY_DENIED),
    "autherror": (_P, Reason.AUTH_FAILURE),
    "badconnection": (_S, Reason.NETWORK_ERROR),
    "noanswerfromhost": (_S, Reason.NETWORK_ERROR),
    "routingerrors": (_S, Reason.NETWORK_ERROR),
    "protocolerrors": (_S, Reason.SYSTEM_ERROR),
    "messageexpired": (_S, Reason.EXPIRED),
}

VENDOR_CATEGORIES: Final[dict[Source, dict[str, tuple[Outcome, Reason]]]] = {
    Source.PMTA: _MTA_CATEGORIES,
    Source.KUMOMTA: _MTA_CATEGORIES,
    # SES bounce types (SES Developer Guide, "Amazon SES notification contents", bounce types).
    # "Permanent/General": SES asks to remove the address; which address fault is not said.
    Source.SES: {
        "permanentgeneral": (_H, Reason.INVALID_ADDRESS),
        "permanentnoemail": (_H, Reason.USER_UNKNOWN),
        "transientgeneral": (_S, Reason.MAILBOX_UNAVAILABLE),
        "transientmailboxfull": (_S, Reason.MAILBOX_FULL),
        "transientmessagetoolarge": (_P, Reason.MESSAGE_TOO_LARGE),
        "transientcontentrejected": (_P, Reason.CONTENT_REJECTED),
        "transientattachmentrejected": (_P, Reason.CONTENT_REJECTED),
    },
    # SendGrid Event Webhook: bounce "type" (bounce = permanent, blocked = refused for now) and
    # the newer "bounce_classification".
    Source.SENDGRID: {
        "bounce": (_H, Reason.INVALID_ADDRESS),
        "blocked": (_P, Reason.BLOCKED),
        "invalidaddress": (_H, Reason.USER_UNKNOWN),
        "technical": (_S, Reason.SYSTEM_ERROR),
        "content": (_P, Reason.CONTENT_REJECTED),
        "reputation": (_P, Reason.BAD_REPUTATION),
        "frequencyorvolumetoohigh": (_P, Reason.RATE_LIMITED),
        "mailboxunavailable": (_S, Reason.MAILBOX_UNAVAILABLE),
    },
    # Postmark bounce types (developer docs, "Bounce API", bounce types).
    Source.POSTMARK: {
        "hardbounce": (_H, Reason.USER_UNKNOWN),
        "bademailaddress": (_H, Reason.INVALID_ADDRESS),
        "transient": (_S, Reason.MAILBOX_UNAVAILABLE),
        "softbounce": (_S, Reason.MAILBOX_UNAVAILABLE),
        "dnserror": (_S, Reason.NETWORK_ERROR),
        "blocked": (_P, Reason.BLOCKED),
        "dmarcpolicy": (_P, Reason.AUTH_FAILURE),
        "spamnotification": (_P, Reason.SPAM_CONTENT),
        "virusnotification": (_P, Reason.VIRUS_DETECTED),
        "autoresponder": (_N, Reason.AUTO_REPLY),
        "challengeverification": (_N, Reason.AUTO_REPLY),
        "addresschange": (_N, Reason.AUTO_REPLY),
    },
    # Mailgun "failed" events: severity/reason (Events API, "Event types").
    Source.MAILGUN: {
        "permanentbounce": (_H, Reason.INVALID_ADDRESS),
        "permanentgeneric": (_H, Reason.INVALID_ADDRESS),
        "permanentold": (_S, Reason.EXPIRED),
        "permanentespblock": (_P, Reason.BLOCKED),
        "temporarygeneric": (_S, Reason.MAILBOX_UNAVAILABLE),
        "temporaryespblock": (_P, Reason.BLOCKED),
    },
}


def _key(category: str) -> str:
    return _NOT_ALNUM.sub("", category.lower())


def vendor_meaning(source: Source, category: str | None) -> tuple[Outcome, Reason] | None:
    """What a vendor's category means to us, or None when it says nothing we can use."""
    if not category:
        return None
    return VENDOR_CATEGORIES.get(source, {}).get(_key(category))


def _decide(
    source: Source,
    kind: EventKind,
    *,
    reply_code: int | None,
    status: str | None,
    diagnostic: str,
    remote_mta: str | None,
    recipient: str | None,
    vendor_category: str | None,
    vendor: tuple[Outcome, Reason] | None,
    feedback_type: str | None,
    transient: bool,
) -> Classification:
    if kind is EventKind.COMPLAINT and feedback_type and _key(feedback_type) == "notspam":
        return _NOT_SPAM
    fixed = _FIXED.get(kind)
    if fixed is not None:
        return fixed
    if vendor is not None and vendor[0] is Outcome.NONE:
        # The vendor filed an auto-reply among its bounces: its text is not a refusal.
        return Classification(vendor[0], vendor[1], _vendor_rule(source, vendor_category))
    if reply_code is not None or status or diagnostic:
        found = classify(
            status=status,
            reply_code=reply_code,
            diagnostic=diagnostic or None,
            remote_mta=remote_mta,
            recipient_domain=domain_of(recipient),
        )
    else:
        found = _UNCLASSIFIED
    if found.rule_id == _UNCLASSIFIED.rule_id:
        if vendor is not None:
            found = Classification(vendor[0], vendor[1], _vendor_rule(source, vendor_category))
        elif kind is EventKind.EXPIRED:
            found = _EXPIRED
    if found.outcome is Outcome.HARD and (
        transient
        or kind in (EventKind.DEFERRED, EventKind.EXPIRED)
        or found.reason not in HARD_REASONS
    ):
        return Classification(Outcome.SOFT, found.reason, found.rule_id)
    return found


def _vendor_rule(source: Source, category: str | None) -> str:
    slug = _NOT_ALNUM.sub("-", (category or "").lower()).strip("-") or "unknown"
    return f"vendor-{source.value}-{slug}"


def make_event(
    source: Source,
    kind: EventKind,
    *,
    recipient: str | None,
    dedupe: str,
    location: str,
    sender: str | None = None,
    time: datetime | None = None,
    queued_at: datetime | None = None,
    reply_code: int | None = None,
    status: str | None = None,
    diagnostic: str | None = None,
    remote_mta: str | None = None,
    vendor_category: str | None = None,
    feedback_type: str | None = None,
    transient: bool = False,
    stream: str | None = None,
    ip: str | None = None,
    pool: str | None = None,
    vmta: str | None = None,
    job_id: str | None = None,
    message_id: str | None = None,
) -> Event:
    """Classify one recipient's report and build its event (see the module docstring).

    ``transient``: the vendor says this failure is temporary (SES ``Transient``), so it is
    never hard whatever the reply says.
    """
    text = _WS.sub(" ", diagnostic).strip()[:DIAGNOSTIC_MAX] if diagnostic else ""
    vendor = vendor_meaning(source, vendor_category) if vendor_category else None
    decided = (
        DELIVERED
        if kind is _DELIVERED_KIND
        else _decide(
            source,
            kind,
            reply_code=reply_code,
            status=status or None,
            diagnostic=text,
            remote_mta=remote_mta,
            recipient=recipient,
            vendor_category=vendor_category,
            vendor=vendor,
            feedback_type=feedback_type,
            transient=transient,
        )
    )
    # Outcome and Reason are StrEnums: stored as the strings they are (no .value on the hot path).
    vendor_outcome = vendor[0] if vendor is not None else None
    return Event(
        source=source,
        kind=kind,
        recipient=recipient,
        outcome=decided.outcome,
        reason=decided.reason,
        rule_id=decided.rule_id,
        dedupe_id=dedupe,
        location=location,
        sender=sender,
        time=time,
        queued_at=queued_at,
        reply_code=reply_code,
        status=status or None,
        diagnostic=text,
        remote_mta=remote_mta or None,
        vendor_category=vendor_category or None,
        vendor_outcome=vendor_outcome,
        disagrees=vendor_outcome is not None and vendor_outcome != decided.outcome,
        feedback_type=feedback_type or None,
        stream=stream or None,
        ip=ip or None,
        pool=pool or None,
        vmta=vmta or None,
        job_id=job_id or None,
        message_id=message_id or None,
    )
