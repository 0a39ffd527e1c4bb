"""MTA families with a template of their own (Apache James, OpenSMTPD, dma, hMailServer,
MDaemon, fml, ...): each parser claims its golden sample with LF, CRLF and CR-only line
endings, reads the recipient, status and reason, and declines a plain message."""

from __future__ import annotations

import pytest

from dsn import analyse_message
from dsn.mail import read_mail
from dsn.mta import PARSERS
from tests.dsn.parser_checks import (
    ENDINGS,
    SAMPLES,
    Expected,
    assert_bomb_is_bounded,
    assert_reads_format,
    record_bomb,
)

# sample, parser, expected [(recipient, status, words the diagnostic must contain)]
CASES: list[tuple[str, str, Expected]] = [
    (
        "apachejames-01.eml",
        "apachejames",
        [("quentin@example.org", "5.1.1", "Remote mail server told me: 550 5.1.1")],
    ),
    ("opensmtpd-01.eml", "opensmtpd", [("oscar@example.org", "5.1.1", "User unknown")]),
    ("dragonfly-01.eml", "dragonfly", [("peggy@example.org", "5.1.1", "did not like our RCPT")]),
    (
        "hmailserver-01.eml",
        "hmailserver",
        [("rupert@example.org", "5.1.1", "Remote server replied: 550 5.1.1")],
    ),
    ("mdaemon-01.eml", "mdaemon", [("sybil@example.org", "5.1.1", "550 5.1.1 <sybil@")]),
    ("fml-01.eml", "fml", [("neko-meeting@lists.example.org", None, "not a member")]),
    (
        "messagingserver-01.eml",
        "messagingserver",
        [("abel@example.org", "5.1.1", "550 5.1.1 <abel@example.org>... User unknown")],
    ),
    ("groupwise-01.eml", "groupwise", [("bella@example.org", None, "User not on post office")]),
    ("groupwise-02.eml", "groupwise", [("ivan@example.org", None, "user not found")]),
    ("smail-01.eml", "smail", [("edith@example.de", "5.2.2", "Quota exceeded")]),
    ("smail-02.eml", "smail", [("bruno@example.de", "5.2.2", "Quota exceeded")]),
    ("smtpsvc-01.eml", "smtpsvc", [("jack@example.org", None, "could not be delivered")]),
    ("legacy-01.eml", "legacy", [("ida@example.org", "5.1.1", "User unknown")]),
    ("courier-02.eml", "courier", [("lena@example.org", "5.1.1", "550 5.1.1 <lena@")]),
    (
        "communigate-01.eml",
        "communigate",
        [
            ("mona@example.org", "5.1.1", "SMTP module(domain example.org) reports:"),
            ("ned@example.net", None, "account is full (quota exceeded)"),
        ],
    ),
]


