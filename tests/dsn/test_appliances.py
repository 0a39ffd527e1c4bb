"""Appliance, gateway and legacy-format parsers: each claims its own sample and reads the
recipient, status and the words that explain it; each declines what is not its format."""

from __future__ import annotations

import re

import pytest

from dsn import analyse_message
from dsn.explain import explain_message
from dsn.mail import read_mail
from dsn.mta.statuspart import Layout, read_records
from tests.dsn.parser_checks import (
    SAMPLES,
    Expected,
    assert_bomb_is_bounded,
    assert_reads_format,
    record_bomb,
)

# sample, parser, expected [(recipient, status, words the diagnostic must contain)]
CASES: list[tuple[str, str, Expected]] = [
    (
        "powermta-01.eml",
        "powermta",
        [
            ("walter@example.org", "5.1.1", "User unknown"),
            ("judy@example.net", "5.2.2", "Mailbox full"),
        ],
    ),
    ("mcafee-01.eml", "mcafee", [("ivan@example.org", "5.0.0", "User unknown ivan@example.org")]),
    (
        "barracuda-01.eml",
        "barracuda",
        [("erin@example.org", "5.7.1", "blocked by our Spam Firewall")],
    ),
    ("amavis-01.eml", "amavis", [("frank@example.org", "5.7.0", "BANNED: invoice.pdf.exe")]),
    ("mxlogic-01.eml", "mxlogic", [("grace@example.org", "5.1.1", "User unknown in local")]),
    ("activehunter-01.eml", "activehunter", [("heidi@example.jp", "5.1.1", "no mailbox here")]),
    ("surfcontrol-01.eml", "surfcontrol", [("ivy@example.org", None, "550 ivy@example.org")]),
    ("mfilter-01.eml", "mfilter", [("judy@example.jp", "5.1.1", "550 5.1.1 unknown user")]),
    ("mailfoundry-01.eml", "mailfoundry", [("karl@example.org", None, "550 <karl@example.org>")]),
    ("trendmicro-01.eml", "trendmicro", [("leo@example.jp", "5.1.1", "user unknown")]),
    (
        "smartermail-01.eml",
        "smartermail",
        [
            ("mallory@example.org", "5.1.1", "Remote host said: 550 5.1.1"),
            ("niaj@example.net", None, "The mailbox is full"),
        ],
    ),
    ("mimecast-01.eml", "mimecast", [("olivia@example.org", "5.1.1", "Invalid Recipient")]),
    ("x1-01.eml", "x1", [("peggy@example.net", None, "User unknown")]),
    ("x2-01.eml", "x2", [("quentin@example.net", None, "doesn't have a example.net account")]),
    ("x3-01.eml", "x3", [("rupert@example.org", "5.3.0", "No such user here")]),
    ("x4-01.eml", "x4", [("sybil@example.net", "5.1.1", "does not like recipient")]),
    ("x6-01.eml", "x6", [("trent@example.org", "5.1.1", "[550 5.1.1 User unknown]")]),
]


