"""Wording under generic codes: the text decides when the status says little (X.0.0, 5.7.1)."""

from __future__ import annotations

import pytest

from classifiers import Outcome, Reason, classify

H, S, P = Outcome.HARD, Outcome.SOFT, Outcome.POLICY

# (status given by the report, diagnostic, outcome, reason)
CASES: list[tuple[str | None, str, Outcome, Reason]] = [
    # the recipient is gone, said in words
    ("5.0.0", "550 <user@example.com> does not exist", H, Reason.USER_UNKNOWN),
    ("5.0.0", "550 No mail box available for this user", H, Reason.USER_UNKNOWN),
    ("5.7.1", "550 5.7.1 BAD_RECIPIENT", H, Reason.USER_UNKNOWN),
    ("5.0.0", "550 This is not an active address", H, Reason.MAILBOX_DISABLED),
    ("5.0.0", "550 Nonexistent user", H, Reason.USER_UNKNOWN),
    ("5.0.0", "550 mail-box not found", H, Reason.USER_UNKNOWN),
    ("5.0.0", "550 Mailbox unknown", H, Reason.USER_UNKNOWN),
    (
        "5.0.0",
        "You sent mail to user@example.com but user@example.com is not a valid user here",
        H,
        Reason.USER_UNKNOWN,
    ),
    # host unknown / unroutable domain
    ("5.0.0", "Host unknown", H, Reason.DOMAIN_UNKNOWN),
    ("5.0.0", "550 Host unknown", H, Reason.DOMAIN_UNKNOWN),
    ("5.0.0", "host example.invalid not found", H, Reason.DOMAIN_UNKNOWN),
    ("5.0.0", "X-Postfix; Name or service not known", H, Reason.DOMAIN_UNKNOWN),
    ("5.0.0", "Unrouteable address", H, Reason.DOMAIN_UNKNOWN),
    ("5.0.0", 'unrouteable mail domain "example.invalid"', H, Reason.DOMAIN_UNKNOWN),
    ("5.0.0", "an MX or SRV record indicated no SMTP service", H, Reason.NULL_MX),
    ("5.0.0", "550 remote domain doesnt exist", H, Reason.DOMAIN_UNKNOWN),
    (None, "550 5.4.4 Unable to route", H, Reason.DOMAIN_UNKNOWN),
    (None, "550 5.1.2 Host not found", H, Reason.DOMAIN_UNKNOWN),
    (None, "450 4.4.4 Unable to route", S, Reason.DOMAIN_UNKNOWN),
    (
        "4.0.0",
        "X-Postfix; Host or domain name not found. Name service error for name=example.com type=MX: Host not found, try again",
        S,
        Reason.NETWORK_ERROR,
    ),
    ("5.0.0", "550 the domain example.invalid doesn't exist", H, Reason.DOMAIN_UNKNOWN),
    ("5.0.0", "550 Sender domain example.invalid does not exist", P, Reason.SENDER_REJECTED),
    (
        "5.0.0",
        "553 sorry, this recipient is not in my validrcptto list (#5.7.1)",
        H,
        Reason.USER_UNKNOWN,
    ),
    ("5.0.0", "550 utilisateur inconnu !", H, Reason.USER_UNKNOWN),
    ("5.0.0", "550 Sender <bounce@example.com> not found", P, Reason.SENDER_REJECTED),
    (
        "5.0.0",
        "550 Address user@example.com has been replaced by user2@example.org",
        H,
        Reason.MAILBOX_MOVED,
    ),
    (
        "4.0.0",
        "delivery temporarily suspended: connect to mx.example.com[192.0.2.1]:25: Connection refused",
        S,
        Reason.NETWORK_ERROR,
    ),
    (None, "521 mx.example.com", H, Reason.NULL_MX),
    (
        None,
        "521 5.7.1 Service unavailable; client [192.0.2.1] blocked using dnsbl.example.org",
        P,
        Reason.BLOCKED,
    ),
    # null MX (RFC 7505), but not Microsoft's IPv4/IPv6 transport refusal
    (None, "556 5.1.10 Recipient address has null MX", H, Reason.NULL_MX),
    ("5.0.0", "550 Host does not accept mail", H, Reason.NULL_MX),
    (
        None,
        "550 5.7.510 Access denied, example.com does not accept email over IPv6",
        P,
        Reason.POLICY_REJECTED,
    ),
    # about the message or the sender
    (
        "5.0.0",
        "malformed address: <user@example.net> may not follow user@example.org",
        P,
        Reason.NOT_RFC_COMPLIANT,
    ),
    (None, "550 Insecure Mail Relay", P, Reason.BLOCKED),
    (None, "550 Blacklisted URL in message", P, Reason.SPAM_CONTENT),
    (None, "550 Blocklisted URL in message", P, Reason.SPAM_CONTENT),
    (None, "554 5.7.0 Header error", P, Reason.NOT_RFC_COMPLIANT),
    ("5.0.0", "user@example.com is not a member of this mailing list", P, Reason.POLICY_REJECTED),
    ("5.0.0", "Sorry, only subscribers may post.", P, Reason.POLICY_REJECTED),
    ("5.0.0", "554 Not accepting mail from sender@example.org", P, Reason.BLOCKED),
    (None, "452 4.5.3 Submission quota exceeded", P, Reason.RATE_LIMITED),
    (None, "550 5.7.1 Too many messages with the same Message-ID", P, Reason.RATE_LIMITED),
    (None, "450 4.7.1 Sending quota exceeded, try again later", P, Reason.RATE_LIMITED),
    # sender throttles worded "try again later" under a 4.7.x policy status
    (None, "421 4.7.0 Try again later, closing connection.", P, Reason.RATE_LIMITED),
    (None, "451 4.7.1 Temporarily rejected. Try again later.", P, Reason.RATE_LIMITED),
    (None, "451 4.3.0 Mail server temporarily rejected message.", S, Reason.SYSTEM_ERROR),
    (None, "552 5.2.2 Message quota exceeded", S, Reason.MAILBOX_FULL),
    # transient states
    ("5.0.0", "Inbox is full", S, Reason.MAILBOX_FULL),
    ("5.0.0", "Delivery failed 20 attempts", S, Reason.EXPIRED),
    (
        "4.0.0",
        "I'm not going to try again; this message has been in the queue too long.",
        S,
        Reason.EXPIRED,
    ),
    ("5.0.0", "Envelope expired", S, Reason.EXPIRED),
    (
        None,
        "450 4.2.0 <user@example.com>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.com.html",
        S,
        Reason.GREYLISTED,
    ),
    (None, "451 4.7.1 Please try again in 5 minutes", S, Reason.GREYLISTED),
    (None, "451 Greylisted, please retry later", S, Reason.GREYLISTED),
    # a scanning footer is not a virus verdict
    (
        "5.1.1",
        "550 5.1.1 <user@example.com>: User unknown. This message was scanned for all viruses.",
        H,
        Reason.USER_UNKNOWN,
    ),
    (
        "5.0.0",
        "550 User unknown. This message has been scanned for viruses and malware.",
        H,
        Reason.USER_UNKNOWN,
    ),
    (
        None,
        "554 5.7.1 Message rejected: virus found (Eicar-Test-Signature)",
        P,
        Reason.VIRUS_DETECTED,
    ),
    (
        "5.0.0",
        "550 User unknown. This email has been scanned for spam and viruses.",
        H,
        Reason.USER_UNKNOWN,
    ),
    (None, "554 5.7.1 Message rejected as spam", P, Reason.SPAM_CONTENT),
    # Japanese notices, GroupWise, MDaemon, OpenSMTPD
    (
        None,
        "宛先不明 : user@example.jp 送信先のメールアドレスが存在しません。",
        H,
        Reason.USER_UNKNOWN,
    ),
    (None, "ユーザが存在しません", H, Reason.USER_UNKNOWN),
    (None, "送信先のメールアドレスが見つかりません", H, Reason.USER_UNKNOWN),
    ("5.0.0", "550 存在しないメールアドレスです", H, Reason.USER_UNKNOWN),
    # "does not exist" about the domain is the domain's, not the user's
    ("5.0.0", "ドメインが存在しません", H, Reason.DOMAIN_UNKNOWN),
    ("5.0.0", "550 指定されたユーザーは存在しません", H, Reason.USER_UNKNOWN),
    ("5.0.0", "User not on post office", H, Reason.USER_UNKNOWN),
    ("5.0.0", "Name server reports domain name unknown", H, Reason.DOMAIN_UNKNOWN),
    ("5.0.0", "No MX found for domain", H, Reason.DOMAIN_UNKNOWN),
    ("4.0.0", "No MX found for domain", S, Reason.DOMAIN_UNKNOWN),
    # RFC 5321's stock 550 text: an unknown mailbox or a policy refusal, the words do not say
    (None, "550 Requested action not taken: mailbox unavailable", S, Reason.MAILBOX_UNAVAILABLE),
    ("5.0.0", "550 Requested action not taken: mailbox unavailable", S, Reason.MAILBOX_UNAVAILABLE),
    ("5.1.1", "550 5.1.1 Requested action not taken: mailbox unavailable", H, Reason.USER_UNKNOWN),
    # Zoho: the server's words after "ERROR CODE :550 -" decide
    (
        None,
        "ERROR CODE :550 - Requested action not taken: mailbox unavailable",
        S,
        Reason.MAILBOX_UNAVAILABLE,
    ),
    (None, "ERROR CODE :550 - 5.1.1 <user@example.org>: User unknown", H, Reason.USER_UNKNOWN),
    (
        None,
        "This is a permanent error. ResponseCode 421, , Host not reachable.]",
        S,
        Reason.EXPIRED,
    ),
    (None, "421 Host not reachable", S, Reason.SYSTEM_ERROR),
    # au's spam filter verdict
    (None, "X-SPASIGN: NG", P, Reason.SPAM_CONTENT),
    # not hard by itself
    (
        None,
        "Each of the following recipients was rejected by a remote mail server.",
        S,
        Reason.UNCLASSIFIED,
    ),
    ("5.0.0", "no valid recipients were found", S, Reason.UNCLASSIFIED),
    ("5.0.0", "mailer error", S, Reason.SYSTEM_ERROR),
]


@pytest.mark.parametrize(("status", "diagnostic", "outcome", "reason"), CASES)
def test_wording(status: str | None, diagnostic: str, outcome: Outcome, reason: Reason) -> None:
    got = classify(status=status, diagnostic=diagnostic)
    assert (got.outcome, got.reason) == (outcome, reason), got.rule_id