@pytest.mark.parametrize(("name", "mta", "expected"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("ending", list(ENDINGS))
def test_parser_reads_its_format(name: str, mta: str, expected: Expected, ending: str) -> None:
    raw = (SAMPLES / name).read_bytes().replace(b"\n", ENDINGS[ending])
    assert_reads_format(raw, mta, expected)


PLAIN = b"""From: Alice <alice@example.org>
To: news@example.com
Subject: Re: Our June newsletter
Content-Type: text/plain

Thanks for the newsletter; please write to bob@example.org from now on.
There was an error in the date, by the way.
"""


@pytest.mark.parametrize("mta", [c[1] for c in CASES])
def test_parser_declines_a_plain_message(mta: str) -> None:
    parser = dict(PARSERS)[mta]
    assert parser(read_mail(PLAIN)) is None


def _opensmtpd(notice: str, lines: str) -> bytes:
    return (
        "From: Mailer Daemon <MAILER-DAEMON@mx.example.net>\n"
        "To: news@example.com\n"
        "Subject: Delivery status notification\n"
        "Content-Type: text/plain\n\n"
        "    Hi!\n\n"
        "    This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.\n\n"
        f"{notice}\n\n{lines}\n\n"
        "    Below is a copy of the original message:\n\n"
        "To: someone@example.org\n"
    ).encode()


def test_opensmtpd_expired_envelope_is_a_failure_not_a_delay() -> None:
    raw = _opensmtpd(
        "    An error has occurred while attempting to deliver a message for\n"
        "    the following list of recipients:",
        "oscar@example.org: Envelope expired\nolivia@example.net: Envelope expired",
    )
    analysis = analyse_message(raw)
    assert analysis.mta == "opensmtpd"
    assert [(r.recipient, r.action, r.outcome, r.reason) for r in analysis.results] == [
        ("oscar@example.org", "failed", "soft", "expired"),
        ("olivia@example.net", "failed", "soft", "expired"),
    ]


def test_opensmtpd_delay_warning_is_a_delay() -> None:
    raw = _opensmtpd(
        "    A message is delayed for more than 4 hours for the following\n    list of recipients:",
        "oscar@example.org: 421 4.7.0 Try again later",
    )
    analysis = analyse_message(raw)
    assert analysis.mta == "opensmtpd"
    assert analysis.kind == "delay"
    assert [r.status for r in analysis.results] == ["4.7.0"]


def test_opensmtpd_4_notice_names_one_recipient_and_its_reason() -> None:
    raw = (
        b"From: Mailer Daemon <MAILER-DAEMON@mx.example.net>\n"
        b"To: news@example.com\nSubject: Delivery status notification\n\n"
        b"Hi !\n\nThis is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.\n"
        b"An error has occurred while attempting to deliver a message.\n\n"
        b"Recipient: oscar@example.org\nReason:\n550 5.1.1 No such user\n\n"
        b"Below is a copy of the original message:\n\nTo: oscar@example.org\n"
    )
    analysis = analyse_message(raw)
    assert analysis.mta == "opensmtpd"
    assert [(r.recipient, r.status, r.outcome) for r in analysis.results] == [
        ("oscar@example.org", "5.1.1", "hard")
    ]


def test_dragonfly_giving_up_is_an_expiry() -> None:
    raw = (SAMPLES / "dragonfly-01.eml").read_bytes()
    head, _, rest = raw.partition(b"mx.example.org [192.0.2.25] did not like our RCPT TO:\n")
    _, _, tail = rest.partition(b"\n")
    analysis = analyse_message(
        head + b"Could not deliver for the last 432000 seconds. Giving up." + tail
    )
    assert analysis.mta == "dragonfly"
    (result,) = analysis.results
    assert (result.action, result.outcome, result.reason) == ("failed", "soft", "expired")


def test_dragonfly_host_not_found_is_a_domain_failure() -> None:
    raw = (SAMPLES / "dragonfly-01.eml").read_bytes()
    head, _, rest = raw.partition(b"mx.example.org [192.0.2.25] did not like our RCPT TO:\n")
    _, _, tail = rest.partition(b"\n")
    analysis = analyse_message(head + b"DNS lookup failure: host example.org not found" + tail)
    (result,) = analysis.results
    assert (result.outcome, result.reason) == ("hard", "domain_unknown")


JAMES_DSN_TEXT = b"""From: postmaster@mail.example.net
To: news@example.com
Subject: Re:Our June newsletter
Message-ID: <1.2.3.JavaMail.james@mail.example.net>
Content-Type: text/plain

Hi. This is the James mail server at mail.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.  Below
I include the list of recipients and the reason why I was unable to deliver
your message.

Original email subject: Our June newsletter

Failed recipient(s):
quentin@example.org
rachel@example.org

Error message:
550 5.1.1 No such user here

"""


def test_james_dsnbounce_layout_gives_the_error_to_every_failed_recipient() -> None:
    analysis = analyse_message(JAMES_DSN_TEXT)
    assert analysis.mta == "apachejames"  # not qmail, whose sentence James reuses
    assert [(r.recipient, r.status, r.diagnostic) for r in analysis.results] == [
        ("quentin@example.org", "5.1.1", "550 5.1.1 No such user here"),
        ("rachel@example.org", "5.1.1", "550 5.1.1 No such user here"),
    ]


def test_james_notify_mailet_needs_a_james_mark() -> None:
    raw = b"""From: postmaster@mail.example.net
To: news@example.com
Subject: [BOUNCE]
Content-Type: text/plain

Error message below:
550 - Requested action not taken: no such user here

Message details:
  Subject: Our June newsletter
  Sent date: Thu Jun 06 10:59:00 UTC 2024
  MAIL FROM: news@example.com
  RCPT TO: quentin@example.org
  From: News <news@example.com>
  To: quentin@example.org
  Size (in bytes): 1024
  Number of lines: 12
"""
    analysis = analyse_message(raw)
    assert analysis.mta == "apachejames"
    (result,) = analysis.results
    assert (result.recipient, result.reply_code) == ("quentin@example.org", 550)
    assert analyse_message(raw.replace(b"[BOUNCE]", b"Notice")).mta != "apachejames"


def test_hmailserver_needs_its_own_record_lines() -> None:
    # Exchange opens with the same sentence; only hMailServer writes these records.
    raw = (SAMPLES / "hmailserver-01.eml").read_bytes()
    for own in (b"   Error Type: SMTP\n", b"   hMailServer sent: RCPT TO:<rupert@example.org>\n"):
        raw = raw.replace(own, b"")
    raw = raw.replace(b"Remote server replied: ", b"").replace(b"\nhMailServer\n", b"\n")
    assert analyse_message(raw).mta != "hmailserver"


def test_mdaemon_finding_without_a_reply_explains_the_recipient() -> None:
    raw = (SAMPLES / "mdaemon-01.eml").read_bytes()
    head, _, _ = raw.partition(b" Sat 2024-06-08 12:59:51: Connection established")
    raw = (
        head + b" Sat 2024-06-08 12:59:51: *  Name server reports domain name unknown\n"
        b"--- End Transcript ---\n"
    )
    analysis = analyse_message(raw)
    assert analysis.mta == "mdaemon"
    (result,) = analysis.results
    assert result.recipient == "sybil@example.org"
    assert result.diagnostic == "Name server reports domain name unknown"


def test_fml_needs_its_list_server_header() -> None:
    raw = (SAMPLES / "fml-01.eml").read_bytes().replace(b"X-MLServer: fml", b"X-MLServer: other")
    assert analyse_message(raw).mta != "fml"


def test_exim_dsn_without_diagnostic_code_takes_exims_own_words() -> None:
    # Status 5.0.0 and no Diagnostic-Code: Exim's reason is the line under the address,
    # not the sentence introducing the list.
    analysis = analyse_message((SAMPLES / "exim-05.eml").read_bytes())
    (result,) = analysis.results
    assert (result.recipient, result.status) == ("victor@example.org", "5.0.0")
    assert result.diagnostic == "Unrouteable address"


def test_exim_3_block_reports_the_address_we_sent_to_and_keeps_exims() -> None:
    for ending in ENDINGS.values():
        raw = (SAMPLES / "exim-04.eml").read_bytes().replace(b"\n", ending)
        analysis = analyse_message(raw)
        assert analysis.mta == "exim"
        (result,) = analysis.results
        # Our X-Stoplist-Recipient names the address we sent to; Exim's is kept beside it.
        assert result.recipient == "wendy@example.org"
        assert result.reported_recipient == "wendy@old.example.org"
        assert result.diagnostic == 'unrouteable mail domain "old.example.org"'


EXIM_REWORDED = b"""From: postmaster@mx.example.net
To: news@example.com
Subject: Undeliverable message
X-Failed-Recipients: victor@example.org
Content-Type: text/plain

Die Nachricht konnte nicht zugestellt werden.

  victor@example.org
    host mx.example.org [192.0.2.1]
    SMTP error from remote mail server after RCPT TO:<victor@example.org>:
    550 5.1.1 <victor@example.org>: Recipient address rejected: User unknown
"""


def test_exim_reworded_bounce_text_is_read_by_its_blocks() -> None:
    analysis = analyse_message(EXIM_REWORDED)
    assert analysis.mta == "exim"
    (result,) = analysis.results
    assert (result.recipient, result.status, result.reply_code) == (
        "victor@example.org",
        "5.1.1",
        550,
    )
    assert result.diagnostic.startswith("host mx.example.org [192.0.2.1] SMTP error")


def test_exim_blocks_need_the_failed_recipients_header_to_name_them() -> None:
    raw = EXIM_REWORDED.replace(
        b"X-Failed-Recipients: victor@example.org", b"X-Failed-Recipients: other@example.org"
    )
    assert analyse_message(raw).mta != "exim"


def test_exim_delay_warning_blocks_are_delays() -> None:
    raw = b"""From: Mail Delivery System <Mailer-Daemon@mx.example.net>
To: news@example.com
Subject: Warning: message 1sAbCd-000456-EF delayed 24 hours
Content-Type: text/plain

This message was created automatically by mail delivery software.

A message that you sent has not yet been delivered to one or more of its
recipients after more than 24 hours on the queue on mx.example.net.

The address(es) which have not yet been delivered are:

  victor@example.org
    host mx.example.org [192.0.2.1]: Connection refused

No action is required on your part. Delivery attempts will continue for
some time, and this warning may be repeated at intervals if the message
remains undelivered.
"""
    analysis = analyse_message(raw)
    assert analysis.mta == "exim"
    assert analysis.kind == "delay"
    (result,) = analysis.results
    assert result.diagnostic == "host mx.example.org [192.0.2.1]: Connection refused"


def test_v5_sendmail_host_unknown_names_its_recipient_without_brackets() -> None:
    for ending in ENDINGS.values():
        raw = (SAMPLES / "sendmail-04.eml").read_bytes().replace(b"\n", ending)
        analysis = analyse_message(raw)
        assert analysis.mta == "sendmail"
        (result,) = analysis.results
        assert (result.recipient, result.reply_code, result.outcome, result.reason) == (
            "xavier@nosuch.example",
            550,
            "hard",
            "domain_unknown",
        )


def test_v5_sendmail_host_verdict_without_address_takes_the_unsent_to() -> None:
    raw = (SAMPLES / "sendmail-04.eml").read_bytes()
    raw = raw.replace(
        b"550 xavier@nosuch.example... Host unknown (Name server: nosuch.example: host not found)",
        b"550 nosuch.example (tcp)... 550 Host unknown",
    )
    analysis = analyse_message(raw)
    assert analysis.mta == "sendmail"
    (result,) = analysis.results
    assert (result.recipient, result.reply_code) == ("xavier@nosuch.example", 550)


def test_sendmail_reports_the_address_an_alias_was_expanded_from() -> None:
    analysis = analyse_message((SAMPLES / "sendmail-05.eml").read_bytes())
    assert analysis.mta == "sendmail"
    (result,) = analysis.results
    assert (result.recipient, result.status) == ("yvonne@example.org", "5.1.1")


def test_qmail_blocks_are_each_recipients_whole_diagnostic() -> None:
    for ending in ENDINGS.values():
        raw = (SAMPLES / "qmail-02.eml").read_bytes().replace(b"\n", ending)
        analysis = analyse_message(raw)
        assert analysis.mta == "qmail"
        assert [(r.recipient, r.status, r.diagnostic) for r in analysis.results] == [
            ("zoe@example.net", None, "This address no longer accepts mail."),
            ("amy@example.net", "5.1.1", "Sorry, no mailbox here by that name. vpopmail (#5.1.1)"),
        ]


ORACLE_TEXT = b"""From: Internet Mail Delivery <postmaster@ms.example.net>
To: news@example.com
Subject: Delivery Notification: Delivery has failed
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

This report relates to a message you sent with the following header fields:

  Message-id: <20240617150000.C0C0@mail.example.com>
  Date: Mon, 17 Jun 2024 15:00:00 +0000
  From: News <news@example.com>
  To: carl@example.org
  Subject: Our June newsletter

Your message cannot be delivered to the following recipients:

  Recipient address: carl.jones@mailhost.example.org
  Original address: carl@example.org
  Reason: Remote SMTP server has rejected address
  Diagnostic code: smtp;550 5.1.1 <carl.jones@mailhost.example.org>... User unknown
  Remote system: dns;mailhost.example.org (TCP|192.0.2.5|47323|192.0.2.6|25)
    (mailhost.example.org ESMTP)
"""


def test_oracle_messaging_server_reports_the_original_address() -> None:
    analysis = analyse_message(ORACLE_TEXT)
    assert analysis.mta == "messagingserver"
    (result,) = analysis.results
    assert (result.recipient, result.status, result.reply_code, result.remote_mta) == (
        "carl@example.org",
        "5.1.1",
        550,
        "mailhost.example.org",
    )
    assert result.diagnostic.endswith("Remote SMTP server has rejected address")


def test_netscape_reason_paragraph_explains_the_listed_recipients() -> None:
    raw = b"""From: Mail Administrator <Postmaster@mail.example.net>
To: news@example.com
Subject: Mail System Error - Returned Mail
Content-Type: text/plain

This Message was undeliverable due to the following reason:

The user(s) account is temporarily over quota.

<abel@example.org>
<ada@example.org>

Please reply to Postmaster@mail.example.net
if you feel this message to be in error.
"""
    analysis = analyse_message(raw)
    assert analysis.mta == "messagingserver"
    assert [(r.recipient, r.diagnostic, r.outcome) for r in analysis.results] == [
        ("abel@example.org", "The user(s) account is temporarily over quota.", "soft"),
        ("ada@example.org", "The user(s) account is temporarily over quota.", "soft"),
    ]


def test_groupwise_user_id_without_the_original_to_is_not_guessed() -> None:
    raw = (
        (SAMPLES / "groupwise-01.eml")
        .read_bytes()
        .replace(b"To: bella@example.org", b"To: someone@example.org")
    )
    assert analyse_message(raw).mta != "groupwise"
    full = (
        (SAMPLES / "groupwise-01.eml")
        .read_bytes()
        .replace(b"\tbella (User", b"\tbella@example.org (User")
    )
    analysis = analyse_message(full.replace(b"To: bella@example.org", b"To: x@example.org"))
    assert analysis.mta == "groupwise"
    assert [r.recipient for r in analysis.results] == ["bella@example.org"]


def test_exim_3_delay_warning_for_one_address() -> None:
    raw = b"""From: Mail Delivery System <Mailer-Daemon@mx.example.net>
To: news@example.com
Subject: Warning: message 17aBcD-0001xY-00 delayed 24 hours
Content-Type: text/plain

This message was created automatically by mail delivery software (Exim).

A message that you sent has not yet been delivered to all of its recipients
after more than 24 hours on the queue on mx.example.net.

The address to which the message has not yet been delivered is:

  victor@example.org
    Delay reason: SMTP error from remote mailer after end of data:
    host mx.example.org [192.0.2.1]: 451 4.3.0 Temporary failure

No action is required on your part. Delivery attempts will continue for
some time, and this warning may be repeated at intervals if the message
remains undelivered.
"""
    analysis = analyse_message(raw)
    assert (analysis.mta, analysis.kind) == ("exim", "delay")
    assert [(r.recipient, r.status) for r in analysis.results] == [("victor@example.org", "4.3.0")]


BOMBS: dict[str, bytes] = {
    "opensmtpd": record_bomb(
        b"From: MAILER-DAEMON@mx.example.net\nSubject: Delivery status notification\n\n"
        b"    This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.\n\n",
        b"u%d@example.org: 550 5.1.1 unknown\n",
        100_000,
    ),
    "hmailserver": record_bomb(
        b"From: mailer-daemon@mx.example.net\nSubject: Message undeliverable\n\n"
        b"The following recipient(s) could not be reached:\n\n",
        b"u%d@example.org\n   Error Type: SMTP\n   Remote server replied: 550 5.1.1 unknown\n\n",
        60_000,
    ),
    "mdaemon": record_bomb(
        b"From: MDaemon@example.net\nSubject: Permanent Delivery Failure\nX-MDDSN-Message: Yes\n\n"
        b"--- Session Transcript ---\n",
        b" Sat 2024-06-08 12:59:51: --> RCPT To:<u%d@example.org>\n"
        b" Sat 2024-06-08 12:59:51: <-- 550 5.1.1 unknown\n",
        100_000,
    ),
    "exim": record_bomb(
        b"From: Mailer-Daemon@mx.example.net\nSubject: Mail delivery failed\n\n"
        b"This message was created automatically by mail delivery software.\n\n"
        b"The following address(es) failed:\n\n",
        b"  u%d@example.org\n    550 5.1.1 unknown\n",
        100_000,
    ),
    "qmail": record_bomb(
        b"From: MAILER-DAEMON@mx.example.net\nSubject: failure notice\n\n"
        b"Hi. This is the qmail-send program at mx.example.net.\n\n",
        b"<u%d@example.org>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n",
        100_000,
    ),
    "messagingserver": record_bomb(
        b"From: postmaster@ms.example.net\nSubject: Delivery Notification\n\n"
        b"This report relates to a message you sent with the following header fields:\n\n",
        b"  Recipient address: u%d@example.org\n  Reason: Remote SMTP server has rejected\n",
        100_000,
    ),
    "sendmail": record_bomb(
        b"From: MAILER-DAEMON@mx.example.net\nSubject: Returned mail: User unknown\n\n"
        b"   ----- Transcript of session follows -----\n",
        b"550 u%d@example.org... User unknown\n",
        100_000,
    ),
}


@pytest.mark.parametrize("name", BOMBS)
def test_record_bombs_parse_in_bounded_cpu_time(name: str) -> None:
    assert_bomb_is_bounded(BOMBS[name], name)


def test_smail_reason_on_the_address_line_and_from_the_message_log() -> None:
    raw = b"""From: MAILER-DAEMON@mail.example.net
To: news@example.com
Subject: mail failed, returning to sender

|------------------------- Message log follows: -------------------------|
 <gustav@example.net> ... error: 550 5.1.1 mailbox unavailable
|------------------------- Failed addresses follow: ---------------------|
 gustav@example.net
 frieda@example.net ... unknown user
|------------------------- Message text follows: ------------------------|
From: news@example.com
"""
    analysis = analyse_message(raw)
    assert analysis.mta == "smail"
    assert [(r.recipient, r.status, r.diagnostic) for r in analysis.results] == [
        (
            "gustav@example.net",
            "5.1.1",
            "<gustav@example.net> ... error: 550 5.1.1 mailbox unavailable",
        ),
        ("frieda@example.net", None, "unknown user"),
    ]


def test_legacy_delay_warnings_never_fail_a_recipient() -> None:
    raw = b"""From: postmaster@gw.example.org
To: news@example.com
Subject: Delivery delayed
Content-Type: text/plain

Your message to <kim@example.org> could not be delivered yet:
451 4.4.1 Connection timed out

This is just a warning, you do not need to take any action.
"""
    analysis = analyse_message(raw)
    assert analysis.mta == "legacy"
    assert analysis.kind == "delay"
    assert [(r.recipient, r.action) for r in analysis.results] == [("kim@example.org", "delayed")]


def test_university_mailer_error_detail_explains_every_recipient() -> None:
    raw = b"""From: MAILER-DAEMON@mta1.example.edu
To: news@example.com
Subject: Undeliverable mail

Message not delivered to the following addresses:

    lou@example.edu
    max@example.edu

Error detail:
    550 5.1.1 User unknown
"""
    analysis = analyse_message(raw)
    assert analysis.mta == "legacy"
    assert [(r.recipient, r.status) for r in analysis.results] == [
        ("lou@example.edu", "5.1.1"),
        ("max@example.edu", "5.1.1"),
    ]


def test_courier_delay_section_is_a_delay() -> None:
    raw = (SAMPLES / "courier-02.eml").read_bytes()
    raw = raw.replace(b"UNDELIVERABLE MAIL", b"DELAYS IN DELIVERING YOUR MESSAGE").replace(
        b"<<< 550 5.1.1", b"<<< 451 4.7.1"
    )
    analysis = analyse_message(raw)
    assert (analysis.mta, analysis.kind) == ("courier", "delay")
    assert [(r.recipient, r.status) for r in analysis.results] == [("lena@example.org", "4.7.1")]


def test_courier_report_with_a_status_part_stays_with_rfc3464() -> None:
    assert analyse_message((SAMPLES / "courier-01.eml").read_bytes()).mta == "rfc3464"


QSBMF_OTHER_INTRO = b"""From: MAILER-DAEMON@mx.example.net
To: news@example.com
Subject: failure notice

Hi. The MTA program at mx.example.net could not deliver your message.

<nora@example.org>: 550 5.1.1 No such user

--- Below this line is a copy of the message.
"""


def test_qsbmf_with_another_intro_is_read_by_its_recipient_paragraphs() -> None:
    analysis = analyse_message(QSBMF_OTHER_INTRO)
    assert analysis.mta == "qmail"
    assert [(r.recipient, r.status, r.diagnostic) for r in analysis.results] == [
        ("nora@example.org", "5.1.1", "550 5.1.1 No such user")
    ]


def test_qsbmf_intro_without_recipient_paragraphs_is_not_claimed() -> None:
    raw = QSBMF_OTHER_INTRO.replace(b"<nora@example.org>: ", b"nora@example.org said ")
    assert analyse_message(raw).mta != "qmail"


def test_exim_undisclosed_address_and_reason_on_the_address_line() -> None:
    raw = b"""From: Mail Delivery System <Mailer-Daemon@mx.example.net>
To: postmaster@example.com
Subject: Mail delivery failed
X-Failed-Recipients: sue@example.org, tim@example.org

This message was created automatically by mail delivery software.

A message sent by

  <news@example.com>

could not be delivered to one or more of its recipients. The following
address(es) failed:

  an undisclosed address
    (generated from sue@example.org)
    mailbox is full: retry timeout exceeded

  tim@example.org: 550 5.1.1 unknown user
"""
    analysis = analyse_message(raw)
    assert analysis.mta == "exim"
    assert [(r.recipient, r.diagnostic) for r in analysis.results] == [
        ("sue@example.org", "mailbox is full: retry timeout exceeded"),
        ("tim@example.org", "550 5.1.1 unknown user"),
    ]


def test_netscape_recipient_list_heading_alone() -> None:
    raw = b"""From: postmaster@mail.example.net
To: news@example.com
Subject: Returned mail
Content-Type: text/plain

Your message was not delivered within 5 days:
Host mx.example.org is not responding.

The following recipients did not receive this message:

     <olga@example.org>

Please reply to postmaster@mail.example.net
if you feel this message to be in error.
"""
    analysis = analyse_message(raw)
    assert analysis.mta == "messagingserver"
    (result,) = analysis.results
    assert result.recipient == "olga@example.org"
    assert result.diagnostic.startswith("Your message was not delivered within 5 days:")


def test_processed_by_the_mail_server_records_carry_their_own_action_and_status() -> None:
    raw = b"""From: postmaster@example.org
To: news@example.com
Subject: Delivery Status Notification (Failure)
Content-Type: text/plain

- These recipients of your message have been processed by the mail server:
pat@example.org; Failed; 4.2.2 (mailbox full)

    Remote MTA mx.example.org: SMTP diagnostic: 552 RCPT TO:<pat@example.org> quota exceeded

quinn@example.org; Delayed; 4.4.1 (no answer from host)
"""
    analysis = analyse_message(raw)
    assert analysis.mta == "legacy"
    assert [(r.recipient, r.status, r.reply_code, r.action) for r in analysis.results] == [
        ("pat@example.org", "4.2.2", 552, "failed"),
        ("quinn@example.org", "4.4.1", None, "delayed"),
    ]


def test_opensmtpd_expired_envelope_in_a_delay_notice_is_still_a_failure() -> None:
    raw = _opensmtpd(
        "    A message is delayed for more than 4 days for the following\n    list of recipients:",
        "oscar@example.org: Envelope expired\n"
        "olivia@example.net: 421 4.7.0 Try again later\n\n"
        "    Please note that this is only a temporary failure report.",
    )
    analysis = analyse_message(raw)
    assert [(r.recipient, r.action, r.reason) for r in analysis.results] == [
        ("oscar@example.org", "failed", "expired"),
        ("olivia@example.net", "delayed", analysis.results[1].reason),
    ]
    assert analysis.kind == "bounce"


def test_mdaemon_accepted_recipient_of_a_session_is_not_failed() -> None:
    raw = (
        (SAMPLES / "mdaemon-01.eml")
        .read_bytes()
        .replace(
            b" Sat 2024-06-08 12:59:50: *  To: sybil@example.org\n",
            b" Sat 2024-06-08 12:59:50: *  To: sybil@example.org\n"
            b" Sat 2024-06-08 12:59:50: *  To: tara@example.org\n",
        )
    )
    raw = raw.replace(
        b" Sat 2024-06-08 12:59:51: --> RCPT To:<sybil@example.org>\n",
        b" Sat 2024-06-08 12:59:51: --> RCPT To:<tara@example.org>\n"
        b" Sat 2024-06-08 12:59:51: <-- 250 2.1.5 Ok\n"
        b" Sat 2024-06-08 12:59:51: --> RCPT To:<sybil@example.org>\n",
    )
    analysis = analyse_message(raw)
    assert [r.recipient for r in analysis.results] == ["sybil@example.org"]


def test_list_heading_explains_an_address_nothing_else_explains() -> None:
    # The colon-ended heading is dropped only when lines under the address explain it.
    raw = b"""From: Mail Delivery System <postmaster@mx.example.net>
To: news@example.com
Subject: Undeliverable mail
Content-Type: text/plain

Your message could not be delivered to the following recipients:

  rita@example.org
"""
    (result,) = analyse_message(raw).results
    assert result.diagnostic == "Your message could not be delivered to the following recipients:"


def test_hmailserver_translated_template_is_read_by_its_records() -> None:
    raw = (SAMPLES / "hmailserver-01.eml").read_bytes()
    raw = raw.replace(
        b"Your message did not reach some or all of the intended recipients.",
        b"Ihre Nachricht hat nicht alle Empfaenger erreicht.",
    ).replace(
        b"The following recipient(s) could not be reached:",
        b"Die folgenden Empfaenger waren nicht erreichbar:",
    )
    analysis = analyse_message(raw)
    assert analysis.mta == "hmailserver"
    assert [(r.recipient, r.status) for r in analysis.results] == [("rupert@example.org", "5.1.1")]


def _opensmtpd_report(lines: str, records: str) -> bytes:
    return (
        "From: Mailer Daemon <MAILER-DAEMON@mx.example.net>\n"
        "To: news@example.com\n"
        "Subject: Delivery status notification: delayed\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/mixed;boundary="1/mx.example.net"\n'
        "\n"
        "--1/mx.example.net\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "\n"
        "    Hi!\n\n"
        "    This is the MAILER-DAEMON, please DO NOT REPLY to this email.\n\n"
        "    A message is delayed for more than 4 days for the following\n"
        "    list of recipients:\n\n"
        f"{lines}\n"
        "    Please note that this is only a temporary failure report.\n\n"
        "    Below is a copy of the original message:\n\n"
        "--1/mx.example.net\n"
        "Content-Type: message/delivery-status\n"
        "\n"
        "Reporting-MTA: dns; mx.example.net\n"
        "\n"
        f"{records}"
        "--1/mx.example.net--\n"
    ).encode()


def test_opensmtpd_report_fails_only_the_expired_envelopes() -> None:
    raw = _opensmtpd_report(
        "ann@example.org: Envelope expired\nbob@example.org: 421 4.7.0 Try again later\n",
        "Final-Recipient: rfc822; ann@example.org\nAction: delayed\nStatus: 4.4.7\n\n"
        "Final-Recipient: rfc822; bob@example.org\nAction: delayed\nStatus: 4.7.0\n\n",
    )
    analysis = analyse_message(raw)
    assert analysis.mta == "opensmtpd"
    got = {r.recipient: (r.action, r.outcome, r.reason) for r in analysis.results}
    assert got["ann@example.org"] == ("failed", "soft", "expired")
    assert got["bob@example.org"][0] == "delayed"
    assert analysis.kind == "bounce"


def test_opensmtpd_report_without_expiry_is_a_delay() -> None:
    raw = _opensmtpd_report(
        "bob@example.org: 421 4.7.0 Try again later\n",
        "Final-Recipient: rfc822; bob@example.org\nAction: delayed\nStatus: 4.7.0\n\n",
    )
    analysis = analyse_message(raw)
    assert (analysis.mta, analysis.kind) == ("opensmtpd", "delay")
