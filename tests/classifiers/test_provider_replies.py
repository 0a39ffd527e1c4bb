"""Provider reply tables: one published reply line per provider rule, with its expected outcome.

Each line is written from the provider's own page (cited in the rule's ``source``), anonymised.
"""

from __future__ import annotations

import pytest

from classifiers import Outcome, Reason, classify

H, S, P = Outcome.HARD, Outcome.SOFT, Outcome.POLICY

# (reply line, provider or None, outcome, reason, rule id)
LINES: list[tuple[str, str | None, Outcome, Reason, str]] = [
    # Gmail (support.google.com/a/answer/3726730)
    (
        "450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered. Please resend your message at a later time. - gsmtp",
        None,
        S,
        Reason.RATE_LIMITED,
        "gmail-recipient-receiving-too-fast",
    ),
    (
        "550 5.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered. For more information, go to https://support.google.com/mail/?p=ReceivingRate - gsmtp",
        None,
        S,
        Reason.RATE_LIMITED,
        "gmail-recipient-receiving-too-fast",
    ),
    (
        "550 5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy. - gsmtp",
        None,
        P,
        Reason.AUTH_FAILURE,
        "gmail-authentication",
    ),
    (
        "550 5.1.1 The email account that you tried to reach does not exist. - gsmtp",
        None,
        H,
        Reason.USER_UNKNOWN,
        "gmail-user-unknown",
    ),
    (
        "452 4.5.3 Domain policy size per transaction exceeded, please try this recipient in a separate transaction. - gsmtp",
        None,
        P,
        Reason.TOO_MANY_RECIPIENTS,
        "gmail-recipients-per-transaction",
    ),
    (
        "550 5.7.1 [192.0.2.1] The IP you're using to send mail is not authorized to send email directly to our servers. - gsmtp",
        None,
        P,
        Reason.BLOCKED,
        "gmail-ip-not-authorized",
    ),
    ("550 5.7.1 Email quota exceeded. - gsmtp", None, P, Reason.RATE_LIMITED, "gmail-sender-quota"),
    (
        "554 5.7.0 Too many unauthenticated commands. - gsmtp",
        None,
        P,
        Reason.SECURITY_ERROR,
        "gmail-unauthenticated-commands",
    ),
    # Microsoft (learn.microsoft.com NDR pages)
    (
        "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)",
        None,
        H,
        Reason.USER_UNKNOWN,
        "microsoft-directory-edge-blocking",
    ),
    (
        "550 5.7.504 Recipient address rejected: Access denied",
        None,
        S,
        Reason.MAILBOX_UNAVAILABLE,
        "microsoft-recipient-rejected",
    ),
    (
        "550 5.7.505 Access denied, banned recipient",
        None,
        S,
        Reason.MAILBOX_UNAVAILABLE,
        "microsoft-recipient-rejected",
    ),
    (
        "450 4.2.121 RESOLVER.RST.RecipientThrottled; per hour message receive limit from specific sender exceeded",
        None,
        S,
        Reason.RATE_LIMITED,
        "microsoft-recipient-throttled",
    ),
    (
        "550 5.2.122 The recipient has exceeded their limit for the number of messages they can receive per hour.",
        None,
        S,
        Reason.RATE_LIMITED,
        "microsoft-recipient-throttled",
    ),
    (
        "550 5.7.510 Access denied, example.com does not accept email over IPv6",
        None,
        P,
        Reason.POLICY_REJECTED,
        "microsoft-banned-recipient",
    ),
    (
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        None,
        H,
        Reason.USER_UNKNOWN,
        "microsoft-recipient-not-found",
    ),
    # Yahoo / AOL (senders.yahooinc.com/smtp-error-codes)
    (
        "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints",
        None,
        P,
        Reason.RATE_LIMITED,
        "yahoo-temporarily-deferred",
    ),
    (
        "554 delivery error: dd This user doesn't have a yahoo.com account (user@yahoo.com) [0] - mta1.mail.example.yahoo.com",
        None,
        H,
        Reason.USER_UNKNOWN,
        "yahoo-no-account",
    ),
    (
        "521 5.2.1 : AOL will not accept delivery of this message.",
        None,
        P,
        Reason.POLICY_REJECTED,
        "aol-will-not-accept",
    ),
    (
        "421 DNS:NR - mx.aol.com: connection from 192.0.2.1 refused, no reverse DNS",
        None,
        P,
        Reason.REQUIRE_PTR,
        "aol-no-reverse-dns",
    ),
    (
        "554 RTR:BB - mx.aol.com: connection refused from 192.0.2.1",
        None,
        P,
        Reason.BLOCKED,
        "aol-legacy-block-codes",
    ),
    # Apple iCloud
    (
        "550 5.1.1 <user@icloud.com>: user does not exist",
        "apple",
        H,
        Reason.USER_UNKNOWN,
        "apple-user-unknown",
    ),
    (
        "554 5.7.1 [CS01] Message rejected due to local policy.",
        None,
        P,
        Reason.POLICY_REJECTED,
        "apple-local-policy",
    ),
    # Facebook
    (
        "550 5.1.1 RCP-P1 http://postmaster.facebook.com/response_codes?ip=192.0.2.54#rcp Refused due to recipient",
        None,
        H,
        Reason.USER_UNKNOWN,
        "facebook-recipient-unknown",
    ),
    (
        "550 5.1.1 RCP-P2 http://postmaster.facebook.com/response_codes?ip=192.0.2.54#rcp Refused due to recipient preferences",
        None,
        S,
        Reason.MAILBOX_UNAVAILABLE,
        "facebook-recipient-refuses",
    ),
    (
        "554 5.7.1 POL-P2 http://postmaster.facebook.com/response_codes?ip=192.0.2.54#pol Facebook will no longer accept mail from your mail server's IP address",
        None,
        P,
        Reason.BLOCKED,
        "facebook-policy",
    ),
    (
        "421 4.7.1 CON-T1 http://postmaster.facebook.com/response_codes#con Too many concurrent connections",
        None,
        P,
        Reason.RATE_LIMITED,
        "facebook-rate",
    ),
    # Cox
    (
        "554 5.7.1 cox.net 192.0.2.1 rejected: IP on Cox blocklist. AUP#CXBL",
        None,
        P,
        Reason.BLOCKED,
        "cox-blocked",
    ),
    (
        "421 4.7.0 cox.net too many connections from 192.0.2.1 AUP#CXCNCT",
        None,
        P,
        Reason.RATE_LIMITED,
        "cox-rate",
    ),
    (
        "554 5.7.1 cox.net 192.0.2.1 rejected: no reverse DNS. AUP#CXDNS",
        None,
        P,
        Reason.REQUIRE_PTR,
        "cox-ptr",
    ),
    (
        "554 5.7.1 cox.net message refused by policy. AUP#CXSNDR",
        None,
        P,
        Reason.POLICY_REJECTED,
        "cox-other-aup",
    ),
    # Charter / Spectrum
    (
        "550 5.1.0 <bounce@example.com> sender rejected. Please see https://www.spectrum.net/support/internet/understanding-email-error-codes for more information. AUP#In-1310",
        None,
        P,
        Reason.RATE_LIMITED,
        "spectrum-rate",
    ),
    (
        "554 5.7.1 192.0.2.1 blocked due to suspicious activity. AUP#1000",
        None,
        P,
        Reason.BLOCKED,
        "spectrum-blocked",
    ),
    # QQ
    (
        "550 Ip frequency limited. http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000725",
        None,
        P,
        Reason.RATE_LIMITED,
        "qq-frequency-limited",
    ),
    (
        "550 Mail content denied. http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000726",
        None,
        P,
        Reason.SPAM_CONTENT,
        "qq-content-denied",
    ),
    ("550 Your IP address is in blacklist.", None, P, Reason.BLOCKED, "qq-blocked"),
    # NetEase / 163
    (
        "554 DT:SPM 163 mx.example.net, please see http://mail.163.com/help/help_spam_16.htm?ip=192.0.2.1",
        None,
        P,
        Reason.SPAM_CONTENT,
        "netease-spam",
    ),
    (
        "451 RP:QRC 163 mx.example.net, quota of recipients per day exceeded",
        None,
        P,
        Reason.RATE_LIMITED,
        "netease-rate",
    ),
    (
        "550 MI:SPF 163 mx.example.net, SPF check failed",
        None,
        P,
        Reason.AUTH_FAILURE,
        "netease-auth",
    ),
    ("554 HL:IPB 163 mx.example.net, IP blocked", None, P, Reason.BLOCKED, "netease-blocked"),
    (
        "550 MI:NHD 163 mx.example.net, HELO not valid",
        None,
        P,
        Reason.POLICY_REJECTED,
        "netease-policy",
    ),
    # Coremail, au / KDDI
    ("552 too many same size mails", None, P, Reason.RATE_LIMITED, "coremail-same-size"),
    ("X-SPASIGN: NG", None, P, Reason.SPAM_CONTENT, "au-spasign-ng"),
    # Orange
    (
        "550 5.1.1 Adresse d au moins un destinataire invalide. Invalid recipient. OFR_416 [416]",
        None,
        H,
        Reason.USER_UNKNOWN,
        "orange-invalid-recipient",
    ),
    (
        "550 5.7.1 Mail rejete. Mail rejected. OFR_506 [506]",
        None,
        P,
        Reason.SPAM_CONTENT,
        "orange-spam",
    ),
    # GoDaddy / secureserver.net
    (
        "550 5.1.1 <user@example.com> - 192.0.2.222 has sent to too many recipients this hour. IB607 <http://x.co/rlbounce>",
        None,
        P,
        Reason.RATE_LIMITED,
        "godaddy-codes",
    ),
    (
        "550 5.1.0 192.0.2.222 is not allowed to send from <example.net> per its SPF Record. IB508 <http://x.co/srbounce>",
        None,
        P,
        Reason.AUTH_FAILURE,
        "godaddy-spf",
    ),
    (
        "554 192.0.2.1 rejected: message looks suspicious. IB212 <http://x.co/esbounce>",
        None,
        P,
        Reason.POLICY_REJECTED,
        "godaddy-other-codes",
    ),
    # Mimecast
    (
        "550 Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550",
        None,
        H,
        Reason.USER_UNKNOWN,
        "mimecast-invalid-recipient",
    ),
    (
        "451 Internal resource temporarily unavailable - https://community.mimecast.com/docs/DOC-1369#451",
        None,
        S,
        Reason.SYSTEM_ERROR,
        "mimecast-temporary",
    ),
    (
        "550 Envelope rejected - https://community.mimecast.com/docs/DOC-1369#550",
        None,
        P,
        Reason.POLICY_REJECTED,
        "mimecast-envelope-rejected",
    ),
    # MessageLabs / Symantec
    (
        "553-Message filtered. Refer to the Troubleshooting page at http://www.symanteccloud.com/troubleshooting for more information. (#5.7.1)",
        None,
        P,
        Reason.SPAM_CONTENT,
        "messagelabs-filtered",
    ),
    (
        "501 Connection rejected by policy [7.7] 20805, please visit www.messagelabs.com/support for more details about this error message.",
        None,
        P,
        Reason.BLOCKED,
        "messagelabs-connection-policy",
    ),
    # T-Online, Zoho, IONOS
    (
        "554 IP=192.0.2.1 - A problem occurred. (Ask your postmaster for help or to contact tosa@rx.t-online.de to clarify.) (BL)",
        None,
        P,
        Reason.BLOCKED,
        "tonline-blocked",
    ),
    (
        "550 5.4.6 Unusual sending activity detected. Please try after sometime.",
        None,
        P,
        Reason.RATE_LIMITED,
        "zoho-unusual-activity",
    ),
    ("554 5.1.8 Email Outgoing Blocked.", None, P, Reason.SECURITY_ERROR, "zoho-outgoing-blocked"),
    (
        "550 Requested action not taken: mailbox unavailable",
        "ionos",
        H,
        Reason.USER_UNKNOWN,
        "gmx-mailbox-unavailable",
    ),
    # Comcast
    (
        "550 5.1.1 <user@comcast.net> Not our Customer",
        None,
        H,
        Reason.USER_UNKNOWN,
        "comcast-not-our-customer",
    ),
    (
        "554 5.7.1 resimta comcast 192.0.2.1 Message refused. Please visit https://postmaster.comcast.net/smtp-error-codes.php#MR000001",
        None,
        P,
        Reason.POLICY_REJECTED,
        "comcast-other-codes",
    ),
    # Barracuda
    (
        "554 5.7.1 Message blocked by Intent Analysis: URL of a known spam site",
        None,
        P,
        Reason.SPAM_CONTENT,
        "barracuda-intent",
    ),
    (
        "550 5.7.1 Message content rejected, UBE, id=12345-02-678",
        None,
        P,
        Reason.SPAM_CONTENT,
        "barracuda-ube",
    ),
]


@pytest.mark.parametrize(("line", "provider", "outcome", "reason", "rule_id"), LINES)
def test_provider_reply(
    line: str, provider: str | None, outcome: Outcome, reason: Reason, rule_id: str
) -> None:
    got = classify(diagnostic=line, provider=provider)
    assert (got.outcome, got.reason, got.rule_id) == (outcome, reason, rule_id)


def test_recipient_side_rate_limits_are_never_hard() -> None:
    for line, *_ in LINES:
        if "receiving mail at a rate" in line or "RecipientThrottled" in line:
            assert classify(diagnostic=line).outcome is not H
