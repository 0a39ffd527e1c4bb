"""Precedence between the enhanced status and the diagnostic text (RFC 3463 section 3).

The rules are tried first-match-wins, text rules before the status tables, because a reply's words
usually say more than its code ("550 5.1.1 ... has sent to too many recipients this hour" is a rate
limit). One exception is written here rather than in rule order: a *specific* enhanced status
names what it is about -- the address (X.1.x) or the message (X.6.x, most of X.7.x) -- and a text
rule about the other thing does not overrule it:

* under an address status (X.1.1, X.1.2, X.1.3, X.1.6, X.1.10 ...), a text rule about the
  message (RFC 5322 format, content, virus, spam) is skipped: Postfix's "553 5.1.3 <rcpt>: The
  recipient address is not a valid RFC 5321 address" is a bad address, not a bad message, and a
  mail-scanning footer ("scanned for all viruses") does not turn a 5.1.1 into a virus verdict;
* under a message status (X.6.x; the X.7.x details about the message, its authentication or
  transport -- not the generic X.7.0 / X.7.1 nor the address statuses X.7.13, X.7.17, X.7.18,
  X.7.27), a text rule that would name the address gone is skipped: "not found" words
  under "5.7.26" do not make an address hard.

Generic statuses (X.0.0, X.y.0, X.7.1) and bare replies (550, 554) leave the text to decide. A
rule that gives a ``status`` or ``provider`` matcher was written for that signal and is never
skipped. Sender statuses (X.1.7, X.1.8) are not address statuses: they concern our address.
"""

from __future__ import annotations

from enum import StrEnum

from classifiers.model import HARD_REASONS, Reason

# Reasons that describe the message we sent rather than the recipient's address.
MESSAGE_REASONS: frozenset[Reason] = frozenset(
    {
        Reason.NOT_RFC_COMPLIANT,
        Reason.CONTENT_REJECTED,
        Reason.VIRUS_DETECTED,
        Reason.SPAM_CONTENT,
    }
)

# X.1.x details about the *sender* (RFC 3463 section 3.2: X.1.7, X.1.8) or too vague (X.1.0).
_NOT_ADDRESS_DETAILS = frozenset({"0", "7", "8"})
# X.7.x details that are about the message or its transport (RFC 3463 section 3.8, RFC 5248,
# RFC 7372, RFC 8617, RFC 8689): X.7.2 list expansion prohibited, X.7.3-X.7.7 security
# conversion / features / crypto / algorithm / integrity, X.7.10-X.7.12 encryption, X.7.15-X.7.16
# priority, X.7.19 RRVS cannot validate, X.7.20-X.7.26 DKIM / SPF / DMARC, X.7.28 mail flood,
# X.7.29 ARC, X.7.30 REQUIRETLS. Not listed, so the text decides: X.7.0 and X.7.1 (used for
# anything), X.7.8-X.7.9 and X.7.14 (SMTP authentication), the address statuses X.7.13 (account
# disabled), X.7.17 / X.7.18 (mailbox / domain owner has changed, RFC 7293), X.7.27 (null MX:
# RFC 7505 section 4.2 gives it to the sender's domain, Sendmail to the recipient's), and vendor
# extensions (Microsoft's X.7.5xx ...), whose meaning the provider rules know.
_MESSAGE_POLICY_DETAILS = frozenset(
    str(d)
    for d in (2, 3, 4, 5, 6, 7, 10, 11, 12, 15, 16, 19, 20, 21, 22, 23, 24, 25, 26, 28, 29, 30)
)


class StatusScope(StrEnum):
    """What a specific enhanced status is about."""

    ADDRESS = "address"
    MESSAGE = "message"
    GENERIC = "generic"


def status_scope(status: str | None) -> StatusScope:
    """Address (X.1.y), message (X.6.y, X.7.y), or generic (anything else, and no status)."""
    if not status:
        return StatusScope.GENERIC
    parts = status.split(".")
    if len(parts) != 3 or parts[0] not in ("4", "5"):
        return StatusScope.GENERIC
    _klass, subject, detail = parts
    if subject == "1" and detail not in _NOT_ADDRESS_DETAILS:
        return StatusScope.ADDRESS
    if subject == "6" and detail != "0":
        return StatusScope.MESSAGE
    if subject == "7" and detail in _MESSAGE_POLICY_DETAILS:
        return StatusScope.MESSAGE
    return StatusScope.GENERIC


def outranked(scope: StatusScope, reason: Reason) -> bool:
    """True when a text-only rule with this reason must yield to a status of this scope."""
    if scope is StatusScope.ADDRESS:
        return reason in MESSAGE_REASONS
    if scope is StatusScope.MESSAGE:
        return reason in HARD_REASONS
    return False
