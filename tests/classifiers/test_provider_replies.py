"""Provider reply tables: one published reply line per provider rule, with its expected outcome.

Each line is written from the provider's own page (cited in the rule's ``source``), anonymised.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from classifiers import Outcome, Reason, classify, default_rules

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
        "This is a permanent error. ResponseCode 421, , Host not reachable.]",
        None,
        S,
        Reason.EXPIRED,
        "zoho-gave-up",
    ),
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
    # every other provider rule: one published line each
    (
        "452-4.2.2 The email account that you tried to reach is over quota. Please direct 452-4.2.2 the recipient to https://support.google.com/mail/?p=OverQuotaTemp h1si2345678qkd.12 - gsmtp",
        None,
        S,
        Reason.MAILBOX_FULL,
        "gmail-over-quota",
    ),
    (
        "550-5.2.1 The email account that you tried to reach is disabled. Learn more at\n550 5.2.1  https://support.google.com/mail/?p=DisabledUser z1si1234567pfa.22 - gsmtp",
        None,
        H,
        Reason.MAILBOX_DISABLED,
        "gmail-account-disabled",
    ),
    (
        "450 4.2.1 The user you are trying to contact is not receiving mail at this time. f3si1234567wrc.5 - gsmtp",
        None,
        S,
        Reason.MAILBOX_UNAVAILABLE,
        "gmail-recipient-not-receiving",
    ),
    (
        "421-4.7.28 [192.0.2.10      15] Our system has detected an unusual rate of\n421-4.7.28 unsolicited mail originating from your IP address. To protect our\n421-4.7.28 users from spam, mail sent from your IP address has been temporarily\n421-4.7.28 rate limited. For more information, go to\n421 4.7.28  https://support.google.com/mail/?p=UnsolicitedRateLimitError p4si3522070uam.9 - gsmtp",
        None,
        P,
        Reason.RATE_LIMITED,
        "gmail-unsolicited-rate",
    ),
    (
        "550-5.7.1 [192.0.2.10] Our system has detected that this message is likely suspicious due to the very low reputation of the sending IP address. 550 5.7.1 https://support.google.com/mail/?p=UnsolicitedIPError k2si1234qkb.2 - gsmtp",
        None,
        P,
        Reason.BAD_REPUTATION,
        "gmail-low-reputation",
    ),
    (
        "550-5.7.1 [192.0.2.10 12] Our system has detected that this message is 550-5.7.1 likely unsolicited mail. To reduce the amount of spam sent to Gmail, 550-5.7.1 this message has been blocked. 550 5.7.1 https://support.google.com/mail/?p=UnsolicitedMessageError e6si12qkb.3 - gsmtp",
        None,
        P,
        Reason.SPAM_CONTENT,
        "gmail-likely-spam",
    ),
    (
        "550-5.7.25 [192.0.2.10] The IP address sending this message does not have a 550-5.7.25 PTR record setup, or the corresponding forward DNS entry does not 550-5.7.25 point to the sending IP. As a policy, Gmail does not accept messages 550 5.7.25 from IPs with missing PTR records. b1si1wrb.2 - gsmtp",
        None,
        P,
        Reason.REQUIRE_PTR,
        "gmail-ptr",
    ),
    (
        "421 4.7.0 TLS required for RCPT domain, closing connection. c8si1qkb.4 - gsmtp",
        None,
        P,
        Reason.TLS_REQUIRED,
        "gmail-tls-required",
    ),
    (
        "421 4.7.0 IP not in whitelist for RCPT domain, closing connection. a1si1wrb.1 - gsmtp",
        None,
        P,
        Reason.POLICY_REJECTED,
        "gmail-ip-not-allowed",
    ),
    (
        "421 4.7.0 Try again later, closing connection. (EHLO) u2si1qkb.9 - gsmtp",
        "gmail",
        P,
        Reason.RATE_LIMITED,
        "gmail-try-again-later",
    ),
    (
        "550 5.4.5 Daily user sending limit exceeded. For more information on Gmail sending limits go to https://support.google.com/a/answer/166852 n3si1qkb.7 - gsmtp",
        None,
        P,
        Reason.RATE_LIMITED,
        "gmail-sending-limit",
    ),
    (
        "421 4.3.0 Temporary System Problem.  Try again later (10). p7si1qkb.2 - gsmtp",
        "gmail",
        S,
        Reason.SYSTEM_ERROR,
        "gmail-temporary-system-problem",
    ),
    (
        "552-5.2.3 Your message exceeded Google's message size limits. Please visit 552 5.2.3 https://support.google.com/mail/?p=MaxSizeError q5si1qkb.3 - gsmtp",
        None,
        P,
        Reason.MESSAGE_TOO_LARGE,
        "gmail-message-too-large",
    ),
    (
        "550-5.7.1 [192.0.2.10 13] Messages with multiple addresses in From: header are not accepted. v14si1155795plk.134 - gsmtp",
        None,
        P,
        Reason.NOT_RFC_COMPLIANT,
        "gmail-multiple-from",
    ),
    (
        "553-5.1.2 We weren't able to find the recipient domain. Please check for any 553-5.1.2 spelling errors, and make sure you didn't enter any spaces, periods, 553 5.1.2 or other punctuation after the recipient's email address. r9si1qkb.5 - gsmtp",
        None,
        H,
        Reason.DOMAIN_UNKNOWN,
        "gmail-recipient-domain-not-found",
    ),
    (
        "552-5.7.0 This message was blocked because its content presents a potential 552-5.7.0 security issue. Please visit 552 5.7.0 https://support.google.com/mail/?p=BlockedMessage d2si1qkb.1 - gsmtp",
        None,
        P,
        Reason.CONTENT_REJECTED,
        "gmail-attachment-security",
    ),
    (
        "Your email to group team@example.com was rejected due to spam classification. To address this issue: contact the owner of the group.",
        None,
        P,
        Reason.SPAM_CONTENT,
        "gmail-group-spam",
    ),
    (
        "The recipient server did not accept our requests to connect. Learn more at https://support.google.com/mail/answer/7720 [mx.example.net 192.0.2.25: timed out]",
        None,
        S,
        Reason.NETWORK_ERROR,
        "gmail-sender-remote-connect",
    ),
    (
        "550 5.7.1 Recipient address rejected: Access denied. AS(201806281) [SN1NAM02FT000.eop-nam02.prod.protection.outlook.com]",
        None,
        H,
        Reason.USER_UNKNOWN,
        "microsoft-dbeb-code",
    ),
    (
        "451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation. For e-mail delivery information, see https://postmaster.live.com (S775) [AM6EUR05FT000.eop-eur05.prod.protection.outlook.com]",
        None,
        P,
        Reason.BAD_REPUTATION,
        "microsoft-ip-reputation",
    ),
    (
        "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150). You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors. [CO1NAM11FT000.eop-nam11.prod.protection.outlook.com]",
        None,
        P,
        Reason.BLOCKED,
        "microsoft-network-block-list",
    ),
    (
        "550 5.7.606 Access denied, banned sending IP [192.0.2.1]. To request removal from this list please visit https://sender.office.com/ and follow the directions. For more information please go to http://go.microsoft.com/fwlink/?LinkID=526655 AS(1430)",
        None,
        P,
        Reason.BLOCKED,
        "microsoft-banned-sending-ip",
    ),
    (
        "550 SC-001 (BAY004-MC1F13) Unfortunately, messages from 192.0.2.1 weren't sent. Please contact your Internet service provider. You can tell them that Hotmail does not relay dynamically-assigned IP ranges.",
        None,
        P,
        Reason.BLOCKED,
        "microsoft-consumer-block-codes",
    ),
    (
        "421 RP-001 (COL004-MC1F1) Unfortunately, some messages from 192.0.2.1 weren't sent. Please try again. We have limits for how many messages can be sent per hour and per day.",
        None,
        P,
        Reason.RATE_LIMITED,
        "microsoft-rate-limits",
    ),
    (
        "550 5.7.509 Access denied, sending domain [EXAMPLE.COM] does not pass DMARC verification and has a DMARC policy of reject. [SN1NAM02FT000.eop-nam02.prod.protection.outlook.com]",
        None,
        P,
        Reason.AUTH_FAILURE,
        "microsoft-authentication",
    ),
    (
        "550 5.7.1 RESOLVER.RST.AuthRequired; authentication required",
        None,
        P,
        Reason.SECURITY_ERROR,
        "microsoft-auth-required",
    ),
    (
        "550 5.7.512 Access denied, message must be RFC 5322 section 3.6.2 compliant and include a valid From address",
        None,
        P,
        Reason.NOT_RFC_COMPLIANT,
        "microsoft-rfc5322",
    ),
    (
        'smtp;550 5.2.2 STOREDRV.Deliver: mailbox full. The following information should help identify the cause: "MapiExceptionShutoffQuotaExceeded:16.18969:69000000"',
        None,
        S,
        Reason.MAILBOX_FULL,
        "microsoft-mailbox-full",
    ),
    (
        "550 5.4.310 DNS domain example.invalid does not exist [Message=InfoDomainNonexistent] [LastAttemptedServerName=example.invalid]",
        None,
        H,
        Reason.DOMAIN_UNKNOWN,
        "microsoft-dns-domain-missing",
    ),
    (
        "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302). [DM6NAM12FT000.eop-nam12.prod.protection.outlook.com]",
        "microsoft",
        H,
        Reason.USER_UNKNOWN,
        "microsoft-mailbox-unavailable",
    ),
    (
        "554 delivery error: dd Sorry your message to user@yahoo.com cannot be delivered. This mailbox is disabled (554.30). - mta1001.mail.gq1.yahoo.com",
        None,
        H,
        Reason.MAILBOX_DISABLED,
        "yahoo-mailbox-disabled",
    ),
    (
        "421 4.7.0 [TS03] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed. See https://senders.yahooinc.com/error-codes",
        None,
        P,
        Reason.BLOCKED,
        "yahoo-permanently-deferred",
    ),
    (
        "553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.1, because the ip is in Spamhaus's list; see https://senders.yahooinc.com/error-codes",
        None,
        P,
        Reason.BLOCKED,
        "yahoo-spamhaus",
    ),
    (
        "554 5.7.5 Permanent error evaluating DMARC policy",
        None,
        P,
        Reason.AUTH_FAILURE,
        "yahoo-authentication",
    ),
    (
        "554 5.7.9 Message not accepted for policy reasons. See https://senders.yahooinc.com/error-codes",
        None,
        P,
        Reason.POLICY_REJECTED,
        "yahoo-policy",
    ),
    (
        "451 Message temporarily deferred due to unresolvable RFC.5321 from domain; see https://senders.yahooinc.com/error-codes",
        None,
        P,
        Reason.SENDER_REJECTED,
        "yahoo-unresolvable-from",
    ),
    (
        "451 Resources temporarily unavailable. Please try again later [#4.16.1].",
        None,
        S,
        Reason.SYSTEM_ERROR,
        "yahoo-resources-unavailable",
    ),
    (
        "552 5.2.2 <user@icloud.com>: user is over quota",
        "apple",
        S,
        Reason.MAILBOX_FULL,
        "apple-over-quota",
    ),
    (
        "421 4.7.1 Messages to user@icloud.com deferred due to excessive volume. Try again later - https://support.apple.com/en-us/HT204137",
        None,
        S,
        Reason.RATE_LIMITED,
        "apple-recipient-volume",
    ),
    (
        "451 4.7.1 Service unavailable - try again later",
        "apple",
        P,
        Reason.RATE_LIMITED,
        "apple-service-unavailable",
    ),
    (
        "554 resimta-po-01v.sys.comcast.net comcast 192.0.2.1 Comcast requires that all mail servers must have a PTR record with a valid Reverse DNS entry. Please see https://postmaster.comcast.net/smtp-error-codes.php#RL000001",
        None,
        P,
        Reason.REQUIRE_PTR,
        "comcast-ptr",
    ),
    (
        "554 resimta-ch2-18v.sys.comcast.net comcast 192.0.2.1 found on one or more DNSBLs, see https://postmaster.comcast.net/smtp-error-codes.php#BL000001",
        None,
        P,
        Reason.BLOCKED,
        "comcast-blocked",
    ),
    (
        "421 resimta-po-02v.sys.comcast.net comcast 192.0.2.1 Too many sessions opened. Please see https://postmaster.comcast.net/smtp-error-codes.php#RL000010",
        None,
        P,
        Reason.RATE_LIMITED,
        "comcast-rate",
    ),
    (
        "554-gmx.net (mxgmx000) Nemesis ESMTP Service not available 554-No SMTP service 554-Bad DNS PTR resource record. 554 For explanation visit https://postmaster.gmx.net/en/case?c=r0601&i=ip&v=192.0.2.22&r=1ABCDE-1abcde",
        None,
        P,
        Reason.REQUIRE_PTR,
        "gmx-ptr",
    ),
    (
        "554-web.de (mxweb000) Nemesis ESMTP Service not available 554-No SMTP service 554-IP address is block listed. 554 For explanation visit https://postmaster.web.de/en/case?c=r0601&i=ip&v=192.0.2.22",
        None,
        P,
        Reason.BLOCKED,
        "gmx-blocked",
    ),
    (
        "550 Message was not accepted -- invalid mailbox. Local mailbox user@mail.ru is unavailable: account is disabled",
        None,
        H,
        Reason.MAILBOX_DISABLED,
        "mailru-account-disabled",
    ),
    (
        "550 Message was not accepted -- invalid mailbox. Local mailbox user@mail.ru is unavailable: user not found",
        None,
        H,
        Reason.USER_UNKNOWN,
        "mailru-user-unknown",
    ),
    (
        "550 spam message rejected. Please visit https://help.mail.ru/notspam-support/id?c=AbCdEf or report details to abuse@corp.mail.ru. Error code: 1A2B3C.",
        None,
        P,
        Reason.SPAM_CONTENT,
        "mailru-spam",
    ),
    (
        "554 5.7.1 [2] Message rejected under suspicion of SPAM; https://ya.cc/1IrBc 1714400000-AbCdEfGh",
        None,
        P,
        Reason.SPAM_CONTENT,
        "yandex-spam",
    ),
    (
        "550 5.7.1 Policy rejection on the target address",
        None,
        P,
        Reason.POLICY_REJECTED,
        "yandex-policy-target",
    ),
    (
        "550 5.5.0 Le compte du destinataire est bloque. The recipient account is blocked. LPN007_426",
        None,
        S,
        Reason.MAILBOX_UNAVAILABLE,
        "orange-account-blocked",
    ),
    (
        "421 4.2.0 Service refuse. Veuillez essayer plus tard. Service refused, please try later. OFR005_505 [505]",
        None,
        P,
        Reason.RATE_LIMITED,
        "orange-service-refused",
    ),
    (
        "550 mwinf0000 ME Adresse IP source bloquee pour incident de spam. Client host blocked for spamming issues. OFR006_102 Ref http://csi.cloudmark.com/reset-request/?ip=192.0.2.1 [102]",
        None,
        P,
        Reason.BLOCKED,
        "orange-blocked",
    ),
    (
        "421 Too many spams from your IP (192.0.2.1), please visit http://postmaster.free.fr/",
        None,
        P,
        Reason.BAD_REPUTATION,
        "free-too-many-spams",
    ),
    (
        "554 Blocked - see https://support.proofpoint.com/dnsbl-lookup.cgi?ip=192.0.2.225",
        None,
        P,
        Reason.BLOCKED,
        "proofpoint-blocked",
    ),
    (
        "554 Host network not allowed - https://community.mimecast.com/docs/DOC-1369#554 [AbCdEfGhIjKlMn.us000]",
        None,
        P,
        Reason.POLICY_REJECTED,
        "mimecast-policy",
    ),
    (
        "550 permanent failure for one or more recipients (user@example.com:blocked)",
        None,
        P,
        Reason.BLOCKED,
        "barracuda-recipient-blocked",
    ),
    ("550 #5.1.0 Address rejected.", None, H, Reason.USER_UNKNOWN, "ironport-address-rejected"),
    (
        "554 Your access to this mail system has been rejected due to the sending MTA's poor reputation. If you believe that this failure is in error, please contact the intended recipient via alternate means.",
        None,
        P,
        Reason.BAD_REPUTATION,
        "ironport-poor-reputation",
    ),
    (
        "Message could not be delivered to mobile. Error: No valid recipients for this MM",
        None,
        H,
        Reason.USER_UNKNOWN,
        "verizon-mms-no-valid-recipient",
    ),
    (
        "554 5.7.1 cox.net message rejected as spam. AUP#CXSPAM",
        None,
        P,
        Reason.SPAM_CONTENT,
        "cox-spam",
    ),
    (
        "550 5.6.0 MSG-P3 http://postmaster.facebook.com/response_codes?ip=192.0.2.54#msg Message contains an attachment type that is not allowed",
        None,
        P,
        Reason.CONTENT_REJECTED,
        "facebook-message",
    ),
    (
        "550 5.1.8 DNS-P1 http://postmaster.facebook.com/response_codes?ip=192.0.2.54#dns Your SMTP MAIL FROM domain does not exist",
        None,
        P,
        Reason.SENDER_REJECTED,
        "facebook-dns",
    ),
    (
        "451 4.3.0 INT-T1 http://postmaster.facebook.com/response_codes?ip=192.0.2.54#int Internal error, please try again later",
        None,
        S,
        Reason.SYSTEM_ERROR,
        "facebook-internal",
    ),
    ("550 5.4.300 Message expired", None, S, Reason.EXPIRED, "microsoft-message-expired"),
]


@pytest.mark.parametrize(("line", "provider", "outcome", "reason", "rule_id"), LINES)
def test_provider_reply(
    line: str, provider: str | None, outcome: Outcome, reason: Reason, rule_id: str
) -> None:
    got = classify(diagnostic=line, provider=provider)
    assert (got.outcome, got.reason, got.rule_id) == (outcome, reason, rule_id)


def test_every_provider_rule_has_a_line() -> None:
    provider_rules = {r.id for r in default_rules().rules if r.origin.startswith("1")}
    missing = provider_rules - {rule_id for *_, rule_id in LINES}
    assert not missing, f"provider rules with no reply line here: {sorted(missing)}"


def test_the_docs_table_lists_every_provider_rule() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "classification.md").read_text()
    missing = [
        r.id for r in default_rules().rules if r.origin.startswith("1") and f"`{r.id}`" not in docs
    ]
    assert not missing, f"add these rules to docs/classification.md: {missing}"


def test_recipient_side_rate_limits_are_never_hard() -> None:
    for line, *_ in LINES:
        if "receiving mail at a rate" in line or "RecipientThrottled" in line:
            assert classify(diagnostic=line).outcome is not H
