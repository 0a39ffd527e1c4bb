"""Behaviour on realistic reply lines, per provider and per reason family."""

from __future__ import annotations

import pytest

from classifiers import Classification, Outcome, Reason, classify, detect_provider

H, S, P, N = Outcome.HARD, Outcome.SOFT, Outcome.POLICY, Outcome.NONE

# (diagnostic, extra kwargs, outcome, reason)
CASES: list[tuple[str | None, dict[str, object], Outcome, Reason]] = [
    # Gmail
    (
        "550-5.1.1 The email account that you tried to reach does not exist. Please try\n"
        "550-5.1.1 double-checking the recipient's email address for typos or\n"
        "550 5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser a1si1 - gsmtp",
        {},
        H,
        Reason.USER_UNKNOWN,
    ),
    (
        "421-4.7.0 [192.0.2.1 15] Our system has detected an unusual rate of\n"
        "421-4.7.0 unsolicited mail originating from your IP address. To protect our\n"
        "421 4.7.0 users from spam, mail sent from your IP address has been temporarily rate limited.",
        {"remote_mta": "dns; gmail-smtp-in.l.google.com"},
        P,
        Reason.RATE_LIMITED,
    ),
    (
        "421-4.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail",
        {},
        P,
        Reason.RATE_LIMITED,
    ),
    (
        "550-5.7.26 Unauthenticated email from example.com is not accepted due to domain's\n"
        "550-5.7.26 DMARC policy. Please contact the administrator of example.com domain\n"
        "550 5.7.26 if this was a legitimate mail. a1si1 - gsmtp",
        {},
        P,
        Reason.AUTH_FAILURE,
    ),
    (
        "421 4.7.0 Try again later, closing connection. (EHLO) a1si1 - gsmtp",
        {},
        P,
        Reason.RATE_LIMITED,
    ),
    # Microsoft
    (
        "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302)",
        {"recipient_domain": "hotmail.com"},
        H,
        Reason.USER_UNKNOWN,
    ),
    (
        "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) "
        "[BN8NAM12FT000.eop-nam12.prod.protection.outlook.com]",
        {},
        H,
        Reason.USER_UNKNOWN,
    ),
    (
        "451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP "
        "reputation. For e-mail delivery information, see https://postmaster.live.com (S775)",
        {},
        P,
        Reason.BAD_REPUTATION,
    ),
    (
        "550 5.7.1 Service unavailable, Client host [192.0.2.1] blocked using Spamhaus. To request "
        "removal from this list see https://www.spamhaus.org/query/ip/192.0.2.1 AS(1450)",
        {"remote_mta": "example-com.mail.protection.outlook.com"},
        P,
        Reason.BLOCKED,
    ),
    (
        "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your "
        "Internet service provider since part of their network is on our block list (S3150).",
        {},
        P,
        Reason.BLOCKED,
    ),
    (
        "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
        {},
        P,
        Reason.BLOCKED,
    ),
    # Yahoo
    (
        "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume "
        "or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
        {},
        P,
        Reason.RATE_LIMITED,
    ),
    (
        "553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.1, because the ip is in "
        "Spamhaus's list; see https://postmaster.yahooinc.com/error-codes",
        {},
        P,
        Reason.BLOCKED,
    ),
    (
        "554 delivery error: dd This user doesn't have a yahoo.com account (user@yahoo.com) [0] "
        "- mta1001.mail.ne1.yahoo.com",
        {},
        H,
        Reason.USER_UNKNOWN,
    ),
    ("552 1 Requested mail action aborted, mailbox not found", {}, H, Reason.USER_UNKNOWN),
    # Apple
    ("550 5.1.1 <user@icloud.com>: user does not exist", {}, H, Reason.USER_UNKNOWN),
    (
        "554 5.7.1 [CS01] Message rejected due to local policy. Please visit "
        "https://support.apple.com/en-us/HT204137",
        {"recipient_domain": "icloud.com"},
        P,
        Reason.POLICY_REJECTED,
    ),
    # mailbox full: never hard
    ("452 4.2.2 <user@example.com>: Mailbox full", {}, S, Reason.MAILBOX_FULL),
    (
        "552 5.2.2 <user@example.com>: Quota exceeded (mailbox for user is full)",
        {},
        S,
        Reason.MAILBOX_FULL,
    ),
    (None, {"status": "5.2.2"}, S, Reason.MAILBOX_FULL),
    # expired, network, system
    ("4.4.7 Delivery time expired", {}, S, Reason.EXPIRED),
    (None, {"status": "4.4.7"}, S, Reason.EXPIRED),
    (
        "X-Postfix; connect to mx.example.com[192.0.2.9]:25: Connection timed out",
        {},
        S,
        Reason.NETWORK_ERROR,
    ),
    # generic families
    (
        "550 5.1.1 <user@example.com>: Recipient address rejected: User unknown in local recipient table",
        {},
        H,
        Reason.USER_UNKNOWN,
    ),
    (
        "smtp; 550 5.1.1 <user@example.com>... User unknown",
        {"status": "5.1.1"},
        H,
        Reason.USER_UNKNOWN,
    ),
    (
        "550 5.7.1 <user@example.com>: Recipient address rejected: User unknown",
        {},
        H,
        Reason.USER_UNKNOWN,
    ),
    ("554 5.7.1 <user@example.com>: Relay access denied", {}, P, Reason.RELAY_DENIED),
    (
        "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
        {},
        P,
        Reason.BLOCKED,
    ),
    ("550 5.7.1 Message rejected as spam by Content Filtering.", {}, P, Reason.SPAM_CONTENT),
    ("550 5.7.23 SPF validation failed", {}, P, Reason.AUTH_FAILURE),
    ("552 5.3.4 Message size exceeds fixed limit", {}, P, Reason.MESSAGE_TOO_LARGE),
    (
        "X-Postfix; Host or domain name not found. Name service error for name=example.invalid type=A: Host not found",
        {"status": "5.4.4"},
        H,
        Reason.DOMAIN_UNKNOWN,
    ),
    (
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        {},
        H,
        Reason.USER_UNKNOWN,
    ),
    ("556 5.1.10 Recipient address has null MX", {}, H, Reason.NULL_MX),
    ("550 5.1.6 recipient no longer on server: user@example.com", {}, H, Reason.MAILBOX_MOVED),
    ("550 5.2.1 <user@example.com>: Account disabled", {}, H, Reason.MAILBOX_DISABLED),
    ("501 5.1.8 Sender address rejected: Domain not found", {}, P, Reason.SENDER_REJECTED),
    (
        "450 4.7.1 Client host rejected: cannot find your hostname, [192.0.2.10]",
        {},
        P,
        Reason.REQUIRE_PTR,
    ),
    ("530 5.7.0 Must issue a STARTTLS command first", {}, P, Reason.TLS_REQUIRED),
    ("550 Virus Detected; Content Rejected", {}, P, Reason.VIRUS_DETECTED),
    ("452 4.5.3 Too many recipients", {}, P, Reason.TOO_MANY_RECIPIENTS),
    # text beats a recipient-looking status
    (
        "550 5.1.1 <user@example.com> - 192.0.2.2 has sent to too many recipients this hour. IB607",
        {},
        P,
        Reason.RATE_LIMITED,
    ),
    # a transient code never makes a hard bounce
    (
        "450 4.1.1 <user@example.com>: Recipient address rejected: User unknown",
        {},
        S,
        Reason.USER_UNKNOWN,
    ),
    (None, {"status": "4.1.1"}, S, Reason.USER_UNKNOWN),
    # status only: RFC 3463 table
    (None, {"status": "5.1.1"}, H, Reason.USER_UNKNOWN),
    (None, {"status": "5.7.1"}, P, Reason.POLICY_REJECTED),
    # success
    ("250 2.0.0 OK 1714400000 a1si1 - gsmtp", {}, N, Reason.DELIVERED),
]


