"""Result types of complaint parsing, and the feedback-type -> (outcome, reason) table.

Feedback types are those of the IANA "Feedback Report Type Values" registry (RFC 5965 §7.3:
abuse, fraud, virus, other, not-spam; RFC 6591: auth-failure) plus the draft-era ``opt-out``
that feedback loops still send, and the spellings providers use for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "SOURCE_ORIGINAL_RCPT_TO",
    "SOURCE_PROVIDER_HEADER",
    "SOURCE_RECIPIENT_HEADER",
    "SOURCE_REF_TOKEN",
    "SOURCE_REMOVAL_RECIPIENT",
    "SOURCE_RETURN_PATH_VERP",
    "SOURCE_TO_HEADER",
    "ArfParseError",
    "ComplaintReport",
    "RecoveredRecipient",
    "normalise_feedback_type",
    "outcome_for",
]


class ArfParseError(ValueError):
    """A message that declares itself a feedback report cannot be read as one."""


# Where a recipient was recovered from, in recovery order (see ``arf.recipients``).
SOURCE_ORIGINAL_RCPT_TO: Final = "original-rcpt-to"
SOURCE_REMOVAL_RECIPIENT: Final = "removal-recipient"
SOURCE_PROVIDER_HEADER: Final = "provider-header"
SOURCE_RECIPIENT_HEADER: Final = "recipient-header"
SOURCE_REF_TOKEN: Final = "ref-token"  # noqa: S105 - a source name, not a secret
SOURCE_RETURN_PATH_VERP: Final = "return-path-verp"
SOURCE_TO_HEADER: Final = "to-header"


@dataclass(frozen=True, slots=True)
class RecoveredRecipient:
    """One recipient the report is about, and where it was found.

    ``address`` is a lower-cased bare addr-spec, or None when the provider redacted it (then
    ``redacted`` is True) or when the entry only marks that a reference token is there to be
    resolved by the caller (``source == "ref-token"``, ``redacted`` False).
    """

    address: str | None
    source: str
    redacted: bool


@dataclass(frozen=True, slots=True)
class ComplaintReport:
    """What one feedback report says.

    ``ref_token`` is the value of the signed reference header of the returned message, not
    verified here: the caller checks its signature and, when valid, prefers the recipient and
    stream it carries.
    """

    feedback_type: str
    outcome: str
    reason: str
    user_agent: str | None = None
    version: str | None = None
    original_mail_from: str | None = None
    original_rcpt_to: list[str] = field(default_factory=list)
    arrival_date: str | None = None
    source_ip: str | None = None
    reported_domain: list[str] = field(default_factory=list)
    reported_uri: list[str] = field(default_factory=list)
    authentication_results: str | None = None
    incidents: int | None = None
    recipients: list[RecoveredRecipient] = field(default_factory=list)
    ref_token: str | None = None
    stream: str | None = None
    original_message_id: str | None = None
    original_subject: str | None = None
    provider: str | None = None
    auth_failure: str | None = None
    delivery_result: str | None = None

    @property
    def addresses(self) -> list[str]:
        """The recovered, unredacted addresses, in recovery order."""
        return [r.address for r in self.recipients if r.address is not None]


# Spellings seen in the wild -> the registered feedback type.
_ALIASES: Final[dict[str, str]] = {
    "": "abuse",
    "complaint": "abuse",
    "spam": "abuse",
    "opt-out": "opt-out",
    "optout": "opt-out",
    "opt out": "opt-out",
    "opt_out": "opt-out",
    "unsubscribe": "opt-out",
    "not-spam": "not-spam",
    "notspam": "not-spam",
    "not spam": "not-spam",
    "not_spam": "not-spam",
    "auth-failure": "auth-failure",
    "authfailure": "auth-failure",
    "auth_failure": "auth-failure",
    # Some DMARC failure reporters put the mechanism where the type belongs (RFC 6591 §3.1
    # would have "Feedback-Type: auth-failure" with "Auth-Failure: dmarc").
    "dmarc": "auth-failure",
}

_OUTCOMES: Final[dict[str, tuple[str, str]]] = {
    "abuse": ("complaint", "abuse"),
    "fraud": ("complaint", "fraud"),
    "virus": ("complaint", "virus"),
    "other": ("complaint", "other"),
    "opt-out": ("unsubscribe", "opt_out"),
    "not-spam": ("none", "not_spam"),
    "auth-failure": ("none", "auth_failure"),
}


def normalise_feedback_type(value: str | None) -> str:
    """Lower-case a Feedback-Type value and map known aliases; a missing type means abuse."""
    text = " ".join((value or "").split()).lower()
    # A few reporters append a comment or parameters ("abuse; reason=...").
    text = text.split(";", 1)[0].strip()
    return _ALIASES.get(text, text)


def outcome_for(feedback_type: str) -> tuple[str, str]:
    """(outcome, reason) for a feedback type, raw or normalised.

    Unregistered types are still a recipient complaining, so they count as a complaint with
    reason ``other`` rather than inventing a new reason per spelling.
    """
    return _OUTCOMES.get(normalise_feedback_type(feedback_type), ("complaint", "other"))