@pytest.mark.parametrize(("name", "mta", "expected"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_parser_reads_its_format(name: str, mta: str, expected: Expected, crlf: bool) -> None:
    raw = (SAMPLES / name).read_bytes()
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    assert_reads_format(raw, mta, expected)


def test_powermta_category_is_recorded_beside_the_result() -> None:
    analysis = analyse_message((SAMPLES / "powermta-01.eml").read_bytes())
    categories = {r.recipient: r.vendor_category for r in analysis.results}
    assert categories == {"walter@example.org": "bad-mailbox", "judy@example.net": "quota-issues"}
    assert analysis.results[0].to_json()["vendor_category"] == "bad-mailbox"


def test_powermta_category_never_overrides_the_address_status() -> None:
    # A site's pattern file calls a full mailbox "bad-mailbox": the reply still decides.
    raw = (SAMPLES / "powermta-01.eml").read_bytes().replace(b"quota-issues", b"bad-mailbox")
    judy = next(r for r in analyse_message(raw).results if r.recipient == "judy@example.net")
    assert judy.vendor_category == "bad-mailbox"
    assert (judy.status, judy.outcome, judy.reason) == ("5.2.2", "soft", "mailbox_full")


def test_results_of_other_parsers_carry_no_vendor_category() -> None:
    analysis = analyse_message((SAMPLES / "exim-01.eml").read_bytes())
    assert "vendor_category" not in analysis.results[0].to_json()


AMAVIS_VIRUS_NOTICE = b"""From: "Content-filter at mx.example.org" <postmaster@mx.example.org>
To: news@example.com
Subject: VIRUS (Eicar-Test-Signature) IN MAIL FROM YOU
Date: Thu, 09 May 2024 10:00:00 +0000
MIME-Version: 1.0
Content-Type: text/plain; charset="us-ascii"

Our content checker found
    virus: Eicar-Test-Signature

in email presumably from you (<news@example.com>)
to the following recipient:
-> frank@example.org

Please check your system for viruses, or ask your system administrator to do so.

Delivery of the email was stopped!
"""


def test_amavis_virus_notice_suppresses_no_one() -> None:
    analysis = analyse_message(AMAVIS_VIRUS_NOTICE)
    assert analysis.mta == "amavis"
    (result,) = analysis.results
    assert result.recipient == "frank@example.org"
    # A verdict on the message's content, not on the address: recorded, never suppressing.
    assert (result.outcome, result.reason) == ("policy", "virus_detected")


def test_amavis_notice_of_a_relayed_message_is_a_delivery_report() -> None:
    raw = AMAVIS_VIRUS_NOTICE.replace(b"-> frank@example.org", b"  <frank@example.org>").replace(
        b"Delivery of the email was stopped!",
        b"Your message WAS SUCCESSFULLY RELAYED to:\n  <frank@example.org>",
    )
    analysis = analyse_message(raw)
    assert analysis.mta == "amavis"
    assert analysis.kind == "delivery_report"
    assert [r.outcome for r in analysis.results] == ["none"]


QMAIL_SEND = b"""Received: (qmail 4711 invoked for bounce); 21 May 2024 08:00:00 -0000
From: MAILER-DAEMON@mx.example.net
To: news@example.com
Subject: failure notice
MIME-Version: 1.0
Content-Type: text/plain

Hi. This is the qmail-send program at mx.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<sybil@example.net>:
Sorry, no mailbox here by that name. (#5.1.1)

--- Below this line is a copy of the message.
"""


def test_qmail_clone_parser_leaves_qmail_send_to_qmail() -> None:
    assert analyse_message(QMAIL_SEND).mta == "qmail"


GOOGLE_STYLE = b"""From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: news@example.com
Subject: Delivery Status Notification (Failure)
MIME-Version: 1.0
Content-Type: text/plain

This is an automatically generated Delivery Status Notification.

Delivery to the following recipients failed permanently:

  * rupert@example.org

Technical details of permanent failure:
550 5.1.1 The email account that you tried to reach does not exist.
"""


def test_x3_does_not_claim_a_gmail_notice() -> None:
    assert analyse_message(GOOGLE_STYLE).mta != "x3"


def test_surfcontrol_needs_its_processing_header() -> None:
    raw = (SAMPLES / "surfcontrol-01.eml").read_bytes().replace(b"X-SEF-Processed", b"X-Other")
    assert analyse_message(raw).mta != "surfcontrol"


def test_mimecast_subject_without_records_is_not_claimed() -> None:
    raw = b"""From: Postmaster <postmaster@example.org>
To: news@example.com
Subject: Re: Email Delivery Failure report for April
Content-Type: text/plain

Thanks, the report for olivia@example.org looks fine.
"""
    assert analyse_message(raw).mta != "mimecast"


def test_record_reader_gives_a_detached_reason_to_recipients_without_their_own() -> None:
    mail = read_mail(b"From: a@example.com\nSubject: x\n\nstart\n")
    text = (
        "  * one@example.org\n"
        "  * two@example.org\n"
        "    own reason: 552 5.2.2 over quota\n"
        "\n"
        "second paragraph, not a reason\n"
        "Technical details:\n"
        "550 5.1.1 No such user\n"
        "\n"
        "after the details\n"
    )
    layout = Layout(
        recipient=re.compile(r"^[ \t]+\*[ \t]+(?P<addr>\S+@\S+)$"),
        detached=re.compile(r"^Technical details:"),
    )
    found = read_records(mail, text, layout)
    assert found is not None
    assert [(f.recipient, f.status, f.diagnostic) for f in found] == [
        ("one@example.org", "5.1.1", "550 5.1.1 No such user"),
        ("two@example.org", "5.2.2", "own reason: 552 5.2.2 over quota"),
    ]


def test_explain_shows_the_vendor_category_among_the_signals() -> None:
    explained = explain_message((SAMPLES / "powermta-01.eml").read_bytes()).to_json()
    recipients = explained["recipients"]
    assert isinstance(recipients, list)
    assert recipients[0]["signals"]["vendor_category"] == "bad-mailbox"
    assert (
        "vendor_category=bad-mailbox"
        in explain_message((SAMPLES / "powermta-01.eml").read_bytes()).to_text()
    )


INTERSCAN_JA = """From: "InterScan MSS" <imss@gw.example.jp>
To: news@example.com
Subject: =?UTF-8?B?44Oh44O844Or6YWN5L+h44Gr5aSx5pWX44GX44G+44GX44Gf?=
MIME-Version: 1.0
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: 8bit

メール配信に失敗しました。

送信 >>> RCPT TO:<leo@example.jp>
受信 <<< 550 5.1.1 <leo@example.jp>... User unknown
""".encode()


def test_interscan_japanese_notice_reads_the_reply_not_the_command() -> None:
    analysis = analyse_message(INTERSCAN_JA)
    assert analysis.mta == "trendmicro"
    (result,) = analysis.results
    assert (result.recipient, result.status, result.reply_code) == ("leo@example.jp", "5.1.1", 550)
    assert result.diagnostic.startswith("550 5.1.1")


def test_trend_micro_cloud_notice_names_the_recipient_without_a_reply() -> None:
    raw = b"""From: "InterScan Notification" <notify@tmes.example.jp>
To: news@example.com
Subject: Mail could not be delivered
Content-Type: text/plain

Unable to deliver message to <leo@example.jp> (and other recipients in the same domain).
"""
    analysis = analyse_message(raw)
    assert analysis.mta == "trendmicro"
    (result,) = analysis.results
    assert result.recipient == "leo@example.jp"
    assert result.status is None
    assert "Unable to deliver message to" in result.diagnostic


def test_barracuda_status_fields_pasted_into_the_text_are_read() -> None:
    raw = b"""From: Barracuda Spam Firewall <postmaster@spamfw.example.org>
To: news@example.com
Subject: **Message you sent blocked by our bulk email filter**
Content-Type: text/plain

Your message to: erin@example.org
was blocked by our Spam Firewall. The email you sent with the following subject has NOT BEEN DELIVERED:

Subject: Our May newsletter

Reporting-MTA: dns; spamfw.example.org

Final-Recipient: rfc822; erin@example.org
Action: failed
Status: 5.7.1
Diagnostic-Code: smtp; 550 5.7.1 Message content rejected, UBE, id=12345-01-2
"""
    analysis = analyse_message(raw)
    assert analysis.mta == "barracuda"
    (result,) = analysis.results
    assert (result.recipient, result.status, result.outcome) == (
        "erin@example.org",
        "5.7.1",
        "policy",
    )
    assert result.diagnostic.endswith("was blocked by our Spam Firewall.")


BOMBS: dict[str, bytes] = {
    # A record per line, far past MAX_RECIPIENTS, each with a reason, and one address again
    # and again: the reader stays linear and keeps MAX_RECIPIENTS.
    "smartermail": record_bomb(
        b"From: postmaster@mail.example.org\nSubject: Undeliverable\n\n"
        b"Could not deliver message to the following recipient(s):\n\n",
        b"Failed Recipient: u%d@example.org\nReason: Remote host said: 550 5.1.1 unknown\n"
        b"Failed Recipient: same@example.org\n",
        60_000,
    ),
    "trendmicro": record_bomb(
        b'From: "InterScan MSS" <imss@gw.example.jp>\nSubject: Mail could not be delivered\n\n',
        b"Sent <<< RCPT TO:<u%d@example.jp>\nReceived >>> 550 5.1.1 user unknown\n",
        100_000,
    ),
    "powermta": record_bomb(
        b"From: mailer-daemon@mta1.example.com\nSubject: Delivery report\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
        b"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mta1.example.com\n\n",
        b"Final-Recipient: rfc822; u%d@example.org\nAction: failed\nStatus: 5.1.1\n"
        b"X-PowerMTA-BounceCategory: bad-mailbox\n\n",
        60_000,
    ),
    "x3": record_bomb(
        b"From: Mail Delivery System <MAILER-DAEMON@relay.example.org>\n"
        b"Subject: Delivery status notification\n\n"
        b"      This is an automatically generated Delivery Status Notification.\n\n"
        b"  * rupert@example.org\n\n                            Technical details:\n",
        b"SMTP:RCPT host 192.0.2.%d: 553 5.3.0 No such user here\n",
        200_000,
    ),
}


@pytest.mark.parametrize("name", BOMBS)
def test_record_bombs_parse_in_bounded_cpu_time(name: str) -> None:
    assert_bomb_is_bounded(BOMBS[name], name)


def test_mcafee_leaves_other_bounces_that_passed_its_gateway() -> None:
    raw = (SAMPLES / "postfix-01.eml").read_bytes()
    stamped = b"X-NAI-Header: Modified by McAfee Email Gateway\n" + raw
    assert analyse_message(stamped).mta == analyse_message(raw).mta != "mcafee"