@pytest.mark.parametrize(("diagnostic", "extra", "outcome", "reason"), CASES)
def test_classify(
    diagnostic: str | None, extra: dict[str, object], outcome: Outcome, reason: Reason
) -> None:
    got = classify(diagnostic=diagnostic, **extra)  # type: ignore[arg-type]
    assert (got.outcome, got.reason) == (outcome, reason), got.rule_id


def test_nothing_at_all_is_unclassified() -> None:
    assert classify() == Classification(Outcome.SOFT, Reason.UNCLASSIFIED, "unclassified")


@pytest.mark.parametrize("status", ["5.0.0", "5.1.0", "5.2.0", "5.7.0", "4.0.0"])
def test_generic_status_without_text_is_unclassified(status: str) -> None:
    assert classify(status=status).rule_id == "unclassified"


def test_unknown_text_is_unclassified_and_soft() -> None:
    got = classify(diagnostic="550 Something nobody has ever seen before")
    assert got == Classification(Outcome.SOFT, Reason.UNCLASSIFIED, "unclassified")


def test_mailbox_unavailable_depends_on_provider() -> None:
    text = "550 Requested action not taken: mailbox unavailable"
    assert classify(diagnostic=text, recipient_domain="outlook.com").outcome is H
    assert classify(diagnostic=text, recipient_domain="web.de").outcome is H
    assert classify(diagnostic=text, recipient_domain="example.com").outcome is S


