"""The result types of classification: outcome, reason and the rule that decided.

Outcome and reason values are snake_case strings stored in the database; renaming one needs a
migration.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    """What a classification means for suppression."""

    HARD = "hard"  # address or domain gone: global permanent suppression
    SOFT = "soft"  # transient, about the recipient: counted, temporary suppression after N
    POLICY = "policy"  # about the sender (reputation, auth, content): never a recipient suppression
    COMPLAINT = "complaint"  # ARF abuse report (decided in arf/, not by the rules)
    UNSUBSCRIBE = "unsubscribe"  # ARF opt-out / list-unsubscribe (decided in arf/)
    NONE = "none"  # not a failure: delivered, auto-reply


class Reason(StrEnum):
    """Why: the finer cause behind an outcome."""

    # recipient does not exist or is gone (hard on a permanent signal)
    USER_UNKNOWN = "user_unknown"
    DOMAIN_UNKNOWN = "domain_unknown"
    NULL_MX = "null_mx"
    INVALID_ADDRESS = "invalid_address"
    MAILBOX_DISABLED = "mailbox_disabled"
    MAILBOX_MOVED = "mailbox_moved"
    # transient, about the recipient's side
    MAILBOX_FULL = "mailbox_full"
    MAILBOX_UNAVAILABLE = "mailbox_unavailable"
    SYSTEM_FULL = "system_full"
    EXPIRED = "expired"
    NETWORK_ERROR = "network_error"
    SYSTEM_ERROR = "system_error"
    # about the sender
    RATE_LIMITED = "rate_limited"
    GREYLISTED = "greylisted"  # soft: the server defers a first delivery attempt on purpose
    BLOCKED = "blocked"
    BAD_REPUTATION = "bad_reputation"
    SPAM_CONTENT = "spam_content"
    AUTH_FAILURE = "auth_failure"
    MESSAGE_TOO_LARGE = "message_too_large"
    POLICY_REJECTED = "policy_rejected"
    RELAY_DENIED = "relay_denied"
    VIRUS_DETECTED = "virus_detected"
    CONTENT_REJECTED = "content_rejected"
    NOT_RFC_COMPLIANT = "not_rfc_compliant"
    TOO_MANY_RECIPIENTS = "too_many_recipients"
    SENDER_REJECTED = "sender_rejected"
    SYNTAX_ERROR = "syntax_error"
    REQUIRE_PTR = "require_ptr"
    TLS_REQUIRED = "tls_required"
    SECURITY_ERROR = "security_error"
    SUPPRESSED = "suppressed"
    # not failures, and feedback (ARF) reasons used by arf/
    DELIVERED = "delivered"
    AUTO_REPLY = "auto_reply"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    AUTH_REPORT = "auth_report"
    NOT_SPAM = "not_spam"
    # nothing matched
    UNCLASSIFIED = "unclassified"


# A hard outcome permanently suppresses a real person's address: only these reasons may carry it.
HARD_REASONS: frozenset[Reason] = frozenset(
    {
        Reason.USER_UNKNOWN,
        Reason.DOMAIN_UNKNOWN,
        Reason.NULL_MX,
        Reason.INVALID_ADDRESS,
        Reason.MAILBOX_DISABLED,
        Reason.MAILBOX_MOVED,
    }
)


@dataclass(frozen=True, slots=True)
class Classification:
    """The answer: outcome, reason, and the id of the rule that decided (stored with the event)."""

    outcome: Outcome
    reason: Reason
    rule_id: str


UNCLASSIFIED = Classification(Outcome.SOFT, Reason.UNCLASSIFIED, "unclassified")
