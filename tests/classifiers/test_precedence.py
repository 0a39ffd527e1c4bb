"""Precedence between a specific enhanced status and text about something else (precedence.py)."""

from __future__ import annotations

import pytest

from classifiers import Outcome, Reason, classify
from classifiers.precedence import StatusScope, outranked, status_scope

H, S, P = Outcome.HARD, Outcome.SOFT, Outcome.POLICY


@pytest.mark.parametrize(
    ("status", "scope"),
    [
        ("5.1.1", StatusScope.ADDRESS),
        ("5.1.3", StatusScope.ADDRESS),
        ("5.1.10", StatusScope.ADDRESS),
        ("4.1.2", StatusScope.ADDRESS),
        ("5.1.0", StatusScope.GENERIC),
        ("5.1.7", StatusScope.GENERIC),  # the sender's address, not the recipient's
        ("5.1.8", StatusScope.GENERIC),
        ("5.6.1", StatusScope.MESSAGE),
        ("5.7.26", StatusScope.MESSAGE),
        ("5.7.0", StatusScope.GENERIC),
        ("5.7.1", StatusScope.GENERIC),
        ("5.7.13", StatusScope.GENERIC),
        ("5.7.27", StatusScope.GENERIC),
        ("5.7.17", StatusScope.GENERIC),  # mailbox owner has changed (RFC 7293)
        ("5.7.509", StatusScope.GENERIC),  # a vendor extension: the provider rules know it
        ("5.7.23", StatusScope.MESSAGE),
        ("5.0.0", StatusScope.GENERIC),
        ("5.2.2", StatusScope.GENERIC),
        (None, StatusScope.GENERIC),
        ("nonsense", StatusScope.GENERIC),
    ],
)
def test_status_scope(status: str | None, scope: StatusScope) -> None:
    assert status_scope(status) is scope


def test_outranked() -> None:
    assert outranked(StatusScope.ADDRESS, Reason.NOT_RFC_COMPLIANT)
    assert outranked(StatusScope.ADDRESS, Reason.VIRUS_DETECTED)
    assert not outranked(StatusScope.ADDRESS, Reason.RATE_LIMITED)  # sender-side text still wins
    assert outranked(StatusScope.MESSAGE, Reason.USER_UNKNOWN)
    assert not outranked(StatusScope.MESSAGE, Reason.AUTH_FAILURE)
    assert not outranked(StatusScope.GENERIC, Reason.USER_UNKNOWN)


# (status given by the report or None, diagnostic, outcome, reason)
CASES: list[tuple[str | None, str, Outcome, Reason]] = [
    # an address status is not overruled by text about the message
    (
        None,
        "553 5.1.3 <bob@example.com>: The recipient address <bob@example.com> is not a valid "
        "RFC 5321 address",
        H,
        Reason.INVALID_ADDRESS,
    ),
    (
        "5.1.1",
        "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown. "
        "This message was scanned for all viruses by the mail gateway.",
        H,
        Reason.USER_UNKNOWN,
    ),
    # ... but sender-side text still beats a recipient-looking status (GoDaddy)
    (
        None,
        "550 5.1.1 <bob@example.com> has sent to too many recipients this hour",
        P,
        Reason.RATE_LIMITED,
    ),
    # a message status is not turned into an address outcome by text
    (
        None,
        "550 5.7.26 Unauthenticated email is not accepted; address not found in policy table",
        P,
        Reason.AUTH_FAILURE,
    ),
    (
        "5.6.1",
        "554 5.6.1 Message content rejected: invalid address in header",
        P,
        Reason.CONTENT_REJECTED,
    ),
    # generic statuses let specific text decide
    ("5.0.0", "550 Mailbox does not exist", H, Reason.USER_UNKNOWN),
    (
        None,
        "550 5.7.1 <bob@example.com>: Recipient address rejected: User unknown",
        H,
        Reason.USER_UNKNOWN,
    ),
    (None, "550 5.7.27 Host does not accept mail", H, Reason.NULL_MX),
    # vague failures under a generic status are never hard
    ("5.0.0", "mailer error", S, Reason.SYSTEM_ERROR),
    ("5.0.0", "550 Message rejected", S, Reason.UNCLASSIFIED),
    ("5.0.0", "554 blocked", S, Reason.UNCLASSIFIED),
    ("5.0.0", "550 rejected", S, Reason.UNCLASSIFIED),
    # Postfix address verification quoting the probe's permanent answer inside a 450
    (
        "4.1.1",
        "450 4.1.1 <bob@example.com>: Recipient address rejected: undeliverable address: "
        "host mx.example.com[192.0.2.1] said: 550 5.1.1 <bob@example.com>: User unknown "
        "(in reply to RCPT TO command)",
        H,
        Reason.USER_UNKNOWN,
    ),
    (
        "4.1.1",
        "450 4.1.1 <bob@example.com>: Recipient address rejected: unverified address: "
        "Address verification in progress",
        S,
        Reason.USER_UNKNOWN,
    ),
    # a transient signal never yields hard
    (
        "4.1.1",
        "450 4.1.1 <bob@example.com>: Recipient address rejected: User unknown",
        S,
        Reason.USER_UNKNOWN,
    ),
]


@pytest.mark.parametrize(("status", "diagnostic", "outcome", "reason"), CASES)
def test_precedence(status: str | None, diagnostic: str, outcome: Outcome, reason: Reason) -> None:
    got = classify(status=status, diagnostic=diagnostic)
    assert (got.outcome, got.reason) == (outcome, reason), got.rule_id