def test_5_7_1_recipient_text_is_user_level_but_not_hard() -> None:
    got = classify(diagnostic="550 5.7.1 Requested action not taken: mailbox unavailable")
    assert (got.outcome, got.reason) == (S, Reason.MAILBOX_UNAVAILABLE)


def test_generic_dsn_status_yields_to_specific_text_status() -> None:
    got = classify(status="5.0.0", diagnostic="550 5.2.2 <user@example.com>... Over quota")
    assert got.outcome is S
    got = classify(
        status="5.0.0 (permanent failure)",
        diagnostic="smtp; 5.1.0 - Unknown address error 550-'5.7.1 <x@example.com>... Access denied'",
    )
    assert got.outcome is P


def test_transcript_success_lines_do_not_hide_the_failure() -> None:
    text = "Out: 250 2.1.0 Ok In: RCPT TO:<user@example.com> Out: 550 5.1.1 <user@example.com>: Recipient address rejected: User unknown"
    assert classify(diagnostic=text).outcome is H
    assert classify(status="5.1.1", diagnostic="Out: 250 2.1.5 Ok").outcome is H


def test_explicit_provider_gates_provider_rules() -> None:
    text = "421 4.7.0 Try again later, closing connection."
    assert classify(diagnostic=text, provider="gmail").rule_id == "gmail-try-again-later"
    assert classify(diagnostic=text).rule_id != "gmail-try-again-later"


def test_case_and_whitespace_do_not_matter() -> None:
    a = classify(diagnostic="550 5.1.1   USER\n   UNKNOWN")
    b = classify(diagnostic="550 5.1.1 user unknown")
    assert a == b


@pytest.mark.parametrize(
    ("remote_mta", "domain", "expected"),
    [
        ("gmail-smtp-in.l.google.com", None, "gmail"),
        ("dns; alt1.aspmx.l.google.com.", "example.com", "gmail"),
        ("example-com.mail.protection.outlook.com", None, "microsoft"),
        ("hotmail-com.olc.protection.outlook.com", None, "microsoft"),
        ("mta7.am0.yahoodns.net", None, "yahoo"),
        ("mx01.mail.icloud.com", None, "apple"),
        ("mx0a-001.pphosted.com", None, "proofpoint"),
        ("notgoogle.com", None, None),
        (None, "gmail.com", "gmail"),
        (None, "googlemail.com", "gmail"),
        (None, "hotmail.co.uk", "microsoft"),
        (None, "live.fr", "microsoft"),
        (None, "msn.com", "microsoft"),
        (None, "yahoo.co.uk", "yahoo"),
        (None, "yahoo.co.jp", None),
        (None, "aol.com", "yahoo"),
        (None, "ymail.com", "yahoo"),
        (None, "me.com", "apple"),
        (None, "mac.com", "apple"),
        (None, "live.example.com", None),
        (None, "gmx.de", "gmx"),
        (None, "example.com", None),
        (None, None, None),
    ],
)
def test_detect_provider(remote_mta: str | None, domain: str | None, expected: str | None) -> None:
    assert detect_provider(remote_mta=remote_mta, recipient_domain=domain) == expected
